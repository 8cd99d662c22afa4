"""The conversion's fine-tuning as the authors' public code does it (``variant="authors"``,
docs/methods.md §4.1): godatta/Ultra-Low-Latency-SNN at 6179214 (Datta & Beerel, DATE 2022).

Tier 1 (finite differences, smooth mode): the authors' backward is not the derivative of its
forward; it differs from the finite differences of its (amplitude-tied) forward by exactly the
documented terms. Tier 2 (torch autograd): a torch mirror of their activation, written from their
code, against refsnn's variant on a neuron and on a small converted network, float64 and float32,
with the summed-logit cross-entropy; and their learning-rate steps at the epoch boundaries.
"""
import numpy as np
import pytest

from refsnn.cli import main as cli_main
from refsnn.convert import (ConvertConfig, authors_lr, evaluate_snn, finetune_epoch, load_converted,
                            make_finetune_optimizer, run_conversion, summed_cross_entropy)
from refsnn.data import digits_split
from refsnn.layers import Linear
from refsnn.module import Sequential
from refsnn.neurons import ConvertedNeuron
from refsnn.train.config import ConfigError
from test_convert import reference_smooth
from verify.gradcheck import check_directional

TH, LAM, AMP, C = 0.75, 0.85, 1.1, 1.3  # threshold (dyadic: inputs can equal it exactly), λ, b·μ, c


def drive(shape, seed):
    """Inputs around the threshold; at t = 0 (V = 0, so H = x) a few equal it exactly: the strict firing."""
    x = np.random.default_rng(seed).standard_normal(shape) * 0.9 + 0.5
    x[0].flat[::7] = TH
    return x


# ---- tier 1: finite differences of the variant's forward, in smooth mode --------------------------
def smooth_forward(x, th, lam, frozen=None):
    """The authors' forward in smooth mode: test_convert.py's ``reference_smooth`` (boxcar primitive
    clip(u, −1, 1) + ½ on u = H/V_th − 1; ``frozen`` spikes in the detached reset) with the
    amplitude tied to the threshold, A = c·(b·μ/V_th0)·V_th. -> (out, spikes)."""
    return reference_smooth(x, th, lam, C * (AMP / TH) * th, frozen)


def test_authors_gradient_is_the_exact_one_less_the_documented_terms():
    """With the same upstream gradient gO: dL/dX and dL/dλ are the finite differences ÷ A (their
    surrogate ignores A); dL/dV_th = (FD − (A/V_th)·Σ gO·S)/A + Σ gO (no tie term, their Σ gO)."""
    x = drive((4, 3, 5), seed=0)
    neuron = ConvertedNeuron(threshold=TH, lam=LAM, amplitude=AMP, variant="authors", smooth=True, dtype=np.float64)
    out = neuron.forward(x)
    ref, frozen = smooth_forward(x, TH, LAM)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(1)
    g = rng.standard_normal(x.shape)
    grad_x = neuron.backward(g)
    amp = C * AMP

    def loss(xx=x, th=TH, lam=LAM):
        return float(np.sum(smooth_forward(xx, th, lam, frozen)[0] * g))

    tol = 1e-6  # central differences in float64 (verify/gradcheck.py: ~1e-10 absolute noise)
    assert check_directional(lambda xx: loss(xx), x.copy(), grad_x * amp, rng, elementwise=True) <= tol
    step = 1e-6
    fd_lam = (loss(lam=LAM + step) - loss(lam=LAM - step)) / (2 * step)
    fd_th = (loss(th=TH + step) - loss(th=TH - step)) / (2 * step)
    np.testing.assert_allclose(float(neuron.grads["lam"]) * amp, fd_lam, rtol=tol)
    expected_th = (fd_th - amp / TH * np.sum(g * frozen)) / amp + np.sum(g)
    np.testing.assert_allclose(float(neuron.grads["threshold"]), expected_th, rtol=tol)
    # and the variant is not the exact gradient: the two differ by far more than the tolerance
    assert abs(float(neuron.grads["threshold"]) - fd_th) > 1e-2 * abs(fd_th)


# ---- tier 2: a torch mirror of the authors' code ---------------------------------------------------
def authors_spike(torch):
    """Their ``LinearSpike`` (models/vgg_tunable_spiking.py:28-55), in refsnn's words: fires A =
    V_th·b′·c where the membrane's u = H/V_th − 1 is > 0; the backward passes the upstream gradient
    where |u| < 1 (height 1, whatever A) and returns the upstream gradient itself as the threshold's
    (torch sums it to the threshold's shape: Σ over the layer's output)."""
    class LinearSpike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, threshold, ratio):
            ctx.save_for_backward(u)
            out = torch.zeros_like(u)
            out[u > 0] = float(threshold) * ratio * C
            return out

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * ((u > -1) & (u < 1)).to(grad.dtype), grad, None
    return LinearSpike.apply


def torch_layer(torch, x, threshold, lam, ratio):
    """Their layer step over time (vgg_tunable_spiking.py:339-352): H = λ·V + X, u = H/V_th − 1,
    spike, soft reset by V_th·1{u > 0} (no gradient through the comparison)."""
    spike = authors_spike(torch)
    mem, out = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        mem = lam * mem + x[t]
        u = mem / threshold - 1.0
        out.append(spike(u, threshold, ratio))
        mem = mem - threshold * (u > 0).to(x.dtype)
    return torch.stack(out)


DTYPES = [(np.float64, 1e-12), (np.float32, 1e-5)]  # float32: refsnn sums parameter gradients in float64


@pytest.mark.parametrize("dtype, rtol", DTYPES)
def test_neuron_matches_the_authors_activation(dtype, rtol):
    torch = pytest.importorskip("torch")
    x = drive((5, 4, 6), seed=2).astype(dtype)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(dtype)
    neuron = ConvertedNeuron(threshold=TH, lam=LAM, amplitude=AMP, variant="authors").to(dtype)
    out = neuron.forward(x)
    grad_x = neuron.backward(g)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tx = torch.tensor(x, requires_grad=True)
    th, lam = (torch.tensor(float(neuron.params[k]), dtype=tdt, requires_grad=True) for k in ("threshold", "lam"))
    tout = torch_layer(torch, tx, th, lam, float(neuron.buffers["ratio"]))
    tout.backward(torch.tensor(g))
    np.testing.assert_array_equal(out, tout.detach().numpy())  # incl. no spike where H = V_th exactly
    assert np.any(x[0] == TH) and not np.any(out[0][x[0] == TH])
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=rtol, atol=rtol * np.abs(tx.grad.numpy()).max())
    for k, p in (("threshold", th), ("lam", lam)):
        np.testing.assert_allclose(float(neuron.grads[k]), float(p.grad), rtol=rtol * 10)


@pytest.mark.parametrize("dtype, rtol", DTYPES)
def test_network_and_summed_logit_loss_match_torch(dtype, rtol):
    """Linear → authors neuron → Linear, direct input, CE on the logits summed over T (snn.py:134)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    T, N = 3, 8
    net = Sequential(Linear(5, 7, dtype=dtype), ConvertedNeuron(threshold=TH, lam=LAM, amplitude=AMP,
                                                                 variant="authors", dtype=dtype),
                     Linear(7, 4, dtype=dtype))
    x = np.broadcast_to(rng.standard_normal((N, 5)).astype(dtype) * 2, (T, N, 5)).copy()
    y = rng.integers(0, 4, N)
    out = net.forward(x)
    loss, grad = summed_cross_entropy(out, y)
    net.zero_grad()
    grad_x = net.backward(grad)
    named = {name: (p, gp) for name, p, gp in net.named_parameters()}
    tp = {name: torch.tensor(np.array(p), requires_grad=True) for name, (p, _) in named.items()}
    tx = torch.tensor(x, requires_grad=True)
    first = tx @ tp["0.weight"].T + tp["0.bias"]
    spikes = torch_layer(torch, first, tp["1.threshold"], tp["1.lam"], float(net[1].buffers["ratio"]))
    tout = spikes @ tp["2.weight"].T + tp["2.bias"]
    tloss = F.cross_entropy(tout.sum(0), torch.tensor(y))
    tloss.backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=rtol, atol=rtol)
    assert 0 < np.mean(spikes.detach().numpy() > 0) < 1  # some neurons fire, some do not
    np.testing.assert_allclose(loss, tloss.item(), rtol=rtol)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=rtol, atol=rtol * np.abs(tx.grad.numpy()).max())
    for name, (_, gp) in named.items():
        tg = tp[name].grad.numpy()
        np.testing.assert_allclose(gp, tg, rtol=rtol * 10, atol=rtol * 10 * np.abs(tg).max(), err_msg=name)


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 10, 30, 200])
def test_lr_steps_match_the_authors_loop(epochs):
    """Their loop (snn.py:118-121, 337-340, 516; script.sh: --lr_reduce 5): lr /= 5 at the start of
    every epoch that is in [int(f·epochs) for f in 0.6 0.8 0.9], run here over epochs 1 .. epochs."""
    lr, lr_interval, theirs = 1e-4, [int(float(v) * epochs) for v in "0.60 0.80 0.90".split()], []
    for epoch in range(1, epochs + 1):
        if epoch in lr_interval:
            lr = lr / 5
        theirs.append(lr)
    np.testing.assert_allclose([authors_lr(1e-4, e, epochs) for e in range(1, epochs + 1)], theirs, rtol=1e-15)


def test_one_authors_epoch_runs_and_options_are_checked(tmp_path, capsys):
    rng = np.random.default_rng(5)
    net = Sequential(Linear(6, 8), ConvertedNeuron(threshold=0.5, amplitude=0.6, variant="authors"), Linear(8, 3))
    images, labels = rng.random((32, 6), dtype=np.float32), rng.integers(0, 3, 32)
    loss, acc = finetune_epoch(net, make_finetune_optimizer(net), images, labels, T=2, batch_size=16,
                               variant="authors")
    assert np.isfinite(loss) and 0 <= acc <= 1
    with pytest.raises(ValueError, match="variant must be one of exact, authors"):
        finetune_epoch(net, make_finetune_optimizer(net), images, labels, T=2, variant="Authors")
    for bad in (dict(variant="author"), dict(variant="authors", surrogate="atan"),
                dict(variant="authors", strict=False), dict(variant="authors", train_amplitude=True),
                dict(variant="authors", detach_reset=False), dict(amplitude_factor=1.5),
                dict(variant="authors", amplitude_factor=0.0)):
        with pytest.raises(ValueError):
            ConvertedNeuron(**bad)
    assert ConvertedNeuron(threshold=2.0, amplitude=3.0, variant="authors", amplitude_factor=1.5).amplitude == 4.5
    for bad in (dict(variant="x"), dict(amplitude_factor=1.5), dict(variant="authors", surrogate="atan"),
                dict(variant="authors", amplitude_factor=-1.0)):
        with pytest.raises(ConfigError):
            ConvertConfig(**bad)
    assert cli_main(["convert", "--variant", "bogus", "--out-dir", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.strip() == "error: variant must be one of exact, authors; got 'bogus'"


def test_authors_run_checkpoints_and_keeps_its_lr_steps(tmp_path):
    """A variant 'authors' conversion reloads to the network it measured (the tied amplitude's
    ratio b′ is in the checkpoint); resuming it with other finetune_epochs is refused (the lr steps
    are fractions of them)."""
    cfg = dict(dataset="digits", network="mlp", T=2, dnn_epochs=1, finetune_epochs=1, calibration_samples=100,
               variant="authors", amplitude_factor=1.5, out_dir=str(tmp_path / "c"))
    results = run_conversion(ConvertConfig(**cfg), log=lambda *_: None)
    snn, meta = load_converted(tmp_path / "c")
    neuron = next(m for _, m in snn.modules() if isinstance(m, ConvertedNeuron))
    assert neuron.variant == "authors" and neuron.amplitude == pytest.approx(
        neuron.v_threshold * float(neuron.buffers["ratio"]) * 1.5)
    _, _, test_x, test_y = digits_split()
    assert evaluate_snn(snn, test_x, test_y, 2)[1] == pytest.approx(results["finetuned_acc"])
    with pytest.raises(ConfigError, match="authors' learning-rate steps"):
        run_conversion(ConvertConfig(**{**cfg, "finetune_epochs": 2}), resume=True, log=lambda *_: None)
