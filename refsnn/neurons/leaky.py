"""snnTorch's first-order ``Leaky`` neuron (snnTorch 1.0, ``snntorch/_neurons/leaky.py``), and the
kernels it shares with the second-order ``Synaptic`` (synaptic.py): same option names, defaults and
operations, in the same order. docs/neurons.md §"snnTorch Leaky and Synaptic" derives them.

Forward, for t = 0 .. T−1, from U[−1] = 0 (and I[−1] = 0; or a given state), with β, α clamped to
[0, 1] as snnTorch does (``beta.clamp(0, 1)``) and thr the threshold:

    R[t]  = Θ(U[t−1] − thr)                          the reset, detached (snnTorch's mem_reset)
    charge  Leaky     C[t] = X[t]
            Synaptic  I[t] = α·I[t−1] + X[t],  C[t] = I[t]
    subtract   H[t] = (β·U[t−1] + C[t]) − R[t]·thr
    zero       H[t] = β·((1 − R[t])·U[t−1]) + C[t]   (Leaky)
               H[t] = A − A·R[t],  A = β·U[t−1] + C[t]  (Synaptic: the whole membrane is zeroed)
    none       H[t] = β·U[t−1] + C[t]
    fire       S[t] = Θ(H[t] − thr)                  (strict >, as snnTorch; smooth mode: φ)
    membrane   U[t] = H[t]                           reset_delay=True (the default): the reset acts
                                                     at the next step, through R[t+1]
               U[t] = H[t] − (S[t] − R[t])·thr       reset_delay=False, subtract
               U[t] = H[t] − (S[t] − R[t])·H[t]      reset_delay=False, zero

The layer returns S and exposes U, the membrane snnTorch returns: with reset_delay=True it is the
pre-reset potential H (U = H; ``h_seq`` and ``mem_seq`` are equal), with reset_delay=False the
post-reset one. The state is ``mem`` = U (and ``syn`` = I).

Backward (BPTT), reverse time, carrying gU = dL/dU[t] (and gI = dL/dI[t]); R is detached, S is not:

    g   = gU + dL/dmem_seq[t]
    gS  = dL/dS[t] + g·dU/dS          dU/dS = 0 (delay, none), −thr (subtract), −H (zero)
    gH  = g·dU/dH + gS·g'(H − thr)    dU/dH = 1, or 1 − (S − R) (zero, no delay)
    dL/dthr += −gS·g' + g·dU/dthr − gH·R (subtract)          dU/dthr = −(S − R) (subtract, no delay)
    dL/dC[t]   = gH·K,  K = 1 − R (Synaptic, zero), else 1
    dL/dU[t−1] = gH·β·K',  K' = 1 − R (zero), else 1;   dL/dβ += gH·K'·U[t−1]
    Leaky:     dL/dX[t] = dL/dC[t]
    Synaptic:  gI' = gI + dL/dC[t];  dL/dX[t] = gI';  dL/dI[t−1] = gI'·α;  dL/dα += gI'·I[t−1]

and dL/dβ, dL/dα are zero where β (α) lies outside [0, 1] (the clamp). This is exactly what
snnTorch's autograd computes: its only departure from the derivative of its forward is the detached
reset, which refsnn detaches too (in smooth mode R stays Θ, so the gradient is the exact derivative
of the smooth forward and finite differences check it with no frozen spikes).

The forward saves the input; the backward first recomputes U[t−1] and I[t−1] from it with the
forward's own operations (bit for bit), then runs the recurrence. The file: the plain NumPy
reference pair, the fast Numba pair with the same names (blocks of neurons in parallel, the time
loop inside, compile.py), the layer classes, and the EXAMPLES that drive the tests and the verifier.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_float_array
from ..surrogate import BOXCAR, Surrogate, fire, fire_grad, fire_grad_float64, typed
from .base import BaseNeuron, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, wide_grad

SUBTRACT, ZERO, NONE = 0, 1, 2
RESET_MECHANISMS = {"subtract": SUBTRACT, "zero": ZERO, "none": NONE}  # snnTorch's reset_dict


class LeakyOptions(NamedTuple):
    synaptic: bool       # the synaptic current I (Synaptic) or none (Leaky)
    reset: int           # SUBTRACT, ZERO or NONE
    reset_delay: bool    # the reset acts at the next step (snnTorch's default)
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # always True: snnTorch fires on U > thr (read by base.fire_reference)
    store_v: bool        # write U[t] and I[t] into mem_seq and syn_seq
    has_grad_v: bool     # an upstream gradient on mem_seq is given
    learn: bool          # some parameter is learned: sum dL/dβ, dL/dα, dL/dthr (backward)


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def leaky_forward_reference(x, mem_init, syn_init, beta, alpha, thr, s_alpha, s_beta, o):
    """x: [T, n]; mem_init, syn_init, beta, alpha, thr: [n] (β, α clamped) ->
    spikes, h_seq, mem_seq, syn_seq [T, n], mem_final, syn_final [n]."""
    m, y = mem_init.copy(), syn_init.copy()            # U[t−1], I[t−1]: [n]
    spikes, h_seq, mem_seq, syn_seq = (np.empty_like(x) for _ in range(4))
    for t in range(x.shape[0]):
        r = (m > thr).astype(x.dtype)                  # R[t], detached
        if o.synaptic:
            y = alpha * y + x[t]
        c = y if o.synaptic else x[t]
        if o.reset == SUBTRACT:
            h = (beta * m + c) - r * thr
        elif o.reset == ZERO and o.synaptic:
            a = beta * m + c
            h = a - a * r
        elif o.reset == ZERO:
            h = beta * ((1.0 - r) * m) + c
        else:
            h = beta * m + c
        s = fire_reference(h, thr, 1.0, s_alpha, s_beta, o)
        if o.reset_delay or o.reset == NONE:
            m = h
        else:
            m = h - (s - r) * (thr if o.reset == SUBTRACT else h)
        spikes[t], h_seq[t], mem_seq[t], syn_seq[t] = s, h, m, y
    return spikes, h_seq, mem_seq, syn_seq, m, y


def leaky_backward_reference(grad_out, grad_v, grad_mem_final, grad_syn_final, x, mem_init, syn_init,
                             beta, alpha, thr, s_alpha, s_beta, o):
    """-> grad_x [T, n], grad_mem_init, grad_syn_init [n], and the per-neuron float64 sums
    dL/dβ, dL/dα, dL/dthr [n] (before the clamp's mask)."""
    _, h_seq, mem_seq, syn_seq, _, _ = leaky_forward_reference(x, mem_init, syn_init, beta, alpha, thr,
                                                               s_alpha, s_beta, o)
    gm, gy = grad_mem_final.copy(), grad_syn_final.copy()
    grad_x = np.empty_like(x)
    g_beta, g_alpha, g_thr = (np.zeros(x.shape[1]) for _ in range(3))
    for t in range(x.shape[0] - 1, -1, -1):
        m = mem_seq[t - 1] if t > 0 else mem_init      # U[t−1]
        y = syn_seq[t - 1] if t > 0 else syn_init      # I[t−1]
        h = h_seq[t]
        r = (m > thr).astype(x.dtype)
        s = fire_reference(h, thr, 1.0, s_alpha, s_beta, o)
        g = gm + grad_v[t] if o.has_grad_v else gm
        if o.reset_delay or o.reset == NONE:
            du_dh, du_ds, du_dthr = 1.0, 0.0, 0.0
        elif o.reset == SUBTRACT:
            du_dh, du_ds, du_dthr = 1.0, -thr, -(s - r)
        else:
            du_dh, du_ds, du_dthr = 1.0 - (s - r), -h, 0.0
        gs = grad_out[t] + g * du_ds
        ds_dh = fire_grad_reference(h, thr, 1.0, s_alpha, s_beta, o)
        gh = g * du_dh + gs * ds_dh
        g_thr += -gs * ds_dh + g * du_dthr - (gh * r if o.reset == SUBTRACT else 0.0)
        keep = 1.0 - r if o.reset == ZERO else 1.0     # K' (and K for Synaptic)
        g_beta += gh * (keep * m)
        gc = gh * keep if o.synaptic else gh
        if o.synaptic:
            gy = gy + gc
            grad_x[t] = gy
            g_alpha += gy * y
            gy = gy * alpha
        else:
            grad_x[t] = gc
        gm = gh * (beta * keep)
    return grad_x, gm, gy, g_beta, g_alpha, g_thr


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's state in locals across the time loop
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _charge(x, m, y, beta, alpha, thr, synaptic, reset):
    """(H[t], I[t], R[t]) from X[t], U[t−1], I[t−1]."""
    zero, one = typed(0.0, x), typed(1.0, x)
    r = one if m > thr else zero
    if synaptic:
        y = alpha * y + x
    c = y if synaptic else x
    if reset == SUBTRACT:
        h = (beta * m + c) - r * thr
    elif reset == ZERO and synaptic:
        a = beta * m + c
        h = a - a * r
    elif reset == ZERO:
        h = beta * ((one - r) * m) + c
    else:
        h = beta * m + c
    return h, y, r


@numba.njit(cache=True, inline="always")
def _membrane(h, s, r, thr, reset, reset_delay):
    """U[t] from H[t], S[t], R[t]."""
    if reset_delay or reset == NONE:
        return h
    return h - (s - r) * (thr if reset == SUBTRACT else h)


@specializable
def leaky_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def leaky_forward(x, mem_init, syn_init, beta, alpha, thr, s_alpha, s_beta,
                      spikes, h_seq, mem_seq, syn_seq, mem_final, syn_final, options):
        """Writes spikes, h_seq, mem_seq and syn_seq (store_v) [T, n], mem_final and syn_final [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        synaptic, reset, reset_delay, surrogate, smooth, strict, store_v, has_grad_v, learn = (
            options if frozen is None else frozen)  # compile.py
        T, n_all = x.shape
        one = x.dtype.type(1)
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            m = mem_init[lo:lo + n].copy()  # the block's state, kept local across the time loop
            y = syn_init[lo:lo + n].copy() if synaptic else np.zeros(n, x.dtype)
            bt, th = beta[lo:lo + n], thr[lo:lo + n]
            al = alpha[lo:lo + n] if synaptic else bt
            for t in range(T):
                xt, ht, st = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n]
                for j in range(n):
                    h, y_now, r = _charge(xt[j], m[j], y[j], bt[j], al[j], th[j], synaptic, reset)
                    ht[j] = h
                    y[j] = y_now
                    s = fire(h, th[j], one, surrogate, s_alpha, s_beta, smooth, True)
                    m[j] = _membrane(h, s, r, th[j], reset, reset_delay)
                    st[j] = s
                if store_v:
                    mem_seq[t, lo:lo + n] = m
                    if synaptic:
                        syn_seq[t, lo:lo + n] = y
            mem_final[lo:lo + n] = m
            if synaptic:
                syn_final[lo:lo + n] = y
    return leaky_forward


@specializable
def leaky_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def leaky_backward(grad_out, grad_v, grad_mem_final, grad_syn_final, x, mem_init, syn_init, beta, alpha, thr,
                       s_alpha, s_beta, grad_x, grad_mem_init, grad_syn_init, g_beta, g_alpha, g_thr, options):
        """Writes grad_x [T, n], grad_mem_init and grad_syn_init [n], and the per-neuron float64
        sums g_beta, g_alpha, g_thr [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        synaptic, reset, reset_delay, surrogate, smooth, strict, store_v, has_grad_v, learn = (
            options if frozen is None else frozen)  # compile.py
        T, n_all = x.shape
        one, zero = x.dtype.type(1), x.dtype.type(0)
        for b in prange((n_all + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, n_all - lo)
            bt, th = beta[lo:lo + n], thr[lo:lo + n]
            al = alpha[lo:lo + n] if synaptic else bt
            # the forward again, flat per-block history: m_hist[t·n:][:n] = U[t−1] (U[−1] first),
            # y_hist likewise I[t−1], h_hist[t·n:][:n] = H[t]
            m_hist = np.empty((T + 1) * n, x.dtype)
            y_hist = np.zeros((T + 1) * n, x.dtype)
            h_hist = np.empty(T * n, x.dtype)
            m_hist[:n] = mem_init[lo:lo + n]
            if synaptic:
                y_hist[:n] = syn_init[lo:lo + n]
            for t in range(T):
                xt = x[t, lo:lo + n]
                for j in range(n):
                    h, y_now, r = _charge(xt[j], m_hist[t * n + j], y_hist[t * n + j], bt[j], al[j], th[j],
                                          synaptic, reset)
                    h_hist[t * n + j] = h
                    s = fire(h, th[j], one, surrogate, s_alpha, s_beta, smooth, True)
                    m_hist[t * n + n + j] = _membrane(h, s, r, th[j], reset, reset_delay)
                    y_hist[t * n + n + j] = y_now
            gm = grad_mem_final[lo:lo + n].copy()  # dL/dU[t] for the block
            gy = grad_syn_final[lo:lo + n].copy() if synaptic else np.zeros(n, x.dtype)
            gb, ga, gt = g_beta[lo:lo + n], g_alpha[lo:lo + n], g_thr[lo:lo + n]
            for t in range(T - 1, -1, -1):
                got, gxt = grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else got
                for j in range(n):
                    m, y, h = m_hist[t * n + j], y_hist[t * n + j], h_hist[t * n + j]
                    r = one if m > th[j] else zero
                    s = fire(h, th[j], one, surrogate, s_alpha, s_beta, smooth, True)
                    g = gm[j] + gvt[j] if has_grad_v else gm[j]
                    if reset_delay or reset == NONE:
                        du_dh, du_ds, du_dthr = one, zero, zero
                    elif reset == SUBTRACT:
                        du_dh, du_ds, du_dthr = one, -th[j], -(s - r)
                    else:
                        du_dh, du_ds, du_dthr = one - (s - r), -h, zero
                    gs = got[j] + g * du_ds
                    if wide:   # dS/dH (compile.py); ``wide`` is a constant: one branch is compiled
                        ds_dh = fire_grad_float64(h, th[j], one, surrogate, s_alpha, s_beta)
                    else:
                        ds_dh = fire_grad(h, th[j], one, surrogate, s_alpha, s_beta)
                    gh = g * du_dh + gs * ds_dh
                    keep = one - r if reset == ZERO else one
                    if learn:  # a compile-time constant when specialized: no sums without learned parameters
                        gt[j] += np.float64(-gs * ds_dh + g * du_dthr - (gh * r if reset == SUBTRACT else zero))
                        gb[j] += np.float64(gh * (keep * m))
                    gc = gh * keep if synaptic else gh
                    if synaptic:
                        gi = gy[j] + gc
                        gxt[j] = gi
                        if learn:
                            ga[j] += np.float64(gi * y)
                        gy[j] = gi * al[j]
                    else:
                        gxt[j] = gc
                    gm[j] = gh * (bt[j] * keep)
            grad_mem_init[lo:lo + n] = gm
            if synaptic:
                grad_syn_init[lo:lo + n] = gy
    return leaky_backward


# ------------------------------------------------------------------------------------------
# The layers
# ------------------------------------------------------------------------------------------
def _parameter_array(value, name):
    """A finite real scalar or array (per neuron, broadcast over the feature shape), stored in
    float32 as snnTorch stores a float (torch.as_tensor)."""
    try:
        arr = np.array(value)
    except (TypeError, ValueError):  # ragged nested lists
        arr = np.array(None)
    if arr.dtype.kind not in "iuf":  # bools, strings, None, objects
        raise TypeError(f"{name} must be a real number or an array of them, got {value!r:.80}")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r:.80}")
    return arr.astype(np.float32)


class LeakyFamily(BaseNeuron):
    """Leaky and Synaptic share one pair of kernels (``synaptic`` selects the current I).

    Parameters (``beta``, ``alpha``, ``threshold``) are learnable (``learn_*``, in ``params``) or
    fixed (in ``buffers``), both under snnTorch's state-dict names; each is a scalar or an array
    that broadcasts over the feature shape (one value per neuron)."""

    synaptic = False
    membrane = "mem"
    saves_input = True  # the backward recomputes U[t−1] and I[t−1] from X

    def __init__(self, beta, threshold, spike_grad, learn_beta, learn_threshold, reset_mechanism, reset_delay,
                 smooth, store_v_seq):
        if not isinstance(reset_mechanism, str) or reset_mechanism not in RESET_MECHANISMS:
            raise ValueError(f"reset_mechanism must be 'subtract', 'zero' or 'none', got {reset_mechanism!r}")
        s = spike_grad if isinstance(spike_grad, Surrogate) else Surrogate(spike_grad, None)
        if s.code == BOXCAR:
            raise ValueError("the boxcar surrogate takes (U − thr)/thr, which snnTorch's neurons do not; "
                             "choose another spike_grad")
        self._learn = {"beta": check_flag(learn_beta, "learn_beta"),
                       "threshold": check_flag(learn_threshold, "learn_threshold")}
        self._threshold = _parameter_array(threshold, "threshold")
        # BaseNeuron assigns v_threshold, the property below, which stores self._threshold
        super().__init__(1.0, s.name, s.alpha, s.beta, smooth, True, store_v_seq)
        self.reset_mechanism = reset_mechanism
        self.reset_delay = check_flag(reset_delay, "reset_delay")
        self._store("beta", _parameter_array(beta, "beta"))

    def _store(self, name, value):
        if self._learn[name]:
            self.add_param(name, value)
        else:
            self.buffers[name] = value

    def _tensor(self, name):
        return self.params[name] if name in self.params else self.buffers[name]

    @property
    def v_threshold(self):
        """The threshold: a float, or an array (per neuron)."""
        t = self._tensor("threshold")
        return float(t) if t.ndim == 0 else t

    @v_threshold.setter
    def v_threshold(self, value):
        if "threshold" in self.params or "threshold" in self.buffers:
            self._tensor("threshold")[...] = value
        else:
            self._store("threshold", self._threshold)

    def _options(self, has_grad_v=None):
        """The forward kernel's options (``has_grad_v`` None) or the backward's."""
        forward = has_grad_v is None
        return LeakyOptions(self.synaptic, RESET_MECHANISMS[self.reset_mechanism], self.reset_delay,
                            self.surrogate.code, self.smooth, True, self.store_v_seq and forward, bool(has_grad_v),
                            bool(self.params) and not forward)

    def _per_neuron(self, name, dtype, clamp=False):
        """Parameter ``name`` broadcast to every neuron, [n] in ``dtype`` (β and α clamped to [0, 1])."""
        p = self._tensor(name)
        features = self._shape[2:]
        try:
            fits = p.ndim <= len(features) and np.broadcast_shapes(p.shape, features) == features
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{type(self).__name__}: {name} has shape {p.shape}, which does not broadcast over "
                             f"the input's feature shape {features}")
        check_float_array(p, name, min_ndim=0)
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{type(self).__name__}: {name} is not finite")
        p = np.clip(p, 0, 1) if clamp else p
        # a copy, always writable: a read-only view (one neuron) would be another Numba signature
        return np.array(np.broadcast_to(p, self._shape[1:]).reshape(-1), dtype=dtype)

    def _args(self, dtype):
        """beta, alpha, thr [n] and the surrogate's alpha, beta, in ``dtype``."""
        _, _, s_alpha, s_beta = self._surrogate_args(dtype)
        beta = self._per_neuron("beta", dtype, clamp=True)
        alpha = self._per_neuron("alpha", dtype, clamp=True) if self.synaptic else np.empty(0, dtype)
        return beta, alpha, self._per_neuron("threshold", dtype), s_alpha, s_beta

    def _surrogate_args(self, dtype=None):
        """BaseNeuron's (v_threshold, scale, alpha, beta) with the first two None: the threshold is per
        neuron here (``_per_neuron``) and the scale 1 (no boxcar)."""
        s, c, w = self.surrogate, self._dtype.type, (dtype or self._dtype).type
        return None, None, w(c(s.alpha)), w(c(s.beta))

    def _syn(self, states, n, dtype):
        return states["syn"] if self.synaptic else np.empty(n, dtype)

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        n = x.shape[1]
        syn_seq = seqs["syn"] if self.synaptic else h_seq
        leaky_forward(o)(x, init["mem"], self._syn(init, n, x.dtype), *self._args(x.dtype), spikes, h_seq,
                         seqs["mem"], syn_seq, finals["mem"], self._syn(finals, n, x.dtype), o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options(has_grad_v=grad_v is not None)
        grad_v = grad_v if grad_v is not None else np.zeros((0, 0), self._dtype)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_mem, grad_syn = self._empty("grad_mem", (n,), dt), self._empty("grad_syn", (n,), dt)
        sums = np.zeros((3, n), np.float64)  # dL/dβ, dL/dα, dL/dthr per neuron
        leaky_backward(o, wide_grad(self.surrogate))(
            *(a.astype(dt, copy=False) for a in (grad_out, grad_v, grad_finals["mem"],
                                                 self._syn(grad_finals, n, dt), x, init["mem"],
                                                 self._syn(init, n, dt))),
            *self._args(dt), grad_x, grad_mem, grad_syn, *sums, o)
        return grad_x, self._state_grads(grad_mem, grad_syn), self._param_grads(*sums)

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        n = x.shape[1]
        o, args = self._options(has_grad_v=grad_v is not None), self._args(x.dtype)
        syn_init = self._syn(init, n, x.dtype) if self.synaptic else np.zeros(n, x.dtype)
        spikes, h_seq, mem_seq, syn_seq, mem_final, syn_final = leaky_forward_reference(
            x, init["mem"], syn_init, *args, o)
        grad_syn_final = self._syn(grad_finals, n, x.dtype) if self.synaptic else np.zeros(n, x.dtype)
        grad_x, grad_mem, grad_syn, *sums = leaky_backward_reference(
            grad_out, grad_v, grad_finals["mem"], grad_syn_final, x, init["mem"], syn_init, *args, o)
        seqs, finals = {"mem": mem_seq}, {"mem": mem_final}
        if self.synaptic:
            seqs["syn"], finals["syn"] = syn_seq, syn_final
        return spikes, h_seq, seqs, finals, grad_x, self._state_grads(grad_mem, grad_syn), self._param_grads(*sums)

    def _state_grads(self, grad_mem, grad_syn):
        return {"mem": grad_mem, "syn": grad_syn} if self.synaptic else {"mem": grad_mem}

    def _param_grads(self, g_beta, g_alpha, g_thr):
        """The per-neuron sums [n] reduced to each learnable parameter's shape (zero where the clamp
        holds β or α)."""
        grads = {}
        for name, g in (("beta", g_beta), ("alpha", g_alpha), ("threshold", g_thr)):
            if name not in self.params:
                continue
            p = self.params[name]
            g = g.reshape(self._shape[1:])
            g = g.sum(axis=tuple(range(g.ndim - p.ndim))) if g.ndim > p.ndim else g
            g = g.sum(axis=tuple(i for i in range(p.ndim) if p.shape[i] == 1 and g.shape[i] != 1), keepdims=True)
            if name != "threshold":
                g = np.where((p >= 0) & (p <= 1), g, 0.0)  # torch's clamp passes the gradient on [0, 1]
            grads[name] = g
        return grads

    def extra_repr(self):
        shown = lambda name: (f"{float(self._tensor(name)):g}" if self._tensor(name).ndim == 0  # noqa: E731
                              else f"array{self._tensor(name).shape}")
        names = (["alpha"] if self.synaptic else []) + ["beta", "threshold"]
        return (", ".join(f"{k}={shown(k)}" + (" (learned)" if k in self.params else "") for k in names)
                + f", spike_grad={self.surrogate!r}, reset_mechanism={self.reset_mechanism!r}"
                + ("" if self.reset_delay else ", reset_delay=False") + (", smooth=True" if self.smooth else ""))


class Leaky(LeakyFamily):
    """snnTorch ``Leaky`` (1.0): U = β·U + X − R·thr (module docstring), spikes [T, N, ...].

    ``beta``: the membrane decay (clamped to [0, 1] in the forward), a float or an array per
    neuron; ``threshold`` likewise; ``spike_grad``: a surrogate name (refsnn.surrogate) or a
    ``Surrogate``, default snnTorch's ``atan`` (α = 2, the same function); ``learn_beta``,
    ``learn_threshold``: make them parameters; ``reset_mechanism``: "subtract", "zero" or "none";
    ``reset_delay``: the reset acts at the next step (True, snnTorch's default) or at once.
    State ``mem`` (U: pre-reset with reset_delay, post-reset without; ``mem_seq`` with
    store_v_seq). snnTorch's inhibition, state_quant, graded spikes and init_hidden are not offered.
    Raises ValueError / TypeError on a bad option."""

    state_names = ("mem",)

    def __init__(self, beta=0.9, threshold=1.0, spike_grad="atan", learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", reset_delay=True, smooth=False, store_v_seq=False):
        super().__init__(beta, threshold, spike_grad, learn_beta, learn_threshold, reset_mechanism, reset_delay,
                         smooth, store_v_seq)


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (each has an exact snnTorch
# counterpart, verify/frameworks.py)
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "leaky": [
        dict(),
        dict(beta=0.8, reset_mechanism="zero", spike_grad="fast_sigmoid"),
        dict(beta=0.7, threshold=0.75, learn_beta=True, learn_threshold=True),
        # slope 1: snnTorch's float32 sigmoid overflows to NaN for slope·|U − thr| > 88 (snnTorch #427)
        dict(beta=0.95, reset_mechanism="zero", learn_beta=True, learn_threshold=True,
             spike_grad=Surrogate("sigmoid", alpha=1.0)),
        dict(beta=0.9, reset_delay=False, learn_beta=True, learn_threshold=True),
        dict(beta=0.85, reset_mechanism="zero", reset_delay=False, learn_threshold=True),
        dict(beta=[[0.6], [1.2]], threshold=[[0.75], [1.25]], reset_mechanism="none", learn_beta=True,
             learn_threshold=True),  # per-neuron arrays over [2, ...] features; the clamp holds β = 1.2
    ],
}
