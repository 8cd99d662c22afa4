"""Networks by name, any neuron by name.

Every network maps ``[T, N, C, H, W]`` (or ``[T, N, F]``) to logits ``[T, N, classes]``: the
output layer has no neuron, and losses average its outputs over time. Children are
numbered like ``torch.nn.Sequential`` so parameter names are PyTorch state-dict names.
"""
import numpy as np

from .layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d
from .module import Sequential
from .neurons import make_neuron


def spiking_mlp(in_shape, num_classes, neuron="lif", neuron_options=None, hidden=(256,), rng=None):
    """Flatten → [Linear → neuron] × len(hidden) → Linear."""
    rng = np.random.default_rng(0) if rng is None else rng
    layers, width = [Flatten()], int(np.prod(in_shape))
    for h in hidden:
        layers += [Linear(width, h, rng=rng), make_neuron(neuron, **(neuron_options or {}))]
        width = h
    return Sequential(*layers, Linear(width, num_classes, rng=rng))


def small_cnn(in_shape, num_classes, neuron="clif", neuron_options=None, channels=None, rng=None):
    """[conv3x3 → BatchNorm → neuron → maxpool2] × 2 → flatten → linear.

    Channels default to (16, 32) for inputs of 8x8 or smaller and (32, 64) otherwise,
    the small CNN of performance.md.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    c_in, h, w = in_shape
    if channels is None:
        channels = (16, 32) if max(h, w) <= 8 else (32, 64)
    layers = []
    for c_out in channels:
        layers += [Conv2d(c_in, c_out, 3, padding=1, bias=False, rng=rng), BatchNorm2d(c_out),
                   make_neuron(neuron, **(neuron_options or {})), MaxPool2d(2)]
        c_in, h, w = c_out, h // 2, w // 2
    return Sequential(*layers, Flatten(), Linear(c_in * h * w, num_classes, rng=rng))


NETWORKS = {"mlp": spiking_mlp, "cnn": small_cnn}


def build_network(name, in_shape, num_classes, neuron="clif", neuron_options=None, seed=0, **options):
    """A network by name ("mlp", "cnn", ...) initialised from ``seed``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](tuple(in_shape), num_classes, neuron=neuron, neuron_options=neuron_options,
                          rng=np.random.default_rng(seed), **options)
