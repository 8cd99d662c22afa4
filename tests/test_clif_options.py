"""CLIF with the official code's options (HuuYuLong/Complementary-LIF): the hard reset (``v_reset``),
``decay_input`` and the authors' ``Rectangle`` surrogate (``rect_authors``), issue 16.

Tier 1: finite differences of the smooth forward against the backward, every option combination.
Tier 2: against ``verify.frameworks``' torch mirror of the authors' neuron (their equations in torch
autograd, framework ``CLIF-authors``), float32 and float64, and the surrogate's window edge
|H − V_th| = α/2 planted exactly. Plus the options' errors, TrainConfig and the CLI.
"""
import json

import numpy as np
import pytest

import refsnn
from refsnn.neurons import generic_kernels
from refsnn.train.config import ConfigError, TrainConfig
from verify.gradcheck import gradcheck

TOL = 1e-6  # docs/verification.md: relative error <= 1e-6 in float64 (tier 1)

OPTIONS = [  # (v_reset, decay_input, surrogate, alpha): each option alone and together
    (None, True, "sigmoid", None),
    (0.0, False, "sigmoid", None),
    (-0.3, False, "sigmoid", None),
    (-0.3, True, "sigmoid", None),
    (None, False, "rect_authors", 0.5),
    (0.0, True, "rect_authors", 2.0),
]


@pytest.fixture(autouse=True, scope="module")
def generic():
    """The generic builds, one compilation for every configuration (smooth mode takes them anyway)."""
    with generic_kernels():
        yield


def inputs(shape=(5, 3, 4), scale=1.5, seed=0, dtype=np.float64):
    """Spread around the threshold: neurons fire sometimes, every surrogate is active somewhere."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale + 0.5).astype(dtype)


def clif(v_reset, decay_input, surrogate, alpha, **kw):
    return refsnn.CLIF(tau=1.5, v_reset=v_reset, decay_input=decay_input, surrogate=surrogate, alpha=alpha, **kw)


# ---- tier 1 --------------------------------------------------------------------------------
@pytest.mark.parametrize("v_reset, decay_input, surrogate, alpha", OPTIONS)
def test_gradcheck(v_reset, decay_input, surrogate, alpha):
    neuron = clif(v_reset, decay_input, surrogate, alpha).to(np.float64)
    report = gradcheck(neuron, inputs(), elementwise=True)
    assert report.passed and set(report.errors) == {"input"}, f"{neuron!r}\n{report}"


def test_options_change_the_forward():
    """Each option does something (else the checks above and below would be vacuous): the same input
    gives other membranes with a hard reset (V[−1] = vr, the reset to vr) and with decay_input."""
    x = inputs()
    membranes = []
    for options in (dict(), dict(v_reset=0.0), dict(v_reset=-0.3), dict(decay_input=True)):
        neuron = refsnn.CLIF(store_v_seq=True, **options).to(np.float64)
        neuron.forward(x)
        membranes.append(neuron.v_seq.copy())
    for i in range(len(membranes)):
        for j in range(i):
            assert not np.allclose(membranes[i], membranes[j]), (i, j)


# ---- tier 2: the authors' neuron in torch ---------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    dict(),                                          # the default: their Rectangle(1) = rect(1) off the edge
    dict(surrogate="rect_authors", alpha=0.5),
    dict(surrogate="rect_authors", alpha=2.0),
    dict(v_reset=0.0),
    dict(tau=1.5, v_reset=-0.08, surrogate="sigmoid"),
    dict(decay_input=True),
    dict(tau=3.0, v_reset=-0.3, decay_input=True, surrogate="rect_authors", alpha=0.5),
], ids=["default", "rectA0.5", "rectA2", "hard0", "hard-0.08", "decay_input", "all"])
def test_agrees_with_the_authors_neuron(options, dtype):
    pytest.importorskip("torch")
    from verify.compare import format_table
    from verify.neurons_check import check_neuron
    for seed, scale in enumerate((1.5, 4.0)):
        rows = check_neuron(refsnn.CLIF(**options), "CLIF-authors", inputs((6, 4, 8), scale, seed, dtype), seed)
        assert rows and all(r.passed for r in rows), f"{options}\n{format_table(rows)}"
        assert {r.tensor for r in rows} == {"spikes", "membrane V", "grad_x", "grad_x[S+V]"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rect_authors_window_includes_its_edge(dtype):
    """T = 1, loss ΣS: dL/dx = g'(H − V_th). Planted H − V_th = ±α/2 exactly (α = 0.5: 1.25 and 0.75,
    exact in both dtypes) are inside the authors' window (g' = 1/α = 2, their mask |u| > α/2 leaves
    them); one ulp outside is 0. refsnn's rect(α = 2), of the same window, excludes the edge."""
    torch = pytest.importorskip("torch")
    from verify.frameworks import mirror
    x = np.array([[1.25, 0.75, np.nextafter(dtype(1.25), dtype(2)), np.nextafter(dtype(0.75), dtype(0)), 1.0]],
                 dtype)
    neuron = refsnn.CLIF(surrogate="rect_authors", alpha=0.5).to(dtype)
    neuron.forward(x)
    grad = neuron.backward(np.ones_like(x))
    np.testing.assert_array_equal(grad, np.array([[2, 2, 0, 0, 2]], dtype))
    xt = torch.tensor(x, requires_grad=True)
    mirror(neuron, "CLIF-authors", dtype).run(xt)[0].sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), grad)
    rect = refsnn.CLIF(surrogate="rect", alpha=2.0).to(dtype)
    rect.forward(x)
    np.testing.assert_array_equal(rect.backward(np.ones_like(x)), np.array([[0, 0, 0, 0, 2]], dtype))


def test_spikingjelly_has_no_equivalent_for_the_options():
    pytest.importorskip("spikingjelly")
    from verify.frameworks import NoEquivalent, mirror
    for options, reason in ((dict(v_reset=0.0), "soft reset"), (dict(decay_input=True), "no input decay"),
                            (dict(surrogate="rect_authors"), "rect_authors")):
        with pytest.raises(NoEquivalent, match=reason):
            mirror(refsnn.CLIF(**options), "spikingjelly", np.float64)
    with pytest.raises(NoEquivalent, match="no LIF"):
        mirror(refsnn.LIF(), "CLIF-authors", np.float64)


# ---- options: errors, TrainConfig, CLI ------------------------------------------------------
@pytest.mark.parametrize("options, match", [
    (dict(v_reset="0"), "v_reset .* must be a finite real number"),
    (dict(v_reset=float("nan")), "v_reset .* must be a finite real number"),
    (dict(decay_input="yes"), "decay_input must be True or False"),
    (dict(decay_input=1), "decay_input must be True or False"),
])
def test_bad_options_are_one_clear_error(options, match):
    with pytest.raises(ValueError, match=match):  # refsnn's OptionError: a ValueError and a TypeError
        refsnn.CLIF(**options)


def test_train_config_and_cli_take_the_options():
    options = {"v_reset": -0.08, "decay_input": True, "surrogate": "rect_authors", "alpha": 0.5}
    assert TrainConfig(neuron="clif", neuron_options=options).neuron_options == options
    with pytest.raises(ConfigError, match="decay_input"):
        TrainConfig(neuron="clif", neuron_options={"decay_input": "yes"})
    from refsnn.cli import build_parser
    args = build_parser().parse_args(["train", "--neuron", "clif", "--neuron-options", json.dumps(options)])
    assert args.neuron_options == options
