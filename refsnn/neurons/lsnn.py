"""LSNN, the adaptive-threshold LIF neuron of norse 1.1 (``norse.torch.LSNN``, its feed-forward step
``norse.torch.functional.lsnn.lsnn_feed_forward_step``, read from its source), after Bellec et al. 2018,
"Long short-term memory and learning-to-learn in networks of spiking neurons" (NeurIPS). Same parameter
names (``LSNNParameters``), defaults and operations, forward Euler at ``dt`` (norse: 1e-3 s).
docs/neurons.md "LSNN" derives the backward.

Named ``LSNN`` after its exact counterpart: Bellec et al.'s own discrete "ALIF" neuron has other
equations (a threshold increment a scaled by 1 − ρ, no synaptic current), so that name would promise
another model.

Forward, for t = 0 .. T−1, from v = v_leak, i = 0, b = v_th (or a given state {"v", "i", "b"}), with
a_m = dt·tau_mem_inv, c_s = −dt·tau_syn_inv, a_b = dt·tau_adapt_inv (each rounded once, as norse forms them):

    v̂[t] = v[t−1] + a_m·((v_leak − v[t−1]) + i[t−1])      the membrane, decayed
    î[t] = i[t−1] + c_s·i[t−1]                           the synaptic current, decayed
    b̂[t] = b[t−1] + a_b·(v_th − b[t−1])                  the threshold relaxes to v_th
    z[t] = Θ(v̂[t] − b̂[t])                                strict (>); smooth mode: the surrogate's φ
    v[t] = (1 − z[t])·v̂[t] + z[t]·v_reset                reset (not detached, as in the feed-forward step)
    b[t] = b̂[t] + z[t]·beta                              the threshold jumps by beta at a spike
    i[t] = î[t] + X[t]                                   the input enters the current after the spike

so X[t] first acts on the spike of step t+1. The surrogate: norse's ``method="super"`` is
dz/du = 1/(|u| + 1)² (norse 1.1's SuperSpike ignores its ``alpha``), refsnn's fast_sigmoid at α = 1,
the default here.

Backward (BPTT), reverse time, carrying gv, gi, gb = dL/d(v, i, b)[t]:

    gv  += dL/dv_seq[t]
    gz   = dL/dz[t] + gv·(v_reset − v̂) + gb·beta
    gu   = gz·g'(v̂ − b̂)
    gv̂  = gv·(1 − z) + gu ;  gb̂ = gb − gu
    dL/dX[t] = gi
    gv ← gv̂·(1 − a_m) ;  gi ← gv̂·a_m + gi·(1 + c_s) ;  gb ← gb̂·(1 − a_b)

The forward saves H = v̂; the backward recomputes b̂[t] and z[t] forward from it with the forward's own
operations (exact), then runs the recurrence. No learnable parameter (norse's are plain tensors).

The file: the plain NumPy reference pair, the fast Numba pair, the class and the EXAMPLES.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import OptionError, check_real
from ..surrogate import BOXCAR, fire, fire_grad, fire_grad_float64
from .base import BaseNeuron, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, wide_grad


class LSNNOptions(NamedTuple):
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on v̂ > b̂
    store_v: bool        # write v, i, b into their sequences
    has_grad_v: bool     # an upstream gradient on v_seq is given


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def lsnn_forward_reference(x, v, i, b, a_m, c_s, a_b, v_leak, v_th, v_reset, beta, alpha, sbeta, o):
    """x: [T, n], v, i, b: [n] -> spikes, h_seq (v̂), v_seq, i_seq, b_seq [T, n], v, i, b [n]."""
    spikes, h_seq, v_seq, i_seq, b_seq = (np.empty_like(x) for _ in range(5))
    for t in range(x.shape[0]):
        vd = v + a_m * ((v_leak - v) + i)
        i_d = i + c_s * i
        bd = b + a_b * (v_th - b)
        z = fire_reference(vd, bd, 1.0, alpha, sbeta, o)
        v = (1.0 - z) * vd + z * v_reset
        b = bd + z * beta
        i = i_d + x[t]
        spikes[t], h_seq[t], v_seq[t], i_seq[t], b_seq[t] = z, vd, v, i, b
    return spikes, h_seq, v_seq, i_seq, b_seq, v, i, b


def lsnn_backward_reference(grad_out, grad_v, gv, gi, gb, h_seq, b_init, a_m, c_s, a_b, v_th, v_reset, beta,
                            alpha, sbeta, o):
    """-> grad_x [T, n], dL/d(v, i, b)_init [n]."""
    bd_seq, b = np.empty_like(h_seq), b_init
    for t in range(h_seq.shape[0]):                    # b̂[t] recomputed forward from v̂
        bd_seq[t] = b + a_b * (v_th - b)
        b = bd_seq[t] + fire_reference(h_seq[t], bd_seq[t], 1.0, alpha, sbeta, o) * beta
    grad_x = np.empty_like(h_seq)
    for t in range(h_seq.shape[0] - 1, -1, -1):
        g = gv + grad_v[t] if o.has_grad_v else gv
        vd, bd = h_seq[t], bd_seq[t]
        z = fire_reference(vd, bd, 1.0, alpha, sbeta, o)
        gu = (grad_out[t] + g * (v_reset - vd) + gb * beta) * fire_grad_reference(vd, bd, 1.0, alpha, sbeta, o)
        gvd, gbd = g * (1.0 - z) + gu, gb - gu
        grad_x[t] = gi
        gv, gi, gb = gvd * (1.0 - a_m), gvd * a_m + gi * (1.0 + c_s), gbd * (1.0 - a_b)
    return grad_x, gv, gi, gb


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's state in locals across the time loop
# ------------------------------------------------------------------------------------------
@specializable
def lsnn_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def lsnn_forward(x, v_init, i_init, b_init, a_m, c_s, a_b, v_leak, v_th, v_reset, beta, alpha, sbeta,
                     spikes, h_seq, v_seq, i_seq, b_seq, v_final, i_final, b_final, options):
        """Writes spikes, h_seq (v̂), and v_seq, i_seq, b_seq (store_v) [T, n], the final state [n]."""
        surrogate, smooth, strict, store_v, has_grad_v = options if frozen is None else frozen
        one = x.dtype.type(1)
        T, n_all = x.shape
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, n_all - lo)
            v, i, b = v_init[lo:lo + n].copy(), i_init[lo:lo + n].copy(), b_init[lo:lo + n].copy()
            for t in range(T):
                xt, ht, st = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n]
                for j in range(n):
                    ht[j] = v[j] + a_m * ((v_leak - v[j]) + i[j])
                    vd = ht[j]
                    bd = b[j] + a_b * (v_th - b[j])
                    z = fire(vd, bd, one, surrogate, alpha, sbeta, smooth, strict)
                    v[j] = (one - z) * vd + z * v_reset
                    b[j] = bd + z * beta
                    i[j] = (i[j] + c_s * i[j]) + xt[j]
                    st[j] = z
                if store_v:
                    v_seq[t, lo:lo + n] = v
                    i_seq[t, lo:lo + n] = i
                    b_seq[t, lo:lo + n] = b
            v_final[lo:lo + n], i_final[lo:lo + n], b_final[lo:lo + n] = v, i, b
    return lsnn_forward


@specializable
def lsnn_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def lsnn_backward(grad_out, grad_v, gv_final, gi_final, gb_final, h_seq, b_init, a_m, c_s, a_b, v_th, v_reset,
                      beta, alpha, sbeta, grad_x, gv_init, gi_init, gb_init, options):
        """Writes grad_x [T, n] and dL/d(v, i, b)_init [n]."""
        surrogate, smooth, strict, store_v, has_grad_v = options if frozen is None else frozen
        one = h_seq.dtype.type(1)
        T, n_all = h_seq.shape
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, n_all - lo)
            bd_hist = np.empty(T * n, h_seq.dtype)     # b̂[t] at bd_hist[t·n:][:n], recomputed forward
            b = b_init[lo:lo + n].copy()
            for t in range(T):
                ht, bdt = h_seq[t, lo:lo + n], bd_hist[t * n:t * n + n]
                for j in range(n):
                    bdt[j] = b[j] + a_b * (v_th - b[j])
                    b[j] = bdt[j] + fire(ht[j], bdt[j], one, surrogate, alpha, sbeta, smooth, strict) * beta
            gv, gi, gb = gv_final[lo:lo + n].copy(), gi_final[lo:lo + n].copy(), gb_final[lo:lo + n].copy()
            for t in range(T - 1, -1, -1):
                ht, got, gxt, bdt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n], \
                    bd_hist[t * n:t * n + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else got
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    vd, bd = ht[j], bdt[j]
                    z = fire(vd, bd, one, surrogate, alpha, sbeta, smooth, strict)
                    if wide:   # dz/du (compile.py); ``wide`` is a constant: one branch is compiled
                        dz = fire_grad_float64(vd, bd, one, surrogate, alpha, sbeta)
                    else:
                        dz = fire_grad(vd, bd, one, surrogate, alpha, sbeta)
                    gu = (got[j] + g * (v_reset - vd) + gb[j] * beta) * dz
                    gvd = g * (one - z) + gu
                    gxt[j] = gi[j]
                    gv[j] = gvd * (one - a_m)
                    gi[j] = gvd * a_m + gi[j] * (one + c_s)
                    gb[j] = (gb[j] - gu) * (one - a_b)
            gv_init[lo:lo + n], gi_init[lo:lo + n], gb_init[lo:lo + n] = gv, gi, gb
    return lsnn_backward


# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class LSNN(BaseNeuron):
    """norse ``LSNN`` (module docstring): ``LSNNParameters``' names and defaults (inverse time constants
    in 1/s, ``dt`` in s), state ``{"v", "i", "b"}`` (``[N, ...]`` each). ``v_th`` is also the
    layer's ``v_threshold``. Raises ValueError for a non-positive rate or ``dt``, a negative ``beta``
    (the threshold's jump at a spike), or rates for which a
    decay factor leaves [0, 1) (dt·tau_mem_inv, dt·tau_syn_inv, dt·tau_adapt_inv must be < 1)."""

    state_names = ("v", "i", "b")

    def __init__(self, tau_syn_inv=1.0 / 5e-3, tau_mem_inv=1.0 / 1e-2, tau_adapt_inv=1.0 / 800, v_leak=0.0,
                 v_th=1.0, v_reset=0.0, beta=1.8, dt=1e-3, surrogate="fast_sigmoid", alpha=1.0, strict=True,
                 smooth=False, store_v_seq=False):
        super().__init__(v_th, surrogate, alpha, 1.0, smooth, strict, store_v_seq)
        if self.surrogate.code == BOXCAR:
            raise OptionError("LSNN: the boxcar surrogate scales by 1/v_th, which the adaptive threshold replaces")
        self.dt = check_real(dt, "dt", low=0, low_open=True)
        for name, value in (("tau_syn_inv", tau_syn_inv), ("tau_mem_inv", tau_mem_inv),
                            ("tau_adapt_inv", tau_adapt_inv)):
            rate = check_real(value, name, low=0, low_open=True)
            if self.dt * rate >= 1:
                raise OptionError(f"LSNN: dt·{name} = {self.dt * rate:g} must be < 1 (forward Euler decays)")
            setattr(self, name, rate)
        self.v_leak, self.v_reset = check_real(v_leak, "v_leak"), check_real(v_reset, "v_reset")
        # beta: how far a spike raises the threshold (norse's adaptation constant): a negative one would
        # lower it, the opposite of adaptation
        self.beta = check_real(beta, "beta", low=0)

    def rest_value(self, name):
        return {"v": self.v_leak, "i": 0.0, "b": self.v_threshold}[name]

    def _options(self, has_grad_v=None):
        forward = has_grad_v is None
        return LSNNOptions(self.surrogate.code, self.smooth, self.strict, self.store_v_seq and forward,
                           bool(has_grad_v))

    def _args(self, dt):
        """a_m, c_s, a_b, v_leak, v_th, v_reset, beta, alpha, surrogate beta in dtype ``dt``; the rates
        as norse forms them: dt·rate (−dt·rate) as one product in the data's dtype."""
        w, c = np.dtype(dt).type, self._dtype.type
        th, _, alpha, sbeta = self._surrogate_args(dt)
        rates = (w(c(c(self.dt) * c(self.tau_mem_inv))), w(c(c(-self.dt) * c(self.tau_syn_inv))),
                 w(c(c(self.dt) * c(self.tau_adapt_inv))))
        return (*rates, self._constant(self.v_leak, dt), th, self._constant(self.v_reset, dt),
                self._constant(self.beta, dt), alpha, sbeta)

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        lsnn_forward(o)(x, init["v"], init["i"], init["b"], *self._args(x.dtype), spikes, h_seq, seqs["v"],
                        seqs["i"], seqs["b"], finals["v"], finals["i"], finals["b"], o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options(has_grad_v=grad_v is not None)
        grad_v = grad_v if grad_v is not None else np.zeros((0, 0), self._dtype)
        a_m, c_s, a_b, _, v_th, v_reset, beta, alpha, sbeta = self._args(dt)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_init = {name: self._empty("grad_" + name, (n,), dt) for name in self.state_names}
        lsnn_backward(o, wide_grad(self.surrogate))(
            *(a.astype(dt, copy=False) for a in (grad_out, grad_v, grad_finals["v"], grad_finals["i"],
                                                 grad_finals["b"], h_seq, init["b"])),
            a_m, c_s, a_b, v_th, v_reset, beta, alpha, sbeta, grad_x, grad_init["v"], grad_init["i"],
            grad_init["b"], o)
        return grad_x, grad_init, {}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o = self._options(has_grad_v=grad_v is not None)
        a_m, c_s, a_b, v_leak, v_th, v_reset, beta, alpha, sbeta = self._args(x.dtype)
        spikes, h_seq, v_seq, i_seq, b_seq, v, i, b = lsnn_forward_reference(
            x, init["v"], init["i"], init["b"], a_m, c_s, a_b, v_leak, v_th, v_reset, beta, alpha, sbeta, o)
        grad_x, gv, gi, gb = lsnn_backward_reference(grad_out, grad_v, grad_finals["v"], grad_finals["i"],
                                                     grad_finals["b"], h_seq, init["b"], a_m, c_s, a_b, v_th,
                                                     v_reset, beta, alpha, sbeta, o)
        return (spikes, h_seq, {"v": v_seq, "i": i_seq, "b": b_seq}, {"v": v, "i": i, "b": b}, grad_x,
                {"v": gv, "i": gi, "b": gb}, {})

    def extra_repr(self):
        return (f"tau_syn_inv={self.tau_syn_inv:g}, tau_mem_inv={self.tau_mem_inv:g}, "
                f"tau_adapt_inv={self.tau_adapt_inv:g}, v_leak={self.v_leak}, v_reset={self.v_reset}, "
                f"beta={self.beta}, dt={self.dt:g}, " + super().extra_repr())


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (python -m verify compares each with
# norse's LSNN). norse's defaults need tens of steps to fire; these fire within the verifier's 6.
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "lsnn": [
        dict(tau_syn_inv=400.0, tau_mem_inv=600.0, tau_adapt_inv=100.0, beta=0.5),
        dict(tau_syn_inv=300.0, tau_mem_inv=800.0, tau_adapt_inv=50.0, v_leak=0.1, v_th=0.75, v_reset=-0.2,
             beta=1.8),
        dict(tau_syn_inv=500.0, tau_mem_inv=500.0, tau_adapt_inv=200.0, beta=0.3, surrogate="sigmoid", strict=False),
    ],
}
