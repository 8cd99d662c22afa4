"""Benchmarks of refsnn against the PyTorch references (performance.md, "How to measure").

Run ``python -m bench`` (all benchmarks) or ``python -m bench --only neurons``. Each benchmark
prints a table (refsnn time, reference times, ratios, a bound and the fraction of it reached)
and writes the same table into ``BENCHMARKS.md`` under its own heading.

Method shared by every benchmark: warm-up first (it includes Numba compilation or cache load),
then the candidates run in turn inside one loop of repeats, so that machine drift hits them all
alike, and each time is the median over the repeats.

This module imports nothing heavy at import time: ``bench/__main__.py`` must be able to set the
BLAS thread variables before NumPy is first imported.
"""
import os
import platform
import statistics
import sys
import time
from pathlib import Path

BENCHMARKS = ("neurons",)  # module names under bench/, each with run(repeats, threads, options)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


# ------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------
def set_blas_thread_variables(threads):
    """Set the BLAS/OpenMP thread variables; effective only if NumPy is not yet imported.

    Returns True when they were set in time (before the first ``import numpy``).
    """
    in_time = "numpy" not in sys.modules
    for name in BLAS_THREAD_VARIABLES:
        os.environ[name] = str(threads)
    return in_time


def fix_threads(threads, blas_variables_in_time):
    """Pin Numba, torch and BLAS to ``threads`` threads; return a one-line description."""
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(threads)
        pools = threadpoolctl.threadpool_info()
        blas = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in pools) or "none loaded"
        blas = f"BLAS via threadpoolctl: {blas}"
    else:
        values = " ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_THREAD_VARIABLES)
        when = "set before NumPy was imported" if blas_variables_in_time else \
            "NOT effective: NumPy was imported before they were set"
        blas = f"BLAS via env (threadpoolctl not installed): {values} ({when})"
    return (f"threads: numba={numba.get_num_threads()} (layer: {numba.threading_layer()}), "
            f"torch={torch.get_num_threads()}, {blas}")


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------
def interleaved_medians(candidates, repeats, warmup=2, settle=0.005):
    """Median seconds per call of each candidate, timed in turn inside one loop of repeats.

    ``candidates`` maps a name to ``(prepare, run)``: ``prepare()`` (untimed) resets state,
    ``run()`` is the timed call. The order rotates every repeat so no candidate always runs
    right after the same other one. Before each timed call the process sleeps ``settle``
    seconds, so that the OpenMP workers of the previous candidate (torch's and Numba's pools
    spin for a while after a parallel region) stop competing for the cores.
    Returns ``{name: median seconds}``.
    """
    names = list(candidates)
    for name in names:
        prepare, run = candidates[name]
        for _ in range(warmup):
            prepare()
            run()
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            prepare, run = candidates[name]
            prepare()
            time.sleep(settle)
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def copy_bandwidth(n_bytes=256 << 20, repeats=7):
    """Memory bandwidth of a large single-threaded ``np.copyto``: (bytes read + written) / time.

    The arrays (``n_bytes`` each) are far larger than the last-level cache; the best repeat
    is taken, so the bound derived from it is the tightest one this copy supports.
    """
    import numpy as np

    src = np.ones(n_bytes // 4, np.float32)
    dst = np.zeros_like(src)  # both touched once so that page faults stay out of the timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------
def markdown_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def write_section(heading, body, path=BENCHMARKS_FILE):
    """Put ``body`` under ``heading`` (a ``## `` line) in ``path``, replacing that section only."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `python -m bench`.\n"
    lines = text.rstrip("\n").split("\n")
    section = [heading, "", body.rstrip("\n")]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:start] + section + ([""] + lines[end:] if end < len(lines) else [])
    else:
        new = lines + [""] + section
    path.write_text("\n".join(new) + "\n")
