"""Dropout, Flatten, ReLU, ClippedReLU, Scale and Threshold: elementwise layers of [T, N, ...],
forward and backward.

Each forward saves only what its backward reads: Dropout its mask, ReLU and ClippedReLU boolean
masks of where the gradient passes, Flatten the input shape, Scale its input, Threshold x − θ.
"""
import numpy as np

from .. import distributed
from ..module import Module, NonFiniteError, check_flag, check_real, float_dtype
from ..surrogate import Surrogate
from .common import check_input, save_for_backward, saved_for_backward


class Dropout(Module):
    """Dropout with one mask per forward, shape ``[1, N, ...]``, shared by all T steps
    (SpikingJelly ``layer.Dropout``): y = x · mask, mask ∈ {0, 1/(1-p)}, P(keep) = 1 - p.
    Identity in eval mode. The mask is drawn from ``self.rng`` (an ``np.random.Generator``)
    for the whole global batch when training data-parallel (``refsnn.distributed.draw``)."""

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
            # data-parallel: drawn for the global batch, this process's samples kept (refsnn.distributed)
            keep = distributed.draw(self.rng, (1,) + x.shape[1:]) < 1.0 - self.p
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


def _feature_array(value, name, dtype):
    """A finite array (per feature, NIR's convention) in ``dtype``."""
    value = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(value)):
        raise NonFiniteError(f"{name} contains NaN or Inf")
    return value.astype(float_dtype(dtype))


def _check_broadcast(layer, array, x):
    """``array`` must broadcast to the feature shape ``[...]`` of ``x`` [T, N, ...]."""
    if np.broadcast_shapes(array.shape, x.shape[2:]) != x.shape[2:]:
        raise ValueError(f"{type(layer).__name__}: its array of shape {array.shape} does not broadcast to the "
                         f"input's feature shape {x.shape[2:]}")


class Scale(Module):
    """NIR's ``Scale``: y = x ⊙ s, with a learnable array ``scale`` broadcast over the feature shape
    ``[...]`` of ``[T, N, ...]``; dL/dx = g ⊙ s, dL/ds = Σ g ⊙ x over the axes s is broadcast along."""

    def __init__(self, scale, dtype=np.float32):
        super().__init__()
        self.add_param("scale", _feature_array(scale, "Scale: scale", dtype))
        self._saved = None

    def forward(self, x):
        x = check_input(self, x, None, min_ndim=2)
        _check_broadcast(self, self.params["scale"], x)
        save_for_backward(self, x.shape, x.dtype, x)
        return x * self.params["scale"]

    def backward(self, grad_out):
        (x,), g = saved_for_backward(self, grad_out)
        scale = self.params["scale"]
        gs = g * x                                                # [T, N, ...]
        lead = gs.ndim - scale.ndim                               # T, N and any leading feature axes
        gs = gs.sum(axis=tuple(range(lead)), dtype=np.float64)
        gs = gs.sum(axis=tuple(i for i, n in enumerate(scale.shape) if n == 1), keepdims=True)
        self.grads["scale"] += gs.reshape(scale.shape)
        return g * scale

    def extra_repr(self):
        return f"shape={self.params['scale'].shape}"


class Threshold(Module):
    """NIR's ``Threshold``: z = Θ(x − θ), 1{x > θ} (``strict``, NIR's) or 1{x >= θ}, with an array
    ``threshold`` (a buffer) broadcast over the feature shape. Backward: dz/dx = g'(u)·c, the
    surrogate's derivative at u = c·(x − θ) (c = 1, or 1/θ for boxcar; refsnn.surrogate). ``smooth``
    (gradient checks, as the neurons'): z = φ(u), the surrogate's primitive, whose derivative that is."""

    def __init__(self, threshold, surrogate="sigmoid", alpha=None, beta=1.0, strict=True, dtype=np.float32):
        super().__init__()
        self.buffers["threshold"] = _feature_array(threshold, "Threshold: threshold", dtype)
        self.surrogate = Surrogate(surrogate, alpha, beta)
        self.strict = check_flag(strict, "strict")
        self.smooth = False
        self._saved = None

    def forward(self, x):
        x = check_input(self, x, None, min_ndim=2)
        threshold = self.buffers["threshold"]
        _check_broadcast(self, threshold, x)
        scale = self.surrogate.argument_scale(threshold.astype(np.float64))
        u = (x - threshold) * scale                               # [T, N, ...]
        save_for_backward(self, x.shape, x.dtype, u, scale)
        if self.smooth:
            return self.surrogate.primitive(u).astype(x.dtype)
        return (u > 0 if self.strict else u >= 0).astype(x.dtype)

    def backward(self, grad_out):
        (u, scale), g = saved_for_backward(self, grad_out)
        return (g * (self.surrogate.derivative(u) * scale)).astype(g.dtype)

    def extra_repr(self):
        return f"shape={self.buffers['threshold'].shape}, surrogate={self.surrogate!r}, strict={self.strict}"
