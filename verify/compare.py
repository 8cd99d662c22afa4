"""Tensor-by-tensor comparison with a reference framework, aware of threshold ties.

A spike is Θ(H − V_th). Where H lies within a few ulps of V_th, two correct implementations
that round H differently may fire differently. Such elements are *ties*: they are found,
counted and reported. A flipped spike changes that neuron's later membrane and, through BPTT,
its earlier gradients, so the tied neuron's whole sequence is excluded from the element-wise
check — that neuron and nothing else.
"""
from dataclasses import dataclass

import numpy as np

# docs/verification.md: float64 agreement to 1e-10 relative; float32 to 1e-5 on gradients.
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


@dataclass
class Row:
    component: str
    framework: str
    dtype: str
    tensor: str
    max_abs: float
    max_rel: float
    ties: int
    passed: bool
    note: str = ""


def tie_mask(h, v_threshold, ulps=4):
    """``(mask, n_tied_elements)``: ``mask`` [T, N, ...] covers every step of each neuron whose
    charged potential ``h`` came within ``ulps`` ulps of the threshold at some step."""
    h = np.asarray(h)
    spacing = np.spacing(np.maximum(np.abs(h), abs(v_threshold)).astype(h.dtype))
    near = np.abs(h - v_threshold) <= ulps * spacing
    return np.broadcast_to(near.any(axis=0), h.shape), int(near.sum())


def compare(component, framework, tensor, mine, theirs, ties=None, tolerance=None, note=""):
    """One row: max absolute and relative error of ``mine`` vs ``theirs`` outside ``ties``.

    Relative error is max|mine − theirs| / max|theirs| over the compared elements (a per-tensor
    scale, so tiny entries of a large gradient do not dominate)."""
    mine = np.asarray(mine)
    theirs = np.asarray(theirs, dtype=mine.dtype)
    if mine.shape != theirs.shape:
        return Row(component, framework, str(mine.dtype), tensor, np.inf, np.inf, 0, False,
                   f"shape {mine.shape} vs {theirs.shape}")
    keep = np.ones(mine.shape, bool) if ties is None else ~np.broadcast_to(ties, mine.shape)
    n_ties = int(mine.size - keep.sum())
    diff = np.abs(mine - theirs)[keep]
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(theirs[keep]).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    tol = TOLERANCE[mine.dtype] if tolerance is None else tolerance
    finite = bool(np.all(np.isfinite(mine[keep]))) and bool(np.all(np.isfinite(theirs[keep])))
    return Row(component, framework, str(mine.dtype), tensor, max_abs, max_rel, n_ties,
               finite and max_rel <= tol, note)


def format_table(rows):
    w = max([28] + [len(r.component) + 2 for r in rows])  # a long label keeps a gap before the framework
    head = f"{'component':<{w}}{'framework':<14}{'dtype':<9}{'tensor':<16}{'max abs':>11}{'max rel':>11}{'ties':>7}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.component:<{w}}{r.framework:<14}{r.dtype:<9}{r.tensor:<16}{r.max_abs:>11.2e}"
                     f"{r.max_rel:>11.2e}{r.ties:>7}  {'pass' if r.passed else 'FAIL'}"
                     + (f"  ({r.note})" if r.note else ""))
    failed = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
