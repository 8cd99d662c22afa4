"""Training steps shared by the step, memory and scaling benchmarks, and their child process.

One training step is: forward of a batch ``[T, N, C, H, W]`` (direct encoding, the same image
at every step), cross-entropy of the time-mean of the logits, backward, Adam update.

* refsnn: ``model.zero_grad(); out = model.forward(x); loss, g = cross_entropy(out, y);
  model.backward(g); opt.step()`` with ``refsnn.optim.Adam``, the first layer's input gradient
  skipped as in the trainer (``refsnn.models.skip_input_gradient``);
* SpikingJelly: ``functional.reset_net(twin); opt.zero_grad(); out = twin(x);
  F.cross_entropy(out.mean(0), y).backward(); opt.step()`` with ``torch.optim.Adam``, where
  ``twin = verify.networks.torch_twin(model)`` is the same network with the same weights.

``python -m bench.training --side refsnn|spikingjelly ...`` runs steps of one side alone in a
fresh process and reports its resident set (``child_main``); the parents are bench/memory.py
and bench/scaling.py. torch is imported only on the SpikingJelly side, so the refsnn side's
process never loads it.

``bptt_bytes`` is what backpropagation through time must keep from the forward for the
backward: the analytic requirement the measured memory is compared with.
"""
import argparse
import gc
import time

import numpy as np

from bench import current_rss, fix_threads, peak_rss, report_to_parent, reset_peak_rss
from refsnn.layers import AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, \
    MaxPool2d
from refsnn.losses import cross_entropy
from refsnn.models import build_network, skip_input_gradient
from refsnn.neurons import BaseNeuron
from refsnn.optim import Adam

# The workloads of docs/performance.md: the spiking VGG-11 on 32x32 inputs, T = 4, batch 32, and the
# small CNN (conv 32, 64) on 28x28 MNIST-shaped inputs, T = 4, batch 64.
PROBLEMS = {"vgg11": dict(in_shape=(3, 32, 32), classes=10, T=4, batch=32),
            "cnn": dict(in_shape=(1, 28, 28), classes=10, T=4, batch=64)}
LR = 1e-3
WARMUP_BATCH = 2  # images of the warm-up step that loads kernels and allocates optimizer state


def build_model(network, neuron, width=1.0, seed=0):
    """The refsnn network of ``PROBLEMS[network]``; ``width`` multiplies VGG-11's channels."""
    p = PROBLEMS[network]
    options = {"width": width} if network == "vgg11" else {}
    return build_network(network, p["in_shape"], p["classes"], neuron=neuron, seed=seed, **options)


def make_batch(network, T, batch, seed=0):
    """x [T, N, C, H, W] float32 (N(0, 1) images, direct encoding) and labels y [N] int64."""
    p = PROBLEMS[network]
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, *p["in_shape"]), dtype=np.float32)
    x = np.repeat(images[None], T, axis=0)  # writable, also for T = 1
    return x, rng.integers(0, p["classes"], batch).astype(np.int64)


def refsnn_step(model, lr=LR):
    """A function ``step(x, y)`` running one refsnn training step and returning the loss. Like the
    trainer, it lets the first layer skip dL/d(input) (``skip_input_gradient``; torch skips it too,
    for an input that does not require grad); the parameter gradients are the same."""
    skip_input_gradient(model)
    opt = Adam(model.named_parameters(), lr=lr)

    def step(x, y):
        model.zero_grad()
        out = model.forward(x)
        loss, grad = cross_entropy(out, y)
        model.backward(grad)
        opt.step()
        return float(loss)

    return step


def torch_step(twin, lr=LR, forward=None):
    """A function ``step(x, y)`` running one SpikingJelly training step of ``twin`` and returning
    the loss; ``forward`` (default ``twin``) is what the batch goes through, e.g. ``torch.compile(twin)``."""
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    forward = twin if forward is None else forward
    opt = torch.optim.Adam(twin.parameters(), lr=lr)

    def step(x, y):
        functional.reset_net(twin)
        opt.zero_grad()
        loss = F.cross_entropy(forward(torch.from_numpy(x)).mean(0), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()

    return step


def make_twin(model):
    from verify.networks import torch_twin
    return torch_twin(model)


# ------------------------------------------------------------------------------------------
# What BPTT must keep
# ------------------------------------------------------------------------------------------
def leaf_calls(model, x):
    """[(leaf module, its input, its output)] of one forward of ``x``, in call order."""
    leaves = [m for _, m in model.modules() if not m.children]
    calls = []
    for m in leaves:
        def record(inp, *args, _m=m, _forward=m.forward, **kwargs):
            out = _forward(inp, *args, **kwargs)
            calls.append((_m, inp, out))
            return out
        m.forward = record
    try:
        model.forward(x)
    finally:
        for m in leaves:
            del m.forward  # back to the class's method
    return calls


def sample_input(in_shape, n=2):
    """[1, n, *in_shape] float32 N(0, 1): one time step of ``n`` samples, to size a network."""
    return np.random.default_rng(0).standard_normal((1, n, *in_shape), dtype=np.float32)


def bptt_bytes(model, in_shape, T, batch):
    """(bytes with spikes as 1 byte, bytes with everything float32) that the backward needs.

    Per time step and sample, from one forward of two samples and one step: a conv or linear
    layer keeps its input (for the weight gradient: 1 byte per element where the input is all
    0/1 spikes, else 4), a BatchNorm its input (4), a neuron its charged potential H (4), a
    max pool the position of each maximum (1 byte); average pools, flatten and p = 0 dropout
    keep nothing. Times T·N.
    """
    spikes = float32 = 0
    for m, inp, out in leaf_calls(model, sample_input(in_shape)):
        n_in, n_out = inp.size // 2, out.size // 2
        if isinstance(m, (Conv2d, Linear)):
            spikes += n_in * (1 if np.all((inp == 0) | (inp == 1)) else 4)
            float32 += 4 * n_in
        elif isinstance(m, (BatchNorm1d, BatchNorm2d, BaseNeuron)):
            spikes += 4 * n_in
            float32 += 4 * n_in
        elif isinstance(m, MaxPool2d):
            spikes += n_out
            float32 += 4 * n_out
        elif not isinstance(m, (AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout)):
            raise NotImplementedError(f"bptt_bytes: no rule for {type(m).__name__}")
    return spikes * T * batch, float32 * T * batch


def step_flops(model, in_shape, T, batch):
    """Multiply-add FLOPs of a training step: 3 passes (forward, input and weight gradients) of
    every conv (2·Cout·Cin/groups·k²·Ho·Wo) and linear layer (2·in·out), per sample and step, × T·N
    (the first conv's input gradient, which neither side computes, included: a slightly generous bound)."""
    flops = 0
    for m, inp, out in leaf_calls(model, sample_input(in_shape)):
        if isinstance(m, Conv2d):
            kh, kw = m.kernel_size
            flops += 2 * (out.size // 2) * m.in_channels // m.groups * kh * kw
        elif isinstance(m, Linear):
            flops += 2 * (out.size // 2) * m.in_features
    return 3 * flops * T * batch


def parameter_bytes(model):
    return sum(p.nbytes for _, p, _ in model.named_parameters())


# ------------------------------------------------------------------------------------------
# The child process: one side, one configuration, resident set measured around the steps
# ------------------------------------------------------------------------------------------
def child_args(side, network, neuron, T, batch, width=1.0, steps=3, threads=2):
    """Arguments of ``python`` for ``child_main`` (pass them to ``bench.run_child``)."""
    return ["-m", "bench.training", "--side", side, "--network", network, "--neuron", neuron, "--T", str(T),
            "--batch", str(batch), "--width", str(width), "--steps", str(steps), "--threads", str(threads)]


def child_main(argv=None):
    """Build the model, run a warm-up step on ``WARMUP_BATCH`` images (loads the kernels, allocates
    the gradients and the optimizer state), then measure: baseline = RSS now; peak = the RSS
    high-water mark over ``--steps`` steps of the real batch (reset to the baseline first, where
    Linux allows); the step times. Reports them with ``report_to_parent``."""
    parser = argparse.ArgumentParser(prog="python -m bench.training")
    parser.add_argument("--side", choices=("refsnn", "spikingjelly"), required=True)
    parser.add_argument("--network", choices=sorted(PROBLEMS), required=True)
    parser.add_argument("--neuron", required=True)
    parser.add_argument("--T", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.side == "spikingjelly":
        import torch  # noqa: F401  (loaded before fix_threads so that its threads are pinned too)
    threads_line = fix_threads(args.threads, blas_variables_in_time=True)
    after_imports = current_rss()

    model = build_model(args.network, args.neuron, args.width)
    n_params = parameter_bytes(model)
    if args.side == "spikingjelly":
        twin = make_twin(model)
        del model
        step = torch_step(twin)
    else:
        step = refsnn_step(model)
    step(*make_batch(args.network, 1, WARMUP_BATCH))
    x, y = make_batch(args.network, args.T, args.batch)
    gc.collect()
    baseline = current_rss()
    reset = reset_peak_rss()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step(x, y))
        times.append(time.perf_counter() - t0)
    report_to_parent({"after_imports": after_imports, "baseline": baseline, "peak": peak_rss(),
                      "peak_reset": reset, "after": current_rss(), "seconds": times, "losses": losses,
                      "parameter_bytes": n_params, "threads": threads_line})


if __name__ == "__main__":
    child_main()
