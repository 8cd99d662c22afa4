"""Peak memory of one training step: refsnn vs SpikingJelly, each side in its own process.

Workloads (bench/training.py): the spiking VGG-11 on 32x32 inputs, T = 4, batch 32, with LIF
and with CLIF neurons, and the small CNN (CLIF) on 28x28 inputs, T = 4, batch 64. Each side runs
in a fresh process (``python -m bench.training``) that imports only what it needs (the refsnn
side never loads torch), builds the network (the SpikingJelly side builds the refsnn network,
takes its twin with the same weights and drops it), runs a warm-up step on two images (kernels
loaded, gradients and Adam state allocated on both sides), then measures:

* baseline: resident set after all that;
* peak: the resident-set high-water mark (VmHWM, reset to the baseline just before the steps
  through /proc/self/clear_refs) over a few steps of the real batch;
* step = peak − baseline: the memory a step needs beyond the model, its gradients and the
  optimizer state, i.e. what it keeps from the forward for the backward plus workspaces.

Bound: what backpropagation through time must keep (``bench.training.bptt_bytes``): each conv
or linear layer's input (1 byte per element where it is spikes), each BatchNorm's input and
each neuron's charged potential H (4 bytes), per time step and sample, times T·N; also given
with every tensor float32. "of bound" = that requirement / refsnn's step memory.
"""
import datetime
import os

from bench import child_env, fix_threads, header, load_average, load_warning, log, markdown_table, publish, run_child
from bench.training import PROBLEMS, bptt_bytes, build_model, child_args

DEFAULT_STEPS = 3  # steps of the real batch per process (--repeats)
WORKLOADS = (("vgg11", "lif"), ("vgg11", "clif"), ("cnn", "clif"))  # (network, neuron)
QUICK_WORKLOADS = (("vgg11", "lif"), ("cnn", "clif"))
SIDES = ("refsnn", "spikingjelly")
HEADING = "## Peak memory of a training step"
MB = 1 << 20


def measure(network, neuron, T, batch, threads, steps):
    """{side: the child's report} for one workload, the sides one after the other."""
    env = child_env(threads)
    return {side: run_child(child_args(side, network, neuron, T, batch, steps=steps, threads=threads), env)
            for side in SIDES}


def mb(n_bytes):
    return f"{n_bytes / MB:.1f}" if abs(n_bytes) < 10 * MB else f"{n_bytes / MB:.0f}"


def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    threads = threads or os.cpu_count()
    steps = repeats or DEFAULT_STEPS
    quick = bool(getattr(options, "quick", False))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    rows, notes = [], []
    for network, neuron in QUICK_WORKLOADS if quick else WORKLOADS:
        T, batch = PROBLEMS[network]["T"], PROBLEMS[network]["batch"]
        log(f"memory: {network} {neuron} T={T} N={batch}, one process per side ...")
        result = measure(network, neuron, T, batch, threads, steps)
        spikes, float32 = bptt_bytes(build_model(network, neuron), PROBLEMS[network]["in_shape"], T, batch)
        ref, sj = result["refsnn"], result["spikingjelly"]
        step = {side: r["peak"] - r["baseline"] for side, r in result.items()}
        rows.append([f"{network} {neuron}", f"{T}·{batch}",
                     mb(ref["baseline"]), mb(ref["peak"]), mb(step["refsnn"]),
                     mb(sj["baseline"]), mb(sj["peak"]), mb(step["spikingjelly"]),
                     f"{step['refsnn'] / step['spikingjelly']:.2f}", f"{ref['peak'] / sj['peak']:.2f}",
                     mb(spikes), mb(float32), f"{100 * spikes / step['refsnn']:.0f}%"])
        notes.append([f"{network} {neuron}", mb(ref["parameter_bytes"]), mb(ref["after_imports"]),
                      mb(sj["after_imports"]), " ".join(f"{t:.2f}" for t in ref["seconds"]),
                      " ".join(f"{t:.2f}" for t in sj["seconds"]),
                      "yes" if ref["peak_reset"] and sj["peak_reset"] else "no (peak counts from process start)"])
        log("  " + " | ".join(rows[-1]))

    table = markdown_table(
        ["network", "T·N", "refsnn baseline MB", "refsnn peak MB", "refsnn step MB", "SJ baseline MB", "SJ peak MB",
         "SJ step MB", "step refsnn/SJ", "peak refsnn/SJ", "BPTT (1-byte spikes) MB", "BPTT (float32) MB",
         "of bound"], rows)
    note_table = markdown_table(
        ["network", "parameters MB", "refsnn after imports MB", "SJ after imports MB", "refsnn step s",
         "SJ step s", "peak reset before the steps"], notes)
    command = (f"python -m bench --only memory --repeats {steps} --threads {threads}"
               + (" --quick" if quick else ""))
    body = "\n".join(header(command, started, load_start, threads_line) + [
        "",
        f"One fresh process per side and network (`python -m bench.training`), float32, Adam, {steps} steps "
        "of the batch after a warm-up step on 2 images (kernels loaded, gradients and Adam state allocated). "
        "Baseline = resident set after imports, model, optimizer and warm-up; peak = resident-set high-water mark "
        "(VmHWM) over the steps; step = peak − baseline, what a step needs beyond model and optimizer state. "
        "Ratios < 1 mean refsnn uses less. BPTT = what backpropagation through time must keep: each conv/linear "
        "input (1 byte per element where it is spikes), each BatchNorm input and each neuron's H (4 bytes), per "
        "step and sample, × T·N; \"of bound\" = BPTT (1-byte spikes) / refsnn step. The refsnn process never "
        "imports torch; the SpikingJelly process imports refsnn too (to build the twin), in its baseline.",
        "",
        table,
        "",
        "Context: parameter bytes (gradients and Adam's two moments are 3 times more), resident set right after "
        "the imports, and the times of the measured steps (separate processes, not interleaved: see the step "
        "benchmark for timings):",
        "",
        note_table,
    ])
    body += load_warning(load_start)
    return publish("memory", HEADING, body, write)
