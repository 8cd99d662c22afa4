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
import math

import numba
import numpy as np
from numba import prange

from .module import Module, NonFiniteError, check_float_array
from .surrogate import Surrogate, fire, fire_grad, stable_sigmoid

BLOCK = 1024  # neurons per parallel work item

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
        return s * v_reset + (1.0 - s) * h
    return h - s * v_threshold


# ------------------------------------------------------------------------------------------
# IF / LIF / PLIF
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def lif_forward_kernel(x, v_init, mode, leak, decay_input, v_threshold, v_reset, hard,
                       scale, code, alpha, beta, smooth, strict, store_v,
                       spikes, h_seq, v_seq, v_final):
    T, M = x.shape
    for b in prange((M + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(lo + BLOCK, M)
        v = v_init[lo:hi].copy()  # the block's membranes, kept local across the time loop
        for t in range(T):
            for j in range(lo, hi):
                h = _charge(mode, v[j - lo], x[t, j], leak, v_reset, decay_input)
                s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                v[j - lo] = _reset(h, s, v_threshold, v_reset, hard)
                h_seq[t, j] = h
                spikes[t, j] = s
                if store_v:
                    v_seq[t, j] = v[j - lo]
        v_final[lo:hi] = v


@numba.njit(cache=True, parallel=True)
def lif_backward_kernel(grad_s, grad_v, has_grad_v, grad_v_final, h_seq, x, v_init,
                        mode, leak, decay_input, v_threshold, v_reset, hard, detach_reset,
                        scale, code, alpha, beta, smooth, strict, grad_x, grad_v_init, grad_leak):
    """Reverse time, carrying gV = dL/dV[t]:

        gS = gS_ext + (gV·dV/dS unless detach_reset)   dV/dS = vr − H (hard), −V_th (soft)
        gH = gV·dV/dH + gS·g'(u)                        dV/dH = 1 − S (hard), 1 (soft)
        gX[t] = gH·dH/dX ;  gV[t−1] = gH·dH/dV + gV_ext[t−1]
        PLIF: dL/dk += gH·dH/dk,  dH/dk = X − (V[t−1] − vr) (decay_input) or −(V[t−1] − vr)
    """
    T, M = h_seq.shape
    if mode == IF_CHARGE:
        dh_dx, dh_dv = 1.0, 1.0
    elif mode == LIF_CHARGE:
        dh_dx = 1.0 / leak if decay_input else 1.0
        dh_dv = 1.0 - 1.0 / leak
    else:
        dh_dx = leak if decay_input else 1.0
        dh_dv = 1.0 - leak
    for b in prange((M + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(lo + BLOCK, M)
        gv = grad_v_final[lo:hi].copy()  # dL/dV[t] for the block
        g_leak = 0.0
        for t in range(T - 1, -1, -1):
            for j in range(lo, hi):
                g = gv[j - lo]
                if has_grad_v:
                    g += grad_v[t, j]
                h = h_seq[t, j]
                s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                if hard:
                    dv_dh, dv_ds = 1.0 - s, v_reset - h
                else:
                    dv_dh, dv_ds = 1.0, -v_threshold
                gs = grad_s[t, j]
                if not detach_reset:
                    gs += g * dv_ds
                gh = g * dv_dh + gs * fire_grad(h, v_threshold, scale, code, alpha, beta)
                grad_x[t, j] = gh * dh_dx
                if mode == PLIF_CHARGE:
                    if t > 0:
                        hp = h_seq[t - 1, j]
                        v_prev = _reset(hp, fire(hp, v_threshold, scale, code, alpha, beta, smooth, strict),
                                        v_threshold, v_reset, hard)
                    else:
                        v_prev = v_init[j]
                    dh_dk = x[t, j] - (v_prev - v_reset) if decay_input else -(v_prev - v_reset)
                    g_leak += gh * dh_dk
                gv[j - lo] = gh * dh_dv
        grad_v_init[lo:hi] = gv
        grad_leak[b] = g_leak


# ------------------------------------------------------------------------------------------
# CLIF
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def clif_forward_kernel(x, v_init, m_init, tau, v_threshold, scale, code, alpha, beta, smooth, strict,
                        store_v, spikes, h_seq, v_seq, m_seq, v_final, m_final):
    """H = V − V/tau + X ;  S = Θ(H − V_th) ;  M = M·σ(H/tau) + S ;  V = H − S·(V_th + σ(M))."""
    T, M_ = x.shape
    for b in prange((M_ + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(lo + BLOCK, M_)
        v = v_init[lo:hi].copy()
        m = m_init[lo:hi].copy()
        for t in range(T):
            for j in range(lo, hi):
                vj = v[j - lo]
                h = vj - vj / tau + x[t, j]
                s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                mj = m[j - lo] * stable_sigmoid(h / tau) + s
                vj = h - s * (v_threshold + stable_sigmoid(mj))
                v[j - lo] = vj
                m[j - lo] = mj
                h_seq[t, j] = h
                spikes[t, j] = s
                if store_v:
                    v_seq[t, j] = vj
                    m_seq[t, j] = mj
        v_final[lo:hi] = v
        m_final[lo:hi] = m


@numba.njit(cache=True, parallel=True)
def clif_backward_kernel(grad_s, grad_v, has_grad_v, grad_v_final, grad_m_final, h_seq, m_init,
                         tau, v_threshold, scale, code, alpha, beta, smooth, strict,
                         grad_x, grad_v_init, grad_m_init):
    """Reverse time carrying gV = dL/dV[t], gM = dL/dM[t]; q = σ(M[t]), D = σ(H[t]/tau):

        gMt = gM − gV·S·q(1−q)
        gS  = gS_ext − gV·(V_th + q) + gMt
        gH  = gV + gMt·M[t−1]·D(1−D)/tau + gS·g'(u)
        gX[t] = gH ;  gV[t−1] = gH·(1 − 1/tau) + gV_ext[t−1] ;  gM[t−1] = gMt·D

    M[t] is recomputed forward from H (the same operations as the forward kernel).
    """
    T, M_ = h_seq.shape
    for b in prange((M_ + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(lo + BLOCK, M_)
        m_hist = np.empty((T + 1, hi - lo), h_seq.dtype)  # m_hist[t + 1] = M[t], m_hist[0] = M[-1]
        m_hist[0] = m_init[lo:hi]
        for t in range(T):
            for j in range(lo, hi):
                h = h_seq[t, j]
                m_hist[t + 1, j - lo] = m_hist[t, j - lo] * stable_sigmoid(h / tau) + fire(
                    h, v_threshold, scale, code, alpha, beta, smooth, strict)
        gv = grad_v_final[lo:hi].copy()
        gm = grad_m_final[lo:hi].copy()
        for t in range(T - 1, -1, -1):
            for j in range(lo, hi):
                g = gv[j - lo]
                if has_grad_v:
                    g += grad_v[t, j]
                h = h_seq[t, j]
                s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                q = stable_sigmoid(m_hist[t + 1, j - lo])
                d = stable_sigmoid(h / tau)
                gmt = gm[j - lo] - g * s * q * (1.0 - q)
                gs = grad_s[t, j] - g * (v_threshold + q) + gmt
                gh = g + gmt * m_hist[t, j - lo] * d * (1.0 - d) / tau + gs * fire_grad(
                    h, v_threshold, scale, code, alpha, beta)
                grad_x[t, j] = gh
                gv[j - lo] = gh * (1.0 - 1.0 / tau)
                gm[j - lo] = gmt * d
        grad_v_init[lo:hi] = gv
        grad_m_init[lo:hi] = gm


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------
class BaseNeuron(Module):
    """Shared machinery: option checks, the [T, M] view, state in/out, saved tensors.

    ``forward(x, state=None)`` returns spikes ``[T, N, ...]`` in the dtype of ``x``; ``state``
    (a dict like ``self.state``) starts the sequence from a previous chunk's final state.
    After it: ``self.state`` is the final state, ``self.h_seq`` the charged potentials and,
    with ``store_v_seq=True``, ``self.v_seq`` the membrane after reset.

    ``backward(grad_spikes, grad_v=None, grad_state=None)`` returns ``dL/dx``; ``grad_v`` is an
    upstream gradient on the membrane sequence, ``grad_state`` one on the final state (from a
    later chunk); the gradient on the initial state is left in ``self.grad_state``.
    """

    state_names = ("v",)

    def __init__(self, v_threshold=1.0, surrogate="sigmoid", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False):
        super().__init__()
        if not (isinstance(v_threshold, (int, float)) and math.isfinite(v_threshold)):
            raise ValueError(f"v_threshold must be a finite number, got {v_threshold!r}")
        self.v_threshold = float(v_threshold)
        self.surrogate = Surrogate(surrogate, alpha, beta)
        if self.surrogate.code == 5 and self.v_threshold <= 0:
            raise ValueError("the boxcar surrogate divides by v_threshold, which must be > 0")
        self.smooth = bool(smooth)
        self.strict = bool(strict)
        self.store_v_seq = bool(store_v_seq)
        self._saved = None

    # -- helpers --------------------------------------------------------------------
    def _surrogate_args(self):
        s = self.surrogate
        return (self.v_threshold, s.argument_scale(self.v_threshold), s.code, s.alpha, s.beta)

    def _initial_state(self, state, x2):
        """Initial state arrays [M] (the reset state when ``state`` is None)."""
        feat = x2.shape[1]
        out = {}
        for name in self.state_names:
            if state is None or name not in state:
                if state is not None:
                    raise ValueError(f"state must contain {self.state_names}, got {sorted(state)}")
                out[name] = np.full(feat, self.rest_value(name), dtype=x2.dtype)
                continue
            arr = np.asarray(state[name])
            if arr.shape != self._shape[1:]:
                raise ValueError(f"state[{name!r}] has shape {arr.shape}, expected {self._shape[1:]}")
            check_float_array(arr, f"state[{name!r}]", min_ndim=0)
            out[name] = np.ascontiguousarray(arr, dtype=x2.dtype).reshape(feat)
        return out

    def rest_value(self, name):
        return 0.0

    def _as_time_major(self, x):
        x = check_float_array(x, "input", min_ndim=2)
        if x.shape[0] == 0:
            raise ValueError(f"input has no time steps (shape {x.shape}); expected [T, N, ...] with T >= 1")
        if x.size == 0:
            raise ValueError(f"input is empty (shape {x.shape}); expected [T, N, ...] with N >= 1")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _check_grad(self, g, name):
        if self._saved is None:
            raise ValueError(f"{type(self).__name__}.backward called before forward")
        g = check_float_array(g, name, min_ndim=2)
        if g.shape != self._shape:
            raise ValueError(f"{name} has shape {g.shape}, expected the forward output shape {self._shape}")
        return np.ascontiguousarray(g, dtype=self._dtype).reshape(self._shape[0], -1)

    def _grad_inputs(self, grad_spikes, grad_v, grad_state, feat):
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
                finals[name] = np.zeros(feat, self._dtype)
        return gs, gv, has_gv, finals

    def _raise_if_nonfinite(self, v_final):
        """A NaN or ±Inf anywhere in the input propagates into the final membrane (NaN stays NaN,
        Inf survives or becomes NaN through the leak and the reset), so checking the final
        state, M values instead of T·M, finds every non-finite input."""
        n = int(np.count_nonzero(~np.isfinite(v_final)))
        if n:
            raise NonFiniteError(f"{type(self).__name__}: input contains NaN/Inf "
                             f"({n} neuron(s) end in a non-finite state)")

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
        if v_reset is not None and not (isinstance(v_reset, (int, float)) and math.isfinite(v_reset)):
            raise ValueError(f"v_reset must be a finite number or None (soft reset), got {v_reset!r}")
        self.v_reset = None if v_reset is None else float(v_reset)
        self.decay_input = bool(decay_input)
        self.detach_reset = bool(detach_reset)

    def rest_value(self, name):
        return 0.0 if self.v_reset is None else self.v_reset

    def _leak(self):
        return 1.0

    def _reset_args(self):
        hard = self.v_reset is not None
        return (self.v_threshold, self.v_reset if hard else 0.0, hard)

    def forward(self, x, state=None):
        x2 = self._as_time_major(x)
        init = self._initial_state(state, x2)
        T, M = x2.shape
        dt = x2.dtype
        spikes = np.empty_like(x2)
        h_seq = np.empty_like(x2)
        v_seq = np.empty_like(x2) if self.store_v_seq else np.empty((0, 0), dt)
        v_final = np.empty(M, dt)
        th, scale, code, alpha, beta = self._surrogate_args()
        _, vr, hard = self._reset_args()
        lif_forward_kernel(x2, init["v"], self.mode, self._leak(), self.decay_input, th, vr, hard,
                           scale, code, alpha, beta, self.smooth, self.strict, self.store_v_seq,
                           spikes, h_seq, v_seq, v_final)
        self._raise_if_nonfinite(v_final)
        self._dtype = dt
        self._saved = (h_seq, init, x2 if self.mode == PLIF_CHARGE else np.empty((0, 0), dt))
        self.h_seq = h_seq.reshape(self._shape)
        self.v_seq = v_seq.reshape(self._shape) if self.store_v_seq else None
        self.state = self._unflatten_state({"v": v_final})
        return spikes.reshape(self._shape)

    def backward(self, grad_spikes, grad_v=None, grad_state=None):
        h_seq, init, x2 = self._saved if self._saved is not None else (None, None, None)
        M = h_seq.shape[1] if h_seq is not None else 0
        gs, gv, has_gv, finals = self._grad_inputs(grad_spikes, grad_v, grad_state, M)
        grad_x = np.empty_like(h_seq)
        grad_v_init = np.empty(M, self._dtype)
        grad_leak = np.zeros((M + BLOCK - 1) // BLOCK, np.float64)
        th, scale, code, alpha, beta = self._surrogate_args()
        _, vr, hard = self._reset_args()
        lif_backward_kernel(gs, gv, has_gv, finals["v"], h_seq, x2, init["v"], self.mode, self._leak(),
                            self.decay_input, th, vr, hard, self.detach_reset, scale, code, alpha, beta,
                            self.smooth, self.strict, grad_x, grad_v_init, grad_leak)
        self._accumulate_leak_grad(grad_leak.sum())
        self.grad_state = self._unflatten_state({"v": grad_v_init})
        return grad_x.reshape(self._shape)

    def _accumulate_leak_grad(self, g_leak):
        pass

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
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 1):
            raise ValueError(f"tau must be a finite number > 1, got {tau!r}")
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.tau = float(tau)

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
    scalar ``w`` (state-dict name ``w``) initialised to −ln(init_tau − 1)."""

    mode = PLIF_CHARGE

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate="sigmoid",
                 alpha=None, beta=1.0, detach_reset=False, smooth=False, strict=False, store_v_seq=False):
        if not (isinstance(init_tau, (int, float)) and math.isfinite(init_tau) and init_tau > 1):
            raise ValueError(f"init_tau must be a finite number > 1, got {init_tau!r}")
        super().__init__(decay_input, v_threshold, v_reset, surrogate, alpha, beta, detach_reset,
                         smooth, strict, store_v_seq)
        self.add_param("w", np.array(-math.log(init_tau - 1.0), dtype=np.float32))

    def _leak(self):
        return float(stable_sigmoid(float(self.params["w"])))

    def _accumulate_leak_grad(self, g_k):
        k = self._leak()
        self.grads["w"] += g_k * k * (1.0 - k)  # dk/dw = k(1 − k)


class CLIF(BaseNeuron):
    """Complementary LIF (Huang et al., ICML 2024), SpikingJelly 2.0 ``ComplementaryLIFNode``:

        H = V − V/tau + X ;  S = Θ(H − V_th) ;  M = M·σ(H/tau) + S ;  V = H − S·(V_th + σ(M))

    Soft reset, no input decay, no detach, no learnable parameter; state (V, M) starts at 0.
    """

    state_names = ("v", "m")

    def __init__(self, tau=2.0, v_threshold=1.0, surrogate="rect", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False):
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 1):
            raise ValueError(f"tau must be a finite number > 1, got {tau!r}")
        super().__init__(v_threshold, surrogate, alpha, beta, smooth, strict, store_v_seq)
        self.tau = float(tau)

    def forward(self, x, state=None):
        x2 = self._as_time_major(x)
        init = self._initial_state(state, x2)
        T, M = x2.shape
        dt = x2.dtype
        spikes = np.empty_like(x2)
        h_seq = np.empty_like(x2)
        shape_v = (T, M) if self.store_v_seq else (0, 0)
        v_seq, m_seq = np.empty(shape_v, dt), np.empty(shape_v, dt)
        v_final, m_final = np.empty(M, dt), np.empty(M, dt)
        th, scale, code, alpha, beta = self._surrogate_args()
        clif_forward_kernel(x2, init["v"], init["m"], self.tau, th, scale, code, alpha, beta, self.smooth,
                            self.strict, self.store_v_seq, spikes, h_seq, v_seq, m_seq, v_final, m_final)
        self._raise_if_nonfinite(v_final)
        self._dtype = dt
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
        grad_x = np.empty_like(h_seq)
        grad_v_init, grad_m_init = np.empty(M, self._dtype), np.empty(M, self._dtype)
        th, scale, code, alpha, beta = self._surrogate_args()
        clif_backward_kernel(gs, gv, has_gv, finals["v"], finals["m"], h_seq, init["m"], self.tau, th, scale,
                             code, alpha, beta, self.smooth, self.strict, grad_x, grad_v_init, grad_m_init)
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
