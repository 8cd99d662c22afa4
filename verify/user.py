"""Check your own PyTorch spiking layer or network against refsnn.

``check_against(refsnn_module, torch_module)`` runs both on the same input with the same
weights and returns one ``verify.compare.Row`` per tensor: the output (``spikes`` for a neuron
layer, and the membrane too if your module returns ``(spikes, membrane)``), the input gradient
``grad_x`` and the gradient of every parameter, by state-dict name. ``print_table(rows)``
prints them. Each failing row names a tensor where your code and the reference disagree.

Example: a hand-written LIF whose reset uses the membrane from *before* charging::

    import numpy as np, torch, refsnn
    from refsnn.verify.user import check_against, print_table

    class Spike(torch.autograd.Function):      # Θ(u) forward, sigmoid surrogate backward (α = 4)
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= 0).to(u)

        @staticmethod
        def backward(ctx, grad):
            sg = torch.sigmoid(4.0 * ctx.saved_tensors[0])
            return grad * 4.0 * sg * (1 - sg)

    class MyLIF(torch.nn.Module):              # tau = 2, V_th = 1, hard reset to 0
        def forward(self, x):                  # x: [T, N, ...]
            v, spikes = torch.zeros_like(x[0]), []
            for x_t in x:
                h = v + (x_t - v) / 2.0        # charge
                s = Spike.apply(h - 1.0)       # fire
                v = (1 - s) * v                # reset. BUG: should be (1 - s) * h
                spikes.append(s)
            return torch.stack(spikes)

    x = np.random.default_rng(0).normal(0.8, 1.0, (8, 4, 16))
    print_table(check_against(refsnn.LIF(), MyLIF(), inputs=x))

prints::

    component                   framework     dtype    tensor              max abs    max rel   ties  result
    --------------------------------------------------------------------------------------------------------
    LIF                         torch         float64  spikes             1.00e+00   1.00e+00      0  FAIL  (rate 0.18, 49 of 512 differ, first at [t, n, ...] = [1, 0, 7])
    LIF                         torch         float64  grad_x             5.62e-01   8.18e-01      0  FAIL
    0 passed, 2 failed

The charge, the threshold and the surrogate are right, so only a reference run shows that
the spikes already differ (and with them every gradient). With the reset fixed, both rows pass.

A failing gradient row's note says where the two backwards first part: the layer whose backward
first gives a different gradient (going backwards), the time step (the latest that differs: BPTT
runs from t = T−1 down) and whether refsnn/torch is one constant ratio there (a surrogate's
scale). A membrane your module returns is compared in a row named for it: ``V after reset`` (or
``H before reset``, the charged potential, when that is what it returns); for snnTorch's neurons
(refsnn's Leaky, Synaptic, RLeaky) it is their ``mem``, "U (snnTorch mem, before reset)" with
reset_delay=True (snnTorch's default) and "U (snnTorch mem, after reset)" without.

A neuron's configuration that your module keeps in its state dict, as snnTorch does (``beta``,
``alpha``, ``threshold`` unless learned, ``reset_mechanism_val``, ``graded_spikes_factor``; under a
prefix such as ``lif.`` when your module wraps one), is compared with the refsnn neuron's and
never copied: each that differs is one failing row naming the entry and both values (e.g. your
reset 'subtract' against refsnn's reset_mechanism='zero'; graded spikes other than 1).

``verify_user(torch_module, network=... | run=... | nir_file=...)`` builds the refsnn side from a
network or neuron name, a run directory or a NIR file, copies the weights by name and runs
``check_against``; ``refsnn verify --user MODULE:FACTORY`` is its command line (``main``).

Without ``torch_module`` the reference is the SpikingJelly twin of ``refsnn_module``
(``verify.networks.torch_twin``); with ``weights`` (a ``.safetensors``/``.npz`` file or a state
dict) the same weights are loaded into both sides first (otherwise the torch module's weights
are copied into refsnn's). Neither module you pass is modified: both are copied.

Threshold ties: where refsnn's charged potential H lies within ``tie_ulps`` ulps of V_th the two
sides may fire differently. For a single neuron layer those neurons are excluded from the
element-wise checks and counted in the ``ties`` column (verify.compare). For a network the
count of such neurons inside it is given in the note, because a flip there changes everything
downstream; compare ``verify.networks.compare_network`` for the layer-by-layer check.
"""
import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import os
import re
import sys

import numpy as np

from refsnn.neurons import BaseNeuron, RLeaky
from refsnn.neurons.leaky import RESET_MECHANISMS

from .compare import TOLERANCE, Row, compare, format_table, tie_mask
from .networks import FRAMEWORK as SPIKINGJELLY
from .networks import _require_torch, check_deterministic, network_tie_ulps, torch_dtype, torch_twin, zero_gradient_row
from .weights import _as_numpy, load_into, load_weights


def check_against(refsnn_module, torch_module=None, weights=None, inputs=None, dtype=np.float64,
                  grad_output=None, input_shape=None, seed=0, component=None, framework=None, tie_ulps=None):
    """Run a refsnn module and a torch module on the same inputs; compare every tensor.

    refsnn_module  a refsnn ``Module``: a neuron layer (``refsnn.LIF(...)``), a layer, or a network
                   (e.g. ``refsnn.models.build_network(...)``). It states the configuration your
                   code claims to implement.
    torch_module   your ``torch.nn.Module``, time-major ``[T, N, ...]`` in and out; it may return
                   ``(spikes, membrane)`` for a neuron layer. None: the SpikingJelly twin.
    weights        a weight file path or a state dict (PyTorch names) loaded into both; None: the
                   torch module's own weights are copied into refsnn (strict names and shapes).
                   A neuron's configuration in the state dict (snnTorch's beta, threshold,
                   reset_mechanism_val...) is compared instead, in both cases: one row per
                   difference (module docstring).
    inputs         the input array ``[T, N, ...]``; or None with ``input_shape`` for a standard
                   normal draw from ``seed``.
    dtype          np.float64 (tolerance 1e-10 relative) or np.float32 (1e-5).
    grad_output    dL/d(output) for the backward; None: a standard normal draw from ``seed``.
    component, framework   labels for the table (default: the refsnn class and "torch", or
                   "spikingjelly" for the twin).
    tie_ulps       the threshold-tie band; default 4 ulps for a single neuron layer (both sides
                   compute H with the same operations) and the tolerance for a network.

    Returns a list of ``Row``: ``spikes`` (or ``output``), ``membrane`` (if returned), ``grad_x``,
    then one per parameter gradient. Parameters present on one side only are rows that fail.
    """
    _require_torch()
    import torch
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(seed)
    mine = copy.deepcopy(refsnn_module).to(dtype)  # cast first: float64 weights stay float64
    state = None
    if weights is not None:
        state = weights if hasattr(weights, "items") else load_weights(weights)
        load_into(mine, state)
    component = component or type(refsnn_module).__name__
    single_neuron = isinstance(mine, BaseNeuron)
    prefix, config_rows = "", []
    if torch_module is None:
        theirs = torch_twin(mine, dtype)
        framework = framework or SPIKINGJELLY
    else:
        framework = framework or "torch"
        theirs = copy.deepcopy(torch_module).to(torch_dtype(dtype))
        prefix = _wrapper_prefix(mine, theirs) if single_neuron else ""
        config_rows, config = _configuration(mine, theirs.state_dict(), prefix, component, framework, dtype)
        layers = dict(mine.modules())
        mine_config = {name for name, _ in mine.named_buffers() if _configuration_of(layers, name) is not None}
        if state is not None:
            _load_torch(theirs, {name: v for name, v in state.items() if name not in mine_config}, prefix, config)
        else:
            try:
                copied = {name[len(prefix):]: v for name, v in theirs.state_dict().items() if name not in config}
                load_into(mine, copied, skip=mine_config)
            except ValueError as e:
                raise ValueError(f"copying your torch module's weights into refsnn's {type(mine).__name__}: {e}") from None
        mine.train(theirs.training)
    check_deterministic(mine)
    x = _inputs(inputs, input_shape, rng, dtype)
    if single_neuron:
        mine.store_v_seq = True
    recorder = _GradRecorder(mine, theirs)

    try:
        out = mine.forward(x)
        grad_output = rng.standard_normal(out.shape) if grad_output is None else np.asarray(grad_output)
        grad_output = np.ascontiguousarray(grad_output, dtype=dtype)
        if grad_output.shape != out.shape:
            raise ValueError(f"grad_output has shape {grad_output.shape}, the output has shape {out.shape}")
        mine.zero_grad()
        grad_x = mine.backward(grad_output)

        _reset_state(theirs)
        theirs.zero_grad()
        x_t = torch.from_numpy(x.copy()).requires_grad_(True)
        result = _run_torch("forward", lambda: theirs(x_t))
        out_t, membrane_t = (result[0], result[1]) if isinstance(result, (tuple, list)) else (result, None)
        if tuple(out_t.shape) != out.shape:
            raise ValueError(f"the torch module returned shape {tuple(out_t.shape)}, refsnn {out.shape}: "
                             "both must be time-major [T, N, ...]")
        _run_torch("backward", lambda: (out_t * torch.from_numpy(grad_output)).sum().backward())
    finally:
        recorder.remove()

    def row(tensor, a, b, ties=None, note=""):
        return compare(component, framework, tensor, a, b, ties=ties, note=note)

    forward, gradients = list(config_rows), []
    grad_x_t = _numpy(x_t.grad, x.shape)
    if single_neuron:
        ties, _ = tie_mask(mine.h_seq, mine.v_threshold, 4 if tie_ulps is None else tie_ulps)
        spikes_t = _numpy(out_t)
        note = "smooth" if mine.smooth else _spike_note(out, spikes_t, ties)
        forward.append(row("spikes", out, spikes_t, ties, note))
        if membrane_t is not None:
            forward.append(_membrane_row(mine, _numpy(membrane_t), ties, row))
        gradients.append(row("grad_x", grad_x, grad_x_t, ties))
    else:
        hidden = _hidden_ties(mine, network_tie_ulps(dtype) if tie_ulps is None else tie_ulps)
        note = f"{hidden} neuron(s) inside at threshold ties" if hidden else ""
        forward.append(row("output", out, _numpy(out_t), note=note))
        gradients.append(row("grad_x", grad_x, grad_x_t, note=note))
    gradients += _parameter_rows(mine, theirs, component, framework, dtype, prefix)
    gradients = _locate_gradient_failures(forward, gradients, recorder, grad_x, grad_x_t, TOLERANCE[dtype])
    if dtype == np.float64 and out_t.dtype == torch.float32:   # snnTorch's spikes are float32 in any dtype
        gradients = [r if r.passed else dataclasses.replace(r, note="; ".join(filter(None, (r.note, FLOAT32_OUTPUT))))
                     for r in gradients]
    return forward + gradients


FLOAT32_OUTPUT = ("your module's output is float32 in a float64 run (snnTorch's spikes are, in any dtype), so "
                  "the gradient through it is rounded to float32: check with --dtype float32")


def print_table(rows, file=None):
    """Print the rows as the verification table; returns True when every row passed."""
    print(format_table(rows), file=file)
    return all(r.passed for r in rows)


def _inputs(inputs, input_shape, rng, dtype):
    if inputs is None:
        if input_shape is None:
            raise ValueError("give inputs ([T, N, ...] array) or input_shape")
        inputs = rng.standard_normal(tuple(input_shape))
    inputs = np.asarray(inputs)
    if inputs.dtype.kind not in "fiu":
        raise TypeError(f"inputs must be a real array, got dtype {inputs.dtype}")
    return np.ascontiguousarray(inputs, dtype=dtype)


def _spike_note(mine, theirs, ties):
    """Firing rate and, if any, how many spikes differ outside ties and where the first one is."""
    note = f"rate {mine.mean():.2f}"
    differ = (mine != theirs) & ~np.broadcast_to(ties, mine.shape)
    if differ.any():
        first = tuple(int(i) for i in np.argwhere(differ)[0])
        note += f", {int(differ.sum())} of {differ.size} differ, first at [t, n, ...] = {list(first)}"
    return note


def _numpy(tensor, shape=None):
    """A torch tensor as numpy (zeros when the torch side produced no gradient)."""
    if tensor is None:
        return np.zeros(shape)
    return tensor.detach().cpu().numpy()


def _reset_state(torch_module):
    """SpikingJelly neurons keep their membrane between calls: reset before the run."""
    try:
        from spikingjelly.activation_based import functional
    except ImportError:
        return
    functional.reset_net(torch_module)


def _hidden_ties(module, tie_ulps):
    total = 0
    for _, m in module.modules():
        if isinstance(m, BaseNeuron) and getattr(m, "h_seq", None) is not None:
            total += int(tie_mask(m.h_seq, m.v_threshold, tie_ulps)[0][0].sum())
    return total


def _parameter_rows(mine, theirs, component, framework, dtype, prefix=""):
    params_t = {name[len(prefix):]: p for name, p in theirs.named_parameters()}
    grads = {name: g for name, _, g in mine.named_parameters()}
    grads_t = {name: _numpy(p.grad, tuple(p.shape)) for name, p in params_t.items()}
    largest = max((float(np.max(np.abs(g))) for g in grads_t.values() if g.size), default=0.0)
    tol = TOLERANCE[dtype]
    rows = []
    for name in list(grads) + [n for n in grads_t if n not in grads]:
        if name not in grads_t or name not in grads:
            side = "torch" if name not in grads_t else "refsnn"
            rows.append(Row(component, framework, str(dtype), name, np.nan, np.nan, 0, False,
                            f"parameter missing on the {side} side"))
        elif largest > 0 and np.max(np.abs(grads_t[name])) <= tol * largest:
            rows.append(zero_gradient_row(component, framework, name, grads[name], grads_t[name], largest, tol))
        else:
            rows.append(compare(component, framework, name, grads[name], grads_t[name]))
    return rows


def _run_torch(what, call):
    """``call()``, with anything the torch module raises (your code, or torch on a shape it was
    given) turned into one ValueError line naming it."""
    try:
        return call()
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"the torch module's {what} raised {type(e).__name__}: {first}") from None


def _load_torch(torch_module, state, prefix="", skip=()):
    """Copy ``state`` (refsnn's names; ``prefix`` put before each) into the torch module by name,
    leaving its entries named in ``skip`` (its configuration) as they are; ValueError naming every
    missing, unexpected or misshapen tensor (torch's own RuntimeError would be a traceback's worth
    of text)."""
    import torch
    own = {name: value for name, value in torch_module.state_dict().items() if name not in skip}
    arrays = {prefix + name: _as_numpy(name, value) for name, value in state.items()}
    problems = [f"missing from the weights: {name}" for name in own if name not in arrays]
    problems += [f"not in your torch module: {name}" for name in arrays if name not in own]
    problems += [f"shape mismatch: {name} is {arrays[name].shape} in the weights, {tuple(own[name].shape)} in "
                 "your torch module" for name in own if name in arrays and arrays[name].shape != tuple(own[name].shape)]
    if problems:
        raise ValueError("weights do not fit your torch module: " + "; ".join(problems))
    torch_module.load_state_dict({name: torch.as_tensor(array) for name, array in arrays.items()}, strict=False)


def _membranes(neuron):
    """``[(row name, [T, N, ...] sequence, note)]``: the membranes of a neuron layer your module may
    return, its membrane state first (``neuron.membrane``: "v", or snnTorch's "mem")."""
    state = getattr(neuron, neuron.membrane + "_seq")
    before = "your module returns the membrane before the reset"
    if neuron.membrane == "mem":   # snnTorch's neurons: U, pre-reset with reset_delay (then U = H), else post-reset
        if neuron.reset_delay:
            return [("U (snnTorch mem, before reset)", state, "")]
        return [("U (snnTorch mem, after reset)", state, ""), ("H before reset", neuron.h_seq, before)]
    return [("V after reset", state, ""), ("H before reset", neuron.h_seq, before)]


def _membrane_row(mine, membrane_t, ties, row):
    """The membrane your module returns, against refsnn's membrane state (V[t] after the reset; for
    snnTorch's neurons U[t], its ``mem``); if it is instead the charged potential H[t] before the
    reset (and the state does not match), the row compares H and says so. The row's name says
    which: "V after reset", "U (snnTorch mem, before reset)", "H before reset"..."""
    rows = [row(name, seq, membrane_t, ties, note) for name, seq, note in _membranes(mine)]
    return next((r for r in rows if r.passed), rows[0])


# snnTorch keeps a neuron's configuration in its state dict (buffers, unless learned): under these names
# it is compared with the refsnn neuron's configuration, never copied (the refsnn side states the claim)
CONFIGURATION = ("beta", "alpha", "threshold", "reset_mechanism_val", "graded_spikes_factor")


def _configuration_of(layers, name):
    """The refsnn neuron (of ``layers``, {qualified name: module}) whose configuration the state-dict
    entry ``name`` is, or None (a weight, or a learned parameter): snnTorch's CONFIGURATION names, and
    every buffer of a refsnn neuron (a NIR neuron's tau, r, v_leak, v_threshold, v_reset...)."""
    path, _, leaf = name.rpartition(".")
    neuron = layers.get(path)
    if isinstance(neuron, BaseNeuron) and leaf not in neuron.params and (leaf in CONFIGURATION or leaf in neuron.buffers):
        return neuron
    return None


def _configured(neuron, leaf):
    """The refsnn ``neuron``'s value of the configuration entry ``leaf`` (snnTorch's names), or None
    if it has no such option."""
    if leaf == "graded_spikes_factor":
        return np.float64(1.0)   # refsnn's spikes are 0/1 (snnTorch's graded spikes are not offered)
    if leaf == "reset_mechanism_val":
        mechanism = getattr(neuron, "reset_mechanism", None)
        return None if mechanism is None else np.float64(RESET_MECHANISMS[mechanism])
    if leaf in neuron.buffers:
        return neuron.buffers[leaf]
    if leaf == "threshold":
        return np.float64(neuron.v_threshold) if np.ndim(neuron.v_threshold) == 0 else neuron.v_threshold
    if leaf == "beta" and isinstance(neuron, RLeaky):
        return np.float64(neuron.beta)   # fixed: a float (clamped to [0, 1], as the forward uses it)
    return None


def _configuration(mine, torch_state, prefix, component, framework, dtype):
    """``(rows, names)`` for your module's state dict: ``names`` are its entries that are a refsnn
    neuron's configuration (``_configuration_of``; your names, ``prefix`` before refsnn's), which are
    compared here and copied neither way; ``rows`` holds one failing row, naming the entry and both
    values, for each that differs (β and α compared clamped to [0, 1], as both forwards use them)."""
    layers = dict(mine.modules())
    rows, names = [], set()
    for name, value in torch_state.items():
        neuron = _configuration_of(layers, name[len(prefix):]) if name.startswith(prefix) else None
        if neuron is None:
            continue
        names.add(name)
        leaf, cls = name.rpartition(".")[2], type(neuron).__name__
        theirs, expected = _as_numpy(name, value).astype(np.float64), _configured(neuron, leaf)
        if expected is None:
            note = f"configuration: refsnn's {cls} has no {leaf} option"
        elif leaf == "reset_mechanism_val":
            yours = {v: k for k, v in RESET_MECHANISMS.items()}.get(float(theirs), f"code {float(theirs):g}")
            note = (f"configuration: your reset is {yours!r}, refsnn's {cls} has reset_mechanism="
                    f"{neuron.reset_mechanism!r}") if yours != neuron.reset_mechanism else ""
        else:
            expected = np.asarray(expected, dtype)
            if leaf in ("beta", "alpha"):
                expected, theirs = np.clip(expected, 0, 1), np.clip(theirs, 0, 1)
            try:
                differ = not compare(component, framework, name, *np.broadcast_arrays(expected, theirs)).passed
            except ValueError:   # shapes that do not broadcast
                differ = True
            note = (f"configuration: yours is {_shown(theirs)}, refsnn's {cls} has {leaf} = {_shown(expected)}"
                    + (" (refsnn's spikes are 0/1)" if leaf == "graded_spikes_factor" else "")) if differ else ""
        if note:
            rows.append(Row(component, framework, str(np.dtype(dtype)), name, np.nan, np.nan, 0, False, note))
    return rows, names


def _shown(value):
    value = np.asarray(value)
    return f"{float(value.reshape(-1)[0]):.9g}" if value.size == 1 else f"an array {value.shape}"


def _wrapper_prefix(neuron, torch_module):
    """``"lif."`` when your module holds all its state in one submodule (``self.lif = snn.Leaky(...)``)
    and is checked against one refsnn neuron layer, whose names lack it; else ``""``."""
    names = [name.split(".")[:-1] for name in torch_module.state_dict()]
    common = os.path.commonprefix(names) if names else []
    own = [name for name, *_ in neuron.named_parameters()] + [name for name, _ in neuron.named_buffers()]
    prefix = ".".join(common) + "." if common else ""
    return prefix if prefix and not any(name.startswith(prefix) for name in own) else ""


class _GradRecorder:
    """The gradient each named layer receives on its output, on both sides: the argument of each
    refsnn layer's ``backward`` (in the order the backward visits them) and, for the torch layer
    of the same name, ``output.grad`` (kept with ``retain_grad``)."""

    def __init__(self, mine, theirs):
        self.mine, self.theirs, self.order, self.handles = {}, {}, [], []
        torch_layers = dict(theirs.named_modules())
        for name, m in mine.modules():
            if not name or m.children or name not in torch_layers:
                continue
            m.backward = self._wrap(name, m.backward)
            self.handles.append(torch_layers[name].register_forward_hook(self._hook(name)))

    def _wrap(self, name, backward):
        def record(grad_out, *args, **kwargs):
            self.mine[name] = np.array(grad_out)
            self.order.append(name)
            return backward(grad_out, *args, **kwargs)
        return record

    def _hook(self, name):
        def keep(module, inputs, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            if getattr(output, "requires_grad", False):
                output.retain_grad()
                self.theirs[name] = output
        return keep

    def torch_grad(self, name, shape):
        output = self.theirs.get(name)
        if output is None or output.grad is None or output.grad.numel() != int(np.prod(shape)):
            return None
        return output.grad.detach().cpu().numpy().reshape(shape)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _parting(mine, theirs, tol):
    """``(t, ratio note)`` of the latest time step (axis 0) where ``mine`` and ``theirs`` differ by
    more than ``tol`` relative to max|theirs|, or None where they agree. The ratio mine/theirs is
    taken over that step's elements where |theirs| is above the tolerance."""
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    differ = np.abs(mine - theirs) > tol * max(scale, np.finfo(mine.dtype).tiny)
    if not differ.any():
        return None
    t = int(np.nonzero(differ.reshape(len(differ), -1).any(axis=1))[0][-1])
    a, b = mine[t].ravel(), theirs[t].ravel()
    usable = np.abs(b) > tol * scale
    if not usable.any():
        return t, "the torch side is 0 there"
    ratio = a[usable] / b[usable]
    low, high = float(ratio.min()), float(ratio.max())
    if high - low <= 1e3 * tol * max(abs(low), abs(high)):  # constant to rounding: a scaled gradient
        if abs(low - 1) <= 1e3 * tol:  # ... unless the scale is 1: a precision difference
            return t, "ratio refsnn/torch 1 to rounding there (a precision difference, not a scale)"
        return t, f"ratio refsnn/torch constant {low:.6g} there (a surrogate's scale?)"
    return t, f"ratio refsnn/torch not constant ({low:.3g} .. {high:.3g})"


def _locate_gradient_failures(forward, gradients, recorder, grad_x, grad_x_t, tol):
    """The ``gradients`` rows, adding to each failing one where the two backwards first part: the layer whose
    backward first gives a different gradient (going backwards, in the order refsnn's backward
    visits the layers), the time step (the latest one that differs, since BPTT runs from t = T−1
    down to 0) and whether refsnn/torch is one constant ratio there (which points at a
    surrogate's scale). Nothing to say if the forward already differs: then so does everything."""
    failing = [r for r in gradients if not r.passed]
    if not failing or any(not r.passed for r in forward if r.tensor in ("spikes", "output")):
        return gradients
    where, previous = None, None
    for name in recorder.order:
        theirs = recorder.torch_grad(name, recorder.mine[name].shape)
        if theirs is not None:
            parted = _parting(recorder.mine[name], theirs, tol)
            if parted is not None:
                where = (f" in the backward of layer {previous}" if previous else " in grad_output", *parted)
                break
        previous = name
    if where is None and grad_x is not None:
        parted = _parting(np.asarray(grad_x), grad_x_t, tol)
        if parted is not None:
            where = (f" in the backward of layer {previous}" if previous else "", *parted)
    if where is None:
        return gradients
    note = f"gradients first part{where[0]} at t = {where[1]} (going backwards); {where[2]}"
    failing = {id(r) for r in failing}
    return [Row(r.component, r.framework, r.dtype, r.tensor, r.max_abs, r.max_rel, r.ties, r.passed,
                "; ".join(n for n in (r.note, note) if n)) if id(r) in failing else r for r in gradients]


# ------------------------------------------------------------------------------------------
# refsnn verify --user MODULE:FACTORY: your module, the refsnn side by name, run or NIR file
# ------------------------------------------------------------------------------------------
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@contextlib.contextmanager
def _first_on_path(folder):
    """``folder`` first on ``sys.path`` inside the ``with`` block, removed after it."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def load_factory(spec):
    """The callable ``FACTORY`` of ``"MODULE:FACTORY"``.

    MODULE is a dotted module name, imported with the current directory first on ``sys.path``
    (``examples.my_lif``), or a path to a ``.py`` file (``examples/my_lif.py``); FACTORY is a
    name in it (dotted for a nested attribute). Raises ValueError for a malformed spec, a
    missing file or module, an error raised while importing it (named, on one line) or a
    FACTORY the module lacks, TypeError if FACTORY is not callable."""
    module_name, colon, factory = str(spec).rpartition(":")
    if not colon or not module_name or not _DOTTED.match(factory):
        raise ValueError(f"--user wants MODULE:FACTORY (a module or .py file, a colon, the name of a callable "
                         f"returning your torch.nn.Module), got {spec!r}")
    is_file = module_name.endswith(".py") or os.sep in module_name or "/" in module_name
    if not is_file and not _DOTTED.match(module_name):
        raise ValueError(f"{module_name!r} is neither a dotted module name nor a path to a .py file")
    try:
        if is_file:
            if not os.path.isfile(module_name):
                raise ValueError(f"{module_name}: no such file")
            name = "refsnn_user_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(module_name))[0])
            file_spec = importlib.util.spec_from_file_location(name, module_name)
            if file_spec is None:   # importlib takes .py (and .pyc, extension modules) files only
                raise ValueError(f"{module_name}: not a Python file (MODULE:FACTORY wants a .py file)")
            module = importlib.util.module_from_spec(file_spec)
            # the file's own folder first on sys.path while it runs, as `python file.py` has it: its
            # imports of modules beside it work
            with _first_on_path(os.path.dirname(os.path.abspath(module_name))):
                file_spec.loader.exec_module(module)
        else:
            with _first_on_path(os.getcwd()):
                module = importlib.import_module(module_name)
    except ValueError as e:
        if str(e).startswith(module_name):
            raise
        raise ValueError(f"importing {module_name} raised ValueError: {e}") from None
    except (Exception, SystemExit) as e:  # the user's code: anything it raises becomes one line naming it
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise ValueError(f"cannot import {module_name}{where}: {type(e).__name__}: {e}") from None
    target = module
    for part in factory.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name} has no {factory!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module_name}:{factory} is {type(target).__name__} {target!r:.40}, not a callable "
                        "returning a torch.nn.Module")
    return target


def build_user_module(factory, label="the factory"):
    """``factory()``, which must return a ``torch.nn.Module``: TypeError otherwise, ValueError
    (one line naming it) if calling it raises."""
    import torch
    try:
        module = factory()
    except Exception as e:  # the user's code
        raise ValueError(f"{label}() raised {type(e).__name__}: {e}") from None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{label}() returned {type(module).__name__} {module!r:.40}, not a torch.nn.Module")
    return module


def reference_side(network=None, run=None, nir_file=None, neuron="clif", neuron_options=None, sample_shape=None,
                   num_classes=None, seed=0, dt=None, mode="eval"):
    """``(refsnn module, weights or None, sample shape or None, T or None)``: the refsnn side of
    ``verify_user``, from exactly one of

    network     a ``refsnn.models`` network name ("mlp", "cnn", ...; built for ``sample_shape``
                ``[N, ...]`` without N, i.e. ``[...]`` per sample, and ``num_classes``, with
                ``neuron`` and ``neuron_options`` as ``refsnn train`` names them, initialized from
                ``seed``), or a neuron name ("lif", "plif", ...: one neuron layer with
                ``neuron_options``); weights None: your module's are copied into it.
    run         a training run directory or its checkpoint.json; the weights are the run's,
                loaded into both sides, the network in ``mode`` ("eval" or "train"), and the
                sample shape and T are the run's.
    nir_file    a NIR file (``refsnn.from_nir(nir_file, dt)``; dt None: the one a refsnn export
                records, else 1e-4 s); its weights go into both sides.

    Raises ValueError for none or several of them, an unknown name, bad neuron options, a run
    or file that cannot be read."""
    given = [what for what, value in (("--network", network), ("--run", run), ("--nir", nir_file)) if value]
    if len(given) != 1:
        raise ValueError("give exactly one of --network NAME, --run DIR, --nir FILE for the refsnn side"
                         + (f" (got {', '.join(given)})" if given else ""))
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if run:
        from refsnn.layers import Conv2d
        from refsnn.train import load_network
        from refsnn.data import get_dataset
        cfg, model, _ = load_network(run)
        for _, m in model.modules():  # the run skips dL/dx in its first conv; a check wants it
            if isinstance(m, Conv2d):
                m.needs_input_grad = True
        model.train(mode == "train")
        info = get_dataset(cfg.dataset, cfg.data_dir)[4]
        return model, model.state_dict(), tuple(info["input_shape"]), cfg.T
    if nir_file:
        import refsnn
        model = refsnn.from_nir(nir_file, dt=dt, dtype=np.float64)   # the file's constants unrounded (tau, r ...)
        model.train(mode == "train")
        return model, model.state_dict(), None, None
    from refsnn.models import NETWORKS, build_network
    from refsnn.neurons import NEURONS
    from refsnn.train.config import check_neuron_options
    options = dict(neuron_options or {})
    if network in NEURONS:
        check_neuron_options(network, options)
        return NEURONS[network](**options), None, None, None
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}: a refsnn.models network ({', '.join(NETWORKS)}) or a "
                         f"neuron ({', '.join(NEURONS)})")
    check_neuron_options(neuron, options)
    if sample_shape is None or num_classes is None:
        raise ValueError(f"the network {network} is built for your input: give its shape [N, ...] of one time "
                         "step (--input-shape)")
    model = build_network(network, sample_shape, num_classes, neuron=neuron, neuron_options=options, seed=seed)
    model.train(mode == "train")
    return model, None, None, None


def verify_user(torch_module, network=None, run=None, nir_file=None, neuron="clif", neuron_options=None,
                input_shape=None, T=None, seed=0, dtype=np.float64, dt=None, mode="eval", input_mean=0.0,
                input_std=1.0):
    """Check your torch module against the refsnn model it claims to compute; returns the rows
    of ``check_against`` (print them with ``print_table``).

    torch_module   your ``torch.nn.Module`` (time-major ``[T, N, ...]`` in and out, starting from a
                   zero state at each call), a callable returning one, or ``"MODULE:FACTORY"``
                   (``load_factory``).
    network, run, nir_file, neuron, neuron_options, dt, mode
                   the refsnn side (``reference_side``): weights are copied by state-dict name,
                   from your module into a network built by name, from the run or the NIR file
                   into both.
    input_shape    ``[N, ...]`` of one time step (default for a run: 4 samples of its shape);
    T              time steps (default: the run's, else 4). The input ``[T, *input_shape]`` is a
                   normal draw from ``seed`` with ``input_mean`` and ``input_std``, in ``dtype``.

    Raises ValueError (bad spec, import error, weights that do not fit — naming the tensor —,
    shapes that differ), TypeError (a factory not returning an ``nn.Module``, a bad dtype)."""
    if isinstance(torch_module, str):
        torch_module = build_user_module(load_factory(torch_module), torch_module)
    elif not _is_torch_module(torch_module):
        torch_module = build_user_module(torch_module, getattr(torch_module, "__name__", "the factory"))
    if T is not None and (not isinstance(T, (int, np.integer)) or T < 1):
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if input_shape is not None:
        input_shape = tuple(int(n) for n in input_shape)
        if not input_shape or min(input_shape) < 1:
            raise ValueError(f"input_shape must be [N, ...] with every size >= 1, got {input_shape}")
    num_classes = None
    if network and input_shape is not None:
        num_classes = _output_size(torch_module, (T or 4, *input_shape), dtype)
    model, weights, sample_shape, run_T = reference_side(
        network, run, nir_file, neuron, neuron_options, input_shape[1:] if input_shape else None, num_classes,
        seed, dt, mode)
    if input_shape is None:
        if sample_shape is None:
            raise ValueError("give the input shape [N, ...] of one time step (--input-shape)")
        input_shape = (4, *sample_shape)
    torch_module.train(mode == "train")
    x = np.random.default_rng([seed, 1]).normal(input_mean, input_std, (T or run_T or 4, *input_shape))
    return check_against(model, torch_module, weights=weights, dtype=dtype, inputs=x, seed=seed)


def _is_torch_module(obj):
    import torch
    return isinstance(obj, torch.nn.Module)


def _output_size(torch_module, shape, dtype):
    """The last dimension of your module's output on a zero input (a network's class count)."""
    import torch
    with torch.no_grad():
        module = copy.deepcopy(torch_module).to(torch_dtype(dtype))
        out = _run_torch("forward", lambda: module(torch.zeros(shape, dtype=torch_dtype(dtype))))
    out = out[0] if isinstance(out, (tuple, list)) else out
    return int(out.shape[-1])


def main(argv=None):
    """``refsnn verify --user MODULE:FACTORY ...``: print the table; exit status 0 when every row
    passes, 1 on a failing row, 2 on a usage error (one ``error:`` line)."""
    from refsnn.cli import _json_object, _Parser  # refsnn's one-line errors, its --neuron-options parser
    p = _Parser(prog="refsnn verify",
                                description="Check your own PyTorch SNN against refsnn: same input, same weights, "
                                            "every tensor compared (docs/verification.md).")
    p.add_argument("--user", required=True, metavar="MODULE:FACTORY",
                   help="your module: a dotted module name importable from the current directory, or a .py "
                        "file, and the callable in it that returns your torch.nn.Module")
    side = p.add_mutually_exclusive_group(required=True)
    side.add_argument("--network", help="a refsnn.models network (mlp, cnn, ...) or a neuron (lif, plif, ...)")
    side.add_argument("--run", help="a refsnn train run directory or its checkpoint.json (its weights go into both)")
    side.add_argument("--nir", help="a NIR file, read by refsnn.from_nir (its weights go into both)")
    p.add_argument("--neuron", default="clif", help="the network's neuron, as refsnn train names it (default clif)")
    p.add_argument("--neuron-options", type=_json_object, default={}, metavar="JSON",
                   help="options of the neuron, as refsnn train's --neuron-options")
    p.add_argument("--input-shape", type=_shape, metavar="N,...",
                   help="shape of one time step of the input, e.g. 4,16 or 2,1,8,8 (default for --run: 4 samples)")
    p.add_argument("--input-mean", type=float, default=0.0, help="mean of the normal input (default 0)")
    p.add_argument("--input-std", type=float, default=1.0, help="its standard deviation (default 1)")
    p.add_argument("--T", type=int, help="time steps (default: the run's, else 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input, grad_output and a built network")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default float64")
    p.add_argument("--dt", type=float, help="time step (s) of the NIR file's equations (default: the one a refsnn "
                                            "export records, else 1e-4)")
    p.add_argument("--mode", choices=("eval", "train"), default="eval", help="both sides' mode (default eval)")
    args = p.parse_args(argv)
    try:
        rows = verify_user(args.user, args.network, args.run, args.nir, args.neuron, args.neuron_options,
                           args.input_shape, args.T, args.seed, np.dtype(args.dtype), args.dt, args.mode,
                           args.input_mean, args.input_std)
    except (ValueError, TypeError, ImportError, OSError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if print_table(rows) else 1


def _shape(text):
    try:
        shape = tuple(int(n) for n in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, e.g. 4,16; got {text!r}")
    return shape
