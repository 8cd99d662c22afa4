"""Losses: values and gradients against torch autograd (tier 2) and finite differences (tier 1).

Relative error of a tensor = max |mine - theirs| / max |theirs| (norm-wise: element-wise
relative error is meaningless on gradient entries that are zero up to rounding).
"""
import numpy as np
import pytest

from refsnn import losses
from verify.gradcheck import check_directional

T, N, K = 3, 5, 4
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def relative(mine, theirs):
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return float(np.max(np.abs(mine - theirs)) / max(float(np.max(np.abs(theirs))), 1e-300))


def make_inputs(seed=0, scale=2.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    out_a = (scale * rng.standard_normal((T, N, K))).astype(dtype)
    out_b = (scale * rng.standard_normal((T, N, K))).astype(dtype)
    teacher = (scale * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, size=N)
    return out_a, out_b, teacher, y


# -- torch references: written from the papers' / torch's definitions, autograd for gradients --
def torch_reference(name, torch, options):
    F = torch.nn.functional

    def ce(o, y):
        return F.cross_entropy(o.mean(0), y, label_smoothing=options.get("label_smoothing", 0.0))

    def tet(o, y):  # official TET: mean over t of CE, plus λ·MSELoss over the whole output
        lam, phi = options.get("lam", 0.05), options.get("phi", 1.0)
        ce_mean = sum(F.cross_entropy(o[t], y) for t in range(o.shape[0])) / o.shape[0]
        return (1 - lam) * ce_mean + lam * F.mse_loss(o, torch.full_like(o, phi))

    def mse(a, b):
        return F.mse_loss(a.mean(0), b.mean(0))

    def twin(a, b, y):
        za, zb = a.mean(0), b.mean(0)
        lam = options.get("lam", 0.005)
        return F.cross_entropy(za, y) + F.cross_entropy(zb, y) + lam * ((za - zb) ** 2).sum(1).mean()

    def kd(s, teacher, y):
        a, tau = options.get("alpha", 0.9), options.get("temperature", 4.0)
        zs = s.mean(0)
        kl = F.kl_div(F.log_softmax(zs / tau, 1), F.softmax(teacher / tau, 1), reduction="batchmean")
        return (1 - a) * F.cross_entropy(zs, y) + a * tau * tau * kl

    def dml(a, b, y):
        # Targets as log-probabilities: with target=softmax(...), torch's kl_div backward to the
        # target is NaN where a probability underflows to 0 (the ±1e4 cases); log_target avoids it.
        tau = options.get("temperature", 1.0)
        za, zb = a.mean(0), b.mean(0)
        log_pa, log_pb = F.log_softmax(za / tau, 1), F.log_softmax(zb / tau, 1)
        kl_b_a = F.kl_div(log_pa, log_pb, reduction="batchmean", log_target=True)
        kl_a_b = F.kl_div(log_pb, log_pa, reduction="batchmean", log_target=True)
        return F.cross_entropy(za, y) + F.cross_entropy(zb, y) + kl_b_a + kl_a_b

    return {"cross_entropy": ce, "tet_loss": tet, "mse_logits": mse, "twin_loss": twin,
            "kd_loss": kd, "dml_loss": dml}[name]


# (name, options, which arrays the loss takes: "a" = out_a, "b" = out_b, "t" = teacher, "y" = labels)
CASES = [
    ("cross_entropy", {}, "ay"),
    ("cross_entropy", {"label_smoothing": 0.1}, "ay"),
    ("tet_loss", {}, "ay"),
    ("tet_loss", {"lam": 0.3, "phi": -0.5}, "ay"),
    ("mse_logits", {}, "ab"),
    ("twin_loss", {}, "aby"),
    ("twin_loss", {"lam": 0.7}, "aby"),
    ("kd_loss", {}, "aty"),
    ("kd_loss", {"alpha": 0.3, "temperature": 1.5}, "aty"),
    ("dml_loss", {}, "aby"),
    ("dml_loss", {"temperature": 3.0}, "aby"),
]
IDS = [f"{name}-{options}" for name, options, _ in CASES]
# Which positional arguments are network outputs that receive a gradient.
DIFFERENTIABLE = {"a", "b"}


def arguments(signature, out_a, out_b, teacher, y):
    return [{"a": out_a, "b": out_b, "t": teacher, "y": y}[c] for c in signature]


def run_refsnn(name, options, signature, out_a, out_b, teacher, y):
    result = getattr(losses, name)(*arguments(signature, out_a, out_b, teacher, y), **options)
    return result[0], list(result[1:])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,options,signature", CASES, ids=IDS)
@pytest.mark.parametrize("scale", [2.0, 1e4], ids=["normal", "extreme"])
def test_against_torch(name, options, signature, dtype, scale):
    """Value and every gradient equal torch autograd's; at ±1e4 logits both stay finite."""
    torch = pytest.importorskip("torch")
    out_a, out_b, teacher, y = make_inputs(seed=1, scale=scale, dtype=dtype)
    loss, grads = run_refsnn(name, options, signature, out_a, out_b, teacher, y)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    assert all(g.dtype == dtype for g in grads)

    tensors = [torch.tensor(x, requires_grad=(c in DIFFERENTIABLE)) if c != "y" else torch.tensor(x)
               for c, x in zip(signature, arguments(signature, out_a, out_b, teacher, y))]
    reference = torch_reference(name, torch, options)(*tensors)
    reference.backward()
    torch_grads = [t.grad.numpy() for c, t in zip(signature, tensors) if c in DIFFERENTIABLE]

    tolerance = TOLERANCE[dtype]
    if name == "dml_loss" and dtype == np.float32 and scale == 1e4:
        # Widened on purpose: at |z| ~ 1e4 the float32 spacing is ~1e-3, and the symmetric-KL
        # gradient p ⊙ (d - <p, d>) multiplies log-probability differences d of that absolute
        # error by p = O(1). Measured against the float64 result on the same inputs, torch's
        # float32 gradient is itself 1.2e-4 (relative) off, refsnn's 3e-5 to 1.3e-4.
        tolerance = 1e-3
    assert relative(loss, reference.item()) <= tolerance, (loss, reference.item())
    for mine, theirs in zip(grads, torch_grads):
        assert mine.shape == theirs.shape
        assert relative(mine, theirs) <= tolerance, f"\nmine\n{mine}\ntheirs\n{theirs}"


@pytest.mark.parametrize("name,options,signature", CASES, ids=IDS)
def test_finite_differences(name, options, signature):
    """Tier 1: every returned gradient against central differences of the loss value."""
    out_a, out_b, teacher, y = make_inputs(seed=2)
    _, grads = run_refsnn(name, options, signature, out_a, out_b, teacher, y)
    rng = np.random.default_rng(3)
    outputs = [c for c in signature if c in DIFFERENTIABLE]
    for c, grad in zip(outputs, grads):
        x = {"a": out_a, "b": out_b}[c]

        def value(_):
            return run_refsnn(name, options, signature, out_a, out_b, teacher, y)[0]

        error = check_directional(value, x, grad, rng, n_directions=4, elementwise=True)
        assert error <= 1e-6, f"{name} gradient wrt out_{c}: relative error {error:.2e}"


def test_extreme_logits_saturate_correctly():
    """Confident correct logits of ±1e4 (float32): CE is exactly 0 and its gradient 0;
    confident wrong ones give loss 2e4/T-scale values, not inf/nan."""
    out = np.full((2, 3, 4), -1e4, dtype=np.float32)
    y = np.array([0, 1, 2])
    out[:, np.arange(3), y] = 1e4
    loss, grad = losses.cross_entropy(out, y)
    assert loss == 0.0 and np.all(grad == 0)
    wrong = (y + 1) % 4
    loss, grad = losses.cross_entropy(out, wrong)
    assert loss == pytest.approx(2e4, rel=1e-6)
    # softmax puts all mass on the predicted class: gradient +1/(N·T) there, -1/(N·T) at the label
    assert np.allclose(grad[:, np.arange(3), y], 1 / 6) and np.allclose(grad[:, np.arange(3), wrong], -1 / 6)


def test_accuracy():
    out = np.zeros((2, 4, 3))
    out[0, :, :] = [[3, 1, 0], [0, 2, 1], [0, 0, 5], [1, 1, 0]]   # argmax of time mean: 0, 1, 2, 0 (tie -> first)
    out[1, :, :] = out[0]
    assert losses.accuracy(out, np.array([0, 1, 1, 0])) == 0.75
    assert losses.accuracy(out, np.array([1, 0, 0, 1])) == 0.0


# -- bad inputs ------------------------------------------------------------------------------
GOOD = make_inputs(seed=4)


@pytest.mark.parametrize("call,error,message", [
    (lambda a, b, t, y: losses.cross_entropy(a, y + K), ValueError, "labels y must lie"),
    (lambda a, b, t, y: losses.cross_entropy(a, y - K), ValueError, "labels y must lie"),
    (lambda a, b, t, y: losses.cross_entropy(a, y[:-1]), ValueError, "shape"),
    (lambda a, b, t, y: losses.cross_entropy(a, y.astype(float)), TypeError, "integers"),
    (lambda a, b, t, y: losses.cross_entropy(a[0], y), ValueError, "[T, N, K]"),
    (lambda a, b, t, y: losses.cross_entropy(a.astype(np.int64), y), TypeError, "dtype"),
    (lambda a, b, t, y: losses.cross_entropy(np.where(a > 0, np.nan, a), y), ValueError, "NaN or Inf"),
    (lambda a, b, t, y: losses.tet_loss(np.where(a > 0, np.inf, a), y), ValueError, "NaN or Inf"),
    (lambda a, b, t, y: losses.cross_entropy(a, y, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda a, b, t, y: losses.tet_loss(a, y, lam=-0.1), ValueError, "lam"),
    (lambda a, b, t, y: losses.mse_logits(a, b[:, :-1]), ValueError, "shape"),
    (lambda a, b, t, y: losses.mse_logits(a, b.astype(np.float32)), TypeError, "float32"),
    (lambda a, b, t, y: losses.twin_loss(a, b[:2], y), ValueError, "shape"),
    (lambda a, b, t, y: losses.twin_loss(a, b, y, lam=np.nan), ValueError, "lam"),
    (lambda a, b, t, y: losses.kd_loss(a, t[:, :-1], y), ValueError, "z_teacher"),
    (lambda a, b, t, y: losses.kd_loss(a, np.full_like(t, np.inf), y), ValueError, "z_teacher"),
    (lambda a, b, t, y: losses.kd_loss(a, t, y, temperature=0.0), ValueError, "temperature"),
    (lambda a, b, t, y: losses.kd_loss(a, t, y, alpha=2.0), ValueError, "alpha"),
    (lambda a, b, t, y: losses.dml_loss(a, b, y, temperature=-1.0), ValueError, "temperature"),
    (lambda a, b, t, y: losses.dml_loss(a, b, y[::-1][:3]), ValueError, "shape"),
])
def test_bad_inputs(call, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(*GOOD)
