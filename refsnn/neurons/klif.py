"""KLIF, the K-based leaky integrate-and-fire neuron (Jiang & Zhang, "KLIF: An optimized spiking
neuron unit for tuning surrogate gradient slope and membrane potential", ICASSP 2023; SpikingJelly
2.0's ``neuron.KLIFNode`` and ``functional.klif_step``, read from its source): LIF's charge, then a
learnable scale k (state-dict name ``k``, 1.0 initially) and a ReLU before the spike.
docs/neurons.md "KLIF" derives the backward.

Forward, for t = 0 .. T−1, from V[−1] = vr (the rest value; 0 for soft reset) or a given state:

    H[t] = V[t−1] + (X[t] − (V[t−1] − vr))/tau      (decay_input; else V − (V − vr)/tau + X)
    F[t] = ReLU(k·H[t])
    S[t] = Θ(F[t] − V_th)                           (>=; strict: >; smooth mode: the surrogate's φ)
    V[t] = reset(F[t], S[t], V_th)                  scale_reset=False
           reset(F[t]/k, S[t], V_th/k)               scale_reset=True
    reset(F, S, θ) = S·vr + (1 − S)·F (hard, v_reset a float)  or  F − S·θ (soft, v_reset None)

Backward (BPTT), reverse time, carrying gV = dL/dV[t]; c = 1/k with scale_reset, else 1;
m = 1{k·H > 0} (ReLU's derivative, 0 at 0 as in PyTorch):

    g  = gV + dL/dV_seq[t]
    gS = dL/dS[t] + (g·dV/dS unless detach_reset)   dV/dS = vr − c·F (hard), −c·V_th (soft)
    gF = g·c·dV/dF' + gS·g'(F − V_th)               dV/dF' = 1 − S (hard), 1 (soft)
    gH = gF·k·m
    dL/dk += gF·H·m − g·c²·((1 − S)·F (hard) or F − S·V_th (soft))   (the second term: scale_reset)
    dL/dX[t] = gH·dH/dX ;  dL/dV[t−1] = gH·dH/dV    (dH/dX = 1/tau or 1, dH/dV = 1 − 1/tau)

The forward saves only H; the backward recomputes F, S from it with the forward's own operations.
The file: the plain NumPy reference pair, the fast Numba pair, the class and the EXAMPLES.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_real
from ..surrogate import fire, fire_grad, fire_grad_float64
from .base import BaseNeuron, check_time_constant, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, sum_in_order, wide_grad
from .lif import LIF_CHARGE, _charge, _reset


class KLIFOptions(NamedTuple):
    decay_input: bool
    hard_reset: bool     # v_reset a float (else soft reset)
    scale_reset: bool    # reset F/k against V_th/k
    detach_reset: bool
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on F > V_th
    store_v: bool        # write V[t] into v_seq
    has_grad_v: bool     # an upstream gradient on v_seq is given


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def klif_reset_reference(f, s, k, v_threshold, v_reset, o):
    """V[t] from F[t] and S[t] (the module docstring's reset)."""
    fk, th = (f / k, v_threshold / k) if o.scale_reset else (f, v_threshold)
    return s * v_reset + (1.0 - s) * fk if o.hard_reset else fk - s * th


def klif_forward_reference(x, v_init, tau, k, v_threshold, v_reset, scale, alpha, beta, o):
    """x: [T, n], v_init: [n] -> spikes, h_seq, v_seq [T, n], v_final [n]."""
    v = v_init.copy()
    spikes, h_seq, v_seq = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        h = v + (x[t] - (v - v_reset)) / tau if o.decay_input else v - (v - v_reset) / tau + x[t]
        f = np.maximum(k * h, 0.0)
        s = fire_reference(f, v_threshold, scale, alpha, beta, o)
        v = klif_reset_reference(f, s, k, v_threshold, v_reset, o)
        spikes[t], h_seq[t], v_seq[t] = s, h, v
    return spikes, h_seq, v_seq, v


def klif_backward_reference(grad_out, grad_v, grad_v_final, h_seq, tau, k, v_threshold, v_reset, scale, alpha, beta,
                            o):
    """-> grad_x [T, n], grad_v_init [n], dL/dk (a float64 sum)."""
    dh_dx, dh_dv = (1.0 / tau if o.decay_input else 1.0), 1.0 - 1.0 / tau
    c = 1.0 / k if o.scale_reset else 1.0
    gv, grad_k = grad_v_final.copy(), 0.0
    grad_x = np.empty_like(h_seq)
    for t in range(h_seq.shape[0] - 1, -1, -1):
        g = gv + grad_v[t] if o.has_grad_v else gv
        h = h_seq[t]
        f = np.maximum(k * h, 0.0)
        m = (k * h > 0).astype(h.dtype)
        s = fire_reference(f, v_threshold, scale, alpha, beta, o)
        dv_df, dv_ds = (1.0 - s, v_reset - c * f) if o.hard_reset else (1.0, -c * v_threshold)
        gs = grad_out[t] if o.detach_reset else grad_out[t] + g * dv_ds
        gf = g * c * dv_df + gs * fire_grad_reference(f, v_threshold, scale, alpha, beta, o)
        gh = gf * k * m
        dl_dk = gf * h * m
        if o.scale_reset:
            dl_dk = dl_dk - g * c * c * ((1.0 - s) * f if o.hard_reset else f - s * v_threshold)
        grad_k += dl_dk.sum()
        grad_x[t] = gh * dh_dx
        gv = gh * dh_dv
    return grad_x, gv, grad_k


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's state in locals across the time loop
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _klif_reset(f, s, k, v_threshold, v_reset, hard_reset, scale_reset):
    if scale_reset:
        return _reset(f / k, s, v_threshold / k, v_reset, hard_reset)
    return _reset(f, s, v_threshold, v_reset, hard_reset)


@specializable
def klif_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def klif_forward(x, v_init, tau, k, v_threshold, v_reset, scale, alpha, beta, spikes, h_seq, v_seq, v_final,
                     options):
        """Writes spikes, h_seq, v_seq (store_v) [T, n] and v_final [n]."""
        decay_input, hard_reset, scale_reset, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        zero = x.dtype.type(0)
        T, n_all = x.shape
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            v = v_init[lo:lo + n].copy()
            for t in range(T):
                xt, ht, st, vt = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n], v_seq[t, lo:lo + n]
                for j in range(n):
                    ht[j] = _charge(LIF_CHARGE, v[j], xt[j], tau, tau, v_reset, decay_input)
                    f = max(k * ht[j], zero)
                    s = fire(f, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    v[j] = _klif_reset(f, s, k, v_threshold, v_reset, hard_reset, scale_reset)
                    st[j] = s
                    if store_v:
                        vt[j] = v[j]
            v_final[lo:lo + n] = v
    return klif_forward


@specializable
def klif_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def klif_backward(grad_out, grad_v, grad_v_final, h_seq, tau, k, v_threshold, v_reset, scale, alpha, beta,
                      grad_x, grad_v_init, grad_k, options):
        """Writes grad_x [T, n], grad_v_init [n] and grad_k[block] (dL/dk of each block)."""
        decay_input, hard_reset, scale_reset, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        T, n_all = h_seq.shape
        zero, one = h_seq.dtype.type(0), h_seq.dtype.type(1)
        dh_dx = one / tau if decay_input else one
        dh_dv = one - one / tau
        c = one / k if scale_reset else one
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            gv = grad_v_final[lo:lo + n].copy()
            g_k = np.zeros(n, np.float64)      # dL/dk, one float64 partial sum per neuron
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else got
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    h = ht[j]
                    f = max(k * h, zero)
                    m = one if k * h > zero else zero
                    s = fire(f, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    if hard_reset:
                        dv_df, dv_ds = one - s, v_reset - c * f
                    else:
                        dv_df, dv_ds = one, -c * v_threshold
                    gs = got[j]
                    if not detach_reset:
                        gs += g * dv_ds
                    if wide:   # dS/dF (compile.py); ``wide`` is a constant: one branch is compiled
                        ds_df = fire_grad_float64(f, v_threshold, scale, surrogate, alpha, beta)
                    else:
                        ds_df = fire_grad(f, v_threshold, scale, surrogate, alpha, beta)
                    gf = g * c * dv_df + gs * ds_df
                    gh = gf * k * m
                    dl_dk = gf * h * m
                    if scale_reset:
                        dl_dk -= g * c * c * ((one - s) * f if hard_reset else f - s * v_threshold)
                    g_k[j] += dl_dk
                    gxt[j] = gh * dh_dx
                    gv[j] = gh * dh_dv
            grad_v_init[lo:lo + n] = gv
            grad_k[b] = sum_in_order(g_k)
    return klif_backward


# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class KLIF(BaseNeuron):
    """SpikingJelly ``neuron.KLIFNode`` (module docstring): options as ``LIF`` plus ``scale_reset``;
    one learnable scalar ``k`` (1.0 initially). Raises ValueError/TypeError for a bad option."""

    def __init__(self, scale_reset=False, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate="sigmoid", alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False,
                 store_v_seq=False):
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.tau = check_time_constant(tau, "tau")
        self.scale_reset = check_flag(scale_reset, "scale_reset")
        self.decay_input = check_flag(decay_input, "decay_input")
        self.detach_reset = check_flag(detach_reset, "detach_reset")
        self.v_reset = None if v_reset is None else check_real(v_reset, "v_reset (None for soft reset)")
        self.add_param("k", np.array(1.0, np.float32))

    def rest_value(self, name):
        return 0.0 if self.v_reset is None else self.v_reset

    def _options(self, has_grad_v=None):
        forward = has_grad_v is None
        return KLIFOptions(self.decay_input, self.v_reset is not None, self.scale_reset,
                           self.detach_reset and not forward, self.surrogate.code, self.smooth, self.strict,
                           self.store_v_seq and forward, bool(has_grad_v))

    def _args(self, dt):
        """tau, k, v_threshold, v_reset, scale, alpha, beta in dtype ``dt``."""
        th, scale, alpha, beta = self._surrogate_args(dt)
        vr = 0.0 if self.v_reset is None else self.v_reset
        return (self._constant(self.tau, dt), self._constant(float(self.params["k"]), dt), th,
                self._constant(vr, dt), scale, alpha, beta)

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        klif_forward(o)(x, init["v"], *self._args(x.dtype), spikes, h_seq, seqs["v"], finals["v"], o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options(has_grad_v=grad_v is not None)
        grad_v = grad_v if grad_v is not None else np.zeros((0, 0), self._dtype)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_v_init = self._empty("grad_v", (n,), dt)
        grad_k = np.zeros((n + BLOCK - 1) // BLOCK, np.float64)
        klif_backward(o, wide_grad(self.surrogate))(
            *(a.astype(dt, copy=False) for a in (grad_out, grad_v, grad_finals["v"], h_seq)),
            *self._args(dt), grad_x, grad_v_init, grad_k, o)
        return grad_x, {"v": grad_v_init}, {"k": grad_k.sum()}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o, args = self._options(has_grad_v=grad_v is not None), self._args(x.dtype)
        spikes, h_seq, v_seq, v_final = klif_forward_reference(x, init["v"], *args, o)
        grad_x, grad_v_init, grad_k = klif_backward_reference(grad_out, grad_v, grad_finals["v"], h_seq, *args, o)
        return spikes, h_seq, {"v": v_seq}, {"v": v_final}, grad_x, {"v": grad_v_init}, {"k": grad_k}

    def extra_repr(self):
        return (f"tau={self.tau}, scale_reset={self.scale_reset}, v_reset={self.v_reset}, "
                f"decay_input={self.decay_input}, " + super().extra_repr())


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (python -m verify compares each with
# SpikingJelly's KLIFNode)
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "klif": [
        dict(),
        dict(scale_reset=True, tau=2.5, v_reset=None, surrogate="atan"),
        dict(scale_reset=True, decay_input=False, v_reset=-0.2, detach_reset=True, surrogate="rect"),
        dict(tau=1.5, v_reset=None, detach_reset=True, surrogate="sigmoid", alpha=2.0),
    ],
}
