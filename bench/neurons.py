"""Neuron layers, float32 forward + backward: refsnn vs SpikingJelly 2.0 vs ``torch.compile``.

For LIF, PLIF, CLIF and IF at ``[T=4, N=32, 64·16·16]`` and ``[T=8, N=64, 4096]`` one timed call is
``forward(x)`` then ``backward(grad)`` on the spikes:

* refsnn: ``refsnn.LIF()`` ... ``layer.forward(x); layer.backward(g)``;
* SpikingJelly: ``neuron.LIFNode(step_mode="m")`` ... (same defaults as refsnn: sigmoid surrogate,
  alpha 4, for LIF/PLIF/IF; rect, alpha 1, for CLIF), ``node(x).backward(g)`` with ``x``
  requiring grad, ``functional.reset_net`` before each call (untimed);
* torch.compile (inductor) of a plain PyTorch time loop of the same model (below), forward and
  backward; a compile that fails or takes longer than ``COMPILE_TIMEOUT`` shows the reason instead.

Inputs: x ~ N(0.6, 1) so that neurons neither stay silent nor saturate (the firing rate is
printed), grad ~ N(0, 1), both float32, the same arrays for every candidate.

Bound. A fused forward + backward must at least move 6 arrays of T·N·F float32 through memory:
forward reads x and writes the spikes and the charged potential h (3 arrays); backward reads
grad_spikes and h and writes grad_x (3 arrays). Everything else (the membrane, CLIF's M, the
spikes for backward) can be recomputed from h in registers. So

    bound = 6 · T·N·F · 4 bytes / copy bandwidth,

with the bandwidth of a large ``np.copyto`` (bytes read + written per second, see
``bench.copy_bandwidth``); "of bound" = bound / refsnn time.
"""
import datetime
import logging
import time

import numpy as np
import torch
from spikingjelly.activation_based import functional, neuron

import refsnn
from bench import (compile_first_call, copy_bandwidth, fix_threads, header, interleaved_medians, load_average,
                   load_warning, log, markdown_table, publish)

DEFAULT_REPEATS = 20
SHAPES = ((4, 32, 64, 16, 16), (8, 64, 4096))
SHAPE_NAMES = {SHAPES[0]: "T=4 N=32 F=64·16·16", SHAPES[1]: "T=8 N=64 F=4096"}
INPUT_MEAN, INPUT_STD = 0.6, 1.0
COMPILE_TIMEOUT = 120.0  # seconds for the first compiled forward + backward
ARRAYS_MOVED = 6         # x, spikes, h (forward) + grad_spikes, h, grad_x (backward)
HEADING = "## Neuron layers"

REFSNN = {"LIF": refsnn.LIF, "PLIF": refsnn.PLIF, "CLIF": refsnn.CLIF, "IF": refsnn.IF}
SPIKINGJELLY = {"LIF": neuron.LIFNode, "PLIF": neuron.ParametricLIFNode,
                "CLIF": neuron.ComplementaryLIFNode, "IF": neuron.IFNode}


# ------------------------------------------------------------------------------------------
# Plain PyTorch time loops (the torch.compile candidates), SpikingJelly's equations and defaults
# ------------------------------------------------------------------------------------------
def spike(u, surrogate, alpha):
    """Θ(u) = 1{u >= 0} forward; backward the surrogate derivative, through p − p.detach() = 0.

    sigmoid: p = σ(αu), dp/du = α·σ(αu)(1 − σ(αu));  rect: p = αu·1{|u| < 1/(2α)}, dp/du = α·1{...}.
    """
    heaviside = (u >= 0).to(u.dtype)
    if surrogate == "sigmoid":
        p = torch.sigmoid(alpha * u)
    else:
        p = alpha * u * (u.abs() < 0.5 / alpha).to(u.dtype)
    return heaviside + (p - p.detach())


def lif_loop(x, tau=2.0, v_th=1.0, alpha=4.0):
    """H = V + (X − V)/tau ; S = Θ(H − V_th) ; V = (1 − S)·H  (hard reset to 0)."""
    v, spikes = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        s = spike(h - v_th, "sigmoid", alpha)
        v = (1.0 - s) * h
        spikes.append(s)
    return torch.stack(spikes)


def plif_loop(x, w, v_th=1.0, alpha=4.0):
    """LIF with 1/tau = k = σ(w), w learnable."""
    k = torch.sigmoid(w)
    v, spikes = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) * k
        s = spike(h - v_th, "sigmoid", alpha)
        v = (1.0 - s) * h
        spikes.append(s)
    return torch.stack(spikes)


def if_loop(x, v_th=1.0, alpha=4.0):
    """H = V + X, then fire and hard reset as LIF."""
    v, spikes = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v + x[t]
        s = spike(h - v_th, "sigmoid", alpha)
        v = (1.0 - s) * h
        spikes.append(s)
    return torch.stack(spikes)


def clif_loop(x, tau=2.0, v_th=1.0, alpha=1.0):
    """H = V − V/tau + X ; S = Θ(H − V_th) ; M = M·σ(H/tau) + S ; V = H − S·(V_th + σ(M))."""
    v, m, spikes = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v - v / tau + x[t]
        s = spike(h - v_th, "rect", alpha)
        m = m * torch.sigmoid(h / tau) + s
        v = h - s * (v_th + torch.sigmoid(m))
        spikes.append(s)
    return torch.stack(spikes)


PLAIN_LOOPS = {"LIF": lif_loop, "PLIF": plif_loop, "CLIF": clif_loop, "IF": if_loop}


# ------------------------------------------------------------------------------------------
# Candidates: name -> (prepare, run); prepare is untimed
# ------------------------------------------------------------------------------------------
def refsnn_candidate(model, x, g):
    layer = REFSNN[model]()
    out = {}

    def run():
        out["spikes"] = layer.forward(x)
        out["grad_x"] = layer.backward(g)

    return (layer.zero_grad, run), out


def spikingjelly_candidate(model, x, g):
    node = SPIKINGJELLY[model](step_mode="m")
    x_t, g_t = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(g)
    out = {}

    def prepare():
        functional.reset_net(node)
        node.zero_grad(set_to_none=True)
        x_t.grad = None

    def run():
        spikes = node(x_t)
        spikes.backward(g_t)
        out["spikes"] = spikes

    out["x"] = x_t
    return (prepare, run), out


def compiled_candidate(model, x, g):
    """Compile the plain loop: (((prepare, run), outputs), seconds of compile + first call), or (None, reason)."""
    torch._dynamo.reset()
    fn = torch.compile(PLAIN_LOOPS[model], dynamic=False)
    x_t, g_t = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(g)
    leaves = (x_t, torch.zeros((), requires_grad=True)) if model == "PLIF" else (x_t,)  # w = −ln(2 − 1)
    out = {"x": x_t}

    def prepare():
        for leaf in leaves:
            leaf.grad = None

    def run():
        spikes = fn(*leaves)
        spikes.backward(g_t)
        out["spikes"] = spikes

    seconds, failure = compile_first_call(prepare, run, timeout=COMPILE_TIMEOUT)
    return (None, failure) if failure else (((prepare, run), out), seconds)


# ------------------------------------------------------------------------------------------
# One row
# ------------------------------------------------------------------------------------------
def agreement(ref, other):
    """(spike mismatches, max |Δ dL/dx| / max |dL/dx|) of a torch candidate against refsnn."""
    spikes = other["spikes"].detach().numpy()
    grad_x = other["x"].grad.numpy()
    mismatches = int(np.count_nonzero(spikes != ref["spikes"]))
    rel = float(np.max(np.abs(grad_x - ref["grad_x"])) / max(np.max(np.abs(ref["grad_x"])), 1e-30))
    return f"{mismatches} / {rel:.1e}"


def bench_row(model, shape, repeats, compile_this, bandwidth, rng, log):
    x = (rng.standard_normal(shape, dtype=np.float32) * INPUT_STD + INPUT_MEAN).astype(np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    candidates, outputs, notes = {}, {}, {}

    candidates["refsnn"], outputs["refsnn"] = refsnn_candidate(model, x, g)
    t0 = time.perf_counter()
    candidates["refsnn"][0]()
    candidates["refsnn"][1]()
    notes["warmup"] = time.perf_counter() - t0  # Numba compile or cache load, then one call
    candidates["spikingjelly"], outputs["spikingjelly"] = spikingjelly_candidate(model, x, g)

    compile_note = "not run (--compile)"
    if compile_this:
        log(f"  {model} {SHAPE_NAMES[shape]}: compiling the plain torch loop ...")
        compiled, info = compiled_candidate(model, x, g)
        if compiled is None:
            compile_note = info
        else:
            candidates["compile"], outputs["compile"] = compiled
            compile_note = f"compile + first call {info:.1f} s"
    log(f"  {model} {SHAPE_NAMES[shape]}: timing {', '.join(candidates)} x {repeats} ...")

    times = interleaved_medians(candidates, repeats)
    for name, (prepare, run) in candidates.items():  # final outputs for the agreement check
        prepare()
        run()
    ref_ms = 1e3 * times["refsnn"]
    sj_ms = 1e3 * times["spikingjelly"]
    bound_ms = 1e3 * ARRAYS_MOVED * x.size * x.itemsize / bandwidth
    rate = float(outputs["refsnn"]["spikes"].mean())
    if "compile" in times:
        tc_ms = 1e3 * times["compile"]
        tc_cells = [f"{tc_ms:.2f}", f"{tc_ms / ref_ms:.2f}"]
        tc_agree = agreement(outputs["refsnn"], outputs["compile"])
    else:
        tc_cells, tc_agree = [compile_note, "–"], "–"
    row = [model, SHAPE_NAMES[shape], f"{rate:.3f}", f"{ref_ms:.2f}", f"{sj_ms:.2f}", f"{sj_ms / ref_ms:.1f}",
           *tc_cells, f"{bound_ms:.2f}", f"{100 * bound_ms / ref_ms:.0f}%"]
    check = [model, SHAPE_NAMES[shape], agreement(outputs["refsnn"], outputs["spikingjelly"]), tc_agree,
             f"{notes['warmup']:.2f}", compile_note]
    return row, check


# ------------------------------------------------------------------------------------------
# Entry point (called by bench/__main__.py)
# ------------------------------------------------------------------------------------------
def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    logging.getLogger("torch._library").setLevel(logging.ERROR)  # "Triton not available" noise
    repeats = repeats or DEFAULT_REPEATS
    threads = threads or torch.get_num_threads()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    log("neurons: measuring copy bandwidth ...")
    bandwidth = copy_bandwidth()

    rng = np.random.default_rng(0)
    rows, checks = [], []
    for shape in SHAPES:
        for model in REFSNN:
            compile_this = compile_models == "all" or (compile_models == "lif" and model == "LIF")
            row, check = bench_row(model, shape, repeats, compile_this, bandwidth, rng, log)
            rows.append(row)
            checks.append(check)
            log("  " + " | ".join(row))

    table = markdown_table(
        ["model", "shape", "firing rate", "refsnn ms", "SpikingJelly ms", "SJ/refsnn",
         "torch.compile ms", "compile/refsnn", "bound ms", "of bound"], rows)
    check_table = markdown_table(
        ["model", "shape", "SJ: spike mismatches / max rel Δ dL/dx", "compile: same",
         "refsnn warm-up s", "torch.compile"], checks)
    body = "\n".join(header(f"python -m bench --only neurons --repeats {repeats} --threads {threads}", started,
                             load_start, threads_line) + [
        f"Copy bandwidth (single-threaded np.copyto of 256 MiB, read + write): {bandwidth / 1e9:.1f} GB/s.",
        "",
        "float32 forward + backward, one call; median of "
        f"{repeats} repeats, candidates interleaved in one process after warm-up. x ~ N({INPUT_MEAN}, "
        f"{INPUT_STD}), grad ~ N(0, 1). Ratios > 1 mean refsnn is faster. Bound = {ARRAYS_MOVED} arrays of "
        "T·N·F float32 (forward reads x, writes spikes and h; backward reads grad_spikes and h, writes "
        "grad_x) / copy bandwidth; \"of bound\" = bound / refsnn time. torch.compile times a plain PyTorch "
        "time loop of the same model (bench/neurons.py), inductor, default mode.",
        "",
        table,
        "",
        "Agreement with refsnn (final call of each candidate) and compile times:",
        "",
        check_table,
    ])
    body += load_warning(load_start)
    return publish("neurons", HEADING, body, write)
