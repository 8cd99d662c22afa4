"""Calibration: each clipped ReLU's (a, b) by grid search (docs/methods.md §4, step 2).

On calibration images collect each layer's pre-activations x and choose the layer's (a, b),
minimizing

    E(a, b) = Σ_x ( clip(x, 0, μ) − r_T(x; a·μ, b·μ) )²

where r_T(x; θ, A) is the average output over T steps of an IF neuron with soft reset,
threshold θ and spike amplitude A, driven by the constant input x.

Closed form of the T-step response. IF, soft reset, V[−1] = 0, constant input x, threshold θ:
with 0 ≤ x < θ at most one spike per step and V[t] = (t+1)·x − n·θ ∈ [0, θ), so after T
steps n = ⌊T·x/θ⌋ spikes; with x ≥ θ one spike every step; with x < 0 none. Hence

    r_T(x; θ, A) = A · clip(⌊T·x/θ⌋, 0, T) / T.

Grid search without a pass over the data per grid point: with z = x/μ, y = clip(z, 0, 1) and
k(z) = clip(⌊T·z/a⌋, 0, T), E(a, b)/μ² = Σy² − 2(b/T)·Σ_j j·Y_j + (b/T)²·Σ_j j²·N_j, where N_j
and Y_j are the count and the sum of y over {z : k(z) = j} = {j·a/T ≤ z < (j+1)·a/T} (j < T)
or {z ≥ a} (j = T). On sorted z these are differences of cumulative sums at T boundaries, so
each a costs T binary searches and every b is then free.
"""
import math

import numpy as np

from ..encoding import direct
from ..layers import ClippedReLU
from ..module import check_int, check_real
from .rewrite import check_convertible, clipped_relus, forward_layers


def if_response(x, T, threshold, amplitude):
    """Average output over T steps of an IF neuron (soft reset, V[−1] = 0, fires on H ≥ θ) with
    constant input x: ``amplitude · clip(⌊T·x/threshold⌋, 0, T) / T`` (see the module docstring)."""
    T = check_int(T, "T", 1)
    threshold = check_real(threshold, "threshold", 0, low_open=True)
    amplitude = check_real(amplitude, "amplitude")
    x = np.asarray(x, dtype=np.float64)
    return amplitude * np.clip(np.floor(T * x / threshold), 0, T) / T


def _check_grid(grid, name):
    grid = np.asarray(grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"{name} must be a non-empty array of finite values > 0")
    return grid


DEFAULT_GRID = np.round(np.arange(1, 201) * 0.01, 2)  # 0.01, 0.02, ..., 2.00 for both a and b


def grid_errors(z, y, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID):
    """E[i, j] = Σ (y − r_T(z; a_grid[i], b_grid[j]))² for inputs z and targets y (1-D arrays),
    from per-spike-count sums on sorted z (module docstring)."""
    T = check_int(T, "T", 1)
    a_grid, b_grid = _check_grid(a_grid, "a_grid"), _check_grid(b_grid, "b_grid")
    z = np.asarray(z, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"z and y must be non-empty and of one size, got {z.size} and {y.size}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(y))):
        raise ValueError("pre-activations contain NaN or Inf")
    order = np.argsort(z, kind="stable")
    z_sorted = z[order]
    cum_y = np.concatenate([[0.0], np.cumsum(y[order])])
    # first index with z ≥ j·a/T, j = 1..T (z ≥ a means T spikes): k(z) ≥ j exactly there
    bounds = np.arange(1, T + 1)[None, :] * a_grid[:, None] / T                    # [A, T]
    first = np.searchsorted(z_sorted, bounds, side="left")                          # [A, T]
    ends = np.concatenate([first[:, 1:], np.full((len(a_grid), 1), z.size)], axis=1)
    counts = ends - first                                                           # N_j, j = 1..T
    sums = cum_y[ends] - cum_y[first]                                               # Y_j
    j = np.arange(1, T + 1)
    cross = (sums * j).sum(axis=1) / T                                              # Σ_j (j/T)·Y_j
    square = (counts * j * j).sum(axis=1) / T ** 2                                  # Σ_j (j/T)²·N_j
    return float(np.sum(y * y)) - 2 * b_grid[None, :] * cross[:, None] + b_grid[None, :] ** 2 * square[:, None]


def search_scales(preactivations, mu, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID):
    """The (a, b) on the grid minimizing Σ (clip(x, 0, μ) − r_T(x; a·μ, b·μ))² over the layer's
    pre-activations x. Returns ``(a, b, error)`` with the error per pre-activation, in units of μ²
    (the first minimum in grid order on ties)."""
    mu = check_real(mu, "the clipping threshold μ", 0, low_open=True)
    z = np.asarray(preactivations, dtype=np.float64).ravel() / mu
    errors = grid_errors(z, np.clip(z, 0.0, 1.0), T, a_grid, b_grid)
    i, j = np.unravel_index(int(np.argmin(errors)), errors.shape)
    a_grid, b_grid = _check_grid(a_grid, "a_grid"), _check_grid(b_grid, "b_grid")
    return float(a_grid[i]), float(b_grid[j]), float(max(errors[i, j], 0.0) / z.size)


def collect_preactivations(dnn, images, batch_size=256, max_values=2_000_000, rng=None):
    """Inputs of every ClippedReLU of ``dnn`` (eval mode, T = 1) on ``images`` [N, ...]: one 1-D
    float64 array per layer. A layer with more than ``max_values`` values keeps a random subset,
    drawn batch by batch in proportion to the batch size (so memory stays ~max_values)."""
    layers = forward_layers(dnn)
    check_convertible(layers)
    rng = np.random.default_rng(0) if rng is None else rng
    dnn.eval()
    dtype = next(p for _, p, _ in dnn.named_parameters()).dtype
    per_layer = {i: [] for i, layer in enumerate(layers) if isinstance(layer, ClippedReLU)}
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=dtype)
        keep = math.ceil(max_values * len(batch) / len(images))
        x = direct(batch, 1)
        for i, layer in enumerate(layers):
            if i in per_layer:
                values = x.ravel()
                if values.size > keep:
                    values = values[rng.choice(values.size, keep, replace=False)]
                per_layer[i].append(values.astype(np.float64))
            x = layer.forward(x)
    return [np.concatenate(values) for values in per_layer.values()]


def calibrate(dnn, images, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID, batch_size=256, max_values=2_000_000,
              rng=None):
    """One dict per ClippedReLU: μ, the chosen a and b, and the calibration error per value (μ²)."""
    scales = []
    for layer, x in zip(clipped_relus(dnn), collect_preactivations(dnn, images, batch_size, max_values, rng)):
        mu = float(layer.params["threshold"])
        a, b, err = search_scales(x, mu, T, a_grid, b_grid)
        scales.append({"mu": mu, "a": a, "b": b, "error": err,
                       "clipped_fraction": float(np.mean(x > mu)), "negative_fraction": float(np.mean(x <= 0))})
    return scales
