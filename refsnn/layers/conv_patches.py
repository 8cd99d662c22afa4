"""Conv2d's dense path: the patch matrices (im2col) and their adjoint (col2im), NCHW and channels-last.

    NCHW   x [B, C, H, W],   cols [C·kh·kw, B·Ho·Wo],  cols[(c, i, j), (b, ho, wo)] = x_padded[b, c, ho·sh + i, wo·sw + j]
    NHWC   xh [B, H, W, C],  cols [B·Ho·Wo, kh·kw·C],  cols[(b, ho, wo), (i, j, c)] = xh[b, ho·sh + i - ph, wo·sw + j - pw, c]

(0 where a tap falls in the padding). col2im is the adjoint: dx[pixel] = Σ of the cols entries that
copied that pixel. refsnn.layers.conv multiplies the patches by the weight (module docstring there).
Each kernel has a plain NumPy reference (``*_reference``) beside it, equal to it bit for bit: the
copies are copies, and the references add the same values in the same order as col2im.
"""
import numba
import numpy as np
from numba import prange


@numba.njit(cache=True)
def valid_range(n_out, stride, offset, size):
    """Output positions o in [lo, hi) whose input index o·stride + offset lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = (size - 1 - offset) // stride + 1
    lo = min(lo, n_out)
    return lo, max(lo, min(hi, n_out))


@numba.njit(cache=True)
def valid_taps(o, stride, padding, kernel, size):
    """The taps [lo, hi) of output position o whose input index o·stride + tap - padding lies in
    [0, size) (the others fall in the padding and see zeros)."""
    first = o * stride - padding          # the input index of tap 0
    return max(0, -first), min(kernel, size - first)


# ------------------------------------------------------------------------------------------
# the taps of a convolution: which fall inside the input; the windows they read (NumPy references)
# ------------------------------------------------------------------------------------------
def padded(x, padding):
    """x [B, C, H, W] with ph zero rows above and below and pw zero columns on each side."""
    B, C, H, W = x.shape
    ph, pw = padding
    xp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


def tap_windows(xp, kernel_size, stride, out_size):
    """(i, j, window) for every tap (i, j) in row-major order: window [B, C, Ho, Wo] is the strided
    view of the padded xp that tap (i, j) reads, window[b, c, ho, wo] = xp[b, c, ho·sh + i, wo·sw + j]."""
    (kh, kw), (sh, sw), (Ho, Wo) = kernel_size, stride, out_size
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i:i + (Ho - 1) * sh + 1:sh, j:j + (Wo - 1) * sw + 1:sw]


# ------------------------------------------------------------------------------------------
# NCHW patches: im2col and its adjoint col2im
# ------------------------------------------------------------------------------------------
def im2col_reference(x, kernel_size, stride, padding):
    """NumPy: cols [C·kh·kw, B·Ho·Wo], cols[(c, i, j), (b, ho, wo)] = x_padded[b, c, ho·sh + i, wo·sw + j]."""
    B, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    cols = np.empty((C, kh, kw, B, Ho, Wo), x.dtype)
    for i, j, window in tap_windows(padded(x, padding), kernel_size, stride, (Ho, Wo)):   # [B, C, Ho, Wo]
        cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, B * Ho * Wo)


@numba.njit(cache=True, parallel=True)
def im2col(x, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
    B, C, H, W = x.shape
    P = Ho * Wo
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for i in range(kh):
            h_lo, h_hi = valid_range(Ho, sh, i - ph, H)
            for j in range(kw):
                w_lo, w_hi = valid_range(Wo, sw, j - pw, W)
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


def col2im_reference(cols, in_shape, kernel_size, stride, padding):
    """NumPy: dx [B, C, H, W], dx[b, c, h, w] = Σ cols[(c, i, j), (b, ho, wo)] over the taps with
    ho·sh + i - ph = h, wo·sw + j - pw = w, added tap by tap in row-major (i, j) order from 0, as
    _col2im adds them."""
    B, C, H, W = in_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    Ho, Wo = (H + 2 * ph - kh) // stride[0] + 1, (W + 2 * pw - kw) // stride[1] + 1
    taps = cols.reshape(C, kh, kw, B, Ho, Wo)
    dx_padded = np.zeros((B, C, H + 2 * ph, W + 2 * pw), cols.dtype)
    for i, j, window in tap_windows(dx_padded, kernel_size, stride, (Ho, Wo)):
        window += taps[:, i, j].transpose(1, 0, 2, 3)
    return dx_padded[:, :, ph:ph + H, pw:pw + W]


@numba.njit(cache=True, parallel=True)
def col2im(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dx):
    B, C, H, W = dx.shape
    P = Ho * Wo
    for bc in prange(B * C):
        b = bc // C
        c = bc - b * C
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                w_lo, w_hi = valid_range(Wo, sw, j - pw, W)
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


# ------------------------------------------------------------------------------------------
# NHWC patches (groups = 1, more than NCHW_MAX_CHANNELS input channels)
#   xh [B, H, W, C],  cols [B·Ho·Wo, kh·kw·C],  cols[(b, ho, wo), (i, j, c)] = xh[b, ho·sh + i - ph, wo·sw + j - pw, c]
# ------------------------------------------------------------------------------------------
def im2col_nhwc_reference(xh, kernel_size, stride, padding):
    """NumPy: the NHWC patch matrix, the NCHW one (im2col_reference) with its axes reordered."""
    B, H, W, C = xh.shape
    kh, kw = kernel_size
    cols = im2col_reference(xh.transpose(0, 3, 1, 2), kernel_size, stride, padding)   # [(c, i, j), (b, ho, wo)]
    return cols.reshape(C, kh, kw, -1).transpose(3, 1, 2, 0).reshape(-1, kh * kw * C)


@numba.njit(cache=True, parallel=True)
def im2col_nhwc(xh, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
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


def col2im_nhwc_reference(cols, in_shape, kernel_size, stride, padding):
    """NumPy: dxh [B, H, W, C] from the NHWC cols, the output pixels (ho, wo) added in row-major
    order from 0, as col2im_nhwc adds them (an output pixel reaches an input pixel by one tap)."""
    B, H, W, C = in_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    taps = cols.reshape(B, Ho, Wo, kh, kw, C)
    dxh_padded = np.zeros((B, H + 2 * ph, W + 2 * pw, C), cols.dtype)
    for ho in range(Ho):
        for wo in range(Wo):
            dxh_padded[:, ho * sh:ho * sh + kh, wo * sw:wo * sw + kw] += taps[:, ho, wo]
    return dxh_padded[:, ph:ph + H, pw:pw + W]


@numba.njit(cache=True, parallel=True)
def col2im_nhwc(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, dxh):
    """dxh[b, h, w, :] = Σ cols[(b, ho, wo), (i, j, :)] over the taps with ho·sh + i - ph = h,
    wo·sw + j - pw = w. Parallel over images; each image's rows are read in order (a streaming
    pass over cols, 2.5x faster than gathering per pixel)."""
    B, H, W, C = dxh.shape
    for b in prange(B):
        dxh[b] = 0
        for ho in range(Ho):
            i_lo, i_hi = valid_taps(ho, sh, ph, kh, H)
            for wo in range(Wo):
                row = (b * Ho + ho) * Wo + wo
                j_lo, j_hi = valid_taps(wo, sw, pw, kw, W)
                for i in range(i_lo, i_hi):
                    h = ho * sh + i - ph
                    for j in range(j_lo, j_hi):
                        w = wo * sw + j - pw
                        pixel = dxh[b, h, w]
                        tap = cols[row, (i * kw + j) * C:(i * kw + j + 1) * C]
                        for c in range(C):
                            pixel[c] += tap[c]
