"""Spiking neurons with fused forward and backward-through-time (BPTT) kernels.

Every model follows neurons.md to the operation. Input ``x`` is ``[T, N, ...]``; the kernels
see it as ``[T, M]`` (M = N·features) and run one parallel loop over blocks of neurons with
the time loop inside.

Each block's state lives in a small local array while the time loop sweeps the block's
contiguous slice of every time step (looping time innermost instead would stride by M and
thrash the cache). The forward saves only the charged potential ``H[T, M]``. The backward recomputes from it
whatever else it needs (the spike S = Θ(H − V_th), the previous membrane V[t−1] = reset(H[t−1]),
CLIF's M), which is exact because it repeats the forward's own floating-point operations.

Notation (neurons.md): Θ fires on ``>=`` (``strict=True``: ``>``), g' is the surrogate
derivative, Ŝ = S.detach() when ``detach_reset`` else S, vr = v_reset (0 for soft reset).
"""
import functools
import math
import sys

import numba
import numpy as np
from numba import prange

from ..module import Module, NonFiniteError, check_flag, check_float_array, check_real
from ..surrogate import ATAN, BOXCAR, Surrogate, fire, fire_grad, fire_grad_float64, stable_sigmoid, typed

# Neurons per parallel work item. Each (block, time step) pays a fixed cost (slices, LLVM's alias
# checks, the vector loop's prologue and epilogue): measured fwd+bwd at [4, 32·16384] float32, 1 and
# 2 threads interleaved, 4096 was 1.14-1.25x faster than 1024 for LIF and 1.08x for CLIF. Kept at
# 1024 for now: tests/test_scale_paths.py sizes its finite-difference checks over several blocks on
# BLOCK, and at 4096 their inputs grow 4x and two of them exceed their (unchanged) tolerance.
BLOCK = 1024

# Charge modes of the LIF family.
IF_CHARGE, LIF_CHARGE, PLIF_CHARGE = 0, 1, 2


@numba.njit(cache=True, inline="always")
def _charge(mode, v, x, leak, v_reset, decay_input):
    """H[t] from V[t-1] and X[t]. ``leak`` is tau for LIF (divide) and k = σ(w) for PLIF (multiply)."""
    if mode == IF_CHARGE:
        return v + x
    if mode == LIF_CHARGE:
        if decay_input:
            return v + (x - (v - v_reset)) / leak
        return v - (v - v_reset) / leak + x
    if decay_input:
        return v + (x - (v - v_reset)) * leak
    return v - (v - v_reset) * leak + x


@numba.njit(cache=True, inline="always")
def _reset(h, s, v_threshold, v_reset, hard):
    """V[t] from H[t] and S[t]: hard  Ŝ·vr + (1 − Ŝ)·H ;  soft  H − Ŝ·V_th."""
    if hard:
        return s * v_reset + (typed(1.0, h) - s) * h
    return h - s * v_threshold


# ------------------------------------------------------------------------------------------
# Kernel specialization
# ------------------------------------------------------------------------------------------
# Each kernel is written once, reading its options (charge mode, reset kind, surrogate...) from a
# ``flags`` tuple. ``make(spec)`` compiles it either generically (spec None: flags read at run
# time; one compilation serves every configuration, which the gradient-check matrix uses) or
# specialized (spec = the flags, frozen as compile-time constants: dead branches vanish and the
# inner loop is straight-line code, several times faster). Both compile the same source.
#
# Every kernel is compiled with error_model="numpy": Python's error model checks each float division
# for a zero divisor and raises, a branch that keeps LLVM from vectorizing the loop (measured: a
# float32 1/x loop 0.8 ns an element scalar). The divisors here (tau > 1, 1 + e with e >= 0, ...) are
# never zero, and IEEE division is what the maths means anyway.
KERNEL_OPTIONS = dict(cache=True, parallel=True, error_model="numpy")


#
# A backward kernel also takes ``wide``: dS/dH in float64 (fire_grad_float64, for the atan surrogate)
# or in the data's dtype (fire_grad). It is chosen in Python from the surrogate, so that the generic
# compilation (one per ``wide``) gives bit for bit what the specialized one gives.
def _kernel_factory(make):
    generic = {}

    @functools.lru_cache(maxsize=None)
    def specialized(flags, wide):
        return make(flags, wide)

    def get(flags, specialize=True, wide=False):
        if specialize:
            return specialized(flags, wide)
        if wide not in generic:
            generic[wide] = make(None, wide)
        return generic[wide]
    return get


# ------------------------------------------------------------------------------------------
# IF / LIF / PLIF
# ------------------------------------------------------------------------------------------
def _make_lif_forward(spec, wide=False):
    @numba.njit(**KERNEL_OPTIONS)
    def lif_forward(x, v_init, leak, v_threshold, v_reset, scale, alpha, beta,
                    spikes, h_seq, v_seq, v_final, flags):
        mode, decay_input, hard, code, smooth, strict, store_v = flags if spec is None else spec
        T, M = x.shape
        for b in prange((M + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, M - lo)
            v = v_init[lo:lo + n].copy()  # the block's membranes, kept local across the time loop
            for t in range(T):
                xt, ht, st, vt = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n], v_seq[t, lo:lo + n]
                for j in range(n):
                    ht[j] = _charge(mode, v[j], xt[j], leak, v_reset, decay_input)
                    h = ht[j]  # read back: fire on H as stored, which is what the backward sees
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    v[j] = _reset(h, s, v_threshold, v_reset, hard)
                    st[j] = s
                    if store_v:
                        vt[j] = v[j]
            v_final[lo:lo + n] = v
    return lif_forward


def _make_lif_backward(spec, wide=False):

    @numba.njit(**KERNEL_OPTIONS)
    def lif_backward(grad_s, grad_v, grad_v_final, h_seq, x, v_init, leak, v_threshold, v_reset,
                     scale, alpha, beta, grad_x, grad_v_init, grad_leak, flags):
        """Reverse time, carrying gV = dL/dV[t]:

            gS = gS_ext + (gV·dV/dS unless detach_reset)   dV/dS = vr − H (hard), −V_th (soft)
            gH = gV·dV/dH + gS·g'(u)                        dV/dH = 1 − S (hard), 1 (soft)
            gX[t] = gH·dH/dX ;  gV[t−1] = gH·dH/dV + gV_ext[t−1]
            PLIF: dL/dk += gH·dH/dk,  dH/dk = X − (V[t−1] − vr) (decay_input) or −(V[t−1] − vr)
        """
        mode, decay_input, hard, detach_reset, code, smooth, strict, has_grad_v = flags if spec is None else spec
        T, M = h_seq.shape
        one = h_seq.dtype.type(1)  # constants in the data's dtype: float32 stays float32
        if mode == IF_CHARGE:
            dh_dx, dh_dv = one, one
        elif mode == LIF_CHARGE:
            dh_dx = one / leak if decay_input else one
            dh_dv = one - one / leak
        else:
            dh_dx = leak if decay_input else one
            dh_dv = one - leak
        for b in prange((M + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, M - lo)
            gv = grad_v_final[lo:lo + n].copy()  # dL/dV[t] for the block
            vi = v_init[lo:lo + n]
            # PLIF's dL/dk, one float64 partial sum per neuron (a single scalar accumulator would be
            # a serial reduction, which LLVM does not vectorize without reassociating)
            g_leak = np.zeros(n if mode == PLIF_CHARGE else 0, np.float64)
            # this step's terms gH·dH/dk in the data's dtype, added to g_leak in a loop of their own
            # (a float64 add in the main loop halves its vector width: PLIF's backward ran 2x LIF's)
            dl_dk = np.empty(n if mode == PLIF_CHARGE else 0, h_seq.dtype)
            v_prev = np.empty(n if mode == PLIF_CHARGE else 0, h_seq.dtype)
            for t in range(T - 1, -1, -1):
                ht, gst, gxt = h_seq[t, lo:lo + n], grad_s[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else gst
                xt = x[t, lo:lo + n] if mode == PLIF_CHARGE else ht
                if mode == PLIF_CHARGE:
                    # V[t−1] = reset(H[t−1]) as the forward computed it, V_init at t = 0 (a loop of its
                    # own: a per-element choice between the two keeps the main loop from vectorizing)
                    if t > 0:
                        hp = h_seq[t - 1, lo:lo + n]
                        for j in range(n):
                            s_prev = fire(hp[j], v_threshold, scale, code, alpha, beta, smooth, strict)
                            v_prev[j] = _reset(hp[j], s_prev, v_threshold, v_reset, hard)
                    else:
                        v_prev[:] = vi
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    h = ht[j]
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    if hard:
                        dv_dh, dv_ds = one - s, v_reset - h
                    else:
                        dv_dh, dv_ds = one, -v_threshold
                    gs = gst[j]
                    if not detach_reset:
                        gs += g * dv_ds
                    if wide:   # dS/dH (see _kernel_factory); ``wide`` is a constant: one branch is compiled
                        ds_dh = fire_grad_float64(h, v_threshold, scale, code, alpha, beta)
                    else:
                        ds_dh = fire_grad(h, v_threshold, scale, code, alpha, beta)
                    gh = g * dv_dh + gs * ds_dh
                    gxt[j] = gh * dh_dx
                    if mode == PLIF_CHARGE:  # (compared inline: a compile-time constant when specialized)
                        dh_dk = xt[j] - (v_prev[j] - v_reset) if decay_input else -(v_prev[j] - v_reset)
                        dl_dk[j] = gh * dh_dk
                    gv[j] = gh * dh_dv
                if mode == PLIF_CHARGE:
                    for j in range(n):
                        g_leak[j] += dl_dk[j]
            grad_v_init[lo:lo + n] = gv
            grad_leak[b] = g_leak.sum()
    return lif_backward


lif_forward_kernel = _kernel_factory(_make_lif_forward)
lif_backward_kernel = _kernel_factory(_make_lif_backward)


# ------------------------------------------------------------------------------------------
# CLIF
# ------------------------------------------------------------------------------------------
def _exact_inverse(tau):
    """Is 1/tau exact in tau's dtype (tau a power of two, e.g. the default 2)? Then x·(1/tau) and
    x/tau are the same correctly rounded number for every x, and the multiply is much cheaper."""
    return math.frexp(float(tau))[0] == 0.5


@numba.njit(cache=True, inline="always")
def _over_tau(x, tau, inv_tau, exact_inverse):
    """x/tau, as a product by 1/tau when that is exact (bit-identical: _exact_inverse)."""
    return x * inv_tau if exact_inverse else x / tau


def _make_clif_forward(spec, wide=False):
    @numba.njit(**KERNEL_OPTIONS)
    def clif_forward(x, v_init, m_init, tau, v_threshold, scale, alpha, beta,
                     spikes, h_seq, v_seq, m_seq, v_final, m_final, flags):
        """H = V − V/tau + X ;  S = Θ(H − V_th) ;  M = M·σ(H/tau) + S ;  V = H − S·(V_th + σ(M))."""
        code, smooth, strict, store_v, exact_inverse = flags if spec is None else spec
        inv_tau = typed(1.0, tau) / tau  # used only when exact (see _over_tau)
        T, M_ = x.shape
        for b in prange((M_ + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, M_ - lo)
            v = v_init[lo:lo + n].copy()
            m = m_init[lo:lo + n].copy()
            for t in range(T):
                xt, ht, st = x[t, lo:lo + n], h_seq[t, lo:lo + n], spikes[t, lo:lo + n]
                vt, mt = v_seq[t, lo:lo + n], m_seq[t, lo:lo + n]
                for j in range(n):
                    vj = v[j]
                    ht[j] = vj - _over_tau(vj, tau, inv_tau, exact_inverse) + xt[j]
                    h = ht[j]  # H and M as stored, which the backward recomputes from
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    m[j] = m[j] * stable_sigmoid(_over_tau(h, tau, inv_tau, exact_inverse)) + s
                    v[j] = h - s * (v_threshold + stable_sigmoid(m[j]))
                    st[j] = s
                    if store_v:
                        vt[j] = v[j]
                        mt[j] = m[j]
            v_final[lo:lo + n] = v
            m_final[lo:lo + n] = m
    return clif_forward


def _make_clif_backward(spec, wide=False):

    @numba.njit(**KERNEL_OPTIONS)
    def clif_backward(grad_s, grad_v, grad_v_final, grad_m_final, h_seq, m_init, tau, v_threshold,
                      scale, alpha, beta, grad_x, grad_v_init, grad_m_init, flags):
        """Reverse time carrying gV = dL/dV[t], gM = dL/dM[t]; q = σ(M[t]), D = σ(H[t]/tau):

            gMt = gM − gV·S·q(1−q)
            gS  = gS_ext − gV·(V_th + q) + gMt
            gH  = gV + gMt·M[t−1]·D(1−D)/tau + gS·g'(u)
            gX[t] = gH ;  gV[t−1] = gH·(1 − 1/tau) + gV_ext[t−1] ;  gM[t−1] = gMt·D

        M[t] and D are recomputed forward from H (the same operations as the forward kernel).
        """
        code, smooth, strict, has_grad_v, exact_inverse = flags if spec is None else spec
        T, M_ = h_seq.shape
        one = h_seq.dtype.type(1)  # constants in the data's dtype: float32 stays float32
        dv_dv = one - one / tau    # dH[t]/dV[t−1]
        inv_tau = one / tau        # dD/dH = D(1−D)/tau as a product (a division per element costs more)
        for b in prange((M_ + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            n = min(BLOCK, M_ - lo)
            # Flat per-block scratch (2-D scratch arrays keep LLVM from vectorizing these loops),
            # read through 1-D slices: m_hist[(t + 1)·n:][:n] = M[t] (M[−1] first), d_hist[t·n:][:n] = σ(H[t]/tau)
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
                    m_now[j] = m_prev[j] * d + fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
            gv = grad_v_final[lo:lo + n].copy()
            gm = grad_m_final[lo:lo + n].copy()
            for t in range(T - 1, -1, -1):
                ht, gst, gxt = h_seq[t, lo:lo + n], grad_s[t, lo:lo + n], grad_x[t, lo:lo + n]
                gvt = grad_v[t, lo:lo + n] if has_grad_v else gst
                m_prev, m_now, dt = m_hist[t * n:t * n + n], m_hist[t * n + n:t * n + 2 * n], d_hist[t * n:t * n + n]
                for j in range(n):
                    g = gv[j] + gvt[j] if has_grad_v else gv[j]
                    h = ht[j]
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    q = stable_sigmoid(m_now[j])
                    d = dt[j]
                    gmt = gm[j] - g * s * q * (one - q)
                    gs = gst[j] - g * (v_threshold + q) + gmt
                    if wide:   # dS/dH (see _kernel_factory); ``wide`` is a constant: one branch is compiled
                        ds_dh = fire_grad_float64(h, v_threshold, scale, code, alpha, beta)
                    else:
                        ds_dh = fire_grad(h, v_threshold, scale, code, alpha, beta)
                    gh = g + gmt * m_prev[j] * d * (one - d) * inv_tau + gs * ds_dh
                    gxt[j] = gh
                    gv[j] = gh * dv_dv
                    gm[j] = gmt * d
            grad_v_init[lo:lo + n] = gv
            grad_m_init[lo:lo + n] = gm
    return clif_backward


clif_forward_kernel = _kernel_factory(_make_clif_forward)
clif_backward_kernel = _kernel_factory(_make_clif_backward)


@numba.njit(cache=True, error_model="numpy")
def all_finite(a):
    """np.all(np.isfinite(a)) for a 1-D array in one vectorized pass, without a temporary:
    x − x is 0 for finite x and NaN for ±Inf and NaN."""
    bad = False
    for i in range(a.size):
        bad |= not (a[i] - a[i] == 0)
    return not bad


# ------------------------------------------------------------------------------------------
# Reused output and scratch arrays
# ------------------------------------------------------------------------------------------
# A fresh np.empty of a few MB is fresh memory from the OS on every call: its page faults cost more
# than the kernel that fills it (measured: LIF forward kernel 1.8 ms into reused arrays, 4.6 ms into
# fresh ones, [4, 32·16384] float32). So each layer keeps its large arrays and hands one out again
# only when nothing else refers to it: the reference count of the array (every NumPy view, reshape,
# memoryview or torch.from_numpy of it holds a reference to it) equals the count with only the
# layer's own list holding it. An output the caller still holds is never overwritten; up to
# ``_POOL`` arrays per role let a caller that keeps the previous call's output (out = layer(x) in a
# loop) still get reused memory.
_POOL = 2


def _count_refs(pool, i):
    a = pool[i]
    return sys.getrefcount(a)


_UNSHARED = _count_refs([np.empty(0)], 0)  # the count when only the pool holds the array


def reusable_empty(scratch, role, shape, dtype):
    """np.empty(shape, dtype), reusing an array of ``scratch[role]`` that nothing else refers to."""
    dtype = np.dtype(dtype)
    pool = scratch.setdefault(role, [])
    for i in range(len(pool)):
        if pool[i].shape == shape and pool[i].dtype == dtype and _count_refs(pool, i) <= _UNSHARED:
            return pool[i]
    a = np.empty(shape, dtype)
    if len(pool) >= _POOL:
        pool.pop(0)
    pool.append(a)
    return a


def constant_array(scratch, role, size, value, dtype):
    """A length-``size`` array of ``value`` kept for reading only (initial states, zero gradients):
    the kernels copy from it and never write to it, and it is never handed to the caller."""
    key = (role, size, float(value), np.dtype(dtype).str)
    a = scratch.get(key)
    if a is None:
        scratch.pop(next((k for k in scratch if isinstance(k, tuple) and k[0] == role), None), None)
        a = scratch[key] = np.full(size, value, dtype)
    return a


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------
def _time_constant(value, name):
    return check_real(value, name, low=1, low_open=True)


class BaseNeuron(Module):
    """Shared machinery: option checks, the [T, M] view, state in/out, saved tensors.

    ``forward(x, state=None)`` returns spikes ``[T, N, ...]`` in the dtype of ``x``; ``state``
    (a dict like ``self.state``) starts the sequence from a previous chunk's final state.
    After it: ``self.state`` is the final state, ``self.h_seq`` the charged potentials and,
    with ``store_v_seq=True``, ``self.v_seq`` the membrane after reset.

    ``backward(grad_spikes, grad_v=None, grad_state=None)`` returns ``dL/dx``; ``grad_v`` is an
    upstream gradient on the membrane sequence, ``grad_state`` one on the final state (from a
    later chunk); the gradient on the initial state is left in ``self.grad_state``.

    The returned arrays and these attributes are written into memory the layer reuses on a later
    call only once nothing else refers to them (``reusable_empty``): what a caller keeps stays as it
    was (tests/test_neuron_buffers.py).
    """

    state_names = ("v",)

    def __init__(self, v_threshold=1.0, surrogate="sigmoid", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False):
        super().__init__()
        self.v_threshold = check_real(v_threshold, "v_threshold")
        self.surrogate = Surrogate(surrogate, alpha, beta)
        if self.surrogate.code == BOXCAR and self.v_threshold <= 0:
            raise ValueError("the boxcar surrogate divides by v_threshold, which must be > 0")
        self.smooth = check_flag(smooth, "smooth")
        self.strict = check_flag(strict, "strict")
        self.store_v_seq = check_flag(store_v_seq, "store_v_seq")
        self._saved = None
        self._scratch = {}  # arrays reused across calls (reusable_empty, constant_array)

    # -- helpers --------------------------------------------------------------------
    def _surrogate_args(self, dtype=None):
        """Threshold and surrogate constants rounded to the data's dtype, so float32 stays float32
        (given as ``dtype`` when that differs: the float32 values in float64, see ``_backward``)."""
        s, c = self.surrogate, self._dtype.type
        w = (dtype or self._dtype).type
        return (w(c(self.v_threshold)), w(c(s.argument_scale(self.v_threshold))), s.code, w(c(s.alpha)),
                w(c(s.beta)))

    def _initial_state(self, state, x2):
        """Initial state arrays [M] (the reset state when ``state`` is None)."""
        feat = x2.shape[1]
        if state is None:
            return {name: constant_array(self._scratch, "rest " + name, feat, self.rest_value(name), x2.dtype)
                    for name in self.state_names}
        if not isinstance(state, dict) or set(state) != set(self.state_names):
            raise ValueError(f"state must be a dict with keys {self.state_names}, got {state!r:.80}")
        out = {}
        for name in self.state_names:
            arr = np.asarray(state[name])
            if arr.shape != self._shape[1:]:
                raise ValueError(f"state[{name!r}] has shape {arr.shape}, expected {self._shape[1:]}")
            check_float_array(arr, f"state[{name!r}]", min_ndim=0)
            out[name] = np.ascontiguousarray(arr, dtype=x2.dtype).reshape(feat)
        return out

    def rest_value(self, name):
        return 0.0

    def _empty(self, role, shape, dtype):
        """np.empty(shape, dtype), or this layer's array from an earlier call that nothing else
        holds any more (reusable_empty)."""
        return reusable_empty(self._scratch, role, shape, dtype)

    def _as_time_major(self, x):
        self._saved = None  # a forward that fails leaves nothing for a backward to misuse
        # drop this layer's own references to the previous call's arrays, so that they can be
        # reused if the caller does not hold them either
        self.h_seq = self.v_seq = self.m_seq = self.state = None
        x = check_float_array(x, "input", min_ndim=2)
        self.check_dtype(x)
        if x.shape[0] == 0:
            raise ValueError(f"input has no time steps (shape {x.shape}); expected [T, N, ...] with T >= 1")
        if x.size == 0:
            raise ValueError(f"input is empty (shape {x.shape}); expected [T, N, ...] with N >= 1")
        self._shape = x.shape
        self._dtype = x.dtype
        return x.reshape(x.shape[0], -1)

    def _check_grad(self, g, name):
        if self._saved is None:
            raise ValueError(f"{type(self).__name__}.backward called before forward "
                             "(or a second time for one forward)")
        g = check_float_array(g, name, min_ndim=2)
        if g.shape != self._shape:
            raise ValueError(f"{name} has shape {g.shape}, expected the forward output shape {self._shape}")
        return np.ascontiguousarray(g, dtype=self._dtype).reshape(self._shape[0], -1)

    def _grad_inputs(self, grad_spikes, grad_v, grad_state, feat):
        self.grad_state = None  # the previous call's, so that its arrays can be reused (reusable_empty)
        gs = self._check_grad(grad_spikes, "grad_spikes")
        has_gv = grad_v is not None
        gv = self._check_grad(grad_v, "grad_v") if has_gv else np.zeros((0, 0), self._dtype)
        finals = {}
        for name in self.state_names:
            if grad_state is not None and name in grad_state:
                arr = np.asarray(grad_state[name])
                if arr.shape != self._shape[1:]:
                    raise ValueError(f"grad_state[{name!r}] has shape {arr.shape}, expected {self._shape[1:]}")
                finals[name] = np.ascontiguousarray(arr, dtype=self._dtype).reshape(feat)
            else:
                finals[name] = constant_array(self._scratch, "zero " + name, feat, 0.0, self._dtype)
        return gs, gv, has_gv, finals

    @property
    def specialize(self):
        """Use a kernel compiled for this exact configuration (fast), or the generic one?

        Smooth mode exists for gradient checks, whose matrix spans every configuration: there
        one generic compilation serves them all. Both are compiled from the same source."""
        return not self.smooth

    def _raise_if_nonfinite(self, v_final, x2, h_seq, init):
        """A NaN or ±Inf anywhere in the input or the initial state, or a membrane that
        overflows, propagates into the final membrane (NaN stays NaN, Inf survives or becomes
        NaN through the leak and the reset), so checking the final state, M values instead of
        T·M, finds every one; only then are the input, state and H searched for the cause."""
        if all_finite(v_final):
            return
        name = type(self).__name__
        bad = ~np.isfinite(x2)
        if bad.any():
            t, m = np.unravel_index(np.argmax(bad), bad.shape)
            where = np.unravel_index(m, self._shape[1:])
            raise NonFiniteError(f"{name}: input contains NaN/Inf (first at [t, n, ...] = "
                                 f"{[int(t), *(int(i) for i in where)]})")
        for key, value in init.items():
            if not np.all(np.isfinite(value)):
                raise NonFiniteError(f"{name}: the initial state[{key!r}] contains NaN/Inf")
        t = int(np.argmax(~np.isfinite(h_seq).all(axis=1)))
        raise NonFiniteError(f"{name}: the membrane potential overflowed {self._dtype} at step {t}; "
                             f"the input was finite (largest |input| {float(np.max(np.abs(x2))):.3g})"
                             + ("; float64 has the range for it (.to(np.float64) and a float64 input)"
                                if self._dtype == np.float32 else ""))

    def _backward(self, run, h_seq, **upstream):
        """Run a backward kernel through ``run(dtype)``, which returns ``(grad_x, *totals)`` with
        ``totals`` the gradients on the initial state and the parameters' partial sums.

        NaN and Inf propagate backward through time into every total (as the forward's into the
        final state), so a non-finite total is the only sign of a non-finite ``grad_x``. Given a
        finite forward, it comes from a non-finite upstream gradient (an error naming it) or an
        intermediate overflow: in float32 (e.g. (vr − H)·dL/dV with H near 3e38, later multiplied
        by a surrogate gradient of 0) the kernel is then run again in float64 on the same H and
        float32 constants and its result rounded to float32; what does not fit raises."""
        out = run(self._dtype)
        if self._finite(out[1:]):
            return out
        name = type(self).__name__
        for key, g in upstream.items():
            if g is not None and not np.all(np.isfinite(g)):
                raise NonFiniteError(f"{name}.backward: {key} contains NaN/Inf")
        if self._dtype == np.float32:
            with np.errstate(over="ignore"):
                out = tuple(np.asarray(a).astype(np.float32) for a in run(np.dtype(np.float64)))
            if self._finite(out):
                return out
        raise NonFiniteError(f"{name}.backward: the gradient overflowed {self._dtype} (the membrane "
                             f"potential reaches {float(np.max(np.abs(h_seq))):.3g}); the input and "
                             "the upstream gradients were finite")

    def _finite(self, arrays):
        with np.errstate(over="ignore"):
            return all(all_finite(np.asarray(a).astype(self._dtype, copy=False).ravel()) for a in arrays)

    def _unflatten_state(self, arrays):
        return {k: v.reshape(self._shape[1:]) for k, v in arrays.items()}

    def extra_repr(self):
        return (f"v_threshold={self.v_threshold}, surrogate={self.surrogate!r}"
                + (", smooth=True" if self.smooth else "") + (", strict=True" if self.strict else ""))


class _LIFFamily(BaseNeuron):
    """IF, LIF and PLIF share one pair of kernels; they differ in the charge equation."""

    mode = LIF_CHARGE

    def __init__(self, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid", alpha=None,
                 beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.v_reset = None if v_reset is None else check_real(v_reset, "v_reset (None for soft reset)")
        self.decay_input = check_flag(decay_input, "decay_input")
        self.detach_reset = check_flag(detach_reset, "detach_reset")

    def rest_value(self, name):
        return 0.0 if self.v_reset is None else self.v_reset

    def _leak(self):
        return 1.0

    def _reset_args(self, dtype=None):
        hard = self.v_reset is not None
        return (dtype or self._dtype).type(self._dtype.type(self.v_reset if hard else 0.0)), hard

    def forward(self, x, state=None):
        x2 = self._as_time_major(x)
        init = self._initial_state(state, x2)
        T, M = x2.shape
        dt = x2.dtype
        spikes = self._empty("spikes", x2.shape, dt)
        h_seq = self._empty("h_seq", x2.shape, dt)
        v_seq = self._empty("v_seq", x2.shape, dt) if self.store_v_seq else h_seq  # a stand-in the kernel never writes
        v_final = self._empty("v_final", (M,), dt)
        th, scale, code, alpha, beta = self._surrogate_args()
        vr, hard = self._reset_args()
        flags = (self.mode, self.decay_input, hard, code, self.smooth, self.strict, self.store_v_seq)
        lif_forward_kernel(flags, self.specialize)(x2, init["v"], dt.type(self._leak()), th, vr, scale, alpha, beta,
                                                   spikes, h_seq, v_seq, v_final, flags)
        self._raise_if_nonfinite(v_final, x2, h_seq, init)
        self._saved = (h_seq, init, x2 if self.mode == PLIF_CHARGE else np.empty((0, 0), dt))
        self.h_seq = h_seq.reshape(self._shape)
        self.v_seq = v_seq.reshape(self._shape) if self.store_v_seq else None
        self.state = self._unflatten_state({"v": v_final})
        return spikes.reshape(self._shape)

    def backward(self, grad_spikes, grad_v=None, grad_state=None):
        h_seq, init, x2 = self._saved if self._saved is not None else (None, None, None)
        M = h_seq.shape[1] if h_seq is not None else 0
        gs, gv, has_gv, finals = self._grad_inputs(grad_spikes, grad_v, grad_state, M)
        self._saved = None  # one backward per forward (module docstring)
        leak = self._dtype.type(self._leak())
        flags = (self.mode, self.decay_input, self.v_reset is not None, self.detach_reset, self.surrogate.code, self.smooth,
                 self.strict, has_gv)

        def run(dt):
            grad_x = self._empty("grad_x", h_seq.shape, dt)
            grad_v_init = self._empty("grad_v", (M,), dt)
            grad_leak = np.zeros((M + BLOCK - 1) // BLOCK, np.float64)
            th, scale, code, alpha, beta = self._surrogate_args(dt)
            lif_backward_kernel(flags, self.specialize, self.surrogate.code == ATAN)(
                *(a.astype(dt, copy=False) for a in (gs, gv, finals["v"], h_seq, x2, init["v"])), dt.type(leak),
                th, self._reset_args(dt)[0], scale, alpha, beta, grad_x, grad_v_init, grad_leak, flags)
            return grad_x, grad_v_init, self._w_grad(grad_leak.sum())

        grad_x, grad_v_init, grad_w = self._backward(run, h_seq, grad_spikes=gs, grad_v=gv,
                                                     grad_state=finals["v"])
        if "w" in self.params:
            self.grads["w"] += grad_w
        self.grad_state = self._unflatten_state({"v": grad_v_init})
        return grad_x.reshape(self._shape)

    def _w_grad(self, g_k):
        """dL/dw from dL/dk (PLIF's w; 0 for the others)."""
        return 0.0

    def extra_repr(self):
        return (super().extra_repr() + f", v_reset={self.v_reset}, decay_input={self.decay_input}"
                + (", detach_reset=True" if self.detach_reset else ""))


class LIF(_LIFFamily):
    """SpikingJelly ``neuron.LIFNode`` (2.0.0): same option names, defaults and operations.

    charge  H = V + (X − (V − vr))/tau   (decay_input)   or   H = V − (V − vr)/tau + X
    fire    S = Θ(H − V_th)
    reset   hard V = Ŝ·vr + (1 − Ŝ)·H  (v_reset a float)  ;  soft V = H − Ŝ·V_th  (v_reset=None)
    """

    mode = LIF_CHARGE

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid",
                 alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.tau = _time_constant(tau, "tau")

    def _leak(self):
        return self.tau

    def extra_repr(self):
        return f"tau={self.tau}, " + super().extra_repr()


class IF(_LIFFamily):
    """SpikingJelly ``neuron.IFNode``: H = V + X, then fire and reset as LIF."""

    mode = IF_CHARGE

    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid", alpha=None, beta=1.0,
                 detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        super().__init__(False, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)


class PLIF(_LIFFamily):
    """SpikingJelly ``neuron.ParametricLIFNode``: LIF with 1/tau replaced by k = σ(w), one learnable
    scalar ``w`` (state-dict name ``w``) initialized to −ln(init_tau − 1)."""

    mode = PLIF_CHARGE

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid",
                 alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        init_tau = _time_constant(init_tau, "init_tau")
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.add_param("w", np.array(-math.log(init_tau - 1.0), dtype=np.float32))

    def _leak(self):
        return float(stable_sigmoid(float(self.params["w"])))

    def _w_grad(self, g_k):
        k = self._leak()
        return g_k * k * (1.0 - k)  # dk/dw = k(1 − k)


class CLIF(BaseNeuron):
    """Complementary LIF (Huang et al., ICML 2024), SpikingJelly 2.0 ``ComplementaryLIFNode``:

        H = V − V/tau + X ;  S = Θ(H − V_th) ;  M = M·σ(H/tau) + S ;  V = H − S·(V_th + σ(M))

    Soft reset, no input decay, no detach, no learnable parameter; state (V, M) starts at 0.
    """

    state_names = ("v", "m")

    def __init__(self, tau=2.0, v_threshold=1.0, surrogate="rect", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False):
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.tau = _time_constant(tau, "tau")

    def forward(self, x, state=None):
        x2 = self._as_time_major(x)
        init = self._initial_state(state, x2)
        T, M = x2.shape
        dt = x2.dtype
        spikes = self._empty("spikes", x2.shape, dt)
        h_seq = self._empty("h_seq", x2.shape, dt)
        v_seq, m_seq = ((self._empty("v_seq", x2.shape, dt), self._empty("m_seq", x2.shape, dt)) if self.store_v_seq
                        else (h_seq, h_seq))
        v_final, m_final = self._empty("v_final", (M,), dt), self._empty("m_final", (M,), dt)
        th, scale, code, alpha, beta = self._surrogate_args()
        flags = (code, self.smooth, self.strict, self.store_v_seq, _exact_inverse(dt.type(self.tau)))
        clif_forward_kernel(flags, self.specialize)(x2, init["v"], init["m"], dt.type(self.tau), th, scale, alpha,
                                                    beta, spikes, h_seq, v_seq, m_seq, v_final, m_final, flags)
        self._raise_if_nonfinite(v_final, x2, h_seq, init)
        self._saved = (h_seq, init)
        self.h_seq = h_seq.reshape(self._shape)
        self.v_seq = v_seq.reshape(self._shape) if self.store_v_seq else None
        self.m_seq = m_seq.reshape(self._shape) if self.store_v_seq else None
        self.state = self._unflatten_state({"v": v_final, "m": m_final})
        return spikes.reshape(self._shape)

    def backward(self, grad_spikes, grad_v=None, grad_state=None):
        h_seq, init = self._saved if self._saved is not None else (None, None)
        M = h_seq.shape[1] if h_seq is not None else 0
        gs, gv, has_gv, finals = self._grad_inputs(grad_spikes, grad_v, grad_state, M)
        self._saved = None  # one backward per forward (module docstring)
        flags = (self.surrogate.code, self.smooth, self.strict, has_gv,
                 _exact_inverse(self._dtype.type(self.tau)))

        def run(dt):
            grad_x = self._empty("grad_x", h_seq.shape, dt)
            grad_v_init, grad_m_init = self._empty("grad_v", (M,), dt), self._empty("grad_m", (M,), dt)
            th, scale, code, alpha, beta = self._surrogate_args(dt)
            clif_backward_kernel(flags, self.specialize, self.surrogate.code == ATAN)(
                *(a.astype(dt, copy=False) for a in (gs, gv, finals["v"], finals["m"], h_seq, init["m"])),
                dt.type(self._dtype.type(self.tau)), th, scale, alpha, beta, grad_x, grad_v_init, grad_m_init, flags)
            return grad_x, grad_v_init, grad_m_init

        grad_x, grad_v_init, grad_m_init = self._backward(run, h_seq, grad_spikes=gs, grad_v=gv,
                                                          grad_state_v=finals["v"], grad_state_m=finals["m"])
        self.grad_state = self._unflatten_state({"v": grad_v_init, "m": grad_m_init})
        return grad_x.reshape(self._shape)

    def extra_repr(self):
        return f"tau={self.tau}, " + super().extra_repr()


class SingleStep(IF):
    """The S²NN single-step neuron (Suetake et al., arXiv 2201.10879): S = Θ(X − V_th) with the
    ``s2nn`` surrogate — an IF neuron run for one step, so the input must have T = 1."""

    def __init__(self, v_threshold=1.0, surrogate="s2nn", alpha=None, beta=1.0, smooth=False, strict=False):
        super().__init__(v_threshold, 0.0, surrogate, alpha, beta, False, smooth, strict)

    def forward(self, x, state=None):
        if isinstance(x, np.ndarray) and x.ndim >= 1 and x.shape[0] != 1:
            raise ValueError(f"SingleStep is a single-step neuron: input must have T = 1, got shape {x.shape}")
        return super().forward(x, state)


NEURONS = {"lif": LIF, "plif": PLIF, "if": IF, "clif": CLIF, "s2nn": SingleStep}


def make_neuron(name, **options):
    """A neuron layer by name ("lif", "plif", "if", "clif", "s2nn") with its options."""
    if name not in NEURONS:
        raise ValueError(f"unknown neuron {name!r}; choose one of {sorted(NEURONS)}")
    return NEURONS[name](**options)


from .converted import ConvertedNeuron, clamp_lam  # noqa: E402  (needs BaseNeuron above)
