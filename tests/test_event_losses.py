"""Spike-count and membrane losses and the L1 rate regularizer (refsnn.losses, docs/losses.md §2-4):
hand-computed values, finite differences (tier 1) and snnTorch's snntorch.functional losses with
torch autograd in float64 (tier 2, docs/verification.md: 1e-10 relative).
"""
import contextlib
import math

import numpy as np
import pytest

from refsnn.losses import ce_count_loss, ce_max_membrane_loss, l1_rate_sparsity, mse_count_loss
from verify.gradcheck import check_directional

T, N, K = 4, 5, 6
TIER2 = 1e-10  # docs/verification.md: float64 agreement with a framework


def relative(mine, theirs):
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(mine - theirs)) / max(float(np.max(np.abs(theirs))), 1e-300))


def make_inputs(seed, classes=K):
    rng = np.random.default_rng(seed)
    return rng.random((T, N, K)) * 1.5, rng.integers(0, classes, size=N)


# (refsnn function, its keyword arguments, snnTorch class name, its keyword arguments, classes)
CASES = [
    ("ce_count", ce_count_loss, {}, "ce_count_loss", {}, K),
    ("ce_count population", ce_count_loss, dict(population_code=True, num_classes=3), "ce_count_loss",
     dict(population_code=True, num_classes=3), 3),
    ("mse_count defaults", mse_count_loss, {}, "mse_count_loss", {}, K),
    ("mse_count 0.8/0.2", mse_count_loss, dict(correct_rate=0.8, incorrect_rate=0.2), "mse_count_loss",
     dict(correct_rate=0.8, incorrect_rate=0.2), K),
    ("mse_count population", mse_count_loss, dict(correct_rate=0.7, incorrect_rate=0.1, population_code=True,
                                                  num_classes=2), "mse_count_loss",
     dict(correct_rate=0.7, incorrect_rate=0.1, population_code=True, num_classes=2), 2),
    ("ce_max_membrane", ce_max_membrane_loss, {}, "ce_max_membrane_loss", {}, K),
]


@contextlib.contextmanager
def torch_default_float64(torch):
    """snnTorch's population code sums into ``torch.zeros`` of torch's default dtype (float32
    unless set): float64 here so that the comparison is in float64 throughout."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("label, loss, options, theirs, their_options, classes", CASES, ids=[c[0] for c in CASES])
def test_against_snntorch(label, loss, options, theirs, their_options, classes):
    torch = pytest.importorskip("torch")
    SF = pytest.importorskip("snntorch.functional")
    for seed in range(3):
        out, y = make_inputs(seed, classes)
        if seed == 2:
            out = np.round(out)  # spikes: counts are integers
        out_t = torch.tensor(out, requires_grad=True)
        with torch_default_float64(torch):
            value_t = getattr(SF, theirs)(**their_options)(out_t, torch.from_numpy(y))
            value_t.backward()
        value, grad = loss(out, y, **options)
        assert grad.shape == out.shape and grad.dtype == out.dtype
        assert relative(value, value_t.item()) <= TIER2, label
        assert relative(grad, out_t.grad.numpy()) <= TIER2, label


def test_l1_rate_sparsity_against_snntorch():
    torch = pytest.importorskip("torch")
    SF = pytest.importorskip("snntorch.functional")
    out, _ = make_inputs(7)
    for Lambda in (1e-5, 0.3):
        out_t = torch.tensor(out, requires_grad=True)
        value_t = SF.l1_rate_sparsity(Lambda=Lambda)(out_t)
        value_t.backward()
        value, grad = l1_rate_sparsity(out, Lambda)
        assert relative(value, value_t.item()) <= TIER2 and relative(grad, out_t.grad.numpy()) <= TIER2


@pytest.mark.parametrize("label, loss, options, theirs, their_options, classes", CASES, ids=[c[0] for c in CASES])
def test_finite_differences(label, loss, options, theirs, their_options, classes):
    rng = np.random.default_rng(11)
    for seed in range(2):
        out, y = make_inputs(20 + seed, classes)
        _, grad = loss(out, y, **options)
        error = check_directional(lambda o: loss(o, y, **options)[0], out, grad, rng, n_directions=4,
                                  elementwise=True)
        assert error <= 1e-6, f"{label}: relative error {error:.2e}"
    out, _ = make_inputs(30)
    _, grad = l1_rate_sparsity(out, 0.02)
    assert check_directional(lambda o: l1_rate_sparsity(o, 0.02)[0], out, grad, rng, elementwise=True) <= 1e-6


def test_hand_computed_values():
    # rtol 1e-13: the closed forms below round differently from softmax − onehot (a few ulps of 1)
    # two classes, T = 4: counts c = [2, 0] for the label 0 → CE = ln(1 + e^−2); dL/dspk = (p − onehot)/N
    spk = np.zeros((4, 1, 2))
    spk[[0, 2], 0, 0] = 1
    value, grad = ce_count_loss(spk, np.array([0]))
    p0 = 1 / (1 + math.exp(-2))
    assert value == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-15)
    np.testing.assert_allclose(grad, np.broadcast_to([p0 - 1, 1 - p0], (4, 1, 2)), rtol=1e-13)
    # targets int(4·0.8) = 3 and int(4·0.2) = 0 (truncated): ((2 − 3)² + 0²)/2/T = 1/8
    value, grad = mse_count_loss(spk, np.array([0]), correct_rate=0.8, incorrect_rate=0.2)
    assert value == pytest.approx(1 / 8, rel=1e-15)
    np.testing.assert_allclose(grad, np.broadcast_to([2 * (2 - 3) / (2 * 4), 0.0], (4, 1, 2)), rtol=1e-13)
    # population code: 4 outputs, 2 classes → class counts [0+2, 1+0]; the gradient repeats per class
    pop = np.zeros((4, 1, 4))
    pop[[0, 2], 0, 1] = 1
    pop[3, 0, 2] = 1
    value, grad = ce_count_loss(pop, np.array([1]), population_code=True, num_classes=2)
    p1 = 1 / (1 + math.exp(2 - 1))
    assert value == pytest.approx(-math.log(p1), rel=1e-15)
    np.testing.assert_allclose(grad[0, 0], [1 - p1, 1 - p1, p1 - 1, p1 - 1], rtol=1e-13)
    # max membrane: the gradient goes to the first step holding the maximum (torch.max's index)
    mem = np.array([[[0.5, 1.0]], [[2.0, 1.0]], [[2.0, -1.0]]])
    value, grad = ce_max_membrane_loss(mem, np.array([1]))  # maxima [2, 1] at steps [1, 0]
    q = 1 / (1 + math.exp(1 - 2))
    assert value == pytest.approx(-math.log(1 - q), rel=1e-15)
    expected = np.zeros_like(mem)
    expected[1, 0, 0], expected[0, 0, 1] = q, -q
    np.testing.assert_allclose(grad, expected, rtol=1e-13)
    # L1: Lambda · (number of spikes); the gradient is Lambda everywhere, in the dtype of the spikes
    value, grad = l1_rate_sparsity(pop.astype(np.float32), 0.5)
    assert value == 1.5 and grad.dtype == np.float32 and np.all(grad == 0.5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ce_count_loss(np.ones((2, 3, 4)), np.zeros(3, int), population_code=True, num_classes=3),
     ValueError, "4 outputs must split evenly"),
    (lambda: ce_count_loss(np.ones((2, 3, 4)), np.zeros(3, int), population_code=True), ValueError,
     "needs num_classes"),
    (lambda: mse_count_loss(np.ones((2, 3, 4)), np.zeros(3, int), num_classes=2), ValueError,
     "only used with population_code"),
    (lambda: ce_count_loss(np.ones((2, 3, 4)), np.array([0, 1, 4])), ValueError, r"lie in \[0, 4\)"),
    (lambda: ce_count_loss(np.ones((2, 3, 4)), np.array([0, 1, 2]), population_code=True, num_classes=2),
     ValueError, r"lie in \[0, 2\)"),
    (lambda: mse_count_loss(np.ones((2, 3, 4)), np.zeros(3, int), correct_rate=-1), ValueError, "correct_rate"),
    (lambda: ce_max_membrane_loss(np.full((2, 3, 4), np.nan), np.zeros(3, int)), ValueError, "NaN"),
    (lambda: ce_max_membrane_loss(np.ones((3, 4)), np.zeros(3, int)), ValueError, r"\[T, N, K\]"),
    (lambda: l1_rate_sparsity(np.ones((2, 3)), -1.0), ValueError, "Lambda"),
    (lambda: l1_rate_sparsity(np.array([1.0, np.inf])), ValueError, "NaN or Inf"),
])
def test_bad_inputs_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Networks for event data and their output layers (refsnn.models, docs/losses.md §5)
# ---------------------------------------------------------------------------------------------
def test_event_network_shapes():
    from refsnn.layers import AvgPool2d
    from refsnn.models import build_network, recurrent_mlp
    rng = np.random.default_rng(5)
    for shape, pooled in (((2, 34, 34), False), ((2, 128, 128), True)):  # N-MNIST, DVS128 Gesture
        net = build_network("event_cnn", shape, 11, neuron="lif")
        assert isinstance(net[0], AvgPool2d) == pooled
        x = (rng.random((2, 3) + shape) < 0.05).astype(np.float32)  # [T, N, 2, H, W] event frames
        assert net.forward(x).shape == (2, 3, 11)
        assert net[-1].params["weight"].shape == (11, 32 * 8 * 8)  # 34 → 17 → 8; 128 → 32 → 16 → 8
    spikes = (rng.random((4, 3, 700)) < 0.05).astype(np.float32)  # SHD: [T, N, 700 units]
    assert build_network("mlp", (700,), 20, neuron="lif").forward(spikes).shape == (4, 3, 20)
    rsnn = recurrent_mlp((700,), 20, neuron_options={"beta": 0.9}, hidden=32)
    assert rsnn.forward(spikes).shape == (4, 3, 20)
    assert sorted(name for name, _, _ in rsnn.named_parameters()) == [
        "1.bias", "1.weight", "2.recurrent.bias", "2.recurrent.weight", "3.bias", "3.weight"]
    for out in ("spikes", "membrane"):
        net = build_network("mlp", (700,), 20, neuron="lif", output=out, hidden=(16,))
        y = net.forward(spikes)
        assert y.shape == (4, 3, 20) and list(net.children) == ["0", "1", "2", "3", "4"]
        assert set(np.unique(y)) <= {0.0, 1.0} if out == "spikes" else np.any((y != 0) & (y != 1))
    with pytest.raises(ValueError, match="needs a spiking neuron"):
        build_network("mlp", (700,), 20, neuron="relu", output="spikes")
    with pytest.raises(ValueError, match="output must be one of"):
        build_network("mlp", (700,), 20, neuron="lif", output="voltage")
    with pytest.raises(ValueError, match="beta"):
        recurrent_mlp((700,), 20)
    with pytest.raises(ValueError, match="rleaky"):
        recurrent_mlp((700,), 20, neuron="lif")


def _loss_pair(loss, y):
    return lambda out: loss(out, y)[0], lambda out: loss(out, y)[1]


@pytest.mark.parametrize("case", ["event_cnn pooled + ce_count", "mlp membrane + ce_max_membrane",
                                  "rsnn + mse_count"])
def test_event_network_gradients(case):
    """Tier 1: the networks' backward (with the new output layers and losses) against finite
    differences of their forward in smooth mode, on tiny instances."""
    from refsnn.models import build_network, recurrent_mlp, with_output
    from verify.gradcheck import gradcheck
    rng = np.random.default_rng(6)
    y = np.array([0, 2])
    if case.startswith("event_cnn"):
        net = build_network("event_cnn", (2, 40, 40), 3, neuron="lif", output="spikes", channels=(2, 3))
        x = (rng.random((2, 2, 2, 40, 40)) < 0.3) * 2.0
        loss = _loss_pair(ce_count_loss, y)
    elif case.startswith("mlp"):
        net = build_network("mlp", (12,), 3, neuron="plif", output="membrane", hidden=(6,))
        x = rng.standard_normal((4, 2, 12)) * 2
        loss = _loss_pair(ce_max_membrane_loss, y)
    else:
        net = recurrent_mlp((12,), 3, neuron_options={"beta": 0.8}, hidden=5)
        net = with_output(net, "spikes", "lif")
        x = rng.standard_normal((4, 2, 12)) * 2
        loss = _loss_pair(lambda o, t: mse_count_loss(o, t, 0.75, 0.25), y)
    net.to(np.float64)
    report = gradcheck(net, x, loss=loss)
    assert report.passed, f"{case}: {report}"
    assert len(report.errors) > 2  # the input and the parameters were checked


# ---------------------------------------------------------------------------------------------
# Training with them: refsnn train --encoding latency|delta, --loss ce_count|mse_count|ce_max_membrane, --rate-reg
# ---------------------------------------------------------------------------------------------
def test_training_encodings_are_snntorchs():
    torch = pytest.importorskip("torch")
    spikegen = pytest.importorskip("snntorch.spikegen")
    from refsnn.train import TrainConfig, encode
    x = np.random.default_rng(8).random((3, 1, 8, 8)).astype(np.float32)
    x[x < 0.3] = 0
    latency = encode(TrainConfig(encoding="latency", T=6), x, 0, 0)
    theirs = spikegen.latency(torch.from_numpy(x), num_steps=6, normalize=True, linear=True).numpy()
    np.testing.assert_array_equal(latency, theirs)
    delta = encode(TrainConfig(encoding="delta", T=5), x, 0, 0)
    theirs = spikegen.delta(torch.from_numpy(np.broadcast_to(x, (5,) + x.shape).copy())).numpy()
    np.testing.assert_array_equal(delta, theirs)
    assert delta[1:].sum() == 0 and delta[0].sum() == np.sum(x >= 0.1)


@pytest.mark.parametrize("loss, options, output", [
    ("ce_count", dict(rate_reg=1e-3), "spikes"),
    ("mse_count", dict(correct_rate=0.8, incorrect_rate=0.2, rate_reg=0.05), "spikes"),
    ("ce_max_membrane", {}, "membrane"),
])
def test_training_losses_and_output_layers(loss, options, output):
    torch = pytest.importorskip("torch")
    SF = pytest.importorskip("snntorch.functional")
    from refsnn.models import MembraneOutput
    from refsnn.neurons import LIF
    from refsnn.train.build import TrainConfig, build_model, training_loss
    cfg = TrainConfig(network="mlp", neuron="lif", loss=loss, **options)
    model = build_model(cfg, {"input_shape": (1, 8, 8), "num_classes": 10})
    assert isinstance(model[-1], MembraneOutput if output == "membrane" else LIF)
    out = np.random.default_rng(9).random((4, 5, 10))
    y = np.arange(5)
    value, grad = training_loss(cfg)(out, y)
    out_t = torch.tensor(out, requires_grad=True)
    their_loss = {"ce_count": SF.ce_count_loss(), "ce_max_membrane": SF.ce_max_membrane_loss(),
                  "mse_count": SF.mse_count_loss(cfg.correct_rate, cfg.incorrect_rate)}[loss]
    value_t = their_loss(out_t, torch.from_numpy(y))
    if cfg.rate_reg:
        value_t = value_t + SF.l1_rate_sparsity(cfg.rate_reg)(out_t)
    value_t.backward()
    assert relative(value, value_t.item()) <= TIER2 and relative(grad, out_t.grad.numpy()) <= TIER2


@pytest.mark.parametrize("options, option, match", [
    (dict(loss="ce_count", neuron="relu"), "loss", "must be a spiking one"),
    (dict(loss="ce_max_membrane", neuron="s2nn", T=1), "loss", "no store_v_seq"),
    (dict(rate_reg=0.1), "rate_reg", "applies to loss ce_count or mse_count"),
    (dict(loss="ce_count", correct_rate=0.5), "correct_rate", "applies to loss mse_count"),
    (dict(loss="mse_count", incorrect_rate=-0.1), "incorrect_rate", ">= 0"),
    (dict(encoding="rate"), "encoding", "one of direct, poisson, latency, delta"),
])
def test_training_options_refused(options, option, match):
    from refsnn.train import ConfigError, TrainConfig
    with pytest.raises(ConfigError, match=match) as caught:
        TrainConfig(**options)
    assert caught.value.option == option


def test_cli_trains_on_spike_counts_and_evaluates(tmp_path, capsys):
    from refsnn.cli import main
    run = str(tmp_path / "run")
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--loss", "ce_count", "--rate-reg", "1e-4",
                 "--epochs", "1", "--no-progress", "--out-dir", run]) == 0
    trained = capsys.readouterr().out
    assert main(["eval", run]) == 0
    evaluated = capsys.readouterr().out
    accuracy = [float(line.split("test accuracy ")[1].split("%")[0]) for line in (trained, evaluated)
                for line in line.splitlines() if line.startswith("test accuracy")]
    assert len(accuracy) == 2 and accuracy[0] == accuracy[1] > 30  # 10 classes: chance is 10%
