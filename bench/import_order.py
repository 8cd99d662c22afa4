"""Import order: refsnn's training step in fresh processes that import refsnn, NumPy or torch first.

Thread pools read some settings once, when their library loads (OpenMP's wait policy, OpenBLAS's
thread timeout), and Numba's OpenMP threading layer shares the OpenMP runtime torch loaded, if torch
came first. refsnn's speed must not depend on it (docs/performance.md: the step time with torch, or NumPy,
imported first ≤ 1.1x the time with refsnn first).

Each measurement is a fresh process (``python -c SCRIPT``) that imports ``first`` (nothing more for
refsnn), then refsnn, sets ``refsnn.threads.set_num_threads(threads)`` and times refsnn's training
step (``bench.training.refsnn_step``: forward, cross-entropy, backward, Adam) of the small CNN
(CLIF, T = 4, batch 64) and, unless ``--quick``, the VGG-11 (LIF, T = 4, batch 32): two warm-up
steps, then the median of ``STEPS``. The three import orders run in turn, ``repeats`` rounds
(rotated, so that machine drift hits them alike); each is the median over its rounds.
"""
import datetime
import statistics

from bench import child_env, fix_threads, header, load_average, load_warning, log, markdown_table, publish, run_child

DEFAULT_ROUNDS = 3
STEPS = 7
ORDERS = ("refsnn", "numpy", "torch")
ROWS = (("cnn", "clif"), ("vgg11", "lif"))
QUICK_ROWS = (("cnn", "clif"),)
TARGET = 1.1
HEADING = "## Import order"

SCRIPT = r'''
import sys
first, threads, network, neuron, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
if first == "torch":
    import torch  # noqa: F401
elif first == "numpy":
    import numpy  # noqa: F401
import refsnn.threads
refsnn.threads.set_num_threads(threads)
import statistics
import time
import numba
from bench import report_to_parent
from bench.training import PROBLEMS, build_model, make_batch, refsnn_step

p = PROBLEMS[network]
step = refsnn_step(build_model(network, neuron))
x, y = make_batch(network, p["T"], p["batch"])
step(x, y)
step(x, y)
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step(x, y)
    times.append(time.perf_counter() - t0)
with open("/proc/self/maps") as f:  # which OpenMP runtime Numba's workers run on
    gomp = sorted({line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line})
report_to_parent({"seconds": statistics.median(times), "best": min(times), "layer": numba.threading_layer(),
                  "threads": refsnn.threads.get_num_threads(), "openmp": gomp})
'''


def measure(network, neuron, threads, rounds):
    """{first: [median step seconds of each round's fresh process]}, {first: fastest step seen} and the
    children's reports."""
    seconds, best, reports = {first: [] for first in ORDERS}, {first: float("inf") for first in ORDERS}, {}
    for r in range(rounds):
        for first in ORDERS[r % len(ORDERS):] + ORDERS[:r % len(ORDERS)]:
            result = run_child(["-c", SCRIPT, first, str(threads), network, neuron, str(STEPS)], child_env(threads))
            seconds[first].append(result["seconds"])
            best[first] = min(best[first], result["best"])
            reports[first] = result
    return seconds, best, reports


def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    import os
    threads = threads or os.cpu_count()
    rounds = repeats or DEFAULT_ROUNDS
    quick = bool(getattr(options, "quick", False))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads)
    rows, runtimes = [], []
    for network, neuron in QUICK_ROWS if quick else ROWS:
        log(f"import_order: {network} {neuron}, {threads} thread(s), {rounds} rounds of {len(ORDERS)} processes ...")
        seconds, best, reports = measure(network, neuron, threads, rounds)
        median = {first: statistics.median(s) for first, s in seconds.items()}
        ratios = {first: median[first] / median["refsnn"] for first in ORDERS[1:]}
        best_ratios = {first: best[first] / best["refsnn"] for first in ORDERS[1:]}
        worst = max(ratios.values())
        rows.append([f"{network} {neuron}", str(threads), *(f"{1e3 * median[f]:.0f}" for f in ORDERS),
                     *(f"{ratios[f]:.2f}" for f in ORDERS[1:]), f"≤ {TARGET}", "yes" if worst <= TARGET else "NO",
                     " / ".join(f"{1e3 * best[f]:.0f}" for f in ORDERS),
                     " / ".join(f"{best_ratios[f]:.2f}" for f in ORDERS[1:]),
                     " / ".join(f"{1e3 * min(seconds[f]):.0f}-{1e3 * max(seconds[f]):.0f}" for f in ORDERS)])
        log("  " + " | ".join(rows[-1]))
        for first, report in reports.items():
            runtimes.append(f"{first} first: Numba layer {report['layer']}, {report['threads']} thread(s), "
                            f"OpenMP runtime {', '.join(report['openmp']) or 'none loaded'}")
    command = f"python -m bench --only import_order --repeats {rounds} --threads {threads}" + (" --quick" if quick else "")
    body = "\n".join(header(command, started, load_start, threads_line) + [
        "",
        f"refsnn's training step (forward, cross-entropy, backward, Adam; float32) in fresh processes that import "
        f"refsnn, NumPy or torch first, then refsnn, and call `refsnn.threads.set_num_threads({threads})`; ms, "
        f"median of {STEPS} steps after two warm-up steps, then the median over {rounds} rounds of the three "
        "processes run in turn. Ratio = time with that library imported first / time with refsnn first "
        f"(target ≤ {TARGET}). Best = the fastest single step of each order over all its processes (on a busy "
        "machine the least disturbed); the last column is the range of each order's medians over the rounds.",
        "",
        markdown_table(["network", "threads", "refsnn first ms", "NumPy first ms", "torch first ms",
                        "NumPy/refsnn", "torch/refsnn", "target", "met", "best ms (refsnn / NumPy / torch)",
                        "best NumPy/refsnn / torch/refsnn", "range ms (refsnn / NumPy / torch)"], rows),
        "",
        "The children's thread pools (the OpenMP runtime that Numba's workers run on, from /proc/self/maps): "
        + "; ".join(dict.fromkeys(runtimes)) + ".",
    ]) + load_warning(load_start)
    return publish("import_order", HEADING, body, write)
