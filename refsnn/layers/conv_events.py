"""Event-driven convolution: Conv2d's forward and weight gradient for an input with few non-zeros
(refsnn.layers.conv chooses this path per call, see SPARSE_COST there).

A spiking layer's input is mostly zeros (spikes at a firing rate of 3-25%, or their average
pooling). im2col + GEMM multiplies every zero; here the work is proportional to the non-zeros.

The input x [B, C, H, W] is compressed once per forward into a list of active channels per pixel
(CSR over the pixels p = (b·H + h)·W + w, channels in increasing order):

    offsets  [B·H·W + 1]   entries of pixel p are e in [offsets[p], offsets[p + 1])
    channels [nnz] uint16  the channel c of entry e
    vals     [nnz]         x[b, c, h, w] (1 for a spike; any value is taken: it multiplies a weight row)

Weights and weight gradients are used in blocks of BLOCK output channels, contiguous per (tap, c):

    wt [n_blocks, kh, kw, C, BLOCK],  wt[k, i, j, c, o'] = W[k·BLOCK + o', c, i, j]  (0 past out_channels)

With the output pixel (b, ho, wo) at input position h = ho·sh + i - ph, w = wo·sw + j - pw for the
tap (i, j) (taps in the padding see zeros and are skipped):

    forward          Y[b, o, ho, wo] = bias[o] + Σ_(i, j) Σ_(e of pixel (b, h, w)) vals[e] · W[o, channels[e], i, j]
    weight gradient  dW[o, c, i, j]  = Σ_(b, ho, wo) Σ_(e of pixel (b, h, w), channels[e] = c) vals[e] · G[b, o, ho, wo]

Both kernels keep a block of BLOCK float accumulators (or one BLOCK-row of G) in a stack buffer
that LLVM holds in vector registers (4 zmm for float32): one vector fused multiply-add per
weight-row load, and no store inside the loop over entries. The sums run in another order than
the dense GEMM's, so the results equal the dense path's to rounding. The input gradient stays
dense (Conv2d: dcols = G·Wr, then col2im). Plain NumPy references beside each kernel
(``*_reference``, built on refsnn.layers.conv_patches' ``padded`` and ``tap_windows``) state the same maths and are what the tests compare the kernels with.
"""
import ctypes

import numba
import numpy as np
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .conv_patches import padded, tap_windows, valid_taps

BLOCK = 64  # output channels per register block: 4 x 16 float32 (one zmm each)


@intrinsic
def _stack_block(typingctx, dtype):
    """A pointer to BLOCK elements of ``dtype`` on the stack of the calling kernel (an LLVM
    alloca): unlike an np.empty buffer, LLVM can tell it aliases no array and keep it in registers."""
    elem = dtype.dtype

    def codegen(context, builder, signature, args):
        size = context.get_constant(types.intp, BLOCK)
        return cgutils.alloca_once(builder, context.get_value_type(elem), size=size)
    return types.CPointer(elem)(dtype), codegen


if numba.config.DISABLE_JIT:  # pure-Python mode (NUMBA_DISABLE_JIT=1): an intrinsic cannot run, so
    # each dtype gets one buffer of BLOCK elements, safe because prange then runs serially
    _BLOCK_BUFFERS = {np.dtype(t): np.empty(BLOCK, t) for t in (np.float32, np.float64)}

    def _stack_block(dtype):
        return _BLOCK_BUFFERS[np.dtype(dtype)].ctypes.data_as(ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))


# ------------------------------------------------------------------------------------------
# compression of x [B, C, H·W] into the per-pixel active-channel lists
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def count_active(x, counts):
    """counts[b·H·W + p] = #{c : x[b, c, p] != 0} for x [B, C, H·W]; parallel over images."""
    B, C, HW = x.shape
    for b in prange(B):
        image_counts = counts[b * HW:(b + 1) * HW]
        image_counts[:] = 0
        for c in range(C):
            plane = x[b, c]
            for p in range(HW):   # branch-free: vectorizes
                image_counts[p] += np.int32(plane[p] != 0)


@numba.njit(cache=True, parallel=True)
def fill_active(x, offsets, channels, vals):
    """The entries of every pixel (channels in increasing order), given offsets = [0, cumsum(counts)]."""
    B, C, HW = x.shape
    for b in prange(B):
        cursor = offsets[b * HW:(b + 1) * HW].copy()     # next free entry of each pixel of image b
        for c in range(C):
            plane = x[b, c]
            for p in range(HW):
                v = plane[p]
                if v != 0:
                    e = cursor[p]
                    channels[e] = c
                    vals[e] = v
                    cursor[p] = e + 1


def compress(x, counts):
    """(offsets, channels, vals) of x [B, C, H·W] from its ``counts`` (count_active)."""
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    nnz = int(offsets[-1])
    channels, vals = np.empty(nnz, np.uint16), np.empty(nnz, x.dtype)
    if nnz:
        fill_active(x, offsets, channels, vals)
    return offsets, channels, vals


def compress_reference(x):
    """NumPy: the same lists, from the non-zeros of x [B, C, H·W] taken in pixel-major order."""
    B, C, HW = x.shape
    pixel_major = x.transpose(0, 2, 1).reshape(B * HW, C)
    rows, cols = np.nonzero(pixel_major)
    offsets = np.zeros(B * HW + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=B * HW), out=offsets[1:])
    return offsets, cols.astype(np.uint16), pixel_major[rows, cols]


# ------------------------------------------------------------------------------------------
# weights in output-channel blocks
# ------------------------------------------------------------------------------------------
def blocked_weight(weight):
    """wt [n_blocks, kh, kw, C, BLOCK] of W [O, C, kh, kw] (zero rows past O)."""
    O, C, kh, kw = weight.shape
    n_blocks = -(-O // BLOCK)
    padded = np.zeros((n_blocks * BLOCK, C, kh, kw), weight.dtype)
    padded[:O] = weight
    return np.ascontiguousarray(padded.reshape(n_blocks, BLOCK, C, kh, kw).transpose(0, 3, 4, 2, 1))


def unblocked_weight(wt, O):
    """W [O, C, kh, kw] of wt [n_blocks, kh, kw, C, BLOCK] (the inverse of blocked_weight)."""
    n_blocks, kh, kw, C, _ = wt.shape
    return wt.transpose(0, 4, 3, 1, 2).reshape(n_blocks * BLOCK, C, kh, kw)[:O]


# ------------------------------------------------------------------------------------------
# forward: Y = bias + Σ_taps Σ_active vals · weight rows
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def forward(offsets, channels, vals, H, W, wt, bias, kh, kw, sh, sw, ph, pw, out):
    """out [B, O, Ho, Wo] (NCHW) of the compressed x [B, C, H, W]; wt [n_blocks, kh, kw, C, BLOCK];
    bias [n_blocks·BLOCK] (zeros when the layer has none). Parallel over (block, image, output row):
    a thread's consecutive tasks share one weight block (9·C·BLOCK floats, in its L2 cache)."""
    n_blocks = wt.shape[0]
    B, O, Ho, Wo = out.shape
    for task in prange(n_blocks * B * Ho):
        blk = task // (B * Ho)
        b = (task // Ho) % B
        ho = task % Ho
        o0 = blk * BLOCK
        o_count = min(BLOCK, O - o0)
        acc = numba.carray(_stack_block(wt.dtype), BLOCK)
        i_lo, i_hi = valid_taps(ho, sh, ph, kh, H)
        for wo in range(Wo):
            for k in range(BLOCK):
                acc[k] = bias[o0 + k]
            j_lo, j_hi = valid_taps(wo, sw, pw, kw, W)
            for i in range(i_lo, i_hi):
                h = ho * sh + i - ph
                for j in range(j_lo, j_hi):
                    w = wo * sw + j - pw
                    w_tap = wt[blk, i, j]                     # [C, BLOCK]
                    p = (b * H + h) * W + w
                    for e in range(offsets[p], offsets[p + 1]):
                        v = vals[e]
                        row = w_tap[channels[e]]
                        for k in range(BLOCK):                # one vector FMA per 16 floats
                            acc[k] += v * row[k]
            for k in range(o_count):
                out[b, o0 + k, ho, wo] = acc[k]


def forward_reference(x, weight, bias, stride, padding):
    """NumPy: Y [B, O, Ho, Wo] = bias + Σ_(i, j) W[:, :, i, j] · (x shifted by the tap (i, j))."""
    B, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1           # output size
    y = np.zeros((B, O, Ho, Wo), np.result_type(x, weight))
    for i, j, window in tap_windows(padded(x, padding), (kh, kw), stride, (Ho, Wo)):   # window [B, C, Ho, Wo]
        y += np.einsum("oc,bchw->bohw", weight[:, :, i, j], window)
    return y + (0 if bias is None else bias[:, None, None])


# ------------------------------------------------------------------------------------------
# weight gradient: dW[o, c, i, j] += Σ vals · G over the (output pixel, active input) pairs
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def weight_gradient(offsets, channels, vals, H, W, g, kh, kw, sh, sw, ph, pw, parts, dwt):
    """dwt [parts, n_blocks, kh, kw, C, BLOCK] (zeroed by the caller) += the weight gradient of
    the compressed x [B, C, H, W] for G in NHWC g [B, Ho, Wo, O], the images split into ``parts``
    contiguous ranges (part q's sum in dwt[q]; the caller adds the parts in order). Parallel over
    (part, block): each task owns its rows of dwt, so the result does not depend on scheduling.
    The BLOCK values of G at an output pixel sit in registers; each active input adds them, times
    its value, to one row of dwt."""
    n_blocks = dwt.shape[1]
    B, Ho, Wo, O = g.shape
    for task in prange(parts * n_blocks):
        part = task // n_blocks
        blk = task % n_blocks
        o0 = blk * BLOCK
        o_count = min(BLOCK, O - o0)
        g_row = numba.carray(_stack_block(g.dtype), BLOCK)
        for b in range(B * part // parts, B * (part + 1) // parts):
            for ho in range(Ho):
                i_lo, i_hi = valid_taps(ho, sh, ph, kh, H)
                for wo in range(Wo):
                    for k in range(BLOCK):
                        g_row[k] = g[b, ho, wo, o0 + k] if k < o_count else 0
                    j_lo, j_hi = valid_taps(wo, sw, pw, kw, W)
                    for i in range(i_lo, i_hi):
                        h = ho * sh + i - ph
                        for j in range(j_lo, j_hi):
                            w = wo * sw + j - pw
                            dw_tap = dwt[part, blk, i, j]          # [C, BLOCK]
                            p = (b * H + h) * W + w
                            for e in range(offsets[p], offsets[p + 1]):
                                v = vals[e]
                                row = dw_tap[channels[e]]
                                for k in range(BLOCK):
                                    row[k] += v * g_row[k]


def weight_gradient_reference(x, g, kernel_size, stride, padding):
    """NumPy: dW [O, C, kh, kw], dW[:, :, i, j] = Σ_(b, ho, wo) G[b, :, ho, wo] ⊗ x[b, :, h, w] at the tap (i, j)."""
    C, (_, O, Ho, Wo) = x.shape[1], g.shape
    dw = np.zeros((O, C) + tuple(kernel_size), np.result_type(x, g))
    for i, j, window in tap_windows(padded(x, padding), kernel_size, stride, (Ho, Wo)):
        dw[:, :, i, j] = np.einsum("bohw,bchw->oc", g, window)
    return dw
