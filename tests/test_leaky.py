"""snnTorch's Leaky and Synaptic (refsnn/neurons/leaky.py, synaptic.py): tier-1 gradient checks
(smooth mode, float64, finite differences) over every reset mechanism, reset_delay and learned
parameter; sequences worked by hand from snnTorch's equations; agreement with snnTorch itself;
bad options. The fast kernels against the reference pair: tests/test_neuron_reference.py (driven
by the files' EXAMPLES)."""
import itertools

import numpy as np
import pytest

import refsnn
from refsnn.neurons import Leaky, Synaptic, generic_kernels
from refsnn.neurons.leaky import EXAMPLES as LEAKY_EXAMPLES
from refsnn.neurons.synaptic import EXAMPLES as SYNAPTIC_EXAMPLES
from refsnn.train.config import ConfigError, TrainConfig
from verify.gradcheck import gradcheck

TOL = 1e-6  # docs/verification.md: relative error <= 1e-6 in float64


@pytest.fixture(autouse=True, scope="module")
def generic():
    """One generic compilation serves every configuration here (smooth mode takes it anyway)."""
    with generic_kernels():
        yield


def inputs(shape=(6, 3, 2, 2), scale=1.5, seed=0):
    """Inputs spread around the threshold, so neurons fire, reset and stay silent."""
    return np.random.default_rng(seed).standard_normal(shape) * scale + 0.5


# ---- tier 1: the hand-written backward against finite differences ------------------------
# R is Θ of the previous membrane in smooth mode too (only S becomes φ), and R is detached: so the
# backward is the exact derivative of the smooth forward, with nothing frozen.
CASES = list(itertools.product(["leaky", "synaptic"], ["subtract", "zero", "none"], [True, False],
                               ["atan", "sigmoid", "fast_sigmoid"]))


@pytest.mark.parametrize("kind, reset, delay, surrogate", CASES)
def test_gradcheck(kind, reset, delay, surrogate):
    learned = dict(learn_beta=True, learn_threshold=True, reset_mechanism=reset, reset_delay=delay, spike_grad=surrogate)
    if kind == "leaky":
        neuron, params = Leaky(beta=0.8, threshold=0.9, **learned), {"beta", "threshold"}
    else:
        neuron, params = Synaptic(alpha=0.6, beta=0.8, threshold=0.9, learn_alpha=True, **learned), \
            {"alpha", "beta", "threshold"}
    report = gradcheck(neuron.to(np.float64), inputs(), elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    assert set(report.errors) == {"input", *params}


@pytest.mark.parametrize("cls", [Leaky, Synaptic])
def test_gradcheck_per_neuron_parameters_and_the_clamp(cls):
    """Arrays per neuron, broadcast over [2, 2] features; β = 1.3 and α = −0.2 lie outside [0, 1],
    where snnTorch's clamp holds them (and passes no gradient: finite differences see 0 too)."""
    extra = dict(alpha=np.array([[-0.2], [0.7]]), learn_alpha=True) if cls is Synaptic else {}
    neuron = cls(beta=np.array([0.6, 1.3]), threshold=np.array([[0.8], [1.1]]), learn_beta=True,
                 learn_threshold=True, reset_delay=False, **extra).to(np.float64)
    report = gradcheck(neuron, inputs(), elementwise=True)
    assert report.passed, f"{neuron!r}\n{report}"
    assert neuron.grads["beta"].shape == (2,)
    neuron.smooth = False
    neuron.forward(inputs())
    neuron.zero_grad()
    neuron.backward(np.ones((6, 3, 2, 2)))
    assert neuron.grads["beta"][1] == 0 and neuron.grads["beta"][0] != 0
    if cls is Synaptic:
        assert neuron.grads["alpha"][0, 0] == 0 and neuron.grads["alpha"][1, 0] != 0


# ---- sequences worked by hand from snnTorch 1.0's source ---------------------------------
def run(neuron, x):
    neuron.store_v_seq = True
    spikes = neuron.to(np.float64).forward(np.array(x, np.float64).reshape(-1, 1, 1))
    return spikes.ravel().tolist(), neuron.mem_seq.ravel().tolist()


def test_subtract_after_the_leak():
    """U = βU + X − R·thr: 0.5·1.5 + 0 − 1 = −0.25, then 0.5·(−0.25) (refsnn's LIF would give 0.25)."""
    assert run(Leaky(beta=0.5), [1.5, 0.0, 0.0]) == ([1.0, 0.0, 0.0], [1.5, -0.25, -0.125])


def test_zero_reset_and_no_reset():
    assert run(Leaky(beta=0.5, reset_mechanism="zero"), [1.5, 0.25, 0.0]) == ([1.0, 0.0, 0.0], [1.5, 0.25, 0.125])
    assert run(Leaky(beta=0.5, reset_mechanism="none"), [1.5, 0.5, 0.0]) == ([1.0, 1.0, 0.0], [1.5, 1.25, 0.625])


def test_reset_delay_false_resets_in_the_step_that_fires():
    """U = H − (S − R)·thr: 1.5 − 1 = 0.5, then 0.25, 0.125 (the membrane returned is post-reset)."""
    assert run(Leaky(beta=0.5, reset_delay=False), [1.5, 0.0, 0.0]) == ([1.0, 0.0, 0.0], [0.5, 0.25, 0.125])
    assert run(Leaky(beta=0.5, reset_delay=False, reset_mechanism="zero"), [1.5, 0.25]) == ([1.0, 0.0], [0.0, 0.25])


def test_synaptic_current_and_its_zero_reset():
    """I = αI + X, U = βU + I; snnTorch's zero reset zeroes the whole new membrane, input included:
    I = 0.5·1.5 + 1 = 1.75, A = 0.5·1.5 + 1.75 = 2.5, U = A − A·R = 0."""
    n = Synaptic(alpha=0.5, beta=0.5)
    assert run(n, [1.5, 0.0]) == ([1.0, 0.0], [1.5, 0.75 + 0.75 - 1.0])
    assert n.state["syn"].item() == 0.75
    assert run(Synaptic(alpha=0.5, beta=0.5, reset_mechanism="zero"), [1.5, 1.0]) == ([1.0, 0.0], [1.5, 0.0])


@pytest.mark.parametrize("make", [lambda: Leaky(beta=0.7, reset_delay=False, learn_beta=True),
                                  lambda: Synaptic(reset_mechanism="zero", learn_alpha=True)])
def test_chunks_continue_the_sequence(make):
    """Two chunks with the state carried (and its gradient handed back) equal one sequence."""
    x, g = inputs(), np.random.default_rng(1).standard_normal((6, 3, 2, 2))
    whole = make().to(np.float64)
    s, gx = whole.forward(x), whole.backward(g)
    first, second = make().to(np.float64), make().to(np.float64)
    s1 = first.forward(x[:2])
    s2 = second.forward(x[2:], state=first.state)
    gx2 = second.backward(g[2:])
    gx1 = first.backward(g[:2], grad_state=second.grad_state)
    np.testing.assert_array_equal(np.concatenate([s1, s2]), s)
    np.testing.assert_allclose(np.concatenate([gx1, gx2]), gx, rtol=1e-13, atol=1e-15)
    for name in first.grads:  # in float64, summed in another order
        np.testing.assert_allclose(first.grads[name] + second.grads[name], whole.grads[name], rtol=1e-12)


# ---- snnTorch itself ---------------------------------------------------------------------
@pytest.mark.parametrize("cls, options", [(Leaky, o) for o in LEAKY_EXAMPLES["leaky"]]
                         + [(Synaptic, o) for o in SYNAPTIC_EXAMPLES["synaptic"]])
def test_agrees_with_snntorch(cls, options):
    """Spikes, mem and every gradient (x, β, α, threshold) equal snnTorch 1.0's autograd in float64
    to 1e-10 (verify/compare.py; with reset_delay=False the mirror's spike is float64, see
    verify/frameworks.leaky_mirror)."""
    pytest.importorskip("snntorch")
    from verify.neurons_check import check_neuron
    neuron = cls(**options)
    x = np.random.default_rng(3).standard_normal((6, 4, 2, 8)) * 1.5 + 0.5
    rows = check_neuron(neuron, "snntorch", x, seed=3)
    assert all(r.passed for r in rows), "\n".join(map(str, rows))
    expected = {"spikes", "membrane V", "grad_x", "grad_x[S+V]"} | {f"grad_{p}{s}" for p in neuron.params
                                                                      for s in ("", "[S+V]")}
    assert {r.tensor for r in rows} == expected


# ---- the registry and bad options --------------------------------------------------------
def test_train_config_builds_them_by_name():
    TrainConfig(network="mlp", neuron="leaky", neuron_options={"beta": 0.8, "reset_mechanism": "zero"})
    TrainConfig(network="mlp", neuron="synaptic", neuron_options={"alpha": 0.5, "learn_beta": True})
    with pytest.raises(ConfigError, match="unknown option 'tau' for neuron leaky"):
        TrainConfig(network="mlp", neuron="leaky", neuron_options={"tau": 2.0})
    with pytest.raises(ConfigError, match="reset_mechanism"):
        TrainConfig(network="mlp", neuron="leaky", neuron_options={"reset_mechanism": "soft"})


@pytest.mark.parametrize("make, err, match", [
    (lambda: Leaky(reset_mechanism="soft"), ValueError, "reset_mechanism"),
    (lambda: Leaky(spike_grad="boxcar"), ValueError, "boxcar"),
    (lambda: Leaky(spike_grad="nope"), ValueError, "unknown surrogate"),
    (lambda: Leaky(beta=float("nan")), ValueError, "beta must be finite"),
    (lambda: Leaky(beta="0.9"), TypeError, "beta must be a real number"),
    (lambda: Synaptic(alpha=[]), ValueError, "alpha is empty"),
    (lambda: Leaky(threshold=None), TypeError, "threshold must be a real number"),
    (lambda: Leaky(learn_beta="yes"), (TypeError, ValueError), "learn_beta"),
])
def test_bad_options(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta has shape \\(3,\\), which does not broadcast"):
        Leaky(beta=[0.5, 0.6, 0.7]).to(np.float64).forward(np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="input contains NaN"):
        Leaky().to(np.float64).forward(np.full((2, 1, 4), np.nan))
    with pytest.raises(ValueError, match="overflowed"):
        Synaptic(alpha=1.0, beta=1.0, reset_mechanism="none").to(np.float64).forward(np.full((3, 1, 1), 1e308))
    with pytest.raises(TypeError, match="float64"):  # parameters float32 until .to(np.float64)
        Synaptic().forward(np.zeros((2, 1, 4)))
    n = Synaptic().to(np.float64)
    with pytest.raises(ValueError, match="keys"):
        n.forward(np.zeros((2, 1, 4)), state={"mem": np.zeros((1, 4))})
    assert "leaky" in refsnn.neurons.NEURONS and "synaptic" in refsnn.neurons.NEURONS


def test_the_membrane_output_and_the_plot_take_the_membrane():
    """MembraneOutput returned Synaptic's first state sequence, its current I (syn_seq), as the
    membrane; refsnn.plot read v_seq, which snnTorch's neurons do not have (mem_seq)."""
    from refsnn.layers import Linear
    from refsnn.module import Sequential
    from refsnn.models import MembraneOutput
    x = inputs()
    out = MembraneOutput(Synaptic(store_v_seq=True).to(np.float64))
    np.testing.assert_array_equal(out.forward(x), out.children["neuron"].mem_seq)
    assert not np.array_equal(out.forward(x), out.children["neuron"].syn_seq)
    pytest.importorskip("matplotlib")
    from refsnn import plot
    model = Sequential(Linear(2, 2, rng=np.random.default_rng(0)), Leaky(threshold=[0.5, 1.0])).to(np.float64)
    fig = plot.neuron_layer(model, x, "1")
    assert len(fig.axes) == 2


def test_snntorch_float64_immediate_reset_gradient_is_float32_accurate():
    """Why the float64 mirror of reset_delay=False takes snnTorch's surrogate with a float64 spike
    (verify/frameworks.leaky_mirror): snnTorch's own float64 Leaky returns float32 spikes, so autograd
    rounds the gradient its immediate reset sends to them, dL/dS = A − dL/dU·thr, to float32."""
    snntorch = pytest.importorskip("snntorch")
    import torch
    neuron = Leaky(beta=0.9, reset_delay=False).to(np.float64)
    x = inputs((6, 4, 8))
    a = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32).astype(np.float64)
    node = snntorch.Leaky(beta=torch.tensor(float(np.float32(0.9)), dtype=torch.float64),
                          threshold=torch.tensor([1.0], dtype=torch.float64), reset_delay=False)
    xt = torch.tensor(x, requires_grad=True)
    spikes = torch.stack([node(xt[t])[0] for t in range(len(x))])
    (spikes * torch.from_numpy(a)).sum().backward()
    np.testing.assert_array_equal(spikes.detach().numpy(), neuron.forward(x))
    error = np.abs(neuron.backward(a) - xt.grad.numpy()).max() / np.abs(xt.grad.numpy()).max()
    assert 1e-10 < error < 1e-6, error  # float32 rounding, not a different derivative
