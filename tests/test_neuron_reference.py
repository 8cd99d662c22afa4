"""Each neuron's fast Numba kernels equal its plain NumPy reference pair (``*_forward_reference``,
``*_backward_reference`` in the neuron's file), in float64, for every example configuration of every
neuron (the registry: refsnn.neurons.EXAMPLES) and every option the kernels take on top of it:
smooth mode, the stored membrane, an upstream gradient on the membrane, a given initial state and
a gradient on the final state. Compared: the spikes, H, the stored sequences, the final state,
dL/dx, dL/dstate and every parameter gradient (PLIF's w, the converted neuron's threshold, lam and
amplitude).

Bit for bit where the two do the same operations in the same order. The tolerances below, each
with its reason, are where they do not.
"""
import zlib

import numpy as np
import pytest

from refsnn.neurons import examples, generic_kernels

# A parameter gradient is a sum over neurons and steps: the kernel adds per neuron over time, then
# per block, then over blocks; the reference adds per neuron over time, then np.sum (pairwise).
# Same terms, another order: relative to the sum of the terms' magnitudes, a few ulps.
SUM_ORDER = 1e-12
# CLIF's σ: the kernel's stable_sigmoid goes through surrogate.fast_exp, the reference through np.exp
# (<= 1 ulp apart), and the difference passes through the recurrence.
EXP = 1e-12


@pytest.fixture(autouse=True, scope="module")
def generic():
    """The generic builds: one compilation serves every configuration here, and
    tests/test_neurons.py::test_specialized_kernels_match_the_generic_ones proves the specialized
    builds bit-identical to them."""
    with generic_kernels():
        yield


def tolerance(label, tensor, smooth):
    if tensor.startswith("grads."):
        return SUM_ORDER
    if label.startswith("clif") and (tensor != "spikes" or smooth):  # smooth spikes are φ(u) of H
        return EXP
    return 0.0  # the same operations in the same order: bit for bit


def variants(make):
    """The example itself, then each option the kernels take on top of it."""
    neuron = make()
    has_membrane = hasattr(neuron, "v_reset") or "m" in neuron.state_names or neuron.membrane != "v"  # a membrane output and state
    yield "plain", {}, {}
    yield "smooth", {"smooth": True}, {}
    if has_membrane:
        yield "store_v", {"store_v_seq": True}, {}
        yield "grad_v+state", {"store_v_seq": True}, {"grad_v": True, "state": True}
        yield "smooth+grad_v+state", {"store_v_seq": True, "smooth": True}, {"grad_v": True, "state": True}


CASES = [(label, make, variant, attrs, extra) for label, make in examples()
         for variant, attrs, extra in variants(make)]


@pytest.mark.parametrize("label, make, variant, attrs, extra", CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_fast_kernels_equal_the_reference(label, make, variant, attrs, extra):
    neuron = make().to(np.float64)
    for name, value in attrs.items():
        setattr(neuron, name, value)
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    T = neuron.max_steps or 6
    # more than one block of neurons when BLOCK is small enough, else one; RLeaky's all-to-all feedback
    # acts on a last axis of its ``features``
    shape = (T, 3, 2, getattr(neuron, "features", None) or 200)
    x = rng.standard_normal(shape) * 1.5 + 0.5 * neuron.v_threshold
    grad_out = rng.standard_normal(shape)
    grad_v = rng.standard_normal(shape) if extra.get("grad_v") else None
    state = grad_state = None
    if extra.get("state"):
        state = {name: rng.standard_normal(shape[1:]) * 0.5 for name in neuron.state_names}
        grad_state = {name: rng.standard_normal(shape[1:]) for name in neuron.state_names}

    spikes = neuron.forward(x, state=state)
    fast = {"spikes": spikes.copy(), "h_seq": neuron.h_seq.copy(),
            **{f"state.{k}": v.copy() for k, v in neuron.state.items()}}
    if neuron.store_v_seq:
        fast.update({f"{k}_seq": getattr(neuron, f"{k}_seq").copy() for k in neuron.state_names})
    neuron.zero_grad()
    fast["grad_x"] = neuron.backward(grad_out, grad_v=grad_v, grad_state=grad_state).copy()
    fast.update({f"grad_state.{k}": v.copy() for k, v in neuron.grad_state.items()})
    fast.update({f"grads.{k}": np.array(g) for k, g in neuron.grads.items()})

    ref = neuron.reference(x, grad_out, state=state, grad_v=grad_v, grad_state=grad_state)
    want = {"spikes": ref["spikes"], "h_seq": ref["h_seq"], "grad_x": ref["grad_x"],
            **{f"state.{k}": v for k, v in ref["state"].items()},
            **{f"grad_state.{k}": v for k, v in ref["grad_state"].items()},
            **{f"grads.{k}": np.array(g) for k, g in ref["grads"].items()}}
    if neuron.store_v_seq:
        want.update({f"{k}_seq": ref[f"{k}_seq"] for k in neuron.state_names})

    assert set(fast) == set(want), (sorted(fast), sorted(want))
    assert 0 < fast["spikes"].mean() < 1 or neuron.smooth, "the example neither fires nor stays silent"
    for tensor in fast:
        a, b = np.asarray(fast[tensor], np.float64), np.asarray(want[tensor], np.float64)
        tol = tolerance(label, tensor, neuron.smooth)
        if tol == 0.0:
            np.testing.assert_array_equal(a, b, err_msg=f"{label} {variant}: {tensor}")
        else:
            scale = max(1.0, float(np.max(np.abs(b))))
            assert float(np.max(np.abs(a - b))) <= tol * scale, (label, variant, tensor, np.max(np.abs(a - b)))
