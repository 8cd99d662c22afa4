"""Surrogate gradients: each a pair of a smooth primitive φ and its derivative g' = φ'.

The forward of a spiking neuron fires Θ(u) = 1{u >= 0}; the backward uses g'(u) in place
of dΘ/du. In *smooth mode* the forward uses φ(u) instead, so that finite differences of the
forward check the hand-written backward exactly (verification.md, tier 1).

| name           | φ(u)                                        | g'(u)                                 |
| atan           | atan(π/2·α·u)/π + 1/2                       | (α/2) / (1 + (π/2·α·u)²)              |
| sigmoid        | σ(α·u)                                      | α·σ(αu)·(1 − σ(αu))                   |
| rect           | clip(α·u + 1/2, 0, 1)                       | α·1{|u| < 1/(2α)}                     |
| fast_sigmoid   | u / (1 + α·|u|) + 1/2       (α = slope)     | 1 / (α·|u| + 1)²                      |
| s2nn           | σ(αu) for u < 0; β·ln(u + 1) + 1/2 for u ≥ 0 | α·σ(αu)(1 − σ(αu)) ; β / (u + 1)      |
| boxcar         | clip(u, −1, 1) + 1/2                        | 1{|u| < 1}, with u = H/V_th − 1       |

boxcar: the spec's primitive clip(u,−1,1)/2 + 1/2 has derivative ½·1{|u|<1}, half the
surrogate the ultra-low-latency authors use; refsnn keeps their g' and takes the primitive
that integrates it. Its argument is u = (H − V_th)/V_th, so kernels scale by 1/V_th
(``argument_scale``); every other surrogate takes u = H − V_th.

All functions are Numba-jitted and take the surrogate as an integer code so that one kernel
serves every surrogate. σ is evaluated without overflow for any |α·u| (snnTorch #427).
"""
import math

import numba
import numpy as np

from .module import check_real

SURROGATES = {"atan": 0, "sigmoid": 1, "rect": 2, "fast_sigmoid": 3, "s2nn": 4, "boxcar": 5}
DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0, "rect": 1.0, "fast_sigmoid": 25.0, "s2nn": 4.0, "boxcar": 1.0}
ATAN, SIGMOID, RECT, FAST_SIGMOID, S2NN, BOXCAR = range(6)


class Surrogate:
    """A surrogate by name with its parameters, validated once on the Python side."""

    def __init__(self, name="sigmoid", alpha=None, beta=1.0):
        if not isinstance(name, str) or name not in SURROGATES:
            raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
        alpha = DEFAULT_ALPHA[name] if alpha is None else check_real(alpha, "surrogate alpha", low=0, low_open=True)
        beta = check_real(beta, "surrogate beta", low=0, low_open=True)
        self.name, self.code, self.alpha, self.beta = name, SURROGATES[name], alpha, beta

    def argument_scale(self, v_threshold):
        """Factor c in u = c·(H − V_th): 1/V_th for boxcar, 1 otherwise."""
        return 1.0 / v_threshold if self.code == BOXCAR else 1.0

    def primitive(self, u):
        return _vectorised(primitive, u, self)

    def derivative(self, u):
        return _vectorised(derivative, u, self)

    def __repr__(self):
        extra = f", beta={self.beta}" if self.code == S2NN else ""
        return f"Surrogate({self.name!r}, alpha={self.alpha}{extra})"


def _vectorised(fn, u, s):
    u = np.asarray(u, dtype=np.float64)
    return np.vectorize(lambda v: fn(s.code, v, s.alpha, s.beta))(u) if u.ndim else fn(s.code, float(u), s.alpha, s.beta)


@numba.njit(cache=True, inline="always")
def stable_sigmoid(z):
    """σ(z) without overflow: e = exp(−|z|) ≤ 1, then σ = 1/(1+e) for z ≥ 0 and e/(1+e) below.
    One exp and a select, no branch, so loops over it vectorise."""
    e = math.exp(-abs(z))
    r = 1.0 / (1.0 + e)
    return r if z >= 0 else e * r


@numba.njit(cache=True, inline="always")
def sigmoid_slope(z):
    """σ'(z) = σ(z)(1 − σ(z)) = e/(1 + e)² with e = exp(−|z|): exact in both tails, where
    σ(1 − σ) would cancel (relative error ε·e^z above threshold, 0 beyond z ≈ 37)."""
    e = math.exp(-abs(z))
    d = 1.0 + e
    return e / (d * d)


@numba.njit(cache=True, inline="always")
def primitive(code, u, alpha, beta):
    """φ(u), the smooth stand-in for Θ(u) used in smooth mode."""
    if code == ATAN:
        return math.atan(math.pi / 2 * alpha * u) / math.pi + 0.5
    if code == SIGMOID:
        return stable_sigmoid(alpha * u)
    if code == RECT:
        return min(max(alpha * u + 0.5, 0.0), 1.0)
    if code == FAST_SIGMOID:
        return u / (1.0 + alpha * abs(u)) + 0.5
    if code == S2NN:
        if u < 0:
            return stable_sigmoid(alpha * u)
        return beta * math.log(u + 1.0) + 0.5
    return min(max(u, -1.0), 1.0) + 0.5  # BOXCAR


@numba.njit(cache=True, inline="always")
def derivative(code, u, alpha, beta):
    """g'(u) = φ'(u), the surrogate gradient."""
    if code == ATAN:
        z = math.pi / 2 * alpha * u
        return (alpha / 2) / (1.0 + z * z)
    if code == SIGMOID:
        return alpha * sigmoid_slope(alpha * u)
    if code == RECT:
        return alpha if abs(u) < 0.5 / alpha else 0.0
    if code == FAST_SIGMOID:
        d = alpha * abs(u) + 1.0
        return 1.0 / (d * d)
    if code == S2NN:
        if u < 0:
            return alpha * sigmoid_slope(alpha * u)
        return beta / (u + 1.0)
    return 1.0 if abs(u) < 1.0 else 0.0  # BOXCAR


@numba.njit(cache=True, inline="always")
def fire(h, v_threshold, scale, code, alpha, beta, smooth, strict):
    """The spike for charged potential h: Θ(u) (or 1{u > 0} if strict), φ(u) in smooth mode."""
    u = (h - v_threshold) * scale
    if smooth:
        return primitive(code, u, alpha, beta)
    if strict:
        return 1.0 if u > 0 else 0.0
    return 1.0 if u >= 0 else 0.0


@numba.njit(cache=True, inline="always")
def fire_grad(h, v_threshold, scale, code, alpha, beta):
    """dS/dh = g'(u)·scale, u = (h − V_th)·scale."""
    return derivative(code, (h - v_threshold) * scale, alpha, beta) * scale
