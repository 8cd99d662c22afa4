"""Conv2d, float32 forward + backward: refsnn vs ``torch.nn.Conv2d`` vs ``torch.compile``.

3x3 kernels, padding 1, bias, on a batch of T·N = 128 images (refsnn sees ``[T=4, N=32, C, H, W]``,
torch ``[128, C, H, W]``): docs/performance.md's ``[128, 64, 16, 16]`` 64→64, VGG-11's layers at
32x32, 16x16 and 8x8, and two stride-2 layers. One timed call is ``forward(x)`` then
``backward(g)``, which gives the input gradient, the weight gradient and the bias gradient:

* refsnn: ``refsnn.layers.Conv2d`` ... ``layer.forward(x); layer.backward(g)``;
* torch: ``torch.nn.Conv2d`` with the same weight and bias, ``conv(x).backward(g)``, ``x``
  requiring grad;
* torch.compile (inductor) of that module, forward and backward.

Before timing, the output and the three gradients of every torch candidate must agree with
refsnn's to 1e-4 relative (max |Δ| / max |refsnn|), or the benchmark stops.

Bound. Each pass (forward Y = W ⋆ X, input gradient, weight gradient) is 2·N·Cout·Cin·k²·Ho·Wo
floating-point operations, so a forward + backward is 3 times that; the bound is those FLOPs at
the sgemm rate NumPy's BLAS reaches on a large square float32 product in this process
(``bench.sgemm_rate``), and "of bound" = bound / refsnn time, the fraction of the sgemm rate
the layer reaches.

Per-pass split. torch's forward runs alone (no grad), and each of its gradients alone through
``aten.convolution_backward`` with an output mask (input gradient only, weight and bias gradients
only). refsnn's backward is one call and is timed whole. Beside them, each pass's im2col product
by itself in NumPy (K = Cin·k², M = N·Ho·Wo: forward [Cout, K]·[K, M], input gradient
[K, Cout]·[Cout, M], weight gradient [Cout, M]·[M, K] and, transposed, [K, M]·[M, Cout]): the
time a GEMM-based layer cannot go below at this shape, so that refsnn's time minus it is what it
spends outside BLAS.
"""
import datetime
import logging
import time

import numpy as np
import torch

from bench import (compile_first_call, fix_threads, header, interleaved_medians, load_average, load_warning, log,
                   markdown_table, publish, sgemm_rate)
from refsnn.layers import Conv2d

DEFAULT_REPEATS = 10
T, N = 4, 32  # the refsnn input is [T, N, C, H, W]; torch's batch is T·N
KERNEL, PADDING = 3, 1
# (what it is, C_in, H = W, C_out, stride)
SHAPES = (("VGG-11 layer1", 3, 32, 64, 1),
          ("performance.md", 64, 16, 64, 1),
          ("VGG-11 layer2", 64, 16, 128, 1),
          ("VGG-11 layer3", 128, 8, 256, 1),
          ("stride 2", 64, 32, 64, 2),
          ("stride 2", 128, 16, 128, 2))
QUICK_SHAPES = SHAPES[1:2] + SHAPES[4:5]
TOLERANCE = 1e-4
COMPILE_TIMEOUT = 120.0
HEADING = "## Conv2d"


def describe(shape):
    what, c_in, size, c_out, stride = shape
    out = (size + 2 * PADDING - KERNEL) // stride + 1
    return f"[{T * N}, {c_in}, {size}, {size}] {c_in}→{c_out} s{stride} → {out}x{out} ({what})"


def pass_flops(shape):
    """2·N·Cout·Cin·k²·Ho·Wo: one pass (forward, input gradient or weight gradient)."""
    _, c_in, size, c_out, stride = shape
    out = (size + 2 * PADDING - KERNEL) // stride + 1
    return 2 * T * N * c_out * c_in * KERNEL ** 2 * out * out


# ------------------------------------------------------------------------------------------
# Candidates: name -> (prepare, run); prepare is untimed
# ------------------------------------------------------------------------------------------
def refsnn_candidate(layer, x, g):
    out = {}

    def run():
        out["y"] = layer.forward(x)
        out["dx"] = layer.backward(g)

    out["grads"] = layer.grads
    return (layer.zero_grad, run), out


def torch_candidate(module, x, g):
    """(prepare, run) of ``module`` (a torch.nn.Conv2d or its compiled wrapper), and its outputs."""
    x_t = torch.from_numpy(x.reshape(T * N, *x.shape[2:]).copy()).requires_grad_()
    g_t = torch.from_numpy(g.reshape(T * N, *g.shape[2:]).copy())
    parameters = list(module.parameters())
    out = {}

    def prepare():
        x_t.grad = None
        for p in parameters:
            p.grad = None

    def run():
        y = module(x_t)
        y.backward(g_t)
        out["y"] = y

    return (prepare, run), out, x_t


def torch_layer(layer):
    conv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, KERNEL, stride=layer.stride, padding=PADDING)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(layer.params["weight"]))
        conv.bias.copy_(torch.from_numpy(layer.params["bias"]))
    return conv


def relative_error(mine, theirs):
    mine, theirs = np.asarray(mine), np.asarray(theirs)
    return float(np.max(np.abs(mine - theirs)) / max(float(np.max(np.abs(mine))), 1e-30))


def check_agreement(name, ref, out, x_t, module):
    """Largest relative difference of (y, dL/dx, dL/dW, dL/db) from refsnn's; raise above TOLERANCE."""
    T_N = T * N
    pairs = {"y": (ref["y"].reshape(T_N, *ref["y"].shape[2:]), out["y"].detach().numpy()),
             "dL/dx": (ref["dx"].reshape(T_N, *ref["dx"].shape[2:]), x_t.grad.numpy()),
             "dL/dW": (ref["grads"]["weight"], module.weight.grad.numpy()),
             "dL/db": (ref["grads"]["bias"], module.bias.grad.numpy())}
    errors = {k: relative_error(a, b) for k, (a, b) in pairs.items()}
    worst = max(errors, key=errors.get)
    if errors[worst] > TOLERANCE:
        raise AssertionError(f"conv: {name} disagrees with refsnn: {worst} differs by {errors[worst]:.1e} relative "
                             f"(> {TOLERANCE:g}); all: {errors}")
    return errors[worst]


# ------------------------------------------------------------------------------------------
# The per-pass split
# ------------------------------------------------------------------------------------------
def refsnn_pass_candidates(layer, x, g):
    """refsnn's forward alone, and its backward (one call: input, weight and bias gradients)."""
    return {"refsnn forward": (lambda: None, lambda: layer.forward(x)),
            "refsnn backward": (lambda: layer.forward(x), lambda: layer.backward(g))}


def torch_pass_candidates(conv, x, g):
    """torch's forward, and each gradient alone through ``aten.convolution_backward``'s output mask."""
    x_t = torch.from_numpy(x.reshape(T * N, *x.shape[2:]).copy())
    g_t = torch.from_numpy(g.reshape(T * N, *g.shape[2:]).copy())
    w, b = conv.weight.detach(), conv.bias.detach()
    geometry = ([conv.out_channels], conv.stride, conv.padding, conv.dilation, False, (0, 0), conv.groups)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(g_t, x_t, w, *geometry, mask)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(x_t, w, b, conv.stride, conv.padding)

    nothing = lambda: None
    return {"torch forward": (nothing, forward),
            "torch input grad": (nothing, backward((True, False, False))),
            "torch weight grad": (nothing, backward((False, True, True))),
            "torch backward": (nothing, backward((True, True, True)))}


def gemm_candidates(shape, rng):
    """The three im2col products of the pass, alone in NumPy (K = Cin·k², M = N·Ho·Wo):
    forward [Cout, K]·[K, M], input grad [K, Cout]·[Cout, M], weight grad [Cout, M]·[M, K], and
    the weight grad transposed, dWᵀ = [K, M]·[M, Cout] (BLAS may run one far faster than the other)."""
    _, c_in, size, c_out, stride = shape
    out = (size + 2 * PADDING - KERNEL) // stride + 1
    K, M = c_in * KERNEL ** 2, T * N * out * out
    w = rng.standard_normal((c_out, K), dtype=np.float32)
    cols = rng.standard_normal((K, M), dtype=np.float32)
    g = rng.standard_normal((c_out, M), dtype=np.float32)
    y, dcols, dw = np.empty((c_out, M), np.float32), np.empty((K, M), np.float32), np.empty((c_out, K), np.float32)
    dw_t = np.empty((K, c_out), np.float32)
    nothing = lambda: None
    return {"gemm forward": (nothing, lambda: np.matmul(w, cols, out=y)),
            "gemm input grad": (nothing, lambda: np.matmul(w.T, g, out=dcols)),
            "gemm weight grad": (nothing, lambda: np.matmul(g, cols.T, out=dw)),
            "gemm weight grad transposed": (nothing, lambda: np.matmul(cols, g.T, out=dw_t))}


def split_rows(shape, layer, conv, x, g, repeats, sgemm, rng):
    times = interleaved_medians({**refsnn_pass_candidates(layer, x, g), **torch_pass_candidates(conv, x, g),
                                 **gemm_candidates(shape, rng)}, repeats)
    transposed = 1e3 * times["gemm weight grad transposed"]
    times["gemm backward"] = times["gemm input grad"] + min(times["gemm weight grad"],
                                                            times["gemm weight grad transposed"])
    flops = pass_flops(shape)
    rows = []
    for name, passes in (("forward", 1), ("input grad", 1), ("weight grad", 1), ("backward", 2)):
        theirs, gemm = 1e3 * times[f"torch {name}"], 1e3 * times[f"gemm {name}"]
        gemm_cell = f"{gemm:.2f}" + (f" (dWᵀ: {transposed:.2f})" if name == "weight grad" else "")
        bound = 1e3 * passes * flops / sgemm
        if f"refsnn {name}" in times:
            ref = 1e3 * times[f"refsnn {name}"]
            ref_cells = [f"{ref:.2f}", f"{theirs / ref:.2f}", f"{100 * bound / ref:.0f}%"]
        else:
            ref_cells = ["(in backward)", "–", "–"]
        rows.append([describe(shape) if name == "forward" else "", name, f"{passes * flops / 1e9:.2f}",
                     ref_cells[0], f"{theirs:.2f}", ref_cells[1], gemm_cell, f"{bound:.2f}", ref_cells[2],
                     f"{100 * bound / theirs:.0f}%"])
    return rows


# ------------------------------------------------------------------------------------------
# One shape
# ------------------------------------------------------------------------------------------
def bench_shape(shape, repeats, compile_on, sgemm, rng):
    _, c_in, size, c_out, stride = shape
    layer = Conv2d(c_in, c_out, KERNEL, stride=stride, padding=PADDING, rng=rng)
    x = rng.standard_normal((T, N, c_in, size, size), dtype=np.float32)
    out_size = layer.output_size(size, size)
    g = rng.standard_normal((T, N, c_out, *out_size), dtype=np.float32)
    conv = torch_layer(layer)

    candidates, checks = {}, {}
    candidates["refsnn"], ref = refsnn_candidate(layer, x, g)
    t0 = time.perf_counter()
    for step in candidates["refsnn"]:
        step()
    warmup = time.perf_counter() - t0  # Numba compile or cache load, then one call
    (prepare, run_once), out, x_t = torch_candidate(conv, x, g)
    candidates["torch"] = (prepare, run_once)
    prepare()
    run_once()
    checks["torch"] = check_agreement("torch.nn.Conv2d", ref, out, x_t, conv)

    compile_note = "not run (--compile none)"
    if compile_on:
        log(f"  {describe(shape)}: compiling ...")
        torch._dynamo.reset()
        candidate, out_c, x_c = torch_candidate(torch.compile(conv, dynamic=False), x, g)
        seconds, failure = compile_first_call(*candidate, timeout=COMPILE_TIMEOUT)
        if failure:
            compile_note = failure
        else:
            compile_note = f"compile + first call {seconds:.1f} s"
            candidates["compile"] = candidate
            checks["compile"] = check_agreement("torch.compile", ref, out_c, x_c, conv)

    log(f"  {describe(shape)}: timing {', '.join(candidates)} x {repeats} ...")
    times = interleaved_medians(candidates, repeats)
    flops = 3 * pass_flops(shape)
    ref_ms, torch_ms = 1e3 * times["refsnn"], 1e3 * times["torch"]
    bound_ms = 1e3 * flops / sgemm
    if "compile" in times:
        tc_ms = 1e3 * times["compile"]
        tc_cells = [f"{tc_ms:.2f}", f"{tc_ms / ref_ms:.2f}"]
    else:
        tc_cells = [compile_note, "–"]
    row = [describe(shape), f"{flops / 1e9:.2f}", f"{ref_ms:.2f}", f"{torch_ms:.2f}", f"{torch_ms / ref_ms:.2f}",
           *tc_cells, f"{flops / times['refsnn'] / 1e9:.0f}", f"{bound_ms:.2f}", f"{100 * bound_ms / ref_ms:.0f}%"]
    check = [describe(shape), f"{checks['torch']:.1e}",
             f"{checks['compile']:.1e}" if "compile" in checks else "–", f"{warmup:.2f}", compile_note]
    log(f"  {describe(shape)}: per-pass split x {repeats} ...")
    return row, check, split_rows(shape, layer, conv, x, g, repeats, sgemm, rng)


# ------------------------------------------------------------------------------------------
# Spike input: the event-driven path (refsnn.layers.conv_events) against the dense path and torch
# ------------------------------------------------------------------------------------------
SPIKE_SHAPES = (("performance.md", 64, 16, 64, 1),
                ("VGG-11 layer2", 64, 16, 128, 1),
                ("VGG-11 layer3", 128, 8, 256, 1),
                ("VGG-11 layer4", 256, 8, 256, 1),
                ("VGG-11 layer6", 512, 4, 512, 1))
QUICK_SPIKE_SHAPES = SPIKE_SHAPES[:1]
SPIKE_RATES = (0.05, 0.15, 0.3, 0.45)


def spike_rows(shapes, repeats, rng):
    """One row per (shape, firing rate): binary spikes x (each input 1 with probability ``rate``),
    forward + backward of refsnn's layer on the path it chooses, of the same layer held on the
    event-driven path and held on the dense path (where they break even: refsnn.layers.conv.SPARSE_COST), and
    of torch.nn.Conv2d."""
    rows, checks = [], []
    for shape in shapes:
        _, c_in, size, c_out, stride = shape
        for rate in SPIKE_RATES:
            layer = Conv2d(c_in, c_out, KERNEL, stride=stride, padding=PADDING, rng=np.random.default_rng(1))
            dense = Conv2d(c_in, c_out, KERNEL, stride=stride, padding=PADDING, rng=np.random.default_rng(1))
            dense._sparse_pays = lambda *args: False   # held on im2col + GEMM
            sparse = Conv2d(c_in, c_out, KERNEL, stride=stride, padding=PADDING, rng=np.random.default_rng(1))
            sparse._sparse_pays = lambda *args: True   # held on the event-driven path
            x = (rng.random((T, N, c_in, size, size)) < rate).astype(np.float32)
            g = rng.standard_normal((T, N, c_out, *layer.output_size(size, size)), dtype=np.float32)
            candidates = {}
            candidates["refsnn"], ref = refsnn_candidate(layer, x, g)
            candidates["refsnn sparse"], _ = refsnn_candidate(sparse, x, g)
            candidates["refsnn dense"], _ = refsnn_candidate(dense, x, g)
            for step in candidates["refsnn"] + candidates["refsnn sparse"] + candidates["refsnn dense"]:
                step()
            path = layer.last_path
            conv = torch_layer(layer)
            (prepare, run_once), out, x_t = torch_candidate(conv, x, g)
            candidates["torch"] = (prepare, run_once)
            prepare()
            run_once()
            checks.append([describe(shape), f"{rate:g}", f"{check_agreement('torch.nn.Conv2d', ref, out, x_t, conv):.1e}"])
            log(f"  spikes at {rate:g}, {describe(shape)}: timing {', '.join(candidates)} x {repeats} ...")
            times = interleaved_medians(candidates, repeats)
            ms = {k: 1e3 * v for k, v in times.items()}
            rows.append([describe(shape), f"{rate:g}", path, f"{ms['refsnn']:.2f}", f"{ms['refsnn sparse']:.2f}",
                         f"{ms['refsnn dense']:.2f}", f"{ms['torch']:.2f}",
                         f"{ms['refsnn dense'] / ms['refsnn sparse']:.2f}", f"{ms['torch'] / ms['refsnn']:.2f}"])
            log("  " + " | ".join(rows[-1]))
    return rows, checks


# ------------------------------------------------------------------------------------------
# Entry point (called by bench/__main__.py)
# ------------------------------------------------------------------------------------------
def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    logging.getLogger("torch._library").setLevel(logging.ERROR)  # "Triton not available" noise
    repeats = repeats or DEFAULT_REPEATS
    threads = threads or torch.get_num_threads()
    quick = bool(getattr(options, "quick", False))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    log("conv: measuring the sgemm rate ...")
    sgemm = sgemm_rate()

    rng = np.random.default_rng(0)
    rows, checks, splits = [], [], []
    for shape in QUICK_SHAPES if quick else SHAPES:
        row, check, split = bench_shape(shape, repeats, compile_models != "none", sgemm, rng)
        rows.append(row)
        checks.append(check)
        splits += split
        log("  " + " | ".join(row))

    spikes, spike_checks = spike_rows(QUICK_SPIKE_SHAPES if quick else SPIKE_SHAPES, repeats, rng)

    table = markdown_table(
        ["input, channels, stride → output", "GFLOP", "refsnn ms", "torch ms", "torch/refsnn", "torch.compile ms",
         "compile/refsnn", "refsnn GFLOP/s", "bound ms", "of bound"], rows)
    split_table = markdown_table(
        ["shape", "pass", "GFLOP", "refsnn ms", "torch ms", "torch/refsnn", "GEMM alone ms", "bound ms",
         "refsnn of bound", "torch of bound"], splits)
    check_table = markdown_table(
        ["shape", "torch: max rel Δ (y, dx, dW, db)", "compile: same", "refsnn warm-up s", "torch.compile"], checks)
    command = f"python -m bench --only conv --repeats {repeats} --threads {threads}" + (" --quick" if quick else "")
    body = "\n".join(header(command, started, load_start, threads_line) + [
        f"sgemm rate (NumPy float32 matmul, 2048x2048 by 2048x2048, best of 5): {sgemm / 1e9:.0f} GFLOP/s.",
        "",
        f"float32, kernel {KERNEL}x{KERNEL}, padding {PADDING}, bias; batch T·N = {T}·{N} = {T * N} (refsnn "
        f"[T, N, C, H, W], torch [T·N, C, H, W]); one call = forward + backward (input, weight and bias "
        f"gradients); median of {repeats} repeats, candidates interleaved in one process after warm-up. Ratios "
        "> 1 mean refsnn is faster. GFLOP = 3 passes of 2·N·Cout·Cin·k²·Ho·Wo; bound = GFLOP / sgemm rate; "
        "\"of bound\" = bound / refsnn time = the fraction of the sgemm rate refsnn reaches. torch.compile: "
        "inductor, default mode, of the torch.nn.Conv2d.",
        "",
        table,
        "",
        "Per pass: torch's forward (no grad) and each gradient alone through `aten.convolution_backward` with "
        "an output mask; refsnn's backward is one call (input, weight and bias gradients). \"GEMM alone\" is "
        "the pass's im2col product by itself in NumPy (K = Cin·k², M = N·Ho·Wo: forward [Cout, K]·[K, M], input "
        "grad [K, Cout]·[Cout, M], weight grad [Cout, M]·[M, K], and in brackets the same product transposed, "
        "dWᵀ = [K, M]·[M, Cout]; the backward's GEMM time takes the faster of the two); refsnn time minus it is "
        "what the layer spends outside BLAS (patches, scatter, layouts).",
        "",
        split_table,
        "",
        f"Agreement with refsnn before timing (must be <= {TOLERANCE:g}) and compile times:",
        "",
        check_table,
        "",
        "Spike input: x binary, each element 1 with probability = the firing rate; forward + backward (input, "
        "weight and bias gradients) of refsnn's layer on the path it chooses from the counted non-zeros "
        "(\"sparse\": forward and weight gradient over the active inputs, refsnn.layers.conv_events; the input gradient "
        "stays a GEMM), of the same layer held on each path (\"sparse ms\", \"dense ms\": im2col + GEMM; where "
        "they break even sets refsnn.layers.conv.SPARSE_COST), and of torch.nn.Conv2d; dense/sparse > 1: the event-driven "
        "path is faster; torch/refsnn > 1: refsnn's chosen path is faster than torch.",
        "",
        markdown_table(["input, channels, stride → output", "firing rate", "refsnn path", "refsnn ms",
                        "sparse ms", "dense ms", "torch ms", "dense/sparse", "torch/refsnn"], spikes),
        "",
        "Spike input, agreement of torch with refsnn's chosen path (max rel Δ of y, dx, dW, db):",
        "",
        markdown_table(["shape", "firing rate", "max rel Δ"], spike_checks),
    ])
    body += load_warning(load_start)
    return publish("conv", HEADING, body, write)
