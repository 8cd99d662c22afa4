"""Paths that differ only at scale, option combinations that change a formula, and state a
checkpoint must carry (issue 10, defect 16). Each test here sees a mistake the rest of the suite
let through; tests/mutation_check.py plants those mistakes and checks that they are caught.

* Learnable neuron parameters (PLIF's w, ConvertedNeuron's threshold, leak and amplitude) summed
  over several parallel blocks of neurons, the last one partial.
* Every surrogate with v_threshold != 1 for every neuron, in smooth mode against an independent
  NumPy forward (the boxcar surrogate scales its argument by 1/V_th, the soft reset subtracts V_th).
* Epoch means over an uneven last batch; activity counted over several batches.
* Resuming training and conversion fine-tuning with Dropout (a generator in the checkpoint).
"""
import json

import numpy as np
import pytest

import refsnn
from refsnn.cli import main
from refsnn.convert import convert, evaluate_snn, finetune_epoch, load_converted, make_finetune_optimizer
from refsnn.data import digits_split, get_dataset
from refsnn.encoding import direct
from refsnn.energy import ActivityMeter, SpikeMeter
from refsnn.layers import BatchNorm1d, ClippedReLU, Conv2d, Dropout, Flatten, Linear
from refsnn.models import NETWORKS, build_network, make_activation
from refsnn.module import Sequential
from refsnn.neurons import BLOCK, ConvertedNeuron
from refsnn.surrogate import SURROGATES
from refsnn.train import read_checkpoint
from verify.gradcheck import check_directional, gradcheck

TOL = 1e-6  # docs/verification.md: relative error <= 1e-6 in float64


# ---- an independent smooth-mode forward of every neuron (docs/neurons.md, convert.py's equations) ----
def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def smooth_spike(h, th, surrogate, alpha, beta):
    """φ(u): u = (H − V_th)/V_th for boxcar, H − V_th for every other surrogate."""
    u = (h - th) / th if surrogate == "boxcar" else h - th
    if surrogate == "atan":
        return np.arctan(np.pi / 2 * alpha * u) / np.pi + 0.5
    if surrogate == "sigmoid":
        return sigmoid(alpha * u)
    if surrogate == "rect":
        return np.clip(alpha * u + 0.5, 0.0, 1.0)
    if surrogate == "fast_sigmoid":
        return u / (1.0 + alpha * np.abs(u)) + 0.5
    if surrogate == "s2nn":
        return np.where(u < 0, sigmoid(alpha * np.minimum(u, 0.0)), beta * np.log(np.maximum(u, 0.0) + 1.0) + 0.5)
    if surrogate == "rect_authors":
        return np.clip(u / alpha + 0.5, 0.0, 1.0)
    assert surrogate == "boxcar", surrogate
    return np.clip(u, -1.0, 1.0) + 0.5


def reference_lif_family(neuron, kind):
    """IF / LIF / PLIF (and SingleStep, an IF): charge, fire, hard or soft reset."""
    vr = 0.0 if neuron.v_reset is None else neuron.v_reset
    s_opts = (neuron.surrogate.name, neuron.surrogate.alpha, neuron.surrogate.beta)

    def forward(x, w=None, frozen=None, state=None):
        k = 1.0 / (1.0 + np.exp(-w)) if kind == "plif" else 1.0 / neuron.tau if kind == "lif" else 1.0
        v = np.full(x.shape[1:], vr) if state is None else state["v"]
        spikes = []
        for t in range(x.shape[0]):
            if kind == "if":
                h = v + x[t]
            elif neuron.decay_input:
                h = v + (x[t] - (v - vr)) * k
            else:
                h = v - (v - vr) * k + x[t]
            s = smooth_spike(h, neuron.v_threshold, *s_opts)
            s_reset = s if frozen is None else frozen[t]
            v = h - s_reset * neuron.v_threshold if neuron.v_reset is None else s_reset * vr + (1 - s_reset) * h
            spikes.append(s)
        return np.array(spikes), np.array(spikes), {"v": v}
    return forward


def reference_clif(neuron):
    """H = V − V/tau + X ;  S = φ ;  M = M·σ(H/tau) + S ;  V = H − S·(V_th + σ(M))."""
    def forward(x, state=None):
        v, m = (np.zeros(x.shape[1:]), np.zeros(x.shape[1:])) if state is None else (state["v"], state["m"])
        spikes = []
        for t in range(x.shape[0]):
            h = v - v / neuron.tau + x[t]
            s = smooth_spike(h, neuron.v_threshold, neuron.surrogate.name, neuron.surrogate.alpha,
                             neuron.surrogate.beta)
            m = m * sigmoid(h / neuron.tau) + s
            v = h - s * (neuron.v_threshold + sigmoid(m))
            spikes.append(s)
        return np.array(spikes), np.array(spikes), {"v": v, "m": m}
    return forward


def reference_converted(neuron):
    """H = λ·V + X ;  S = φ ;  V = H − Ŝ·V_th ;  O = A·S."""
    def forward(x, threshold, lam, amplitude, frozen=None):
        v, out, spikes = np.zeros(x.shape[1:]), [], []
        for t in range(x.shape[0]):
            h = lam * v + x[t]
            s = smooth_spike(h, threshold, neuron.surrogate.name, neuron.surrogate.alpha, neuron.surrogate.beta)
            v = h - (s if frozen is None else frozen[t]) * threshold
            out.append(amplitude * s)
            spikes.append(s)
        return np.array(out), np.array(spikes), {"v": v}
    return forward


NEURON_CASES = {
    "lif-hard": lambda th, sg: refsnn.LIF(tau=2.5, v_threshold=th, surrogate=sg),
    "lif-soft": lambda th, sg: refsnn.LIF(tau=2.5, v_threshold=th, v_reset=None, surrogate=sg),
    "lif-reset-detach": lambda th, sg: refsnn.LIF(v_threshold=th, v_reset=-0.3, decay_input=False,
                                                  detach_reset=True, surrogate=sg),
    "plif-hard": lambda th, sg: refsnn.PLIF(init_tau=3.0, v_threshold=th, surrogate=sg),
    "plif-soft-detach": lambda th, sg: refsnn.PLIF(init_tau=3.0, v_threshold=th, v_reset=None, decay_input=False,
                                                   detach_reset=True, surrogate=sg),
    "if-soft": lambda th, sg: refsnn.IF(v_threshold=th, v_reset=None, surrogate=sg),
    "if-reset": lambda th, sg: refsnn.IF(v_threshold=th, v_reset=-0.3, surrogate=sg),
    "clif": lambda th, sg: refsnn.CLIF(tau=1.5, v_threshold=th, surrogate=sg),
    "single-step": lambda th, sg: refsnn.SingleStep(v_threshold=th, surrogate=sg),
    "converted": lambda th, sg: ConvertedNeuron(threshold=th, lam=0.9, amplitude=1.3, surrogate=sg,
                                                detach_reset=False, train_amplitude=True),
    "converted-detach": lambda th, sg: ConvertedNeuron(threshold=th, lam=0.9, amplitude=1.3, surrogate=sg,
                                                       detach_reset=True, train_amplitude=True),
}


def reference_for(case, neuron):
    """(forward, names of the learnable parameters it takes)."""
    kind = case.split("-")[0]
    if kind in ("lif", "plif", "if"):
        return reference_lif_family(neuron, kind), ("w",) if kind == "plif" else ()
    if kind == "single":
        return reference_lif_family(neuron, "if"), ()
    if kind == "clif":
        return reference_clif(neuron), ()
    return reference_converted(neuron), ("threshold", "lam", "amplitude")


def check_against_reference(neuron, reference, params, x):
    """Smooth mode, float64: the forward equals the reference, and the backward equals central
    differences of the reference (the reset's spikes frozen when the reset is detached) for the
    input and every learnable parameter."""
    neuron.to(np.float64)
    neuron.smooth = True
    values = {name: float(neuron.params[name]) for name in params}
    out = neuron.forward(x)
    ref, spikes, _ = reference(x, **values)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)
    rng = np.random.default_rng(1)
    proj = rng.standard_normal(x.shape)
    neuron.zero_grad()
    grad_x = neuron.backward(proj)
    frozen = {"frozen": spikes} if getattr(neuron, "detach_reset", False) else {}

    def loss(xx, **changed):
        return float(np.sum(reference(xx, **{**values, **changed}, **frozen)[0] * proj))

    err = check_directional(loss, x.copy(), grad_x, rng, elementwise=True)
    assert err <= TOL, ("input", err)
    for name in params:
        err = check_directional(lambda p: loss(x, **{name: float(p)}), np.array(values[name]),
                                np.array(float(neuron.grads[name])), rng)
        assert err <= TOL, (name, err)


def drive(th, shape=(5, 3, 4), seed=0):
    """Inputs spread around the threshold, so every surrogate is active somewhere."""
    return np.random.default_rng(seed).standard_normal(shape) * 1.5 * th + 0.5 * th


@pytest.mark.parametrize("v_threshold", [0.6, 1.7])
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("case", sorted(NEURON_CASES))
def test_threshold_not_one_with_every_surrogate(case, surrogate, v_threshold):
    """v_threshold != 1 changes the boxcar argument (u = H/V_th − 1), its derivative (× 1/V_th)
    and the soft reset (− S·V_th): the forward against the reference, the backward against its
    finite differences, and the tier-1 gradcheck of verify.gradcheck where FD can see the backward
    (no detached reset)."""
    neuron = NEURON_CASES[case](v_threshold, surrogate)
    reference, params = reference_for(case, neuron)
    x = drive(v_threshold, (1, 6, 5) if case == "single-step" else (5, 3, 4))
    check_against_reference(neuron, reference, params, x)
    if not getattr(neuron, "detach_reset", False):
        report = gradcheck(neuron, x, elementwise=True)
        assert report.passed, f"{neuron!r}\n{report}"
        assert set(report.errors) == {"input", *params}


# ---- learnable parameters summed over several parallel blocks of neurons ----------------------
def wide(th=1.0, seed=0):
    """[T, N, F] whose N·F neurons fill two parallel blocks and part of a third."""
    x = drive(th, (3, 2, BLOCK + 19), seed)
    neurons = x[0].size
    assert neurons > 2 * BLOCK and neurons % BLOCK, "the input must span several blocks, the last partial"
    return x


@pytest.mark.parametrize("options", [dict(), dict(v_reset=None, decay_input=False), dict(v_threshold=0.7)],
                         ids=["default", "soft-no-decay", "threshold"])
def test_plif_w_gradient_over_several_blocks(options):
    """Tier 1 (finite differences of the smooth forward) on w and the input."""
    neuron = refsnn.PLIF(init_tau=3.0, **options).to(np.float64)
    report = gradcheck(neuron, wide(neuron.v_threshold))
    assert report.passed and set(report.errors) == {"input", "w"}, str(report)


def test_plif_w_gradient_over_several_blocks_matches_spikingjelly():
    """Tier 2: ParametricLIFNode in float64, the ordinary (specialized, non-smooth) kernels."""
    pytest.importorskip("torch")
    pytest.importorskip("spikingjelly")
    from verify.compare import format_table
    from verify.neurons_check import check_neuron
    rows = check_neuron(refsnn.PLIF(init_tau=3.0), "spikingjelly", wide(seed=4), seed=5)
    assert {"grad_x", "grad_w"} <= {r.tensor for r in rows}, format_table(rows)
    assert all(r.passed for r in rows), format_table(rows)


@pytest.mark.parametrize("surrogate", ["boxcar", "sigmoid"])
def test_converted_neuron_parameters_over_several_blocks(surrogate):
    """Tier 1: threshold, leak and amplitude gradients over several blocks."""
    neuron = ConvertedNeuron(threshold=0.7, lam=0.85, amplitude=1.4, surrogate=surrogate, detach_reset=False,
                             train_amplitude=True).to(np.float64)
    report = gradcheck(neuron, wide(0.7))
    assert report.passed and set(report.errors) == {"input", "threshold", "lam", "amplitude"}, str(report)


@pytest.mark.parametrize("detach_reset", [True, False])
def test_converted_neuron_parameters_over_several_blocks_match_torch(detach_reset):
    """Tier 2: torch autograd of the same equations (tests/test_convert.py's twin), ordinary mode."""
    torch = pytest.importorskip("torch")
    from test_convert import torch_converted
    x = wide(0.7, seed=2)
    g = np.random.default_rng(3).standard_normal(x.shape)
    neuron = ConvertedNeuron(threshold=0.7, lam=0.85, amplitude=1.4, detach_reset=detach_reset,
                             train_amplitude=True).to(np.float64)
    out = neuron.forward(x)
    grad_x = neuron.backward(g)
    names = ("threshold", "lam", "amplitude")
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(float(neuron.params[k]), dtype=torch.float64, requires_grad=True) for k in names]
    tout = torch_converted(torch, tx, *tp, detach_reset)
    tout.backward(torch.tensor(g))
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-10, atol=1e-10 * np.abs(tx.grad.numpy()).max())
    for k, p in zip(names, tp):
        np.testing.assert_allclose(float(neuron.grads[k]), float(p.grad), rtol=1e-10)


@pytest.mark.parametrize("kind", ["lif", "plif", "clif"])
def test_initial_state_over_several_blocks(kind):
    """A chunk started from a given state (``forward(x, state)``): each block must read and return
    its own neurons' state. Smooth mode against the reference: output, final state, dL/dx, dL/dstate
    and PLIF's dL/dw."""
    x = wide(seed=6)
    rng = np.random.default_rng(7)
    neuron = {"lif": lambda: refsnn.LIF(v_reset=None), "plif": lambda: refsnn.PLIF(init_tau=3.0),
              "clif": lambda: refsnn.CLIF()}[kind]().to(np.float64)
    neuron.smooth = True
    reference = reference_clif(neuron) if kind == "clif" else reference_lif_family(neuron, kind)
    values = {"w": float(neuron.params["w"])} if kind == "plif" else {}
    state = {name: rng.standard_normal(x.shape[1:]) * 0.5 for name in neuron.state_names}
    out = neuron.forward(x, state=state)
    ref, _, ref_state = reference(x, **values, state=state)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)
    for name in neuron.state_names:
        np.testing.assert_allclose(neuron.state[name], ref_state[name], rtol=1e-12, atol=1e-13)
    proj = rng.standard_normal(x.shape)
    neuron.zero_grad()
    grad_x = neuron.backward(proj)

    def loss(xx=x, st=state, **changed):
        return float(np.sum(reference(xx, **{**values, **changed}, state=st)[0] * proj))

    assert check_directional(lambda xx: loss(xx), x.copy(), grad_x, rng) <= TOL
    for name in neuron.state_names:
        err = check_directional(lambda sv: loss(st={**state, name: sv}), state[name].copy(),
                                neuron.grad_state[name], rng)
        assert err <= TOL, (name, err)
    if values:
        err = check_directional(lambda w: loss(w=float(w)), np.array(values["w"]), np.array(float(neuron.grads["w"])),
                                rng)
        assert err <= TOL, ("w", err)


def test_conv2d_saves_analog_input_found_in_a_later_block():
    """Conv2d stores a spike input as uint8, decided over parallel blocks of 4096 elements: one
    analog value in the last, partial block must keep the input analog (weight gradient vs torch)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.random((1, 3, 4, 30, 30)) < 0.3).astype(np.float64)
    assert x.size > 2 * 4096 and x.size % 4096
    x.flat[-7] = 0.37
    conv = Conv2d(4, 5, 3, padding=1, rng=rng).to(np.float64)
    g = rng.standard_normal((1, 3, 5, 30, 30))
    conv.forward(x)
    conv.backward(g)
    tw = torch.tensor(conv.params["weight"], requires_grad=True)
    tb = torch.tensor(conv.params["bias"], requires_grad=True)
    torch.nn.functional.conv2d(torch.tensor(x[0]), tw, tb, padding=1).backward(torch.tensor(g[0]))
    np.testing.assert_allclose(conv.grads["weight"], tw.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- several batches, an uneven last one ------------------------------------------------------
def mean_cross_entropy(z, y):
    """Mean over samples of −log softmax(z)[y], written out (no refsnn)."""
    top = z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_sum - z[np.arange(len(y)), y])), float(np.mean(z.argmax(axis=1) == y))


def test_epoch_means_weigh_an_uneven_last_batch_by_its_size(tmp_path):
    """With lr 1e-30 the weights never move, so the epoch's train and test loss and accuracy are
    the means over every sample of the initial network: the batched means must equal them."""
    train_x, train_y, test_x, test_y, info = get_dataset("digits")
    assert len(train_y) % 100 and len(test_y) % 100 and len(test_y) % 256  # uneven last batches
    out = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "2", "--epochs", "1", "--batch-size", "100",
                 "--optimizer", "sgd", "--momentum", "0", "--lr", "1e-30", "--dtype", "float64", "--no-progress",
                 "--out-dir", str(out)]) == 0
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    model = build_network("mlp", info["input_shape"], info["num_classes"], neuron="lif", seed=0).to(np.float64)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        loss, acc = mean_cross_entropy(model.forward(direct(x.astype(np.float64), 2)).mean(axis=0), y)
        assert row[f"{split}_loss"] == pytest.approx(loss, rel=1e-9), split
        assert row[f"{split}_acc"] == pytest.approx(acc, rel=1e-12), split


def test_conversion_means_weigh_an_uneven_last_batch_by_its_size():
    """refsnn.convert's evaluate_snn and fine-tuning epoch (lr 1e-30: the weights stay) over batches of
    16 with a last one of 2 equal the mean over all 50 samples."""
    rng = np.random.default_rng(1)
    dnn = Sequential(Flatten(), Linear(64, 24, rng=rng), ClippedReLU(), Linear(24, 10, rng=rng)).to(np.float64)
    snn = convert(dnn, [{"mu": 4.0, "a": 0.25, "b": 0.3}])
    train_x, train_y, _, _ = digits_split()
    x, y = train_x[:50], train_y[:50]
    loss, acc = mean_cross_entropy(snn.forward(direct(x.astype(np.float64), 2)).mean(axis=0), y)
    assert evaluate_snn(snn, x, y, 2, batch_size=16) == pytest.approx((loss, acc), rel=1e-12)
    opt = make_finetune_optimizer(snn, lr=1e-30)
    assert finetune_epoch(snn, opt, x, y, 2, batch_size=16) == pytest.approx((loss, acc), rel=1e-12)


@pytest.mark.parametrize("meter_class", [ActivityMeter, SpikeMeter])
def test_activity_is_counted_over_every_batch(meter_class):
    """An analog batch then a binary one: rates and synaptic operations cover both, and the first
    layer's input stays analog (MACs) because one of its batches was."""
    net = build_network("mlp", (1, 4, 4), 3, neuron="if", hidden=(6,), seed=1)
    rng = np.random.default_rng(0)
    batches = [(rng.random((2, 5, 1, 4, 4)) * 2).astype(np.float32),
               (rng.random((2, 3, 1, 4, 4)) < 0.5).astype(np.float32)]
    with meter_class(net) as meter:
        for b in batches:
            net.forward(b)
    rows = {r["layer"]: r for r in meter.rows()}
    hidden = [net[2].forward(net[1].forward(net[0].forward(b))) for b in batches]  # the spikes, by hand
    spikes, samples = sum(h.sum() for h in hidden), sum(b.shape[1] for b in batches)
    assert rows["2"]["rate"] == pytest.approx(spikes / sum(h.size for h in hidden))
    assert rows["1"]["rate"] == pytest.approx(sum(np.count_nonzero(b) for b in batches) / sum(b.size for b in batches))
    assert not rows["1"]["spike_input"] and rows["3"]["spike_input"]
    assert rows["3"]["sops"] == pytest.approx(spikes / samples * 3)  # spikes per sample × fan-out 3


# ---- names read from a checkpoint stay in its directory, whatever their prefix -----------------
def test_weights_name_continuing_as_a_path_is_refused(tmp_path, capsys):
    """checkpoint.json naming "checkpoint-epoch9999.npz/../../victim.npz" (through a directory of
    that name, which a crafted run directory can hold) starts like a weights file name but leads
    out of the directory: refused, and the file outside is neither read as weights nor changed."""
    run_dir = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "1", "--epochs", "1", "--no-progress",
                 "--out-dir", str(run_dir)]) == 0
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    victim = tmp_path / "victim.npz"
    victim.write_bytes((run_dir / meta["weights"]).read_bytes())  # valid weights with the recorded SHA-256
    original = victim.read_bytes()
    (run_dir / "checkpoint-epoch9999.npz").mkdir()
    meta["weights"] = "checkpoint-epoch9999.npz/../../victim.npz"
    (run_dir / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="refused"):
        read_checkpoint(run_dir)
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    assert "error:" in capsys.readouterr().err
    assert victim.read_bytes() == original


# ---- resuming with a stochastic layer: the generators are part of the checkpoint --------------
def mlp_with_dropout(in_shape, num_classes, neuron="lif", neuron_options=None, rng=None):
    """Flatten → Linear → BatchNorm → neuron → Dropout(0.3) → Linear: training draws masks, and
    BatchNorm's running statistics are state too."""
    return Sequential(Flatten(), Linear(int(np.prod(in_shape)), 32, rng=rng), BatchNorm1d(32),
                      make_activation(neuron, **(neuron_options or {})), Dropout(0.3, rng=rng.spawn(1)[0]),
                      Linear(32, num_classes, rng=rng))


def without_seconds(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_resumed_with_dropout_ends_bit_identical(tmp_path, monkeypatch):
    """3 epochs straight vs 1 epoch then --resume to 3: same weights, optimizer and schedule state
    and metrics, bit for bit. The step schedule (halving after epoch 2) makes its state matter."""
    # No network option adds Dropout, so "mlp" is built with it here (the trainer builds networks by name).
    monkeypatch.setitem(NETWORKS, "mlp", mlp_with_dropout)
    common = ["train", "--network", "mlp", "--neuron", "lif", "--T", "2", "--batch-size", "128",
              "--schedule", "step", "--step-size", "2", "--gamma", "0.5", "--no-progress"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(common + ["--epochs", "3", "--out-dir", str(straight)]) == 0
    assert main(common + ["--epochs", "1", "--out-dir", str(resumed)]) == 0
    assert main(common + ["--epochs", "3", "--out-dir", str(resumed), "--resume"]) == 0
    (meta_a, a), (meta_b, b) = read_checkpoint(straight), read_checkpoint(resumed)
    assert meta_a["epoch"] == meta_b["epoch"] == 3
    assert sorted(a) == sorted(b) and any(k.startswith("model/") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert without_seconds(straight) == without_seconds(resumed)


@pytest.fixture(scope="module")
def dnn_run(tmp_path_factory):
    """A clipped-ReLU MLP on digits (the ANN twin, T = 1), one epoch."""
    out = tmp_path_factory.mktemp("dnn") / "run"
    assert main(["train", "--dataset", "digits", "--network", "mlp", "--neuron", "clipped_relu", "--T", "1",
                 "--epochs", "1", "--out-dir", str(out), "--no-progress"]) == 0
    return out


def test_conversion_fine_tuning_resumed_with_dropout_ends_bit_identical(tmp_path, dnn_run):
    """Fine-tuning 2 epochs straight vs 1 then --resume to 2, with Dropout after the neurons."""
    common = ["convert", "--dnn", str(dnn_run), "--T", "2", "--calibration-samples", "200", "--dropout", "0.3",
              "--batch-size", "128", "--finetune-lr", "1e-3", "--no-progress"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(common + ["--finetune-epochs", "2", "--out-dir", str(straight)]) == 0
    assert main(common + ["--finetune-epochs", "1", "--out-dir", str(resumed)]) == 0
    assert main(common + ["--finetune-epochs", "2", "--out-dir", str(resumed), "--resume"]) == 0
    (snn_a, meta_a), (snn_b, meta_b) = load_converted(straight), load_converted(resumed)
    assert any(isinstance(m, Dropout) and m.p == 0.3 for _, m in snn_a.modules())
    a, b = snn_a.state_dict(), snn_b.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = lambda meta: [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]
    assert len(strip(meta_a)) == 2 and strip(meta_a) == strip(meta_b)
