"""Stateless and batch-statistics layers: Linear, Conv2d, pooling, BatchNorm, Dropout, Flatten, ReLU.

Every layer takes time-major input ``[T, N, ...]``. Layers without memory across time fold T into
the batch (``[T*N, ...]``), so one call processes all steps. The maths follows PyTorch's modules
(same parameter names, shapes, default initialization, output sizes and tie rules), which the
tests check against torch autograd.

``forward`` saves what ``backward`` needs; ``backward`` consumes it (a second ``backward`` for one
``forward`` raises, as PyTorch does without ``retain_graph``), returns the input gradient and adds
the parameter gradients into ``self.grads``. Computation runs in the dtype of the input, which
must be the dtype of the layer's parameters and buffers (refsnn.module's rule: ``.to(...)``
converts a model). Sums over the batch (bias gradients, BatchNorm statistics) accumulate in
float64 or pairwise along a contiguous axis (NumPy's sum; along any other axis it adds one row
at a time), so float32 results keep float32 accuracy at any batch × time × spatial size. Layers keep
references to their inputs rather than copies (Linear, BatchNorm): do not modify an input in
place between forward and backward.
"""
import math

import numba
import numpy as np
from numba import prange

from . import sparse_conv
from .threads import MAX_BLOCKS, matmul
from .module import Module, NonFiniteError, OptionError, check_flag, check_float_array, check_int, check_real, float_dtype


# ------------------------------------------------------------------------------------------
# shared checks
# ------------------------------------------------------------------------------------------
def _check_input(layer, x, ndims, min_ndim=None):
    """``x`` as a contiguous float array whose rank is in ``ndims`` (or at least ``min_ndim``)."""
    name = f"{type(layer).__name__} input"
    x = check_float_array(x, name)
    layer.check_dtype(x)
    if min_ndim is not None:
        if x.ndim < min_ndim:
            raise ValueError(f"{name} must have at least {min_ndim} dimensions [T, N, ...], got shape {x.shape}")
    elif x.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {x.shape}")
    return x


def _check_channels(layer, x, axis, expected, what="channels"):
    if x.shape[axis] != expected:
        raise ValueError(f"{type(layer).__name__} expects {expected} {what} on axis {axis}, "
                         f"got input of shape {x.shape}")


def _saved_for(layer, grad_out):
    """The forward's saved tuple and the checked ``grad_out``; the saved state is then released."""
    saved = layer._saved
    if saved is None:
        raise ValueError(f"{type(layer).__name__}.backward called before forward "
                         "(or a second time for one forward)")
    grad_out = check_float_array(grad_out, "grad_out")
    out_shape, dtype = saved[0], saved[1]
    if grad_out.shape != out_shape:
        raise ValueError(f"{type(layer).__name__}: grad_out has shape {grad_out.shape}, "
                         f"expected the forward output shape {out_shape}")
    layer._saved = None
    return saved[2:], grad_out.astype(dtype, copy=False)


PARALLEL_MIN_WORK = 1 << 16  # elements; below this a kernel runs on one thread


def _launch(kernel, work, *args):
    """Call a parallel kernel, on a single thread when ``work`` (elements touched) is small:
    waking the thread pool then costs more than it saves, and far more on a busy machine."""
    if work >= PARALLEL_MIN_WORK:
        return kernel(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def _pair(value, name, low):
    """An int or a pair of ints, each >= ``low``, as a pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return check_int(value[0], f"{name}[0]", low), check_int(value[1], f"{name}[1]", low)
    if isinstance(value, (tuple, list)):
        raise OptionError(f"{name} must be an integer or a pair of integers, got {value!r}")
    value = check_int(value, name, low)
    return value, value


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


# ------------------------------------------------------------------------------------------
# Linear:  y = x W^T + b  on the last axis
# ------------------------------------------------------------------------------------------
class Linear(Module):
    """``y = x Wᵀ + b`` on the last axis of ``[T, N, ..., in_features]``; weight ``[out, in]``.

    Initialization as ``torch.nn.Linear``: W, b ~ U(-1/√in, 1/√in).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        in_features, out_features = check_int(in_features, "in_features", 1), check_int(out_features, "out_features", 1)
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(0) if rng is None else rng
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", _uniform(rng, bound, (out_features, in_features), dtype))
        if check_flag(bias, "bias"):
            self.add_param("bias", _uniform(rng, bound, (out_features,), dtype))
        self._saved = None

    def forward(self, x):
        x = _check_input(self, x, None, min_ndim=3)
        _check_channels(self, x, -1, self.in_features, "features")
        weight = self.params["weight"]
        x2 = x.reshape(-1, self.in_features)
        y = matmul(x2, weight.T)
        if "bias" in self.params:
            y += self.params["bias"]
        out_shape = x.shape[:-1] + (self.out_features,)
        self._saved = (out_shape, x.dtype, x2, weight, x.shape)
        return y.reshape(out_shape)

    def backward(self, grad_out):
        (x2, weight, in_shape), g = _saved_for(self, grad_out)
        g2 = g.reshape(-1, self.out_features)
        self.grads["weight"] += matmul(g2.T, x2)           # dL/dW = Gᵀ X
        if "bias" in self.params:
            self.grads["bias"] += g2.sum(axis=0, dtype=np.float64)    # dL/db = Σ_rows G
        return matmul(g2, weight).reshape(in_shape)      # dL/dX = G W

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"


# ------------------------------------------------------------------------------------------
# Conv2d
#
# Algorithm: im2col + GEMM on NumPy's BLAS.
#   im2col (Numba, parallel over (image, channel) planes) writes the patch matrix
#       cols[(c, i, j), (b, ho, wo)] = x_padded[b, c, ho·sh + i, wo·sw + j]      [K = C·kh·kw, B·Ho·Wo]
#   forward        Y  = W · cols                  (one GEMM per group)   then [O, B, P] -> [B, O, P]
#   weight grad    dW = G · colsᵀ                 (reuses the forward's cols)
#   input grad     dcols = Wᵀ · G, written into the cols buffer, then col2im scatter-adds it back
#                  into dX (Numba, parallel over planes, so no two threads touch the same pixel).
# With groups g the rows of cols split into g contiguous blocks, one per group, and each of the
# three products is one GEMM per group. This NCHW layout serves groups > 1 and 1-4 input
# channels; otherwise the layer works channels-last inside (see _im2col_nhwc below) and keeps
# PyTorch's NCHW at its boundary and in its weight.
# Memory: the layer saves its input, not the patches (kh·kw times larger): the backward rebuilds
# them. Spike inputs (every value 0 or 1) are saved as uint8, a quarter of float32 (the
# channels-last path saves its NHWC copy of the input: uint8 for spikes, else float). The patches
# live in one workspace shared by every Conv2d, since they are needed only inside one call: the
# process holds the largest layer's patches once (and never page-faults a fresh buffer per call).
# ------------------------------------------------------------------------------------------
_workspace = [np.empty(0, np.uint8)]


def _shared_workspace(shape, dtype):
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if _workspace[0].nbytes < nbytes:
        _workspace[0] = np.empty(nbytes, np.uint8)
    return _workspace[0][:nbytes].view(dtype).reshape(shape)


@numba.njit(cache=True, parallel=True)
def _to_spikes(x, spikes):
    """spikes = x as uint8 if every element of x (flat) is 0 or 1; returns whether it was."""
    n = x.size
    blocks = (n + 4095) // 4096
    binary = np.ones(blocks, np.bool_)
    for blk in prange(blocks):
        bad = 0
        for i in range(blk * 4096, min(n, (blk + 1) * 4096)):   # branch-free: vectorizes
            v = x[i]
            s = np.uint8(v != 0)
            spikes[i] = s
            bad |= np.uint8(v != s)                               # v not 0 or 1 (or NaN)
        binary[blk] = bad == 0
    return binary.all()


@numba.njit(cache=True)
def _same_every_step(x):
    """Whether every row of x [T, M] equals its first (bit for bit; a NaN never equals)."""
    T, M = x.shape
    for t in range(1, T):
        for lo in range(0, M, 4096):
            same = True
            for i in range(lo, min(M, lo + 4096)):   # branch-free: vectorizes
                same &= x[t, i] == x[0, i]
            if not same:
                return False
    return True


@numba.njit(cache=True)
def _valid_range(n_out, stride, offset, size):
    """Output positions o in [lo, hi) whose input index o·stride + offset lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = (size - 1 - offset) // stride + 1
    lo = min(lo, n_out)
    return lo, max(lo, min(hi, n_out))


@numba.njit(cache=True, parallel=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
    B, C, H, W = x.shape
    P = Ho * Wo
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for i in range(kh):
            h_lo, h_hi = _valid_range(Ho, sh, i - ph, H)
            for j in range(kw):
                w_lo, w_hi = _valid_range(Wo, sw, j - pw, W)
                # what kernel tap (i, j) sees of image b, channel c: zeros where it falls in the
                # padding, a strided window of x inside
                patch = cols[(c * kh + i) * kw + j, b * P:(b + 1) * P].reshape((Ho, Wo))
                patch[:h_lo, :] = 0
                patch[h_hi:, :] = 0
                patch[h_lo:h_hi, :w_lo] = 0
                patch[h_lo:h_hi, w_hi:] = 0
                if h_hi > h_lo and w_hi > w_lo:
                    h0, w0 = h_lo * sh + i - ph, w_lo * sw + j - pw
                    patch[h_lo:h_hi, w_lo:w_hi] = x[b, c, h0:h0 + (h_hi - h_lo - 1) * sh + 1:sh,
                                                    w0:w0 + (w_hi - w_lo - 1) * sw + 1:sw]


@numba.njit(cache=True, parallel=True)
def _col2im(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dx):
    B, C, H, W = dx.shape
    P = Ho * Wo
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                w_lo, w_hi = _valid_range(Wo, sw, j - pw, W)
                for ho in range(Ho):
                    h = ho * sh + i - ph
                    if h < 0 or h >= H:
                        continue
                    base = b * P + ho * Wo
                    if sw == 1:
                        for wo in range(w_lo, w_hi):
                            dx[b, c, h, wo + j - pw] += cols[row, base + wo]
                    else:
                        for wo in range(w_lo, w_hi):
                            dx[b, c, h, wo * sw + j - pw] += cols[row, base + wo]


# NHWC patches (groups = 1, more than NCHW_MAX_CHANNELS input channels). With channels last,
# every kernel tap reads or writes C contiguous values instead of a strided window of a plane:
#   xh [B, H, W, C] (the input in NHWC),  cols [B·Ho·Wo, kh·kw·C]
#   cols[(b, ho, wo), (i, j, c)] = xh[b, ho·sh + i - ph, wo·sw + j - pw, c]   (0 in the padding)
# and the weight is used as Wr [O, (i, j, c)] = W[o, c, i, j].
NCHW_MAX_CHANNELS = 4  # up to this many input channels the NCHW kernels above are faster (bench/conv.py)
# Event-driven path (refsnn.sparse_conv) for inputs with few non-zeros, groups = 1 and more than
# NCHW_MAX_CHANNELS channels (up to 65536: channel indices are uint16). It is taken when its
# multiply-adds times SPARSE_COST are fewer than the dense path's (Conv2d._sparse_pays), i.e. when
# rate × (valid taps / all taps) × (out_channels rounded up to 64) / out_channels < 1/3.
# Measured (fwd+bwd of the layer, both paths interleaved, 1 thread, T·N = 128, 3x3 pad 1, spikes):
# the paths break even at rate 0.40 (64→128 16x16, 128→256 8x8, 256→256 8x8, 512→512 4x4, 32→64
# 14x14), 0.4-0.55 (256→512 4x4) and above 0.55 on 2x2 maps (512→512: 56% of the taps are padding);
# at rate 0.1 the event-driven layer is 1.7-1.8x faster, at 0.25 1.3x. Command: bench/conv.py's
# spike rows, "dense/sparse" at rates 0.05-0.45 (python -m bench --only conv --threads 1; there, with
# the per-tap input gradient below, 512→512 4x4 at rate 0.45 still goes event-driven at 0.89x: the
# model is coarse next to the break-even, far from VGG-11's measured rates of 0.03-0.25).
SPARSE_MAX_CHANNELS = 1 << 16
SPARSE_COST = 3.0
# the channels-last input gradient runs one product per tap when fewer than this fraction of the
# (tap, output pixel) pairs fall inside the input (Conv2d._input_gradient_nhwc)
PER_TAP_MAX_VALID = 0.8


@numba.njit(cache=True, parallel=True)
def _im2col_nhwc(xh, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
    B, H, W, C = xh.shape
    for b_ho in prange(B * Ho):
        b = b_ho // Ho
        ho = b_ho - b * Ho
        for wo in range(Wo):
            row = b_ho * Wo + wo
            for i in range(kh):
                h = ho * sh + i - ph
                for j in range(kw):
                    w = wo * sw + j - pw
                    base = (i * kw + j) * C
                    if 0 <= h < H and 0 <= w < W:
                        for c in range(C):
                            cols[row, base + c] = xh[b, h, w, c]
                    else:
                        for c in range(C):
                            cols[row, base + c] = 0


@numba.njit(cache=True, parallel=True)
def _col2im_nhwc(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dxh):
    """dxh[b, h, w, :] = Σ cols[(b, ho, wo), (i, j, :)] over the taps with ho·sh + i - ph = h,
    wo·sw + j - pw = w. Parallel over images; each image's rows are read in order (a streaming
    pass over cols, 2.5x faster than gathering per pixel)."""
    B, H, W, C = dxh.shape
    for b in prange(B):
        dxh[b] = 0
        for ho in range(Ho):
            for wo in range(Wo):
                row = (b * Ho + ho) * Wo + wo
                for i in range(kh):
                    h = ho * sh + i - ph
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = wo * sw + j - pw
                        if w < 0 or w >= W:
                            continue
                        pixel = dxh[b, h, w]
                        tap = cols[row, (i * kw + j) * C:(i * kw + j + 1) * C]
                        for c in range(C):
                            pixel[c] += tap[c]


class Conv2d(Module):
    """2-D convolution (cross-correlation, as PyTorch) of ``[T, N, C, H, W]``.

    Weight ``[out_channels, in_channels/groups, kh, kw]``; initialization as ``torch.nn.Conv2d``:
    W, b ~ U(-1/√fan_in, 1/√fan_in), fan_in = in_channels/groups·kh·kw. Output size
    ``(H + 2·padding - kh) // stride + 1``. See the comment above for the algorithm.

    Memory: the layer keeps its input for the weight gradient (as uint8 when it is spikes; as
    its per-pixel active channels and values when the event-driven path ran).

    Paths (``last_path`` after a forward): "sparse" (refsnn.sparse_conv: forward and weight
    gradient over the non-zero inputs, chosen per call from the counted non-zeros, see
    SPARSE_COST), "nhwc" (channels-last im2col + GEMM) or "nchw" (1-4 input channels, or groups).

    ``needs_input_grad`` (default True): when False, ``backward`` computes only the parameter
    gradients and returns None, as PyTorch skips dL/dx for an input that does not require grad
    (the first layer of a network; see refsnn.models.skip_input_gradient). Such a layer also
    checks whether its input is the same at every time step (direct encoding of an image): then
    it convolves the N images once and repeats the output, and the weight gradient is taken
    once from G summed over time (``last_time_shared``); the same results to rounding, T times
    fewer operations.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 groups=1, rng=None, dtype=np.float32):
        super().__init__()
        in_channels, out_channels = check_int(in_channels, "in_channels", 1), check_int(out_channels, "out_channels", 1)
        groups = check_int(groups, "groups", 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        dtype = float_dtype(dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        rng = np.random.default_rng(0) if rng is None else rng
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        self.add_param("weight", _uniform(rng, bound, (out_channels, in_channels // groups, kh, kw), dtype))
        if check_flag(bias, "bias"):
            self.add_param("bias", _uniform(rng, bound, (out_channels,), dtype))
        self.needs_input_grad = True
        self.last_path = None   # "sparse", "nhwc" or "nchw": the path the last forward took
        self.last_time_shared = False   # whether it convolved one time step for all (see forward)
        self._saved = None

    def output_size(self, H, W):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1

    def forward(self, x):
        x = _check_input(self, x, (5,))
        _check_channels(self, x, 2, self.in_channels)
        T, N, C, H, W = x.shape
        Ho, Wo = self.output_size(H, W)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"Conv2d: input {H}x{W} with padding {self.padding} is smaller than "
                             f"the kernel {self.kernel_size}")
        B, P, O, g = T * N, Ho * Wo, self.out_channels, self.groups
        out_shape = (T, N, O, Ho, Wo)
        self.last_time_shared = False
        if T > 1 and not self.needs_input_grad and _same_every_step(x.reshape(T, -1)):
            # the same input at every time step (direct encoding into the first layer): convolve
            # the N images once; backward: dW = Σ_t G_t ⋆ x_0 = (Σ_t G_t) ⋆ x_0
            y = self.forward(x[:1])
            self.last_time_shared = True
            self._saved = (out_shape, x.dtype, "time shared", self._saved)
            return np.ascontiguousarray(np.broadcast_to(y, out_shape))
        if g == 1 and NCHW_MAX_CHANNELS < C <= SPARSE_MAX_CHANNELS:
            counts = np.empty(B * H * W, np.int32)
            _launch(sparse_conv.count_active, x.size, x.reshape(B, C, H * W), counts)
            if self._sparse_pays(int(counts.sum(dtype=np.int64)), x.shape, Ho, Wo):
                return self._forward_sparse(x, counts, out_shape)
        spikes = np.empty(x.shape, np.uint8)
        binary = _launch(_to_spikes, x.size, x.reshape(-1), spikes.reshape(-1))
        if g == 1 and C > NCHW_MAX_CHANNELS:
            self.last_path = "nhwc"
            return self._forward_nhwc(x, spikes if binary else x, out_shape)
        self.last_path = "nchw"
        cols = self._patches(x.reshape(B, C, H, W), x.dtype, Ho, Wo)
        cols_g = cols.reshape(g, -1, B * P)                              # [g, K/g, B·P]
        weight_g = self.params["weight"].reshape(g, O // g, -1)
        y = np.empty((g, O // g, B * P), dtype=x.dtype)
        for k in range(g):
            matmul(weight_g[k], cols_g[k], out=y[k])                  # Y = W · cols
        y = y.reshape(O, B, P)
        out = np.empty((B, O, P), dtype=x.dtype)
        if "bias" in self.params:
            np.add(y.transpose(1, 0, 2), self.params["bias"][:, None], out=out)
        else:
            out[...] = y.transpose(1, 0, 2)
        self._saved = (out_shape, x.dtype, spikes if binary else x, weight_g)
        return out.reshape(out_shape)

    def _forward_nhwc(self, x, source, out_shape):
        """Y = cols · Wrᵀ with NHWC patches (see _im2col_nhwc); ``source`` is x or its uint8 spikes,
        saved for the backward in NHWC [B, H, W, C]."""
        T, N, C, H, W = x.shape
        O, Ho, Wo = out_shape[2:]
        B, P = T * N, Ho * Wo
        xh = np.ascontiguousarray(source.reshape(B, C, H, W).transpose(0, 2, 3, 1))
        cols = self._patches_nhwc(xh, x.dtype, Ho, Wo)                   # [B·P, K]
        wr = np.ascontiguousarray(self.params["weight"].transpose(0, 2, 3, 1)).reshape(O, -1)
        y = matmul(cols, wr.T).reshape(B, P, O)                               # Y = cols · Wrᵀ
        out = np.empty((B, O, P), dtype=x.dtype)
        if "bias" in self.params:
            np.add(y.transpose(0, 2, 1), self.params["bias"][:, None], out=out)
        else:
            out[...] = y.transpose(0, 2, 1)
        self._saved = (out_shape, x.dtype, xh, wr, x.shape)
        return out.reshape(out_shape)

    def _patches_nhwc(self, xh, dtype, Ho, Wo):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, C = xh.shape[0], xh.shape[3]
        cols = _shared_workspace((B * Ho * Wo, kh * kw * C), dtype)
        _launch(_im2col_nhwc, cols.size, xh, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
        return cols

    def _backward_nhwc(self, xh, wr, in_shape, g_out):
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g_out.shape
        B, P = T * N, Ho * Wo
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        g3 = g_out.reshape(B, O, P)
        if "bias" in self.params:  # db = Σ G: pairwise along the contiguous P, then float64 over images
            self.grads["bias"] += g3.sum(axis=2).sum(axis=0, dtype=np.float64)
        g2 = np.ascontiguousarray(g3.transpose(0, 2, 1)).reshape(B * P, O)   # G as [B·P, O]
        cols = self._patches_nhwc(xh, g_out.dtype, Ho, Wo)
        # dWr = Gᵀ · cols [O, K], computed as (colsᵀ · G)ᵀ: OpenBLAS is 1.3-4x slower on the
        # short-and-wide output at 2 threads (bench/conv.py), and about even at 1
        grad_wr = matmul(cols.T, g2).T
        self.grads["weight"] += grad_wr.reshape(O, kh, kw, C).transpose(0, 3, 1, 2)
        if not self.needs_input_grad:
            return None
        dxh = self._input_gradient_nhwc(g2, wr, in_shape, Ho, Wo, cols)
        return np.ascontiguousarray(dxh.transpose(0, 3, 1, 2)).reshape(in_shape)

    def _input_gradient_nhwc(self, g2, wr, in_shape, Ho, Wo, cols=None):
        """dL/dx in NHWC [B, H, W, C] from G [B·Ho·Wo, O] and Wr [O, (i, j, c)]: dcols = G · Wr
        into ``cols`` (or the workspace), then col2im. On small maps, where many taps fall in the
        padding (a 4x4 map with padding 1: 31% of the 3x3 taps; 2x2: 56%), one product per tap
        over only the output pixels whose input is inside instead,
            dx[b, ho·sh + i - ph, wo·sw + j - pw, :] += G[b, ho, wo, :] · Wr[:, (i, j, :)],
        which skips those products (1.2x faster on 512→512 4x4, 1.8x on 2x2; slower from 8x8 up,
        where the strided adds cost more than the padding: measured interleaved, 1 thread)."""
        T, N, C, H, W = in_shape
        B, O = T * N, g2.shape[1]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ranges_h = [_valid_range(Ho, sh, i - ph, H) for i in range(kh)]
        ranges_w = [_valid_range(Wo, sw, j - pw, W) for j in range(kw)]
        valid = sum(hi - lo for lo, hi in ranges_h) * sum(hi - lo for lo, hi in ranges_w)
        if valid >= PER_TAP_MAX_VALID * kh * kw * Ho * Wo:
            if cols is None:
                cols = _shared_workspace((B * Ho * Wo, kh * kw * C), g2.dtype)
            matmul(g2, wr, out=cols)                                  # dcols = G · Wr
            dxh = np.empty((B, H, W, C), dtype=g2.dtype)
            _launch(_col2im_nhwc, cols.size, cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dxh)
            return dxh
        dxh = np.zeros((B, H, W, C), dtype=g2.dtype)
        g4 = g2.reshape(B, Ho, Wo, O)
        for i, (h_lo, h_hi) in enumerate(ranges_h):
            for j, (w_lo, w_hi) in enumerate(ranges_w):
                if h_hi <= h_lo or w_hi <= w_lo:
                    continue
                g_tap = g4[:, h_lo:h_hi, w_lo:w_hi].reshape(-1, O)     # a copy unless the whole map
                tap = (i * kw + j) * C
                d_tap = matmul(g_tap, wr[:, tap:tap + C])           # [B·nh·nw, C]
                h0, w0 = h_lo * sh + i - ph, w_lo * sw + j - pw
                dxh[:, h0:h0 + (h_hi - h_lo - 1) * sh + 1:sh, w0:w0 + (w_hi - w_lo - 1) * sw + 1:sw] += \
                    d_tap.reshape(B, h_hi - h_lo, w_hi - w_lo, C)
        return dxh

    def _patches(self, x, dtype, Ho, Wo):
        """The patch matrix of x [B, C, H, W] (any real dtype) in ``dtype``, in the shared workspace."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, C = x.shape[:2]
        cols = _shared_workspace((C * kh * kw, B * Ho * Wo), dtype)
        _launch(_im2col, cols.size, x, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
        return cols

    def _sparse_pays(self, nnz, in_shape, Ho, Wo):
        """Whether the event-driven path (refsnn.sparse_conv) is expected to beat im2col + GEMM
        for an input with ``nnz`` non-zeros: its multiply-adds (one per active input, valid tap
        and output channel, the channels rounded up to blocks) times SPARSE_COST against the
        dense multiply-adds (every tap, valid or in the padding)."""
        T, N, C, H, W = in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        valid_h = sum(hi - lo for lo, hi in (_valid_range(Ho, sh, i - ph, H) for i in range(kh)))
        valid_w = sum(hi - lo for lo, hi in (_valid_range(Wo, sw, j - pw, W) for j in range(kw)))
        o_blocks = -(-self.out_channels // sparse_conv.BLOCK) * sparse_conv.BLOCK
        sparse = nnz / (T * N * H * W) * T * N * valid_h * valid_w * o_blocks
        dense = T * N * Ho * Wo * kh * kw * C * self.out_channels
        return sparse * SPARSE_COST < dense

    def _forward_sparse(self, x, counts, out_shape):
        """The event-driven forward (refsnn.sparse_conv): x compressed to its per-pixel active
        channels, which are saved for the weight gradient instead of x."""
        T, N, C, H, W = x.shape
        O, Ho, Wo = out_shape[2:]
        B = T * N
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        compressed = sparse_conv.compress(x.reshape(B, C, H * W), counts)
        wt = sparse_conv.blocked_weight(self.params["weight"])
        bias = np.zeros(wt.shape[0] * sparse_conv.BLOCK, x.dtype)
        if "bias" in self.params:
            bias[:O] = self.params["bias"]
        out = np.empty((B, O, Ho, Wo), x.dtype)
        _launch(sparse_conv.forward, out.size + compressed[1].size, *compressed, H, W, wt, bias,
                kh, kw, sh, sw, ph, pw, out)
        self.last_path = "sparse"
        self._saved = (out_shape, x.dtype, "sparse", compressed, wt, x.shape)
        return out.reshape(out_shape)

    def _backward_sparse(self, compressed, wt, in_shape, g_out):
        """Weight gradient event-driven (refsnn.sparse_conv.weight_gradient), input gradient dense
        (dcols = G · Wr, then col2im)."""
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g_out.shape
        B, P = T * N, Ho * Wo
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        g3 = g_out.reshape(B, O, P)
        if "bias" in self.params:  # db = Σ G: pairwise along the contiguous P, then float64 over images
            self.grads["bias"] += g3.sum(axis=2).sum(axis=0, dtype=np.float64)
        g2 = np.ascontiguousarray(g3.transpose(0, 2, 1))                 # G as [B, P, O]
        # images split into parts when there are fewer weight blocks than MAX_BLOCKS (refsnn.threads:
        # the most threads a product is shared by); the parts are added in order, so no bit depends on
        # the thread count or on scheduling
        n_blocks = wt.shape[0]
        parts = 1 if n_blocks >= MAX_BLOCKS else min(B, -(-MAX_BLOCKS // n_blocks))
        grad_wt = np.zeros((parts,) + wt.shape, g_out.dtype)
        _launch(sparse_conv.weight_gradient, g2.size + compressed[1].size, *compressed, H, W,
                g2.reshape(B, Ho, Wo, O), kh, kw, sh, sw, ph, pw, parts, grad_wt)
        for part in range(1, parts):
            grad_wt[0] += grad_wt[part]
        self.grads["weight"] += sparse_conv.unblocked_weight(grad_wt[0], O)
        if not self.needs_input_grad:
            return None
        wr = np.ascontiguousarray(sparse_conv.unblocked_weight(wt, O).transpose(0, 2, 3, 1)).reshape(O, -1)
        dxh = self._input_gradient_nhwc(g2.reshape(B * P, O), wr, in_shape, Ho, Wo)
        return np.ascontiguousarray(dxh.transpose(0, 3, 1, 2)).reshape(in_shape)

    def backward(self, grad_out):
        saved, g_out = _saved_for(self, grad_out)
        if isinstance(saved[0], str) and saved[0] == "time shared":
            if self.needs_input_grad:   # the forward kept one time step only: dL/dx cannot be formed
                raise ValueError("Conv2d: needs_input_grad was set after a forward that computed one time step "
                                 "for all (the input repeats over time and needed no gradient); run the forward again")
            self._saved = saved[1]
            return self.backward(g_out.sum(axis=0, keepdims=True))
        if isinstance(saved[0], str):      # "sparse"
            return self._backward_sparse(*saved[1:], g_out)
        if len(saved) == 3:
            return self._backward_nhwc(*saved, g_out)
        saved_input, weight_g = saved
        in_shape = saved_input.shape
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g_out.shape
        B, P, g = T * N, Ho * Wo, self.groups
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        # G laid out like Y: [O, B·P]
        g_t = np.ascontiguousarray(g_out.reshape(B, O, P).transpose(1, 0, 2)).reshape(g, O // g, B * P)
        if "bias" in self.params:
            self.grads["bias"] += g_t.reshape(O, B * P).sum(axis=1)  # db = Σ G (contiguous rows: pairwise)
        cols = self._patches(saved_input.reshape(B, C, H, W), g_out.dtype, Ho, Wo)
        cols_g = cols.reshape(g, -1, B * P)
        grad_weight_g = self.grads["weight"].reshape(g, O // g, -1)
        for k in range(g):
            # dW = G · colsᵀ. OpenBLAS runs this product with the long inner dimension 2-4x
            # slower when its output is the short-and-wide [O, K] than as (cols · Gᵀ)ᵀ (measured
            # by bench/conv.py), so the larger side goes first.
            if cols_g.shape[1] > g_t.shape[1]:
                grad_weight_g[k] += matmul(cols_g[k], g_t[k].T).T
            else:
                grad_weight_g[k] += matmul(g_t[k], cols_g[k].T)
            if self.needs_input_grad:
                matmul(weight_g[k].T, g_t[k], out=cols_g[k])      # dcols = Wᵀ G, into the cols buffer
        if not self.needs_input_grad:
            return None
        dx = np.zeros((B, C, H, W), dtype=g_out.dtype)
        _launch(_col2im, cols.size, cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dx)
        return dx.reshape(in_shape)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={'bias' in self.params}")


# ------------------------------------------------------------------------------------------
# Pooling. Each output (ho, wo) reads the window rows [h_start[ho], h_end[ho]) and columns
# [w_start[wo], w_end[wo]), already clipped to the input; kernels run in parallel over planes.
# ------------------------------------------------------------------------------------------
def _pool_windows(size, kernel, stride, padding):
    """PyTorch's windows (ceil_mode=False): start = o·s - p, end = start + k, clipped to [0, size)."""
    n_out = (size + 2 * padding - kernel) // stride + 1
    start = np.arange(n_out, dtype=np.int64) * stride - padding
    return np.maximum(start, 0), np.minimum(start + kernel, size)


def _adaptive_windows(size, n_out):
    """PyTorch's adaptive windows: start = ⌊o·size/n⌋, end = ⌈(o+1)·size/n⌉."""
    o = np.arange(n_out, dtype=np.int64)
    return (o * size) // n_out, ((o + 1) * size + n_out - 1) // n_out


@numba.njit(cache=True, parallel=True)
def _avg_pool_forward(x, h_start, h_end, w_start, w_end, divisor, out):
    B, C = x.shape[0], x.shape[1]
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(h_start.size):
            for wo in range(w_start.size):
                total = 0.0
                for h in range(h_start[ho], h_end[ho]):
                    for w in range(w_start[wo], w_end[wo]):
                        total += x[b, c, h, w]
                out[b, c, ho, wo] = total / divisor[ho, wo]


@numba.njit(cache=True, parallel=True)
def _avg_pool_backward(g, h_start, h_end, w_start, w_end, divisor, dx):
    B, C = dx.shape[0], dx.shape[1]
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(h_start.size):
            for wo in range(w_start.size):
                share = g[b, c, ho, wo] / divisor[ho, wo]
                for h in range(h_start[ho], h_end[ho]):
                    for w in range(w_start[wo], w_end[wo]):
                        dx[b, c, h, w] += share


# Non-overlapping windows (stride = kernel, no padding: AvgPool2d(k)): the same float64 sums in
# the same order (window rows, then columns) as _avg_pool_forward, with the row of outputs
# innermost so that the loop vectorizes.
@numba.njit(cache=True, parallel=True)
def _avg_pool_tiles_forward(x, kh, kw, out):
    """out[b, c, ho, wo] = Σ_{i<kh, j<kw} x[b, c, ho·kh + i, wo·kw + j] / (kh·kw)."""
    B, C = x.shape[0], x.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    divisor = float(kh * kw)
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        total = np.empty(Wo)
        for ho in range(Ho):
            total[:] = 0.0
            for i in range(kh):
                row = x[b, c, ho * kh + i]
                for j in range(kw):
                    for wo in range(Wo):
                        total[wo] += row[wo * kw + j]
            out_row = out[b, c, ho]
            for wo in range(Wo):
                out_row[wo] = total[wo] / divisor


@numba.njit(cache=True, parallel=True)
def _avg_pool_tiles_backward(g, kh, kw, dx):
    """dx[b, c, ho·kh + i, wo·kw + j] = g[b, c, ho, wo] / (kh·kw); the rows and columns that no
    window covers (H or W not a multiple of the kernel) are 0."""
    B, C, H, W = dx.shape
    Ho, Wo = g.shape[2], g.shape[3]
    divisor = float(kh * kw)
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(Ho):
            g_row = g[b, c, ho]
            for i in range(kh):
                row = dx[b, c, ho * kh + i]
                if kw == 2:   # the pair stored together (1.7x faster than the loop below)
                    for wo in range(Wo):
                        share = g_row[wo] / divisor
                        row[2 * wo] = share
                        row[2 * wo + 1] = share
                else:
                    for j in range(kw):
                        for wo in range(Wo):
                            row[wo * kw + j] = g_row[wo] / divisor
                row[Wo * kw:] = 0
        dx[b, c, Ho * kh:] = 0


# Adaptive pooling to more outputs than inputs (VGG-11's 7x7 from a 1x1 map): every window is
# one pixel, so the average is that pixel and its gradient the sum of the outputs reading it.
@numba.njit(cache=True, parallel=True)
def _pixel_gather(x, h_start, w_start, out):
    """out[b, c, ho, wo] = x[b, c, h_start[ho], w_start[wo]]."""
    B, C = x.shape[0], x.shape[1]
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(h_start.size):
            row, out_row = x[b, c, h_start[ho]], out[b, c, ho]
            for wo in range(w_start.size):
                out_row[wo] = row[w_start[wo]]


@numba.njit(cache=True, parallel=True)
def _pixel_scatter_add(g, h_start, w_start, dx):
    """dx[b, c, h_start[ho], w_start[wo]] += g[b, c, ho, wo], outputs in row-major order."""
    B, C = g.shape[0], g.shape[1]
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(h_start.size):
            row, g_row = dx[b, c, h_start[ho]], g[b, c, ho]
            for wo in range(w_start.size):
                row[w_start[wo]] += g_row[wo]


@numba.njit(cache=True, parallel=True)
def _max_pool_forward(x, h_start, h_end, w_start, w_end, out, argmax):
    """PyTorch's CPU rule: scan rows then columns, take a value if it is > the best so far or NaN,
    so ties go to the first maximum and NaN propagates. ``argmax`` is the index h·W + w."""
    B, C, H, W = x.shape
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(h_start.size):
            for wo in range(w_start.size):
                best = -np.inf
                best_index = h_start[ho] * W + w_start[wo]
                for h in range(h_start[ho], h_end[ho]):
                    for w in range(w_start[wo], w_end[wo]):
                        v = x[b, c, h, w]
                        if v > best or np.isnan(v):
                            best = v
                            best_index = h * W + w
                out[b, c, ho, wo] = best
                argmax[b, c, ho, wo] = best_index


@numba.njit(cache=True, parallel=True)
def _max_pool_2x2(x, out, argmax):
    """_max_pool_forward for kernel 2, stride 2, no padding: the four values of a window in scan
    order (h, w), (h, w+1), (h+1, w), (h+1, w+1), the same rule with branch-free selects, so the
    loop along a row of outputs vectorizes (5-14x the generic kernel)."""
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(Ho):
            top, bottom = x[b, c, 2 * ho], x[b, c, 2 * ho + 1]
            best_row, index_row = out[b, c, ho], argmax[b, c, ho]
            for wo in range(Wo):
                w = 2 * wo
                best, index = top[w], 2 * ho * W + w
                v = top[w + 1]
                take = (v > best) | (v != v)
                best, index = (v, index + 1) if take else (best, index)
                v = bottom[w]
                take = (v > best) | (v != v)
                best, index = (v, (2 * ho + 1) * W + w) if take else (best, index)
                v = bottom[w + 1]
                take = (v > best) | (v != v)
                best, index = (v, (2 * ho + 1) * W + w + 1) if take else (best, index)
                best_row[wo] = best
                index_row[wo] = index


@numba.njit(cache=True, parallel=True)
def _max_pool_backward(g, argmax, dx):
    """dx[b, c, argmax] += g[b, c, ho, wo]; ``dx`` is [B, C, H·W]."""
    B, C, Ho, Wo = g.shape
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for ho in range(Ho):
            for wo in range(Wo):
                dx[b, c, argmax[b, c, ho, wo]] += g[b, c, ho, wo]


class _Pool2d(Module):
    """Shared plumbing: fold [T, N, C, H, W] to [B, C, H, W], compute windows, run the kernels."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def _fold(self, x):
        x = _check_input(self, x, (5,))
        T, N, C, H, W = x.shape
        h_start, h_end, w_start, w_end = self._windows(H, W)
        if h_start.size < 1 or w_start.size < 1:
            raise ValueError(f"{type(self).__name__}: input {H}x{W} is too small for {self.extra_repr()}")
        return x.reshape(T * N, C, H, W), (h_start, h_end, w_start, w_end)


class _FixedWindowPool(_Pool2d):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"padding {self.padding} must be at most half of kernel_size {self.kernel_size}")

    def _windows(self, H, W):
        return (*_pool_windows(H, self.kernel_size[0], self.stride[0], self.padding[0]),
                *_pool_windows(W, self.kernel_size[1], self.stride[1], self.padding[1]))

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AveragePool(_Pool2d):
    def _divisor(self, windows):
        raise NotImplementedError

    def _tiles(self):
        """(kh, kw) when the windows tile the input without overlap or padding, else None."""
        return None

    def forward(self, x):
        x4, windows = self._fold(x)
        divisor = self._divisor(windows)
        B, C, H, W = x4.shape
        out = np.empty((B, C, windows[0].size, windows[2].size), dtype=x4.dtype)
        tiles = self._tiles()
        if tiles:
            _launch(_avg_pool_tiles_forward, x4.size, x4, *tiles, out)
        elif np.all(divisor == 1):  # every window one pixel (an upsampling adaptive pool): a gather
            h_start, _, w_start, _ = windows
            _launch(_pixel_gather, out.size, x4, h_start, w_start, out)
        else:
            _launch(_avg_pool_forward, x4.size, x4, *windows, divisor, out)
        out_shape = x.shape[:3] + out.shape[2:]
        self._saved = (out_shape, x4.dtype, windows, divisor, x.shape)
        return out.reshape(out_shape)

    def backward(self, grad_out):
        (windows, divisor, in_shape), g = _saved_for(self, grad_out)
        T, N, C, H, W = in_shape
        g4 = g.reshape((T * N, C) + g.shape[3:])
        tiles = self._tiles()
        if tiles:
            dx = np.empty((T * N, C, H, W), dtype=g.dtype)
            _launch(_avg_pool_tiles_backward, dx.size, g4, *tiles, dx)
        elif np.all(divisor == 1):  # one-pixel windows: each output's gradient goes to its pixel
            dx = np.zeros((T * N, C, H, W), dtype=g.dtype)
            h_start, _, w_start, _ = windows
            _launch(_pixel_scatter_add, g4.size, g4, h_start, w_start, dx)
        else:
            dx = np.zeros((T * N, C, H, W), dtype=g.dtype)
            _launch(_avg_pool_backward, dx.size, g4, *windows, divisor, dx)
        return dx.reshape(in_shape)


class AvgPool2d(_FixedWindowPool, _AveragePool):
    """Average pooling as ``torch.nn.AvgPool2d`` (ceil_mode=False, count_include_pad=True):
    every window sum is divided by kh·kw, padded zeros included."""

    def _divisor(self, windows):
        kh, kw = self.kernel_size
        return np.full((windows[0].size, windows[2].size), float(kh * kw))

    def _tiles(self):
        return self.kernel_size if self.stride == self.kernel_size and self.padding == (0, 0) else None


class AdaptiveAvgPool2d(_AveragePool):
    """``torch.nn.AdaptiveAvgPool2d``: output (oh, ow); window o covers [⌊o·H/oh⌋, ⌈(o+1)·H/oh⌉)
    and is averaged over its own size. ``output_size=1`` is the global average; ``None`` in a pair
    keeps that input size."""

    def __init__(self, output_size):
        super().__init__()
        if not isinstance(output_size, (tuple, list)):
            output_size = (output_size, output_size)
        if len(output_size) != 2:
            raise OptionError(f"output_size must be a positive int or a pair of positive ints/None, got {output_size!r}")
        self.output_size = tuple(None if s is None else check_int(s, "output_size", 1) for s in output_size)

    def _windows(self, H, W):
        oh, ow = self.output_size
        return (*_adaptive_windows(H, H if oh is None else oh),
                *_adaptive_windows(W, W if ow is None else ow))

    def _divisor(self, windows):
        h_start, h_end, w_start, w_end = windows
        return np.outer(h_end - h_start, w_end - w_start).astype(np.float64)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class MaxPool2d(_FixedWindowPool):
    """Max pooling as ``torch.nn.MaxPool2d`` (ceil_mode=False, dilation=1). The gradient of each
    window goes to its first maximum (row-major scan), like PyTorch's CPU kernel."""

    def forward(self, x):
        x4, windows = self._fold(x)
        B, C, H, W = x4.shape
        shape = (B, C, windows[0].size, windows[2].size)
        out = np.empty(shape, dtype=x4.dtype)
        argmax = np.empty(shape, dtype=np.int32 if H * W < 2 ** 31 else np.int64)
        if self.kernel_size == self.stride == (2, 2) and self.padding == (0, 0):
            _launch(_max_pool_2x2, x4.size, x4, out, argmax)
        else:
            _launch(_max_pool_forward, x4.size, x4, *windows, out, argmax)
        out_shape = x.shape[:3] + shape[2:]
        self._saved = (out_shape, x4.dtype, argmax, x.shape)
        return out.reshape(out_shape)

    def backward(self, grad_out):
        (argmax, in_shape), g = _saved_for(self, grad_out)
        T, N, C, H, W = in_shape
        dx = np.zeros((T * N, C, H * W), dtype=g.dtype)
        _launch(_max_pool_backward, dx.size, g.reshape(argmax.shape), argmax, dx)
        return dx.reshape(in_shape)


# ------------------------------------------------------------------------------------------
# BatchNorm
#
# x is viewed as [T, N, C, S] (S = flattened spatial size, 1 for [T, N, C]). A statistics group is
# a channel c over (t, n, s) (default: SpikingJelly's multi-step BatchNorm, i.e. torch BatchNorm
# on [T·N, C, ...]) or a pair (t, c) over (n, s) (per_step=True). With M elements per group:
#   μ = mean x,  σ² = mean (x - μ)²  (biased, two passes),  x̂ = (x - μ)/√(σ² + ε),  y = γ x̂ + β
#   running = (1 - m)·running + m·batch  with the unbiased σ²·M/(M-1) for running_var
#   dx = γ/√(σ² + ε) · (g - Σg/M - x̂ · Σ(g x̂)/M),  dγ = Σ g x̂,  dβ = Σ g
# Eval mode uses the running statistics as constants: x̂ = (x - running_mean)/√(running_var + ε),
# dx = γ g /√(running_var + ε). The forward keeps x itself (not x̂) and the backward recomputes x̂
# with the same operations. Sums accumulate in float64 (column sums, below); the elementwise
# kernels run in parallel over groups.
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _group_steps(group, C, T, per_step):
    """Group index -> (step index into the [steps, C] statistics, channel, first t, end t)."""
    step = group // C
    c = group - step * C
    return (step, c, step, step + 1) if per_step else (0, c, 0, T)


# The sums over a group run as column sums of x viewed as [steps, R, J] (J = C·S columns, each
# column one (c, s); R = the rows summed: T·N, or N per step): every row adds into a float64
# vector of J partial sums, which vectorizes along the contiguous columns (a single float64
# scalar per group cannot: each addition waits for the previous one). The S partial sums of
# a channel are then added pairwise by NumPy.
COLUMN_CHUNK = 2048  # columns per task: the float64 partial sums stay in cache


@numba.njit(cache=True)
def _chunk(task, chunks, J):
    """Task -> (step, first column, end column) of a COLUMN_CHUNK-wide chunk."""
    st = task // chunks
    j0 = (task - st * chunks) * COLUMN_CHUNK
    return st, j0, min(J, j0 + COLUMN_CHUNK)


@numba.njit(cache=True, parallel=True)
def _column_sums(x, sums):
    """sums[st, j] = Σ_r x[st, r, j]."""
    steps, R, J = x.shape
    chunks = (J + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for task in prange(steps * chunks):
        st, j0, j1 = _chunk(task, chunks, J)
        acc = np.zeros(j1 - j0)
        for r in range(R):
            row = x[st, r, j0:j1]
            for j in range(j1 - j0):
                acc[j] += row[j]
        sums[st, j0:j1] = acc


@numba.njit(cache=True, parallel=True)
def _column_squares(x, mu, sums):
    """sums[st, j] = Σ_r (x[st, r, j] - mu[st, j])²."""
    steps, R, J = x.shape
    chunks = (J + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for task in prange(steps * chunks):
        st, j0, j1 = _chunk(task, chunks, J)
        acc = np.zeros(j1 - j0)
        m = mu[st, j0:j1]
        for r in range(R):
            row = x[st, r, j0:j1]
            for j in range(j1 - j0):
                d = row[j] - m[j]
                acc[j] += d * d
        sums[st, j0:j1] = acc


@numba.njit(cache=True, parallel=True)
def _column_products(g, x, mu, sums):
    """sums[st, j] = Σ_r g[st, r, j]·(x[st, r, j] - mu[st, j])."""
    steps, R, J = x.shape
    chunks = (J + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for task in prange(steps * chunks):
        st, j0, j1 = _chunk(task, chunks, J)
        acc = np.zeros(j1 - j0)
        m = mu[st, j0:j1]
        for r in range(R):
            row, grad = x[st, r, j0:j1], g[st, r, j0:j1]
            for j in range(j1 - j0):
                acc[j] += grad[j] * (row[j] - m[j])
        sums[st, j0:j1] = acc


def _group_sums(column_sums, C):
    """[steps, C·S] column sums -> [steps, C] group sums (pairwise over S)."""
    return column_sums.reshape(column_sums.shape[0], C, -1).sum(axis=2)


def _bn_statistics(x, per_step, mean, var):
    """mean, var [steps, C] of x [T, N, C, S]: μ = Σx/M, σ² = Σ(x - μ)²/M (two passes, float64)."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    x3 = x.reshape(steps, -1, C * S)
    count = x3.shape[1] * S
    sums = np.empty((steps, C * S))
    _launch(_column_sums, x.size, x3, sums)
    mean[...] = _group_sums(sums, C) / count
    _launch(_column_squares, x.size, x3, np.repeat(mean, S, axis=1), sums)
    var[...] = _group_sums(sums, C) / count


@numba.njit(cache=True, parallel=True)
def _bn_normalize(x, per_step, mean, inv_std, gamma, beta, y):
    """y = (x - μ)·(γ/√(σ²+ε)) + β."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    for group in prange(steps * C):
        step, c, t0, t1 = _group_steps(group, C, T, per_step)
        mu, scale, shift = mean[step, c], gamma[c] * inv_std[step, c], beta[c]
        for t in range(t0, t1):
            for n in range(N):
                for s in range(S):
                    y[t, n, c, s] = (x[t, n, c, s] - mu) * scale + shift


def _bn_backward(g, x, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx):
    """Fills Σg and Σ g·x̂ = Σ g·(x - μ) · 1/√(σ²+ε) per group (column sums), then dx (see the
    comment above)."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    g3, x3 = g.reshape(steps, -1, C * S), x.reshape(steps, -1, C * S)
    sums = np.empty((steps, C * S))
    _launch(_column_sums, x.size, g3, sums)
    sum_g[...] = _group_sums(sums, C)
    _launch(_column_products, x.size, g3, x3, np.repeat(mean, S, axis=1), sums)
    sum_g_xhat[...] = _group_sums(sums, C) * inv_std
    _launch(_bn_input_gradient, x.size, g, x, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx)


@numba.njit(cache=True, parallel=True)
def _bn_input_gradient(g, x, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx):
    """dx = γ/√(σ²+ε) · (g - Σg/M - x̂ · Σ(g x̂)/M) (training), γ g/√(running_var + ε) (eval)."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    for group in prange(steps * C):
        step, c, t0, t1 = _group_steps(group, C, T, per_step)
        mu, r = mean[step, c], inv_std[step, c]
        count = (t1 - t0) * N * S
        scale = gamma[c] * r
        mean_g = sum_g[step, c] / count if training else 0.0
        mean_g_xhat = sum_g_xhat[step, c] / count if training else 0.0
        for t in range(t0, t1):
            for n in range(N):
                for s in range(S):
                    x_hat = (x[t, n, c, s] - mu) * r
                    dx[t, n, c, s] = scale * (g[t, n, c, s] - mean_g - x_hat * mean_g_xhat)


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, per_step=False, dtype=np.float32):
        super().__init__()
        num_features, dtype = check_int(num_features, "num_features", 1), float_dtype(dtype)
        if momentum is not None:
            momentum = check_real(momentum, "momentum (None for a cumulative average)", 0.0, 1.0)
        self.num_features, self.eps, self.momentum = num_features, check_real(eps, "eps", 0, low_open=True), momentum
        self.affine, self.per_step = check_flag(affine, "affine"), check_flag(per_step, "per_step")
        if affine:
            self.add_param("weight", np.ones(num_features, dtype=dtype))
            self.add_param("bias", np.zeros(num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self._saved = None

    def _affine(self):
        """γ and β as float64 (ones and zeros without affine)."""
        if self.affine:
            return self.params["weight"].astype(np.float64), self.params["bias"].astype(np.float64)
        return np.ones(self.num_features), np.zeros(self.num_features)

    def _update_running(self, means, variances, count):
        """One PyTorch update per row of ``means``/``variances`` ([steps, C]), in order. A batch
        variance beyond the buffers' dtype (float32 inputs near 1e19 and above) is refused
        before any buffer changes, instead of an Inf that would zero every eval-mode output."""
        running_mean, running_var = self.buffers["running_mean"].copy(), self.buffers["running_var"].copy()
        tracked = self.buffers["num_batches_tracked"].copy()
        with np.errstate(over="ignore"):
            for mean, var in zip(means, variances):
                tracked += 1
                m = 1.0 / float(tracked) if self.momentum is None else self.momentum
                running_mean[...] = (1 - m) * running_mean + m * mean
                running_var[...] = (1 - m) * running_var + m * var * (count / (count - 1))
        if not (np.all(np.isfinite(running_var)) and np.all(np.isfinite(running_mean))):
            raise NonFiniteError(f"{type(self).__name__}: the running variance overflowed {running_var.dtype} "
                                 f"(batch variance up to {float(np.max(variances)):.3g}); the input was finite")
        for name, value in (("running_mean", running_mean), ("running_var", running_var),
                            ("num_batches_tracked", tracked)):
            self.buffers[name][...] = value

    def forward(self, x):
        x = _check_input(self, x, self._ndims)
        _check_channels(self, x, 2, self.num_features)
        T, N, C = x.shape[:3]
        x4 = x.reshape(T, N, C, -1)
        if self.training:
            count = N * x4.shape[3] * (1 if self.per_step else T)
            if count < 2:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                                 f"training, got input of shape {x.shape}")
            steps = T if self.per_step else 1
            mean, var = np.empty((steps, C)), np.empty((steps, C))
            _bn_statistics(x4, self.per_step, mean, var)
            if not np.all(np.isfinite(var)):
                raise NonFiniteError(f"{type(self).__name__}: " + (
                    "input contains NaN/Inf" if not np.all(np.isfinite(x4)) else
                    f"the batch statistics overflowed float64 (largest |input| {float(np.max(np.abs(x4))):.3g})"))
            self._update_running(mean, var, count)
        else:
            mean = self.buffers["running_mean"].astype(np.float64).reshape(1, C)
            var = self.buffers["running_var"].astype(np.float64).reshape(1, C)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        gamma, beta = self._affine()
        y = np.empty_like(x4)
        _launch(_bn_normalize, x4.size, x4, self.per_step and self.training, mean, inv_std, gamma, beta, y)
        self._saved = (x.shape, x.dtype, x4, mean, inv_std, gamma, self.training)
        return y.reshape(x.shape)

    def backward(self, grad_out):
        (x4, mean, inv_std, gamma, training), g = _saved_for(self, grad_out)
        per_step = self.per_step and training
        sum_g, sum_g_xhat = np.empty_like(mean), np.empty_like(mean)
        dx = np.empty_like(x4)
        _bn_backward(g.reshape(x4.shape), x4, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx)
        if self.affine:
            self.grads["weight"] += sum_g_xhat.sum(axis=0)   # dγ = Σ g x̂
            self.grads["bias"] += sum_g.sum(axis=0)          # dβ = Σ g
        return dx.reshape(g.shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"per_step={self.per_step}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm over channels of ``[T, N, C]`` or ``[T, N, C, L]`` (see the comment above)."""
    _ndims = (3, 4)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over channels of ``[T, N, C, H, W]`` (see the comment above)."""
    _ndims = (5,)


# ------------------------------------------------------------------------------------------
# Dropout, Flatten, ReLU, ClippedReLU
# ------------------------------------------------------------------------------------------
class Dropout(Module):
    """Dropout with one mask per forward, shape ``[1, N, ...]``, shared by all T steps
    (SpikingJelly ``layer.Dropout``): y = x · mask, mask ∈ {0, 1/(1-p)}, P(keep) = 1 - p.
    Identity in eval mode. The mask is drawn from ``self.rng`` (an ``np.random.Generator``)."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_real(p, "dropout probability p", 0.0, 1.0)
        self.rng = np.random.default_rng(0) if rng is None else rng
        self._saved = None

    def forward(self, x):
        x = _check_input(self, x, None, min_ndim=2)
        if not self.training or self.p == 0.0:
            mask = None
            y = x
        else:
            keep = self.rng.random((1,) + x.shape[1:]) < 1.0 - self.p
            scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
            mask = keep.astype(x.dtype) * x.dtype.type(scale)
            y = x * mask
        self._saved = (x.shape, x.dtype, mask)
        return y

    def backward(self, grad_out):
        (mask,), g = _saved_for(self, grad_out)
        return g if mask is None else g * mask   # identity (eval, p = 0): the gradient itself, as the forward

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """``[T, N, ...]`` -> ``[T, N, prod(...)]``."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def forward(self, x):
        x = _check_input(self, x, None, min_ndim=3)
        out_shape = x.shape[:2] + (int(np.prod(x.shape[2:], dtype=np.int64)),)
        self._saved = (out_shape, x.dtype, x.shape)
        return x.reshape(out_shape)

    def backward(self, grad_out):
        (in_shape,), g = _saved_for(self, grad_out)
        return g.reshape(in_shape)


class ReLU(Module):
    """y = max(x, 0); dy/dx = 1{x > 0} (0 at x = 0, as PyTorch)."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def forward(self, x):
        x = _check_input(self, x, None, min_ndim=2)
        positive = x > 0
        self._saved = (x.shape, x.dtype, positive)
        return np.maximum(x, 0)

    def backward(self, grad_out):
        (positive,), g = _saved_for(self, grad_out)
        return g * positive


class ClippedReLU(Module):
    """PACT clipped ReLU y = min(max(x, 0), μ) with a learnable scalar μ = ``threshold`` (shape ()).

    dy/dx = 1{0 < x ≤ μ},  dy/dμ = 1{max(x, 0) > μ}  (= 1{x > μ} for μ ≥ 0)."""

    def __init__(self, init_threshold=4.0, dtype=np.float32):
        super().__init__()
        init_threshold = check_real(init_threshold, "init_threshold", 0, low_open=True)
        self.add_param("threshold", np.array(init_threshold, dtype=float_dtype(dtype)))
        self._saved = None

    def forward(self, x):
        x = _check_input(self, x, None, min_ndim=2)
        mu = self.params["threshold"]
        relu = np.maximum(x, 0)
        clipped = relu > mu
        self._saved = (x.shape, x.dtype, (x > 0) & ~clipped, clipped)
        return np.minimum(relu, mu)

    def backward(self, grad_out):
        (passing, clipped), g = _saved_for(self, grad_out)
        self.grads["threshold"] += np.sum(g, where=clipped)  # contiguous: pairwise
        return g * passing

    def extra_repr(self):
        return f"threshold={float(self.params['threshold'])}"
