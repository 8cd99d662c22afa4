"""Tier 2, whole networks: refsnn against its SpikingJelly twin (verify.networks.compare_network).

Every network of refsnn.models at tiny width, with LIF, PLIF, IF and CLIF neurons (each with
different options), in float64: every layer's spikes, the logits, the cross-entropy loss, the
input gradient, every parameter gradient, the BatchNorm running statistics, and the losses
after 10 Adam steps, to 1e-10 relative. One float32 configuration (1e-5 relative), threshold
ties handled as docs/verification.md says (shown with a planted flip), and checks that the
comparison fails when refsnn's optimizer or a layer's backward is off by a tiny amount.
"""
import numpy as np
import pytest

from refsnn.models import NETWORKS, build_network
from refsnn.neurons import BaseNeuron

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")
import verify.networks as networks  # noqa: E402
from verify.compare import format_table  # noqa: E402
from verify.networks import compare_network  # noqa: E402

T, N, CLASSES = 4, 4, 3
SHAPES = {"mlp": ((2, 4, 4), {"hidden": (12,)}), "cnn": ((2, 8, 8), {"channels": (4, 8)}),
          "vgg11": ((3, 32, 32), {"width": 1 / 32}), "resnet18": ((3, 8, 8), {"width": 1 / 32}),
          "resnet19": ((3, 8, 8), {"width": 1 / 64}), "resnet20": ((3, 8, 8), {"width": 1 / 8})}
NEURONS = {"lif": {"v_threshold": 0.5, "surrogate": "atan"},                      # hard reset to 0
           "plif": {"v_threshold": 0.5, "v_reset": None, "decay_input": False, "detach_reset": True},
           "if": {"v_reset": None},                                               # soft reset
           "clif": {}}                                                            # rect surrogate
PRESENT = [name for name in SHAPES if name in NETWORKS]
STEPS, LR = 10, 1e-2


def setup(name, neuron, seed=0, neuron_options=None):
    in_shape, options = SHAPES[name]
    neuron_options = NEURONS[neuron] if neuron_options is None else neuron_options
    net = build_network(name, in_shape, CLASSES, neuron=neuron, neuron_options=neuron_options, seed=seed, **options)
    rng = np.random.default_rng(seed + 100)
    return net, rng.random((T, N) + in_shape) * 2, rng.integers(0, CLASSES, N)


def assert_all_compared_and_passed(rows, net):
    table = format_table(rows)
    tensors = [r.tensor for r in rows]
    expected = ({"logits", "loss", "grad_x", f"loss {STEPS} Adam steps"}
                | {name for name, _, _ in net.named_parameters()}
                | {name for name, b in net.named_buffers() if b.dtype.kind == "f"})
    assert expected <= set(tensors), table
    n_neurons = sum(isinstance(m, BaseNeuron) for _, m in net.modules())
    assert sum(t.endswith(" spikes") for t in tensors) == n_neurons, table
    assert not [r for r in rows if "not compared" in r.note], table
    assert all(r.passed for r in rows), table
    rates = [float(r.note.split()[1].rstrip(",")) for r in rows if r.tensor.endswith(" spikes")]
    assert max(rates) > 0.02 and min(rates) < 0.98, table  # spikes, resets and silences all happen


@pytest.mark.parametrize("neuron", sorted(NEURONS))
@pytest.mark.parametrize("name", PRESENT)
def test_float64_network_agrees_with_spikingjelly(name, neuron):
    net, x, y = setup(name, neuron)
    rows = compare_network(net, x, y, dtype=np.float64, steps=STEPS, lr=LR, component=f"{name}/{neuron}")
    assert_all_compared_and_passed(rows, net)


def test_float32_network_agrees_with_spikingjelly():
    """float32, 1e-5 relative; ties (H within the tolerance of V_th) are counted in the table.
    With these tiny shapes and this seed no spike flips, so everything is compared."""
    net, x, y = setup("cnn", "lif")
    rows = compare_network(net, x, y, dtype=np.float32, steps=STEPS, lr=LR, component="cnn/lif")
    print(format_table(rows))
    assert {r.dtype for r in rows} == {"float32"}
    assert_all_compared_and_passed(rows, net)
    logits = next(r for r in rows if r.tensor == "logits")
    assert 0 < logits.max_rel < 1e-5  # really float32 on both sides (not exact), within tolerance


def test_float32_ill_conditioned_gradient_is_judged_against_float64():
    """PLIF's w gradient is one scalar summed over every neuron and step, with heavy cancellation:
    here refsnn and SpikingJelly differ by 4.5e-5 relative in float32. The float64 run (torch's,
    from the same float32 weights) shows both are float32 rounding of it, refsnn's the smaller
    (1.9e-5 against 2.6e-5), so the row passes and says so (verify.networks._arbitrate)."""
    net, x, y = setup("cnn", "plif", seed=1, neuron_options={"surrogate": "atan"})
    rows = compare_network(net, x, y, dtype=np.float32, steps=STEPS, lr=LR)
    w = next(r for r in rows if r.tensor == "6.w")
    assert w.max_rel > 1e-5 and w.passed and "vs float64: refsnn" in w.note, format_table(rows)
    assert_all_compared_and_passed(rows, net)


def test_float32_error_beyond_rounding_fails(monkeypatch):
    """The float64 arbiter does not excuse a real float32 error: 1e-4 on one BatchNorm gradient."""
    perturb_batchnorm_weight_gradient(monkeypatch, 1e-4)
    net, x, y = setup("cnn", "lif")
    rows = compare_network(net, x, y, dtype=np.float32, steps=0)
    failed = [r for r in rows if not r.passed]
    assert {r.tensor for r in failed} == {"1.weight", "5.weight"}, format_table(rows)
    assert all("vs float64: refsnn 1.0e-04" in r.note for r in failed), format_table(rows)


# ------------------------------------------------------------------------------------------
# threshold ties: a flip at a tie is excluded and stops the comparison downstream; a flip
# anywhere else fails. The torch side's spikes are flipped by a forward hook on its neuron.
# ------------------------------------------------------------------------------------------
def tie_network():
    """Flatten → Linear (weights 0, bias 1) → IF (V_th = 1) → Linear: neuron 0 charges to
    H = 1.0 = V_th exactly at t = 0, a tie; the other neurons sit at H = 0.3 (away from ties)."""
    net = build_network("mlp", (4,), CLASSES, neuron="if", hidden=(5,))
    first = net.children["1"]
    first.params["weight"][...] = 0
    first.params["bias"][...] = [1.0, 0.3, 0.3, 0.3, 0.3]
    return net


def flip_twin_spike(monkeypatch, index):
    build = networks.torch_twin

    def twin_with_a_flip(module, dtype=None):
        twin = build(module, dtype)

        def flip(_, __, spikes):
            spikes = spikes.clone()
            spikes[index] = 1 - spikes[index]
            return spikes
        twin[2].register_forward_hook(flip)
        return twin
    monkeypatch.setattr(networks, "torch_twin", twin_with_a_flip)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_flip_at_a_tie_is_reported_and_stops_the_comparison(monkeypatch, dtype):
    flip_twin_spike(monkeypatch, (0, 1, 0))  # t = 0, sample 1, neuron 0: H = V_th
    x = np.random.default_rng(0).random((3, 2, 4))
    rows = compare_network(tie_network(), x, np.array([0, 1]), dtype=dtype, steps=3)
    print(format_table(rows))
    spikes = rows[0]
    assert spikes.tensor == "2 spikes" and spikes.passed and "1 flipped at ties" in spikes.note
    assert spikes.ties == 3 * 2  # neuron 0 of both samples at every step: its whole sequence
    rest = rows[1:]
    assert rest and all(r.passed and r.note.startswith("not compared: downstream of 1 spike(s) flipped")
                        for r in rest)


def test_a_flip_away_from_ties_fails(monkeypatch):
    flip_twin_spike(monkeypatch, (0, 1, 2))  # neuron 2: H = 0.3, far from V_th = 1
    x = np.random.default_rng(0).random((3, 2, 4))
    rows = compare_network(tie_network(), x, np.array([0, 1]), steps=0)
    spikes = rows[0]
    assert not spikes.passed and "1 differ away from ties, |H - V_th| = " in spikes.note
    assert not all(r.passed for r in rows[1:])  # the logits differ too, and are compared


# ------------------------------------------------------------------------------------------
# the comparison can fail: tiny errors on the refsnn side are caught
# ------------------------------------------------------------------------------------------
def test_an_adam_step_off_by_1e_8_fails(monkeypatch):
    from refsnn.optim import Adam
    step = Adam.step

    def slightly_off(self):
        self.lr *= 1 + 1e-8
        step(self)
        self.lr /= 1 + 1e-8
    monkeypatch.setattr(Adam, "step", slightly_off)
    net, x, y = setup("mlp", "lif")
    rows = compare_network(net, x, y, steps=STEPS, lr=LR)
    assert {r.tensor for r in rows if not r.passed} == {f"loss {STEPS} Adam steps"}, format_table(rows)


def perturb_batchnorm_weight_gradient(monkeypatch, relative):
    from refsnn.layers import BatchNorm2d
    backward = BatchNorm2d.backward

    def slightly_off(self, grad_out):
        before = self.grads["weight"].copy()
        grad_in = backward(self, grad_out)
        self.grads["weight"] += (self.grads["weight"] - before) * relative
        return grad_in
    monkeypatch.setattr(BatchNorm2d, "backward", slightly_off)


def test_a_batchnorm_weight_gradient_off_by_1e_8_fails(monkeypatch):
    perturb_batchnorm_weight_gradient(monkeypatch, 1e-8)
    net, x, y = setup("cnn", "clif")
    rows = compare_network(net, x, y, steps=0)
    assert {r.tensor for r in rows if not r.passed} == {"1.weight", "5.weight"}, format_table(rows)
