"""Ternary weights, twin network augmentation, KD and DML in the trainer (docs/methods.md §1-3).

Tier 1 here: the straight-through ternary path against finite differences of the network as a
function of Wq, and the TNA/DML/KD losses through whole networks against finite differences.
The twin loss itself is checked against torch autograd in tests/test_losses.py.
"""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refsnn.cli import main
from refsnn.models import build_network
from refsnn.quant import export_ternary, load_ternary, ternarize, ternary_codes, ternary_layers
from refsnn.train import Run, TrainConfig, load_for_eval, load_run, read_checkpoint
from verify.gradcheck import check_directional, set_smooth

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6   # tier 1, float64 (docs/verification.md)


def twn_reference(w, per_channel):
    """TWN written out per tensor (or per output channel), straight from docs/methods.md §2:
    Δ = 0.7·mean|W|, α = mean(|W_i| : |W_i| > Δ), Wq = α·sign(W)·1{|W| > Δ}."""
    w = np.asarray(w, dtype=np.float64)
    groups = [w[o] for o in range(w.shape[0])] if per_channel else [w]
    deltas, alphas, quantized = [], [], []
    for g in groups:
        delta = 0.7 * np.mean(np.abs(g))
        above = np.abs(g)[np.abs(g) > delta]
        alpha = above.mean() if above.size else 0.0
        deltas.append(delta)
        alphas.append(alpha)
        quantized.append(alpha * np.sign(g) * (np.abs(g) > delta))
    wq = np.stack(quantized) if per_channel else quantized[0]
    return np.array(deltas), np.array(alphas), wq


def small_config(tmp_path, **kw):
    options = dict(network="mlp", neuron="lif", T=2, epochs=1, batch_size=64, out_dir=str(tmp_path))
    return TrainConfig(**{**options, **kw})


# ------------------------------------------------------------------------------------------
# ternary weights
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-layer", "per-channel"])
@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3)], ids=["linear", "conv"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ternary_codes_match_the_twn_formula(per_channel, shape, dtype):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(shape) * rng.uniform(0.1, 3.0, size=(shape[0],) + (1,) * (len(shape) - 1))).astype(dtype)
    w[-1] = 0.0   # an all-zero channel: nothing exceeds Δ = 0, so α = 0
    codes, scale, delta = ternary_codes(w, per_channel)
    ref_delta, ref_alpha, ref_wq = twn_reference(w, per_channel)
    assert codes.dtype == np.int8 and codes.shape == w.shape and set(np.unique(codes)) <= {-1, 0, 1}
    assert scale.dtype == dtype and scale.shape == ((shape[0],) if per_channel else ())
    np.testing.assert_allclose(delta.reshape(-1), ref_delta, rtol=1e-13)
    np.testing.assert_allclose(scale.reshape(-1), ref_alpha.astype(dtype), rtol=1e-13 if dtype == np.float64 else 1e-7)
    np.testing.assert_array_equal(codes, np.sign(ref_wq))
    if per_channel:
        assert scale[-1] == 0 and np.all(codes[-1] == 0)
        assert len(np.unique(scale[:-1])) == shape[0] - 1   # really one scale per channel


def test_ternarize_selects_layers_and_keeps_names():
    model = build_network("cnn", (1, 8, 8), 10, neuron="lif")
    names = [n for n, _, _ in model.named_parameters()]
    assert ternarize(model) == ["4"]                                   # first and last stay full precision
    assert ternarize(build_network("cnn", (1, 8, 8), 10), first=True) == ["0", "4"]
    assert ternarize(build_network("cnn", (1, 8, 8), 10), first=True, last=True) == ["0", "4", "9"]
    assert [n for n, _, _ in model.named_parameters()] == names       # state-dict names unchanged
    with pytest.raises(ValueError, match="no layer left"):
        ternarize(build_network("mlp", (1, 8, 8), 10))                 # two layers: first and last


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-layer", "per-channel"])
def test_straight_through_gradient_equals_the_gradient_wrt_wq(per_channel):
    """Tier 1. The straight-through estimator's definition: the gradient reported for the latent W
    is dL/dWq, the exact gradient of the network as a function of Wq. Reference: central finite
    differences of a plain network whose weights are held at Wq computed by ``twn_reference``.
    (Finite differences in the latent W itself would not do: α moves with W.)"""
    kw = dict(neuron="lif", channels=(3, 4), seed=1)
    ternary = build_network("cnn", (1, 8, 8), 5, **kw).to(np.float64)
    ternarize(ternary, per_channel=per_channel, first=True, last=True)
    plain = build_network("cnn", (1, 8, 8), 5, **kw).to(np.float64)
    state = ternary.state_dict()
    for name, _ in ternary_layers(ternary):
        state[f"{name}.weight"] = twn_reference(state[f"{name}.weight"], per_channel)[2]
    plain.load_state_dict(state)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 2, size=(2, 3, 1, 8, 8))
    projection = rng.standard_normal((2, 3, 5))
    set_smooth(ternary), set_smooth(plain)

    out = ternary.forward(x)
    np.testing.assert_allclose(out, plain.forward(x), rtol=0, atol=1e-12)   # forward uses Wq
    ternary.zero_grad()
    grad_x = ternary.backward(projection)
    grads = {n: g.copy() for n, _, g in ternary.named_parameters()}

    def loss(_):
        return float(np.sum(plain.forward(x) * projection))

    errors = {"input": check_directional(loss, x, grad_x, rng, n_directions=3)}
    for name, p, _ in plain.named_parameters():
        errors[name] = check_directional(loss, p, grads[name], rng, n_directions=3, elementwise=p.size <= 40)
    assert max(errors.values()) <= TOLERANCE, errors
    assert len(ternary_layers(ternary)) == 3


@pytest.mark.parametrize("method", ["tna", "dml", "kd"])
def test_method_losses_through_whole_networks(tmp_path, method):
    """Tier 1: the trainer's loss for one batch, as a function of every parameter of the base and
    of the twin (TNA, DML) or of the student (KD), against the gradients its backward leaves."""
    network = "cnn" if method == "tna" else "mlp"   # BatchNorm and pooling once, the cheap MLP for the others
    options = dict(dtype="float64", method=method, network=network, neuron="lif", batch_size=6)
    if method == "tna":
        options.update(tna_lambda=0.5)   # large enough that the matching term shapes the gradient
    if method == "kd":
        teacher = Run(small_config(tmp_path / "teacher"))
        teacher.save()                   # an untrained teacher is a teacher all the same
        # a = 0.5, τ = 2 rather than the defaults (0.9, 4): with two untrained networks the default
        # KD gradient is so small next to the loss that the rounding noise of central differences
        # (measured: the error grows as the step shrinks) reaches 1e-6 relative
        options.update(teacher=str(tmp_path / "teacher"), kd_alpha=0.5, kd_temperature=2.0)
    run = Run(small_config(tmp_path / "run", **options))
    networks = [run.model] + ([run.twin] if run.twin is not None else [])
    for network in networks:
        set_smooth(network)
        network.train()
    x, y = run.train_x[:6], run.train_y[:6]
    _, _, grads = run.loss_and_grads(x, y, 0)
    assert len(grads) == len(networks)
    for network, grad in grads:
        network.zero_grad()
        network.backward(grad)
    rng = np.random.default_rng(0)
    errors = {}
    for label, network in zip(("base", "twin"), networks):
        for name, p, g in network.named_parameters():
            errors[f"{label} {name}"] = check_directional(lambda _: run.loss_and_grads(x, y, 0)[0], p, g.copy(),
                                                          rng, n_directions=2)
    assert max(errors.values()) <= TOLERANCE, errors


def test_twin_is_independent_and_quantized_like_the_base(tmp_path):
    same = Run(small_config(tmp_path, network="cnn", method="tna", ternary=True))
    full = Run(small_config(tmp_path, network="cnn", method="tna", ternary=True, twin_precision="full"))
    assert [n for n, _ in ternary_layers(same.twin)] == [n for n, _ in ternary_layers(same.model)] == ["4"]
    assert ternary_layers(full.twin) == [] and ternary_layers(full.model)
    for (name, p, _), (_, q, _) in zip(same.model.named_parameters(), same.twin.named_parameters()):
        if p.size > 1 and name.endswith("weight") and p.ndim > 1:
            assert not np.allclose(p, q), name   # independent initialization
    again = Run(small_config(tmp_path, network="cnn", method="tna", ternary=True))
    np.testing.assert_array_equal(again.twin.state_dict()["4.weight"], same.twin.state_dict()["4.weight"])
    assert same.twin_opt is not same.opt and same.twin_sched is not same.sched


def test_tna_with_zero_lambda_trains_the_base_exactly_like_plain(tmp_path):
    """With λ = 0 (late_matching covers the whole run) the base's loss is its own CE: its weights
    after an epoch are bit-identical to a plain run's with the same seed."""
    plain = Run(small_config(tmp_path / "plain"))
    plain.fit(progress=False, log=lambda s: None)
    tna = Run(small_config(tmp_path / "tna", method="tna", late_matching=1))
    assert tna.matching_lambda() == 0.0
    tna.fit(progress=False, log=lambda s: None)
    for (n, p, _), (_, q, _) in zip(plain.model.named_parameters(), tna.model.named_parameters()):
        np.testing.assert_array_equal(p, q, err_msg=n)
    tna.epoch = 1
    assert tna.matching_lambda() == 0.005


# ------------------------------------------------------------------------------------------
# training runs
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    Run(small_config(path, epochs=2)).fit(progress=False, log=lambda s: None)
    return path


@pytest.fixture(scope="module")
def ann_teacher_dir(tmp_path_factory):
    """The ANN twin as a teacher: ReLU instead of spiking neurons, T = 1."""
    path = tmp_path_factory.mktemp("ann_teacher")
    Run(small_config(path, neuron="relu", T=1, epochs=2)).fit(progress=False, log=lambda s: None)
    return path


@pytest.mark.parametrize("options", [
    dict(method="tna"), dict(method="dml"), dict(method="kd"), dict(method="kd", teacher="ann"),
    dict(method="tna", ternary=True, ternary_last=True, save_twin=True),
    dict(method="kd", ternary=True, ternary_first=True, ternary_per_channel=True),
], ids=["tna", "dml", "kd", "kd-ann-teacher", "tna-ternary", "kd-ternary"])
def test_methods_train_and_beat_chance(tmp_path, teacher_dir, ann_teacher_dir, options):
    if options["method"] == "kd":
        options = dict(options, teacher=str(ann_teacher_dir if options.get("teacher") == "ann" else teacher_dir))
    run = Run(small_config(tmp_path, epochs=2, **options))
    if run.teacher is not None:   # the teacher runs with its own T, frozen, in eval mode
        x = run.test_x[:5]
        expected = run.teacher.model.forward(np.stack([x] * run.teacher.cfg.T)).mean(axis=0)
        np.testing.assert_array_equal(run.teacher.logits(x, 0, 0), expected)
        assert run.teacher.cfg.T == (1 if options["teacher"] == str(ann_teacher_dir) else 2)
        assert not run.teacher.model.training
        teacher_state = run.teacher.model.state_dict()
    history = run.fit(progress=False, log=lambda s: None)
    if run.teacher is not None:   # frozen: not a bit changed by training the student
        for name, value in run.teacher.model.state_dict().items():
            np.testing.assert_array_equal(value, teacher_state[name], err_msg=name)
    assert history[-1]["test_acc"] > 0.5, history          # 10 classes: chance is 0.1
    _, arrays = read_checkpoint(tmp_path)
    has_twin = any(k.startswith("twin/") for k in arrays)
    if options["method"] in ("tna", "dml"):
        assert history[-1]["twin_test_acc"] > 0.5
        assert has_twin == options.get("save_twin", False)   # the finished run keeps only the base
        assert not any(k.startswith("twin_optim/") for k in arrays)
    else:
        assert not has_twin and "twin_test_acc" not in history[-1]


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "refsnn", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_tna_checkpoint_holds_the_twin_while_training(tmp_path):
    run = Run(small_config(tmp_path, method="tna", epochs=3))
    run.train_epoch(progress=False)
    run.epoch = 1
    run.save()
    meta, arrays = read_checkpoint(tmp_path)
    for prefix in ("model/", "optim/", "sched/", "twin/", "twin_optim/", "twin_sched/"):
        assert any(k.startswith(prefix) for k in arrays), prefix
    np.testing.assert_array_equal(arrays["twin/1.weight"], run.twin.state_dict()["1.weight"])
    assert "twin_generators" in meta
    resumed = load_run(tmp_path)
    for (n, p, _), (_, q, _) in zip(run.twin.named_parameters(), resumed.twin.named_parameters()):
        np.testing.assert_array_equal(p, q, err_msg=n)
    without_twin = {k: v for k, v in arrays.items() if not k.startswith("twin")}
    with pytest.raises(ValueError, match="no twin"):
        Run(run.cfg).restore(meta, without_twin)


def test_tna_sigkill_then_resume_is_bit_identical(tmp_path, kill_mid_epoch):
    epochs = "6"
    args = ["--network", "mlp", "--neuron", "lif", "--T", "4", "--method", "tna", "--tna-lambda", "0.05",
            "--ternary", "--ternary-last", "--save-twin", "--no-progress", "--epochs", epochs]
    whole = cli(*args, "--out-dir", str(tmp_path / "whole"))
    killed = cli(*args, "--out-dir", str(tmp_path / "killed"))
    meta_file = kill_mid_epoch(killed, tmp_path / "killed")  # inside epoch 3
    assert killed.returncode == -signal.SIGKILL
    interrupted_at = json.loads(meta_file.read_text())["epoch"]
    assert interrupted_at < int(epochs)
    _, mid = read_checkpoint(tmp_path / "killed")
    assert any(k.startswith("twin_optim/") for k in mid)   # the twin is in the mid-run checkpoint
    resumed = cli(*args, "--out-dir", str(tmp_path / "killed"), "--resume")
    out_resumed, _ = resumed.communicate(timeout=600)
    out_whole, _ = whole.communicate(timeout=600)
    assert resumed.returncode == 0, out_resumed
    assert whole.returncode == 0, out_whole
    assert f"resuming {tmp_path / 'killed'} after epoch {interrupted_at}" in out_resumed
    meta_a, a = read_checkpoint(tmp_path / "whole")
    meta_b, b = read_checkpoint(tmp_path / "killed")
    assert sorted(a) == sorted(b) and any(k.startswith("twin/") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(meta_a["history"]) == strip(meta_b["history"])


# ------------------------------------------------------------------------------------------
# ternary export
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(network="cnn"),
    dict(network="mlp", ternary_first=True, ternary_last=True, ternary_per_channel=True),
], ids=["cnn-per-layer", "mlp-per-channel"])
def test_ternary_export_size_and_exact_accuracy(tmp_path, capsys, options):
    run = Run(small_config(tmp_path / "run", ternary=True, **options))
    run.fit(progress=False, log=lambda s: None)
    trained_acc = run.history[-1]["test_acc"]
    out = tmp_path / "model.npz"
    assert main(["export-ternary", str(tmp_path / "run"), str(out)]) == 0
    printed = capsys.readouterr().out

    with np.load(out, allow_pickle=False) as z:
        exported = {k: z[k] for k in z.files}
    state = run.model.state_dict()
    ternary = dict(ternary_layers(run.model))
    expected_bytes = expected_float32 = 0
    for name, value in state.items():
        expected_float32 += value.size * (4 if value.dtype.kind == "f" else value.itemsize)
        layer = name.rpartition(".")[0]
        if name.endswith("weight") and layer in ternary:
            codes, scale = exported[f"model/{name}.codes"], exported[f"model/{name}.scale"]
            assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 0, 1}
            assert scale.dtype == np.float32
            per_channel = options.get("ternary_per_channel", False)
            assert scale.shape == ((value.shape[0],) if per_channel else ())
            _, alpha, wq = twn_reference(value, per_channel)
            np.testing.assert_allclose(codes * (scale.reshape(-1, *[1] * (codes.ndim - 1)) if per_channel else scale),
                                       wq, rtol=1e-6)
            expected_bytes += codes.size + 4 * scale.size
        else:
            np.testing.assert_array_equal(exported[f"model/{name}"], value)
            expected_bytes += value.nbytes
    assert f"ternary weights {expected_bytes:,} bytes" in printed
    assert f"float32 {expected_float32:,} bytes" in printed
    assert expected_bytes < expected_float32

    loaded = load_for_eval(out)
    assert not ternary_layers(loaded.model)   # plain layers holding α·codes
    assert loaded.evaluate()[1] == run.evaluate()[1] == trained_acc
    run.model.eval(), loaded.model.eval()
    x = run.test_x[:64].astype(np.float32)
    np.testing.assert_array_equal(loaded.model.forward(np.stack([x] * run.cfg.T)),
                                  run.model.forward(np.stack([x] * run.cfg.T)))
    assert main(["eval", str(out)]) == 0
    assert f"test accuracy {trained_acc * 100:.2f}%" in capsys.readouterr().out
    # the same export as a KD teacher: logits of the ternary network
    student = Run(small_config(tmp_path / "student", method="kd", teacher=str(out), network="mlp"))
    np.testing.assert_array_equal(student.teacher.logits(run.test_x[:8], 0, 0),
                                  run.model.forward(np.stack([run.test_x[:8].astype(np.float32)] * run.cfg.T)).mean(0))


def test_load_ternary_rejects_bad_codes():
    model = build_network("cnn", (1, 8, 8), 10)
    ternarize(model)
    arrays = export_ternary(model)
    with pytest.raises(ValueError, match="plain"):
        load_ternary(model, arrays)
    arrays["4.weight.codes"] = arrays["4.weight.codes"] * 2
    with pytest.raises(ValueError, match="codes"):
        load_ternary(build_network("cnn", (1, 8, 8), 10), arrays)


# ------------------------------------------------------------------------------------------
# bad options
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,message", [
    (dict(method="boost"), "method must be one of"),
    (dict(method="kd"), "needs a teacher"),
    (dict(teacher="runs/t"), "only used by method 'kd'"),
    (dict(method="tna", twin_precision="half"), "twin_precision"),
    (dict(method="tna", tna_lambda=-1.0), "tna_lambda"),
    (dict(method="kd", teacher="t", kd_alpha=1.5), "kd_alpha"),
    (dict(method="kd", teacher="t", kd_temperature=0.0), "kd_temperature"),
    (dict(method="dml", late_matching=2), "late_matching"),
    (dict(method="tna", late_matching=-1), "late_matching"),
    (dict(method="tna", loss="tet"), "only available with method 'plain'"),
    (dict(save_twin=True), "save_twin"),
    (dict(ternary_first=True), "only apply with ternary"),
    (dict(ternary="yes"), "true or false"),
])
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        small_config(tmp_path, **options)


def test_bad_teachers_and_exports(tmp_path, teacher_dir, capsys):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Run(small_config(tmp_path / "a", method="kd", teacher=str(tmp_path / "nowhere")))
    other = tmp_path / "other"   # a teacher trained on another data set (its config says so)
    other.mkdir()
    for f in teacher_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "checkpoint.json").read_text())
    meta["config"]["dataset"] = "mnist-t10k"
    (other / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained on 'mnist-t10k'"):
        Run(small_config(tmp_path / "b", method="kd", teacher=str(other)))
    assert main(["train", "--method", "kd", "--out-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "needs a teacher" in capsys.readouterr().err
    assert main(["export-ternary", str(teacher_dir), str(tmp_path / "x.npz")]) == 2
    assert "not trained with ternary" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert main(["eval", str(tmp_path / "junk.npz")]) == 2
    assert "not a readable refsnn ternary export" in capsys.readouterr().err
    # a KD run whose teacher changed cannot resume exactly
    kd = Run(small_config(tmp_path / "kd", method="kd", teacher=str(teacher_dir), epochs=2))
    kd.save()
    meta = json.loads((tmp_path / "kd" / "checkpoint.json").read_text())
    meta["teacher_sha256"] = "0" * 64
    (tmp_path / "kd" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not the one this run was trained with"):
        load_run(tmp_path / "kd")


def test_boolean_flags(tmp_path):
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "1", "--epochs", "1", "--ternary",
                 "--ternary-last", "--no-ternary-first", "--method", "dml", "--out-dir", str(tmp_path),
                 "--no-progress"]) == 0
    meta, _ = read_checkpoint(tmp_path)
    assert meta["config"]["ternary"] is True and meta["config"]["ternary_last"] is True
    assert meta["config"]["ternary_first"] is False
    assert meta["config"]["method"] == "dml"
