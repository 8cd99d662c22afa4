"""Scaling: refsnn's training-step time and memory against T and against the batch size.

The spiking VGG-11 (LIF) on 32x32 inputs, channels multiplied by ``--width`` (default 0.25, so
that the sweep finishes in a few minutes; 1 is the real VGG-11), one training step as in
bench/training.py. Two sweeps: T ∈ {1, 2, 4, 8, 16} at batch 32, and batch ∈ {8, ..., 256} at
T = 4. Every point is a fresh process (``python -m bench.training --side refsnn``, see
bench/memory.py for what it measures): step time = median of the measured steps, step memory =
peak − baseline resident set.

For each sweep the exponent b of ``time ∝ x^b`` (and of memory) is the least-squares slope of
log(value) against log(x), over all points and over the three largest (where fixed per-call
costs no longer matter); linear scaling is b = 1. Memory is compared with what BPTT must keep
(``bench.training.bptt_bytes``, exactly proportional to T·N).
"""
import datetime
import os
import statistics

import numpy as np

from bench import child_env, fix_threads, header, load_average, load_warning, log, markdown_table, publish, run_child
from bench.training import PROBLEMS, bptt_bytes, build_model, child_args

NETWORK, NEURON = "vgg11", "lif"
DEFAULT_STEPS = 3  # steps per point (--repeats)
T_SWEEP, T_BATCH = (1, 2, 4, 8, 16), 32
BATCH_SWEEP, BATCH_T = (8, 16, 32, 64, 128, 256), 4
QUICK_T_SWEEP, QUICK_BATCH_SWEEP = (1, 4, 16), (8, 32, 128)
HEADING = "## Scaling with T and batch"
MB = 1 << 20


def exponent(xs, ys):
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def sweep(name, points, width, steps, threads, sizing_model):
    """Rows of one sweep and its [x], [seconds], [step bytes], [BPTT bytes]."""
    rows, xs, seconds, memory, needed = [], [], [], [], []
    for T, batch in points:
        log(f"scaling: {name} point T={T} N={batch} ...")
        r = run_child(child_args("refsnn", NETWORK, NEURON, T, batch, width, steps, threads), child_env(threads))
        step_s, step_bytes = statistics.median(r["seconds"]), r["peak"] - r["baseline"]
        bptt = bptt_bytes(sizing_model, PROBLEMS[NETWORK]["in_shape"], T, batch)[0]
        xs.append(T if name == "T" else batch)
        seconds.append(step_s)
        memory.append(step_bytes)
        needed.append(bptt)
        rows.append([name, str(T), str(batch), str(T * batch), f"{step_s:.3f}", f"{1e3 * step_s / (T * batch):.2f}",
                     f"{step_bytes / MB:.0f}", f"{bptt / MB:.0f}", f"{step_bytes / bptt:.2f}"])
        log("  " + " | ".join(rows[-1]))
    return rows, xs, seconds, memory, needed


def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    threads = threads or os.cpu_count()
    steps = repeats or DEFAULT_STEPS
    quick = bool(getattr(options, "quick", False))
    width = float(getattr(options, "width", 0.25))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    model = build_model(NETWORK, NEURON, width)  # only for the BPTT requirement
    t_points = [(T, T_BATCH) for T in (QUICK_T_SWEEP if quick else T_SWEEP)]
    b_points = [(BATCH_T, b) for b in (QUICK_BATCH_SWEEP if quick else BATCH_SWEEP)]

    rows, fits = [], []
    for name, points in (("T", t_points), ("batch", b_points)):
        sweep_rows, xs, seconds, memory, needed = sweep(name, points, width, steps, threads, model)
        rows += sweep_rows
        top = slice(-3, None)
        fixed = f"batch {T_BATCH}" if name == "T" else f"T = {BATCH_T}"
        fits.append([name, fixed, f"{xs[0]}–{xs[-1]}", f"{exponent(xs, seconds):.2f}",
                     f"{exponent(xs[top], seconds[top]):.2f}", f"{exponent(xs, memory):.2f}",
                     f"{exponent(xs[top], memory[top]):.2f}", f"{exponent(xs, needed):.2f}"])

    channels = ", ".join(str(max(1, int(round(c * width)))) for c in (64, 128, 256, 512))
    command = (f"python -m bench --only scaling --repeats {steps} --threads {threads} --width {width:g}"
               + (" --quick" if quick else ""))
    body = "\n".join(header(command, started, load_start, threads_line) + [
        "",
        f"refsnn only. Spiking VGG-11 ({NEURON.upper()}), width {width:g} (channels {channels} instead of 64, 128, "
        f"256, 512), 32x32 inputs, float32, Adam; one fresh process per point (`python -m bench.training`): a "
        f"warm-up step on 2 images, then {steps} steps, step time = their median; step memory = peak − baseline "
        "resident set (see the memory benchmark); BPTT = what backpropagation through time must keep (1-byte "
        "spikes), proportional to T·N. Points run one after the other, so load changes between them show up "
        "as scatter.",
        "",
        markdown_table(["sweep", "T", "N", "T·N", "step s", "ms per T·N", "step MB", "BPTT MB", "step / BPTT"], rows),
        "",
        "Exponents b of value ∝ x^b (least squares in log-log; 1 = linear), over all points and over the three "
        "largest:",
        "",
        markdown_table(["x", "fixed", "range", "time b (all)", "time b (top 3)", "memory b (all)",
                        "memory b (top 3)", "BPTT b"], fits),
    ])
    body += load_warning(load_start)
    return publish("scaling", HEADING, body, write)
