"""CLIF, the complementary LIF neuron (Huang et al., ICML 2024; SpikingJelly 2.0's
ComplementaryLIFNode). docs/bptt.md derives the recurrence.

Forward, for t = 0 .. T−1, from V[−1] = vr and m[−1] = 0 (or a given state); vr = v_reset, or 0 for
the soft reset (v_reset None, the default):

    H[t] = V[t−1] − V[t−1]/tau + X[t]                (default: soft reset, no input decay)
         = V[t−1] − (V[t−1] − vr)/tau + X[t]         (hard reset, no input decay)
         = V[t−1] + (X[t] − (V[t−1] − vr))/tau       (decay_input; vr = 0 for the soft reset)
    S[t] = Θ(H[t] − V_th)                            (strict: >; smooth mode: the surrogate's φ)
    m[t] = m[t−1]·σ(H[t]/tau) + S[t]                 (the complementary state)
    V[t] = H[t] − S[t]·(V_th + σ(m[t]))              (soft reset by a threshold that grows with m)
    V[t] = S[t]·vr + (1 − S[t])·H[t] − S[t]·σ(m[t])  (hard reset: to vr, then the complementary term)

The options are the official code's (HuuYuLong/Complementary-LIF, modules/neuron.py): its charge
(_charging_v, lines 61-74: x/tau first if decay_input, then V·(1 − 1/tau) + vr/tau + x) is the same
real number as SpikingJelly's LIF charge written above (refsnn's order of operations, lif.py); its
reset (lines 51-52 and 76-82) is SpikingJelly's soft or hard reset followed by V − S·σ(m) in both
cases; V starts at v_reset (SpikingJelly's BaseNode). No detach (their _reset ignores detach_reset),
no learnable parameter.

Backward (BPTT), reverse time, carrying gV = dL/dV[t] and gm = dL/dm[t]; q = σ(m[t]), D = σ(H[t]/tau):

    g   = gV + dL/dV_seq[t]
    gmt = gm − g·S·q(1 − q)                          dL/dm[t] in full (V[t] reads σ(m[t]))
    gS  = dL/dS[t] + g·dV/dS + gmt                   dV/dS = −(V_th + q) (soft), vr − H − q (hard)
    gH  = g·dV/dH + gmt·m[t−1]·D(1 − D)/tau + gS·g'(u)     dV/dH = 1 (soft), 1 − S (hard)
    dL/dX[t] = gH·dH/dX ;  dL/dV[t−1] = gH·(1 − 1/tau) ;  dL/dm[t−1] = gmt·D
                                                     dH/dX = 1, or 1/tau with decay_input

The forward saves only H; the backward first recomputes m[t] and D forward from H (the forward's
own operations), then runs the recurrence.
"""
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..surrogate import fire, fire_grad, fire_grad_float64, stable_sigmoid, typed
from ..module import check_flag, check_real
from .base import BaseNeuron, check_time_constant, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, wide_grad


class CLIFOptions(NamedTuple):
    decay_input: bool    # H = V + (X − (V − vr))/tau
    hard_reset: bool     # v_reset a float (else soft reset)
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on H > V_th
    store_v: bool        # write V[t] and m[t] into v_seq and m_seq
    has_grad_v: bool     # an upstream gradient on v_seq is given
    exact_inverse: bool  # 1/tau is exact: x/tau computed as x·(1/tau) (_exact_inverse)


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def sigmoid_reference(z):
    """σ(z) = 1/(1 + e^−z), through np.exp (the kernels' stable_sigmoid uses fast_exp: ≤ 1 ulp apart)."""
    e = np.exp(-np.abs(z))
    r = 1.0 / (1.0 + e)
    return np.where(z >= 0, r, e * r)


def clif_forward_reference(x, v_init, m_init, tau, v_threshold, v_reset, scale, alpha, beta, o):
    """x: [T, n], v_init, m_init: [n] -> spikes, h_seq, v_seq, m_seq [T, n], v_final, m_final [n]."""
    v, m = v_init.copy(), m_init.copy()
    spikes, h_seq, v_seq, m_seq = (np.empty_like(x) for _ in range(4))
    for t in range(x.shape[0]):
        leak = v - v_reset if o.hard_reset else v   # V[t−1] − vr
        h = v + (x[t] - leak) / tau if o.decay_input else v - leak / tau + x[t]
        s = fire_reference(h, v_threshold, scale, alpha, beta, o)
        m = m * sigmoid_reference(h / tau) + s
        q = sigmoid_reference(m)
        v = s * v_reset + (1.0 - s) * h - s * q if o.hard_reset else h - s * (v_threshold + q)
        spikes[t], h_seq[t], v_seq[t], m_seq[t] = s, h, v, m
    return spikes, h_seq, v_seq, m_seq, v, m


def clif_backward_reference(grad_out, grad_v, grad_v_final, grad_m_final, h_seq, m_init, tau, v_threshold,
                            v_reset, scale, alpha, beta, o):
    """-> grad_x [T, n], grad_v_init [n], grad_m_init [n]."""
    s_seq = fire_reference(h_seq, v_threshold, scale, alpha, beta, o)
    d_seq = sigmoid_reference(h_seq / tau)            # D[t] = σ(H[t]/tau)
    m_seq = [m_init]                                   # m[−1], m[0], ... recomputed from H
    for t in range(h_seq.shape[0]):
        m_seq.append(m_seq[-1] * d_seq[t] + s_seq[t])
    gv, gm = grad_v_final.copy(), grad_m_final.copy()
    grad_x = np.empty_like(h_seq)
    for t in range(h_seq.shape[0] - 1, -1, -1):
        g = gv + grad_v[t] if o.has_grad_v else gv
        s, d, q = s_seq[t], d_seq[t], sigmoid_reference(m_seq[t + 1])
        dv_dh, dv_ds = (1.0 - s, v_reset - h_seq[t] - q) if o.hard_reset else (1.0, -(v_threshold + q))
        gmt = gm - g * s * q * (1.0 - q)
        gs = grad_out[t] + g * dv_ds + gmt
        gh = g * dv_dh + gmt * m_seq[t] * d * (1.0 - d) * (1.0 / tau) + gs * fire_grad_reference(
            h_seq[t], v_threshold, scale, alpha, beta, o)
        grad_x[t] = gh * (1.0 / tau) if o.decay_input else gh
        gv, gm = gh * (1.0 - 1.0 / tau), gmt * d
    return grad_x, gv, gm


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's state in locals across the time loop
# ------------------------------------------------------------------------------------------
def _exact_inverse(tau):
    """Is 1/tau exact in tau's dtype (tau a power of two, e.g. the default 2)? Then x·(1/tau) and
    x/tau are the same correctly rounded number for every x, and the multiply is much cheaper."""
    return math.frexp(float(tau))[0] == 0.5


@numba.njit(cache=True, inline="always")
def _over_tau(x, tau, inv_tau, exact_inverse):
    """x/tau, as a product by 1/tau when that is exact (bit-identical: _exact_inverse)."""
    return x * inv_tau if exact_inverse else x / tau


@numba.njit(cache=True, inline="always")
def _charge(v, x, v_reset, tau, inv_tau, exact_inverse, decay_input, hard_reset):
    """H[t] from V[t−1] and X[t] (module docstring); the soft reset's vr = 0 is not subtracted."""
    leak = v - v_reset if hard_reset else v
    if decay_input:
        return v + _over_tau(x - leak, tau, inv_tau, exact_inverse)
    return v - _over_tau(leak, tau, inv_tau, exact_inverse) + x


@numba.njit(cache=True, inline="always")
def _reset(h, s, q, v_threshold, v_reset, hard_reset):
    """V[t] from H[t], S[t] and q = σ(m[t]): hard  S·vr + (1 − S)·H − S·q ;  soft  H − S·(V_th + q)."""
    if hard_reset:
        return s * v_reset + (typed(1.0, h) - s) * h - s * q
    return h - s * (v_threshold + q)


@specializable
def clif_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def clif_forward(x, v_init, m_init, tau, v_threshold, v_reset, scale, alpha, beta,
                     spikes, h_seq, v_seq, m_seq, v_final, m_final, options):
        """Writes spikes, h_seq, v_seq and m_seq (store_v) [T, n], v_final and m_final [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        decay_input, hard_reset, surrogate, smooth, strict, store_v, has_grad_v, exact_inverse = (
            options if frozen is None else frozen)
        inv_tau = typed(1.0, tau) / tau  # used only when exact (see _over_tau)
        T, n_all = x.shape
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            v = v_init[lo:lo + n].copy()
            m = m_init[lo:lo + n].copy()
            for t in range(T):
                xt, ht, st = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n]
                vt, mt = v_seq[t, lo:lo + n], m_seq[t, lo:lo + n]
                for j in range(n):
                    vj = v[j]
                    ht[j] = _charge(vj, xt[j], v_reset, tau, inv_tau, exact_inverse, decay_input, hard_reset)
                    h = ht[j]  # H and m as stored, which the backward recomputes from
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    m[j] = m[j] * stable_sigmoid(_over_tau(h, tau, inv_tau, exact_inverse)) + s
                    v[j] = _reset(h, s, stable_sigmoid(m[j]), v_threshold, v_reset, hard_reset)
                    st[j] = s
                    if store_v:
                        vt[j] = v[j]
                        mt[j] = m[j]
            v_final[lo:lo + n] = v
            m_final[lo:lo + n] = m
    return clif_forward


@specializable
def clif_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def clif_backward(grad_out, grad_v, grad_v_final, grad_m_final, h_seq, m_init, tau, v_threshold, v_reset,
                      scale, alpha, beta, grad_x, grad_v_init, grad_m_init, options):
        """Writes grad_x [T, n], grad_v_init and grad_m_init [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        decay_input, hard_reset, surrogate, smooth, strict, store_v, has_grad_v, exact_inverse = (
            options if frozen is None else frozen)
        T, n_all = h_seq.shape
        one = h_seq.dtype.type(1)  # constants in the data's dtype: float32 stays float32
        dv_dv = one - one / tau    # dH[t]/dV[t−1]
        inv_tau = one / tau        # dD/dH = D(1−D)/tau as a product (a division per element costs more)
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            # Flat per-block scratch (2-D scratch arrays keep LLVM from vectorizing these loops),
            # read through 1-D slices: m_hist[(t + 1)·n:][:n] = m[t] (m[−1] first), d_hist[t·n:][:n] = σ(H[t]/tau)
            m_hist = np.empty((T + 1) * n, h_seq.dtype)
            d_hist = np.empty(T * n, h_seq.dtype)
            m_hist[:n] = m_init[lo:lo + n]
            for t in range(T):
                ht = h_seq[t, lo:lo + n]
                m_prev, m_now, dt = m_hist[t * n:t * n + n], m_hist[t * n + n:t * n + 2 * n], d_hist[t * n:t * n + n]
                for j in range(n):
                    h = ht[j]
                    d = stable_sigmoid(_over_tau(h, tau, inv_tau, exact_inverse))
                    dt[j] = d
                    m_now[j] = m_prev[j] * d + fire(h, v_threshold, scale, surrogate, alpha, beta, smooth,
                                                    strict)
            gv = grad_v_final[lo:lo + n].copy()
            gm = grad_m_final[lo:lo + n].copy()
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else got
                m_prev, m_now, dt = m_hist[t * n:t * n + n], m_hist[t * n + n:t * n + 2 * n], d_hist[t * n:t * n + n]
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    h = ht[j]
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    q = stable_sigmoid(m_now[j])
                    d = dt[j]
                    gmt = gm[j] - g * s * q * (one - q)
                    if hard_reset:  # dV/dS = vr − H − q, dV/dH = 1 − S
                        gs = got[j] + g * (v_reset - h - q) + gmt
                        gv_h = g * (one - s)
                    else:           # dV/dS = −(V_th + q), dV/dH = 1
                        gs = got[j] - g * (v_threshold + q) + gmt
                        gv_h = g
                    if wide:   # dS/dH (compile.py); ``wide`` is a constant: one branch is compiled
                        ds_dh = fire_grad_float64(h, v_threshold, scale, surrogate, alpha, beta)
                    else:
                        ds_dh = fire_grad(h, v_threshold, scale, surrogate, alpha, beta)
                    gh = gv_h + gmt * m_prev[j] * d * (one - d) * inv_tau + gs * ds_dh
                    gxt[j] = gh * inv_tau if decay_input else gh
                    gv[j] = gh * dv_dv
                    gm[j] = gmt * d
            grad_v_init[lo:lo + n] = gv
            grad_m_init[lo:lo + n] = gm
    return clif_backward


# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class CLIF(BaseNeuron):
    """Complementary LIF (module docstring); state (V, m) starts at (vr, 0).

    ``v_reset``: None (the default) for the soft reset, a float for the hard reset to it; ``decay_input``:
    divide the input by tau in the charge (default False). Both are the official code's options, with
    SpikingJelly's names. Raises ValueError/TypeError for a bad value of either.
    """

    state_names = ("v", "m")

    def __init__(self, tau=2.0, v_threshold=1.0, surrogate="rect", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False, v_reset=None, decay_input=False):
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.tau = check_time_constant(tau, "tau")
        self.v_reset = None if v_reset is None else check_real(v_reset, "v_reset (None for soft reset)")
        self.decay_input = check_flag(decay_input, "decay_input")

    def rest_value(self, name):
        return 0.0 if name == "m" or self.v_reset is None else self.v_reset

    def _v_reset(self, dt):
        """vr in dtype ``dt`` (0 for the soft reset, which does not read it)."""
        return self._constant(0.0 if self.v_reset is None else self.v_reset, dt)

    def _options(self, has_grad_v=None):
        """The forward kernel's options (``has_grad_v`` None) or the backward's. Each holds only what its
        kernel reads, the rest fixed, so that one specialized build serves the configurations that
        differ only in what that kernel does not read."""
        forward = has_grad_v is None
        return CLIFOptions(self.decay_input, self.v_reset is not None, self.surrogate.code, self.smooth, self.strict,
                           self.store_v_seq and forward,
                           bool(has_grad_v), _exact_inverse(self._dtype.type(self.tau)))

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        th, scale, alpha, beta = self._surrogate_args()
        clif_forward(o)(x, init["v"], init["m"], self._constant(self.tau, x.dtype), th, self._v_reset(x.dtype),
                        scale, alpha, beta, spikes, h_seq, seqs["v"], seqs["m"], finals["v"], finals["m"], o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options(has_grad_v=grad_v is not None)
        grad_v = grad_v if grad_v is not None else np.zeros((0, 0), self._dtype)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_v_init, grad_m_init = self._empty("grad_v", (n,), dt), self._empty("grad_m", (n,), dt)
        th, scale, alpha, beta = self._surrogate_args(dt)
        clif_backward(o, wide_grad(self.surrogate))(
            *(a.astype(dt, copy=False) for a in (grad_out, grad_v, grad_finals["v"], grad_finals["m"], h_seq,
                                                 init["m"])),
            self._constant(self.tau, dt), th, self._v_reset(dt), scale, alpha, beta, grad_x, grad_v_init,
            grad_m_init, o)
        return grad_x, {"v": grad_v_init, "m": grad_m_init}, {}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o, tau = self._options(has_grad_v=grad_v is not None), self._constant(self.tau, x.dtype)
        th, scale, alpha, beta = self._surrogate_args()
        vr = self._v_reset(x.dtype)
        spikes, h_seq, v_seq, m_seq, v_final, m_final = clif_forward_reference(x, init["v"], init["m"], tau, th, vr,
                                                                               scale, alpha, beta, o)
        grad_x, grad_v_init, grad_m_init = clif_backward_reference(grad_out, grad_v, grad_finals["v"],
                                                                   grad_finals["m"], h_seq, init["m"], tau, th, vr,
                                                                   scale, alpha, beta, o)
        return (spikes, h_seq, {"v": v_seq, "m": m_seq}, {"v": v_final, "m": m_final}, grad_x,
                {"v": grad_v_init, "m": grad_m_init}, {})

    def extra_repr(self):
        extra = "" if self.v_reset is None else f", v_reset={self.v_reset}"
        return f"tau={self.tau}, " + super().extra_repr() + extra + (", decay_input=True" if self.decay_input else "")


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "clif": [
        dict(),
        dict(tau=1.5, surrogate="atan"),
        dict(tau=3.0, v_threshold=0.5, surrogate="sigmoid"),
        # the official code's options (HuuYuLong/Complementary-LIF): its Rectangle surrogate off α = 1,
        # the hard reset (to 0 and to a negative value, their README's table) and decay_input
        dict(surrogate="rect_authors", alpha=0.5),
        dict(surrogate="rect_authors", alpha=2.0, v_reset=0.0),
        dict(tau=1.5, v_reset=-0.08, surrogate="sigmoid"),
        dict(decay_input=True),
        dict(tau=3.0, v_reset=-0.3, decay_input=True, surrogate="rect_authors", alpha=0.5),
    ],
}
