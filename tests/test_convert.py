"""Ultra-low-latency ANN-to-SNN conversion (refsnn.convert): the fine-tuning neuron's gradients
(tier 1 in smooth mode, tier 2 against torch autograd), the closed-form T-step response against
direct simulation, the (a, b) grid search, BatchNorm folding, conversion of a trained DNN as T
grows, λ clamping, the activity meter, checkpoints, the CLI and bad inputs."""
import json

import numpy as np
import pytest

from refsnn.cli import main as cli_main
from refsnn.convert import (DEFAULT_GRID, ConvertConfig, calibrate, collect_preactivations, convert, evaluate_snn,
                            finetune_epoch, fold_batchnorm, grid_errors, if_response, load_converted,
                            make_finetune_optimizer, search_scales)
from refsnn.data import Batches, digits_split
from refsnn.encoding import direct
from refsnn.energy import SpikeMeter
from refsnn.layers import BatchNorm1d, BatchNorm2d, ClippedReLU, Conv2d, Linear, MaxPool2d, ReLU
from refsnn.losses import cross_entropy
from refsnn.models import spiking_mlp
from refsnn.module import NonFiniteError, Sequential
from refsnn.neurons import ConvertedNeuron, clamp_lam
from refsnn.optim import Adam
from verify.gradcheck import check_directional, gradcheck

TOL = 1e-6


def drive(shape=(4, 3, 5), seed=0):
    """Inputs around the thresholds used below, so neurons fire sometimes."""
    return np.random.default_rng(seed).standard_normal(shape) * 1.2 + 0.6


# ---- tier 1: finite differences in smooth mode ---------------------------------------------
@pytest.mark.parametrize("surrogate", ["boxcar", "sigmoid"])
def test_gradcheck_converted_neuron(surrogate):
    neuron = ConvertedNeuron(threshold=0.8, lam=0.9, amplitude=1.3, surrogate=surrogate, detach_reset=False,
                             train_amplitude=True).to(np.float64)
    report = gradcheck(neuron, drive(), elementwise=True)
    assert report.passed, str(report)
    assert set(report.errors) == {"input", "threshold", "lam", "amplitude"}


def reference_smooth(x, th, leak, amp, frozen=None):
    """Smooth-mode forward written from the equations: boxcar primitive clip(u, -1, 1) + 1/2 on
    u = H/V_th - 1; the reset uses ``frozen`` spikes when given (what a detached reset means)."""
    v, out, spikes = np.zeros(x.shape[1:]), [], []
    for t in range(x.shape[0]):
        h = leak * v + x[t]
        s = np.clip(h / th - 1, -1, 1) + 0.5
        v = h - (s if frozen is None else frozen[t]) * th
        out.append(amp * s)
        spikes.append(s)
    return np.array(out), np.array(spikes)


def test_detached_reset_gradients():
    """detach_reset=True: the backward is the gradient of the forward with the reset's spikes frozen."""
    x = drive()
    th, leak, amp = 0.8, 0.9, 1.3
    neuron = ConvertedNeuron(threshold=th, lam=leak, amplitude=amp, detach_reset=True, train_amplitude=True,
                             dtype=np.float64)
    neuron.smooth = True
    out = neuron.forward(x)
    ref, frozen = reference_smooth(x, th, leak, amp)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(1)
    proj = rng.standard_normal(x.shape)
    grad_x = neuron.backward(proj)

    def loss(xx=x, p=(th, leak, amp)):
        return float(np.sum(reference_smooth(xx, *p, frozen=frozen)[0] * proj))

    assert check_directional(lambda xx: loss(xx), x.copy(), grad_x, rng, elementwise=True) <= TOL
    grads = np.array([float(neuron.grads[k]) for k in ("threshold", "lam", "amplitude")])
    err = check_directional(lambda p: loss(p=tuple(p)), np.array([th, leak, amp]), grads, rng, elementwise=True)
    assert err <= TOL
    # and the detach matters: the undetached gradient differs
    undetached = ConvertedNeuron(threshold=th, lam=leak, amplitude=amp, detach_reset=False).to(np.float64)
    undetached.forward(x)
    assert np.max(np.abs(undetached.backward(proj) - grad_x)) > 1e-3


def test_boxcar_surrogate_single_step():
    """T = 1, by hand: O = A·1{x >= θ}, dO/dx = A·1{|x/θ - 1| < 1}/θ, dO/dθ = -A·1{...}·x/θ²."""
    x = np.array([-0.5, 0.1, 0.7, 0.9, 1.5, 1.7]).reshape(1, 1, 6)
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape(1, 1, 6)
    th, amp = 0.8, 2.0
    neuron = ConvertedNeuron(threshold=th, amplitude=amp, dtype=np.float64)
    assert np.array_equal(neuron.forward(x), amp * (x >= th))
    window = np.abs(x / th - 1) < 1
    np.testing.assert_allclose(neuron.backward(g), g * amp * window / th, rtol=1e-14)
    np.testing.assert_allclose(float(neuron.grads["threshold"]), np.sum(-g * amp * window * x / th ** 2), rtol=1e-14)
    assert float(neuron.grads["lam"]) == 0.0  # V[-1] = 0


# ---- tier 2: torch autograd -----------------------------------------------------------------
def torch_converted(torch, x, th, leak, amp, detach_reset):
    class Boxcar(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * (u.abs() < 1).to(u.dtype)

    v, out = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = leak * v + x[t]
        s = Boxcar.apply(h / th - 1)
        v = h - (s.detach() if detach_reset else s) * th
        out.append(amp * s)
    return torch.stack(out)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_matches_torch_autograd(detach_reset, dtype, rtol):
    torch = pytest.importorskip("torch")
    x = drive((5, 4, 6), seed=2).astype(dtype)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(dtype)
    th, leak, amp = 0.7, 0.85, 1.4
    neuron = ConvertedNeuron(threshold=th, lam=leak, amplitude=amp, detach_reset=detach_reset,
                             train_amplitude=True).to(dtype)
    out = neuron.forward(x)
    grad_x = neuron.backward(g)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tx = torch.tensor(x, requires_grad=True)
    names = ("threshold", "lam", "amplitude")
    tp = [torch.tensor(float(neuron.params[k]), dtype=tdt, requires_grad=True) for k in names]
    tout = torch_converted(torch, tx, *tp, detach_reset)
    tout.backward(torch.tensor(g))
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=rtol, atol=rtol * np.abs(tx.grad.numpy()).max())
    scalar_rtol = rtol * 10 if dtype == np.float32 else rtol  # refsnn sums these in float64, torch in float32
    for k, p in zip(names, tp):
        np.testing.assert_allclose(float(neuron.grads[k]), float(p.grad), rtol=scalar_rtol)


# ---- the T-step response ------------------------------------------------------------------
def simulate_if(x, T, threshold, amplitude):
    """Direct simulation, one neuron at a time in plain Python."""
    out = []
    for value in np.ravel(x):
        v, total = 0.0, 0.0
        for _ in range(T):
            v += value
            if v >= threshold:
                v -= threshold
                total += amplitude
        out.append(total / T)
    return np.array(out).reshape(np.shape(x))


def away_from_boundaries(x, T, threshold):
    """Drop values whose T·x/θ is within 1e-6 of an integer (rounding could flip a spike there)."""
    q = T * x / threshold
    return x[np.abs(q - np.round(q)) > 1e-6]


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("threshold, amplitude", [(1.0, 1.0), (0.37, 0.9), (2.5, 3.1)])
def test_closed_form_matches_simulation(T, threshold, amplitude):
    x = away_from_boundaries(np.random.default_rng(T).uniform(-1.0, 1.5 * threshold, 400), T, threshold)
    expected = simulate_if(x, T, threshold, amplitude)
    np.testing.assert_allclose(if_response(x, T, threshold, amplitude), expected, rtol=1e-12, atol=1e-12)
    # the fine-tuning neuron with λ = 1 is that IF neuron: constant input, mean output over T
    neuron = ConvertedNeuron(threshold=threshold, amplitude=amplitude, dtype=np.float64)
    out = neuron.forward(direct(x.reshape(1, -1), T))
    np.testing.assert_allclose(out.mean(axis=0)[0], expected, rtol=1e-12, atol=1e-12)
    assert len(np.unique(expected)) > min(T, 3)  # several spike counts occur


def test_closed_form_on_exact_dyadic_inputs():
    """Values where T·x/θ is an exact integer: H reaches θ exactly and fires (Θ(0) = 1)."""
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    np.testing.assert_array_equal(if_response(x, 4, 1.0, 1.0), simulate_if(x, 4, 1.0, 1.0))
    np.testing.assert_array_equal(if_response(x, 4, 1.0, 1.0), [0, 0.25, 0.5, 0.75, 1, 1])


# ---- the grid search ----------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 4])
def test_grid_errors_match_brute_force(T):
    rng = np.random.default_rng(T)
    z = rng.uniform(-0.5, 1.8, 300)
    y = np.clip(z, 0, 1)
    a_grid, b_grid = np.array([0.13, 0.4, 0.77, 1.0, 1.6]), np.array([0.2, 0.55, 1.0, 1.3])
    errors = grid_errors(z, y, T, a_grid, b_grid)
    brute = np.array([[np.sum((y - if_response(z, T, a, b)) ** 2) for b in b_grid] for a in a_grid])
    np.testing.assert_allclose(errors, brute, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_search_recovers_planted_optimum(T):
    """Targets made by a neuron with (a*, b*) on the grid: the search must return exactly them."""
    z = np.random.default_rng(7).uniform(-0.5, 1.5, 20000)
    a_star, b_star = 0.63, 0.81
    errors = grid_errors(z, if_response(z, T, a_star, b_star), T)
    i, j = np.unravel_index(np.argmin(errors), errors.shape)
    assert (DEFAULT_GRID[i], DEFAULT_GRID[j]) == (a_star, b_star)
    assert errors[i, j] < 1e-9 * z.size
    # and through search_scales, with μ ≠ 1: x = μ·z
    mu = 2.7
    a, b, err = search_scales(mu * z, mu, T)
    assert err <= np.mean((np.clip(z, 0, 1) - if_response(z, T, 1.0, 1.0)) ** 2)  # no worse than a = b = 1


def test_search_error_falls_with_T():
    x = np.random.default_rng(0).exponential(1.0, 20000) - 0.3
    errs = [search_scales(x, 2.0, T)[2] for T in (1, 2, 4, 16)]
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs


# ---- BatchNorm folding ----------------------------------------------------------------------
def _trained_bn(bn, rng):
    bn.params["weight"][...] = rng.uniform(0.5, 2.0, bn.num_features)
    bn.params["bias"][...] = rng.standard_normal(bn.num_features)
    bn.buffers["running_mean"][...] = rng.standard_normal(bn.num_features)
    bn.buffers["running_var"][...] = rng.uniform(0.2, 3.0, bn.num_features)
    return bn.eval()


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fold_batchnorm_is_exact(kind):
    rng = np.random.default_rng(0)
    if kind == "conv":
        layer, bn = Conv2d(3, 4, 3, padding=1, bias=False, rng=rng), BatchNorm2d(4)
        x = rng.standard_normal((2, 3, 3, 5, 5))
    else:
        layer, bn, x = Linear(6, 4, rng=rng), BatchNorm1d(4), rng.standard_normal((2, 3, 6))
    layer.to(np.float64)
    bn = _trained_bn(bn.to(np.float64), rng)
    expected = bn.forward(layer.forward(x))
    weight, bias = fold_batchnorm(layer, bn)
    folded = Conv2d(3, 4, 3, padding=1) if kind == "conv" else Linear(6, 4)
    folded.to(np.float64)
    folded.params["weight"][...], folded.params["bias"][...] = weight, bias
    np.testing.assert_allclose(folded.forward(x), expected, rtol=1e-12, atol=1e-12)


# ---- a trained DNN, converted --------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_dnn():
    """A two-hidden-layer clipped-ReLU MLP trained briefly on the 8x8 digits."""
    train_x, train_y, test_x, test_y = digits_split()
    dnn = spiking_mlp((1, 8, 8), 10, neuron="clipped_relu", hidden=(64, 64), rng=np.random.default_rng(0))
    opt = Adam(list(dnn.named_parameters()), lr=1e-2)
    for epoch in range(12):
        batches = Batches(train_x, train_y, 64, seed=0)
        batches.set_epoch(epoch)
        for x, y in batches:
            loss, grad = cross_entropy(dnn.forward(direct(x, 1)), y)
            dnn.zero_grad()
            dnn.backward(grad)
            opt.step()
    return dnn, train_x, train_y, test_x, test_y


def test_conversion_approaches_dnn_as_T_grows(digits_dnn):
    dnn, train_x, _, test_x, test_y = digits_dnn
    _, dnn_acc = evaluate_snn(dnn, test_x, test_y, 1)
    dnn_pred = np.argmax(dnn.forward(direct(test_x, 1))[0], axis=1)
    acc, agree = {}, {}
    for T in (1, 2, 8, 64):
        snn = convert(dnn, calibrate(dnn, train_x[:512], T))
        acc[T] = evaluate_snn(snn, test_x, test_y, T)[1]
        agree[T] = np.mean(np.argmax(snn.forward(direct(test_x, T)).mean(axis=0), axis=1) == dnn_pred)
    assert dnn_acc > 0.9
    assert acc[64] >= dnn_acc - 0.02 and agree[64] >= 0.97, (dnn_acc, acc, agree)
    assert acc[64] > acc[1] and agree[64] > agree[1] and agree[8] > agree[1], (acc, agree)


def test_convert_structure_and_dnn_untouched(digits_dnn):
    dnn, train_x, *_ = digits_dnn
    before = {k: v.copy() for k, v in dnn.state_dict().items()}
    scales = calibrate(dnn, train_x[:256], 2)
    snn = convert(dnn, scales, dropout=0.2)
    neurons = [m for _, m in snn.modules() if isinstance(m, ConvertedNeuron)]
    assert len(neurons) == 2
    for s, n, relu in zip(scales, neurons, [m for m in dnn.modules() if isinstance(m[1], ClippedReLU)]):
        assert s["mu"] == float(relu[1].params["threshold"])
        assert n.v_threshold == pytest.approx(s["a"] * s["mu"], rel=1e-6)
        assert n.amplitude == pytest.approx(s["b"] * s["mu"], rel=1e-6)
        assert n.lam == 1.0
    assert type(list(snn)[-1]) is Linear  # the output layer has no neuron
    for k, v in dnn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_preactivations_are_the_clipped_relu_inputs(digits_dnn):
    dnn, train_x, *_ = digits_dnn
    x = train_x[:20]
    pre = collect_preactivations(dnn, x)
    first = list(dnn)[1].forward(list(dnn)[0].forward(direct(x, 1)))  # Flatten → Linear
    np.testing.assert_allclose(pre[0], first.astype(np.float64).ravel(), rtol=1e-6)
    assert len(pre) == 2 and pre[1].size == 20 * 64


def test_spike_meter_counts_amplitude_spikes(digits_dnn):
    dnn, train_x, _, test_x, test_y = digits_dnn
    snn = convert(dnn, calibrate(dnn, train_x[:256], 2))
    meter = SpikeMeter(snn)
    evaluate_snn(snn, test_x[:50], test_y[:50], 2, meter=meter)
    rows = {r["layer"]: r for r in meter.rows()}
    assert rows["1"]["spike_input"] is False                     # analog pixels: MACs
    assert rows["3"]["spike_input"] and rows["5"]["spike_input"]  # after the neurons: synaptic operations
    assert rows["5"]["sops"] == pytest.approx(rows["5"]["macs"] * rows["4"]["rate"] * 2)


# ---- fine-tuning: λ clamped after every step ----------------------------------------------
def test_clamp_lam():
    a, b = ConvertedNeuron(lam=1.3), ConvertedNeuron(lam=0.7)
    clamp_lam(Sequential(a, Linear(2, 2), b))
    assert (a.lam, b.lam) == (1.0, pytest.approx(0.7))


def test_finetune_clamps_leak_after_each_step(digits_dnn):
    dnn, train_x, train_y, *_ = digits_dnn
    snn = convert(dnn, calibrate(dnn, train_x[:256], 2), dropout=0.1)
    opt = make_finetune_optimizer(snn, lr=1e-4)
    assert opt.amsgrad and opt.lr == 1e-4
    seen = []
    step = opt.step

    def overshooting_step():  # an update that pushes every λ above 1
        step()
        for _, m in snn.modules():
            if isinstance(m, ConvertedNeuron):
                m.params["lam"] += 0.5
                seen.append(m.lam)

    opt.step = overshooting_step
    finetune_epoch(snn, opt, train_x[:128], train_y[:128], T=2, batch_size=64)
    assert seen and min(seen) > 1.0
    assert all(m.lam == 1.0 for _, m in snn.modules() if isinstance(m, ConvertedNeuron))


def test_finetune_improves_training_loss(digits_dnn):
    dnn, train_x, train_y, *_ = digits_dnn
    snn = convert(dnn, calibrate(dnn, train_x[:256], 1))
    before = evaluate_snn(snn, train_x[:256], train_y[:256], 1)[0]
    opt = make_finetune_optimizer(snn, lr=1e-3)
    for epoch in range(2):
        finetune_epoch(snn, opt, train_x[:256], train_y[:256], T=1, batch_size=32, epoch=epoch)
    assert evaluate_snn(snn, train_x[:256], train_y[:256], 1)[0] < before
    thresholds = [float(m.params["threshold"]) for _, m in snn.modules() if isinstance(m, ConvertedNeuron)]
    assert thresholds and all(t > 0 for t in thresholds)


# ---- the CLI, end to end, and the checkpoints ----------------------------------------------
def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "conv"
    common = ["convert", "--dataset", "digits", "--network", "mlp", "--T", "2", "--dnn-epochs", "2",
              "--calibration-samples", "200", "--out-dir", str(out), "--no-progress"]
    args = common + ["--finetune-epochs", "1"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    for phrase in ("DNN (clipped ReLU, T = 1)", "right after conversion", "after fine-tuning", "energy per sample",
                   "ConvertedNeuron", "SNN", "DNN"):
        assert phrase in text
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["epoch"] == 1 and (out / meta["weights"]).exists() and (out / "dnn" / "checkpoint.json").exists()
    assert not list(out.glob("*.tmp")) and len(list(out.glob("snn-epoch*.npz"))) == 1
    # the checkpoint reloads to the network that was measured
    snn, meta = load_converted(out)
    _, _, test_x, test_y = digits_split()
    assert evaluate_snn(snn, test_x, test_y, 2)[1] == pytest.approx(meta["results"]["finetuned_acc"])
    # a second run into the same directory needs --resume; with it, fine-tuning continues
    assert cli_main(args) == 2
    assert cli_main(common + ["--finetune-epochs", "2", "--resume"]) == 0
    resumed = json.loads((out / "checkpoint.json").read_text())
    assert resumed["epoch"] == 2 and [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == meta["history"][0]  # epoch 1 kept, only epoch 2 trained
    # an existing DNN run converts too
    capsys.readouterr()
    assert cli_main(["convert", "--dnn", str(out / "dnn"), "--T", "1", "--finetune-epochs", "0",
                     "--out-dir", str(tmp_path / "from-dnn"), "--no-progress"]) == 0
    assert "right after conversion (T = 1)" in capsys.readouterr().out


def test_corrupt_checkpoint_is_rejected(tmp_path):
    cfg = ConvertConfig(dataset="digits", network="mlp", dnn_epochs=1, finetune_epochs=0, calibration_samples=100,
                        out_dir=str(tmp_path))
    from refsnn.convert import run_conversion
    run_conversion(cfg, log=lambda *_: None)
    weights = tmp_path / json.loads((tmp_path / "checkpoint.json").read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match="SHA-256"):
        load_converted(tmp_path)
    with pytest.raises(ValueError, match="not a converted-SNN"):
        load_converted(tmp_path / "dnn")


# ---- bad input --------------------------------------------------------------------------------
def test_bad_inputs(digits_dnn):
    dnn, train_x, *_ = digits_dnn
    with pytest.raises(ValueError, match="threshold"):
        ConvertedNeuron(threshold=0.0)
    with pytest.raises(ValueError, match="lam"):
        ConvertedNeuron(lam=float("nan"))
    n = ConvertedNeuron(dtype=np.float64)
    with pytest.raises(ValueError, match="before forward"):
        n.backward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="dtype"):
        n.forward(np.zeros((2, 3), dtype=np.int64))
    n.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        n.backward(np.zeros((2, 4)))
    with pytest.raises(NonFiniteError):
        n.forward(np.array([[np.nan, 1.0]]))
    n.params["threshold"][...] = -1.0
    with pytest.raises(ValueError, match="threshold"):
        n.forward(np.zeros((2, 3)))
    relu_dnn = Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    with pytest.raises(ValueError, match="ClippedReLU"):
        convert(relu_dnn, [])
    with pytest.raises(ValueError, match="output layer"):
        convert(Sequential(Linear(4, 3), ClippedReLU()), [{"mu": 1, "a": 1, "b": 1}])
    with pytest.raises(ValueError, match="folded"):
        convert(Sequential(Linear(4, 3), ClippedReLU(), BatchNorm1d(3), Linear(3, 2)), [{"mu": 1, "a": 1, "b": 1}])
    with pytest.raises(ValueError, match="pairs"):
        convert(dnn, [{"mu": 1, "a": 1, "b": 1}])
    with pytest.raises(ValueError, match="grid"):
        search_scales(np.ones(10), 1.0, 2, a_grid=[0.5, -1.0])
    with pytest.raises(ValueError, match="μ"):
        search_scales(np.ones(10), 0.0, 2)
    with pytest.raises(ValueError, match="NaN"):
        search_scales(np.array([1.0, np.nan]), 1.0, 2)
    with pytest.raises(ValueError, match="T"):
        if_response(np.ones(3), 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="dropout"):
        ConvertConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown config"):
        ConvertConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="MaxPool2d|only chains"):
        from refsnn.models import BasicBlock
        convert(Sequential(BasicBlock(3, 3, neuron="clipped_relu"), MaxPool2d(2)), [])


def test_cli_bad_inputs(tmp_path, capsys):
    assert cli_main(["convert", "--dnn", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli_main(["convert", "--T", "0", "--out-dir", str(tmp_path / "o")]) == 2
    assert "T must be a positive integer" in capsys.readouterr().err
    # a DNN run whose activation is not the clipped ReLU
    assert cli_main(["train", "--dataset", "digits", "--network", "mlp", "--neuron", "relu", "--T", "1",
                     "--epochs", "1", "--out-dir", str(tmp_path / "relu"), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli_main(["convert", "--dnn", str(tmp_path / "relu"), "--out-dir", str(tmp_path / "o2")]) == 2
    assert "clipped_relu" in capsys.readouterr().err
