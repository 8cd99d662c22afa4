"""Networks by name, any neuron by name.

Every network maps ``[T, N, C, H, W]`` (or ``[T, N, F]``) to logits ``[T, N, classes]``: the
output layer has no neuron, and losses average its outputs over time. Children carry the
names of the PyTorch model they follow (``"0"``, ``"1"``... for ``torch.nn.Sequential``,
``conv1``, ``layer1``, ``shortcut``... for the CIFAR networks), so parameter names are that
model's state-dict names and weights cross over with no mapping table.

The CIFAR-sized networks (docs/methods.md §8) and where their structure comes from:

* ``vgg11``: CLIF's ``spiking_vgg11_bn`` (HuuYuLong/Complementary-LIF, models/spiking_vgg_bn.py).
* ``resnet18``: CLIF's pre-activation ``spiking_resnet18`` (same repository, models/spiking_resnet.py).
* ``resnet19``: the ResNet-19 of tdBN (Zheng et al., AAAI 2021) trained by TET (Deng et al., ICLR
  2022, brain-intelligence-lab/temporal_efficient_training, models/resnet_models.py).
* ``resnet20``: He et al.'s CIFAR ResNet-20 with spiking post-activation blocks.

Initialization is PyTorch's layer defaults (the refsnn convention), not the kaiming-normal
re-initialization of the CLIF code; their weights load by name with ``load_state_dict``.
"""
import numpy as np

from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, ClippedReLU, Conv2d, Dropout, Flatten, Linear,
                     MaxPool2d, ReLU)
from .module import Module, Sequential, check_float_array, check_int, check_real
from .neurons import NEURONS, make_neuron

# Non-spiking activations, so that every network also exists as its ANN twin (run it with T = 1).
ANALOG_ACTIVATIONS = {"relu": ReLU, "clipped_relu": ClippedReLU}


def make_activation(name, **options):
    """A spiking neuron (see ``refsnn.neurons.NEURONS``) or an analog activation ("relu",
    "clipped_relu") by name."""
    if name in ANALOG_ACTIVATIONS:
        return ANALOG_ACTIVATIONS[name](**options)
    if name not in NEURONS:
        raise ValueError(f"unknown neuron or activation {name!r}; choose one of "
                         f"{sorted(NEURONS) + sorted(ANALOG_ACTIVATIONS)}")
    return make_neuron(name, **options)


def spiking_mlp(in_shape, num_classes, neuron="lif", neuron_options=None, hidden=(256,), rng=None):
    """Flatten → [Linear → neuron] × len(hidden) → Linear."""
    rng = np.random.default_rng(0) if rng is None else rng
    layers, width = [Flatten()], int(np.prod(in_shape))
    for h in hidden:
        h = check_int(h, "hidden layer width", 1)
        layers += [Linear(width, h, rng=rng), make_activation(neuron, **(neuron_options or {}))]
        width = h
    return Sequential(*layers, Linear(width, num_classes, rng=rng))


def small_cnn(in_shape, num_classes, neuron="clif", neuron_options=None, channels=None, rng=None):
    """[conv3x3 → BatchNorm → neuron → maxpool2] × 2 → flatten → linear.

    Channels default to (16, 32) for inputs of 8x8 or smaller and (32, 64) otherwise,
    the small CNN of docs/performance.md.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    c_in, h, w = _image_shape(in_shape, "cnn")
    if channels is None:
        channels = (16, 32) if max(h, w) <= 8 else (32, 64)
    layers = []
    for c_out in channels:
        layers += [Conv2d(c_in, c_out, 3, padding=1, bias=False, rng=rng), BatchNorm2d(c_out),
                   make_activation(neuron, **(neuron_options or {})), MaxPool2d(2)]
        c_in, h, w = c_out, h // 2, w // 2
    return Sequential(*layers, Flatten(), Linear(c_in * h * w, num_classes, rng=rng))


# ------------------------------------------------------------------------------------------
# Containers with named children
# ------------------------------------------------------------------------------------------
class Chain(Module):
    """Named children applied one after another: a ``Sequential`` whose children carry PyTorch
    attribute names (``conv1``, ``layer1``, ``fc``...).

    ``order`` (child names) is the forward order when it differs from the order the children
    were added in; the latter is PyTorch's registration order, which fixes the order of
    ``named_parameters()`` and ``state_dict()``.
    """

    def __init__(self, named_layers, order=None):
        super().__init__()
        for name, layer in named_layers:
            self.add_child(name, layer)
        self.order = list(self.children) if order is None else list(order)
        if sorted(self.order) != sorted(self.children):
            raise ValueError(f"order {self.order} must name every child {list(self.children)} once")

    def forward(self, x):
        for name in self.order:
            x = self.children[name].forward(x)
        return x

    def backward(self, grad_out):
        for name in reversed(self.order):
            grad_out = self.children[name].backward(grad_out)
        return grad_out


class _ResidualBlock(Module):
    """A block that forks and re-joins:

        a = pre(x) ;  y = post(residual(a) + shortcut(a))

    ``pre``, ``residual``, ``shortcut`` and ``post`` are tuples of child names run in order
    (an empty tuple is the identity). Backward: the sum hands its gradient g unchanged to both
    paths, and the fork at ``a`` adds what comes back,  dL/da = residualᵀ(g) + shortcutᵀ(g).
    """

    pre = residual = shortcut = post = ()

    def __init__(self):
        super().__init__()
        self._out_shape = None  # set by forward, consumed by backward

    def _run(self, names, x):
        for name in names:
            x = self.children[name].forward(x)
        return x

    def _run_backward(self, names, grad):
        for name in reversed(names):
            grad = self.children[name].backward(grad)
        return grad

    def forward(self, x):
        x = check_float_array(x, f"{type(self).__name__} input")
        a = self._run(self.pre, x)
        y = self._run(self.post, self._run(self.residual, a) + self._run(self.shortcut, a))
        self._out_shape = y.shape
        return y

    def backward(self, grad_out):
        if self._out_shape is None:
            raise ValueError(f"{type(self).__name__}.backward called before forward "
                             "(or a second time for one forward)")
        grad_out = check_float_array(grad_out, "grad_out")
        if grad_out.shape != self._out_shape:
            raise ValueError(f"{type(self).__name__}: grad_out has shape {grad_out.shape}, "
                             f"expected the forward output shape {self._out_shape}")
        self._out_shape = None
        g = self._run_backward(self.post, grad_out)
        grad_a = self._run_backward(self.residual, g) + self._run_backward(self.shortcut, g)
        return self._run_backward(self.pre, grad_a)

    def extra_repr(self):
        return f"pre={self.pre}, residual={self.residual}, shortcut={self.shortcut}, post={self.post}"


def _needs_projection(in_channels, out_channels, stride):
    return stride != 1 or in_channels != out_channels


class BasicBlock(_ResidualBlock):
    """Post-activation spiking BasicBlock (SpikingJelly ``spiking_resnet.BasicBlock``, TET):

        y = sn2( bn2(conv2( sn1(bn1(conv1(x))) )) + shortcut(x) )

    conv1 is 3x3 with ``stride``, conv2 3x3, both without bias. The shortcut is the identity, or,
    when the stride or the channel count changes, ``downsample`` = [conv1x1(stride) → BatchNorm].
    State-dict names: ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``,
    ``downsample.0.weight``, ``downsample.1.*`` (and ``sn1.w``/``sn2.w`` for PLIF).
    """

    residual = ("conv1", "bn1", "sn1", "conv2", "bn2")
    post = ("sn2",)

    def __init__(self, in_channels, out_channels, stride=1, neuron="clif", neuron_options=None,
                 bn_per_step=False, rng=None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        options = neuron_options or {}
        self.add_child("conv1", Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, rng=rng))
        self.add_child("bn1", BatchNorm2d(out_channels, per_step=bn_per_step))
        self.add_child("sn1", make_activation(neuron, **options))
        self.add_child("conv2", Conv2d(out_channels, out_channels, 3, padding=1, bias=False, rng=rng))
        self.add_child("bn2", BatchNorm2d(out_channels, per_step=bn_per_step))
        self.add_child("sn2", make_activation(neuron, **options))
        if _needs_projection(in_channels, out_channels, stride):
            self.add_child("downsample", Sequential(
                Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, rng=rng),
                BatchNorm2d(out_channels, per_step=bn_per_step)))
            self.shortcut = ("downsample",)


class PreActBlock(_ResidualBlock):
    """Pre-activation spiking block, CLIF's ``PreActBlock``:

        a = relu1(bn1(x)) ;  y = conv2( dropout( relu2(bn2(conv1(a))) ) ) + shortcut(a)

    ``relu1``/``relu2`` are spiking neurons (CLIF's names). conv1 is 3x3 with ``stride``, conv2
    3x3, both with bias. ``shortcut`` is an empty Sequential (the identity, no parameters) or,
    when the stride or the channel count changes, a 1x1 convolution with ``stride`` and bias.
    Children are added in CLIF's order: bn1, conv1, bn2, dropout, conv2, shortcut, relu1, relu2.
    """

    pre = ("bn1", "relu1")
    residual = ("conv1", "bn2", "relu2", "dropout", "conv2")
    shortcut = ("shortcut",)

    def __init__(self, in_channels, out_channels, stride=1, neuron="clif", neuron_options=None,
                 dropout=0.0, bn_per_step=False, rng=None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        options = neuron_options or {}
        self.add_child("bn1", BatchNorm2d(in_channels, per_step=bn_per_step))
        self.add_child("conv1", Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, rng=rng))
        self.add_child("bn2", BatchNorm2d(out_channels, per_step=bn_per_step))
        self.add_child("dropout", Dropout(dropout, rng=rng.spawn(1)[0]))
        self.add_child("conv2", Conv2d(out_channels, out_channels, 3, padding=1, rng=rng))
        if _needs_projection(in_channels, out_channels, stride):
            self.add_child("shortcut", Conv2d(in_channels, out_channels, 1, stride=stride, rng=rng))
        else:
            self.add_child("shortcut", Sequential())
        self.add_child("relu1", make_activation(neuron, **options))
        self.add_child("relu2", make_activation(neuron, **options))


# ------------------------------------------------------------------------------------------
# CIFAR-sized networks
# ------------------------------------------------------------------------------------------
def _image_shape(in_shape, network):
    if len(in_shape) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in in_shape):
        raise ValueError(f"{network} takes images: in_shape must be (channels, height, width), got {in_shape}")
    return tuple(int(s) for s in in_shape)


def _scaled(channels, width):
    """``channels`` times the width multiplier, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def _check_width(width):
    return check_real(width, "width (the channel multiplier)", 0, low_open=True)


def _stage(make_block, in_channels, out_channels, num_blocks, stride):
    """A ``layerK`` Sequential: the first block changes stride/channels, the others keep them."""
    blocks = [make_block(in_channels, out_channels, stride)]
    blocks += [make_block(out_channels, out_channels, 1) for _ in range(num_blocks - 1)]
    return Sequential(*blocks)


VGG11_STAGES = ((64, "M"), (128, "M"), (256, 256, "M"), (512, 512, "M"), (512, 512, "M"))


def vgg11(in_shape, num_classes, neuron="clif", neuron_options=None, width=1.0, dropout=0.0,
          bn_per_step=False, rng=None):
    """VGG-11 with BatchNorm and average pooling, CLIF's ``spiking_vgg11_bn``:

        layer1..layer5 = [conv3x3(bias) → BatchNorm → neuron → Dropout] per number, AvgPool2d(2)
                         per "M", stages (64 M)(128 M)(256 256 M)(512 512 M)(512 512 M)
        avgpool        = AdaptiveAvgPool2d((7, 7))   (a 1x1 map on 32x32 inputs, repeated 7x7)
        classifier     = Sequential(Flatten, Linear(512·7·7, classes))

    State-dict names as CLIF's: ``layer1.0.weight``, ``layer1.1.running_mean``...,
    ``classifier.1.weight``. ``width`` multiplies every channel count; ``dropout`` is CLIF's
    ``neuron_dropout`` (a mask fixed across time steps). Inputs must be at least 32x32.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    c_in, h, w = _image_shape(in_shape, "vgg11")
    width = _check_width(width)
    if min(h, w) < 32:
        raise ValueError(f"vgg11 halves its input five times: height and width must be >= 32, got {h}x{w}")
    stages = []
    for i, stage in enumerate(VGG11_STAGES, 1):
        layers = []
        for item in stage:
            if item == "M":
                layers.append(AvgPool2d(2))
                continue
            c_out = _scaled(item, width)
            layers += [Conv2d(c_in, c_out, 3, padding=1, rng=rng), BatchNorm2d(c_out, per_step=bn_per_step),
                       make_activation(neuron, **(neuron_options or {})), Dropout(dropout, rng=rng.spawn(1)[0])]
            c_in = c_out
        stages.append((f"layer{i}", Sequential(*layers)))
    return Chain(stages + [("avgpool", AdaptiveAvgPool2d((7, 7))),
                           ("classifier", Sequential(Flatten(), Linear(c_in * 7 * 7, num_classes, rng=rng)))])


def resnet18(in_shape, num_classes, neuron="clif", neuron_options=None, width=1.0, dropout=0.0,
             bn_per_step=False, rng=None):
    """Pre-activation spiking ResNet-18, CLIF's ``spiking_resnet18`` (``PreActResNet``):

        conv1 (3x3, 64, no bias) → layer1..layer4 (2 PreActBlocks each; 64, 128, 256, 512
        channels; strides 1, 2, 2, 2) → bn1 → relu1 (neuron) → pool → flat → drop → linear

    Children are added in CLIF's order (conv1, layer1..4, bn1, pool, flat, drop, linear, relu1),
    so names and their order are CLIF's state dict. ``pool`` is a global average: on 32x32 inputs
    it is CLIF's AvgPool2d(4) on the 4x4 map, and other input sizes still work. ``width``
    multiplies every channel count; ``dropout`` is CLIF's ``neuron_dropout``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    c_in = _image_shape(in_shape, "resnet18")[0]
    width = _check_width(width)
    channels = [_scaled(c, width) for c in (64, 128, 256, 512)]

    def block(c_from, c_to, stride):
        return PreActBlock(c_from, c_to, stride, neuron, neuron_options, dropout, bn_per_step, rng)

    children = [("conv1", Conv2d(c_in, channels[0], 3, padding=1, bias=False, rng=rng))]
    c_from = channels[0]
    for i, (c_to, stride) in enumerate(zip(channels, (1, 2, 2, 2)), 1):
        children.append((f"layer{i}", _stage(block, c_from, c_to, 2, stride)))
        c_from = c_to
    children += [("bn1", BatchNorm2d(c_from, per_step=bn_per_step)), ("pool", AdaptiveAvgPool2d(1)),
                 ("flat", Flatten()), ("drop", Dropout(dropout, rng=rng.spawn(1)[0])),
                 ("linear", Linear(c_from, num_classes, rng=rng)),
                 ("relu1", make_activation(neuron, **(neuron_options or {})))]
    order = ["conv1", "layer1", "layer2", "layer3", "layer4", "bn1", "relu1", "pool", "flat", "drop", "linear"]
    return Chain(children, order)


def _post_activation_resnet(in_shape, num_classes, network, stem, stages, hidden, neuron, neuron_options,
                            bn_per_step, rng):
    """conv1 → bn1 → sn1 → layer1..layerK (BasicBlocks) → avgpool (global) → flatten →
    fc (or fc1 → sn2 → fc2 when ``hidden``). ``stages`` = ((channels, blocks, stride), ...)."""
    rng = np.random.default_rng(0) if rng is None else rng
    c_in = _image_shape(in_shape, network)[0]

    def block(c_from, c_to, stride):
        return BasicBlock(c_from, c_to, stride, neuron, neuron_options, bn_per_step, rng)

    children = [("conv1", Conv2d(c_in, stem, 3, padding=1, bias=False, rng=rng)),
                ("bn1", BatchNorm2d(stem, per_step=bn_per_step)),
                ("sn1", make_activation(neuron, **(neuron_options or {})))]
    c_from = stem
    for i, (c_to, num_blocks, stride) in enumerate(stages, 1):
        children.append((f"layer{i}", _stage(block, c_from, c_to, num_blocks, stride)))
        c_from = c_to
    children += [("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten())]
    if hidden:
        children += [("fc1", Linear(c_from, hidden, rng=rng)), ("sn2", make_activation(neuron, **(neuron_options or {}))),
                     ("fc2", Linear(hidden, num_classes, rng=rng))]
    else:
        children.append(("fc", Linear(c_from, num_classes, rng=rng)))
    return Chain(children)


def resnet19(in_shape, num_classes, neuron="clif", neuron_options=None, width=1.0, bn_per_step=False, rng=None):
    """Spiking ResNet-19 (tdBN, Zheng et al. 2021; the network of TET and of most direct-training
    CIFAR tables):

        conv1 (3x3, 128) → bn1 → sn1 → layer1 (3 BasicBlocks, 128) → layer2 (3, 256, stride 2)
        → layer3 (2, 512, stride 2) → global avgpool → fc1 (512 → 256) → sn2 → fc2 (256 → classes)

    BasicBlocks are post-activation (SpikingJelly/TET), projection shortcuts ``downsample`` =
    conv1x1 + BatchNorm. The stem has 128 channels as in the tdBN paper (TET's public code uses
    64, which adds a projection to layer1.0). ``width`` multiplies every channel count and fc1.
    """
    width = _check_width(width)
    c = [_scaled(k, width) for k in (128, 256, 512)]
    return _post_activation_resnet(in_shape, num_classes, "resnet19", c[0],
                                   ((c[0], 3, 1), (c[1], 3, 2), (c[2], 2, 2)), _scaled(256, width),
                                   neuron, neuron_options, bn_per_step, rng)


def resnet20(in_shape, num_classes, neuron="clif", neuron_options=None, width=1.0, bn_per_step=False, rng=None):
    """Spiking CIFAR ResNet-20 (He et al. 2016, §4.2: 6n + 2 layers with n = 3):

        conv1 (3x3, 16) → bn1 → sn1 → layer1 (3 BasicBlocks, 16) → layer2 (3, 32, stride 2)
        → layer3 (3, 64, stride 2) → global avgpool → fc (64 → classes)

    Post-activation spiking BasicBlocks as ``resnet19``, with projection shortcuts (He et al.'s
    option B, conv1x1 + BatchNorm) where the shape changes. This is not the VGG-stemmed
    "ResNet-20" of the ANN-to-SNN conversion papers (Sengupta et al. 2019). ``width``
    multiplies every channel count.
    """
    width = _check_width(width)
    c = [_scaled(k, width) for k in (16, 32, 64)]
    return _post_activation_resnet(in_shape, num_classes, "resnet20", c[0],
                                   ((c[0], 3, 1), (c[1], 3, 2), (c[2], 3, 2)), None,
                                   neuron, neuron_options, bn_per_step, rng)


# ------------------------------------------------------------------------------------------
# Networks for event data (docs/losses.md §5)
# ------------------------------------------------------------------------------------------
EVENT_FRAME_SIZE = 34  # N-MNIST's sensor; larger event frames are pooled down to at most this


def event_cnn(in_shape, num_classes, neuron="clif", neuron_options=None, channels=(16, 32), rng=None):
    """A small conv net for event frames [T, N, 2, H, W] (the two polarities as channels): N-MNIST's
    34x34, or DVS128 Gesture's 128x128 pooled to fit the CPU.

        [AvgPool2d(f)] → [conv3x3 → BatchNorm → neuron → maxpool2] × 2 → flatten → linear

    f = ceil(max(H, W) / 34): no pooling at 34x34 (34 → 17 → 8), 4x4 average pooling at 128x128
    (128 → 32 → 16 → 8). The stages are ``small_cnn``'s, with channels (16, 32) by default.
    """
    c, h, w = _image_shape(in_shape, "event_cnn")
    factor = -(-max(h, w) // EVENT_FRAME_SIZE)
    pool = [AvgPool2d(factor)] if factor > 1 else []
    body = small_cnn((c, h // factor, w // factor), num_classes, neuron, neuron_options, channels, rng)
    return Sequential(*pool, *body)


def recurrent_mlp(in_shape, num_classes, neuron="rleaky", neuron_options=None, hidden=128, rng=None):
    """A recurrent spiking network for audio spikes [T, N, units] (SHD and SSC: 700 units), after
    snnTorch's RLeaky tutorials:

        Flatten → Linear(units → hidden) → RLeaky(all-to-all feedback, hidden) → Linear(hidden → classes)

    ``neuron`` must be "rleaky" (``refsnn.neurons.RLeaky``); ``neuron_options`` are its keyword
    arguments (``beta`` is required, as in snnTorch) except ``linear_features``, which is ``hidden``.
    For a feed-forward network on the same data use ``mlp`` (``hidden=(256,)`` by default). In
    ``NETWORKS`` as ``recurrent_mlp``: ``refsnn train --network recurrent_mlp --neuron rleaky
    --neuron-options '{"beta": 0.9}'``.
    """
    if neuron != "rleaky":
        raise ValueError(f"the network recurrent_mlp is built around the recurrent neuron 'rleaky', got {neuron!r}")
    options = dict(neuron_options or {})
    if "linear_features" in options:
        raise ValueError("recurrent_mlp sets the RLeaky layer's linear_features to its hidden width; do not pass it")
    if "beta" not in options:
        raise ValueError("recurrent_mlp needs the RLeaky decay beta in neuron_options (snnTorch has no default), "
                         "e.g. {\"beta\": 0.9}")
    rng = np.random.default_rng(0) if rng is None else rng
    hidden = check_int(hidden, "hidden width", 1)
    units = int(np.prod(in_shape))
    return Sequential(Flatten(), Linear(units, hidden, rng=rng),
                      make_neuron(neuron, **options, linear_features=hidden, rng=rng), Linear(hidden, num_classes, rng=rng))


class MembraneOutput(Module):
    """An output neuron layer whose membrane is the network's output: ``forward(x)`` returns the
    neuron's membrane after reset V [T, N, K] (its ``v_seq``; snnTorch's ``mem`` of the last layer,
    which membrane losses such as ``refsnn.losses.ce_max_membrane_loss`` take), and
    ``backward(dL/dV)`` runs the neuron's exact backward with that upstream gradient on V and none on
    its spikes: ``neuron.backward(0, grad_v=dL/dV)``. The neuron is the child ``neuron``.
    """

    def __init__(self, neuron):
        super().__init__()
        if not getattr(neuron, "store_v_seq", False):
            raise ValueError("MembraneOutput needs a spiking neuron built with store_v_seq=True")
        self.add_child("neuron", neuron)

    def forward(self, x):
        neuron = self.children["neuron"]
        neuron.forward(x)
        return getattr(neuron, neuron.membrane + "_seq")  # V: [T, N, K] (Synaptic's mem, not its syn)

    def backward(self, grad_out):
        grad_out = check_float_array(grad_out, "grad_out")
        return self.children["neuron"].backward(np.zeros_like(grad_out), grad_v=grad_out)


OUTPUTS = ("logits", "spikes", "membrane")


def with_output(network, output, neuron="lif", neuron_options=None):
    """``network`` (logits [T, N, K]) with an output neuron layer appended, for the spike-count and
    membrane losses (docs/losses.md §5): ``"logits"`` returns it unchanged; ``"spikes"`` appends a
    ``neuron`` layer (the network returns its spikes [T, N, K]); ``"membrane"`` a ``MembraneOutput``
    (it returns that neuron's membrane V [T, N, K]). The layer is the next child of a Sequential
    (``"3"`` after ``"2"``) or the child ``output`` of a Chain.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "logits":
        return network
    if neuron in ANALOG_ACTIVATIONS or neuron not in NEURONS:
        raise ValueError(f"an output of {output} needs a spiking neuron (one of {sorted(NEURONS)}), got {neuron!r}")
    options = dict(neuron_options or {})
    layer = make_neuron(neuron, **options) if output == "spikes" else \
        MembraneOutput(make_neuron(neuron, **options, store_v_seq=True))
    if isinstance(network, Chain):
        network.add_child("output", layer)
        network.order.append("output")
    else:
        network.add_child(len(network), layer)
    return network


def skip_input_gradient(network):
    """Let the network's first layer skip dL/dx, which nobody uses when training from data (PyTorch
    skips it for an input that does not require grad): if the first layer in forward order
    (through Sequential and Chain) is a Conv2d, its ``needs_input_grad`` is set to False, and its
    ``backward``, so the network's, returns None. The parameter gradients are unchanged. Returns
    that layer, or None when the first layer is something else."""
    layer = network
    while isinstance(layer, (Sequential, Chain)) and layer.children:
        layer = layer.children[layer.order[0]] if isinstance(layer, Chain) else layer[0]
    if not isinstance(layer, Conv2d):
        return None
    layer.needs_input_grad = False
    return layer


NETWORKS = {"mlp": spiking_mlp, "cnn": small_cnn, "vgg11": vgg11, "resnet18": resnet18,
            "resnet19": resnet19, "resnet20": resnet20, "event_cnn": event_cnn, "recurrent_mlp": recurrent_mlp}


def build_network(name, in_shape, num_classes, neuron="clif", neuron_options=None, seed=0, output="logits",
                  **options):
    """A network by name ("mlp", "cnn", "vgg11", "resnet18", "resnet19", "resnet20", "event_cnn", "recurrent_mlp")
    initialized from ``seed``; ``options`` go to the builder (``hidden``, ``channels``, ``width``,
    ``dropout``, ``bn_per_step``). ``output``: "logits" (the default), or "spikes" / "membrane" of
    an appended output neuron layer (``with_output``)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    network = NETWORKS[name](tuple(in_shape), num_classes, neuron=neuron, neuron_options=neuron_options,
                             rng=np.random.default_rng(seed), **options)
    if neuron == "rleaky" and (neuron_options or {}).get("all_to_all", True):
        neuron_options = {**neuron_options, "linear_features": num_classes}  # an output RLeaky's feedback width
    return with_output(network, output, neuron, neuron_options)
