"""Neuron layers reuse their large arrays between calls (refsnn.neurons.reusable_empty): an array is
handed out again only when nothing but the layer refers to it. These tests hold on to what a caller
may hold (outputs, views, the attributes h_seq/v_seq/state/grad_state, a torch tensor sharing the
memory) across further calls and check that none of it changes, and that a backward after a second
forward is the second forward's own."""
import inspect

import numpy as np
import pytest

import refsnn
from refsnn.neurons import ALL_NEURONS, EXAMPLES

SHAPE = (3, 4, 5, 6)


def first_example(name):
    """The neuron's first example (the registry), holding its membrane sequences too where it can."""
    def make():
        cls, options = ALL_NEURONS[name], dict(EXAMPLES[name][0])
        if "store_v_seq" in inspect.signature(cls).parameters:
            options["store_v_seq"] = True
        return cls(**options)
    return make


LAYERS = {name: first_example(name) for name in ALL_NEURONS}


def inputs(seed, dtype=np.float32, steps=SHAPE[0]):
    shape = (steps, *SHAPE[1:])
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(shape) + 0.6).astype(dtype), rng.standard_normal(shape).astype(dtype))


def fresh_run(make, x, g):
    """Outputs of a new layer's single forward + backward (copies: nothing reused)."""
    layer = make()
    s = layer.forward(x).copy()
    gx = layer.backward(g).copy()
    return s, gx


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_held_outputs_survive_later_calls(name):
    make = LAYERS[name]
    steps = make().max_steps or SHAPE[0]
    (x1, g1), (x2, g2), (x3, g3) = inputs(1, steps=steps), inputs(2, steps=steps), inputs(3, steps=steps)
    want1, want2 = fresh_run(make, x1, g1), fresh_run(make, x2, g2)
    layer = make()
    s1 = layer.forward(x1)
    view1 = s1[1:]  # a view keeps the memory alive just as well
    h1 = None if name == "converted" else layer.h_seq
    held1 = {k: v for k, v in vars(layer).items() if k in ("state", "v_seq", "m_seq") and v is not None}
    held1 = {k: (v, {kk: vv.copy() for kk, vv in v.items()} if isinstance(v, dict) else v.copy())
             for k, v in held1.items()}
    h1_copy = None if h1 is None else h1.copy()
    gx1 = layer.backward(g1)
    grad_state1 = getattr(layer, "grad_state", None)
    grad_state1_copy = None if grad_state1 is None else {k: v.copy() for k, v in grad_state1.items()}
    # two more forward/backward pairs while everything above is held
    s2 = layer.forward(x2)
    gx2 = layer.backward(g2)
    del s2, gx2
    for _ in range(2):
        layer.forward(x3)
        layer.backward(g3)
    np.testing.assert_array_equal(s1, want1[0])
    np.testing.assert_array_equal(view1, want1[0][1:])
    np.testing.assert_array_equal(gx1, want1[1])
    if h1 is not None:
        np.testing.assert_array_equal(h1, h1_copy)
    for k, (v, copy) in held1.items():
        if isinstance(v, dict):
            for kk in v:
                np.testing.assert_array_equal(v[kk], copy[kk])
        else:
            np.testing.assert_array_equal(v, copy)
    if grad_state1 is not None:
        for k in grad_state1:
            np.testing.assert_array_equal(grad_state1[k], grad_state1_copy[k])
    # the backward after a later forward is that forward's, also when arrays are being reused
    s2 = layer.forward(x2)
    np.testing.assert_array_equal(s2, want2[0])
    np.testing.assert_array_equal(layer.backward(g2), want2[1])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_arrays_are_reused_when_nobody_holds_them(name):
    """The reuse itself (else the speed-up is gone silently): with the outputs dropped, the next
    call writes into the same memory, and the results are still right."""
    make = LAYERS[name]
    steps = make().max_steps or SHAPE[0]
    (x1, g1), (x2, g2) = inputs(4, steps=steps), inputs(5, steps=steps)
    want2 = fresh_run(make, x2, g2)
    layer = make()
    address = layer.forward(x1).__array_interface__["data"][0]
    grad_address = layer.backward(g1).__array_interface__["data"][0]
    s2 = layer.forward(x2)
    gx2 = layer.backward(g2)
    assert s2.__array_interface__["data"][0] == address
    assert gx2.__array_interface__["data"][0] == grad_address
    np.testing.assert_array_equal(s2, want2[0])
    np.testing.assert_array_equal(gx2, want2[1])


def test_a_torch_tensor_on_the_output_keeps_it():
    torch = pytest.importorskip("torch")
    (x1, g1), (x2, g2) = inputs(6), inputs(7)
    layer = refsnn.LIF()
    t = torch.from_numpy(layer.forward(x1))
    want = t.clone()
    layer.backward(g1)
    for _ in range(3):
        layer.forward(x2)
        layer.backward(g2)
    assert torch.equal(t, want)


def test_state_passed_back_in_is_not_overwritten():
    """Chunked sequences: forward(x, state=layer.state) reads the previous final state while the
    new one is written."""
    (x1, _), (x2, _) = inputs(8), inputs(9)
    whole = refsnn.CLIF()
    want = whole.forward(np.concatenate([x1, x2])).copy()
    layer = refsnn.CLIF()
    first = layer.forward(x1).copy()
    second = layer.forward(x2, state=layer.state)
    np.testing.assert_array_equal(np.concatenate([first, second]), want)


def test_float64_and_float32_calls_alternate():
    (x1, g1) = inputs(10, np.float64)
    (x2, g2) = inputs(11, np.float32)
    want64, want32 = fresh_run(lambda: refsnn.LIF(), x1, g1), fresh_run(lambda: refsnn.LIF(), x2, g2)
    layer = refsnn.LIF()
    for _ in range(2):
        s64, gx64 = layer.forward(x1), layer.backward(g1)
        s32, gx32 = layer.forward(x2), layer.backward(g2)
        np.testing.assert_array_equal(s64, want64[0])
        np.testing.assert_array_equal(gx64, want64[1])
        np.testing.assert_array_equal(s32, want32[0])
        np.testing.assert_array_equal(gx32, want32[1])
