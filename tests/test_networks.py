"""The CIFAR-sized networks (VGG-11, ResNet-18/19/20) and their residual blocks.

Tier 1: float64 central differences in smooth mode, end to end and per block.
Tier 2: the same architectures written here in torch + SpikingJelly layers, from the source
models' structure (CLIF's spiking_vgg_bn / spiking_resnet, SpikingJelly's spiking_resnet
BasicBlock, TET's ResNet-19, He et al.'s ResNet-20), weights copied by state-dict name, every
output, running statistic and gradient compared in float64. Plus names and shapes of the full-size
networks against those torch models, and a check that each gradient test can fail.

Neuron for every check: LIF with the sigmoid surrogate (α = 4) and V_th = 0.5. In smooth mode its
spike is σ(4(H − 0.5)); with V_th = 1 most smooth spikes sit near σ(−4), BatchNorm then divides
by tiny batch deviations, and the nets become needlessly ill-conditioned for finite differences.
"""
import re

import numpy as np
import pytest

from refsnn.layers import BatchNorm2d, Conv2d, Dropout
from refsnn.models import NETWORKS, BasicBlock, Chain, PreActBlock, build_network
from verify.gradcheck import gradcheck, set_smooth

try:
    import torch
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sjl
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate
    from torch import nn
    TorchModule = nn.Module
except ImportError:
    torch = None
    TorchModule = object
needs_torch = pytest.mark.skipif(torch is None, reason="torch and spikingjelly are needed for tier-2 checks")

NEURON = {"surrogate": "sigmoid", "v_threshold": 0.5}
T, N = 2, 2
# tiny versions: channels 2..16; VGG-11 needs 32x32 (it halves its input five times)
TINY = {"vgg11": ((3, 32, 32), 1 / 32), "resnet18": ((3, 8, 8), 1 / 32),
        "resnet19": ((3, 8, 8), 1 / 64), "resnet20": ((3, 8, 8), 1 / 8)}

# Whole networks (10-20 layers whose BatchNorms divide by small batch deviations): the central-
# difference truncation error (∝ step²) and the rounding noise (∝ 1/step) meet near 1e-6, so the
# network checks use a step of 3e-6 (1e-6 in eval mode, whose running statistics do not absorb
# shifts) and a tolerance of 1e-5. Measured over 8 seeds per network: worst 1.4e-6 (train) and
# 2.5e-6 (eval); at the default step 1e-5 the truncation error alone reaches 1.2e-5.
# test_network_gradcheck_catches_a_small_error shows a 1e-4 error in one gradient still fails.
NETWORK_STEP, NETWORK_EVAL_STEP, NETWORK_TOL = 3e-6, 1e-6, 1e-5


def tiny_network(name, seed=0, **options):
    in_shape, width = TINY[name]
    net = build_network(name, in_shape, 3, neuron="lif", neuron_options=NEURON, seed=seed, width=width, **options)
    x = np.random.default_rng(seed + 10).random((T, N) + in_shape) * 2
    return net.to(np.float64), x


def conv_biases(module):
    return {f"{prefix}.bias" for prefix, m in module.modules() if isinstance(m, Conv2d) and "bias" in m.params}


def calibrate_batchnorm(module, x):
    """Running statistics := this batch's (momentum 1), then eval mode: a well-scaled eval forward."""
    for _, m in module.modules():
        if isinstance(m, BatchNorm2d):
            m.momentum = 1.0
    set_smooth(module)
    module.forward(x)
    set_smooth(module, False)
    module.eval()


def assert_gradcheck(module, x, shadowed=(), **kwargs):
    """Every tensor within tolerance, except ``shadowed`` ones: conv biases that feed a training-mode
    BatchNorm directly. BatchNorm subtracts the batch mean, so such a bias cannot change the loss:
    its true gradient is 0 and finite differences see only rounding noise. For them the backward
    must give 0 (to rounding); they are checked for real in eval mode."""
    report = gradcheck(module, x, seed=99, **kwargs)  # seed != the input's, see test_layers.py
    grads = {name: g for name, _, g in module.named_parameters()}
    assert set(report.errors) == {"input", *grads}, "not every parameter was checked"
    failed = {k: v for k, v in report.errors.items() if v > report.tolerance and k not in shadowed}
    assert not failed, f"{failed}\n{report}"
    largest = max(np.max(np.abs(g)) for g in grads.values())
    for name in shadowed:
        assert np.max(np.abs(grads[name])) <= 1e-12 * largest, f"{name} should have a zero gradient"


# ------------------------------------------------------------------------------------------
# tier 1: finite differences
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
def test_network_gradcheck(name):
    net, x = tiny_network(name)
    # in these four networks every convolution feeds a BatchNorm before anything else (in
    # ResNet-18 through the residual sum into the next block's bn1), so all conv biases are shadowed
    assert_gradcheck(net, x, shadowed=conv_biases(net), eps=NETWORK_STEP, tolerance=NETWORK_TOL)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_network_gradcheck_eval_mode(name):
    """The networks with conv biases, in eval mode, where those biases matter."""
    net, x = tiny_network(name)
    calibrate_batchnorm(net, x)
    assert conv_biases(net)
    assert_gradcheck(net, x, eps=NETWORK_EVAL_STEP, tolerance=NETWORK_TOL)


def make_block(kind, projection, seed=0):
    """A block on [T, N, 4, 4, 4] input (identity) or [T, N, 2, 4, 4] -> stride 2, 4 channels."""
    c_in, stride = (2, 2) if projection else (4, 1)
    rng = np.random.default_rng(seed)
    block = (BasicBlock if kind == "basic" else PreActBlock)(c_in, 4, stride, neuron="lif", neuron_options=NEURON,
                                                            rng=rng)
    x = np.random.default_rng(seed + 10).standard_normal((T, N, c_in, 4, 4))
    return block.to(np.float64), x


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("kind", ["basic", "preact"])
def test_block_gradcheck(kind, projection, mode):
    block, x = make_block(kind, projection)
    names = {n for n, _, _ in block.named_parameters()}
    assert any(n.startswith(("downsample", "shortcut")) for n in names) == projection
    shadowed = ()
    if mode == "eval":
        calibrate_batchnorm(block, x)
    elif kind == "preact":
        shadowed = ("conv1.bias",)  # conv1 feeds bn2; conv2 and the shortcut feed the output
    assert_gradcheck(block, x, shadowed=shadowed, elementwise=True)


def test_block_gradcheck_catches_a_missing_shortcut_gradient():
    """The check has teeth: a block whose backward forgets the shortcut path fails it."""
    block, x = make_block("preact", projection=False)
    run_backward = block._run_backward
    block._run_backward = lambda names, g: np.zeros_like(g) if names == ("shortcut",) else run_backward(names, g)
    report = gradcheck(block, x, seed=99)
    assert not report.passed and report.errors["input"] > 1e-2


def test_network_gradcheck_catches_a_small_error():
    """At the network tolerance, a gradient off by a relative 1e-4 in one deep layer still fails."""
    net, x = tiny_network("resnet20")
    conv = net.children["layer3"][1].children["conv2"]
    backward = conv.backward

    def skewed_backward(g):
        before = conv.grads["weight"].copy()
        out = backward(g)
        conv.grads["weight"][...] = before + (conv.grads["weight"] - before) * (1 + 1e-4)
        return out
    conv.backward = skewed_backward
    report = gradcheck(net, x, seed=99, eps=NETWORK_STEP, tolerance=NETWORK_TOL)
    assert report.errors["layer3.1.conv2.weight"] > NETWORK_TOL
    assert max(v for k, v in report.errors.items() if k != "layer3.1.conv2.weight") <= NETWORK_TOL


# ------------------------------------------------------------------------------------------
# tier 2: the same architectures in torch (SpikingJelly multi-step layers), float64
# ------------------------------------------------------------------------------------------
def torch_lif():
    """refsnn's smooth LIF: SpikingJelly's LIFNode whose forward is σ(4(H − V_th)) itself
    (``spiking=False``), differentiated by autograd."""
    return sj_neuron.LIFNode(v_threshold=0.5, surrogate_function=sj_surrogate.Sigmoid(alpha=4.0, spiking=False),
                             step_mode="m")


def torch_conv(c_in, c_out, k, stride=1, padding=0, bias=True):
    return sjl.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=bias, step_mode="m")


def torch_bn(c):
    return sjl.BatchNorm2d(c, step_mode="m")


class TorchBasicBlock(TorchModule):
    """SpikingJelly spiking_resnet.BasicBlock: sn2(bn2(conv2(sn1(bn1(conv1(x))))) + downsample(x))."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = torch_conv(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = torch_bn(c_out)
        self.sn1 = torch_lif()
        self.conv2 = torch_conv(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = torch_bn(c_out)
        self.sn2 = torch_lif()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(torch_conv(c_in, c_out, 1, stride, bias=False), torch_bn(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        return self.sn2(out + (x if self.downsample is None else self.downsample(x)))


class TorchPreActBlock(TorchModule):
    """CLIF's PreActBlock: a = relu1(bn1(x)); conv2(dropout(relu2(bn2(conv1(a))))) + shortcut(a)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1 = torch_bn(c_in)
        self.conv1 = torch_conv(c_in, c_out, 3, stride, 1)
        self.bn2 = torch_bn(c_out)
        self.dropout = sjl.Dropout(0.0, step_mode="m")
        self.conv2 = torch_conv(c_out, c_out, 3, 1, 1)
        self.shortcut = torch_conv(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Sequential()
        self.relu1 = torch_lif()
        self.relu2 = torch_lif()

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        return self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(a))))) + self.shortcut(a)


class TorchVGG11(TorchModule):
    """CLIF's SpikingVGGBN('VGG11'): five stages of [conv(bias) → BN → neuron → Dropout] and
    AvgPool2d(2), AdaptiveAvgPool2d((7, 7)), classifier = [Flatten, Linear]."""

    STAGES = ([64, "M"], [128, "M"], [256, 256, "M"], [512, 512, "M"], [512, 512, "M"])

    def __init__(self, c_in, classes, width):
        super().__init__()
        for i, stage in enumerate(self.STAGES, 1):
            layers = []
            for item in stage:
                if item == "M":
                    layers.append(sjl.AvgPool2d(2, 2, step_mode="m"))
                else:
                    c = int(item * width)
                    layers += [torch_conv(c_in, c, 3, padding=1), torch_bn(c), torch_lif(),
                               sjl.Dropout(0.0, step_mode="m")]
                    c_in = c
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = sjl.AdaptiveAvgPool2d((7, 7), step_mode="m")
        self.classifier = nn.Sequential(sjl.Flatten(step_mode="m"), sjl.Linear(c_in * 49, classes, step_mode="m"))

    def forward(self, x):
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        return self.classifier(self.avgpool(x))


class TorchPreActResNet18(TorchModule):
    """CLIF's PreActResNet(PreActBlock, [2, 2, 2, 2]); its AvgPool2d(4) (global on 32x32 inputs)
    is written as the global average it is, so that tiny inputs work."""

    def __init__(self, c_in, classes, width):
        super().__init__()
        c = [int(k * width) for k in (64, 128, 256, 512)]
        self.conv1 = torch_conv(c_in, c[0], 3, 1, 1, bias=False)
        c_in = c[0]
        for i, (c_out, stride) in enumerate(zip(c, (1, 2, 2, 2)), 1):
            setattr(self, f"layer{i}", nn.Sequential(TorchPreActBlock(c_in, c_out, stride),
                                                     TorchPreActBlock(c_out, c_out, 1)))
            c_in = c_out
        self.bn1 = torch_bn(c_in)
        self.pool = sjl.AdaptiveAvgPool2d(1, step_mode="m")
        self.flat = sjl.Flatten(step_mode="m")
        self.drop = sjl.Dropout(0.0, step_mode="m")
        self.linear = sjl.Linear(c_in, classes, step_mode="m")
        self.relu1 = torch_lif()

    def forward(self, x):
        x = self.conv1(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.linear(self.drop(self.flat(self.pool(self.relu1(self.bn1(x))))))


class TorchResNet(TorchModule):
    """conv1 → bn1 → sn1 → BasicBlock stages → global average → fc (or fc1 → sn2 → fc2)."""

    def __init__(self, c_in, classes, stem, stages, hidden=None):
        super().__init__()
        self.conv1 = torch_conv(c_in, stem, 3, 1, 1, bias=False)
        self.bn1 = torch_bn(stem)
        self.sn1 = torch_lif()
        c_in = stem
        for i, (c_out, blocks, stride) in enumerate(stages, 1):
            setattr(self, f"layer{i}", nn.Sequential(TorchBasicBlock(c_in, c_out, stride),
                                                     *[TorchBasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]))
            c_in = c_out
        self.num_stages, self.hidden = len(stages), hidden
        self.avgpool = sjl.AdaptiveAvgPool2d(1, step_mode="m")
        self.flatten = sjl.Flatten(step_mode="m")
        if hidden:
            self.fc1 = sjl.Linear(c_in, hidden, step_mode="m")
            self.sn2 = torch_lif()
            self.fc2 = sjl.Linear(hidden, classes, step_mode="m")
        else:
            self.fc = sjl.Linear(c_in, classes, step_mode="m")

    def forward(self, x):
        x = self.sn1(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.flatten(self.avgpool(x))
        return self.fc2(self.sn2(self.fc1(x))) if self.hidden else self.fc(x)


def torch_network(name, c_in, classes, width):
    if name == "vgg11":
        return TorchVGG11(c_in, classes, width)
    if name == "resnet18":
        return TorchPreActResNet18(c_in, classes, width)
    if name == "resnet19":  # tdBN's ResNet-19: 128-stem, (128 ×3, 256 ×3, 512 ×2), fc 256
        c = [int(k * width) for k in (128, 256, 512)]
        return TorchResNet(c_in, classes, c[0], ((c[0], 3, 1), (c[1], 3, 2), (c[2], 2, 2)), int(256 * width))
    c = [int(k * width) for k in (16, 32, 64)]  # He et al.'s CIFAR ResNet-20
    return TorchResNet(c_in, classes, c[0], ((c[0], 3, 1), (c[1], 3, 2), (c[2], 3, 2)))


def randomize_batchnorm(model, seed):
    """Affine parameters away from (1, 0) so that their gradients and scalings are exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen, dtype=m.bias.dtype))


def rel_err(mine, theirs):
    """max|mine − theirs| / max|theirs| (normwise: elements near zero do not dominate)."""
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert mine.shape == theirs.shape, f"shape {mine.shape} vs {theirs.shape}"
    return float(np.max(np.abs(mine - theirs), initial=0.0) / max(np.max(np.abs(theirs), initial=0.0), 1e-300))


def assert_agrees_with_torch(theirs, mine, x, mode, shadowed=(), tol=1e-10):
    """Copy the torch model's weights into ``mine`` by state-dict name, run both on ``x`` (loss
    <out, R>), compare the output, the input gradient, every parameter gradient (same names in the
    same order) and every buffer after the forward (running statistics, batch counters).

    In train mode the shadowed conv biases (see assert_gradcheck) hold only rounding noise on
    both sides, whose relative error means nothing: both must be 0 to 1e-12 of the largest
    gradient instead."""
    theirs = theirs.double()
    randomize_batchnorm(theirs, seed=3)
    if mode == "eval":  # running statistics := this batch's, as calibrate_batchnorm does
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0
        with torch.no_grad():
            theirs(torch.tensor(x))
        theirs.eval()
        mine.eval()
    mine.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})  # strict

    sj_functional.reset_net(theirs)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    projection = np.random.default_rng(5).standard_normal(tuple(out_t.shape))
    (out_t * torch.tensor(projection)).sum().backward()
    grads_t = {n: p.grad.numpy() for n, p in theirs.named_parameters()}

    set_smooth(mine)
    out = mine.forward(x)
    mine.zero_grad()
    grad_x = mine.backward(projection)
    grads = {n: g for n, _, g in mine.named_parameters()}

    assert list(grads) == list(grads_t), "parameter names or their order differ"
    errors = {"output": rel_err(out, out_t.detach().numpy()), "grad input": rel_err(grad_x, x_t.grad.numpy())}
    largest = max(np.max(np.abs(g)) for g in grads_t.values())
    for n in grads:
        if n in shadowed and mode == "train":
            assert max(np.max(np.abs(grads[n])), np.max(np.abs(grads_t[n]))) <= 1e-12 * largest, n
        else:
            errors[n] = rel_err(grads[n], grads_t[n])
    buffers_t = {n: b.numpy() for n, b in theirs.named_buffers()}
    buffers = dict(mine.named_buffers())
    assert list(buffers) == list(buffers_t), "buffer names or their order differ"
    errors.update({n: rel_err(buffers[n], buffers_t[n]) for n in buffers})
    bad = {k: v for k, v in errors.items() if v > tol}
    assert not bad, f"relative errors above {tol:g}: {bad}"


@needs_torch
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("kind", ["basic", "preact"])
def test_block_agrees_with_torch(kind, projection, mode):
    mine, x = make_block(kind, projection)
    c_in, stride = (2, 2) if projection else (4, 1)
    theirs = (TorchBasicBlock if kind == "basic" else TorchPreActBlock)(c_in, 4, stride)
    assert_agrees_with_torch(theirs, mine, x, mode, shadowed=("conv1.bias",) if kind == "preact" else ())


@needs_torch
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_network_agrees_with_torch(name, mode):
    mine, x = tiny_network(name)
    in_shape, width = TINY[name]
    assert_agrees_with_torch(torch_network(name, in_shape[0], 3, width), mine, x, mode, shadowed=conv_biases(mine))


# ------------------------------------------------------------------------------------------
# full size: names and shapes as the torch models, logits of the right shape
# ------------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("name", sorted(TINY))
def test_full_size_names_shapes_and_logits(name):
    mine = build_network(name, (3, 32, 32), 10, neuron="lif")
    theirs = torch_network(name, 3, 10, 1.0)
    assert [(n, p.shape) for n, p, _ in mine.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert [(n, b.shape) for n, b in mine.named_buffers()] == \
        [(n, tuple(b.shape)) for n, b in theirs.named_buffers()]
    out = mine.forward(np.random.default_rng(0).random((1, 1, 3, 32, 32)).astype(np.float32))
    assert out.shape == (1, 1, 10) and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_parameter_counts():
    """Counted by hand: He et al.'s ResNet-20 has 269,722 parameters with identity (option A)
    shortcuts; the two projections add conv 16·32 + BN 2·32 and conv 32·64 + BN 2·64."""
    count = lambda net: sum(p.size for _, p, _ in net.named_parameters())
    assert count(build_network("resnet20", (3, 32, 32), 10)) == 269_722 + (16 * 32 + 64) + (32 * 64 + 128)
    # CLIF's VGG-11: eight conv3x3 with bias + BN, and Linear(512·7·7, 10)
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    expected = sum(9 * a * b + b + 2 * b for a, b in convs) + 512 * 49 * 10 + 10
    assert count(build_network("vgg11", (3, 32, 32), 10)) == expected


# ------------------------------------------------------------------------------------------
# the registry, neurons by name, float32, options, errors
# ------------------------------------------------------------------------------------------
def test_registry_and_neurons_by_name():
    assert {"mlp", "cnn", "vgg11", "resnet18", "resnet19", "resnet20"} <= set(NETWORKS)
    net = build_network("resnet20", (3, 8, 8), 4, neuron="plif", width=1 / 8)
    names = [n for n, _, _ in net.named_parameters()]
    assert "sn1.w" in names and "layer2.0.sn2.w" in names  # PLIF's leak, SpikingJelly's name
    x = np.random.default_rng(0).random((2, 3, 3, 8, 8)).astype(np.float32)
    out = net.forward(x)
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    grad = net.backward(np.ones_like(out))
    assert grad.shape == x.shape and grad.dtype == np.float32 and np.all(np.isfinite(grad))
    assert all(np.any(g != 0) for n, _, g in net.named_parameters() if n.endswith("conv1.weight"))


def test_options():
    net = build_network("vgg11", (3, 32, 32), 10, width=1 / 32, dropout=0.25, bn_per_step=True)
    drops = [m for _, m in net.modules() if isinstance(m, Dropout)]
    assert len(drops) == 8 and all(d.p == 0.25 for d in drops)
    assert len({id(d.rng) for d in drops}) == 8  # independent masks
    assert all(m.per_step for _, m in net.modules() if isinstance(m, BatchNorm2d))
    net = build_network("resnet18", (2, 16, 16), 10, width=1 / 16)  # 2-channel (DVS-like) input
    assert net.children["conv1"].params["weight"].shape == (4, 2, 3, 3)
    assert net.forward(np.zeros((1, 2, 2, 16, 16), np.float32)).shape == (1, 2, 10)


def test_errors():
    with pytest.raises(ValueError, match=">= 32"):
        build_network("vgg11", (3, 16, 16), 10)
    with pytest.raises(ValueError, match="width"):
        build_network("resnet20", (3, 32, 32), 10, width=0)
    with pytest.raises(ValueError, match="channels, height, width"):
        build_network("resnet19", (3 * 32 * 32,), 10)
    with pytest.raises(TypeError):
        build_network("resnet19", (3, 32, 32), 10, hidden=(5,))  # an option of another network
    with pytest.raises(ValueError, match="every child"):
        Chain([("a", BatchNorm2d(2))], order=["a", "b"])
    block, x = make_block("basic", projection=True)
    with pytest.raises(ValueError, match="before forward"):
        block.backward(np.ones((T, N, 4, 2, 2)))
    out = block.forward(x)
    with pytest.raises(ValueError, match="shape"):
        block.backward(np.ones((T, N, 4, 4, 4)))
    block.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="second time"):
        block.backward(np.ones_like(out))


@pytest.mark.parametrize("name", sorted(set(NETWORKS) - {"mlp", "recurrent_mlp"}))
def test_every_image_network_checks_its_input_shape_by_name(name):
    """The conv networks take (channels, height, width); SHD's (700,) is refused naming the network."""
    with pytest.raises(ValueError, match=re.escape(f"{name} takes images: in_shape must be (channels, height, "
                                                   "width), got (700,)")):
        build_network(name, (700,), 20, neuron="lif")
