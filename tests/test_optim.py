"""Optimizers and schedules against torch.optim (single-tensor CPU path, foreach=False).

Both sides start from the same parameters and receive the same sequence of random gradients
(torch's ``param.grad`` set by hand); parameters are compared after every step.
Relative error = max |mine - theirs| / max |theirs| over each parameter tensor.
"""
import numpy as np
import pytest

from refsnn import optim
from refsnn.module import Module

# 37 elements: a multiple of torch's AVX2 block plus a scalar tail, so both code paths are covered.
SHAPES = [(4, 5), (7,), (3, 2, 6), (37,)]
STEPS = 10

SGD_OPTIONS = [
    {"lr": 0.05},
    {"lr": 0.05, "weight_decay": 1e-2},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.1},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 1e-2},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 5e-4},
]
ADAM_OPTIONS = [
    {"lr": 1e-2},
    {"lr": 1e-2, "weight_decay": 1e-2},
    {"lr": 1e-2, "amsgrad": True},
    {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-2},
    {"lr": 1e-2, "betas": (0.4, 0.99), "eps": 1e-6},   # lerp weight 0.6 >= 0.5: torch's other branch
]
CASES = ([("SGD", o) for o in SGD_OPTIONS] + [("Adam", o) for o in ADAM_OPTIONS]
         + [("AdamW", o) for o in ADAM_OPTIONS] + [("AdamW", {"lr": 1e-2, "amsgrad": True})])
IDS = [f"{kind}-{options}" for kind, options in CASES]


def relative(mine, theirs):
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return float(np.max(np.abs(mine - theirs)) / max(float(np.max(np.abs(theirs))), 1e-300))


def initial_parameters(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def gradient_sequence(dtype, steps, seed=1):
    """Random gradients whose scale changes from step to step (so AMSGrad's max matters)."""
    rng = np.random.default_rng(seed)
    return [[(rng.uniform(0.1, 3.0) * rng.standard_normal(shape)).astype(dtype) for shape in SHAPES]
            for _ in range(steps)]


def run_both(torch, kind, options, dtype):
    """Yield (refsnn params, torch params) after each of STEPS steps; lr halves after step 5
    on both sides (the optimizer must read ``lr`` at every step, as schedulers set it)."""
    params = initial_parameters(dtype)
    grads = [np.zeros_like(p) for p in params]
    mine = getattr(optim, kind)([(f"p{i}", p, g) for i, (p, g) in enumerate(zip(params, grads))], **options)
    torch_params = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    theirs = getattr(torch.optim, kind)(torch_params, foreach=False, **options)
    for step, step_grads in enumerate(gradient_sequence(dtype, STEPS)):
        if step == 5:
            mine.lr *= 0.5
            theirs.param_groups[0]["lr"] *= 0.5
        for g, tp, new in zip(grads, torch_params, step_grads):
            g[...] = new
            tp.grad = torch.tensor(new.copy())
        mine.step()
        theirs.step()
        yield params, [tp.detach().numpy() for tp in torch_params]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,options", CASES, ids=IDS)
def test_matches_torch(kind, options, dtype):
    torch = pytest.importorskip("torch")
    tolerance = {np.float64: 1e-12, np.float32: 1e-6}[dtype]
    for step, (mine, theirs) in enumerate(run_both(torch, kind, options, dtype)):
        for i, (a, b) in enumerate(zip(mine, theirs)):
            assert a.dtype == dtype
            error = relative(a, b)
            assert error <= tolerance, f"step {step + 1}, p{i}: relative error {error:.3e}"


@pytest.mark.parametrize("kind,options", CASES, ids=IDS)
def test_float32_bitwise(kind, options, monkeypatch):
    """float32 parameters are bit-for-bit torch's after every step.

    SGD: exactly as written. Adam/AdamW: torch's sqrt (MKL, not correctly rounded: up to
    0.75 ulp) differs from numpy's in the last bit, so the check substitutes torch's sqrt for
    numpy's; every other operation must then agree exactly. Needs torch's FMA kernels (x86
    AVX2/AVX-512); elsewhere torch rounds a·b + c twice and only test_matches_torch applies.
    """
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("torch is not using its FMA (AVX2/AVX-512) kernels on this CPU")
    if kind != "SGD":
        monkeypatch.setattr(optim.np, "sqrt", lambda x: torch.sqrt(torch.from_numpy(x)).numpy())
    for step, (mine, theirs) in enumerate(run_both(torch, kind, options, np.float32)):
        for i, (a, b) in enumerate(zip(mine, theirs)):
            differing = int(np.count_nonzero(a != b))
            assert differing == 0, f"step {step + 1}, p{i}: {differing} elements differ"


def test_updates_module_parameters_in_place():
    """The optimizer writes into the arrays the Module holds; p <- p - lr·g by hand."""
    module = Module()
    weight = module.add_param("weight", np.array([[1.0, -2.0], [0.5, 4.0]], dtype=np.float32))
    bias = module.add_param("bias", np.array([0.25, -0.75], dtype=np.float32))
    module.grads["weight"][...] = [[1.0, 1.0], [-2.0, 0.0]]
    module.grads["bias"][...] = [4.0, -4.0]
    opt = optim.SGD(module.named_parameters(), lr=0.5)
    opt.step()
    assert module.params["weight"] is weight and module.params["bias"] is bias
    np.testing.assert_array_equal(weight, [[0.5, -2.5], [1.5, 4.0]])
    np.testing.assert_array_equal(bias, [-1.75, 1.25])
    opt.zero_grad()
    assert all(np.all(g == 0) for g in module.grads.values())


# -- schedules --------------------------------------------------------------------------------
SCHEDULES = [
    ("CosineAnnealingLR", {"T_max": 10}),                    # 30 epochs: down, up again, down
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 1e-3}),
    ("CosineAnnealingLR", {"T_max": 30}),
    ("StepLR", {"step_size": 4, "gamma": 0.5}),
    ("StepLR", {"step_size": 1, "gamma": 0.9}),
]


@pytest.mark.parametrize("kind,options", SCHEDULES, ids=[f"{k}-{o}" for k, o in SCHEDULES])
def test_schedule_matches_torch(kind, options):
    """lr and last_epoch equal torch's exactly (==) after construction and 30 epochs."""
    torch = pytest.importorskip("torch")
    param = np.zeros(3)
    opt = optim.SGD([("w", param, np.zeros(3))], lr=0.1, momentum=0.9)
    schedule = getattr(optim, kind)(opt, **options)
    torch_opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    torch_schedule = getattr(torch.optim.lr_scheduler, kind)(torch_opt, **options)
    assert opt.lr == torch_opt.param_groups[0]["lr"] and schedule.last_epoch == torch_schedule.last_epoch
    for epoch in range(30):
        opt.step()
        torch_opt.step()
        schedule.step()
        torch_schedule.step()
        assert opt.lr == torch_opt.param_groups[0]["lr"], f"epoch {epoch + 1}"
        assert schedule.last_epoch == torch_schedule.last_epoch


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,options", [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-2}),
    ("AdamW", {"lr": 1e-2, "betas": (0.8, 0.99)}),
])
def test_state_dict_round_trip(kind, options, tmp_path):
    """Save after 5 steps through np.savez, load with allow_pickle=False into a fresh optimizer
    and schedule built with other settings: the next 5 steps are bit-for-bit the uninterrupted run."""
    dtype = np.float32
    grads_sequence = gradient_sequence(dtype, 10)

    def build(params, **overrides):
        grads = [np.zeros_like(p) for p in params]
        opt = getattr(optim, kind)([(f"layer.{i}.weight", p, g) for i, (p, g) in enumerate(zip(params, grads))],
                                   **{**options, **overrides})
        return opt, optim.CosineAnnealingLR(opt, T_max=4), grads

    params = initial_parameters(dtype)
    opt, schedule, grads = build(params)
    for step, step_grads in enumerate(grads_sequence):
        if step == 5:
            np.savez(tmp_path / "optimizer.npz", **opt.state_dict())
            np.savez(tmp_path / "schedule.npz", **schedule.state_dict())
            resumed_params = [p.copy() for p in params]
        for g, new in zip(grads, step_grads):
            g[...] = new
        opt.step()
        schedule.step()

    resumed_opt, resumed_schedule, resumed_grads = build(resumed_params, lr=0.3, weight_decay=0.0)
    resumed_opt.load_state_dict(np.load(tmp_path / "optimizer.npz", allow_pickle=False))
    resumed_schedule.load_state_dict(np.load(tmp_path / "schedule.npz", allow_pickle=False))
    for step_grads in grads_sequence[5:]:
        for g, new in zip(resumed_grads, step_grads):
            g[...] = new
        resumed_opt.step()
        resumed_schedule.step()
    assert resumed_opt.lr == opt.lr and resumed_schedule.last_epoch == schedule.last_epoch
    for a, b in zip(resumed_params, params):
        np.testing.assert_array_equal(a, b)


def test_load_rejects_mismatched_state():
    params = initial_parameters(np.float64)
    opt = optim.Adam([(f"p{i}", p, np.ones_like(p)) for i, p in enumerate(params)], amsgrad=True)
    opt.step()
    state = opt.state_dict()
    fresh = optim.Adam([(f"p{i}", p.copy(), np.zeros_like(p)) for i, p in enumerate(params)])
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "eps"})
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict({**state, "state.p1.exp_avg": np.zeros(8)})
    with pytest.raises(ValueError, match="matches no parameter"):
        fresh.load_state_dict({**state, "state.unknown.exp_avg": np.zeros(3)})
    with pytest.raises(ValueError, match="buffers"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "state.p0.max_exp_avg_sq"})
    with pytest.raises(ValueError, match="missing"):
        optim.SGD([("p0", params[0], np.zeros_like(params[0]))], lr=0.1).load_state_dict(state)
    # A failed load leaves the optimizer untouched.
    assert fresh.lr == 1e-3 and fresh.amsgrad is False and fresh.step_count == 0
    assert all(np.all(b == 0) for buffers in fresh.state.values() for b in buffers.values())


# -- bad options ------------------------------------------------------------------------------
def one_param():
    return [("w", np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.float32))]


@pytest.mark.parametrize("build,error,message", [
    (lambda: optim.SGD(one_param(), lr=-0.1), ValueError, "lr"),
    (lambda: optim.SGD(one_param(), lr=float("nan")), ValueError, "lr"),
    (lambda: optim.SGD(one_param(), lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda: optim.SGD(one_param(), lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: optim.SGD(one_param(), lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda: optim.SGD(one_param(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda: optim.Adam(one_param(), lr=-1e-3), ValueError, "lr"),
    (lambda: optim.Adam(one_param(), betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (lambda: optim.Adam(one_param(), betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda: optim.AdamW(one_param(), betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    (lambda: optim.Adam(one_param(), eps=-1e-8), ValueError, "eps"),
    (lambda: optim.AdamW(one_param(), weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: optim.SGD([], lr=0.1), ValueError, "empty parameter list"),
    (lambda: optim.SGD([("w", np.zeros(3), np.zeros(4))], lr=0.1), ValueError, "gradient of 'w'"),
    (lambda: optim.SGD([("w", np.zeros(3), np.zeros(3, dtype=np.float32))], lr=0.1), ValueError, "gradient"),
    (lambda: optim.SGD([("w", np.zeros(3, dtype=int), np.zeros(3, dtype=int))], lr=0.1), TypeError, "float32"),
    (lambda: optim.SGD(one_param() + one_param(), lr=0.1), ValueError, "twice"),
    (lambda: optim.SGD([np.zeros(3)], lr=0.1), TypeError, "triples"),
    (lambda: optim.CosineAnnealingLR(optim.SGD(one_param(), lr=0.1), T_max=0), ValueError, "T_max"),
    (lambda: optim.StepLR(optim.SGD(one_param(), lr=0.1), step_size=0), ValueError, "step_size"),
    (lambda: optim.StepLR(optim.SGD(one_param(), lr=0.1), step_size=2, last_epoch=3), ValueError, "initial_lr"),
    (lambda: optim.StepLR("not an optimizer", step_size=2), TypeError, "Optimizer"),
])
def test_bad_options(build, error, message):
    with pytest.raises(error, match=message):
        build()
