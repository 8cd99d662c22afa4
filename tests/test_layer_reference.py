"""Each fast layer kernel equals the plain NumPy reference beside it (refsnn.layers; the method:
docs/verification.md, "Fast kernels against their references").

Where the kernel and its reference do the same floating-point operations in the same order (the
patch copies, col2im's additions tap by tap, the pooling sums, the BatchNorm elementwise formula)
the results are equal bit for bit, in float64 and float32. The BatchNorm sums are the exception:
the kernels add a group's values column by column and then pairwise over the spatial axis, the
reference with NumPy's pairwise mean over the whole group, so the same float64 values are summed
in another order; each addition rounds to 2^-53 relative, and the normwise relative error stays
below 1e-12 (REORDERED_SUMS) on these sizes. The event-driven convolution kernels are checked
against their references in tests/test_sparse_conv.py.
"""
import numpy as np
import pytest

from refsnn.layers import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, conv, conv_patches, norm, pool

DTYPES = [np.float64, np.float32]
REORDERED_SUMS = 1e-12


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def rel_err(mine, theirs):
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    assert mine.shape == theirs.shape
    return float(np.max(np.abs(mine - theirs), initial=0.0) / max(np.max(np.abs(theirs), initial=0.0), 1e-300))


# ------------------------------------------------------------------------------------------
# Conv2d: im2col and col2im, NCHW and channels-last (conv_patches); the input checks (conv)
# ------------------------------------------------------------------------------------------
CONV_GEOMETRY = [  # (kernel, stride, padding, H, W)
    ((3, 3), (1, 1), (1, 1), 6, 7),
    ((3, 3), (2, 2), (0, 0), 7, 7),
    ((2, 3), (2, 1), (1, 0), 6, 5),
    ((5, 5), (3, 3), (2, 2), 6, 7),
    ((1, 1), (1, 1), (0, 0), 4, 3),
    ((3, 3), (1, 1), (1, 1), 1, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kernel, stride, padding, H, W", CONV_GEOMETRY)
def test_im2col_and_col2im(kernel, stride, padding, H, W, layout, dtype):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    suffix = "" if layout == "nchw" else "_nhwc"
    im2col, col2im = getattr(conv_patches, "im2col" + suffix), getattr(conv_patches, "col2im" + suffix)
    x = normal((3, 5, H, W) if layout == "nchw" else (3, H, W, 5)).astype(dtype)
    expected = getattr(conv_patches, f"im2col{suffix}_reference")(x, kernel, stride, padding)
    cols = np.full_like(expected, np.nan)
    im2col(x, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
    np.testing.assert_array_equal(cols, expected)
    d_cols = normal(cols.shape, seed=1).astype(dtype)
    dx = np.zeros_like(x) if layout == "nchw" else np.full_like(x, np.nan)   # col2im adds into dx, col2im_nhwc sets it
    col2im(d_cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dx)
    expected = getattr(conv_patches, f"col2im{suffix}_reference")(d_cols, x.shape, kernel, stride, padding)
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("values", [[0.0, 1.0], [0.0, 1.0, 0.5], [0.0, 1.0, np.nan], [1.0], [0.0, -1.0]])
def test_spike_check(values):
    x = np.random.default_rng(2).choice(np.array(values), size=9000)   # more than one 4096 block
    spikes = np.empty(x.shape, np.uint8)
    binary = conv._to_spikes(x, spikes)
    ref_spikes, ref_binary = conv.to_spikes_reference(x)
    assert binary == ref_binary
    np.testing.assert_array_equal(spikes, ref_spikes)


@pytest.mark.parametrize("change", [None, (0, 5), (2, 4100), (3, 8999), "nan"])
def test_same_every_step(change):
    x = np.repeat(normal((1, 9000)), 4, axis=0)
    if change == "nan":
        x[:, 7] = np.nan
    elif change is not None:
        x[change] += 1.0
    assert conv._same_every_step(x) == conv.same_every_step_reference(x) == (change is None)


# ------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------
AVG_POOLS = [  # the layer and its input size (H, W); the kernels the layer runs for it
    (AvgPool2d(3, 2, 1), (7, 6)),                 # generic
    (AvgPool2d((2, 3), (1, 2), (1, 1)), (6, 5)),  # generic
    (AvgPool2d(2), (7, 6)),                       # tiles (kw = 2), a row no window covers
    (AvgPool2d(3), (7, 9)),                       # tiles
    (AdaptiveAvgPool2d((4, 5)), (7, 6)),          # generic, windows of different sizes
    (AdaptiveAvgPool2d((7, 7)), (1, 1)),          # one-pixel windows: NumPy gather, scatter-add
    (AdaptiveAvgPool2d((4, 6)), (2, 3)),          # one-pixel windows, pixels read twice
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", range(len(AVG_POOLS)), ids=[f"{p!r}-{s}" for p, s in AVG_POOLS])
def test_avg_pool_kernels(index, dtype):
    layer, (H, W) = AVG_POOLS[index]
    windows = layer._windows(H, W)
    divisor = layer._divisor(windows)
    x = normal((3, 2, H, W)).astype(dtype)
    g = normal((3, 2, windows[0].size, windows[2].size), seed=1).astype(dtype)
    out, dx = np.full(g.shape, np.nan, dtype), np.zeros(x.shape, dtype)
    tiles = layer._tiles()
    if tiles:
        pool._avg_pool_tiles_forward(x, *tiles, out)
        dx[...] = np.nan
        pool._avg_pool_tiles_backward(g, *tiles, dx)
    elif np.all(divisor == 1):
        out = x[:, :, windows[0][:, None], windows[2]]   # what AdaptiveAvgPool2d runs
        pool._pixel_scatter_add(g, windows[0], windows[2], dx)
    else:
        pool._avg_pool_forward(x, *windows, divisor, out)
        pool._avg_pool_backward(g, *windows, divisor, dx)
    np.testing.assert_array_equal(out, pool.avg_pool_forward_reference(x, windows, divisor))
    np.testing.assert_array_equal(dx, pool.avg_pool_backward_reference(g, windows, divisor, x.shape))
    # the specialized kernels against the generic ones too
    generic_out, generic_dx = np.empty_like(out), np.zeros_like(dx)
    pool._avg_pool_forward(x, *windows, divisor, generic_out)
    pool._avg_pool_backward(g, *windows, divisor, generic_dx)
    np.testing.assert_array_equal(out, generic_out)
    np.testing.assert_array_equal(dx, generic_dx)


def tied_or_nan(shape, seed):
    """Small integers (many tied maxima), a few NaNs and -inf."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 1))])
@pytest.mark.parametrize("make_input", [normal, tied_or_nan], ids=["normal", "ties-nan"])
def test_max_pool_kernels(case, make_input, dtype):
    layer = MaxPool2d(*case)
    H, W = 7, 6
    windows = layer._windows(H, W)
    x = make_input((3, 2, H, W), 0).astype(dtype)
    shape = (3, 2, windows[0].size, windows[2].size)
    ref_out, ref_argmax = pool.max_pool_forward_reference(x, windows)
    for kernel in ("generic", "2x2") if case[0] == 2 else ("generic",):
        out, argmax = np.empty(shape, dtype), np.empty(shape, np.int32)
        if kernel == "2x2":
            pool._max_pool_2x2(x, out, argmax)
        else:
            pool._max_pool_forward(x, *windows, out, argmax)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(argmax, ref_argmax)
    g = normal(shape, seed=1).astype(dtype)
    dx = np.zeros((3, 2, H * W), dtype)
    pool._max_pool_backward(g, ref_argmax, dx)
    np.testing.assert_array_equal(dx.reshape(x.shape), pool.max_pool_backward_reference(g, ref_argmax, x.shape))


# ------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 5, 1), (2, 3, 4, 30), (2, 2, 3, 2500)])   # the last: two column chunks
def test_batchnorm_kernels(shape, per_step, dtype):
    x = (normal(shape) * 2.0 + 0.7).astype(dtype)
    g = normal(shape, seed=1).astype(dtype)
    steps, C = shape[0] if per_step else 1, shape[2]
    mean, var = np.empty((steps, C)), np.empty((steps, C))
    norm._bn_statistics(x, per_step, mean, var)
    ref_mean, ref_var = norm.batchnorm_statistics_reference(x, per_step)
    assert rel_err(mean, ref_mean) <= REORDERED_SUMS and rel_err(var, ref_var) <= REORDERED_SUMS
    inv_std = 1.0 / np.sqrt(var + 1e-5)
    gamma, beta = normal(C, seed=2) * 0.5 + 1.0, normal(C, seed=3)
    y = np.empty_like(x)
    norm._bn_normalize(x, per_step, mean, inv_std, gamma, beta, y)
    np.testing.assert_array_equal(y, norm.batchnorm_forward_reference(x, per_step, mean, inv_std, gamma, beta))
    for training in (True, False):
        sums = np.empty((steps, C)), np.empty((steps, C))
        dx = np.empty_like(x)
        norm._bn_backward(g, x, per_step, training, mean, inv_std, gamma, *sums, dx)
        ref_dx, *ref_sums = norm.batchnorm_backward_reference(g, x, per_step, training, mean, inv_std, gamma)
        for mine, theirs in zip(sums, ref_sums):
            assert rel_err(mine, theirs) <= REORDERED_SUMS
        # float32: dx rounds once to float32 from float64 values that differ by the reordered sums
        assert rel_err(dx, ref_dx) <= (REORDERED_SUMS if dtype == np.float64 else 2.0 ** -23)
