"""Input encodings: a batch ``[N, ...]`` -> the time-major input ``[T, N, ...]`` the networks take.

  * ``direct``  the same analog frame at every step;
  * ``poisson`` rate (Bernoulli) spikes with probability ``clip(x, 0, 1)`` per step.

Encodings are data transforms: no gradient flows through them (the input is not trained).
"""
import numpy as np

from .data import _check_finite_samples
from .module import check_float_array, check_int


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
