"""Neuron layers: tier-1 gradient checks (smooth mode, float64, finite differences),
a first agreement check with SpikingJelly 2.0, and bad-input errors."""
import contextlib
import itertools

import numpy as np
import pytest

import refsnn
from refsnn.neurons import generic_kernels
from refsnn.surrogate import SURROGATES
from verify.gradcheck import check_directional, gradcheck

TOL = 1e-6  # docs/verification.md: relative error <= 1e-6 in float64
RESETS = [0.0, None, -0.3]


def inputs(shape=(5, 3, 4), scale=1.5, seed=0):
    """Inputs spread around the threshold so neurons fire sometimes and every surrogate is active."""
    return np.random.default_rng(seed).standard_normal(shape) * scale + 0.5


def check(neuron, x, params=()):
    neuron.to(np.float64)
    report = gradcheck(neuron, x, elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    assert set(report.errors) == {"input", *params}


# ---- an independent NumPy reference of the smooth forward, for detach_reset --------------
# Finite differences cannot see a detach, so for detach_reset=True the reference is the
# forward with the reset's spikes frozen at their unperturbed values: exactly the function
# whose gradient a detached reset defines.
PRIMITIVES = {
    "atan": lambda u, a: np.arctan(np.pi / 2 * a * u) / np.pi + 0.5,
    "sigmoid": lambda u, a: 1 / (1 + np.exp(-a * u)),
    "rect": lambda u, a: np.clip(a * u + 0.5, 0, 1),
    "fast_sigmoid": lambda u, a: u / (1 + a * np.abs(u)) + 0.5,
    "s2nn": lambda u, a: np.where(u < 0, 1 / (1 + np.exp(-a * np.minimum(u, 0))), np.log(np.maximum(u, 0) + 1) + 0.5),
}


def reference_lif_family(x, kind, k, decay_input, v_th, v_reset, surrogate, alpha, frozen=None):
    """Smooth-mode IF/LIF/PLIF forward written directly from docs/neurons.md. Returns (S, Ŝ used)."""
    vr = 0.0 if v_reset is None else v_reset
    v = np.full(x.shape[1:], vr)
    spikes, used = [], []
    for t in range(x.shape[0]):
        if kind == "if":
            h = v + x[t]
        elif decay_input:
            h = v + (x[t] - (v - vr)) * k
        else:
            h = v - (v - vr) * k + x[t]
        s = PRIMITIVES[surrogate](h - v_th, alpha)
        s_reset = s if frozen is None else frozen[t]
        v = h - s_reset * v_th if v_reset is None else s_reset * vr + (1 - s_reset) * h
        spikes.append(s)
        used.append(s)
    return np.array(spikes), np.array(used)


def make(kind, **kw):
    return {"lif": refsnn.LIF, "plif": refsnn.PLIF, "if": refsnn.IF}[kind](**kw)


def check_detached(kind, v_reset, decay_input, surrogate):
    x = inputs()
    opts = dict(v_reset=v_reset, surrogate=surrogate, detach_reset=True)
    if kind != "if":
        opts["decay_input"] = decay_input
    neuron = make(kind, **opts).to(np.float64)
    neuron.smooth = True
    alpha = neuron.surrogate.alpha
    k = 0.5 if kind == "lif" else (float(1 / (1 + np.exp(-neuron.params["w"]))) if kind == "plif" else 1.0)
    out = neuron.forward(x)
    ref_out, frozen = reference_lif_family(x, kind, k, decay_input, 1.0, v_reset, surrogate, alpha)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-14)  # same forward
    rng = np.random.default_rng(1)
    proj = rng.standard_normal(x.shape)
    grad = neuron.backward(proj)
    loss = lambda xx: float(np.sum(reference_lif_family(xx, kind, k, decay_input, 1.0, v_reset, surrogate,
                                                        alpha, frozen)[0] * proj))
    err = check_directional(loss, x.copy(), grad, rng, elementwise=True)
    assert err <= TOL, err
    if kind == "plif":  # d/dw through k = σ(w), frozen reset
        kk = np.array(k)
        dk = check_directional(
            lambda kv: float(np.sum(reference_lif_family(x, kind, float(kv), decay_input, 1.0, v_reset, surrogate,
                                                         alpha, frozen)[0] * proj)),
            kk, np.array(float(neuron.grads["w"]) / (k * (1 - k))), rng)
        assert dk <= TOL, dk


# ---- the matrix --------------------------------------------------------------------------
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", RESETS)
def test_lif_gradcheck(v_reset, decay_input, surrogate):
    check(refsnn.LIF(tau=2.5, v_reset=v_reset, decay_input=decay_input, surrogate=surrogate), inputs())


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", RESETS)
def test_plif_gradcheck(v_reset, decay_input, surrogate):
    neuron = refsnn.PLIF(init_tau=3.0, v_reset=v_reset, decay_input=decay_input, surrogate=surrogate)
    check(neuron, inputs(), params=("w",))


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("v_reset", RESETS)
def test_if_gradcheck(v_reset, surrogate):
    check(refsnn.IF(v_reset=v_reset, surrogate=surrogate), inputs(scale=0.8))


DETACH_CASES = [(kind, v_reset, decay_input, surrogate)
                for kind, v_reset, decay_input, surrogate in itertools.product(
                    ["lif", "plif", "if"], RESETS, [True, False], sorted(PRIMITIVES))
                if kind != "if" or decay_input]  # IF has no decay_input option


@pytest.mark.parametrize("kind, v_reset, decay_input, surrogate", DETACH_CASES)
def test_detach_reset_gradcheck(kind, v_reset, decay_input, surrogate):
    check_detached(kind, v_reset, decay_input, surrogate)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("tau", [2.0, 1.5])
def test_clif_gradcheck(tau, surrogate):
    check(refsnn.CLIF(tau=tau, surrogate=surrogate), inputs())


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_single_step_gradcheck(surrogate):
    check(refsnn.SingleStep(surrogate=surrogate), inputs((1, 6, 5)))


def test_detach_changes_the_gradient():
    """detach_reset must matter: the check above would be vacuous if it did nothing."""
    x = inputs()
    grads = []
    for detach in (False, True):
        n = refsnn.LIF(detach_reset=detach).to(np.float64)
        n.forward(x)
        grads.append(n.backward(np.ones_like(x)))
    assert np.max(np.abs(grads[0] - grads[1])) > 1e-3


# ---- a loss on the membrane, and the state carried between chunks --------------------
@pytest.mark.parametrize("make_neuron", [
    lambda: refsnn.LIF(store_v_seq=True, surrogate="atan"),
    lambda: refsnn.LIF(v_reset=None, decay_input=False, store_v_seq=True),
    lambda: refsnn.PLIF(store_v_seq=True),
    lambda: refsnn.IF(v_reset=None, store_v_seq=True),
    lambda: refsnn.CLIF(store_v_seq=True, surrogate="sigmoid"),
], ids=["lif", "lif-soft", "plif", "if", "clif"])
def test_membrane_loss_and_state_gradients(make_neuron):
    """L = <S, A> + <V, B> + <V_final, C>, started from a random state: check dL/dx, dL/dstate."""
    neuron = make_neuron().to(np.float64)
    neuron.smooth = True
    rng = np.random.default_rng(3)
    x = inputs()
    state = {name: rng.standard_normal(x.shape[1:]) * 0.3 for name in neuron.state_names}
    a, b = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    c = {name: rng.standard_normal(x.shape[1:]) for name in neuron.state_names}

    def loss(xx, st):
        s = neuron.forward(xx, state=st)
        return float(np.sum(s * a) + np.sum(neuron.v_seq * b)
                     + sum(np.sum(neuron.state[n] * c[n]) for n in neuron.state_names))

    loss(x, state)
    grad_x = neuron.backward(a, grad_v=b, grad_state=c)
    grad_state = neuron.grad_state
    assert check_directional(lambda xx: loss(xx, state), x, grad_x, rng, elementwise=True) <= TOL
    for name in neuron.state_names:
        err = check_directional(lambda sv: loss(x, {**state, name: sv}), state[name], grad_state[name], rng,
                                elementwise=True)
        assert err <= TOL, (name, err)


@pytest.mark.parametrize("neuron", [refsnn.LIF(v_reset=None), refsnn.CLIF(), refsnn.PLIF().to(np.float64)])
def test_chunks_continue_the_sequence(neuron):
    x = inputs((8, 2, 3))
    whole = neuron.forward(x)
    final = neuron.state
    first = neuron.forward(x[:3])
    second = neuron.forward(x[3:], state=neuron.state)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    for name in final:
        np.testing.assert_array_equal(neuron.state[name], final[name])


def test_strict_threshold_tie():
    x = np.ones((1, 1, 4))  # H = 1 = V_th exactly
    assert refsnn.IF().forward(x).sum() == 4        # SpikingJelly: Θ(0) = 1
    assert refsnn.IF(strict=True).forward(x).sum() == 0  # snnTorch/norse: strict >


def test_float32_runs_in_float32():
    x = inputs().astype(np.float32)
    n = refsnn.CLIF()
    s = n.forward(x)
    assert s.dtype == np.float32 and set(np.unique(s)) <= {0.0, 1.0}
    assert n.backward(np.ones_like(s)).dtype == np.float32


def test_surrogates_do_not_overflow():
    for name in SURROGATES:
        for dtype in (np.float32, np.float64):
            n = refsnn.LIF(surrogate=name, v_reset=None)
            x = np.array([[[-1e30, 1e30, 3e38 if dtype == np.float32 else 1e300, 0.0]]], dtype)
            n.forward(x)
            g = n.backward(np.ones_like(x))
            assert np.all(np.isfinite(g)), (name, dtype, g)


# ---- agreement with SpikingJelly 2.0 (float64) ----------------------------------------
def spikingjelly_run(node, x, grad):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    s = node(xt)
    s.backward(torch.tensor(grad))
    return s.detach().numpy(), xt.grad.numpy()


def assert_relative(mine, theirs, tol, what):
    err = np.max(np.abs(mine - theirs)) / max(np.max(np.abs(theirs)), 1e-300)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:g}"


@pytest.mark.parametrize("config", ["lif-default", "lif-soft", "clif-default"])
def test_agrees_with_spikingjelly_float64(config):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import neuron as sj
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4, 3, 5)) * 1.2 + 0.6
    grad = rng.standard_normal(x.shape)
    if config == "lif-default":
        theirs, mine = sj.LIFNode(step_mode="m"), refsnn.LIF()
    elif config == "lif-soft":
        theirs, mine = sj.LIFNode(v_reset=None, step_mode="m"), refsnn.LIF(v_reset=None)
    else:
        theirs, mine = sj.ComplementaryLIFNode(step_mode="m"), refsnn.CLIF()
    s_ref, g_ref = spikingjelly_run(theirs.double(), x, grad)
    s = mine.forward(x)
    g = mine.backward(grad)
    assert 0.05 < s.mean() < 0.95  # both firing and silent neurons are exercised
    # float64: ties are measure-zero for continuous random inputs, so spikes must match exactly.
    np.testing.assert_array_equal(s, s_ref)
    assert_relative(g, g_ref, 1e-10, "grad_x")


# ---- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("bad, err, match", [
    (np.ones(5), ValueError, "at least 2 dimensions"),
    (np.ones((3, 2), dtype=np.int64), TypeError, "float32 or float64"),
    (np.ones((3, 2), dtype=np.complex128), TypeError, "float32 or float64"),
    (np.zeros((0, 2)), ValueError, "no time steps"),
    (np.zeros((2, 0, 3)), ValueError, "empty"),
    (np.array([[np.nan, 1.0]]), ValueError, "NaN/Inf"),
    ([[1.0, 2.0]], TypeError, "numpy.ndarray"),
])
def test_bad_input(bad, err, match):
    for neuron in (refsnn.LIF(), refsnn.CLIF()):
        with pytest.raises(err, match=match):
            neuron.forward(bad)


@pytest.mark.parametrize("factory, match", [
    (lambda: refsnn.LIF(tau=1.0), "tau must be"),
    (lambda: refsnn.LIF(tau=0.5), "tau must be"),
    (lambda: refsnn.CLIF(tau=float("nan")), "tau must be"),
    (lambda: refsnn.PLIF(init_tau=1.0), "init_tau"),
    (lambda: refsnn.LIF(surrogate="relu"), "unknown surrogate"),
    (lambda: refsnn.LIF(alpha=-1.0), "alpha"),
    (lambda: refsnn.LIF(v_reset="soft"), "v_reset"),
    (lambda: refsnn.make_neuron("izhikevich"), "unknown neuron"),
])
def test_bad_options(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_backward_errors():
    n = refsnn.LIF()
    with pytest.raises(ValueError, match="before forward"):
        n.backward(np.ones((2, 3)))
    n.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        n.backward(np.ones((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        n.backward(np.ones((2, 3)), grad_v=np.ones((2, 2)))


def test_single_step_requires_one_step():
    with pytest.raises(ValueError, match="T = 1"):
        refsnn.SingleStep().forward(np.ones((2, 3)))


# ---- the specialized kernels compute what the checked generic kernels compute ----------
@pytest.mark.parametrize("make_neuron", [
    lambda: refsnn.LIF(), lambda: refsnn.LIF(v_reset=None, decay_input=False, surrogate="atan"),
    lambda: refsnn.LIF(detach_reset=True, strict=True, surrogate="rect"), lambda: refsnn.PLIF(v_reset=-0.2),
    lambda: refsnn.IF(surrogate="fast_sigmoid"), lambda: refsnn.CLIF(), lambda: refsnn.CLIF(surrogate="s2nn"),
], ids=["lif", "lif-soft-atan", "lif-detach-strict", "plif", "if", "clif", "clif-s2nn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_specialized_kernels_match_the_generic_ones(make_neuron, dtype):
    """The gradient checks run in smooth mode, which uses the generic compilation; ordinary runs
    use one specialized per configuration. Same source, so results must be bit-identical."""
    x = inputs((4, 3, 50)).astype(dtype)
    g, gv = (np.random.default_rng(s).standard_normal(x.shape).astype(dtype) for s in (1, 2))
    results = []
    for kernels in (contextlib.nullcontext, generic_kernels):
        with kernels():
            neuron = make_neuron().to(dtype)
            s = neuron.forward(x)
            gx = neuron.backward(g, grad_v=gv)
            results.append((s, neuron.h_seq, gx, neuron.grads.get("w")))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_bad_state_and_failed_forward():
    n = refsnn.CLIF()
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="keys"):
        n.forward(x, state={"v": np.zeros(3)})  # CLIF needs v and m
    with pytest.raises(ValueError, match="shape"):
        n.forward(x, state={"v": np.zeros(4), "m": np.zeros(4)})
    n.forward(x)
    with pytest.raises(ValueError, match="NaN/Inf"):
        n.forward(np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match="before forward"):  # the failed forward left nothing behind
        n.backward(np.ones((2, 3)))


@pytest.mark.parametrize("name", sorted(refsnn.neurons.NEURONS))
@pytest.mark.parametrize("grad_state", [{"bogus": 0.0}, {"V": 0.0}, np.zeros((2, 3))], ids=["bogus", "V", "array"])
def test_grad_state_must_name_the_neurons_state(name, grad_state):
    """A grad_state with keys outside state_names (or not a dict) was silently ignored."""
    neuron = refsnn.neurons.make_neuron(name, **refsnn.neurons.EXAMPLES[name][0])  # RLeaky needs its beta
    x = np.full((1, 2, 3), 0.7, np.float32)
    neuron.forward(x)
    with pytest.raises(ValueError, match="grad_state must be a dict with keys among"):
        neuron.backward(np.ones_like(x), grad_state=grad_state)


def test_the_converted_neuron_refuses_to_record_a_membrane_it_does_not_write():
    """store_v_seq on a ConvertedNeuron handed out v_seq memory its kernel never wrote."""
    neuron = refsnn.neurons.ConvertedNeuron()
    neuron.store_v_seq = True
    with pytest.raises(ValueError, match="does not record its membrane"):
        neuron.forward(np.full((2, 1, 3), 0.4, np.float32))
