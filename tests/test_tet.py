"""TET's two MSE targets (refsnn.losses.tet_loss, docs/losses.md §6): the constant φ of Deng et
al. and the one-hot label of the CLIF authors' ``-mse_n_reg`` (DVS runs), in the loss, the
trainer and the CLI.

Tier 2: torch autograd of the CLIF authors' loss as their train.py:467-474 (HuuYuLong/
Complementary-LIF at d76af59) computes it, on the steps concatenated along the batch
([T·N, K], the labels repeated T times) with ``nn.MSELoss`` over all elements, written here in
torch from that code. Tier 1: central finite differences of the loss value.
"""
import numpy as np
import pytest

from refsnn import losses
from verify.gradcheck import check_directional

T, N, K = 3, 5, 4
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}  # test_losses.py's: float64 rounding; float32 ε ≈ 6e-8 ×
                                                   # the sums of T·N·K terms


def relative(mine, theirs):
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(mine - theirs)) / max(float(np.max(np.abs(theirs))), 1e-300))


def make_inputs(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (2.0 * rng.standard_normal((T, N, K))).astype(dtype), rng.integers(0, K, size=N)


def authors_loss(torch, out, y, loss_lambda, mse_n_reg, loss_means=1.0):
    """The CLIF authors' training loss: out [T, N, K] → out_all [T·N, K], label_real [T·N]."""
    F = torch.nn.functional
    out_all = torch.cat([out[t] for t in range(out.shape[0])], 0)
    label_real = torch.cat([y for _ in range(out.shape[0])], 0)
    if mse_n_reg:  # the MSE term is not a regularizer: its target is the label's one-hot vector
        target = F.one_hot(label_real, out.shape[2]).to(out.dtype)
    else:
        target = torch.zeros_like(out_all).fill_(loss_means)
    mse = torch.nn.MSELoss()(out_all, target)
    return (1 - loss_lambda) * F.cross_entropy(out_all, label_real) + loss_lambda * mse


def authors_value_and_grad(torch, out, y, **options):
    out_t = torch.tensor(out, requires_grad=True)
    value = authors_loss(torch, out_t, torch.tensor(y), **options)
    value.backward()
    return value.item(), out_t.grad.numpy()


# (refsnn's options, the authors' options)
CASES = [
    (dict(target="onehot"), dict(loss_lambda=0.05, mse_n_reg=True)),
    (dict(target="onehot", lam=0.3), dict(loss_lambda=0.3, mse_n_reg=True)),
    (dict(target="constant", lam=0.3, phi=-0.5), dict(loss_lambda=0.3, mse_n_reg=False, loss_means=-0.5)),
    (dict(), dict(loss_lambda=0.05, mse_n_reg=False, loss_means=1.0)),
]
IDS = ["onehot", "onehot-lam0.3", "constant-lam0.3-phi-0.5", "defaults"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options, theirs", CASES, ids=IDS)
def test_against_authors_formula(options, theirs, dtype):
    """Tier 2: value and gradient equal torch autograd of the authors' loss."""
    torch = pytest.importorskip("torch")
    out, y = make_inputs(1, dtype)
    loss, grad = losses.tet_loss(out, y, **options)
    assert grad.dtype == dtype and grad.shape == out.shape
    their_loss, their_grad = authors_value_and_grad(torch, out, y, **theirs)
    assert relative(loss, their_loss) <= TOLERANCE[dtype], (loss, their_loss)
    assert relative(grad, their_grad) <= TOLERANCE[dtype], f"\nmine\n{grad}\ntheirs\n{their_grad}"


def test_targets_differ():
    """The case that tells the targets apart: on the same inputs the one-hot and the constant-1
    targets give losses and gradients far apart (beyond any tolerance above), so a target
    option that were ignored would fail test_against_authors_formula."""
    torch = pytest.importorskip("torch")
    out, y = make_inputs(1)
    onehot = authors_value_and_grad(torch, out, y, loss_lambda=0.3, mse_n_reg=True)
    constant = authors_value_and_grad(torch, out, y, loss_lambda=0.3, mse_n_reg=False)
    assert relative(onehot[0], constant[0]) > 1e-2 and relative(onehot[1], constant[1]) > 1e-2
    mine = losses.tet_loss(out, y, lam=0.3, target="onehot")
    assert relative(mine[1], constant[1]) > 1e-2


@pytest.mark.parametrize("options", [dict(target="onehot"), dict(target="onehot", lam=0.7)],
                         ids=["onehot", "onehot-lam0.7"])
def test_finite_differences(options):
    """Tier 1: the returned gradient against central differences of the loss value."""
    out, y = make_inputs(2)
    _, grad = losses.tet_loss(out, y, **options)
    error = check_directional(lambda x: losses.tet_loss(x, y, **options)[0], out, grad, np.random.default_rng(3),
                              n_directions=4, elementwise=True)
    assert error <= 1e-6, f"relative error {error:.2e}"  # test_losses.py's bound for its losses


def test_trainer_uses_the_options():
    """The trainer's loss for ``loss="tet"`` with the TET options is the authors' (tier 2)."""
    torch = pytest.importorskip("torch")
    from refsnn.train.build import TrainConfig, training_loss
    out, y = make_inputs(4)
    cfg = TrainConfig(network="mlp", loss="tet", tet_lambda=0.3, tet_target="onehot")
    loss, grad = training_loss(cfg)(out, y)
    their_loss, their_grad = authors_value_and_grad(torch, out, y, loss_lambda=0.3, mse_n_reg=True)
    assert relative(loss, their_loss) <= 1e-12 and relative(grad, their_grad) <= 1e-12


@pytest.mark.parametrize("options, match", [
    (dict(target="one_hot"), "target must be one of constant, onehot"),
    (dict(target=None), "target must be one of"),
    (dict(target="onehot", phi=2.0), "phi applies to target 'constant' only"),
    (dict(lam=1.5), "lam"),
])
def test_bad_options(options, match):
    out, y = make_inputs(5)
    with pytest.raises(ValueError, match=match):
        losses.tet_loss(out, y, **options)


@pytest.mark.parametrize("options, option, match", [
    (dict(tet_target="onehot"), "tet_target", "applies to loss tet, not 'ce'"),
    (dict(loss="ce_count", neuron="lif", tet_lambda=0.1), "tet_lambda", "applies to loss tet"),
    (dict(loss="tet", tet_target="mse"), "tet_target", "one of constant, onehot"),
    (dict(loss="tet", tet_lambda=-0.1), "tet_lambda", r"in \[0.0, 1.0\]"),
    (dict(loss="tet", tet_target="onehot", tet_phi=0.5), "tet_phi", "applies to tet_target 'constant' only"),
])
def test_config_refuses(options, option, match):
    from refsnn.train import ConfigError, TrainConfig
    with pytest.raises(ConfigError, match=match) as caught:
        TrainConfig(**options)
    assert caught.value.option == option


def test_cli(tmp_path, capsys):
    """``--tet-target onehot --tet-lambda 0.3`` trains and is saved; a bad value is one line, exit 2."""
    import json

    from refsnn.cli import main
    run = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--loss", "tet", "--tet-target", "onehot",
                 "--tet-lambda", "0.3", "--epochs", "1", "--no-progress", "--out-dir", str(run)]) == 0
    saved = json.loads((run / "checkpoint.json").read_text())["config"]
    assert (saved["tet_target"], saved["tet_lambda"], saved["tet_phi"]) == ("onehot", 0.3, 1.0)
    capsys.readouterr()
    assert main(["train", "--loss", "tet", "--tet-target", "onehot", "--tet-phi", "2",
                 "--out-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "tet_phi applies to tet_target 'constant' only" in err and len(err.strip().splitlines()) == 1, err
