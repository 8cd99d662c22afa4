"""Layers: tier-1 gradient checks (float64 finite differences), tier-2 agreement with torch
autograd (forward, every gradient, running statistics, state-dict names), and bad-input errors.

Relative error of a tensor = max|mine - theirs| / max|theirs| (normwise, so that elements near
zero do not dominate). Tolerances from docs/verification.md: 1e-10 in float64, 1e-5 in float32.
"""
import numpy as np
import pytest

from refsnn.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, ClippedReLU, Conv2d,
                           Dropout, Flatten, Linear, MaxPool2d, ReLU)
from refsnn.layers.conv import NCHW_MAX_CHANNELS
from verify.gradcheck import gradcheck

GRADCHECK_TOL = 1e-6
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def rel_err(mine, theirs):
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert mine.shape == theirs.shape, f"shape {mine.shape} vs {theirs.shape}"
    return float(np.max(np.abs(mine - theirs), initial=0.0) / max(np.max(np.abs(theirs), initial=0.0), 1e-300))


def normal(shape, seed=0, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


# ------------------------------------------------------------------------------------------
# tier 1: finite differences
# ------------------------------------------------------------------------------------------
def check_gradients(layer, x, elementwise=True):
    layer.to(np.float64)
    # seed != the inputs' seed: with the same generator the projection R would be an affine
    # function of x, which makes BatchNorm's input gradient vanish (an ill-conditioned check)
    report = gradcheck(layer, x, elementwise=elementwise, tolerance=GRADCHECK_TOL, seed=99)
    assert report.passed, f"{layer!r}\n{report}"
    assert set(report.errors) == {"input", *layer.params}, report.errors


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 2, 3, 5)])
def test_gradcheck_linear(bias, shape):
    check_gradients(Linear(5, 4, bias=bias), normal(shape))


CONV_CASES = [  # (in, out, kernel, stride, padding, bias, groups)
    (2, 3, 3, 1, 0, True, 1),
    (2, 3, 3, 1, 1, False, 1),
    (2, 3, 3, 2, 1, True, 1),
    (2, 4, (2, 3), (2, 1), (1, 0), True, 1),
    (4, 6, 3, 2, 1, True, 2),
    (3, 2, 1, 1, 0, True, 1),
    (2, 2, 5, 3, 2, False, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_gradcheck_conv2d(case):
    cin, cout, k, s, p, bias, groups = case
    layer = Conv2d(cin, cout, k, stride=s, padding=p, bias=bias, groups=groups)
    check_gradients(layer, normal((2, 2, cin, 6, 7)), elementwise=False)


POOL_CASES = [  # (kernel, stride, padding)
    (2, None, 0),
    (3, 2, 1),
    (3, 1, 1),
    ((2, 3), (1, 2), (1, 1)),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("pool", [AvgPool2d, MaxPool2d])
def test_gradcheck_pools(pool, case):
    # continuous random input: no two values tie, so max pooling is differentiable here
    check_gradients(pool(*case), normal((2, 1, 2, 6, 5)))


@pytest.mark.parametrize("output_size", [1, 3, (2, None), (4, 5)])
def test_gradcheck_adaptive_avg_pool(output_size):
    check_gradients(AdaptiveAvgPool2d(output_size), normal((2, 1, 2, 7, 3)))


def _trained_bn(bn_class, shape, per_step, affine, momentum=0.1):
    """A BatchNorm with non-trivial affine parameters and running statistics."""
    bn = bn_class(shape[2], affine=affine, per_step=per_step, momentum=momentum).to(np.float64)
    if affine:
        bn.params["weight"][...] = normal(shape[2], seed=5, scale=0.5, shift=1.0)
        bn.params["bias"][...] = normal(shape[2], seed=6)
    bn.forward(normal(shape, seed=7, scale=2.0, shift=0.5))
    return bn


BN_CASES = [(BatchNorm1d, (3, 4, 3)), (BatchNorm1d, (2, 3, 3, 4)), (BatchNorm2d, (2, 3, 3, 4, 3))]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("bn_class, shape", BN_CASES)
def test_gradcheck_batchnorm(bn_class, shape, per_step, affine, training):
    bn = _trained_bn(bn_class, shape, per_step, affine)
    bn.train(training)
    check_gradients(bn, normal(shape, scale=1.5, shift=-0.3))


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_dropout(training):
    layer = Dropout(0.4, rng=np.random.default_rng(3)).train(training)
    check_gradients(layer, normal((3, 4, 2, 3)))


def test_gradcheck_flatten_relu():
    check_gradients(Flatten(), normal((2, 3, 2, 2, 3)))
    check_gradients(ReLU(), normal((2, 3, 4)))


def clipped_relu_input(shape, mu, seed=0):
    """Values spread over (-1, 2μ) but at least 0.05 from the kinks at 0 and μ."""
    x = np.random.default_rng(seed).uniform(-1.0, 2.0 * mu, size=shape)
    for kink in (0.0, mu):
        near = np.abs(x - kink) < 0.05
        x[near] = kink + np.where(x[near] >= kink, 0.1, -0.1)
    return x


def test_gradcheck_clipped_relu():
    layer = ClippedReLU(init_threshold=1.5)
    x = clipped_relu_input((3, 4, 5), 1.5)
    assert np.any(x > 1.5) and np.any((x > 0) & (x < 1.5)) and np.any(x < 0)
    check_gradients(layer, x)


def test_clipped_relu_kinks():
    """At the kinks, by the stated rule: dy/dμ = 1{x > μ}, dy/dx = 1{0 < x <= μ}."""
    layer = ClippedReLU(init_threshold=1.5).to(np.float64)
    x = np.array([-1.0, 0.0, 0.5, 1.5, 2.0, 3.0]).reshape(1, 1, 6)
    assert np.array_equal(layer.forward(x), np.array([[[0.0, 0.0, 0.5, 1.5, 1.5, 1.5]]]))
    g = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]).reshape(1, 1, 6)
    assert np.array_equal(layer.backward(g), np.array([[[0.0, 0.0, 4.0, 8.0, 0.0, 0.0]]]))
    assert layer.grads["threshold"] == 48.0


# ------------------------------------------------------------------------------------------
# tier 2: torch autograd
# ------------------------------------------------------------------------------------------
def torch_folded(module, x):
    """torch twin of a stateless layer: fold [T, N, ...] into [T*N, ...] and back."""
    T, N = x.shape[:2]
    y = module(x.reshape((T * N,) + tuple(x.shape[2:])))
    return y.reshape((T, N) + tuple(y.shape[1:]))


def torch_per_step(module, x):
    """torch twin of per_step BatchNorm: the module called once per time step."""
    torch = pytest.importorskip("torch")
    return torch.stack([module(x[t]) for t in range(x.shape[0])])


def compare_with_torch(ours, theirs, x_shape, dtype, modes=(True,), torch_forward=torch_folded,
                       make_input=normal, seed=0):
    """Run ``ours`` and its torch twin on the same inputs and weights and compare, after every
    forward (one per entry of ``modes``: True = train, False = eval), the output, the input
    gradient, every parameter gradient (accumulated over the forwards on both sides) and every
    buffer. Also checks that the state dicts have the same names and shapes."""
    torch = pytest.importorskip("torch")
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    tol = TOL[dtype]
    ours.to(dtype)
    theirs.to(tdtype)
    mine_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(mine_state) == list(their_state), "state-dict names differ"
    for name, value in their_state.items():
        assert mine_state[name].shape == tuple(value.shape), name
        assert (mine_state[name].dtype == np.int64) == (value.dtype == torch.int64), name
    theirs.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in mine_state.items()})

    their_params = dict(theirs.named_parameters())
    for step, training in enumerate(modes):
        ours.train(training)
        theirs.train(training)
        x = make_input(x_shape, seed=seed + step).astype(dtype)
        grad_out_seed = seed + 100 + step
        x_t = torch.tensor(x, requires_grad=True)
        y_t = torch_forward(theirs, x_t)
        y = ours.forward(x.copy())
        assert y.dtype == dtype
        errors = {"output": rel_err(y, y_t.detach().numpy())}
        grad_out = normal(y.shape, seed=grad_out_seed).astype(dtype)
        y_t.backward(torch.from_numpy(grad_out))
        errors["grad input"] = rel_err(ours.backward(grad_out.copy()), x_t.grad.numpy())
        for name, _, grad in ours.named_parameters():
            errors[f"grad {name}"] = rel_err(grad, their_params[name].grad.numpy())
        for name, buffer in ours.named_buffers():
            errors[name] = rel_err(buffer, theirs.get_buffer(name).numpy())
        bad = {k: v for k, v in errors.items() if not v <= tol}
        assert not bad, f"{ours!r}, forward {step} (training={training}), {np.dtype(dtype).name}: {bad}"


DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 2, 3, 5)])
def test_torch_linear(shape, bias, dtype):
    torch = pytest.importorskip("torch")
    compare_with_torch(Linear(5, 4, bias=bias), torch.nn.Linear(5, 4, bias=bias), shape, dtype, modes=(True, True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_torch_conv2d(case, dtype):
    torch = pytest.importorskip("torch")
    cin, cout, k, s, p, bias, groups = case
    compare_with_torch(Conv2d(cin, cout, k, stride=s, padding=p, bias=bias, groups=groups),
                       torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias, groups=groups),
                       (2, 3, cin, 9, 8), dtype, modes=(True, True))


def test_torch_conv2d_larger():
    """Channels and batch big enough for the parallel kernels and BLAS blocking to matter."""
    torch = pytest.importorskip("torch")
    compare_with_torch(Conv2d(16, 24, 3, padding=1), torch.nn.Conv2d(16, 24, 3, padding=1),
                       (2, 8, 16, 12, 12), np.float32)


def tied_input(shape, seed=0):
    """Small integers: most pooling windows hold several equal maxima."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES + [(3, 2, 0), (1, 1, 0), (3, None, 0), ((2, 3), None, 0)])
@pytest.mark.parametrize("pool", ["AvgPool2d", "MaxPool2d"])
def test_torch_pools(pool, case, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs = globals()[pool](*case), getattr(torch.nn, pool)(*case)
    compare_with_torch(ours, theirs, (2, 3, 2, 7, 6), dtype)


@pytest.mark.parametrize("case", POOL_CASES + [(3, 2, 0)])
def test_torch_max_pool_ties(case):
    """Ties: the gradient goes to the first maximum of each window, as in torch's CPU kernel."""
    torch = pytest.importorskip("torch")
    compare_with_torch(MaxPool2d(*case), torch.nn.MaxPool2d(*case), (2, 3, 2, 7, 6), np.float64,
                       make_input=tied_input)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [1, 3, (2, None), (4, 5), (7, 6)])
def test_torch_adaptive_avg_pool(output_size, dtype):
    torch = pytest.importorskip("torch")
    compare_with_torch(AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
                       (2, 3, 2, 7, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_hw, output_size", [((1, 1), (7, 7)), ((2, 3), (7, 7)), ((2, 3), (4, 6)), ((3, 2), (3, 5))])
def test_torch_adaptive_avg_pool_upsampling(in_hw, output_size, dtype):
    """More outputs than inputs (VGG-11's AdaptiveAvgPool2d((7, 7)) on a 1x1 map): windows of one
    pixel, or of one and two pixels mixed."""
    torch = pytest.importorskip("torch")
    compare_with_torch(AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
                       (2, 3, 2, *in_hw), dtype)


def bn_input(shape, seed=0):
    return normal(shape, seed=seed, scale=2.0, shift=0.7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("bn_class, shape", BN_CASES)
def test_torch_batchnorm(bn_class, shape, per_step, affine, momentum, dtype):
    """Two training forwards (running statistics, accumulated gradients), then one in eval mode."""
    torch = pytest.importorskip("torch")
    ours = bn_class(shape[2], eps=1e-4, momentum=momentum, affine=affine, per_step=per_step)
    theirs = getattr(torch.nn, bn_class.__name__)(shape[2], eps=1e-4, momentum=momentum, affine=affine)
    if affine:
        ours.params["weight"][...] = normal(shape[2], seed=1, scale=0.5, shift=1.0)
        ours.params["bias"][...] = normal(shape[2], seed=2)
    compare_with_torch(ours, theirs, shape, dtype, modes=(True, True, False), make_input=bn_input,
                       torch_forward=torch_per_step if per_step else torch_folded)
    assert int(ours.buffers["num_batches_tracked"]) == (2 * shape[0] if per_step else 2)


def test_spikingjelly_multistep_batchnorm2d():
    """The default (per_step=False) is SpikingJelly's multi-step layer.BatchNorm2d."""
    torch = pytest.importorskip("torch")
    sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
    compare_with_torch(BatchNorm2d(3), sj_layer.BatchNorm2d(3, step_mode="m"), (3, 4, 3, 5, 4),
                       np.float64, modes=(True, True, False), make_input=bn_input,
                       torch_forward=lambda m, x: m(x))


def torch_clipped_relu(mu):
    """min(relu(x), μ) written with torch ops; autograd gives the reference gradients."""
    torch = pytest.importorskip("torch")

    class TorchClippedReLU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.threshold = torch.nn.Parameter(torch.tensor(mu))

        def forward(self, x):
            return torch.minimum(x.relu(), self.threshold)

    return TorchClippedReLU()


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_activations_flatten(dtype):
    torch = pytest.importorskip("torch")
    compare_with_torch(ReLU(), torch.nn.ReLU(), (2, 3, 4, 5), dtype)
    compare_with_torch(Flatten(), torch.nn.Flatten(), (2, 3, 2, 3, 4), dtype)
    compare_with_torch(ClippedReLU(1.5), torch_clipped_relu(1.5), (3, 4, 5), dtype, modes=(True, True),
                       make_input=lambda shape, seed: clipped_relu_input(shape, 1.5, seed))


# ------------------------------------------------------------------------------------------
# Dropout semantics (the random mask cannot match torch's generator; its rules are checked)
# ------------------------------------------------------------------------------------------
def test_dropout_mask_shared_over_time_and_scaled():
    p = 0.3
    layer = Dropout(p, rng=np.random.default_rng(1))
    x = normal((4, 50, 40), shift=5.0)
    y = layer.forward(x)
    kept = y != 0                                    # x has no zeros
    assert np.array_equal(kept, np.broadcast_to(kept[:1], kept.shape))   # one mask for all steps
    assert np.allclose(y[kept], x[kept] / (1 - p), rtol=1e-15, atol=0)
    assert abs(np.mean(~kept[0]) - p) < 0.03         # 2000 draws: 4.6 standard deviations
    g = normal(x.shape, seed=2)
    assert np.array_equal(layer.backward(g), np.where(kept, g * (1 / (1 - p)), 0.0))


def test_dropout_reproducible_eval_and_extremes():
    x = normal((2, 30, 8))
    a, b = Dropout(0.5, rng=np.random.default_rng(4)), Dropout(0.5, rng=np.random.default_rng(4))
    first = a.forward(x)
    assert np.array_equal(first, b.forward(x))      # same generator state, same mask
    assert not np.array_equal(first, a.forward(x))  # a new mask at every forward
    assert np.array_equal(a.eval().forward(x), x)
    assert np.array_equal(a.backward(x), x)
    assert np.array_equal(Dropout(0.0).forward(x), x)
    assert np.array_equal(Dropout(1.0).forward(x), np.zeros_like(x))


# ------------------------------------------------------------------------------------------
# initialization, dtypes, errors
# ------------------------------------------------------------------------------------------
def test_default_initialization_matches_pytorch_bounds():
    """PyTorch: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Linear and Conv2d."""
    for layer, fan_in in [(Linear(50, 80), 50), (Conv2d(8, 32, 3, groups=2), 36)]:
        bound = 1 / np.sqrt(fan_in)
        for name, p, _ in layer.named_parameters():
            assert p.dtype == np.float32
            assert np.max(np.abs(p)) <= bound, name
        w = layer.params["weight"]
        assert abs(np.std(w) - bound / np.sqrt(3)) < 0.05 * bound, "not uniform on the bound"
    bn = BatchNorm2d(4)
    assert np.array_equal(bn.params["weight"], np.ones(4)) and np.array_equal(bn.buffers["running_var"], np.ones(4))
    assert bn.buffers["num_batches_tracked"].dtype == np.int64 and bn.buffers["num_batches_tracked"].shape == ()
    assert ClippedReLU().params["threshold"].shape == () and float(ClippedReLU().params["threshold"]) == 4.0


def test_mixed_dtypes_refused_naming_to():
    """A float32 layer refuses float64 input (as PyTorch) and says how to convert; after
    .to(np.float64) it computes in float64, and a float32 input stays float32."""
    layer = Conv2d(2, 3, 3)
    x = normal((1, 2, 2, 5, 5))
    with pytest.raises(TypeError, match=r"float64 but the parameter 'weight' is float32.*\.to\(np\.float64\)"):
        layer.forward(x)
    y32 = layer.forward(x.astype(np.float32))
    assert y32.dtype == np.float32 and layer.backward(np.ones_like(y32)).dtype == np.float32
    y64 = layer.to(np.float64).forward(x)
    assert y64.dtype == np.float64
    assert rel_err(y32, y64) < 1e-5


def all_layers():
    """(layer, a valid input shape) for every layer."""
    return [
        (Linear(4, 3), (2, 3, 4)),
        (Conv2d(2, 3, 3, padding=1), (2, 3, 2, 5, 5)),
        (AvgPool2d(2), (2, 3, 2, 4, 4)),
        (MaxPool2d(2), (2, 3, 2, 4, 4)),
        (AdaptiveAvgPool2d(1), (2, 3, 2, 4, 4)),
        (BatchNorm1d(2), (2, 3, 2)),
        (BatchNorm2d(2), (2, 3, 2, 4, 4)),
        (Dropout(0.5), (2, 3, 4)),
        (Flatten(), (2, 3, 2, 2)),
        (ReLU(), (2, 3, 4)),
        (ClippedReLU(), (2, 3, 4)),
    ]


LAYER_IDS = [type(layer).__name__ for layer, _ in all_layers()]


@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_bad_inputs(index):
    layer, shape = all_layers()[index]
    x = normal(shape).astype(np.float32)  # the layers' dtype
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones(shape))
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(x.astype(np.int64))
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(x.astype(np.complex128))
    with pytest.raises(TypeError, match="ndarray"):
        layer.forward(x.tolist())
    with pytest.raises(ValueError, match="dimensions"):
        layer.forward(x[0, 0])
    y = layer.forward(x)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones(y.shape + (1,)))
    with pytest.raises(TypeError, match="dtype"):
        layer.backward(np.ones(y.shape, dtype=np.int32))
    assert layer.backward(np.ones_like(y)).shape == shape       # the failed calls left the layer usable
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones_like(y))                         # the saved state is consumed


@pytest.mark.parametrize("layer, shape", [
    (Linear(4, 3), (2, 3, 5)),
    (Conv2d(2, 3, 3), (2, 3, 3, 5, 5)),
    (BatchNorm1d(2), (2, 3, 3, 4)),
    (BatchNorm2d(2), (2, 3, 3, 4, 4)),
], ids=["Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d"])
def test_wrong_channel_count(layer, shape):
    with pytest.raises(ValueError, match="expects"):
        layer.forward(normal(shape).astype(np.float32))


def test_wrong_rank_per_layer_kind():
    cases = [(Conv2d(2, 3, 3), (3, 2, 5, 5)), (BatchNorm2d(2), (3, 2, 4, 4)), (BatchNorm1d(2), (1, 3, 2, 4, 4)),
             (MaxPool2d(2), (2, 3, 2, 4, 4, 1)), (Linear(4, 3), (3, 4))]
    for layer, shape in cases:
        with pytest.raises(ValueError, match="dimensions"):
            layer.forward(normal(shape).astype(np.float32))


def test_invalid_configurations():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        Conv2d(1, 1, 5).forward(normal((1, 1, 1, 3, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="divisible by groups"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm1d(3).forward(normal((1, 1, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(1.5)
    with pytest.raises(TypeError, match="kernel_size"):
        Conv2d(1, 1, 2.5)


# ---- Conv2d's channels-last path and the skipped input gradient ----------------------------------
NHWC_CASES = [  # (in, out, kernel, stride, padding, bias): more than NCHW_MAX_CHANNELS inputs
    (8, 5, 3, 1, 1, True),
    (8, 6, (2, 3), (2, 1), (1, 0), True),
    (6, 4, 5, 3, 2, False),
    (7, 3, 1, 1, 0, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NHWC_CASES)
def test_torch_conv2d_channels_last_path(case, dtype):
    """Conv2d with more than 4 input channels builds NHWC patches: same results as torch, for an
    analog input and for spikes (saved as uint8 NHWC)."""
    torch = pytest.importorskip("torch")
    cin, cout, k, s, p, bias = case
    assert cin > NCHW_MAX_CHANNELS
    for make_input in (normal, lambda shape, seed: (normal(shape, seed) > 0.5).astype(np.float64)):
        compare_with_torch(Conv2d(cin, cout, k, stride=s, padding=p, bias=bias),
                           torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias),
                           (2, 3, cin, 9, 8), dtype, modes=(True, True), make_input=make_input)


@pytest.mark.parametrize("case", [(8, 5, 3, 2, 1, 1), (2, 3, 3, 1, 1, 1), (4, 6, 3, 1, 1, 2)])
def test_conv2d_without_input_gradient_same_parameter_gradients(case):
    """needs_input_grad=False (channels-last, NCHW and grouped paths): backward returns None and
    the parameter gradients are bit-for-bit those of a full backward."""
    cin, cout, k, s, p, groups = case
    x = normal((2, 3, cin, 7, 6)).astype(np.float32)
    full, skipping = Conv2d(cin, cout, k, s, p, groups=groups), Conv2d(cin, cout, k, s, p, groups=groups)
    skipping.needs_input_grad = False
    for spikes in (False, True):
        inp = (x > 0).astype(np.float32) if spikes else x
        y = full.forward(inp)
        np.testing.assert_array_equal(skipping.forward(inp), y)
        g = normal(y.shape, seed=3).astype(np.float32)
        assert full.backward(g).shape == x.shape
        assert skipping.backward(g) is None
        for (name, _, a), (_, _, b) in zip(full.named_parameters(), skipping.named_parameters()):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("network", ["cnn", "vgg11", "resnet18"])
def test_skip_input_gradient_finds_the_first_conv(network):
    """models.skip_input_gradient flags the first layer in forward order (through Sequential and
    Chain) and no other; the network's parameter gradients are unchanged, its backward returns None."""
    from refsnn.models import build_network, skip_input_gradient
    shape, options = ((1, 12, 12), {}) if network == "cnn" else ((3, 32, 32), {"width": 1 / 16})
    full, skipping = (build_network(network, shape, 3, neuron="lif", seed=1, **options) for _ in range(2))
    first = skip_input_gradient(skipping)
    assert isinstance(first, Conv2d) and not first.needs_input_grad
    assert [m.needs_input_grad for _, m in skipping.modules() if isinstance(m, Conv2d)].count(False) == 1
    x = (normal((2, 2) + shape) > 0).astype(np.float32)
    out = full.forward(x)
    np.testing.assert_array_equal(skipping.forward(x), out)
    g = normal(out.shape, seed=2).astype(np.float32)
    assert full.backward(g).shape == x.shape
    assert skipping.backward(g) is None
    for (name, _, a), (_, _, b) in zip(full.named_parameters(), skipping.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert skip_input_gradient(build_network("mlp", (6,), 3)) is None   # first layer Linear: untouched
