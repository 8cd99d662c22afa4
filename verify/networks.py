"""Whole refsnn networks against their SpikingJelly twins (tier 2, docs/verification.md).

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

Threshold ties in a network. Where a neuron's charged potential H lies close to its
threshold the two sides may fire differently (``verify.compare.tie_mask``). Deep in a network
the two sides' H agree only to the tolerance, not to a few ulps (BLAS sums in different
orders; refsnn's BatchNorm accumulates its statistics in float64), so the tie band of a network
is the tolerance: |H − V_th| <= tol·max(|H|, |V_th|) (``network_tie_ulps``). A flip at a tie is
legitimate, but it changes every later layer, the logits and all gradients. So: spikes of each
layer are compared in forward order with tied neurons excluded; once a flip at a tie has
occurred, everything downstream of it (later layers, logits, loss, gradients, buffers, later
optimizer steps) is reported as "not compared" with the reason, and counts as a pass. A flip
anywhere else fails, and its note gives how far from V_th it was. In float64 a tie has a
probability of about 1e-10 per element; in float32 ties do occur.

After the first optimizer step the two sides hold weights that are equal only to rounding;
see ``_training_row`` for what that means for the float32 loss trajectory. The rect surrogate
(CLIF's default) has jumps at |H − V_th| = 1/(2α), where the two sides may take different
gradients: elements within the tie band of a jump are counted in the spikes row's note.

Gradients that are zero up to rounding. A conv bias whose output reaches a training-mode
BatchNorm with nothing but additions in between (the conv right before it, or the two
branches of a pre-activation block feeding the next block's BatchNorm) cannot change the loss:
the batch mean absorbs it, its true gradient is 0 and both sides hold rounding noise, whose
error relative to itself means nothing. So when the reference gradient of a whole tensor is
below the tolerance relative to the largest gradient of the network, the row checks instead
that both sides are that small (max |g| <= tolerance · largest gradient, on each side); the
note says so. The same threshold cannot hide an error larger than the tolerance at the scale
of the network's gradients.

float32 and ill-conditioned sums. In float32 a long sum with heavy cancellation (PLIF's scalar
w, BatchNorm's affine gradients, the zero gradients above) can differ by more than 1e-5 between
two correct implementations that add in different orders. A float32 row above the tolerance
is therefore judged against float64 (the framework's own, started from the same float32
weights): it passes if refsnn's float32 result is within the tolerance of the float64 one, or
no farther from it than the framework's float32 result; the note gives both distances
(``_arbitrate``). A real float32 error is as far from float64 as from the framework, so it
still fails.
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
from .frameworks import torch_dtype

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
        # not attributes of their own: a child may be called "shortcut"
        self.paths = {"pre": pre, "residual": residual, "shortcut": shortcut, "post": post}

    def _run(self, path, x):
        for name in self.paths[path]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        a = self._run("pre", x)
        return self._run("post", self._run("residual", a) + self._run("shortcut", a))


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


def network_tie_ulps(dtype):
    """The tie band of a whole network: the tolerance, in ulps of 1 (84 in float32, 450360 in
    float64). Deep in a network the two sides' H agree only to the tolerance, not to a few ulps:
    BLAS sums in different orders, and refsnn's BatchNorm accumulates its statistics in float64."""
    dtype = np.dtype(dtype)
    return int(np.ceil(TOLERANCE[dtype] / np.finfo(dtype).eps))


def _surrogate_edges(m, h, tie_ulps):
    """Elements within the tie band of a jump of the surrogate derivative (rect: u = ±1/(2α)):
    there the two sides may take different gradients. Counted for the report only."""
    if m.surrogate.name != "rect":
        return 0
    edge = 0.5 / m.surrogate.alpha
    u = h - h.dtype.type(m.v_threshold)
    band = tie_ulps * np.spacing(np.maximum(np.abs(h), abs(m.v_threshold)).astype(h.dtype))
    return int(np.count_nonzero(np.abs(np.abs(u) - edge) <= band))


def _record_outputs(neurons):
    """Wrap each refsnn neuron's forward (of our private copy) to keep its output spikes."""
    outputs = {}
    for name, m in neurons.items():
        def forward(x, state=None, _name=name, _forward=m.forward):
            outputs[_name] = spikes = _forward(x, state)
            return spikes
        m.forward = forward
    return outputs


def _spike_check(component, dtype, neurons, outputs, recorder, tie_ulps):
    """Rows for each neuron layer's spikes in forward order, and the first flip at a tie (or None).

    Spikes are 0/1, compared exactly outside ties (in smooth mode, φ(u): to the tolerance)."""
    rows, flip = [], None
    for name in recorder.order:
        m, label = neurons[name], f"{name or 'neuron'} spikes"
        if flip is not None:
            rows.append(_not_compared(component, dtype, label, flip))
            continue
        h, mine, theirs = m.h_seq, outputs[name], recorder.spikes[name]
        if m.smooth:
            rows.append(compare(component, FRAMEWORK, label, mine, theirs, note="smooth"))
            continue
        ties, _ = tie_mask(h, m.v_threshold, tie_ulps)
        differ = mine != theirs
        flipped_at_ties = int(np.count_nonzero(differ & ties))
        note = f"rate {mine.mean():.2f}"
        edges = _surrogate_edges(m, h, tie_ulps)
        if edges:
            note += f", {edges} at the surrogate's jumps"
        if flipped_at_ties:
            note += f", {flipped_at_ties} flipped at ties"
        elsewhere = differ & ~ties
        if elsewhere.any():
            margin = np.abs(h[elsewhere] - m.v_threshold) / np.spacing(h.dtype.type(max(abs(m.v_threshold), 1.0)))
            note += (f", {int(elsewhere.sum())} differ away from ties, |H - V_th| = "
                     f"{margin.min():.0f}..{margin.max():.0f} ulps")
        rows.append(compare(component, FRAMEWORK, label, mine, theirs, ties=ties, tolerance=0.0, note=note))
        if flipped_at_ties:
            flip = f"downstream of {flipped_at_ties} spike(s) flipped at threshold ties in {name or 'neuron'}"
    return rows, flip


def compare_network(network, x, labels, dtype=np.float64, steps=10, lr=1e-3, component=None, tie_ulps=None):
    """Compare a refsnn network with its SpikingJelly twin; returns a list of ``Row``.

    ``network`` is not modified (a copy is cast to ``dtype``); ``x`` is ``[T, N, ...]``,
    ``labels`` integer classes ``[N]``. See the module docstring for what each row checks."""
    _require_torch()
    dtype = np.dtype(dtype)
    tol = TOLERANCE[dtype]
    tie_ulps = network_tie_ulps(dtype) if tie_ulps is None else tie_ulps
    component = component or type(network).__name__
    mine = copy.deepcopy(network).to(dtype)
    check_deterministic(mine)
    twin = torch_twin(mine, dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    labels = np.asarray(labels)
    y_t = torch.from_numpy(labels.astype(np.int64))
    neurons = {name: m for name, m in mine.modules() if isinstance(m, BaseNeuron)}
    initial = copy.deepcopy(mine) if dtype == np.float32 else None  # for the float64 arbiter
    outputs = _record_outputs(neurons)
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
        rows, flip = _spike_check(component, dtype, neurons, outputs, recorder, tie_ulps)
        rows += _output_rows(component, dtype, flip, out, loss, grad_x, out_t, loss_t, grad_x_t)
        rows += _gradient_rows(component, dtype, tol, flip, mine, twin)
        buffers_t = {name: b.numpy() for name, b in twin.named_buffers()}
        float_buffers = [(name, b) for name, b in mine.named_buffers() if b.dtype.kind == "f"]
        for name, buffer in float_buffers:
            rows.append(_not_compared(component, dtype, name, flip) if flip else
                        compare(component, FRAMEWORK, name, buffer, buffers_t[name]))
        if initial is not None and not flip and not all(r.passed for r in rows):
            values = {"logits": (out, out_t), "loss": (loss, loss_t), "grad_x": (grad_x, grad_x_t)}
            params_t = dict(twin.named_parameters())
            values.update((name, (g.copy(), params_t[name].grad.numpy().copy())) for name, _, g in mine.named_parameters()
                          if params_t[name].grad is not None)
            values.update((name, (b.copy(), buffers_t[name].copy())) for name, b in float_buffers)
            rows = _arbitrate(rows, values, initial, x, labels, dict(recorder.spikes), tol)
        if steps:
            rows.append(_training_row(component, dtype, steps, lr, flip, neurons, outputs, recorder, tie_ulps,
                                      run_both, opt_mine, opt_theirs))
    finally:
        recorder.remove()
    return rows


def _arbitrate(rows, values, initial, x, labels, spikes32, tol):
    """float32 rows above the tolerance, judged against float64 (the framework's own, started
    from the same float32 weights): a row passes if refsnn's float32 result is within the
    tolerance of the float64 one, or no farther from it than the framework's float32 result.

    Why: a gradient that is a long sum with heavy cancellation (PLIF's scalar w, BatchNorm's
    affine parameters, a conv bias before a BatchNorm, whose exact value is 0) is ill-conditioned
    in float32; two correct float32 implementations that sum in different orders can then differ
    by more than 1e-5 relative. The float64 run tells which side is off, and by how much. It is
    skipped (rows stay failed) if the float64 run fires differently from the float32 one.
    Errors are relative to max|float64 result|, or, for a gradient that is 0 to the tolerance in
    float64, to the largest gradient of the network."""
    reference = copy.deepcopy(initial).to(np.float64)
    twin = torch_twin(reference, np.float64)
    names = [name for name, m in reference.modules() if isinstance(m, BaseNeuron)]
    recorder = _SpikeRecorder(twin, names)
    try:
        x_t = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        out = twin(x_t)
        loss = F.cross_entropy(out.mean(0), torch.from_numpy(labels.astype(np.int64)))
        loss.backward()
        same_spikes = all(np.array_equal(recorder.spikes[n], spikes32[n]) for n in names)
    finally:
        recorder.remove()
    if not same_spikes:
        return [r if r.passed else _with_note(r, "float64 arbiter fires differently, not used") for r in rows]
    exact = {"logits": out.detach().numpy(), "loss": loss.item(), "grad_x": x_t.grad.numpy()}
    grads = {name: p.grad.numpy() for name, p in twin.named_parameters() if p.grad is not None}
    exact.update(grads)
    exact.update((name, b.numpy()) for name, b in twin.named_buffers())
    largest = max((float(np.max(np.abs(g))) for g in grads.values() if g.size), default=0.0)
    judged = []
    for row in rows:
        if row.passed or row.tensor not in values:
            judged.append(row)
            continue
        mine, theirs = (np.asarray(v, dtype=np.float64) for v in values[row.tensor])
        truth = np.asarray(exact[row.tensor], dtype=np.float64)
        scale = float(np.max(np.abs(truth)))
        if row.tensor in grads and scale <= tol * largest:
            scale = largest
        error_mine = float(np.max(np.abs(mine - truth))) / scale if scale > 0 else np.inf
        error_theirs = float(np.max(np.abs(theirs - truth))) / scale if scale > 0 else np.inf
        passed = bool(error_mine <= max(tol, error_theirs))
        judged.append(Row(row.component, row.framework, row.dtype, row.tensor, row.max_abs, row.max_rel, row.ties,
                          passed, _join(row.note, f"vs float64: refsnn {error_mine:.1e}, {row.framework} "
                                                  f"{error_theirs:.1e}")))
    return judged


def _with_note(row, note):
    return Row(row.component, row.framework, row.dtype, row.tensor, row.max_abs, row.max_rel, row.ties, row.passed,
               _join(row.note, note))


def _join(*notes):
    return "; ".join(n for n in notes if n)


def _output_rows(component, dtype, flip, out, loss, grad_x, out_t, loss_t, grad_x_t):
    if flip:
        return [_not_compared(component, dtype, tensor, flip) for tensor in ("logits", "loss", "grad_x")]
    return [compare(component, FRAMEWORK, "logits", out, out_t),
            compare(component, FRAMEWORK, "loss", np.asarray(loss, dtype), np.asarray(loss_t, dtype)),
            compare(component, FRAMEWORK, "grad_x", grad_x, grad_x_t)]


def _gradient_rows(component, dtype, tol, flip, mine, twin):
    grads_t = {name: p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), dtype)
               for name, p in twin.named_parameters()}
    largest = max((float(np.max(np.abs(g))) for g in grads_t.values() if g.size), default=0.0)
    rows = []
    for name, _, grad in mine.named_parameters():
        theirs = grads_t[name]
        if flip:
            rows.append(_not_compared(component, dtype, name, flip))
        elif largest > 0 and np.max(np.abs(theirs)) <= tol * largest:
            rows.append(zero_gradient_row(component, FRAMEWORK, name, grad, theirs, largest, tol))
        else:
            rows.append(compare(component, FRAMEWORK, name, grad, theirs))
    return rows


def zero_gradient_row(component, framework, name, mine, theirs, largest, tol):
    """A gradient that is 0 to the tolerance on the reference side (see the module docstring):
    both sides must be within ``tol`` of 0, relative to the ``largest`` gradient."""
    worst = max(float(np.max(np.abs(mine))), float(np.max(np.abs(theirs))))
    return Row(component, framework, str(mine.dtype), name, worst, worst / largest, 0, worst <= tol * largest,
               "zero gradient: both sides <= tol x largest gradient")


def _training_row(component, dtype, steps, lr, flip, neurons, outputs, recorder, tie_ulps, run_both, opt_mine,
                  opt_theirs):
    """Losses after each of ``steps`` Adam updates, compared up to the first step whose spikes differ.

    float64: a spike that differs away from a tie fails. float32: after the first update the two
    sides no longer hold the same weights, only weights equal to float32 rounding, and Adam's
    per-element normalization m/√v turns an element whose gradient is mostly rounding (or sits on a
    jump of the rect surrogate) into a full-size step of either sign; a few steps later spikes may
    flip far from the threshold. So in float32 the comparison stops at the first step with any
    spike difference and the note says where and how far from the threshold."""
    tensor = f"loss {steps} Adam steps"
    if flip:
        return _not_compared(component, dtype, tensor, flip)
    losses, losses_t, stopped, failures = [], [], None, []
    for step in range(1, steps + 1):
        opt_mine.step()
        opt_theirs.step()
        _, loss, _, _, loss_t, _ = run_both()
        spike_rows, flip = _spike_check(component, dtype, neurons, outputs, recorder, tie_ulps)
        differ = [f"{r.tensor} ({r.note})" for r in spike_rows if not r.passed]
        if differ and dtype == np.float32:
            stopped = f"steps {step}-{steps} not compared, float32 weights drifted apart: " + "; ".join(differ)
            break
        failures += [f"step {step}: {d}" for d in differ]
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
