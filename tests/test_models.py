"""Whole networks: tier-1 gradient checks end to end (smooth mode, float64), names, energy."""
import inspect

import numpy as np
import pytest

from refsnn.energy import E_AC, E_MAC, ActivityMeter
from refsnn.models import build_network
from refsnn.neurons import EXAMPLES, NEURONS
from verify.gradcheck import gradcheck


@pytest.mark.parametrize("neuron", [name for name, cls in NEURONS.items() if cls.max_steps is None])  # T > 1
@pytest.mark.parametrize("network, in_shape", [("mlp", (1, 4, 4)), ("cnn", (1, 8, 8))])
def test_network_gradcheck(network, in_shape, neuron):
    opts = {"hidden": (12,)} if network == "mlp" else {"channels": (3, 4)}
    # snnTorch's neurons (leaky, synaptic) name the surrogate by snnTorch's name, spike_grad
    key = "spike_grad" if "spike_grad" in inspect.signature(NEURONS[neuron]).parameters else "surrogate"
    # on the neuron's first example (the defaults, {}, but RLeaky's required beta and LSNN's faster rates: at
    # norse's defaults its gradients are ~dt small, and central differences lose them to rounding)
    options = {**EXAMPLES[neuron][0], key: "sigmoid"}
    net = build_network(network, in_shape, 5, neuron=neuron, neuron_options=options, **opts)
    net.to(np.float64)
    x = np.random.default_rng(1).random((3, 4) + in_shape) * 2
    report = gradcheck(net, x)
    assert report.passed, str(report)
    # every learnable tensor was checked, input included
    assert set(report.errors) == {"input"} | {n for n, _, _ in net.named_parameters()}


def test_single_step_network_gradcheck():
    net = build_network("cnn", (1, 8, 8), 3, neuron="s2nn", channels=(2, 3)).to(np.float64)
    report = gradcheck(net, np.random.default_rng(2).random((1, 4, 1, 8, 8)) * 2)
    assert report.passed, str(report)


def test_pytorch_state_dict_names():
    net = build_network("cnn", (1, 28, 28), 10)
    assert [n for n, _, _ in net.named_parameters()] == [
        "0.weight", "1.weight", "1.bias", "4.weight", "5.weight", "5.bias", "9.weight", "9.bias"]
    assert "1.running_mean" in net.state_dict() and "5.num_batches_tracked" in net.state_dict()


def test_unknown_network():
    with pytest.raises(ValueError, match="unknown network"):
        build_network("transformer", (1, 8, 8), 10)


def test_energy_counts_by_hand():
    """A 2-layer MLP: analog input into layer 0 (MACs), spikes into layer 2 (accumulates)."""
    net = build_network("mlp", (1, 2, 2), 3, neuron="if", hidden=(5,))
    x = np.random.default_rng(0).random((2, 7, 1, 2, 2)).astype(np.float32)
    with ActivityMeter(net) as meter:
        net.forward(x)
    spikes = net[2].forward(net[1].forward(net[0].forward(x)))  # recompute the hidden spikes by hand
    rows = {r["layer"]: r for r in meter.rows()}
    assert rows["1"]["macs"] == 4 * 5 and not rows["1"]["spike_input"]
    assert rows["2"]["rate"] == pytest.approx(spikes.mean())
    assert rows["3"]["sops"] == pytest.approx(spikes.sum() / 7 * 3)  # spikes per sample × fan-out 3
    e = meter.energy()
    assert e["snn_joules"] == pytest.approx(20 * 2 * E_MAC + rows["3"]["sops"] * E_AC)
    assert e["dnn_joules"] == pytest.approx((20 + 15) * E_MAC)
    assert "forward" not in vars(net[1])  # the meter unhooks itself
