"""One full training step: refsnn vs SpikingJelly 2.0 vs ``torch.compile``, and an epoch estimate.

A step (bench/training.py) is forward, cross-entropy of the time-mean logits, backward and an
Adam update (lr 1e-3), float32, on a fixed batch of N(0, 1) images with direct encoding:

* the spiking VGG-11 (``build_network("vgg11", (3, 32, 32), 10, neuron=...)``) on 32x32 inputs,
  T = 4, batch 32, with LIF and with CLIF neurons;
* the small CNN (conv 32, 64, BatchNorm, CLIF) on 28x28 MNIST-shaped inputs, T = 4, batch 64:
  docs/performance.md's epoch row. Its epoch estimate is the step time × the steps of an epoch of the
  8,000-image MNIST split (⌈8000 / 64⌉ = 125); ``--epoch`` also times one real epoch on that
  split on both sides (the trainer's ``Run.train_epoch`` against the same loop in SpikingJelly).

Candidates: refsnn (its first layer skips dL/d(input), as in the trainer: ``bench.training.refsnn_step``
calls ``refsnn.models.skip_input_gradient``; torch does not compute it either, the input not requiring
grad); the SpikingJelly twin (``verify.networks.torch_twin``: the same network from
SpikingJelly multi-step layers, with the same weights); ``torch.compile`` (inductor) of that
twin, where it compiles (the failure is reported where it does not).

Same loss from the same weights: before timing, a float64 forward of the batch on both sides from
the initial weights must give the same loss to 1e-4 relative, or the benchmark stops. In float32
the check would be unreliable: the two sides' charged potentials agree only to rounding, a neuron
at a threshold tie may fire on one side only, and in a deep network the flip cascades (VGG-11 with
CLIF: 2 flips at ties in layer3 move the loss by 4e-3, which verify.networks.compare_network
reports as a legitimate flip). The float32 losses of every candidate's first step from those
weights are reported beside it; that first step is also the warm-up. After it every candidate
trains on its own weights; a step's cost does not depend on their values.

Bound: the multiply-adds of the step's convolutions and linear layers, 3 passes each (forward,
input and weight gradients; ``bench.training.step_flops``), at the sgemm rate of NumPy's BLAS in
this process; "of bound" = bound / refsnn time.
"""
import copy
import datetime
import logging
import math
import os
import tempfile
import time

import numpy as np
import torch

from bench import (compile_first_call, fix_threads, header, interleaved_medians, load_average, load_warning, log,
                   markdown_table, publish, sgemm_rate)
from bench.training import PROBLEMS, build_model, make_batch, make_twin, refsnn_step, step_flops, torch_step

DEFAULT_REPEATS = 5
ROWS = (("vgg11", "lif"), ("vgg11", "clif"), ("cnn", "clif"))  # (network, neuron)
QUICK_ROWS = (("vgg11", "lif"), ("cnn", "clif"))
EPOCH_IMAGES = 8000  # the training part of the MNIST split (refsnn.data.mnist_t10k_split)
TOLERANCE = 1e-4
COMPILE_TIMEOUT = 300.0
HEADING = "## Training step"
COMPILE_DIFFERS = ("; its float32 loss differs: its fused kernels round differently, neurons at a threshold tie "
                   "fire differently and the flips cascade")


def compiled_step(model, x, y):
    """A step of ``torch.compile`` of a fresh twin: ((step, first loss, seconds of compile + first step), None)
    or (None, reason)."""
    torch._dynamo.reset()
    twin = make_twin(model)
    step = torch_step(twin, forward=torch.compile(twin))
    first = {}
    seconds, failure = compile_first_call(lambda: first.setdefault("loss", step(x, y)), timeout=COMPILE_TIMEOUT, width=160)
    return (None, failure) if failure else ((step, first["loss"], seconds), None)


def loss_difference(loss, ref_loss):
    return abs(loss - ref_loss) / abs(ref_loss)


def float64_losses(model, x, y):
    """The loss of a forward of (x, y) on refsnn and on SpikingJelly, both in float64 from ``model``'s
    weights; raises unless they agree to TOLERANCE. (In float64 a threshold tie has a probability
    of about 1e-10 per element, so the two sides fire alike and the losses must agree.)"""
    import torch.nn.functional as F

    from refsnn.losses import cross_entropy

    mine = copy.deepcopy(model).to(np.float64)
    twin = make_twin(mine)
    x64 = x.astype(np.float64)
    loss = float(cross_entropy(mine.forward(x64), y)[0])
    with torch.no_grad():
        loss_t = F.cross_entropy(twin(torch.from_numpy(x64)).mean(0), torch.from_numpy(y)).item()
    rel = loss_difference(loss_t, loss)
    if not rel <= TOLERANCE:
        raise AssertionError(f"step: in float64 from the same weights SpikingJelly's loss {loss_t!r} differs from "
                             f"refsnn's {loss!r} by {rel:.1e} relative (> {TOLERANCE:g})")
    return loss, loss_t, rel


def bench_row(network, neuron, repeats, compile_on, sgemm):
    T, batch = PROBLEMS[network]["T"], PROBLEMS[network]["batch"]
    model = build_model(network, neuron)
    initial = copy.deepcopy(model)  # the twins of every torch candidate start from these weights
    x, y = make_batch(network, T, batch)
    loss64, loss64_t, rel64 = float64_losses(initial, x, y)
    steps = {"refsnn": refsnn_step(model), "spikingjelly": torch_step(make_twin(initial))}
    first, seconds = {}, {}
    for name, step in steps.items():  # the first step: the loss check and the warm-up
        t0 = time.perf_counter()
        first[name] = step(x, y)
        seconds[name] = time.perf_counter() - t0
    agreement = {"spikingjelly": loss_difference(first["spikingjelly"], first["refsnn"])}
    compile_note = "not run (--compile none)"
    if compile_on:
        log(f"  {network} {neuron}: compiling the SpikingJelly twin ...")
        compiled, reason = compiled_step(initial, x, y)
        if compiled is None:
            compile_note = reason
        else:
            steps["compile"], first["compile"], seconds["compile"] = compiled
            agreement["compile"] = loss_difference(first["compile"], first["refsnn"])
            compile_note = f"compile + first step {seconds['compile']:.1f} s"
            if agreement["compile"] > TOLERANCE:
                compile_note += COMPILE_DIFFERS
    log(f"  {network} {neuron}: timing {', '.join(steps)} x {repeats} ...")
    times = interleaved_medians({name: (lambda: None, lambda s=step: s(x, y)) for name, step in steps.items()},
                                repeats, warmup=1)
    flops = step_flops(build_model(network, neuron), PROBLEMS[network]["in_shape"], T, batch)
    ref, sj = times["refsnn"], times["spikingjelly"]
    bound = flops / sgemm
    if "compile" in times:
        tc_cells = [f"{times['compile']:.3f}", f"{times['compile'] / ref:.2f}"]
    else:
        tc_cells = [compile_note, "–"]
    row = [f"{network} {neuron}", f"{T}·{batch}", f"{ref:.3f}", f"{sj:.3f}", f"{sj / ref:.2f}", *tc_cells,
           f"{flops / 1e9:.1f}", f"{bound:.3f}", f"{100 * bound / ref:.0f}%"]
    check = [f"{network} {neuron}", f"{loss64:.10f}", f"{loss64_t:.10f}", f"{rel64:.1e}", f"{first['refsnn']:.6f}",
             f"{first['spikingjelly']:.6f}", f"{agreement['spikingjelly']:.1e}",
             f"{agreement['compile']:.1e}" if "compile" in agreement else "–",
             f"{seconds['refsnn']:.1f}", f"{seconds['spikingjelly']:.1f}", compile_note]
    return row, check, times


def epoch_rows(times, batch):
    """The epoch estimate of the small CNN: step time × steps per epoch, per candidate."""
    steps = math.ceil(EPOCH_IMAGES / batch)
    return [[name, f"{t:.3f}", f"{steps}", f"{t * steps:.1f}", f"{times['spikingjelly'] / t:.2f}"]
            for name, t in times.items()]


# ------------------------------------------------------------------------------------------
# --epoch: one real epoch of the small CNN on the MNIST split, each side
# ------------------------------------------------------------------------------------------
def real_epoch():
    """[(side, seconds, train loss, train accuracy)] of one epoch, refsnn's trainer then SpikingJelly."""
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    from refsnn.data import Batches
    from refsnn.train import Run, TrainConfig, encode

    with tempfile.TemporaryDirectory() as out_dir:  # the trainer writes nothing before an epoch ends
        cfg = TrainConfig(network="cnn", neuron="clif", dataset="mnist-t10k", T=4, batch_size=64, epochs=1,
                          out_dir=out_dir)
        run = Run(cfg)
        twin = make_twin(run.model)  # same initial weights
        rows = []
        log("  epoch: refsnn (Run.train_epoch) ...")
        t0 = time.perf_counter()
        loss, acc = run.train_epoch(progress=False)
        rows.append(("refsnn", time.perf_counter() - t0, loss, acc))

        log("  epoch: SpikingJelly (the same batches, encoding and Adam) ...")
        opt = torch.optim.Adam(twin.parameters(), lr=cfg.lr)
        batches = Batches(run.train_x, run.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed)
        batches.set_epoch(0)
        total_loss = correct = seen = 0.0
        t0 = time.perf_counter()
        for step, (xb, yb) in enumerate(batches):
            x_t, y_t = torch.from_numpy(encode(cfg, xb, 0, step)), torch.from_numpy(yb.astype(np.int64))
            functional.reset_net(twin)
            opt.zero_grad()
            logits = twin(x_t).mean(0)
            loss = F.cross_entropy(logits, y_t)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(yb)
            correct += (logits.argmax(1) == y_t).sum().item()
            seen += len(yb)
        rows.append(("spikingjelly", time.perf_counter() - t0, total_loss / seen, correct / seen))
    return [[side, f"{s:.1f}", f"{l:.4f}", f"{100 * a:.2f}%"] for side, s, l, a in rows]


# ------------------------------------------------------------------------------------------
# Entry point (called by bench/__main__.py)
# ------------------------------------------------------------------------------------------
def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    logging.getLogger("torch._library").setLevel(logging.ERROR)  # "Triton not available" noise
    repeats = repeats or DEFAULT_REPEATS
    threads = threads or os.cpu_count()
    quick = bool(getattr(options, "quick", False))
    epoch = bool(getattr(options, "epoch", False))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    log("step: measuring the sgemm rate ...")
    sgemm = sgemm_rate()

    rows, checks, epoch_estimate = [], [], []
    for network, neuron in QUICK_ROWS if quick else ROWS:
        row, check, times = bench_row(network, neuron, repeats, compile_models != "none", sgemm)
        rows.append(row)
        checks.append(check)
        if network == "cnn":
            epoch_estimate = epoch_rows(times, PROBLEMS["cnn"]["batch"])
        log("  " + " | ".join(row))
    epoch_table = real_epoch() if epoch else None

    command = (f"python -m bench --only step --repeats {repeats} --threads {threads}" + (" --quick" if quick else "")
               + (" --epoch" if epoch else ""))
    body = header(command, started, load_start, threads_line) + [
        f"sgemm rate (NumPy float32 matmul, 2048x2048 by 2048x2048, best of 5): {sgemm / 1e9:.0f} GFLOP/s.",
        "",
        "One training step (forward, cross-entropy of the time-mean logits, backward, Adam lr 1e-3), float32, "
        f"fixed batch of N(0, 1) images, direct encoding; seconds, median of {repeats} repeats after the first "
        "step, candidates interleaved in one process. SpikingJelly = `verify.networks.torch_twin` of the refsnn "
        "network (SpikingJelly 2.0 multi-step layers, same weights); torch.compile = inductor, default mode, of "
        "that twin. Ratios > 1 mean refsnn is faster. GFLOP = 3 passes of every conv and linear layer; bound = "
        "GFLOP / sgemm rate; \"of bound\" = bound / refsnn time.",
        "",
        markdown_table(["network", "T·N", "refsnn s", "SpikingJelly s", "SJ/refsnn", "torch.compile s",
                        "compile/refsnn", "GFLOP", "bound s", "of bound"], rows),
        "",
        f"Same network, same weights: the loss of a float64 forward from the initial weights on both sides (must "
        f"agree to {TOLERANCE:g} relative, or the benchmark stops); the float32 losses of each candidate's first "
        "step from those weights (reported only: in float32 the two sides' H agree to rounding, a neuron at a "
        "threshold tie may fire on one side only, and in a deep network the flip cascades, e.g. to a few 1e-3 "
        "in the loss); first-step times (refsnn: Numba cache load or compile) and compile:",
        "",
        markdown_table(["network", "refsnn loss f64", "SJ loss f64", "rel Δ f64", "refsnn loss f32", "SJ loss f32",
                        "SJ rel Δ f32", "compile rel Δ f32", "refsnn first s", "SJ first s", "torch.compile"],
                       checks),
    ]
    if epoch_estimate:
        body += ["", f"Epoch estimate of the small CNN (CLIF, T = 4, batch 64) on the 8,000-image MNIST split: "
                     "step time above × steps per epoch (data loading and encoding not included):", "",
                 markdown_table(["candidate", "step s", "steps", "epoch s", "SJ/candidate"], epoch_estimate)]
    if epoch_table:
        body += ["", "One real epoch of that recipe (`refsnn train --network cnn --dataset mnist-t10k`: lr 1e-2, "
                     "direct encoding; refsnn's `Run.train_epoch` against the same batches in SpikingJelly with "
                     "torch.optim.Adam), run one after the other, not interleaved:", "",
                 markdown_table(["side", "epoch s", "train loss", "train accuracy"], epoch_table)]
    body = "\n".join(body) + load_warning(load_start)
    return publish("step", HEADING, body, write)
