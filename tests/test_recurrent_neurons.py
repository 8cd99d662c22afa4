"""RLeaky (snnTorch's recurrent Leaky), LSNN (norse's adaptive-threshold LIF) and KLIF (SpikingJelly's
K-based LIF): tier-1 checks of every gradient against central finite differences (smooth mode, float64:
input, parameters, recurrent weights, initial state), float64 agreement with snnTorch's RLeaky, norse's
LSNN and SpikingJelly's KLIFNode themselves, and one error for each bad option or input."""
import numpy as np
import pytest

from refsnn.neurons import KLIF, LSNN, RLeaky, generic_kernels
from refsnn.neurons.lsnn import EXAMPLES as LSNN_EXAMPLES
from verify.gradcheck import check_directional, gradcheck

TOL = 1e-6  # docs/verification.md: relative error <= 1e-6 in float64

RLEAKY = [  # F = 4 features; every reset mechanism, delay, recurrence and learned parameter
    dict(beta=0.8, linear_features=4),
    dict(beta=0.9, linear_features=4, learn_beta=True, learn_threshold=True, threshold=0.75, reset_delay=False),
    dict(beta=0.85, linear_features=4, reset_mechanism="zero", learn_recurrent=False, spike_grad="sigmoid"),
    dict(beta=0.6, all_to_all=False, V=0.5, reset_mechanism="zero", reset_delay=False, learn_beta=True,
         spike_grad="fast_sigmoid"),
    dict(beta=0.7, all_to_all=False, V=[0.5, -0.25, 1.0, 0.75], reset_mechanism="none", learn_threshold=True),
]


@pytest.fixture(autouse=True, scope="module")
def generic():
    """Smooth mode runs the generic kernels anyway; the agreement checks use them too (one compilation)."""
    with generic_kernels():
        yield


def inputs(shape=(5, 3, 4), scale=1.5, seed=0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + 0.5


def check_state_gradient(neuron, x, seed=1):
    """dL/dstate0 against finite differences of L = <forward(x, state0), R> along random directions.
    The delayed reset Θ(U − θ) stays a step in smooth mode: piecewise constant, so finite differences
    see exactly the detached gradient."""
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(x.shape[1:]) * 0.3 for k in neuron.state_names}
    proj = rng.standard_normal(x.shape)
    neuron.smooth = True
    neuron.forward(x, state=state)
    neuron.backward(proj)
    for name in neuron.state_names:
        grad = neuron.grad_state[name].copy()

        def loss(s, name=name):
            return float(np.sum(neuron.forward(x, state={**state, name: s}) * proj))
        err = check_directional(loss, state[name].copy(), grad, rng, elementwise=True)
        assert err <= TOL, (name, err)


@pytest.mark.parametrize("options", RLEAKY, ids=[str(i) for i in range(len(RLEAKY))])
def test_rleaky_gradcheck(options):
    neuron = RLeaky(**options).to(np.float64)
    report = gradcheck(neuron, inputs(), elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    assert set(report.errors) == {"input", *neuron.params}
    check_state_gradient(neuron, inputs(seed=2))


@pytest.mark.parametrize("options", LSNN_EXAMPLES["lsnn"], ids=[str(i) for i in range(len(LSNN_EXAMPLES["lsnn"]))])
def test_lsnn_gradcheck(options):
    neuron = LSNN(**options).to(np.float64)
    x = inputs(scale=3.0)
    report = gradcheck(neuron, x, elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    check_state_gradient(neuron, x)


def test_lsnn_membrane_loss_gradcheck():
    """An upstream gradient on v_seq (after reset) as well as on the spikes."""
    neuron = LSNN(**LSNN_EXAMPLES["lsnn"][1], store_v_seq=True).to(np.float64)
    neuron.smooth = True
    x = inputs(scale=3.0)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(x.shape), rng.standard_normal(x.shape)

    def loss(xx):
        s = neuron.forward(xx)
        return float(np.sum(s * a) + np.sum(neuron.v_seq * b))
    loss(x)
    grad = neuron.backward(a, grad_v=b).copy()
    assert check_directional(loss, x.copy(), grad, rng, elementwise=True) <= TOL


def test_the_recurrence_carries_the_spikes():
    """The feedback acts: zero recurrent weights give another output than the defaults, and the
    gradient of the recurrent weight is nonzero."""
    x = inputs((6, 3, 4), seed=4)
    neuron = RLeaky(beta=0.8, linear_features=4).to(np.float64)
    out = neuron.forward(x).copy()
    neuron.zero_grad()
    neuron.backward(np.ones_like(x))
    assert np.abs(neuron.grads["recurrent.weight"]).sum() > 0
    for name in ("recurrent.weight", "recurrent.bias"):
        neuron.params[name][...] = 0
    assert not np.array_equal(neuron.forward(x), out)


KLIF_CASES = [  # k away from its initial 1 so that the ReLU's scale matters; no detach_reset (finite
    # differences cannot see a detach; python -m verify compares those with SpikingJelly)
    (dict(), 1.3),
    (dict(scale_reset=True, tau=2.5, v_reset=None, surrogate="atan"), 0.8),
    (dict(scale_reset=True, decay_input=False, v_reset=-0.2, surrogate="fast_sigmoid", alpha=1.0), 1.2),
]


@pytest.mark.parametrize("options, k", KLIF_CASES, ids=["hard", "scale-soft", "scale-hard"])
def test_klif_gradcheck(options, k):
    neuron = KLIF(**options).to(np.float64)
    neuron.params["k"][...] = k
    report = gradcheck(neuron, inputs(), elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    assert set(report.errors) == {"input", "k"}
    check_state_gradient(neuron, inputs(seed=2))


# ---- float64 agreement with the frameworks' own modules -----------------------------------
@pytest.mark.parametrize("options", RLEAKY, ids=[str(i) for i in range(len(RLEAKY))])
def test_rleaky_agrees_with_snntorch(options):
    pytest.importorskip("snntorch")
    from verify.neurons_check import check_neuron
    rows = check_neuron(RLeaky(**options), "snntorch", inputs((6, 3, 4)))
    assert rows and all(r.passed for r in rows), rows
    assert {"grad_x", "grad_x[S+V]", *(f"grad_{k}" for k in RLeaky(**options).params)} <= {r.tensor for r in rows}


@pytest.mark.parametrize("options", LSNN_EXAMPLES["lsnn"][:2], ids=["0", "1"])
def test_lsnn_agrees_with_norse(options):
    pytest.importorskip("norse")
    from verify.neurons_check import check_neuron
    rows = check_neuron(LSNN(**options), "norse", inputs((6, 3, 4), scale=3.0))
    assert rows and all(r.passed for r in rows), rows


@pytest.mark.parametrize("options, k", KLIF_CASES + [(dict(v_reset=None, detach_reset=True), 0.9)],
                         ids=["hard", "scale-soft", "scale-hard", "soft-detached"])
def test_klif_agrees_with_spikingjelly(options, k):
    pytest.importorskip("spikingjelly")
    from verify.neurons_check import check_neuron
    neuron = KLIF(**options)
    neuron.params["k"][...] = k
    rows = check_neuron(neuron, "spikingjelly", inputs((6, 3, 4)))
    assert rows and all(r.passed for r in rows) and "grad_k" in {r.tensor for r in rows}, rows


def test_snntorch_float64_rleaky_gradients_are_float32_accurate():
    """The finding behind the float64 mirror's spike dtype (verify/frameworks.py rleaky_mirror): with its
    own surrogate, snnTorch's spikes are float32 in a float64 run, so autograd rounds the gradient the
    recurrence carries back to float32."""
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    x = inputs((6, 3, 4))
    neuron = RLeaky(beta=0.8, all_to_all=False, V=0.5).to(np.float64)
    proj = np.random.default_rng(5).standard_normal(x.shape)
    neuron.forward(x)
    mine = neuron.backward(proj)
    node = snntorch.RLeaky(beta=torch.tensor(0.8, dtype=torch.float64), all_to_all=False,
                           V=torch.tensor(0.5, dtype=torch.float64))
    xt = torch.tensor(x, requires_grad=True)
    spikes = torch.stack([node(xt[t])[0] for t in range(len(x))])
    assert spikes.dtype == torch.float32
    (spikes * torch.from_numpy(proj)).sum().backward()
    error = np.abs(xt.grad.numpy() - mine).max() / np.abs(mine).max()
    assert 1e-12 < error < 1e-5, error


# ---- bad options and inputs ---------------------------------------------------------------
@pytest.mark.parametrize("factory, match", [
    (lambda: RLeaky(beta=0.8), "linear_features"),
    (lambda: RLeaky(beta=0.8, linear_features=4, conv2d_channels=2, kernel_size=3), "convolutional"),
    (lambda: RLeaky(beta=0.8, all_to_all=False, linear_features=4), "V, not linear_features"),
    (lambda: RLeaky(beta=0.8, all_to_all=False, V=[[1.0]]), "V must be"),
    (lambda: RLeaky(beta=0.8, linear_features=4, reset_mechanism="hard"), "reset_mechanism"),
    (lambda: RLeaky(beta=float("nan"), linear_features=4), "beta"),
    (lambda: LSNN(tau_mem_inv=1000.0), "dt·tau_mem_inv"),
    (lambda: LSNN(dt=0.0), "dt"),
    (lambda: LSNN(surrogate="boxcar"), "boxcar"),
    (lambda: KLIF(tau=1.0), "tau"),
    (lambda: KLIF(scale_reset="yes"), "scale_reset"),
])
def test_bad_options(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_bad_feature_count():
    with pytest.raises(ValueError, match="last axis has 5 features, linear_features is 4"):
        RLeaky(beta=0.8, linear_features=4)(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="V has 4 values for 5 features"):
        RLeaky(beta=0.8, all_to_all=False, V=[1.0, 2.0, 3.0, 4.0])(np.zeros((2, 3, 5), np.float32))
