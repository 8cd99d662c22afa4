"""Tier 2 for neurons: one refsnn neuron layer against its framework mirror, on the same input.

Both sides see the same ``x`` (same dtype) and the same fixed random projections ``A`` (on the
spikes) and ``B`` (on the membrane). Compared, as ``verify.compare.Row``\\ s:

    spikes            S, identical outside threshold ties (tolerance 0)
    membrane V | H    where both expose it: V after reset (SpikingJelly), H before reset (snnTorch)
    grad_x            d<S, A>/dx
    grad_w            d<S, A>/dw (PLIF)
    grad_x[S+V]       d(<S, A> + <V, B>)/dx, where the framework exposes V
    grad_w[S+V]       the same for w

A parameter gradient is one sum over every neuron and step, often with heavy cancellation; its
rounding error, on either side, is proportional to the sum of the absolute terms, not to the
result. Its relative error is therefore measured against max(|dL/dw|, Σ|terms|), the terms
being gH·dH/dw per neuron and step, recomputed in float64 from the run's H, V and dL/dx (see
``reduction_terms``); a wrong gradient still misses by about a term.

Threshold ties are found on refsnn's charged potential with ``verify.compare.tie_mask`` and the
tied neurons excluded, in float32 and float64 alike (in float64 they are rarer still). A scalar parameter
gradient sums over every neuron, so masking cannot remove a tied neuron from it; instead the
projections are zeroed on tied neurons before either backward: neurons are independent, so a
neuron with no upstream gradient contributes exactly zero to every gradient, on both sides.

The projections hold float32-representable values in either dtype: snnTorch's spikes are float32
even for float64 inputs, so autograd rounds the gradient arriving at them to float32; with such
projections that rounding is exact and the comparison tests the maths, not snnTorch's dtype.

``float32_errors`` measures each side's own float32 error against the framework run in float64
on the same values: for a gradient that is a near-canceling difference, float32 cannot do
better than that, on either side (tests/test_tier2_neurons.py uses it to tell such cases apart).
"""
import dataclasses

import numpy as np

from refsnn.neurons import CLIF, NEURONS, PLIF
from refsnn.neurons.leaky import LeakyFamily
from refsnn.neurons.rleaky import RLeaky
from refsnn.neurons.lif import IF_CHARGE, LIFFamily

from .compare import TOLERANCE, Row, compare, tie_mask
from .frameworks import mirror

SHORT_SURROGATE = {"atan": "atan", "sigmoid": "sig", "rect": "rect", "fast_sigmoid": "fsig",
                   "s2nn": "s2nn", "boxcar": "box", "rect_authors": "rectA"}


def describe(neuron):
    """A short label for a neuron configuration, e.g. ``lif/soft/det/nodi/>/atan2``: the reset
    (``hard`` to 0, ``hard<v_reset>``, ``soft``), ``det`` = detach_reset, ``nodi`` =
    decay_input=False, ``>`` = strict threshold, then the surrogate with α (and β); CLIF: ``hard<v_reset>``,
    ``di`` = decay_input=True, ``rectA`` = rect_authors."""
    name = next(k for k, cls in NEURONS.items() if type(neuron) is cls)
    parts = [name]
    if isinstance(neuron, LIFFamily) and name != "s2nn":
        parts.append("soft" if neuron.v_reset is None else "hard" if neuron.v_reset == 0 else f"hard{neuron.v_reset:g}")
        parts += ["det"] if neuron.detach_reset else []
        if neuron.charge != IF_CHARGE:
            parts += [] if neuron.decay_input else ["nodi"]
    if isinstance(neuron, CLIF):  # the official code's options: hard reset, input decay (``di``)
        parts += [] if neuron.v_reset is None else [f"hard{neuron.v_reset:g}"]
        parts += ["di"] if neuron.decay_input else []
    if isinstance(neuron, LeakyFamily):  # snnTorch's: always strict; ``now`` = reset_delay=False,
        # ``L`` + the learned parameters (alpha, beta, threshold), ``[]`` = one value per neuron
        learned = "".join(k[0] for k in ("alpha", "beta", "threshold") if k in neuron.params)
        arrays = any(np.ndim(v) for v in (*neuron.params.values(), *neuron.buffers.values()))
        parts += [{"subtract": "sub"}.get(neuron.reset_mechanism, neuron.reset_mechanism)]
        parts += ([] if neuron.reset_delay else ["now"]) + ([f"L{learned}"] if learned else []) + (["[]"] if arrays else [])
    if isinstance(neuron, RLeaky):  # snnTorch's, always strict: a2a = all_to_all, 1to1 = one-to-one V
        learned = "".join(k[0] for k in ("beta", "threshold") if k in neuron.params)
        parts += ["a2a" if neuron.all_to_all else "1to1", {"subtract": "sub"}.get(neuron.reset_mechanism,
                                                                                  neuron.reset_mechanism)]
        parts += ([] if neuron.reset_delay else ["now"]) + ([f"L{learned}"] if learned else [])
    parts += [">"] if neuron.strict and not isinstance(neuron, (LeakyFamily, RLeaky)) else []
    s = neuron.surrogate
    parts.append(f"{SHORT_SURROGATE[s.name]}{s.alpha:g}" + (f",{s.beta:g}" if s.name == "s2nn" else ""))
    return "/".join(parts)


def projection(rng, shape, dtype):
    """Standard normal values, rounded to float32 and stored in ``dtype`` (see module doc)."""
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


@dataclasses.dataclass
class Pair:
    """Both sides' results on one input: ``mine`` and ``theirs`` map tensor names ("spikes",
    "membrane", "grad_x", "grad_w", "grad_x[S+V]", ...) to arrays."""
    label: str
    framework: str
    membrane: str
    note: str
    x: np.ndarray
    v_seq: np.ndarray
    excluded: np.ndarray   # [T, N, ...] neurons left out (ties), whole sequences
    losses: list           # (suffix, A, B or None)
    mine: dict
    theirs: dict


def run_pair(neuron, framework, x, seed=0, component=None, exclude=None):
    """Run ``neuron`` (cast to ``x.dtype``) and its ``framework`` mirror on ``x`` with the same
    projections, zeroed on tied neurons (and on ``exclude``, a [T, N, ...] mask of whole neurons).

    Raises ``verify.frameworks.NoEquivalent`` when the framework has no exact equivalent and
    ImportError when it is not installed."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    neuron.to(dtype)
    m = mirror(neuron, framework, dtype)
    rng = np.random.default_rng(seed)
    a, b = projection(rng, x.shape, dtype), projection(rng, x.shape, dtype)
    store_v_seq, neuron.store_v_seq = neuron.store_v_seq, True
    try:
        spikes = neuron.forward(x)
        h, v = neuron.h_seq.copy(), getattr(neuron, neuron.membrane + "_seq").copy()
        excluded = tie_mask(h, neuron.v_threshold)[0]
        if exclude is not None:
            excluded = excluded | np.broadcast_to(np.asarray(exclude).any(axis=0), x.shape)
        a, b = np.where(excluded, 0, a).astype(dtype), np.where(excluded, 0, b).astype(dtype)
        mine = {"spikes": spikes, "membrane": h if m.membrane == "h" else v}
        losses = [("", a, None)] + ([("[S+V]", a, b)] if m.membrane == "v" else [])
        for suffix, ga, gb in losses:
            neuron.forward(x)
            neuron.zero_grad()
            mine["grad_x" + suffix] = neuron.backward(ga, grad_v=gb)
            for name, _, g in neuron.named_parameters():
                mine[f"grad_{name}{suffix}"] = g.copy()
    finally:
        neuron.store_v_seq = store_v_seq
    return Pair(component or describe(neuron), framework, m.membrane, m.note, x, v, excluded, losses,
                mine, framework_side(m, x, losses))


def framework_side(m, x, losses):
    """The mirror's spikes, membrane and gradients for each loss <S, A> (+ <V, B>)."""
    import torch
    theirs = {}
    for suffix, ga, gb in losses:
        xt = torch.tensor(x, requires_grad=True)
        for p in m.parameters.values():
            p.grad = None
        s_t, mem_t = m.run(xt)
        loss = (s_t * torch.from_numpy(ga)).sum()
        if gb is not None:
            loss = loss + (mem_t * torch.from_numpy(gb)).sum()
        loss.backward()
        if not suffix:
            theirs["spikes"], theirs["membrane"] = s_t.detach().numpy(), mem_t.detach().numpy()
        theirs["grad_x" + suffix] = xt.grad.numpy()
        for name in m.parameters:
            theirs[f"grad_{name}{suffix}"] = m.parameter_grad(name)
    return theirs


def check_neuron(neuron, framework, x, seed=0, component=None):
    """Rows comparing ``neuron`` (cast to ``x.dtype``) with ``framework`` on input ``x``
    (see ``run_pair``)."""
    return pair_rows(neuron, run_pair(neuron, framework, x, seed, component))


def pair_rows(neuron, pair):
    rows = []
    n_excluded = int(pair.excluded.sum())
    for tensor, value in pair.mine.items():
        theirs = pair.theirs[tensor]
        shown = f"membrane {pair.membrane.upper()}" if tensor == "membrane" else tensor
        if np.shape(value) == pair.x.shape:
            row = compare(pair.label, pair.framework, shown, value, theirs, pair.excluded,
                          tolerance=0.0 if tensor == "spikes" else None,
                          note=pair.note if tensor == "membrane" else "")
        else:  # a parameter gradient: the excluded neurons were removed through the projections
            suffix = tensor[tensor.index("["):] if "[" in tensor else ""
            scale = reduction_scale(neuron, pair.x, pair.v_seq, pair.mine["grad_x" + suffix],
                                    tensor[len("grad_"):len(tensor) - len(suffix)], pair.mine["spikes"])
            row = compare_reduction(pair.label, pair.framework, shown, value, theirs, scale, n_excluded,
                                    "rel. to Σ|terms|" if isinstance(neuron, (PLIF, RLeaky)) else
                                    "rel. to max(|grad|, 1)")  # scale 1 (Leaky, Synaptic): stricter
        if not np.all(np.isfinite(theirs)) and np.all(np.isfinite(value)):
            row = dataclasses.replace(row, note=(row.note + "; " if row.note else "")
                                      + f"{pair.framework} returned NaN/Inf, refsnn finite")
        rows.append(row)
    return rows


def float32_errors(neuron, framework, x, seed=0):
    """Each side's own rounding error on float32 ``x``: ``{tensor: (refsnn, framework)}``, the max
    abs difference of each float32 result from the framework run in float64 on the same values
    and projections (the exact answer to the same problem, up to float64 rounding).

    Neurons whose float64 spikes differ from the float32 ones are left out: float32 cannot
    resolve them (their charged potential is within float32 rounding of the threshold)."""
    import torch
    x = np.asarray(x, np.float32)
    neuron.to(np.float32)
    spikes = neuron.forward(x)
    m64 = mirror(neuron.to(np.float64), framework, np.float64)
    spikes64 = m64.run(torch.tensor(x.astype(np.float64)))[0].detach().numpy()
    unresolved = spikes64 != spikes
    pair = run_pair(neuron, framework, x, seed, exclude=unresolved)
    neuron.to(np.float64)
    truth = framework_side(mirror(neuron, framework, np.float64), x.astype(np.float64),
                           [(s, a.astype(np.float64), None if b is None else b.astype(np.float64))
                            for s, a, b in pair.losses])
    neuron.to(np.float32)
    keep = ~pair.excluded
    errors = {}
    for tensor, value in pair.mine.items():
        t = np.asarray(truth[tensor], np.float64)
        mask = keep if np.shape(value) == x.shape else np.ones(np.shape(value), bool)
        errors[tensor] = tuple(float(np.max(np.abs(np.asarray(side, np.float64) - t)[mask], initial=0.0))
                               for side in (value, pair.theirs[tensor]))
    return errors, truth, pair


def reduction_terms(neuron, x, v_seq, grad_x):
    """The terms of PLIF's dL/dw = Σ gH·dH/dk·dk/dw, per step and neuron, in float64.

    gH = dL/dx / (dH/dx), dH/dk = X − (V[t−1] − vr) (decay_input) or −(V[t−1] − vr), and
    dk/dw = k(1 − k) with k = σ(w); V[−1] = vr, the rest state."""
    x, v_seq, grad_x = (np.asarray(a, np.float64) for a in (x, v_seq, grad_x))
    k = 1.0 / (1.0 + np.exp(-float(neuron.params["w"])))
    vr = 0.0 if neuron.v_reset is None else neuron.v_reset
    v_prev = np.concatenate([np.full((1,) + x.shape[1:], vr), v_seq[:-1]])
    if neuron.decay_input:
        terms = grad_x / k * (x - (v_prev - vr))
    else:
        terms = grad_x * -(v_prev - vr)
    return terms * k * (1.0 - k)


def reduction_scale(neuron, x, v_seq, grad_x, name=None, spikes=None):
    """Σ|terms| of a parameter gradient (PLIF's w, RLeaky's parameter ``name``; 1 for neurons without
    parameters)."""
    if isinstance(neuron, RLeaky):
        return rleaky_reduction_scale(name, v_seq, grad_x, spikes)
    return float(np.abs(reduction_terms(neuron, x, v_seq, grad_x)).sum()) if isinstance(neuron, PLIF) else 1.0


def rleaky_reduction_scale(name, mem_seq, grad_x, spikes):
    """Σ|terms| of RLeaky's dL/d``name`` in float64 (refsnn/neurons/rleaky.py), with dL/dx = gB and
    U[−1] = S[−1] = 0: β: gB·U[t−1]; recurrent.weight: gB_i·S_j[t−1] (the largest entry's); recurrent.bias:
    gB; V: gB·S[t−1]; threshold: gB (its terms gS·g', gH·r and g·(S − r) are of gB's size)."""
    f = grad_x.shape[-1]
    gb, mem, s = (np.abs(np.asarray(a, np.float64)).reshape(len(grad_x), -1, f) for a in (grad_x, mem_seq, spikes))
    previous = lambda a: np.concatenate([np.zeros_like(a[:1]), a[:-1]])  # noqa: E731  [t−1], 0 at t = 0
    if name == "beta":
        return float((gb * previous(mem)).sum())
    if name == "recurrent.weight":
        return float(np.einsum("tri,trj->ij", gb, previous(s)).max())
    if name == "recurrent.bias":
        return float(gb.sum(axis=(0, 1)).max())
    if name == "V":
        return float((gb * previous(s)).sum(axis=(0, 1)).max())
    return float(gb.sum())


def compare_reduction(component, framework, tensor, mine, theirs, scale, ties=0, note="rel. to Σ|terms|"):
    """A row for a summed (parameter) gradient: relative error against max(|theirs|, scale)."""
    mine, theirs = np.asarray(mine), np.asarray(theirs, dtype=np.asarray(mine).dtype)
    max_abs = float(np.max(np.abs(mine - theirs)))
    denominator = max(float(np.max(np.abs(theirs))), scale)
    max_rel = max_abs / denominator if denominator > 0 else (0.0 if max_abs == 0 else np.inf)
    finite = bool(np.all(np.isfinite(mine)) and np.all(np.isfinite(theirs)))
    return Row(component, framework, str(mine.dtype), tensor, max_abs, max_rel, ties,
               finite and max_rel <= TOLERANCE[mine.dtype], note)


def worst(rows):
    """Merge rows of the same (component, framework, dtype, tensor) into one: the worst errors,
    the total tie count, passed only if all passed (for several random examples per cell)."""
    merged = {}
    for r in rows:
        key = (r.component, r.framework, r.dtype, r.tensor)
        if key not in merged:
            merged[key] = r
            continue
        o = merged[key]
        notes = [n for n in dict.fromkeys((o.note, r.note)) if n]
        merged[key] = Row(o.component, o.framework, o.dtype, o.tensor,
                          float(np.maximum(o.max_abs, r.max_abs)), float(np.maximum(o.max_rel, r.max_rel)),  # NaN wins
                          o.ties + r.ties, o.passed and r.passed, "; ".join(notes))
    return list(merged.values())
