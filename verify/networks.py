"""Whole refsnn networks against their SpikingJelly twins (tier 2, verification.md).

``torch_twin(net)`` builds, layer by layer, the torch model that computes what ``net``
computes, from SpikingJelly 2.0 multi-step layers (``layer.Conv2d(step_mode="m")``,
``layer.BatchNorm2d(step_mode="m")``, ``neuron.LIFNode(step_mode="m")``...), under the same
names, and copies the weights across by state-dict name. Only the wiring (which child feeds
which, read from ``Sequential``, ``Chain`` and the residual blocks) is taken from refsnn; every
number on the torch side is computed by torch and SpikingJelly.

``compare_network(net, x, labels)`` runs both on the same input and returns one
``verify.compare.Row`` per tensor:

* every neuron layer's spikes (the tie count is reported; the note gives the firing rate),
* the logits ``[T, N, K]``, the cross-entropy of their time mean (refsnn ``cross_entropy``
  against ``F.cross_entropy(out.mean(0), y)``), the input gradient, every parameter gradient
  and every floating buffer after the forward (BatchNorm running statistics),
* the losses after each of ``steps`` Adam updates (refsnn ``optim.Adam`` against
  ``torch.optim.Adam`` with the same ``lr``), as llm.c's ``test_gpt2.c`` does.

Tolerances are ``verify.compare.TOLERANCE`` (1e-10 relative in float64, 1e-5 in float32).

Threshold ties in a network. Where a neuron's charged potential lies within a few ulps of
its threshold the two sides may fire differently (``verify.compare.tie_mask``); such a flip is
legitimate, but it changes every later layer, the logits and all gradients. So: spikes of each
layer are compared in forward order with tied neurons excluded; once a flip at a tie has
occurred, everything downstream of it (later layers, logits, loss, gradients, later optimiser
steps) is reported as "not compared" with the reason, and counts as a pass. A flip anywhere
else fails. In float64 ties have probability ~1e-15 per element; in float32 they do occur.

Conv biases that feed a training-mode BatchNorm directly cannot change the loss (the batch
mean absorbs them): their true gradient is 0 and both sides hold rounding noise, whose relative
error means nothing. For them the row checks that both sides are 0 to the tolerance, relative
to the largest gradient of the network.
"""
import copy
from collections import OrderedDict

import numpy as np

from refsnn.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,
                           Linear, MaxPool2d, ReLU)
from refsnn.losses import cross_entropy
from refsnn.models import Chain, _ResidualBlock
from refsnn.module import Sequential
from refsnn.neurons import CLIF, IF, LIF, PLIF, BaseNeuron
from refsnn.optim import Adam

from .compare import TOLERANCE, Row, compare, tie_mask

FRAMEWORK = "spikingjelly"

try:
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate
    _TorchModule = torch.nn.Module
except ImportError:  # the functions below then raise a clear ImportError
    torch = None
    _TorchModule = object


def _require_torch():
    if torch is None:
        raise ImportError("verify.networks needs torch and spikingjelly 2.0 "
                          "(pip install torch spikingjelly, or refsnn's 'verify' extra)")


def torch_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return torch.float64 if dtype == np.float64 else torch.float32


# ------------------------------------------------------------------------------------------
# containers: the refsnn wiring, torch modules inside
# ------------------------------------------------------------------------------------------
class TwinChain(_TorchModule):
    """Children registered in refsnn's order (hence the same state-dict order), run in ``order``."""

    def __init__(self, named_children, order):
        super().__init__()
        for name, child in named_children:
            self.add_module(name, child)
        self.order = list(order)

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class TwinResidual(_TorchModule):
    """a = pre(x) ;  y = post(residual(a) + shortcut(a)), each a tuple of child names."""

    def __init__(self, named_children, pre, residual, shortcut, post):
        super().__init__()
        for name, child in named_children:
            self.add_module(name, child)
        self.pre, self.residual, self.shortcut, self.post = pre, residual, shortcut, post

    def _run(self, names, x):
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        a = self._run(self.pre, x)
        return self._run(self.post, self._run(self.residual, a) + self._run(self.shortcut, a))


# ------------------------------------------------------------------------------------------
# one refsnn layer -> its SpikingJelly / torch counterpart
# ------------------------------------------------------------------------------------------
def _surrogate_function(neuron):
    s, spiking = neuron.surrogate, not neuron.smooth
    if s.name == "atan":
        return sj_surrogate.ATan(alpha=s.alpha, spiking=spiking)
    if s.name == "sigmoid":
        return sj_surrogate.Sigmoid(alpha=s.alpha, spiking=spiking)
    if s.name == "rect":
        return sj_surrogate.Rect(alpha=s.alpha, spiking=spiking)
    if s.name == "s2nn" and spiking:  # SpikingJelly's S2NN primitive is β·ln(u+1) + 1, refsnn's + 1/2
        return sj_surrogate.S2NN(alpha=s.alpha, beta=s.beta)
    raise NotImplementedError(f"SpikingJelly 2.0 has no surrogate matching refsnn's {s!r}"
                              + (" in smooth mode" if neuron.smooth else ""))


def _twin_neuron(m):
    if m.strict:
        raise NotImplementedError("SpikingJelly fires on H >= V_th; refsnn's strict=True (H > V_th) has no twin")
    sg = _surrogate_function(m)
    if isinstance(m, CLIF):
        return sj_neuron.ComplementaryLIFNode(tau=m.tau, v_threshold=m.v_threshold, surrogate_function=sg,
                                              step_mode="m")
    common = dict(v_threshold=m.v_threshold, v_reset=m.v_reset, surrogate_function=sg,
                  detach_reset=m.detach_reset, step_mode="m")
    if isinstance(m, PLIF):  # w is copied with the weights, so init_tau does not matter
        return sj_neuron.ParametricLIFNode(decay_input=m.decay_input, **common)
    if isinstance(m, LIF):
        return sj_neuron.LIFNode(tau=m.tau, decay_input=m.decay_input, **common)
    if isinstance(m, IF):  # also SingleStep, an IF neuron run for one step
        return sj_neuron.IFNode(**common)
    raise NotImplementedError(f"no SpikingJelly twin for the neuron {type(m).__name__}")


def _twin_leaf(m):
    if isinstance(m, BaseNeuron):
        return _twin_neuron(m)
    if isinstance(m, Linear):
        return sj_layer.Linear(m.in_features, m.out_features, bias="bias" in m.params, step_mode="m")
    if isinstance(m, Conv2d):
        return sj_layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                               groups=m.groups, bias="bias" in m.params, step_mode="m")
    if isinstance(m, (BatchNorm1d, BatchNorm2d)):
        if m.per_step:
            raise NotImplementedError("SpikingJelly's multi-step BatchNorm pools statistics over time; "
                                      "refsnn's per_step=True BatchNorm has no twin")
        kind = sj_layer.BatchNorm2d if isinstance(m, BatchNorm2d) else sj_layer.BatchNorm1d
        return kind(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine, step_mode="m")
    if isinstance(m, MaxPool2d):
        return sj_layer.MaxPool2d(m.kernel_size, m.stride, m.padding, step_mode="m")
    if isinstance(m, AvgPool2d):
        return sj_layer.AvgPool2d(m.kernel_size, m.stride, m.padding, step_mode="m")
    if isinstance(m, AdaptiveAvgPool2d):
        return sj_layer.AdaptiveAvgPool2d(m.output_size, step_mode="m")
    if isinstance(m, Flatten):
        return sj_layer.Flatten(step_mode="m")
    if isinstance(m, Dropout):
        return sj_layer.Dropout(m.p, step_mode="m")
    if isinstance(m, ReLU):
        return torch.nn.ReLU()
    raise NotImplementedError(f"no torch twin for the refsnn layer {type(m).__name__}")


def _twin(m):
    children = [(name, _twin(child)) for name, child in m.children.items()]
    if isinstance(m, Sequential):
        return torch.nn.Sequential(OrderedDict(children))
    if isinstance(m, Chain):
        return TwinChain(children, m.order)
    if isinstance(m, _ResidualBlock):
        return TwinResidual(children, m.pre, m.residual, m.shortcut, m.post)
    if children:
        raise NotImplementedError(f"no torch twin for the refsnn container {type(m).__name__}")
    return _twin_leaf(m)


def copy_weights(source, twin):
    """Copy a refsnn module's parameters and buffers into ``twin`` by state-dict name (strict)."""
    state = {name: torch.from_numpy(np.array(value)) for name, value in source.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def torch_twin(module, dtype=None):
    """The SpikingJelly/torch model computing what the refsnn ``module`` computes, with its
    weights, its train/eval mode per layer, and its state-dict names, in ``dtype`` (default:
    the dtype of the module's first parameter, float32 for a parameter-free module)."""
    _require_torch()
    if dtype is None:
        first = next((p for _, p, _ in module.named_parameters()), None)
        dtype = np.float32 if first is None else first.dtype
    twin = _twin(module).to(torch_dtype(dtype))
    mine = [name for name, _, _ in module.named_parameters()] + [name for name, _ in module.named_buffers()]
    theirs = [name for name, _ in twin.named_parameters()] + [name for name, _ in twin.named_buffers()]
    if mine != theirs:
        raise RuntimeError(f"twin state-dict names differ from the module's: {mine} vs {theirs}")
    copy_weights(module, twin)
    twin_modules = dict(twin.named_modules())
    for name, m in module.modules():
        twin_modules[name].train(m.training)
    return twin


def check_deterministic(module):
    """Raise if a layer draws random numbers in this mode (the two sides would draw differently)."""
    for name, m in module.modules():
        if isinstance(m, Dropout) and m.training and m.p > 0:
            raise ValueError(f"{name or 'the module'} is a training-mode Dropout(p={m.p}): torch and "
                             "refsnn draw different masks; compare with p=0 or in eval mode")


def shadowed_biases(module):
    """Names of conv/linear biases that feed a training-mode BatchNorm directly (true gradient 0)."""
    found = []
    for prefix, m in module.modules():
        if isinstance(m, Sequential):
            sequences = [list(m.children)]
        elif isinstance(m, Chain):
            sequences = [m.order]
        elif isinstance(m, _ResidualBlock):
            sequences = [m.pre, m.residual, m.shortcut, m.post]
        else:
            continue
        for names in sequences:
            for first, second in zip(names, names[1:]):
                a, b = m.children[first], m.children[second]
                if (isinstance(a, (Conv2d, Linear)) and "bias" in a.params
                        and isinstance(b, (BatchNorm1d, BatchNorm2d)) and b.training):
                    found.append(f"{prefix}.{first}.bias" if prefix else f"{first}.bias")
    return found


# ------------------------------------------------------------------------------------------
# the comparison
# ------------------------------------------------------------------------------------------
def _not_compared(component, dtype, tensor, reason):
    return Row(component, FRAMEWORK, str(np.dtype(dtype)), tensor, np.nan, np.nan, 0, True, f"not compared: {reason}")


class _SpikeRecorder:
    """Forward hooks on the twin's neurons: each one's output spikes and the order they fire in."""

    def __init__(self, twin, names):
        self.spikes, self.order = {}, []
        modules = dict(twin.named_modules())
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in names]

    def _hook(self, name):
        def record(module, inputs, output):
            self.spikes[name] = output.detach().numpy().copy()
            self.order.append(name)
        return record

    def clear(self):
        self.spikes.clear()
        self.order.clear()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _spike_check(component, dtype, neurons, recorder, tie_ulps):
    """Rows for each neuron layer's spikes in forward order, and the first flip at a tie (or None).

    refsnn fires where H >= V_th on the H it stores (neurons.py), so its spikes are read from
    ``h_seq``; the twin's are its neurons' outputs."""
    rows, flip = [], None
    for name in recorder.order:
        m = neurons[name]
        if flip is not None:
            rows.append(_not_compared(component, dtype, f"{name} spikes", flip))
            continue
        h = m.h_seq
        mine = (h >= m.v_threshold).astype(h.dtype)
        theirs = recorder.spikes[name]
        ties, _ = tie_mask(h, m.v_threshold, tie_ulps)
        flipped_at_ties = int(np.count_nonzero((mine != theirs) & ties))
        note = f"rate {mine.mean():.2f}" + (f", {flipped_at_ties} flipped at ties" if flipped_at_ties else "")
        rows.append(compare(component, FRAMEWORK, f"{name or 'neuron'} spikes", mine, theirs, ties=ties,
                            tolerance=0.0, note=note))
        if flipped_at_ties:
            flip = f"downstream of {flipped_at_ties} spike(s) flipped at threshold ties in {name or 'neuron'}"
    return rows, flip


def compare_network(network, x, labels, dtype=np.float64, steps=10, lr=1e-3, component=None, tie_ulps=4):
    """Compare a refsnn network with its SpikingJelly twin; returns a list of ``Row``.

    ``network`` is not modified (a copy is cast to ``dtype``); ``x`` is ``[T, N, ...]``,
    ``labels`` integer classes ``[N]``. See the module docstring for what each row checks."""
    _require_torch()
    dtype = np.dtype(dtype)
    tol = TOLERANCE[dtype]
    component = component or type(network).__name__
    mine = copy.deepcopy(network).to(dtype)
    check_deterministic(mine)
    twin = torch_twin(mine, dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    labels = np.asarray(labels)
    y_t = torch.from_numpy(labels.astype(np.int64))
    neurons = {name: m for name, m in mine.modules() if isinstance(m, BaseNeuron)}
    shadowed = set(shadowed_biases(mine))
    recorder = _SpikeRecorder(twin, list(neurons))
    opt_mine = Adam(mine.named_parameters(), lr=lr)
    opt_theirs = torch.optim.Adam(twin.parameters(), lr=lr, foreach=False)

    def run_both():
        recorder.clear()
        mine.zero_grad()
        out = mine.forward(x)
        loss, grad_out = cross_entropy(out, labels)
        grad_x = mine.backward(grad_out)
        sj_functional.reset_net(twin)
        opt_theirs.zero_grad()
        x_t = torch.from_numpy(x.copy()).requires_grad_(True)
        out_t = twin(x_t)
        loss_t = F.cross_entropy(out_t.mean(0), y_t)
        loss_t.backward()
        return out, loss, grad_x, out_t.detach().numpy(), loss_t.item(), x_t.grad.numpy()

    try:
        out, loss, grad_x, out_t, loss_t, grad_x_t = run_both()
        rows, flip = _spike_check(component, dtype, neurons, recorder, tie_ulps)
        rows += _output_rows(component, dtype, flip, out, loss, grad_x, out_t, loss_t, grad_x_t)
        rows += _gradient_rows(component, dtype, tol, flip, mine, twin, shadowed)
        buffers_t = dict(twin.named_buffers())
        for name, buffer in mine.named_buffers():
            if buffer.dtype.kind == "f":
                rows.append(_not_compared(component, dtype, name, flip) if flip else
                            compare(component, FRAMEWORK, name, buffer, buffers_t[name].numpy()))
        if steps:
            rows.append(_training_row(component, dtype, steps, lr, flip, neurons, recorder, tie_ulps,
                                      run_both, opt_mine, opt_theirs))
    finally:
        recorder.remove()
    return rows


def _output_rows(component, dtype, flip, out, loss, grad_x, out_t, loss_t, grad_x_t):
    if flip:
        return [_not_compared(component, dtype, tensor, flip) for tensor in ("logits", "loss", "grad input")]
    return [compare(component, FRAMEWORK, "logits", out, out_t),
            compare(component, FRAMEWORK, "loss", np.asarray(loss, dtype), np.asarray(loss_t, dtype)),
            compare(component, FRAMEWORK, "grad input", grad_x, grad_x_t)]


def _gradient_rows(component, dtype, tol, flip, mine, twin, shadowed):
    grads_t = {name: p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), dtype)
               for name, p in twin.named_parameters()}
    largest = max((float(np.max(np.abs(g))) for g in grads_t.values() if g.size), default=0.0)
    rows = []
    for name, _, grad in mine.named_parameters():
        theirs = grads_t[name]
        if flip:
            rows.append(_not_compared(component, dtype, name, flip))
        elif name in shadowed:
            worst = max(float(np.max(np.abs(grad))), float(np.max(np.abs(theirs))))
            rel = worst / largest if largest > 0 else (0.0 if worst == 0 else np.inf)
            rows.append(Row(component, FRAMEWORK, str(dtype), name, worst, rel, 0, rel <= tol,
                            "true gradient 0 (bias before a train-mode BatchNorm): both sides ~0"))
        else:
            rows.append(compare(component, FRAMEWORK, name, grad, theirs))
    return rows


def _training_row(component, dtype, steps, lr, flip, neurons, recorder, tie_ulps, run_both, opt_mine, opt_theirs):
    """Losses after each of ``steps`` Adam updates, compared up to the first flip at a tie."""
    tensor = f"loss {steps} Adam steps"
    if flip:
        return _not_compared(component, dtype, tensor, flip)
    losses, losses_t, stopped, failures = [], [], None, []
    for step in range(1, steps + 1):
        opt_mine.step()
        opt_theirs.step()
        _, loss, _, _, loss_t, _ = run_both()
        spike_rows, flip = _spike_check(component, dtype, neurons, recorder, tie_ulps)
        failures += [f"step {step}: {r.tensor}" for r in spike_rows if not r.passed]
        if flip:
            stopped = f"steps {step}-{steps} not compared, {flip}"
            break
        losses.append(loss)
        losses_t.append(loss_t)
    note = f"lr {lr:g}" + (f"; {stopped}" if stopped else "")
    if failures:
        return Row(component, FRAMEWORK, str(dtype), tensor, np.nan, np.nan, 0, False,
                   "spikes differ away from ties at " + ", ".join(failures))
    if not losses:
        return _not_compared(component, dtype, tensor, stopped)
    return compare(component, FRAMEWORK, tensor, np.asarray(losses, dtype), np.asarray(losses_t, dtype), note=note)
