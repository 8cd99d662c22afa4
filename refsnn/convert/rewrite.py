"""The graph rewrite: a trained clipped-ReLU DNN becomes an SNN (docs/methods.md §4, step 3).

Every clipped ReLU becomes a ``ConvertedNeuron`` (threshold a·μ, amplitude b·μ, λ = 1, i.e.
IF); BatchNorm is folded into the weight layer before it (in eval mode it is an exact
per-channel affine map, so folding changes no DNN output); pooling and Flatten are copied; the
DNN's own Dropout layers are dropped. Only chain-shaped networks convert.
"""
import copy

import numpy as np

from ..layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, ClippedReLU, Conv2d, Dropout, Flatten,
                      Linear, MaxPool2d)
from ..models import Chain
from ..module import Sequential, check_real
from ..neurons import ConvertedNeuron

WEIGHT_LAYERS = (Conv2d, Linear)
BATCHNORMS = (BatchNorm1d, BatchNorm2d)
PASS_THROUGH = (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten)


def forward_layers(model):
    """The leaf layers of a chain-shaped network in forward order (Sequential, Chain)."""
    if isinstance(model, Chain):
        return [leaf for name in model.order for leaf in forward_layers(model.children[name])]
    if isinstance(model, Sequential):
        return [leaf for child in model for leaf in forward_layers(child)]
    if model.children:
        raise ValueError(f"cannot convert {type(model).__name__}: only chains of layers convert "
                         "(Sequential/Chain of Conv2d, Linear, BatchNorm, ClippedReLU, pooling, Flatten, Dropout)")
    return [model]


def check_convertible(layers):
    activations = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, BATCHNORMS):
            if i == 0 or not isinstance(layers[i - 1], WEIGHT_LAYERS):
                raise ValueError(f"layer {i} ({type(layer).__name__}) does not follow a Conv2d/Linear, "
                                 "so it cannot be folded into one")
        elif isinstance(layer, ClippedReLU):
            activations += 1
        elif not isinstance(layer, WEIGHT_LAYERS + PASS_THROUGH + (Dropout,)):
            raise ValueError(f"layer {i} is {type(layer).__name__}: conversion needs a DNN whose activations are "
                             "ClippedReLU (train it with neuron='clipped_relu') and whose other layers are "
                             "Conv2d, Linear, BatchNorm, pooling, Flatten or Dropout")
    if activations == 0:
        raise ValueError("the DNN has no ClippedReLU activation to convert")
    last_weight = max(i for i, l in enumerate(layers) if isinstance(l, WEIGHT_LAYERS))
    if any(isinstance(l, ClippedReLU) for l in layers[last_weight:]):
        raise ValueError("the DNN must end with a Conv2d/Linear output layer (no activation after it)")
    return activations


def fold_batchnorm(layer, bn):
    """(W', b') of the weight layer followed by BatchNorm in eval mode, per output channel o:
    W'[o] = W[o]·γ_o/√(σ²_o + ε),  b'_o = (b_o − m_o)·γ_o/√(σ²_o + ε) + β_o."""
    weight = layer.params["weight"].astype(np.float64)
    bias = layer.params["bias"].astype(np.float64) if "bias" in layer.params else np.zeros(weight.shape[0])
    if bn is None:
        return weight, bias
    if bn.num_features != weight.shape[0]:
        raise ValueError(f"BatchNorm has {bn.num_features} channels, the layer before it {weight.shape[0]}")
    gamma, beta = bn._affine()
    scale = gamma / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    folded = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded, (bias - bn.buffers["running_mean"].astype(np.float64)) * scale + beta


def _weight_layer_like(layer, weight, bias, dtype):
    if isinstance(layer, Conv2d):
        new = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     bias=True, groups=layer.groups, dtype=dtype)
    else:
        new = Linear(layer.in_features, layer.out_features, bias=True, dtype=dtype)
    new.params["weight"][...] = weight
    new.params["bias"][...] = bias
    return new


def _fresh_copy(layer):
    clone = copy.deepcopy(layer)
    if hasattr(clone, "_saved"):
        clone._saved = None
    return clone


def clipped_relus(model):
    """The DNN's ClippedReLU layers in forward order."""
    return [layer for layer in forward_layers(model) if isinstance(layer, ClippedReLU)]


def convert(dnn, scales, dropout=0.0, surrogate="boxcar", detach_reset=True, train_amplitude=False, strict=None,
            rng=None, variant="exact", amplitude_factor=None):
    """The SNN of a trained clipped-ReLU DNN (the DNN is left untouched).

    Weight layers are copied with BatchNorm folded in (``fold_batchnorm``); the i-th ClippedReLU
    becomes a ``ConvertedNeuron`` with threshold a_i·μ_i, amplitude b_i·μ_i and leak 1, followed
    by ``Dropout(dropout)`` when dropout > 0 (a mask per forward, shared by all steps); pooling
    and Flatten are copied; the DNN's own Dropout layers are dropped. ``scales`` is what
    ``calibrate`` returns (dicts with "mu", "a", "b"). ``variant``, ``amplitude_factor`` and
    ``strict`` are the neuron's (``variant="authors"``: amplitude c·(b_i/a_i)·V_th, the authors'
    backward; docs/methods.md §4.1).
    """
    layers = forward_layers(dnn)
    n_activations = check_convertible(layers)
    if len(scales) != n_activations:
        raise ValueError(f"{len(scales)} (a, b) pairs for {n_activations} ClippedReLU layers")
    dropout = check_real(dropout, "dropout", 0.0, 1.0, high_open=True)
    rng = np.random.default_rng(0) if rng is None else rng
    dtype = next(p for _, p, _ in dnn.named_parameters()).dtype
    out, scale_iter = [], iter(scales)
    for i, layer in enumerate(layers):
        if isinstance(layer, WEIGHT_LAYERS):
            bn = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], BATCHNORMS) else None
            out.append(_weight_layer_like(layer, *fold_batchnorm(layer, bn), dtype))
        elif isinstance(layer, ClippedReLU):
            s = next(scale_iter)
            out.append(ConvertedNeuron(threshold=s["a"] * s["mu"], amplitude=s["b"] * s["mu"], lam=1.0,
                                       surrogate=surrogate, detach_reset=detach_reset,
                                       train_amplitude=train_amplitude, strict=strict, variant=variant,
                                       amplitude_factor=amplitude_factor, dtype=dtype))
            if dropout > 0:
                out.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        elif isinstance(layer, PASS_THROUGH):
            out.append(_fresh_copy(layer))
    return Sequential(*out)
