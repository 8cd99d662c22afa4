"""refsnn.analysis: per-step gradient norms against closed forms and against torch autograd."""
import math

import numpy as np
import pytest

from refsnn.analysis import record_input_grads, temporal_gradient_norms
from refsnn.models import build_network
from refsnn.module import Sequential
from refsnn.neurons import CLIF, LIF


def _sigmoid_grad(u, alpha=4.0):
    s = 1.0 / (1.0 + math.exp(-alpha * u))
    return alpha * s * (1.0 - s)


def _ce_grad_norm(n, k):
    """‖dL/dz‖ for CE of all-zero logits z [N, K] averaged over the batch: softmax is 1/K,
    each row is (1/K − onehot)/N, of norm sqrt((K−1)/K)/N."""
    return math.sqrt(n * (k - 1) / k) / n


# -- cases known by hand -----------------------------------------------------------------
# A network that is one neuron layer with K = 5 features read as logits, input X = 0. Nothing
# fires (H = 0 < V_th = 1), so the logits are 0, and the surrogate slope is c = g'(−1) at every
# step. Linearizing the forward equations at this point:
#   LIF (tau, hard reset at 0, H = 0 so the reset term vanishes):  dH[k] = r·dH[k−1] + dX[k]/tau,
#       r = 1 − 1/tau, and dS[k] = c·dH[k].
#   CLIF (soft reset, M = 0, σ(M) = 1/2):  dV[k] = dH[k] − (V_th + 1/2)·dS[k] = (1 − 1.5c)·dH[k],
#       dH[k] = r·dV[k−1] + dX[k] = a·dH[k−1] + dX[k],  a = r·(1 − 1.5c)  (M does not reach V while S = 0).
# So dL/dX[t] = Σ_{k≥t} dL/dS[k]·c·w·ρ^(k−t), with (w, ρ) = (1/tau, r) for LIF and (1, a) for CLIF,
# and ‖dL/dX[t]‖ = c·w·Σ_{k≥t} ρ^(k−t)·‖dL/dS[k]‖ because every dL/dS[k] is the same vector up to scale.
T, N, K = 5, 3, 5


def _by_hand(weight, rho, loss):
    c = _sigmoid_grad(-1.0)
    g = _ce_grad_norm(N, K)
    per_step = [g / T] * T if loss == "ce" else [0.0] * (T - 1) + [g]  # ‖dL/dS[k]‖
    return np.array([c * weight * sum(rho ** (k - t) * per_step[k] for k in range(t, T)) for t in range(T)])


@pytest.mark.parametrize("loss", ["ce", "last"])
def test_lif_by_hand(loss):
    tau = 3.0
    model = Sequential(LIF(tau=tau, surrogate="sigmoid"))
    norms = temporal_gradient_norms(model, np.zeros((T, N, K)), np.array([0, 3, 4]), loss=loss)
    expected = _by_hand(1.0 / tau, 1.0 - 1.0 / tau, loss)
    assert list(norms) == ["0", "total", "input"]
    for key in norms:
        np.testing.assert_allclose(norms[key], expected, rtol=1e-12)
    if loss == "ce":  # the closed form of the geometric sum: c·‖g‖/T·(1 − r^(T−t))
        np.testing.assert_allclose(expected, _sigmoid_grad(-1.0) * _ce_grad_norm(N, K) / T
                                   * (1 - (1 - 1 / tau) ** (T - np.arange(T))), rtol=1e-12)


@pytest.mark.parametrize("loss", ["ce", "last"])
def test_clif_by_hand(loss):
    tau = 2.0
    model = Sequential(CLIF(tau=tau, surrogate="sigmoid"))
    norms = temporal_gradient_norms(model, np.zeros((T, N, K)), np.array([1, 1, 2]), loss=loss)
    rho = (1.0 - 1.0 / tau) * (1.0 - 1.5 * _sigmoid_grad(-1.0))
    np.testing.assert_allclose(norms["0"], _by_hand(1.0, rho, loss), rtol=1e-12)


def test_total_combines_layers():
    model = build_network("mlp", (6,), 3, neuron="lif", hidden=(5, 4), seed=1).to(np.float64)
    x = np.random.default_rng(0).normal(1.0, 1.0, (4, 7, 6))
    norms = temporal_gradient_norms(model, x, np.arange(7) % 3)
    assert list(norms) == ["2", "4", "total", "input"]
    np.testing.assert_allclose(norms["total"], np.hypot(norms["2"], norms["4"]), rtol=1e-12)
    assert all(n.shape == (4,) for n in norms.values())


# -- against torch autograd on the SpikingJelly twin -------------------------------------
@pytest.mark.parametrize("neuron", ["lif", "plif", "clif"])
@pytest.mark.parametrize("loss", ["ce", "last"])
def test_against_torch_twin(neuron, loss):
    torch = pytest.importorskip("torch")
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from verify.networks import torch_twin

    model = build_network("cnn", (1, 8, 8), 4, neuron=neuron, seed=2).to(np.float64)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 2.0, (4, 6, 1, 8, 8))
    y = rng.integers(0, 4, 6)
    norms = temporal_gradient_norms(model, x, y, loss=loss)

    twin = torch_twin(model, np.float64)
    functional.reset_net(twin)
    inputs = {}
    neuron_names = [name for name in norms if name not in ("total", "input")]
    modules = dict(twin.named_modules())

    rates = {}

    def keep(name):
        def hook(module, args, output):
            args[0].retain_grad()
            inputs[name] = args[0]
            rates[name] = float(output.detach().mean())
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in neuron_names]
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = twin(x_t)
    logits = out.mean(0) if loss == "ce" else out[-1]
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
    for h in handles:
        h.remove()

    def step_norms(g):
        return g.reshape(g.shape[0], -1).norm(dim=1).numpy()

    for name in neuron_names:
        np.testing.assert_allclose(norms[name], step_norms(inputs[name].grad), rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(norms["input"], step_norms(x_t.grad), rtol=1e-10)
    assert all(0 < rate < 1 for rate in rates.values())  # the case exercises spiking, not only the surrogate
    assert norms["total"][0] > 0


# -- no side effects ---------------------------------------------------------------------
def test_model_left_untouched():
    model = build_network("cnn", (1, 8, 8), 4, neuron="clif", seed=0).eval()
    for _, _, g in model.named_parameters():
        g[...] = 0.25
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).uniform(0, 1, (3, 5, 1, 8, 8)).astype(np.float32)
    temporal_gradient_norms(model, x, np.arange(5) % 4)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # running statistics too
    assert all(np.all(g == 0.25) for _, _, g in model.named_parameters())
    assert not any(m.training for _, m in model.modules())


def test_recorder_restores_methods_even_on_error():
    model = build_network("mlp", (6,), 3, neuron="lif", hidden=(5,), seed=0)
    neuron = model.children["2"]
    with pytest.raises(RuntimeError, match="boom"):
        with record_input_grads(model) as recorded:
            assert "backward" in vars(neuron)
            raise RuntimeError("boom")
    assert "backward" not in vars(neuron) and recorded == {}


def test_errors():
    ann = build_network("mlp", (6,), 3, neuron="relu", hidden=(5,), seed=0)
    x, y = np.ones((1, 2, 6), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match="no neuron layer"):
        temporal_gradient_norms(ann, x, y)
    snn = build_network("mlp", (6,), 3, neuron="lif", hidden=(5,), seed=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        temporal_gradient_norms(snn, x, y, loss="mse")
    with pytest.raises(TypeError):
        temporal_gradient_norms(snn, x.astype(np.int64), y)


def test_a_trained_models_first_conv_still_gives_the_input_norms():
    # The trainer sets the first conv's needs_input_grad = False (models.skip_input_gradient): its
    # backward then returns no dL/dx, and the analysis of a trained network failed with an IndexError.
    from refsnn.models import skip_input_gradient

    x = np.repeat(np.random.default_rng(1).uniform(0, 1, (1, 5, 1, 8, 8)), 3, axis=0)  # direct encoding
    y = np.arange(5) % 4
    plain = build_network("cnn", (1, 8, 8), 4, neuron="lif", seed=0).to(np.float64)
    trained = build_network("cnn", (1, 8, 8), 4, neuron="lif", seed=0).to(np.float64)
    skip_input_gradient(trained)
    expected, got = temporal_gradient_norms(plain, x, y), temporal_gradient_norms(trained, x, y)
    assert got["input"].shape == (3,) and np.all(got["input"] > 0)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert not trained.children["0"].needs_input_grad  # the model itself is left as it was
