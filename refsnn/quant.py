"""Ternary weights (TWN, Li et al. 2016) trained with a straight-through estimator (docs/methods.md §2).

A ternary layer keeps its full-precision *latent* weight W as the parameter ``weight`` (the
optimizer updates it, the state dict stores it under the usual name) and uses in forward

    Δ  = 0.7 · mean |W|
    α  = mean(|W_i| for |W_i| > Δ)           (α = 0 when no weight exceeds Δ)
    Wq = α · sign(W) · 1{|W| > Δ}

with the statistics over the whole tensor (per layer, the default) or over each output channel
W[o] (``per_channel``). Backward is straight-through, dL/dW = dL/dWq: the layer's own forward
runs with Wq in place of W, so its own backward computes dL/dx with Wq and adds dL/dWq to the
gradient of ``weight``, i.e. of the latent W.

``ternarize(model)`` switches the Linear/Conv2d layers of any network into this mode in place
(by giving them a ternary subclass: names, arrays, optimizer references all stay). The first and
last weight layers stay full precision by default. ``export_ternary`` stores each ternary
weight as ``int8`` codes in {-1, 0, +1} plus its scale α; ``load_ternary`` puts α·codes back
into a plain network, which then computes exactly what the ternary network computed in training.
"""
import numpy as np

from .layers import Conv2d, Linear
from .module import NonFiniteError, check_flag

DELTA_FACTOR = 0.7   # Δ = 0.7 · mean|W| (TWN's approximation of the optimal threshold)


def ternary_codes(weight, per_channel=False):
    """``(codes, scale, delta)`` of ``weight`` (see the module docstring).

    ``codes``: int8 in {-1, 0, +1}, the weight's shape. ``scale`` (α) and ``delta`` (Δ): 0-d per
    layer, ``[out]`` per channel (axis 0 of the weight); α in the weight's dtype, Δ in float64.
    The statistics are computed in float64.
    """
    if not np.all(np.isfinite(weight)):
        raise NonFiniteError("a ternary layer's latent weight contains NaN or Inf")
    w = np.asarray(weight, dtype=np.float64)
    axes = tuple(range(1, w.ndim)) if per_channel else None
    magnitude = np.abs(w)
    delta = DELTA_FACTOR * magnitude.mean(axis=axes, keepdims=True)
    keep = magnitude > delta
    count = keep.sum(axis=axes, keepdims=True)
    alpha = np.where(count > 0, np.where(keep, magnitude, 0.0).sum(axis=axes, keepdims=True)
                     / np.maximum(count, 1), 0.0)
    codes = np.where(keep, np.sign(w), 0).astype(np.int8)
    shape = (-1,) if per_channel else ()
    return codes, alpha.reshape(shape).astype(weight.dtype), delta.reshape(shape)


def dequantize(codes, scale, dtype=None):
    """Wq = α · codes, α broadcast over each output channel when it has one entry per channel."""
    scale = np.asarray(scale)
    dtype = scale.dtype if dtype is None else np.dtype(dtype)
    if scale.ndim == 1:
        scale = scale.reshape((-1,) + (1,) * (codes.ndim - 1))
    return scale.astype(dtype) * codes.astype(dtype)


class TernaryWeight:
    """Mixin for Linear/Conv2d: forward with Wq in place of the latent W, straight-through backward."""

    per_channel = False

    def quantized_weight(self):
        latent = self.params["weight"]
        codes, scale, _ = ternary_codes(latent, self.per_channel)
        return dequantize(codes, scale, latent.dtype)

    def forward(self, x):
        latent = self.params["weight"]
        # The layer's forward reads params["weight"] and saves it for its backward, which then
        # computes dL/dx with Wq and adds dL/dWq into grads["weight"]: straight-through.
        self.params["weight"] = self.quantized_weight()
        try:
            return super().forward(x)
        finally:
            self.params["weight"] = latent

    def extra_repr(self):
        return super().extra_repr() + f", ternary={'per-channel' if self.per_channel else 'per-layer'}"


class TernaryLinear(TernaryWeight, Linear):
    """A Linear layer whose forward uses the ternary weight (see ``TernaryWeight``)."""


class TernaryConv2d(TernaryWeight, Conv2d):
    """A Conv2d layer whose forward uses the ternary weight (see ``TernaryWeight``)."""


_TERNARY_CLASS = {Linear: TernaryLinear, Conv2d: TernaryConv2d}


def weight_layers(model):
    """``(name, layer)`` of every Linear/Conv2d in registration (state-dict) order."""
    return [(name, m) for name, m in model.modules() if isinstance(m, (Linear, Conv2d))]


def ternary_layers(model):
    """``(name, layer)`` of every layer in ternary mode."""
    return [(name, m) for name, m in weight_layers(model) if isinstance(m, TernaryWeight)]


def ternarize(model, per_channel=False, first=False, last=False):
    """Switch the weight layers of ``model`` to ternary weights, in place; returns their names.

    ``first`` / ``last``: also ternarize the first / last weight layer (in registration order,
    which for every refsnn network is the input layer and the classifier). Parameters keep their
    names and arrays, so an optimizer built before or after, and state dicts, are unaffected.
    """
    per_channel, first, last = (check_flag(v, n) for v, n in ((per_channel, "per_channel"), (first, "first"),
                                                                (last, "last")))
    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no Linear or Conv2d layer to ternarize")
    chosen = layers[(0 if first else 1):(len(layers) if last else len(layers) - 1)]
    if not chosen:
        raise ValueError(f"no layer left to ternarize: the model's {len(layers)} weight layer(s) are its first "
                         "and last, which stay full precision unless first=True / last=True")
    for _, layer in chosen:
        if not isinstance(layer, TernaryWeight):
            if type(layer) not in _TERNARY_CLASS:
                raise TypeError(f"cannot ternarize a {type(layer).__name__} (only Linear and Conv2d)")
            layer.__class__ = _TERNARY_CLASS[type(layer)]
        layer.per_channel = per_channel
    return [name for name, _ in chosen]


# ------------------------------------------------------------------------------------------
# export: int8 codes + scales
# ------------------------------------------------------------------------------------------
def export_ternary(model):
    """The inference arrays of a model with ternary layers.

    Each ternary layer's weight becomes ``<name>.weight.codes`` (int8 in {-1, 0, +1}) and
    ``<name>.weight.scale`` (α in the weight's dtype: 0-d per layer, ``[out]`` per channel);
    every other parameter and buffer is kept under its state-dict name.
    """
    ternary = dict(ternary_layers(model))
    if not ternary:
        raise ValueError("the model has no ternary layer (train with ternary=True)")
    out = {}
    for name, value in model.state_dict().items():
        layer, _, leaf = name.rpartition(".")
        if leaf == "weight" and layer in ternary:
            codes, scale, _ = ternary_codes(value, ternary[layer].per_channel)
            out[f"{name}.codes"], out[f"{name}.scale"] = codes, scale
        else:
            out[name] = value
    return out


def load_ternary(model, arrays):
    """Load an ``export_ternary`` dict into a plain network of the same architecture: each
    ternary weight becomes α·codes (in the scale's dtype, exactly the Wq used in training)."""
    if ternary_layers(model):
        raise ValueError("load_ternary needs a network without ternary layers: it loads α·codes as plain weights")
    state = {}
    for name, value in arrays.items():
        if name.endswith(".scale"):
            continue
        if name.endswith(".codes"):
            base = name[:-len(".codes")]
            if value.dtype != np.int8 or not np.all(np.abs(value) <= 1):
                raise ValueError(f"{name} must hold int8 codes in {{-1, 0, +1}}, got dtype {value.dtype}")
            scale = arrays.get(f"{base}.scale")
            if scale is None:
                raise ValueError(f"{name} has no matching {base}.scale")
            if np.asarray(scale).dtype.kind != "f" or not np.all(np.isfinite(scale)):
                raise ValueError(f"{base}.scale must hold finite floating-point scales")
            state[base] = dequantize(value, scale)
        else:
            state[name] = value
    return model.load_state_dict(state)


def export_bytes(arrays):
    """Bytes of the arrays' data (codes one byte each)."""
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


def float32_bytes(model):
    """Bytes of the model's state dict with every floating array stored as float32."""
    return int(sum(v.size * 4 if v.dtype.kind == "f" else v.nbytes for v in model.state_dict().values()))
