"""Input encodings: a batch ``[N, ...]`` -> the time-major input ``[T, N, ...]`` the networks take.

  * ``direct``  the same analog frame at every step;
  * ``poisson`` rate (Bernoulli) spikes with probability ``clip(x, 0, 1)`` per step;
  * ``latency`` one spike per element at its time-to-first-spike (snnTorch ``spikegen.latency``);
  * ``delta``   spikes where a sequence ``[T, N, ...]`` changes by ``threshold`` (snnTorch
    ``spikegen.delta``).

Encodings are data transforms: no gradient flows through them, and none is needed while the input
is data (not trained). ``latency`` and ``delta`` are step functions of ``x`` (a rounded spike time,
a thresholded difference): their derivative is zero almost everywhere, so even a trainable input
would get no gradient through them. Equations and the snnTorch correspondence: docs/losses.md §1.
"""
import numpy as np

from .data import _check_finite_samples
from .module import check_finite, check_flag, check_float_array, check_int, check_real


def direct(x, T):
    """Direct (analog) encoding: the same frame at each of the ``T`` steps, as a contiguous array.
    A NaN or Inf in ``x`` is refused, naming the sample."""
    x = _check_finite_samples(check_float_array(x, "x"), "x")
    T = check_int(T, "T", low=0)
    if T == 0:
        raise ValueError("T must be positive")
    return np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape))


def poisson(x, T, rng=None):
    """Rate (Bernoulli) encoding: ``s[t] = 1`` with probability ``clip(x, 0, 1)``, independently per
    step and element, from ``rng`` (``None`` -> ``default_rng(0)``). Same dtype as ``x``. A NaN or
    Inf in ``x`` is refused, naming the sample.
    """
    x = _check_finite_samples(check_float_array(x, "x"), "x")
    T = check_int(T, "T", low=0)
    if T == 0:
        raise ValueError("T must be positive")
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    rate = np.clip(x, 0, 1)
    return (rng.random((T,) + x.shape, dtype=x.dtype) < rate).astype(x.dtype)


def _positive_steps(T):
    T = check_int(T, "T", low=0)
    if T == 0:
        raise ValueError("T must be positive")
    return T


def latency_times(x, T, threshold=0.01, tau=1.0, first_spike_time=0, normalize=False, linear=False,
                  epsilon=1e-7):
    """The spike time of every element of ``x`` (snnTorch ``spikegen.latency_code``), float, same
    shape and dtype as ``x``; docs/losses.md §1. ``x`` must lie in [0, 1].

        log     t = tau·ln(x' / (x' − threshold)) + first_spike_time,  x' = max(x, threshold + epsilon)
        linear  t = min(tau·(1 − x), tau·(1 − threshold)) + first_spike_time
        normalize: log    t ← (t − t0)·(T − t0 − 1) / max(t − t0) + t0     (t0 = first_spike_time;
                                                                            max over all of x)
                   linear tau = T − 1 − t0 (the darkest element fires at step T − 1)
    """
    x = _check_finite_samples(check_float_array(x, "x"), "x")
    T = _positive_steps(T)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"latency encoding takes x in [0, 1] (snnTorch spikegen.latency), got values in "
                         f"[{x.min()}, {x.max()}]; scale the images to [0, 1] first")
    threshold = check_real(threshold, "threshold", 0, 1, low_open=True, high_open=True)
    tau = check_real(tau, "tau", 0, low_open=True)
    first_spike_time = check_int(first_spike_time, "first_spike_time", low=0)
    if first_spike_time > T - 1:
        raise ValueError(f"first_spike_time ({first_spike_time}) must be at most T - 1 ({T - 1})")
    epsilon = check_real(epsilon, "epsilon", 0, low_open=True)
    normalize, linear = check_flag(normalize, "normalize"), check_flag(linear, "linear")
    # snnTorch's operations in its order, in the dtype of x (Python scalars stay weak: NEP 50).
    if linear:
        if normalize:
            tau = T - 1 - first_spike_time
        return np.minimum(-tau * (x - 1), -tau * (threshold - 1)) + first_spike_time
    charged = np.maximum(x, threshold + epsilon)  # saturates every value below the threshold
    t = tau * np.log(charged / (charged - threshold))
    if first_spike_time > 0:
        t += first_spike_time
    if normalize and t.size:
        t = (t - first_spike_time) * (T - first_spike_time - 1) / np.max(t - first_spike_time) + first_spike_time
    return t


def latency(x, T, threshold=0.01, tau=1.0, first_spike_time=0, clip=False, normalize=False, linear=False,
            epsilon=1e-7):
    """Latency (time-to-first-spike) encoding, snnTorch ``spikegen.latency(data, num_steps=T, ...)``
    with its defaults (threshold 0.01, tau 1, logarithmic code, no normalization, no clipping):
    ``x`` [N, ...] in [0, 1] -> spikes [T, N, ...] (dtype of ``x``), exactly one spike per element,
    at step ``round(t)`` of ``latency_times`` (round half to even, as ``torch.round``): bright
    elements fire early, elements below ``threshold`` at the latest time. ``clip`` removes the
    spikes of elements below ``threshold``. docs/losses.md §1.

    A spike time beyond step T - 1 is refused, as snnTorch does without ``bypass``: the message
    suggests ``normalize=True`` (spikes within the T steps) or a smaller ``tau``. snnTorch's
    ``on_target``/``off_target``/``interpolate`` (target encodings) are not provided.
    Raises ValueError (x outside [0, 1], NaN, a bad option) or TypeError (x not a float array).
    """
    times = latency_times(x, T, threshold, tau, first_spike_time, normalize, linear, epsilon)
    clip = check_flag(clip, "clip")
    steps = np.round(times)  # half to even, as torch.round
    if steps.size and steps.max() > T - 1:
        raise ValueError(f"latency encoding: the latest spike time {times.max():.4g} rounds to step "
                         f"{int(steps.max())}, beyond the last step T - 1 = {T - 1}; pass normalize=True (spike "
                         f"times scaled into the T steps), a smaller tau, or a larger T")
    spikes = np.zeros((T,) + times.shape, x.dtype)
    np.put_along_axis(spikes, steps.astype(np.intp)[None], 1, axis=0)
    if clip:
        spikes *= ~(np.asarray(x) < threshold)  # elements below the threshold do not fire
    return spikes


def delta(x, threshold=0.1, padding=False, off_spike=False):
    """Delta encoding, snnTorch ``spikegen.delta`` (same defaults): a sequence ``x`` [T, N, ...] ->
    spikes [T, N, ...] (dtype of ``x``) where it changed by at least ``threshold`` since the step before:

        d[t] = x[t] − x[t−1],  x[−1] = 0 (or x[0] with ``padding``: no spike at t = 0)
        s[t] = 1{d[t] ≥ threshold} − 1{d[t] ≤ −threshold}   (the second term only with ``off_spike``)

    On a static frame repeated T times (``direct(x, T)``) it spikes only at t = 0, where
    ``x ≥ threshold``; it is meant for sequences (video, event frames). docs/losses.md §1.
    """
    x = check_finite(check_float_array(x, "x"), "x")
    threshold = check_real(threshold, "threshold")
    padding, off_spike = check_flag(padding, "padding"), check_flag(off_spike, "off_spike")
    if x.shape[0] == 0:
        raise ValueError("delta encoding needs a sequence [T, N, ...] with T >= 1 steps, got T = 0")
    before = np.concatenate([x[:1] if padding else np.zeros_like(x[:1]), x[:-1]])  # x[t−1]: [T, N, ...]
    change = x - before
    spikes = (change >= threshold).astype(x.dtype)
    if off_spike:
        spikes -= (change <= -threshold).astype(x.dtype)
    return spikes
