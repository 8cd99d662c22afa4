"""IF, LIF and PLIF: one pair of kernels, three charge equations (SpikingJelly 2.0's IFNode, LIFNode
and ParametricLIFNode: same option names, defaults and operations). docs/bptt.md derives them.

Forward, for t = 0 .. T−1, from V[−1] = V_init (the rest value vr, or a given state):

    charge   IF    H[t] = V[t−1] + X[t]
             LIF   H[t] = V[t−1] + (X[t] − (V[t−1] − vr))/tau      (decay_input)
                   H[t] = V[t−1] − (V[t−1] − vr)/tau + X[t]        (not decay_input)
             PLIF  the same with 1/tau replaced by k = σ(w), w learnable
    fire     S[t] = Θ(H[t] − V_th)     (Θ fires on >=; strict: >; smooth mode: the surrogate's φ)
    reset    hard  V[t] = Ŝ·vr + (1 − Ŝ)·H[t]     (v_reset = vr a float)
             soft  V[t] = H[t] − Ŝ·V_th           (v_reset None; vr = 0 in the charge)

with Ŝ = S.detach() when detach_reset (the gradient does not flow through the reset's S).

Backward (BPTT), reverse time, carrying gV = dL/dV[t] (gV = dL/dV_final after the last step):

    g   = gV + dL/dV_seq[t]                           (the upstream gradient on the membrane, if any)
    gS  = dL/dS[t] + (g·dV/dS unless detach_reset)    dV/dS = vr − H (hard), −V_th (soft)
    gH  = g·dV/dH + gS·g'(u)·du/dH                    dV/dH = 1 − S (hard), 1 (soft); g' the surrogate
    dL/dX[t]   = gH·dH/dX                             dH/dX = 1 (IF, not decay_input), 1/tau or k
    dL/dV[t−1] = gH·dH/dV                             dH/dV = 1 (IF), 1 − 1/tau, 1 − k
    PLIF: dL/dk += gH·dH/dk,  dH/dk = X[t] − (V[t−1] − vr) (decay_input) or −(V[t−1] − vr);
          dL/dw = dL/dk·k(1 − k)

The forward saves only H; the backward recomputes S[t] = Θ(H[t] − V_th) and (PLIF) V[t−1] =
reset(H[t−1]) from it with the forward's own operations, which is exact.

The file: the plain NumPy reference pair (one time step of every neuron at a time), the fast Numba
pair with the same names (blocks of neurons in parallel, the time loop inside, compile.py), the
classes, and the EXAMPLES that drive the tests and the verifier.
"""
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_real
from ..surrogate import fire, fire_grad, fire_grad_float64, stable_sigmoid, typed
from .base import BaseNeuron, check_time_constant, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, sum_in_order, wide_grad

IF_CHARGE, LIF_CHARGE, PLIF_CHARGE = 0, 1, 2


class LIFOptions(NamedTuple):
    charge: int          # IF_CHARGE, LIF_CHARGE or PLIF_CHARGE
    decay_input: bool
    hard_reset: bool     # v_reset a float (else soft reset)
    detach_reset: bool
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on H > V_th
    store_v: bool        # write V[t] into v_seq
    has_grad_v: bool     # an upstream gradient on v_seq is given


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def lif_forward_reference(x, v_init, tau, k, v_threshold, v_reset, scale, alpha, beta, o):
    """x: [T, n], v_init: [n] -> spikes, h_seq, v_seq [T, n], v_final [n]."""
    v = v_init.copy()                                  # V[t−1]: [n]
    spikes, h_seq, v_seq = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        if o.charge == IF_CHARGE:
            h = v + x[t]
        elif o.charge == LIF_CHARGE:
            h = v + (x[t] - (v - v_reset)) / tau if o.decay_input else v - (v - v_reset) / tau + x[t]
        else:
            h = v + (x[t] - (v - v_reset)) * k if o.decay_input else v - (v - v_reset) * k + x[t]
        s = fire_reference(h, v_threshold, scale, alpha, beta, o)
        v = s * v_reset + (1.0 - s) * h if o.hard_reset else h - s * v_threshold
        spikes[t], h_seq[t], v_seq[t] = s, h, v
    return spikes, h_seq, v_seq, v


def lif_backward_reference(grad_out, grad_v, grad_v_final, h_seq, x, v_init, tau, k, v_threshold, v_reset,
                           scale, alpha, beta, o):
    """-> grad_x [T, n], grad_v_init [n], grad_k (PLIF's dL/dk, a float64 sum; 0 for IF/LIF)."""
    dh_dx, dh_dv = {IF_CHARGE: (1.0, 1.0), LIF_CHARGE: (1.0 / tau if o.decay_input else 1.0, 1.0 - 1.0 / tau),
                    PLIF_CHARGE: (k if o.decay_input else 1.0, 1.0 - k)}[o.charge]
    gv = grad_v_final.copy()                           # dL/dV[t]: [n]
    grad_x, grad_k = np.empty_like(h_seq), np.zeros(h_seq.shape[1])
    for t in range(h_seq.shape[0] - 1, -1, -1):
        g = gv + grad_v[t] if o.has_grad_v else gv
        h = h_seq[t]
        s = fire_reference(h, v_threshold, scale, alpha, beta, o)
        dv_dh, dv_ds = (1.0 - s, v_reset - h) if o.hard_reset else (1.0, -v_threshold)
        gs = grad_out[t] if o.detach_reset else grad_out[t] + g * dv_ds
        gh = g * dv_dh + gs * fire_grad_reference(h, v_threshold, scale, alpha, beta, o)
        grad_x[t] = gh * dh_dx
        if o.charge == PLIF_CHARGE:                    # V[t−1] = reset(H[t−1]), V_init at t = 0
            hp = h_seq[t - 1]
            sp = fire_reference(hp, v_threshold, scale, alpha, beta, o)
            v_prev = (sp * v_reset + (1.0 - sp) * hp if o.hard_reset else hp - sp * v_threshold) if t > 0 else v_init
            grad_k += gh * (x[t] - (v_prev - v_reset) if o.decay_input else -(v_prev - v_reset))
        gv = gh * dh_dv
    return grad_x, gv, grad_k.sum()


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's state in locals across the time loop
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _charge(charge, v, x, tau, k, v_reset, decay_input):
    """H[t] from V[t−1] and X[t] (IF, LIF: divide by tau, PLIF: multiply by k)."""
    if charge == IF_CHARGE:
        return v + x
    if charge == LIF_CHARGE:
        if decay_input:
            return v + (x - (v - v_reset)) / tau
        return v - (v - v_reset) / tau + x
    if decay_input:
        return v + (x - (v - v_reset)) * k
    return v - (v - v_reset) * k + x


@numba.njit(cache=True, inline="always")
def _reset(h, s, v_threshold, v_reset, hard_reset):
    """V[t] from H[t] and S[t]: hard  Ŝ·vr + (1 − Ŝ)·H ;  soft  H − Ŝ·V_th."""
    if hard_reset:
        return s * v_reset + (typed(1.0, h) - s) * h
    return h - s * v_threshold


@specializable
def lif_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def lif_forward(x, v_init, tau, k, v_threshold, v_reset, scale, alpha, beta,
                    spikes, h_seq, v_seq, v_final, options):
        """Writes spikes, h_seq, v_seq (store_v) [T, n] and v_final [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        charge, decay_input, hard_reset, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        T, n_all = x.shape
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            v = v_init[lo:lo + n].copy()  # the block's membranes, kept local across the time loop
            for t in range(T):
                xt, ht, st, vt = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n], v_seq[t, lo:lo + n]
                for j in range(n):
                    ht[j] = _charge(charge, v[j], xt[j], tau, k, v_reset, decay_input)
                    h = ht[j]  # read back: fire on H as stored, which is what the backward sees
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    v[j] = _reset(h, s, v_threshold, v_reset, hard_reset)
                    st[j] = s
                    if store_v:
                        vt[j] = v[j]
            v_final[lo:lo + n] = v
    return lif_forward


@specializable
def lif_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def lif_backward(grad_out, grad_v, grad_v_final, h_seq, x, v_init, tau, k, v_threshold, v_reset,
                     scale, alpha, beta, grad_x, grad_v_init, grad_k, options):
        """Writes grad_x [T, n], grad_v_init [n] and grad_k[block] (PLIF's dL/dk of each block)."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        charge, decay_input, hard_reset, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        T, n_all = h_seq.shape
        one = h_seq.dtype.type(1)  # constants in the data's dtype: float32 stays float32
        if charge == IF_CHARGE:
            dh_dx, dh_dv = one, one
        elif charge == LIF_CHARGE:
            dh_dx = one / tau if decay_input else one
            dh_dv = one - one / tau
        else:
            dh_dx = k if decay_input else one
            dh_dv = one - k
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            gv = grad_v_final[lo:lo + n].copy()  # dL/dV[t] for the block
            vi = v_init[lo:lo + n]
            # PLIF's dL/dk, one float64 partial sum per neuron (a single scalar accumulator would be
            # a serial reduction, which LLVM does not vectorize without reassociating)
            g_k = np.zeros(n if charge == PLIF_CHARGE else 0, np.float64)
            # this step's terms gH·dH/dk in the data's dtype, added to g_k in a loop of their own
            # (a float64 add in the main loop halves its vector width: PLIF's backward ran 2x LIF's)
            dl_dk = np.empty(n if charge == PLIF_CHARGE else 0, h_seq.dtype)
            v_prev = np.empty(n if charge == PLIF_CHARGE else 0, h_seq.dtype)
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else got
                xt = x[t, lo:lo + n] if charge == PLIF_CHARGE else ht
                if charge == PLIF_CHARGE:
                    # V[t−1] = reset(H[t−1]) as the forward computed it, V_init at t = 0 (a loop of its
                    # own: a per-element choice between the two keeps the main loop from vectorizing)
                    if t > 0:
                        hp = h_seq[t - 1, lo:lo + n]
                        for j in range(n):
                            s_prev = fire(hp[j], v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                            v_prev[j] = _reset(hp[j], s_prev, v_threshold, v_reset, hard_reset)
                    else:
                        v_prev[:] = vi
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    h = ht[j]
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    if hard_reset:
                        dv_dh, dv_ds = one - s, v_reset - h
                    else:
                        dv_dh, dv_ds = one, -v_threshold
                    gs = got[j]
                    if not detach_reset:
                        gs += g * dv_ds
                    if wide:   # dS/dH (compile.py); ``wide`` is a constant: one branch is compiled
                        ds_dh = fire_grad_float64(h, v_threshold, scale, surrogate, alpha, beta)
                    else:
                        ds_dh = fire_grad(h, v_threshold, scale, surrogate, alpha, beta)
                    gh = g * dv_dh + gs * ds_dh
                    gxt[j] = gh * dh_dx
                    if charge == PLIF_CHARGE:  # (compared inline: a compile-time constant when specialized)
                        dh_dk = xt[j] - (v_prev[j] - v_reset) if decay_input else -(v_prev[j] - v_reset)
                        dl_dk[j] = gh * dh_dk
                    gv[j] = gh * dh_dv
                if charge == PLIF_CHARGE:
                    for j in range(n):
                        g_k[j] += dl_dk[j]
            grad_v_init[lo:lo + n] = gv
            grad_k[b] = sum_in_order(g_k)
    return lif_backward


# ------------------------------------------------------------------------------------------
# The layers
# ------------------------------------------------------------------------------------------
class LIFFamily(BaseNeuron):
    """IF, LIF and PLIF share one pair of kernels; they differ in the charge equation (``charge``)."""

    charge = LIF_CHARGE

    def __init__(self, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid", alpha=None,
                 beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.v_reset = None if v_reset is None else check_real(v_reset, "v_reset (None for soft reset)")
        self.decay_input = check_flag(decay_input, "decay_input")
        self.detach_reset = check_flag(detach_reset, "detach_reset")

    @property
    def saves_input(self):
        return self.charge == PLIF_CHARGE

    def rest_value(self, name):
        return 0.0 if self.v_reset is None else self.v_reset

    def _options(self, has_grad_v=None):
        """The forward kernel's options (``has_grad_v`` None) or the backward's. Each holds only what its
        kernel reads, the rest fixed, so that one specialized build serves the configurations that
        differ only in what that kernel does not read."""
        forward = has_grad_v is None
        return LIFOptions(self.charge, self.decay_input, self.v_reset is not None, self.detach_reset and not forward,
                          self.surrogate.code, self.smooth, self.strict, self.store_v_seq and forward, bool(has_grad_v))

    def _tau_k(self):
        """(tau, k) as the charge reads them (1.0 where unused)."""
        return 1.0, 1.0

    def _args(self, dt):
        """tau, k, v_threshold, v_reset, scale, alpha, beta in dtype ``dt``."""
        th, scale, alpha, beta = self._surrogate_args(dt)
        tau, k = self._tau_k()
        vr = 0.0 if self.v_reset is None else self.v_reset
        return self._constant(tau, dt), self._constant(k, dt), th, self._constant(vr, dt), scale, alpha, beta

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        lif_forward(o)(x, init["v"], *self._args(x.dtype), spikes, h_seq, seqs["v"], finals["v"], o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options(has_grad_v=grad_v is not None)
        grad_v = grad_v if grad_v is not None else np.zeros((0, 0), self._dtype)
        x = x if x is not None else np.empty((0, 0), self._dtype)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_v_init = self._empty("grad_v", (n,), dt)
        grad_k = np.zeros((n + BLOCK - 1) // BLOCK, np.float64)
        lif_backward(o, wide_grad(self.surrogate))(
            *(a.astype(dt, copy=False) for a in (grad_out, grad_v, grad_finals["v"], h_seq, x, init["v"])),
            *self._args(dt), grad_x, grad_v_init, grad_k, o)
        return grad_x, {"v": grad_v_init}, self._param_grads(grad_k.sum())

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o, args = self._options(has_grad_v=grad_v is not None), self._args(x.dtype)
        spikes, h_seq, v_seq, v_final = lif_forward_reference(x, init["v"], *args, o)
        grad_x, grad_v_init, grad_k = lif_backward_reference(grad_out, grad_v, grad_finals["v"], h_seq, x, init["v"],
                                                             *args, o)
        return spikes, h_seq, {"v": v_seq}, {"v": v_final}, grad_x, {"v": grad_v_init}, self._param_grads(grad_k)

    def _param_grads(self, grad_k):
        return {}

    def extra_repr(self):
        return (super().extra_repr() + f", v_reset={self.v_reset}, decay_input={self.decay_input}"
                + (", detach_reset=True" if self.detach_reset else ""))


class LIF(LIFFamily):
    """SpikingJelly ``neuron.LIFNode`` (2.0.0): H = V + (X − (V − vr))/tau (module docstring)."""

    charge = LIF_CHARGE

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid",
                 alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.tau = check_time_constant(tau, "tau")

    def _tau_k(self):
        return self.tau, 1.0

    def extra_repr(self):
        return f"tau={self.tau}, " + super().extra_repr()


class IF(LIFFamily):
    """SpikingJelly ``neuron.IFNode``: H = V + X, then fire and reset as LIF."""

    charge = IF_CHARGE

    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid", alpha=None, beta=1.0,
                 detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(False, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)


class PLIF(LIFFamily):
    """SpikingJelly ``neuron.ParametricLIFNode``: LIF with 1/tau replaced by k = σ(w), one learnable
    scalar ``w`` (state-dict name ``w``) initialized to −ln(init_tau − 1)."""

    charge = PLIF_CHARGE

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid",
                 alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        init_tau = check_time_constant(init_tau, "init_tau")
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.add_param("w", np.array(-math.log(init_tau - 1.0), dtype=np.float32))

    @property
    def k(self):
        """k = σ(w), the leak that replaces 1/tau."""
        return float(stable_sigmoid(float(self.params["w"])))

    def _tau_k(self):
        return 1.0, self.k

    def _param_grads(self, grad_k):
        k = self.k
        return {"w": grad_k * k * (1.0 - k)}  # dk/dw = k(1 − k)


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (python -m verify compares each with
# SpikingJelly and snnTorch; the strict/detached/no-input-decay ones are snnTorch's exact equivalents).
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "lif": [
        dict(),
        dict(tau=2.5, v_reset=None, detach_reset=True, decay_input=False, surrogate="atan"),
        dict(tau=1.5, v_reset=-0.3, v_threshold=0.75, surrogate="rect", alpha=0.5),
        dict(tau=3.0, v_reset=None, surrogate="s2nn", alpha=3.0, beta=0.5),
        dict(surrogate="fast_sigmoid", alpha=1.0),
        dict(tau=2.5, v_reset=0.0, detach_reset=True, decay_input=False, strict=True, surrogate="sigmoid"),
        dict(surrogate="boxcar"),
    ],
    "plif": [
        dict(),
        dict(init_tau=3.0, v_reset=None, detach_reset=True, decay_input=False, surrogate="atan"),
        dict(init_tau=1.5, v_reset=-0.3, surrogate="rect"),
        dict(init_tau=3.0, decay_input=False, detach_reset=True, strict=True, surrogate="fast_sigmoid", alpha=2.0),
    ],
    "if": [
        dict(),
        dict(v_reset=None, detach_reset=True, surrogate="atan", alpha=3.0),
        dict(v_reset=None, detach_reset=True, strict=True, v_threshold=0.75, surrogate="atan"),
        dict(v_reset=0.0, detach_reset=True, strict=True, surrogate="fast_sigmoid"),
    ],
}
