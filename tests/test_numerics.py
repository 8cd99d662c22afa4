"""Numbers: hyper-parameters of every kind a user passes, overflow (forward and backward, float32
and float64), the mixed-dtype rule, one backward per forward, and float32 accuracy of sums over
many elements (refsnn.module's docstring states the rules)."""
import numpy as np
import pytest

import refsnn
from refsnn import losses, optim
from refsnn.convert import if_response, search_scales
from refsnn.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, ClippedReLU, Conv2d, Dropout,
                           Flatten, Linear, MaxPool2d, ReLU)
from refsnn.models import resnet20
from refsnn.module import NonFiniteError
from refsnn.neurons import ConvertedNeuron


def rel_err(mine, exact):
    mine, exact = np.asarray(mine, np.float64), np.asarray(exact, np.float64)
    return float(np.max(np.abs(mine - exact)) / np.max(np.abs(exact)))


def one_param():
    return [("w", np.zeros(3, np.float32), np.zeros(3, np.float32))]


LOGITS = np.random.default_rng(0).standard_normal((2, 3, 4))
LABELS = np.array([0, 3, 1])

# (option as the error names it, a result of using the value, a valid value exact in float32)
REAL_OPTIONS = [
    ("tau", lambda v: repr(refsnn.LIF(tau=v)), 2.5),
    ("tau", lambda v: repr(refsnn.CLIF(tau=v)), 3.0),
    ("init_tau", lambda v: float(refsnn.PLIF(init_tau=v).params["w"]), 3.0),
    ("v_threshold", lambda v: repr(refsnn.IF(v_threshold=v)), 0.75),
    ("v_threshold", lambda v: repr(refsnn.SingleStep(v_threshold=v)), 0.5),
    ("v_reset", lambda v: repr(refsnn.LIF(v_reset=v)), -0.25),
    ("alpha", lambda v: repr(refsnn.LIF(alpha=v)), 3.0),
    ("beta", lambda v: repr(refsnn.CLIF(surrogate="s2nn", beta=v)), 2.0),
    ("threshold", lambda v: repr(ConvertedNeuron(threshold=v)), 0.5),
    ("lam", lambda v: repr(ConvertedNeuron(lam=v)), 0.75),
    ("amplitude", lambda v: repr(ConvertedNeuron(amplitude=v)), 1.5),
    ("threshold", lambda v: float(if_response(0.7, 4, v, 1.0)), 0.5),
    ("amplitude", lambda v: float(if_response(0.7, 4, 0.5, v)), 1.5),
    ("μ", lambda v: search_scales(np.linspace(-1, 3, 50), v, 2), 2.0),
    ("eps", lambda v: repr(BatchNorm1d(2, eps=v)), 0.125),
    ("momentum", lambda v: repr(BatchNorm2d(2, momentum=v)), 0.25),
    ("p", lambda v: repr(Dropout(v)), 0.25),
    ("init_threshold", lambda v: repr(ClippedReLU(v)), 6.0),
    ("width", lambda v: repr(resnet20((3, 8, 8), 10, width=v)), 0.25),
    ("label_smoothing", lambda v: losses.cross_entropy(LOGITS, LABELS, label_smoothing=v)[0], 0.125),
    ("lam", lambda v: losses.tet_loss(LOGITS, LABELS, lam=v)[0], 0.25),
    ("phi", lambda v: losses.tet_loss(LOGITS, LABELS, phi=v)[0], 2.0),
    ("lam", lambda v: losses.twin_loss(LOGITS, LOGITS[::-1], LABELS, lam=v)[0], 0.5),
    ("alpha", lambda v: losses.kd_loss(LOGITS, LOGITS[0], LABELS, alpha=v)[0], 0.5),
    ("temperature", lambda v: losses.kd_loss(LOGITS, LOGITS[0], LABELS, temperature=v)[0], 4.0),
    ("temperature", lambda v: losses.dml_loss(LOGITS, LOGITS[::-1], LABELS, temperature=v)[0], 2.0),
    ("lr", lambda v: repr(optim.SGD(one_param(), lr=v)), 0.5),
    ("momentum", lambda v: repr(optim.SGD(one_param(), lr=0.1, momentum=v)), 0.875),
    ("dampening", lambda v: repr(optim.SGD(one_param(), lr=0.1, momentum=0.9, dampening=v)), 0.125),
    ("weight_decay", lambda v: repr(optim.AdamW(one_param(), weight_decay=v)), 0.0625),
    ("betas[0]", lambda v: repr(optim.Adam(one_param(), betas=(v, 0.999))), 0.75),
    ("eps", lambda v: repr(optim.Adam(one_param(), eps=v)), 0.125),
    ("gamma", lambda v: optim.StepLR(optim.SGD(one_param(), lr=0.1), 2, gamma=v).state_dict()["gamma"], 0.5),
    ("eta_min", lambda v: optim.CosineAnnealingLR(optim.SGD(one_param(), lr=0.1), 5, eta_min=v)
     .state_dict()["eta_min"], 0.0625),
]
OPTION_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(REAL_OPTIONS)]


@pytest.mark.parametrize("name, use, value", REAL_OPTIONS, ids=OPTION_IDS)
def test_every_hyperparameter_accepts_any_real_scalar(name, use, value):
    """NumPy scalars and 0-d arrays are numbers: same result as the Python float."""
    expected = use(value)
    for kind in (np.float32, np.float64, np.array):
        assert use(kind(value)) == expected, kind
    if value == int(value):
        assert use(int(value)) == expected and use(np.int64(value)) == expected


@pytest.mark.parametrize("name, use, value", REAL_OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("bad", [True, np.bool_(False), 1 + 0j, "1", np.nan, np.float32(np.inf), -np.inf],
                         ids=["bool", "numpy-bool", "complex", "str", "nan", "inf32", "-inf"])
def test_every_hyperparameter_refuses_non_reals_naming_it(name, use, value, bad):
    with pytest.raises(ValueError, match=f"{name.replace('[', '.').replace(']', '.')}.* must be a finite real"):
        use(bad)


@pytest.mark.parametrize("build, name", [
    (lambda v: Linear(v, 3), "in_features"), (lambda v: Linear(3, v), "out_features"),
    (lambda v: Conv2d(v, 2, 3), "in_channels"), (lambda v: Conv2d(2, 2, v), "kernel_size"),
    (lambda v: Conv2d(2, 2, (3, v)), r"kernel_size\[1\]"), (lambda v: MaxPool2d(2, stride=v), "stride"),
    (lambda v: AdaptiveAvgPool2d(v), "output_size"), (lambda v: BatchNorm2d(v), "num_features"),
    (lambda v: float(if_response(0.7, v, 0.5, 1.0)), "T"),
    (lambda v: str(optim.StepLR(optim.SGD(one_param(), lr=0.1), v).state_dict()), "step_size"),
    (lambda v: str(optim.CosineAnnealingLR(optim.SGD(one_param(), lr=0.1), v).state_dict()), "T_max"),
])
def test_sizes_take_integers_of_any_kind_and_refuse_bools_and_floats(build, name):
    assert repr(build(np.int64(2))) == repr(build(2)) == repr(build(np.array(2)))
    for bad in (True, 2.0, "2"):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            build(bad)


@pytest.mark.parametrize("build, name", [
    (lambda v: refsnn.LIF(detach_reset=v), "detach_reset"), (lambda v: refsnn.PLIF(decay_input=v), "decay_input"),
    (lambda v: refsnn.CLIF(strict=v), "strict"), (lambda v: Linear(2, 3, bias=v), "bias"),
    (lambda v: BatchNorm1d(2, affine=v), "affine"), (lambda v: optim.Adam(one_param(), amsgrad=v), "amsgrad"),
    (lambda v: ConvertedNeuron(train_amplitude=v), "train_amplitude"),
])
def test_switches_take_true_or_false_only(build, name):
    assert repr(build(np.bool_(True))) == repr(build(True))
    for bad in (1, 0.0, "no", None):
        with pytest.raises(ValueError, match=f"{name} must be True or False"):
            build(bad)


# ---- overflow ----------------------------------------------------------------------------
NEURONS = {
    "lif": lambda: refsnn.LIF(), "lif-soft": lambda: refsnn.LIF(v_reset=None),
    "lif-atan": lambda: refsnn.LIF(surrogate="atan"), "plif": lambda: refsnn.PLIF(),
    "if": lambda: refsnn.IF(), "if-atan": lambda: refsnn.IF(surrogate="atan"),
    "if-soft": lambda: refsnn.IF(v_reset=None), "clif": lambda: refsnn.CLIF(),
    "converted": lambda: ConvertedNeuron(surrogate="sigmoid", detach_reset=False),
}


def huge_input_case(seed):
    """A float32 input holding ±3e38 among normal values, and upstream gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    x[1, 0, 0], x[2, 1, 1] = 3e38, -3e38
    return x, rng.normal(0, 3, x.shape).astype(np.float32)


def run(neuron, x, g):
    neuron.forward(x)
    if isinstance(neuron, ConvertedNeuron):
        return neuron.backward(g), dict(neuron.grads)
    return neuron.backward(g, grad_v=g), dict(neuron.grads)


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("seed", range(4))
def test_finite_float32_input_never_gives_a_silent_nan_gradient(kind, seed):
    """float32 H near 3e38 makes intermediate products overflow ((vr − H)·dL/dV, then × a
    surrogate gradient of 0: NaN). The gradient is finite in float64, and float32 must return
    it (rounded), or say that the gradient itself does not fit float32."""
    x, g = huge_input_case(seed)
    exact_x, exact_params = run(NEURONS[kind]().to(np.float64), x.astype(np.float64), g.astype(np.float64))
    try:
        grad_x, params = run(NEURONS[kind](), x, g)
    except NonFiniteError as e:
        assert "gradient overflowed float32" in str(e) and "input and the upstream gradients were finite" in str(e)
        too_big = [np.max(np.abs(exact_x))] + [abs(float(v)) for v in exact_params.values()]
        assert max(too_big) > float(np.finfo(np.float32).max)
        return
    assert grad_x.dtype == np.float32
    assert rel_err(grad_x, exact_x) <= 1e-5
    for name, value in params.items():
        assert np.isfinite(value) and abs(float(value) - float(exact_params[name])) <= 1e-5 * abs(float(exact_params[name])) + 1e-30


def test_float32_gradient_overflow_is_recovered_where_it_was_nan():
    """The smallest case seen: IF with hard reset, seed 0: NaN before, finite now."""
    x, g = huge_input_case(0)
    grad_x, _ = run(refsnn.IF(), x, g)
    assert np.all(np.isfinite(grad_x))


def test_gradient_too_large_for_float32_is_an_error_naming_it():
    x, g = huge_input_case(0)
    neuron = refsnn.PLIF(v_reset=None)
    neuron.forward(x)
    with pytest.raises(NonFiniteError, match="PLIF.backward: the gradient overflowed float32"):
        neuron.backward(g, grad_v=g)
    assert float(neuron.grads["w"]) == 0.0  # nothing half-accumulated


@pytest.mark.parametrize("make, dtype, value", [
    (lambda: refsnn.IF(v_reset=None), np.float32, 3e38), (lambda: refsnn.CLIF(), np.float32, 3e38),
    (lambda: refsnn.IF(v_reset=None), np.float64, 1.5e308), (lambda: ConvertedNeuron(), np.float32, 3e38),
])
def test_membrane_overflow_blames_the_membrane_not_the_input(make, dtype, value):
    neuron = make().to(dtype)
    name = type(neuron).__name__
    with pytest.raises(NonFiniteError, match=f"{name}: the membrane potential overflowed {np.dtype(dtype)} "
                                             "at step 1; the input was finite"):
        neuron.forward(np.full((3, 2, 2), value, dtype))


def test_nonfinite_input_and_upstream_gradient_are_named():
    x = np.ones((3, 2, 4))
    x[2, 1, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"input contains NaN/Inf \(first at \[t, n, ...\] = \[2, 1, 3\]\)"):
        refsnn.LIF().forward(x)
    neuron = refsnn.CLIF()
    neuron.forward(np.ones((3, 2, 4)))
    with pytest.raises(NonFiniteError, match="CLIF.backward: grad_out contains NaN/Inf"):
        neuron.backward(x)


def test_batchnorm_variance_overflow_is_an_error_not_an_inf_buffer():
    """Finite float32 inputs near 3e38 have a variance float32 cannot hold: an Inf running_var
    would make every eval-mode output 0. Refused, the buffers unchanged; likewise float64."""
    bn = BatchNorm1d(2)
    x = np.random.default_rng(0).uniform(-3e38, 3e38, (2, 4, 2)).astype(np.float32)
    before = {name: b.copy() for name, b in bn.named_buffers()}
    with pytest.raises(NonFiniteError, match="BatchNorm1d: the running variance overflowed float32 .*input was finite"):
        bn.forward(x)
    for name, b in bn.named_buffers():
        np.testing.assert_array_equal(b, before[name])
    with pytest.raises(NonFiniteError, match="the batch statistics overflowed float64"):
        BatchNorm1d(2).to(np.float64).forward(x.astype(np.float64) * 3e269)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 3e38), (np.float64, 1e300)])
def test_losses_finite_and_exact_for_huge_logits(dtype, scale):
    """Logits near the top of the dtype's range: every loss as torch computes it in float64."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    out = (scale * rng.uniform(-1, 1, (3, 4, 5))).astype(dtype)
    y = np.array([0, 4, 2, 1])
    z = torch.tensor(out.astype(np.float64), requires_grad=True)
    expected = F.cross_entropy(z.mean(0), torch.tensor(y), label_smoothing=0.1)
    expected.backward()
    loss, grad = losses.cross_entropy(out, y, label_smoothing=0.1)
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    assert abs(loss - expected.item()) <= 1e-12 * abs(expected.item())
    assert rel_err(grad, z.grad.numpy()) <= 1e-6
    teacher = (scale * rng.uniform(-1, 1, (4, 5))).astype(dtype)
    zt = torch.tensor(out.astype(np.float64), requires_grad=True)
    tau = 4.0
    kd = (0.1 * F.cross_entropy(zt.mean(0), torch.tensor(y)) + 0.9 * tau * tau * F.kl_div(
        F.log_softmax(zt.mean(0) / tau, 1), F.softmax(torch.tensor(teacher.astype(np.float64)) / tau, 1),
        reduction="batchmean"))
    kd.backward()
    loss, grad = losses.kd_loss(out, teacher, y)
    assert np.isfinite(loss) and abs(loss - kd.item()) <= 1e-12 * abs(kd.item())
    assert rel_err(grad, zt.grad.numpy()) <= 1e-6
    assert np.isfinite(losses.dml_loss(out, out[::-1].copy(), y)[0])
    if dtype == np.float32:  # squares of float32 logits fit float64 (of 1e300 they do not)
        for value in (losses.tet_loss(out, y)[0], losses.twin_loss(out, out[::-1].copy(), y)[0],
                      losses.mse_logits(out, out[::-1].copy())[0]):
            assert np.isfinite(value)


# ---- one dtype rule ----------------------------------------------------------------------
def layers_with_parameters():
    """(layer, input shape) for every layer that has floating parameters or buffers."""
    return [(Linear(4, 3), (2, 3, 4)), (Conv2d(2, 3, 3, padding=1), (2, 3, 2, 5, 5)), (BatchNorm1d(2), (2, 3, 2)),
            (BatchNorm2d(2), (2, 3, 2, 4, 4)), (ClippedReLU(), (2, 3, 4)), (refsnn.PLIF(), (2, 3, 4)),
            (ConvertedNeuron(), (2, 3, 4)), (ConvertedNeuron(train_amplitude=True), (2, 3, 4))]


@pytest.mark.parametrize("index", range(8), ids=lambda i: type(layers_with_parameters()[i][0]).__name__)
def test_mixed_dtypes_are_refused_naming_to(index):
    """PyTorch refuses a float64 input to float32 parameters; so does every refsnn layer (PLIF
    used to keep w, and w's gradient, in float32 and lose 2e-8 against float64)."""
    layer, shape = layers_with_parameters()[index]
    x = np.random.default_rng(0).uniform(0.5, 1.5, shape)
    with pytest.raises(TypeError, match=r"input is float64 but the (parameter|buffer) .* is float32; "
                                        r"convert the model with \.to\(np\.float64\)"):
        layer.forward(x)
    y = layer.to(np.float64).forward(x)
    assert y.dtype == np.float64
    layer.backward(np.ones_like(y))
    assert all(g.dtype == np.float64 for _, _, g in layer.named_parameters())
    with pytest.raises(TypeError, match=r"input is float32 .* is float64; .*\.astype\(np\.float64\)"):
        layer.forward(x.astype(np.float32))


@pytest.mark.parametrize("make", [refsnn.LIF, refsnn.IF, refsnn.CLIF, ReLU, Dropout, lambda: MaxPool2d(2)],
                         ids=["LIF", "IF", "CLIF", "ReLU", "Dropout", "MaxPool2d"])
def test_layers_without_parameters_run_in_the_input_dtype(make):
    layer = make()
    shape = (2, 3, 2, 4, 4)
    for dtype in (np.float32, np.float64):
        y = layer.forward(np.ones(shape, dtype))
        assert y.dtype == dtype and layer.backward(np.ones_like(y)).dtype == dtype


# ---- one backward per forward ------------------------------------------------------------
def every_layer():
    return [(Linear(4, 3), (2, 3, 4)), (Conv2d(2, 3, 3, padding=1), (2, 3, 2, 5, 5)), (AvgPool2d(2), (2, 3, 2, 4, 4)),
            (MaxPool2d(2), (2, 3, 2, 4, 4)), (AdaptiveAvgPool2d(1), (2, 3, 2, 4, 4)), (BatchNorm1d(2), (2, 3, 2)),
            (BatchNorm2d(2), (2, 3, 2, 4, 4)), (Dropout(0.5), (2, 3, 4)), (Flatten(), (2, 3, 2, 2)),
            (ReLU(), (2, 3, 4)), (ClippedReLU(0.5), (2, 3, 4)), (refsnn.LIF(), (2, 3, 4)), (refsnn.PLIF(), (2, 3, 4)),
            (refsnn.IF(), (2, 3, 4)), (refsnn.CLIF(), (2, 3, 4)), (refsnn.SingleStep(), (1, 3, 4)),
            (ConvertedNeuron(), (2, 3, 4)), (resnet20((2, 4, 4), 3, width=0.25), (2, 3, 2, 4, 4))]


@pytest.mark.parametrize("index", range(18), ids=lambda i: type(every_layer()[i][0]).__name__ + str(i))
def test_second_backward_for_one_forward_is_refused(index):
    """Every layer and neuron: backward consumes the forward (as PyTorch without retain_graph);
    a PLIF used to accumulate w's gradient twice."""
    layer, shape = every_layer()[index]
    x = np.random.default_rng(0).uniform(0.2, 1.8, shape).astype(np.float32)
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    grads = {name: g.copy() for name, _, g in layer.named_parameters()}
    with pytest.raises(ValueError, match="second time"):
        layer.backward(np.ones_like(y))
    for name, _, g in layer.named_parameters():
        np.testing.assert_array_equal(g, grads[name])
    layer.forward(x)  # a new forward allows a new backward
    layer.backward(np.ones_like(y))


# ---- float32 accuracy of sums over many elements -------------------------------------------
def large_mean_gradient(shape, seed=0):
    """Values near 1 (a large mean): a naive float32 running sum of 2^22 of them drifts by ~1e-4."""
    return (1.0 + 0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_linear_bias_gradient_float32_accurate_at_any_batch():
    layer = Linear(2, 3)
    x = np.ones((4, 2 ** 20, 2), np.float32)
    g = large_mean_gradient((4, 2 ** 20, 3))
    layer.forward(x)
    layer.backward(g)
    assert rel_err(layer.grads["bias"], g.reshape(-1, 3).sum(axis=0, dtype=np.float64)) <= 1e-6
    exact_weight = g.reshape(-1, 3).astype(np.float64).T @ x.reshape(-1, 2).astype(np.float64)
    assert rel_err(layer.grads["weight"], exact_weight) <= 1e-5  # BLAS sgemm, blocked


def test_conv_bias_clipped_relu_and_batchnorm_sums_float32_accurate():
    conv = Conv2d(1, 2, 1)
    x = np.ones((4, 256, 1, 64, 64), np.float32)
    g = large_mean_gradient((4, 256, 2, 64, 64))
    conv.forward(x)
    conv.backward(g)
    assert rel_err(conv.grads["bias"], g.sum(axis=(0, 1, 3, 4), dtype=np.float64)) <= 1e-6
    relu = ClippedReLU(0.5)
    g = large_mean_gradient((4, 2 ** 20))
    relu.forward(np.ones(g.shape, np.float32))
    relu.backward(g)
    assert rel_err(relu.grads["threshold"], g.sum(dtype=np.float64)) <= 1e-6
    bn = BatchNorm1d(2, momentum=1.0)
    x = 1000 + large_mean_gradient((4, 2 ** 19, 2))
    bn.forward(x)
    bn.backward(g.reshape(x.shape))
    assert rel_err(bn.buffers["running_mean"], x.mean(axis=(0, 1), dtype=np.float64)) <= 1e-6
    assert rel_err(bn.grads["bias"], g.reshape(x.shape).sum(axis=(0, 1), dtype=np.float64)) <= 1e-6


def test_loss_time_mean_float32_accurate_for_many_steps():
    """z = mean over T of float32 logits: a naive float32 sum over 4096 steps of values near 1000
    is off by 1e-5 relative, and the gradient by 1e-4."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    out = (1000 + rng.standard_normal((4096, 8, 16))).astype(np.float32)
    y = rng.integers(0, 16, 8)
    loss, grad = losses.cross_entropy(out, y)
    z = torch.tensor(out.astype(np.float64).mean(axis=0), requires_grad=True)
    expected = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    expected.backward()
    assert abs(loss - expected.item()) <= 1e-12 * expected.item()
    assert rel_err(grad[0] * out.shape[0], z.grad.numpy()) <= 1e-6
