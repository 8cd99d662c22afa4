"""RLeaky, the recurrent leaky integrate-and-fire neuron of snnTorch 1.0 (``snntorch.RLeaky``, read from
its source snntorch/_neurons/rleaky.py): same option names, defaults and operations.
docs/neurons.md "RLeaky" derives the backward.

Forward, for t = 0 .. T−1, from U[−1] = U_init and S[−1] = S_init (0, or a state {"mem", "spk"}):

    r[t] = Θ(U[t−1] − θ)                           the delayed reset, detached (no gradient through it; Θ
                                                   even in smooth mode, as in leaky.py)
    B[t] = β̂·U[t−1] + X[t] + R(S[t−1])             β̂ = clamp(β, 0, 1)
           R(S) = S Wᵀ + b on the last axis         all_to_all: W = recurrent.weight [F, F], b = recurrent.bias [F]
           R(S) = V·S                               one-to-one: V a scalar or [F]
    H[t] = B[t] − r[t]·θ                            reset_mechanism "subtract"
           B[t] − r[t]·B[t]                         "zero"
           B[t]                                     "none"
    S[t] = Θ(H[t] − θ)                              strict (>) like snnTorch; smooth mode: the surrogate's φ
    U[t] = H[t]                                     reset_delay=True (snnTorch's default)
           H[t] − (S[t] − r[t])·θ                   reset_delay=False, "subtract"
           H[t] − (S[t] − r[t])·H[t]                reset_delay=False, "zero"

The spikes of step t−1 feed back through R at step t, and their gradient flows back through it.

Backward (BPTT), reverse time, carrying gU = dL/dU[t] and gR = dL/dS[t] from step t+1's recurrence
(dL/dS_final, 0 by default, at t = T−1):

    g  = gU + dL/dmem_seq[t]
    gS = dL/dS[t] + gR + g·dU/dS                    dU/dS = −θ ("subtract") or −H ("zero") if not reset_delay
    gH = g·dU/dH + gS·g'(H − θ)                     dU/dH = 1 − (S − r) ("zero", not reset_delay), else 1
    gB = gH·dH/dB                                   dH/dB = 1 − r ("zero"), else 1
    dL/dX[t] = gB ;  dL/dU[t−1] = β̂·gB ;  gR ← gB W (all_to_all) or V·gB
    dL/dW = Σ_t gBᵀ S[t−1],  dL/db = Σ gB,  dL/dV = Σ gB·S[t−1]
    dL/dβ = Σ gB·U[t−1] (0 ≤ β ≤ 1: the clamp passes the gradient there, as in PyTorch)
    dL/dθ = Σ −gS·g' − gH·r ("subtract") − g·(S − r) ("subtract", not reset_delay)

The forward saves only H; the backward recomputes S[t] = Θ(H[t] − θ), r[t] and U[t] from it forward with
the forward's own operations (exact), then runs the recurrence above.

The file: the plain NumPy reference pair (the whole sequence, np.matmul), the fast pair (per step a BLAS
product for all-to-all feedback, refsnn.threads.matmul, and a fused elementwise Numba step), the class
and the EXAMPLES that drive the tests and the verifier.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..layers.common import uniform
from ..module import OptionError, check_flag, check_int, check_real
from ..surrogate import BOXCAR, Surrogate, fire, fire_grad, fire_grad_float64, typed
from ..threads import matmul
from .base import BaseNeuron, fire_grad_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, wide_grad
from .leaky import NONE, RESET_MECHANISMS, SUBTRACT, ZERO, _membrane


class RLeakyOptions(NamedTuple):
    reset: int           # SUBTRACT, ZERO or NONE
    reset_delay: bool
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on H > θ (always, as snnTorch)
    has_grad_v: bool     # an upstream gradient on v_seq is given


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all rows at a time
# ------------------------------------------------------------------------------------------
def recurrent_reference(s, weight, bias, v):
    """R(S) for S [rows, F]: S Wᵀ + b (weight given) or V·S."""
    return s @ weight.T + bias if weight is not None else v * s


def immediate_reset_reference(h, s, r, th, o):
    """U[t] from H, S and r (the module docstring's last lines)."""
    if o.reset_delay or o.reset == NONE:
        return h
    return h - (s - r) * th if o.reset == SUBTRACT else h - (s - r) * h


def delayed_reset_reference(u, th):
    """r[t] = Θ(U[t−1] − θ), strict, never smooth."""
    return (u > th).astype(u.dtype)


def rleaky_forward_reference(x, u_init, s_init, weight, bias, v, beta, th, scale, alpha, sbeta, o):
    """x: [T, rows, F], u_init, s_init: [rows, F] -> spikes, h_seq, u_seq [T, rows, F], u_final, s_final."""
    u, s = u_init.copy(), s_init.copy()
    spikes, h_seq, u_seq = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        r = delayed_reset_reference(u, th)
        b = beta * u + x[t] + recurrent_reference(s, weight, bias, v)
        h = b - r * th if o.reset == SUBTRACT else b - r * b if o.reset == ZERO else b
        s = fire_reference(h, th, scale, alpha, sbeta, o)
        u = immediate_reset_reference(h, s, r, th, o)
        spikes[t], h_seq[t], u_seq[t] = s, h, u
    return spikes, h_seq, u_seq, u, s


def rleaky_backward_reference(grad_out, grad_v, grad_u_final, grad_s_final, h_seq, u_init, s_init, weight, bias, v,
                              beta, th, scale, alpha, sbeta, o):
    """-> grad_x [T, rows, F], grad_u_init, grad_s_init [rows, F], {parameter: gradient} (float64 sums)."""
    T = h_seq.shape[0]
    s_seq = fire_reference(h_seq, th, scale, alpha, sbeta, o)
    u_prev, r_seq = [u_init], []                       # U[t−1] and r[t], recomputed forward from H
    for t in range(T):
        r_seq.append(delayed_reset_reference(u_prev[t], th))
        u_prev.append(immediate_reset_reference(h_seq[t], s_seq[t], r_seq[t], th, o))
    s_prev = np.concatenate([s_init[None], s_seq[:-1]])
    gu, gr = grad_u_final.copy(), grad_s_final.copy()
    grad_x, grad_th = np.empty_like(h_seq), 0.0
    for t in range(T - 1, -1, -1):
        g = gu + grad_v[t] if o.has_grad_v else gu
        h, s, r = h_seq[t], s_seq[t], r_seq[t]
        gs = grad_out[t] + gr
        du_dh = 1.0
        if not o.reset_delay and o.reset == SUBTRACT:
            gs = gs - g * th
        elif not o.reset_delay and o.reset == ZERO:
            gs, du_dh = gs - g * h, 1.0 - (s - r)
        ds_dh = fire_grad_reference(h, th, scale, alpha, sbeta, o)
        gh = g * du_dh + gs * ds_dh
        gb = gh * (1.0 - r) if o.reset == ZERO else gh
        g_th = -gs * ds_dh
        if o.reset == SUBTRACT:
            g_th = g_th - gh * r - (0.0 if o.reset_delay else g * (s - r))
        grad_th += g_th.sum()
        grad_x[t] = gb
        gu = beta * gb
        gr = gb @ weight if weight is not None else v * gb
    grads = {"beta": np.sum(grad_x * np.stack(u_prev[:-1])), "threshold": grad_th}
    if weight is not None:
        grads["recurrent.weight"] = np.einsum("tri,trj->ij", grad_x, s_prev)
        grads["recurrent.bias"] = grad_x.sum(axis=(0, 1))
    else:
        grads["V"] = (grad_x * s_prev).sum(axis=(0, 1)) if np.ndim(v) else (grad_x * s_prev).sum()
    return grad_x, gu, gr, grads


# ------------------------------------------------------------------------------------------
# Fast: per step the feedback R(S[t−1]) (a BLAS product), then one fused elementwise Numba step
# over blocks of neurons in parallel
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _delayed_reset(u, th):
    """r[t] = Θ(U[t−1] − θ), strict, never smooth."""
    return typed(1.0, u) if u > th else typed(0.0, u)


@specializable
def rleaky_forward_step(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def rleaky_forward_step(x, rec, u_prev, beta, th, scale, alpha, sbeta, h, s_out, u_out, options):
        """One step: writes H[t], S[t] and U[t] [n] from X[t], R(S[t−1]) and U[t−1] [n]."""
        reset, reset_delay, surrogate, smooth, strict, has_grad_v = options if frozen is None else frozen
        n_all = x.shape[0]
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            for j in range(blk * BLOCK, min(n_all, blk * BLOCK + BLOCK)):
                u = u_prev[j]
                r = _delayed_reset(u, th)
                b = beta * u + x[j] + rec[j]
                if reset == SUBTRACT:
                    h[j] = b - r * th
                elif reset == ZERO:
                    h[j] = b - r * b
                else:
                    h[j] = b
                hj = h[j]
                s = fire(hj, th, scale, surrogate, alpha, sbeta, smooth, strict)
                s_out[j] = s
                u_out[j] = _membrane(hj, s, r, th, reset, reset_delay)
    return rleaky_forward_step


@specializable
def rleaky_recompute(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def rleaky_recompute(h_seq, u_init, th, scale, alpha, sbeta, s_seq, r_seq, u_prev, options):
        """From H [T, n]: S[t], r[t] and U[t−1] [T, n], with the forward's operations."""
        reset, reset_delay, surrogate, smooth, strict, has_grad_v = options if frozen is None else frozen
        T, n_all = h_seq.shape
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            for j in range(blk * BLOCK, min(n_all, blk * BLOCK + BLOCK)):
                u = u_init[j]
                for t in range(T):
                    r = _delayed_reset(u, th)
                    hj = h_seq[t, j]
                    s = fire(hj, th, scale, surrogate, alpha, sbeta, smooth, strict)
                    s_seq[t, j], r_seq[t, j], u_prev[t, j] = s, r, u
                    u = _membrane(hj, s, r, th, reset, reset_delay)
    return rleaky_recompute


@specializable
def rleaky_backward_step(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def rleaky_backward_step(grad_out, grad_v, gr, gu, h, s_t, r_t, beta, th, scale, alpha, sbeta,
                             grad_x, grad_th, options):
        """One step back: from dL/dS[t], dL/dmem_seq[t], gR and gU (updated in place to dL/dU[t−1]) [n],
        writes dL/dX[t] = gB and the threshold's terms [n]."""
        reset, reset_delay, surrogate, smooth, strict, has_grad_v = options if frozen is None else frozen
        one = h.dtype.type(1)
        n_all = h.shape[0]
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            for j in range(blk * BLOCK, min(n_all, blk * BLOCK + BLOCK)):
                g = gu[j] + grad_v[j] if has_grad_v else gu[j]
                hj, s, r = h[j], s_t[j], r_t[j]
                gs = grad_out[j] + gr[j]
                du_dh = one
                if not reset_delay and reset == SUBTRACT:
                    gs = gs - g * th
                elif not reset_delay and reset == ZERO:
                    gs = gs - g * hj
                    du_dh = one - (s - r)
                if wide:   # dS/dH (compile.py); ``wide`` is a constant: one branch is compiled
                    ds_dh = fire_grad_float64(hj, th, scale, surrogate, alpha, sbeta)
                else:
                    ds_dh = fire_grad(hj, th, scale, surrogate, alpha, sbeta)
                gh = g * du_dh + gs * ds_dh
                gb = gh * (one - r) if reset == ZERO else gh
                g_th = -gs * ds_dh
                if reset == SUBTRACT:
                    g_th = g_th - gh * r
                    if not reset_delay:
                        g_th = g_th - g * (s - r)
                grad_th[j] = g_th
                grad_x[j] = gb
                gu[j] = beta * gb
    return rleaky_backward_step


# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class RLeaky(BaseNeuron):
    """snnTorch ``RLeaky`` (module docstring). Input ``[T, N, ..., F]``; the state is ``{"mem": U, "spk": S}``
    of the last step (``[N, ..., F]`` each), 0 at rest.

    ``all_to_all=True`` (snnTorch's default) needs ``linear_features`` = F, the size of the last axis:
    the feedback is a learnable ``recurrent.weight`` [F, F] and ``recurrent.bias`` [F], initialized like
    ``torch.nn.Linear`` (U(−1/√F, 1/√F), from ``rng``). ``all_to_all=False``: the feedback is ``V·S``
    with ``V`` a scalar or [F]. ``learn_recurrent`` makes them parameters (else fixed buffers),
    ``learn_beta``/``learn_threshold`` make ``beta``/``threshold`` parameters. snnTorch's convolutional
    feedback (``conv2d_channels``, ``kernel_size``) is refused. ``spike_grad``: a surrogate name
    (refsnn.surrogate) or a ``Surrogate``, default snnTorch's atan (α = 2). ``beta`` and ``threshold`` are
    scalars here (snnTorch also takes one per neuron). Fires on U > θ, as snnTorch. Raises ValueError/TypeError
    for bad options, and for an input whose last axis is not ``linear_features``."""

    state_names = ("mem", "spk")
    membrane = "mem"

    def __init__(self, beta, V=1.0, all_to_all=True, linear_features=None, conv2d_channels=None, kernel_size=None,
                 threshold=1.0, spike_grad="atan", learn_beta=False, learn_threshold=False, learn_recurrent=True,
                 reset_mechanism="subtract", reset_delay=True, smooth=False, store_v_seq=False, rng=None):
        self.learn_threshold = check_flag(learn_threshold, "learn_threshold")
        self._threshold = check_real(threshold, "threshold")
        sg = spike_grad if isinstance(spike_grad, Surrogate) else Surrogate(spike_grad, None)
        super().__init__(self._threshold, sg.name, sg.alpha, sg.beta, smooth, True, store_v_seq)
        if conv2d_channels is not None or kernel_size is not None:
            raise OptionError("RLeaky: the convolutional feedback (conv2d_channels, kernel_size) is not supported; "
                              "use all_to_all=True with linear_features, or all_to_all=False")
        if not isinstance(reset_mechanism, str) or reset_mechanism not in RESET_MECHANISMS:
            raise OptionError(f"reset_mechanism must be one of {list(RESET_MECHANISMS)}, got {reset_mechanism!r}")
        if self.learn_threshold and self.surrogate.code == BOXCAR:
            raise OptionError("learn_threshold with the boxcar surrogate (whose argument is scaled by 1/θ) "
                              "is not supported")
        self.reset_mechanism, self.reset_delay = reset_mechanism, check_flag(reset_delay, "reset_delay")
        self.all_to_all, self.learn_recurrent = check_flag(all_to_all, "all_to_all"), check_flag(learn_recurrent,
                                                                                             "learn_recurrent")
        self.learn_beta = check_flag(learn_beta, "learn_beta")
        self._beta = check_real(beta, "beta")
        if self.learn_beta:
            self.add_param("beta", np.array(self._beta, np.float32))
        if self.learn_threshold:
            self.add_param("threshold", np.array(self._threshold, np.float32))
        store = self.add_param if self.learn_recurrent else self.buffers.__setitem__
        if self.all_to_all:
            if linear_features is None:
                raise OptionError("RLeaky with all_to_all=True needs linear_features (the size of the last axis)")
            self.linear_features = check_int(linear_features, "linear_features", 1)
            rng = np.random.default_rng(0) if rng is None else rng
            bound = 1.0 / np.sqrt(self.linear_features)
            store("recurrent.weight", uniform(rng, bound, (self.linear_features,) * 2, np.float32))
            store("recurrent.bias", uniform(rng, bound, (self.linear_features,), np.float32))
        else:
            if linear_features is not None:
                raise OptionError("RLeaky with all_to_all=False takes V, not linear_features")
            self.linear_features = None
            v = np.array(V, np.float32)
            if v.ndim > 1 or not np.all(np.isfinite(v)) or v.dtype.kind != "f":
                raise OptionError(f"V must be a finite scalar or a 1-D array (one value per feature), got {V!r:.80}")
            store("V", v)

    # beta and threshold: a fixed float, or the learnable parameter
    @property
    def v_threshold(self):
        return float(self.params["threshold"]) if "threshold" in self.params else self._threshold

    @v_threshold.setter
    def v_threshold(self, value):
        self._threshold = value

    @property
    def beta(self):
        """β̂ = clamp(β, 0, 1), the decay the forward uses."""
        return min(max(float(self.params["beta"]) if self.learn_beta else self._beta, 0.0), 1.0)

    @property
    def features(self):
        """F, the size of the last axis this layer needs (linear_features, or the length of a 1-D V);
        None when any size fits (a scalar V)."""
        return self.linear_features if self.all_to_all else (self._array("V").size if self._array("V").ndim else None)

    def _array(self, name):
        return self.params[name] if name in self.params else self.buffers[name]

    def _options(self, has_grad_v=None):
        return RLeakyOptions(RESET_MECHANISMS[self.reset_mechanism], self.reset_delay, self.surrogate.code, self.smooth,
                             self.strict, bool(has_grad_v))

    def _features(self):
        """F, the size of the last axis, checked against the recurrent weights."""
        f = self._shape[-1]
        if self.all_to_all and f != self.linear_features:
            raise ValueError(f"RLeaky: the input's last axis has {f} features, linear_features is "
                             f"{self.linear_features}")
        if not self.all_to_all and self._array("V").size not in (1, f):
            raise ValueError(f"RLeaky: V has {self._array('V').size} values for {f} features")
        return f

    def _recurrence(self, dt):
        """(weight, bias, V) in dtype ``dt`` (None where unused)."""
        if self.all_to_all:
            return self._array("recurrent.weight").astype(dt, copy=False), \
                self._array("recurrent.bias").astype(dt, copy=False), None
        return None, None, self._array("V").astype(dt, copy=False)

    def _args(self, dt):
        """beta, θ, scale, alpha, surrogate beta in dtype ``dt``."""
        th, scale, alpha, sbeta = self._surrogate_args(dt)
        return self._constant(self.beta, dt), th, scale, alpha, sbeta

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        T, n = x.shape
        f = self._features()
        o = self._options()
        weight, bias, v = self._recurrence(x.dtype)
        step = rleaky_forward_step(o)
        scratch = [self._empty(role, (n,), x.dtype) for role in ("u_even", "u_odd")]  # U[t] when not stored
        u, s = init["mem"], init["spk"]
        for t in range(T):
            s2 = s.reshape(-1, f)                                   # S[t−1]: [rows, F]
            rec = (matmul(s2, weight.T) + bias if weight is not None else s2 * v).reshape(n)
            u_out = seqs["mem"][t] if self.store_v_seq else scratch[t % 2]
            step(x[t], rec, u, *self._args(x.dtype), h_seq[t], spikes[t], u_out, o)
            u, s = u_out, spikes[t]
        finals["mem"][:], finals["spk"][:] = u, s
        if self.store_v_seq:
            seqs["spk"][:] = spikes

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        T, n = h_seq.shape
        f = self._features()
        o = self._options(has_grad_v=grad_v is not None)
        weight, bias, v = self._recurrence(dt)
        beta, th, scale, alpha, sbeta = self._args(dt)
        h_seq = h_seq.astype(dt, copy=False)
        s_seq, r_seq, u_prev = (self._empty(role, (T, n), dt) for role in ("s_seq", "r_seq", "u_prev"))
        rleaky_recompute(o)(h_seq, init["mem"].astype(dt, copy=False), th, scale, alpha, sbeta, s_seq, r_seq, u_prev,
                            o)
        grad_x, grad_th = self._empty("grad_x", (T, n), dt), self._empty("grad_th", (T, n), dt)
        gu = grad_finals["mem"].astype(dt)                            # a copy: updated in place
        gr = grad_finals["spk"].astype(dt, copy=False)
        no_grad_v = np.zeros(0, dt)
        step = rleaky_backward_step(o, wide_grad(self.surrogate))
        for t in range(T - 1, -1, -1):
            step(grad_out[t].astype(dt, copy=False), grad_v[t].astype(dt, copy=False) if grad_v is not None else no_grad_v,
                 gr, gu, h_seq[t], s_seq[t], r_seq[t], beta, th, scale, alpha, sbeta, grad_x[t], grad_th[t], o)
            gb = grad_x[t].reshape(-1, f)                           # gB: [rows, F]
            gr = (matmul(gb, weight) if weight is not None else gb * v).reshape(n)
        s_prev = np.concatenate([init["spk"].astype(dt)[None], s_seq[:-1]]).reshape(-1, f)    # S[t−1]: [T·rows, F]
        gx2 = grad_x.reshape(-1, f)
        grads = {"beta": np.sum(grad_x * u_prev, dtype=np.float64) if 0.0 <= self._beta_value() <= 1.0 else 0.0,
                 "threshold": np.sum(grad_th, dtype=np.float64)}
        if weight is not None:
            grads["recurrent.weight"] = matmul(gx2.T, s_prev)
            grads["recurrent.bias"] = gx2.sum(axis=0, dtype=np.float64)
        else:
            grads["V"] = (gx2 * s_prev).sum(axis=0, dtype=np.float64) if v.ndim else np.sum(gx2 * s_prev, dtype=np.float64)
        return grad_x, {"mem": gu, "spk": gr}, self._cast_grads(grads)

    def _beta_value(self):
        return float(self.params["beta"]) if self.learn_beta else self._beta

    def _cast_grads(self, grads):
        """The gradients of the parameters this layer has, in their shapes (the β gradient is 0 where
        the clamp is flat)."""
        return {k: np.asarray(g).reshape(self.params[k].shape) for k, g in grads.items() if k in self.params}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        T, n = x.shape
        f = self._features()
        o = self._options(has_grad_v=grad_v is not None)
        weight, bias, v = self._recurrence(x.dtype)
        args = self._args(x.dtype)
        three = lambda a: None if a is None else a.reshape(T, -1, f)  # noqa: E731  [T, rows, F]
        two = lambda a: a.reshape(-1, f)  # noqa: E731                 [rows, F]
        spikes, h_seq, u_seq, u, s = rleaky_forward_reference(three(x), two(init["mem"]), two(init["spk"]), weight, bias,
                                                              v, *args, o)
        grad_x, gu, gr, grads = rleaky_backward_reference(
            three(grad_out), three(grad_v), two(grad_finals["mem"]), two(grad_finals["spk"]), h_seq, two(init["mem"]),
            two(init["spk"]), weight, bias, v, *args, o)
        if not 0.0 <= self._beta_value() <= 1.0:
            grads["beta"] = 0.0
        flat = lambda a: a.reshape(T, n)  # noqa: E731
        return (flat(spikes), flat(h_seq), {"mem": flat(u_seq), "spk": flat(spikes)}, {"mem": u.ravel(), "spk": s.ravel()},
                flat(grad_x), {"mem": gu.ravel(), "spk": gr.ravel()}, self._cast_grads(grads))

    def extra_repr(self):
        rec = f"linear_features={self.linear_features}" if self.all_to_all else "all_to_all=False"
        return (f"beta={self._beta}, {rec}, reset_mechanism={self.reset_mechanism!r}"
                + ("" if self.reset_delay else ", reset_delay=False") + ", " + super().extra_repr())


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (python -m verify compares each with
# snnTorch's RLeaky; linear_features = 8, the last axis of the verifier's inputs)
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "rleaky": [  # the first fits any feature count: registry-driven tests build every neuron from it
        dict(beta=0.6, all_to_all=False, V=0.5, reset_mechanism="zero", spike_grad="fast_sigmoid"),
        dict(beta=0.8, linear_features=8),
        dict(beta=0.9, linear_features=8, learn_beta=True, learn_threshold=True, threshold=0.75,
             reset_delay=False),
        dict(beta=0.7, all_to_all=False, V=[0.5, -0.25, 1.0, 0.0, 0.75, -1.0, 0.25, 0.5], reset_mechanism="zero",
             reset_delay=False, learn_beta=True),
    ],
}
