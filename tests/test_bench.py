"""The benchmarks' machinery that is not a timing: the BENCHMARKS.md section writer, the child-process
protocol, the resident-set peak, the BPTT and FLOP counts, the exponent fit, and that importing refsnn
compiles no Numba kernel. (No test here times anything.)"""
import mmap
import sys

import numpy as np
import pytest

from bench import child_env, current_rss, peak_rss, reset_peak_rss, run_child, write_section
from bench.scaling import exponent
from bench.startup import IMPORT_SCRIPT
from bench.training import bptt_bytes, leaf_calls, sample_input, step_flops
from refsnn import LIF
from refsnn.layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d
from refsnn.module import Sequential


# ------------------------------------------------------------------------------------------
# BENCHMARKS.md sections
# ------------------------------------------------------------------------------------------
def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## A\n\nold a\n| t |\n\n## B\n\nold b\n")
    write_section("## A", "new a\nsecond line", path)
    assert path.read_text() == "# Benchmarks\n\nintro\n\n## A\n\nnew a\nsecond line\n\n## B\n\nold b\n"
    write_section("## B", "new b", path)  # the last section: nothing after it
    assert path.read_text() == "# Benchmarks\n\nintro\n\n## A\n\nnew a\nsecond line\n\n## B\n\nnew b\n"


def test_write_section_appends_a_new_heading_and_creates_the_file(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    write_section("## A", "a", path)
    assert path.read_text().startswith("# Benchmarks\n")
    assert path.read_text().endswith("\n## A\n\na\n")
    write_section("## C", "c", path)
    text = path.read_text()
    assert text.index("## A") < text.index("## C") and text.endswith("\n## C\n\nc\n")
    assert text.count("## A") == 1


# ------------------------------------------------------------------------------------------
# Child processes and memory
# ------------------------------------------------------------------------------------------
def test_run_child_returns_what_the_child_reported():
    script = "from bench import report_to_parent\nprint('noise')\nreport_to_parent({'x': [1, 2.5], 'ok': True})"
    assert run_child(["-c", script], child_env(1)) == {"x": [1, 2.5], "ok": True}


def test_run_child_raises_with_the_childs_error():
    with pytest.raises(RuntimeError, match="boom"):
        run_child(["-c", "import sys; sys.exit('boom')"], child_env(1))
    with pytest.raises(RuntimeError, match="exited with 0"):  # ran fine but reported nothing
        run_child(["-c", "pass"], child_env(1))


def test_child_env_fixes_the_blas_threads():
    env = child_env(3, NUMBA_CACHE_DIR="/somewhere")
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["NUMBA_CACHE_DIR"] == "/somewhere"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_peak_rss_sees_a_released_allocation_after_a_reset():
    if not reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    before = current_rss()
    assert peak_rss() - before < 16 << 20  # the reset brought the peak down to about the current RSS
    # 64 MiB of fresh anonymous pages, every page touched, then unmapped. An anonymous mmap, not
    # np.ones: malloc may hand back memory that is already resident (a full-suite pytest-xdist worker
    # once saw the peak not move at all), and then nothing new would be counted.
    block = mmap.mmap(-1, 64 << 20)
    block.write(b"\1" * (64 << 20))
    block.close()
    assert peak_rss() - before >= 60 << 20


# ------------------------------------------------------------------------------------------
# What BPTT keeps, and the FLOPs of a step, counted on a network small enough to count by hand
# ------------------------------------------------------------------------------------------
def tiny_network():
    rng = np.random.default_rng(0)
    return Sequential(Conv2d(1, 2, 3, padding=1, rng=rng), BatchNorm2d(2), LIF(), MaxPool2d(2), Flatten(),
                      Linear(2 * 2 * 2, 3, rng=rng))


def test_bptt_bytes_by_hand():
    # per sample and step, on a 1x4x4 input: conv input 16 floats (64 B); BatchNorm input and LIF's H,
    # 2x4x4 each (128 B each); max-pool positions 2x2x2 (8 B as bytes, 32 B as float32); the linear
    # layer's input, the pooled spikes, 8 elements (8 B as spikes, 32 B as float32). T = 3, N = 5.
    assert bptt_bytes(tiny_network(), (1, 4, 4), T=3, batch=5) == (15 * (64 + 128 + 128 + 8 + 8),
                                                                     15 * (64 + 128 + 128 + 32 + 32))


def test_step_flops_by_hand():
    # conv: 2 · (2·4·4 outputs) · (1·3·3 taps) = 576; linear: 2 · 3 · 8 = 48; 3 passes; T·N = 15
    assert step_flops(tiny_network(), (1, 4, 4), T=3, batch=5) == 3 * (576 + 48) * 15


def test_leaf_calls_records_in_order_and_restores_the_layers():
    net = tiny_network()
    calls = leaf_calls(net, sample_input((1, 4, 4)))
    assert [type(m).__name__ for m, _, _ in calls] == ["Conv2d", "BatchNorm2d", "LIF", "MaxPool2d", "Flatten",
                                                       "Linear"]
    assert [out.shape for _, _, out in calls][-1] == (1, 2, 3)
    assert all("forward" not in m.__dict__ for m, _, _ in calls)  # the class's forward again


def test_exponent_of_a_power_law():
    x = np.array([1, 2, 4, 8, 16])
    assert exponent(x, 3.0 * x ** 1.5) == pytest.approx(1.5, abs=1e-12)
    assert exponent(x, 7.0 * x) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# Importing refsnn compiles nothing (the start-up benchmark's check, in a fresh process)
# ------------------------------------------------------------------------------------------
def test_importing_refsnn_compiles_no_kernel():
    result = run_child(["-c", IMPORT_SCRIPT], child_env(1))
    assert result["dispatchers"] > 10  # it did find the kernels
    assert result["compiled"] == []


def test_bench_leaves_the_tracked_benchmarks_file_alone_unless_asked():
    from bench.__main__ import parse_args
    assert parse_args([]).write is False  # a plain `python -m bench` only prints
    assert parse_args(["--write"]).write is True
