"""Dropout, Flatten, ReLU and ClippedReLU: elementwise layers of [T, N, ...], forward and backward.

Each forward saves only what its backward reads: Dropout its mask, ReLU and ClippedReLU boolean
masks of where the gradient passes, Flatten the input shape.
"""
import numpy as np

from ..module import Module, check_real, float_dtype
from .common import check_input, save_for_backward, saved_for_backward


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
        x = check_input(self, x, None, min_ndim=2)
        if not self.training or self.p == 0.0:
            mask = None
            y = x
        else:
            keep = self.rng.random((1,) + x.shape[1:]) < 1.0 - self.p
            scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
            mask = keep.astype(x.dtype) * x.dtype.type(scale)
            y = x * mask
        save_for_backward(self, x.shape, x.dtype, mask)
        return y

    def backward(self, grad_out):
        (mask,), g = saved_for_backward(self, grad_out)
        return g if mask is None else g * mask   # identity (eval, p = 0): the gradient itself, as the forward

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """``[T, N, ...]`` -> ``[T, N, prod(...)]``."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def forward(self, x):
        x = check_input(self, x, None, min_ndim=3)
        out_shape = x.shape[:2] + (int(np.prod(x.shape[2:], dtype=np.int64)),)
        save_for_backward(self, out_shape, x.dtype, x.shape)
        return x.reshape(out_shape)

    def backward(self, grad_out):
        (in_shape,), g = saved_for_backward(self, grad_out)
        return g.reshape(in_shape)


class ReLU(Module):
    """y = max(x, 0); dy/dx = 1{x > 0} (0 at x = 0, as PyTorch)."""

    def __init__(self):
        super().__init__()
        self._saved = None

    def forward(self, x):
        x = check_input(self, x, None, min_ndim=2)
        positive = x > 0
        save_for_backward(self, x.shape, x.dtype, positive)
        return np.maximum(x, 0)

    def backward(self, grad_out):
        (positive,), g = saved_for_backward(self, grad_out)
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
        x = check_input(self, x, None, min_ndim=2)
        threshold = self.params["threshold"]
        relu = np.maximum(x, 0)
        clipped = relu > threshold
        save_for_backward(self, x.shape, x.dtype, (x > 0) & ~clipped, clipped)
        return np.minimum(relu, threshold)

    def backward(self, grad_out):
        (passing, clipped), g = saved_for_backward(self, grad_out)
        self.grads["threshold"] += np.sum(g, where=clipped)  # contiguous: pairwise
        return g * passing

    def extra_repr(self):
        return f"threshold={float(self.params['threshold'])}"
