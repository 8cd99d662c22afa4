"""Conv2d: 2-D convolution (cross-correlation, as PyTorch) of [T, N, C, H, W], forward and backward.

Time folds into the batch: B = T·N images x [B, C, H, W], weight W [O, C/groups, kh, kw], output
Y [B, O, Ho, Wo] with Ho = (H + 2·ph - kh) // sh + 1 (likewise Wo), P = Ho·Wo output pixels.

Three paths, chosen per forward (``last_path``):

"nchw" (groups > 1, or 1-4 input channels): im2col + GEMM (the kernels: refsnn.layers.conv_patches).
    im2col (parallel over (image, channel) planes) writes the patch matrix
        cols[(c, i, j), (b, ho, wo)] = x_padded[b, c, ho·sh + i, wo·sw + j]       [K = C·kh·kw, B·P]
    forward        Y = W · cols                       (one product per group), [O, B, P] -> [B, O, P]
    weight grad    dW = G · colsᵀ                     (cols rebuilt from the saved input)
    input grad     dcols = Wᵀ · G, written into the cols buffer, then col2im adds each column back
                   into dX (parallel over planes, so no two threads touch the same pixel).
    With groups the rows of cols split into contiguous blocks, one per group.
"nhwc" (groups = 1, more than NCHW_MAX_CHANNELS input channels): the same with channels last,
    xh [B, H, W, C], cols [B·P, kh·kw·C], cols[(b, ho, wo), (i, j, c)] = xh[b, ho·sh + i - ph, wo·sw + j - pw, c]
    (0 in the padding), and the weight as Wr [O, (i, j, c)] = W[o, c, i, j]: every tap reads or
    writes C contiguous values instead of a strided window of a plane. Y = cols · Wrᵀ, dWr = Gᵀ · cols,
    dcols = G · Wr then col2im (or one product per tap on small maps, _input_gradient_nhwc).
"sparse" (few non-zero inputs; refsnn.layers.conv_events): forward and weight gradient over the
    per-pixel active channels; the input gradient as on the "nhwc" path.

The products run on refsnn.threads.matmul. Memory: the layer saves its input, not the patches (kh·kw
times larger): the backward rebuilds them. Spike inputs (every value 0 or 1) are saved as uint8, a
quarter of float32 (the channels-last path saves its NHWC copy of the input: uint8 for spikes, else
float). The patches live in one workspace shared by every Conv2d, since they are needed only inside
one call: the process holds the largest layer's patches once (and never page-faults a fresh buffer
per call). Plain NumPy references (``*_reference``) stand beside the input checks below; the tests
compare them.
"""
import math

import numba
import numpy as np
from numba import prange

from ..module import Module, check_flag, check_float_array, check_int, float_dtype
from ..threads import MAX_BLOCKS, matmul
from . import conv_events
from .common import check_channels, check_input, launch, pair, save_for_backward, saved_for_backward, uniform
from .conv_patches import col2im, col2im_nhwc, im2col, im2col_nhwc, valid_range

NCHW_MAX_CHANNELS = 4  # up to this many input channels the NCHW kernels are faster (bench/conv.py)
# Event-driven path (refsnn.layers.conv_events) for inputs with few non-zeros, groups = 1 and more
# than NCHW_MAX_CHANNELS channels (up to 65536: channel indices are uint16). It is taken when its
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

_workspace = [np.empty(0, np.uint8)]


def _shared_workspace(shape, dtype):
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if _workspace[0].nbytes < nbytes:
        _workspace[0] = np.empty(nbytes, np.uint8)
    return _workspace[0][:nbytes].view(dtype).reshape(shape)


# ------------------------------------------------------------------------------------------
# what the forward checks of its input: spikes (saved as uint8), the same input at every step
# ------------------------------------------------------------------------------------------
def to_spikes_reference(x):
    """NumPy: (x != 0) as uint8, and whether every element of x is 0 or 1."""
    return (x != 0).astype(np.uint8), bool(np.all((x == 0) | (x == 1)))


@numba.njit(cache=True, parallel=True)
def _to_spikes(x, spikes):
    """spikes = x as uint8 if every element of x (flat) is 0 or 1; returns whether it was."""
    size = x.size
    blocks = (size + 4095) // 4096
    binary = np.ones(blocks, np.bool_)
    for blk in prange(blocks):
        bad = 0
        for i in range(blk * 4096, min(size, (blk + 1) * 4096)):   # branch-free: vectorizes
            v = x[i]
            s = np.uint8(v != 0)
            spikes[i] = s
            bad |= np.uint8(v != s)                               # v not 0 or 1 (or NaN)
        binary[blk] = bad == 0
    return binary.all()


def same_every_step_reference(x):
    """NumPy: whether every row of x [T, size] equals its first (a NaN never equals)."""
    return bool(np.all(x == x[:1]))


@numba.njit(cache=True)
def _same_every_step(x):
    """Whether every row of x [T, size] equals its first (bit for bit; a NaN never equals)."""
    T, size = x.shape
    for t in range(1, T):
        for lo in range(0, size, 4096):
            same = True
            for i in range(lo, min(size, lo + 4096)):   # branch-free: vectorizes
                same &= x[t, i] == x[0, i]
            if not same:
                return False
    return True


# ------------------------------------------------------------------------------------------
# the layer
# ------------------------------------------------------------------------------------------
class Conv2d(Module):
    """2-D convolution (cross-correlation, as PyTorch) of ``[T, N, C, H, W]``.

    Weight ``[out_channels, in_channels/groups, kh, kw]``; initialization as ``torch.nn.Conv2d``:
    W, b ~ U(-1/√fan_in, 1/√fan_in), fan_in = in_channels/groups·kh·kw. Output size
    ``(H + 2·padding - kh) // stride + 1``. See the module docstring for the algorithm.

    Memory: the layer keeps its input for the weight gradient (as uint8 when it is spikes; as
    its per-pixel active channels and values when the event-driven path ran).

    Paths (``last_path`` after a forward): "sparse" (refsnn.layers.conv_events: forward and weight
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
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        dtype = float_dtype(dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        rng = np.random.default_rng(0) if rng is None else rng
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        self.add_param("weight", uniform(rng, bound, (out_channels, in_channels // groups, kh, kw), dtype))
        if check_flag(bias, "bias"):
            self.add_param("bias", uniform(rng, bound, (out_channels,), dtype))
        self.needs_input_grad = True
        self.last_path = None   # "sparse", "nhwc" or "nchw": the path the last forward took
        self.last_time_shared = False   # whether it convolved one time step for all (see forward)
        self._saved = None

    def output_size(self, H, W):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1

    def forward(self, x):
        x = check_input(self, x, (5,))
        check_channels(self, x, 2, self.in_channels)
        T, N, C, H, W = x.shape
        Ho, Wo = self.output_size(H, W)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"Conv2d: input {H}x{W} with padding {self.padding} is smaller than "
                             f"the kernel {self.kernel_size}")
        B = T * N
        out_shape = (T, N, self.out_channels, Ho, Wo)
        self.last_time_shared = False
        if T > 1 and not self.needs_input_grad and _same_every_step(x.reshape(T, -1)):
            # the same input at every time step (direct encoding into the first layer): convolve
            # the N images once; backward: dW = Σ_t G_t ⋆ x_0 = (Σ_t G_t) ⋆ x_0
            y = self.forward(x[:1])
            self.last_time_shared = True
            save_for_backward(self, out_shape, x.dtype, "time shared", self._saved, self._output_like)
            return np.ascontiguousarray(np.broadcast_to(y, out_shape))
        if self.groups == 1 and NCHW_MAX_CHANNELS < C <= SPARSE_MAX_CHANNELS:
            counts = np.empty(B * H * W, np.int32)
            launch(conv_events.count_active, x.size, x.reshape(B, C, H * W), counts)
            if self._sparse_pays(int(counts.sum(dtype=np.int64)), x.shape, Ho, Wo):
                return self._forward_sparse(x, counts, out_shape)
        spikes = np.empty(x.shape, np.uint8)
        binary = launch(_to_spikes, x.size, x.reshape(-1), spikes.reshape(-1))
        if self.groups == 1 and C > NCHW_MAX_CHANNELS:
            return self._forward_nhwc(x, spikes if binary else x, out_shape)
        return self._forward_nchw(x, spikes if binary else x, out_shape)

    def backward(self, grad_out):
        saved, g = saved_for_backward(self, grad_out)
        path = saved[0]
        if path == "time shared":
            if self.needs_input_grad:   # the forward kept one time step only: dL/dx cannot be formed
                raise ValueError("Conv2d: needs_input_grad was set after a forward that computed one time step "
                                 "for all (the input repeats over time and needed no gradient); run the forward again")
            self._saved, self._output_like = saved[1], saved[2]
            return self.backward(g.sum(axis=0, keepdims=True))
        if path == "sparse":
            return self._backward_sparse(*saved[1:], g)
        if path == "nhwc":
            return self._backward_nhwc(*saved[1:], g)
        return self._backward_nchw(*saved[1:], g)

    # ---- "nchw": im2col + GEMM, one product per group ------------------------------------------
    def _patches(self, x, dtype, Ho, Wo):
        """The patch matrix of x [B, C, H, W] (any real dtype) in ``dtype``, in the shared workspace."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, C = x.shape[:2]
        cols = _shared_workspace((C * kh * kw, B * Ho * Wo), dtype)
        launch(im2col, cols.size, x, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
        return cols

    def _forward_nchw(self, x, source, out_shape):
        """Y = W · cols per group; ``source`` is x or its uint8 spikes, saved for the backward."""
        T, N, C, H, W = x.shape
        O, Ho, Wo = out_shape[2:]
        B, P, groups = T * N, Ho * Wo, self.groups
        self.last_path = "nchw"
        cols = self._patches(x.reshape(B, C, H, W), x.dtype, Ho, Wo)
        cols_groups = cols.reshape(groups, -1, B * P)                       # [groups, K/groups, B·P]
        weight_groups = self.params["weight"].reshape(groups, O // groups, -1)
        y = np.empty((groups, O // groups, B * P), dtype=x.dtype)
        for k in range(groups):
            matmul(weight_groups[k], cols_groups[k], out=y[k])            # Y = W · cols
        y = y.reshape(O, B, P)
        out = np.empty((B, O, P), dtype=x.dtype)
        if "bias" in self.params:
            np.add(y.transpose(1, 0, 2), self.params["bias"][:, None], out=out)
        else:
            out[...] = y.transpose(1, 0, 2)
        save_for_backward(self, out_shape, x.dtype, "nchw", source, weight_groups)
        return out.reshape(out_shape)

    def _backward_nchw(self, source, weight_groups, g):
        in_shape = source.shape
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g.shape
        B, P, groups = T * N, Ho * Wo, self.groups
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        # G laid out like Y: [O, B·P]
        g_t = np.ascontiguousarray(g.reshape(B, O, P).transpose(1, 0, 2)).reshape(groups, O // groups, B * P)
        if "bias" in self.params:
            self.grads["bias"] += g_t.reshape(O, B * P).sum(axis=1)  # db = Σ G (contiguous rows: pairwise)
        cols = self._patches(source.reshape(B, C, H, W), g.dtype, Ho, Wo)
        cols_groups = cols.reshape(groups, -1, B * P)
        dweight_groups = self.grads["weight"].reshape(groups, O // groups, -1)
        for k in range(groups):
            # dW = G · colsᵀ. OpenBLAS runs this product with the long inner dimension 2-4x
            # slower when its output is the short-and-wide [O, K] than as (cols · Gᵀ)ᵀ (measured
            # by bench/conv.py), so the larger side goes first.
            if cols_groups.shape[1] > g_t.shape[1]:
                dweight_groups[k] += matmul(cols_groups[k], g_t[k].T).T
            else:
                dweight_groups[k] += matmul(g_t[k], cols_groups[k].T)
            if self.needs_input_grad:
                matmul(weight_groups[k].T, g_t[k], out=cols_groups[k])      # dcols = Wᵀ G, into the cols buffer
        if not self.needs_input_grad:
            return None
        dx = np.zeros((B, C, H, W), dtype=g.dtype)
        launch(col2im, cols.size, cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dx)
        return dx.reshape(in_shape)

    # ---- "nhwc": channels-last im2col + GEMM ---------------------------------------------------
    def _patches_nhwc(self, xh, dtype, Ho, Wo):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, C = xh.shape[0], xh.shape[3]
        cols = _shared_workspace((B * Ho * Wo, kh * kw * C), dtype)
        launch(im2col_nhwc, cols.size, xh, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
        return cols

    def _forward_nhwc(self, x, source, out_shape):
        """Y = cols · Wrᵀ with NHWC patches (conv_patches.im2col_nhwc); ``source`` is x or its uint8 spikes,
        saved for the backward in NHWC [B, H, W, C]."""
        T, N, C, H, W = x.shape
        O, Ho, Wo = out_shape[2:]
        B, P = T * N, Ho * Wo
        self.last_path = "nhwc"
        xh = np.ascontiguousarray(source.reshape(B, C, H, W).transpose(0, 2, 3, 1))
        cols = self._patches_nhwc(xh, x.dtype, Ho, Wo)                   # [B·P, K]
        wr = np.ascontiguousarray(self.params["weight"].transpose(0, 2, 3, 1)).reshape(O, -1)
        y = matmul(cols, wr.T).reshape(B, P, O)                               # Y = cols · Wrᵀ
        out = np.empty((B, O, P), dtype=x.dtype)
        if "bias" in self.params:
            np.add(y.transpose(0, 2, 1), self.params["bias"][:, None], out=out)
        else:
            out[...] = y.transpose(0, 2, 1)
        save_for_backward(self, out_shape, x.dtype, "nhwc", xh, wr, x.shape)
        return out.reshape(out_shape)

    def _backward_nhwc(self, xh, wr, in_shape, g):
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g.shape
        B, P = T * N, Ho * Wo
        kh, kw = self.kernel_size
        g3 = g.reshape(B, O, P)
        if "bias" in self.params:  # db = Σ G: pairwise along the contiguous P, then float64 over images
            self.grads["bias"] += g3.sum(axis=2).sum(axis=0, dtype=np.float64)
        g2 = np.ascontiguousarray(g3.transpose(0, 2, 1)).reshape(B * P, O)   # G as [B·P, O]
        cols = self._patches_nhwc(xh, g.dtype, Ho, Wo)
        # dWr = Gᵀ · cols [O, K], computed as (colsᵀ · G)ᵀ: OpenBLAS is 1.3-4x slower on the
        # short-and-wide output at 2 threads (bench/conv.py), and about even at 1
        dwr = matmul(cols.T, g2).T
        self.grads["weight"] += dwr.reshape(O, kh, kw, C).transpose(0, 3, 1, 2)
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
        ranges_h = [valid_range(Ho, sh, i - ph, H) for i in range(kh)]
        ranges_w = [valid_range(Wo, sw, j - pw, W) for j in range(kw)]
        valid = sum(hi - lo for lo, hi in ranges_h) * sum(hi - lo for lo, hi in ranges_w)
        if valid >= PER_TAP_MAX_VALID * kh * kw * Ho * Wo:
            if cols is None:
                cols = _shared_workspace((B * Ho * Wo, kh * kw * C), g2.dtype)
            matmul(g2, wr, out=cols)                                  # dcols = G · Wr
            dxh = np.empty((B, H, W, C), dtype=g2.dtype)
            launch(col2im_nhwc, cols.size, cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dxh)
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

    # ---- "sparse": event-driven forward and weight gradient (refsnn.layers.conv_events) ---------
    def _sparse_pays(self, nnz, in_shape, Ho, Wo):
        """Whether the event-driven path is expected to beat im2col + GEMM for an input with ``nnz``
        non-zeros: its multiply-adds (one per active input, valid tap and output channel, the
        channels rounded up to blocks) times SPARSE_COST against the dense multiply-adds (every
        tap, valid or in the padding)."""
        T, N, C, H, W = in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        valid_h = sum(hi - lo for lo, hi in (valid_range(Ho, sh, i - ph, H) for i in range(kh)))
        valid_w = sum(hi - lo for lo, hi in (valid_range(Wo, sw, j - pw, W) for j in range(kw)))
        o_blocks = -(-self.out_channels // conv_events.BLOCK) * conv_events.BLOCK
        sparse = nnz / (T * N * H * W) * T * N * valid_h * valid_w * o_blocks
        dense = T * N * Ho * Wo * kh * kw * C * self.out_channels
        return sparse * SPARSE_COST < dense

    def _forward_sparse(self, x, counts, out_shape):
        """x compressed to its per-pixel active channels, which are saved for the weight gradient
        instead of x."""
        T, N, C, H, W = x.shape
        O, Ho, Wo = out_shape[2:]
        B = T * N
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        compressed = conv_events.compress(x.reshape(B, C, H * W), counts)
        wt = conv_events.blocked_weight(self.params["weight"])
        bias = np.zeros(wt.shape[0] * conv_events.BLOCK, x.dtype)
        if "bias" in self.params:
            bias[:O] = self.params["bias"]
        out = np.empty((B, O, Ho, Wo), x.dtype)
        launch(conv_events.forward, out.size + compressed[1].size, *compressed, H, W, wt, bias,
               kh, kw, sh, sw, ph, pw, out)
        self.last_path = "sparse"
        save_for_backward(self, out_shape, x.dtype, "sparse", compressed, wt, x.shape)
        return out.reshape(out_shape)

    def _backward_sparse(self, compressed, wt, in_shape, g):
        """Weight gradient event-driven (conv_events.weight_gradient), input gradient dense
        (dcols = G · Wr, then col2im)."""
        T, N, C, H, W = in_shape
        _, _, O, Ho, Wo = g.shape
        B, P = T * N, Ho * Wo
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        g3 = g.reshape(B, O, P)
        if "bias" in self.params:  # db = Σ G: pairwise along the contiguous P, then float64 over images
            self.grads["bias"] += g3.sum(axis=2).sum(axis=0, dtype=np.float64)
        g2 = np.ascontiguousarray(g3.transpose(0, 2, 1))                 # G as [B, P, O]
        # images split into parts when there are fewer weight blocks than MAX_BLOCKS (refsnn.threads:
        # the most threads a product is shared by); the parts are added in order, so no bit depends on
        # the thread count or on scheduling
        n_blocks = wt.shape[0]
        parts = 1 if n_blocks >= MAX_BLOCKS else min(B, -(-MAX_BLOCKS // n_blocks))
        dwt = np.zeros((parts,) + wt.shape, g.dtype)
        launch(conv_events.weight_gradient, g2.size + compressed[1].size, *compressed, H, W,
               g2.reshape(B, Ho, Wo, O), kh, kw, sh, sw, ph, pw, parts, dwt)
        for part in range(1, parts):
            dwt[0] += dwt[part]
        self.grads["weight"] += conv_events.unblocked_weight(dwt[0], O)
        if not self.needs_input_grad:
            return None
        wr = np.ascontiguousarray(conv_events.unblocked_weight(wt, O).transpose(0, 2, 3, 1)).reshape(O, -1)
        dxh = self._input_gradient_nhwc(g2.reshape(B * P, O), wr, in_shape, Ho, Wo)
        return np.ascontiguousarray(dxh.transpose(0, 3, 1, 2)).reshape(in_shape)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={'bias' in self.params}")


class Conv1d(Module):
    """1-D convolution of ``[T, N, C, L]`` as ``torch.nn.Conv1d`` (NIR's ``Conv1d``): the Conv2d above
    over ``[T, N, C, 1, L]`` with its kernel ``[out, in/groups, 1, k]``, stride ``(1, s)`` and padding
    ``(0, p)``. Weight ``[out_channels, in_channels/groups, k]`` and bias ``[out_channels]``, initialized
    as ``torch.nn.Conv1d`` (the same draws as the Conv2d's). Output length ``(L + 2·padding − k) // stride + 1``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, groups=1, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.kernel_size, self.stride, self.padding = (check_int(kernel_size, "kernel_size", 1),
                                                       check_int(stride, "stride", 1), check_int(padding, "padding", 0))
        self._conv = Conv2d(in_channels, out_channels, (1, self.kernel_size), (1, self.stride), (0, self.padding),
                            bias, groups, rng, dtype)   # not a child: it runs on this layer's own arrays
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, self._conv.groups
        for name, p in self._conv.params.items():
            self.add_param(name, p.reshape(p.shape[:2] + p.shape[3:]) if p.ndim == 4 else p)

    def _bind(self):
        """Hand the Conv2d this layer's parameters and gradients, viewed 4-D (``to`` and ``load_state_dict``
        may have replaced them since the last call)."""
        for name, p in self.params.items():
            four_d = (lambda a: a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])) if p.ndim == 3 else (lambda a: a)
            self._conv.params[name], self._conv.grads[name] = four_d(p), four_d(self.grads[name])

    def output_size(self, L):
        return self._conv.output_size(1, L)[1]

    def forward(self, x):
        x = check_input(self, x, (4,))                        # [T, N, C, L]
        self._bind()
        return self._conv.forward(x[:, :, :, None, :])[:, :, :, 0, :]

    def backward(self, grad_out):
        self._bind()
        grad_x = self._conv.backward(check_float_array(grad_out, "grad_out")[:, :, :, None, :])
        return None if grad_x is None else grad_x[:, :, :, 0, :]

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={'bias' in self.params}")
