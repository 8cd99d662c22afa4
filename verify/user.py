"""Check your own PyTorch spiking layer or network against refsnn.

``check_against(refsnn_module, torch_module)`` runs both on the same input with the same
weights and returns one ``verify.compare.Row`` per tensor: the output (``spikes`` for a neuron
layer, with ``membrane`` too if your module returns ``(spikes, membrane)``), the input gradient
``grad_x`` and the gradient of every parameter, by state-dict name. ``print_table(rows)``
prints them. Each failing row names a tensor where your code and the reference disagree.

Example: a hand-written LIF whose reset uses the membrane from *before* charging::

    import numpy as np, torch, refsnn
    from verify.user import check_against, print_table

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
import copy

import numpy as np

from refsnn.neurons import BaseNeuron

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
    if torch_module is None:
        theirs = torch_twin(mine, dtype)
        framework = framework or SPIKINGJELLY
    else:
        theirs = copy.deepcopy(torch_module).to(torch_dtype(dtype))
        if state is not None:
            theirs.load_state_dict({k: torch.as_tensor(_as_numpy(k, v)) for k, v in state.items()}, strict=True)
        else:
            load_into(mine, theirs.state_dict())
        mine.train(theirs.training)
        framework = framework or "torch"
    check_deterministic(mine)
    component = component or type(refsnn_module).__name__
    x = _inputs(inputs, input_shape, rng, dtype)
    single_neuron = isinstance(mine, BaseNeuron)
    if single_neuron:
        mine.store_v_seq = True

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
    result = theirs(x_t)
    out_t, membrane_t = (result[0], result[1]) if isinstance(result, (tuple, list)) else (result, None)
    if tuple(out_t.shape) != out.shape:
        raise ValueError(f"the torch module returned shape {tuple(out_t.shape)}, refsnn {out.shape}: "
                         "both must be time-major [T, N, ...]")
    (out_t * torch.from_numpy(grad_output)).sum().backward()

    def row(tensor, a, b, ties=None, note=""):
        return compare(component, framework, tensor, a, b, ties=ties, note=note)

    rows = []
    if single_neuron:
        ties, _ = tie_mask(mine.h_seq, mine.v_threshold, 4 if tie_ulps is None else tie_ulps)
        spikes_t = _numpy(out_t)
        rows.append(row("spikes", out, spikes_t, ties, "smooth" if mine.smooth else _spike_note(out, spikes_t, ties)))
        if membrane_t is not None:
            rows.append(row("membrane", mine.v_seq, _numpy(membrane_t), ties))
        rows.append(row("grad_x", grad_x, _numpy(x_t.grad, x.shape), ties))
    else:
        hidden = _hidden_ties(mine, network_tie_ulps(dtype) if tie_ulps is None else tie_ulps)
        note = f"{hidden} neuron(s) inside at threshold ties" if hidden else ""
        rows.append(row("output", out, _numpy(out_t), note=note))
        rows.append(row("grad_x", grad_x, _numpy(x_t.grad, x.shape), note=note))
    rows += _parameter_rows(mine, theirs, component, framework, dtype)
    return rows


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


def _parameter_rows(mine, theirs, component, framework, dtype):
    params_t = dict(theirs.named_parameters())
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
