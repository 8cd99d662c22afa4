"""Pooling: AvgPool2d, SumPool2d, AdaptiveAvgPool2d and MaxPool2d of [T, N, C, H, W], forward and backward.

Time folds into the batch (x [B, C, H, W], B = T·N). Each output (ho, wo) reads the window rows
[h_start[ho], h_end[ho]) and columns [w_start[wo], w_end[wo]), already clipped to the input:

    average   y[ho, wo] = Σ_window x / divisor[ho, wo]           dx[h, w] += g[ho, wo] / divisor[ho, wo]
    max       y[ho, wo] = x[argmax], the first maximum            dx[argmax] += g[ho, wo]

(per plane b, c). Sums run in float64. The kernels run in parallel over planes; the plain NumPy
references (``*_reference``) beside them do the same operations in the same order, so the tests
find them equal bit for bit.
"""
import numba
import numpy as np
from numba import prange

from ..module import Module, OptionError, check_int
from .common import check_input, launch, pair, save_for_backward, saved_for_backward


def _pool_windows(size, kernel, stride, padding):
    """PyTorch's windows (ceil_mode=False): start = o·s - p, end = start + k, clipped to [0, size)."""
    n_out = (size + 2 * padding - kernel) // stride + 1
    start = np.arange(n_out, dtype=np.int64) * stride - padding
    return np.maximum(start, 0), np.minimum(start + kernel, size)


def _adaptive_windows(size, n_out):
    """PyTorch's adaptive windows: start = ⌊o·size/n⌋, end = ⌈(o+1)·size/n⌉."""
    o = np.arange(n_out, dtype=np.int64)
    return (o * size) // n_out, ((o + 1) * size + n_out - 1) // n_out


# ------------------------------------------------------------------------------------------
# average pooling: any windows
# ------------------------------------------------------------------------------------------
def avg_pool_forward_reference(x, windows, divisor):
    """NumPy: out [B, C, Ho, Wo], each window summed in float64 (rows, then columns) and divided."""
    h_start, h_end, w_start, w_end = windows
    out = np.empty(x.shape[:2] + (h_start.size, w_start.size), x.dtype)
    for ho in range(h_start.size):
        for wo in range(w_start.size):
            total = np.zeros(x.shape[:2])
            for h in range(h_start[ho], h_end[ho]):
                for w in range(w_start[wo], w_end[wo]):
                    total += x[:, :, h, w]
            out[:, :, ho, wo] = total / divisor[ho, wo]
    return out


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


def avg_pool_backward_reference(g, windows, divisor, in_shape):
    """NumPy: dx [B, C, H, W], each output's g / divisor (float64) added to its window's pixels,
    outputs in row-major order."""
    h_start, h_end, w_start, w_end = windows
    dx = np.zeros(in_shape, g.dtype)
    for ho in range(h_start.size):
        for wo in range(w_start.size):
            share = g[:, :, ho, wo] / divisor[ho, wo]
            for h in range(h_start[ho], h_end[ho]):
                for w in range(w_start[wo], w_end[wo]):
                    dx[:, :, h, w] += share
    return dx


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


# ------------------------------------------------------------------------------------------
# average pooling: non-overlapping windows (stride = kernel, no padding: AvgPool2d(k)). The same
# float64 sums in the same order (window rows, then columns) as _avg_pool_forward, with the row
# of outputs innermost so that the loop vectorizes; equal to the references above.
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# adaptive pooling to more outputs than inputs (VGG-11's 7x7 from a 1x1 map): every window is one
# pixel, so the average is that pixel (a NumPy gather, x[:, :, h_start[:, None], w_start]: a copy,
# 2.5x faster than a Numba loop here) and its gradient the sum of the outputs reading it
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# max pooling
# ------------------------------------------------------------------------------------------
def max_pool_forward_reference(x, windows):
    """NumPy: (out, argmax) [B, C, Ho, Wo] by PyTorch's CPU rule: the first maximum of the window
    in row-major order, or its last NaN if it holds one; argmax is the index h·W + w."""
    h_start, h_end, w_start, w_end = windows
    B, C, H, W = x.shape
    out = np.empty((B, C, h_start.size, w_start.size), x.dtype)
    argmax = np.empty(out.shape, np.int64)
    for ho in range(h_start.size):
        for wo in range(w_start.size):
            width = w_end[wo] - w_start[wo]
            window = x[:, :, h_start[ho]:h_end[ho], w_start[wo]:w_end[wo]].reshape(B, C, -1)
            nan = np.isnan(window)
            last_nan = window.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            k = np.where(nan.any(axis=2), last_nan, np.argmax(window, axis=2))   # index in the window
            out[:, :, ho, wo] = np.take_along_axis(window, k[:, :, None], axis=2)[:, :, 0]
            argmax[:, :, ho, wo] = (h_start[ho] + k // width) * W + w_start[wo] + k % width
    return out, argmax


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


def max_pool_backward_reference(g, argmax, in_shape):
    """NumPy: dx [B, C, H, W], each output's g added at its argmax, outputs in row-major order."""
    B, C, H, W = in_shape
    dx = np.zeros((B, C, H * W), g.dtype)
    planes = np.arange(B)[:, None], np.arange(C)[None, :]
    for ho in range(g.shape[2]):
        for wo in range(g.shape[3]):
            dx[planes + (argmax[:, :, ho, wo],)] += g[:, :, ho, wo]   # one pixel per plane: no repeats
    return dx.reshape(in_shape)


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


# ------------------------------------------------------------------------------------------
# the layers
# ------------------------------------------------------------------------------------------
class _Pool2d(Module):
    """Shared plumbing: fold [T, N, C, H, W] to [B, C, H, W], compute windows, run the kernels."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def _fold(self, x):
        x = check_input(self, x, (5,))
        T, N, C, H, W = x.shape
        h_start, h_end, w_start, w_end = self._windows(H, W)
        if h_start.size < 1 or w_start.size < 1:
            raise ValueError(f"{type(self).__name__}: input {H}x{W} is too small for {self.extra_repr()}")
        return x.reshape(T * N, C, H, W), (h_start, h_end, w_start, w_end)


class _FixedWindowPool(_Pool2d):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
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

    @staticmethod
    def _one_pixel(windows):
        """Is every window one pixel (an upsampling adaptive pool, a 1x1 kernel)?"""
        h_start, h_end, w_start, w_end = windows
        return bool(np.all(h_end - h_start == 1) and np.all(w_end - w_start == 1))

    def forward(self, x):
        x4, windows = self._fold(x)
        divisor = self._divisor(windows)
        B, C, H, W = x4.shape
        out_hw = (windows[0].size, windows[2].size)
        tiles = self._tiles()
        if tiles:
            out = np.empty((B, C) + out_hw, dtype=x4.dtype)
            launch(_avg_pool_tiles_forward, x4.size, x4, *tiles, out)
        elif self._one_pixel(windows):  # every window one pixel (an upsampling adaptive pool): a gather
            h_start, _, w_start, _ = windows
            out = x4[:, :, h_start[:, None], w_start]
        else:
            out = np.empty((B, C) + out_hw, dtype=x4.dtype)
            launch(_avg_pool_forward, x4.size, x4, *windows, divisor, out)
        out_shape = x.shape[:3] + out.shape[2:]
        save_for_backward(self, out_shape, x4.dtype, windows, divisor, x.shape)
        return out.reshape(out_shape)

    def backward(self, grad_out):
        (windows, divisor, in_shape), g = saved_for_backward(self, grad_out)
        T, N, C, H, W = in_shape
        g4 = g.reshape((T * N, C) + g.shape[3:])
        tiles = self._tiles()
        if tiles:
            dx = np.empty((T * N, C, H, W), dtype=g.dtype)
            launch(_avg_pool_tiles_backward, dx.size, g4, *tiles, dx)
        elif self._one_pixel(windows):  # one-pixel windows: each output's gradient goes to its pixel
            dx = np.zeros((T * N, C, H, W), dtype=g.dtype)
            h_start, _, w_start, _ = windows
            launch(_pixel_scatter_add, g4.size, g4, h_start, w_start, dx)
        else:
            dx = np.zeros((T * N, C, H, W), dtype=g.dtype)
            launch(_avg_pool_backward, dx.size, g4, *windows, divisor, dx)
        return dx.reshape(in_shape)


class AvgPool2d(_FixedWindowPool, _AveragePool):
    """Average pooling as ``torch.nn.AvgPool2d`` (ceil_mode=False, count_include_pad=True):
    every window sum is divided by kh·kw, padded zeros included."""

    def _divisor(self, windows):
        kh, kw = self.kernel_size
        return np.full((windows[0].size, windows[2].size), float(kh * kw))

    def _tiles(self):
        return self.kernel_size if self.stride == self.kernel_size and self.padding == (0, 0) else None


class SumPool2d(_FixedWindowPool, _AveragePool):
    """Sum pooling, NIR's ``SumPool2d``: every window summed (in float64, as the averages), padded
    zeros adding nothing; the gradient of each output goes to every pixel of its window."""

    def _divisor(self, windows):
        return np.ones((windows[0].size, windows[2].size))


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
            launch(_max_pool_2x2, x4.size, x4, out, argmax)
        else:
            launch(_max_pool_forward, x4.size, x4, *windows, out, argmax)
        out_shape = x.shape[:3] + shape[2:]
        save_for_backward(self, out_shape, x4.dtype, argmax, x.shape)
        return out.reshape(out_shape)

    def backward(self, grad_out):
        (argmax, in_shape), g = saved_for_backward(self, grad_out)
        T, N, C, H, W = in_shape
        dx = np.zeros((T * N, C, H * W), dtype=g.dtype)
        launch(_max_pool_backward, dx.size, g.reshape(argmax.shape), argmax, dx)
        return dx.reshape(in_shape)
