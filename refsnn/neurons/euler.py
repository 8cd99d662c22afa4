"""NIR's neurons, discretised by forward Euler at step dt: LIF, IF, LI, CubaLIF and CubaLI with a
value per neuron for every parameter (the ``nir`` package 1.0.8's node fields and equations;
docs/nir.md §2 gives the ODEs and §3 this discretisation).

Forward, for t = 0 .. T−1, from v[−1] = v_leak (IF: v_reset) and I[−1] = 0, or a given state;
every parameter is an array broadcast over the feature shape:

    synapse  I[t] = I[t−1] + (dt/τ_syn)·(−I[t−1] + w_in·X[t])     (CubaLIF, CubaLI; else I[t] = X[t])
    charge   H[t] = V[t−1] + (dt/τ)·((v_leak − V[t−1]) + R·I[t])   (LIF, LI, CubaLIF, CubaLI: τ = τ_mem)
             H[t] = V[t−1] + (dt·R)·I[t]                           (IF)
    fire     S[t] = Θ(H[t] − v_threshold)   (NIR fires on >: strict; smooth mode: the surrogate's φ)
    reset    V[t] = S·v_reset + (1 − S)·H[t]                               (hard reset, as NIR's v ← v_reset)
    LI, CubaLI: no threshold: the output is V[t] = H[t]

The membrane reads the synaptic current of the same step, I[t] (norse's CubaLIF and snnTorch's
``Synaptic``, the two frameworks' NIR importers, do the same; docs/nir.md §3).

Backward (BPTT), reverse time, carrying gV = dL/dV[t] and gI = dL/dI[t] through I[t+1]; with
a = dt/τ, c = dt·R (IF), b = dt/τ_syn:

    g   = gV + dL/dV_seq[t]
    gS  = dL/dS[t] + (g·(v_reset − H) unless detach_reset);  gH = g·(1 − S) + gS·g'(H − v_threshold)
          (LI, CubaLI:  gH = g + dL/dout[t])
    gIt = gH·a·R (IF: gH·c)                      dL/dI[t] from the membrane
    synapse:  dL/dX[t] = (gI + gIt)·b·w_in ;  gI ← (gI + gIt)·(1 − b)      else dL/dX[t] = gIt
    gV ← gH·(1 − a)  (IF: gH)

The forward saves only H; the backward recomputes S[t] from it with the forward's operations.
The constants (dt/τ, dt·R, dt/τ_syn) are formed in float64 and rounded to the data's dtype.

The file: the plain NumPy reference pair (one time step of all neurons at a time), the fast Numba
pair (the samples in parallel, the time loop inside), the class and its EXAMPLES.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_real
from ..surrogate import BOXCAR, fire, fire_grad, fire_grad_float64
from .base import BaseNeuron, fire_grad_reference, fire_reference
from .compile import KERNEL_OPTIONS, specializable, wide_grad


class EulerOptions(NamedTuple):
    synapse: bool        # CubaLIF, CubaLI: the synaptic current I before the membrane
    leak: bool           # τ v̇ = (v_leak − v) + R·I (every kind but IF, whose v̇ = R·I)
    fires: bool          # threshold and reset (LIF, IF, CubaLIF); LI and CubaLI output V
    detach_reset: bool
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on H > v_threshold (NIR); False: on >=
    store_v: bool        # write V[t] and I[t] into v_seq and i_seq
    has_grad_v: bool     # an upstream gradient on v_seq is given


# The kinds: (NIR node type, has a synapse, leaks, fires, the parameters it reads)
KINDS = {
    "LIF": (False, True, True, ("tau", "r", "v_leak", "v_threshold", "v_reset")),
    "IF": (False, False, True, ("r", "v_threshold", "v_reset")),
    "LI": (False, True, False, ("tau", "r", "v_leak")),
    "CubaLIF": (True, True, True, ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")),
    "CubaLI": (True, True, False, ("tau_syn", "tau_mem", "r", "v_leak", "w_in")),
}


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of every neuron at a time
# ------------------------------------------------------------------------------------------
def euler_forward_reference(x, v_init, i_init, a, c, v_leak, v_threshold, v_reset, b, w_in, alpha, beta, o):
    """x: [T, N, F], v_init, i_init: [N, F], constants [F] -> out, h_seq, v_seq, i_seq [T, N, F],
    v_final, i_final [N, F]."""
    v, i = v_init.copy(), i_init.copy()
    out, h_seq, v_seq, i_seq = (np.empty_like(x) for _ in range(4))
    for t in range(x.shape[0]):
        if o.synapse:
            i = i + b * (-i + w_in * x[t])
        current = i if o.synapse else x[t]
        h = v + a * ((v_leak - v) + c * current) if o.leak else v + c * current
        if o.fires:
            s = fire_reference(h, v_threshold, 1.0, alpha, beta, o)
            v = s * v_reset + (1.0 - s) * h
        else:
            s = v = h
        out[t], h_seq[t], v_seq[t], i_seq[t] = s, h, v, i
    return out, h_seq, v_seq, i_seq, v, i


def euler_backward_reference(grad_out, grad_v, grad_v_final, grad_i_final, h_seq, a, c, v_threshold, v_reset, b,
                             w_in, alpha, beta, o):
    """-> grad_x [T, N, F], grad_v_init, grad_i_init [N, F]."""
    gv, gi = grad_v_final.copy(), grad_i_final.copy()
    grad_x = np.empty_like(h_seq)
    for t in range(h_seq.shape[0] - 1, -1, -1):
        g = gv + grad_v[t] if o.has_grad_v else gv
        h = h_seq[t]
        if o.fires:
            s = fire_reference(h, v_threshold, 1.0, alpha, beta, o)
            gs = grad_out[t] if o.detach_reset else grad_out[t] + g * (v_reset - h)
            gh = g * (1.0 - s) + gs * fire_grad_reference(h, v_threshold, 1.0, alpha, beta, o)
        else:
            gh = g + grad_out[t]
        g_current = gh * a * c if o.leak else gh * c
        if o.synapse:
            g_i = gi + g_current
            grad_x[t] = g_i * b * w_in
            gi = g_i * (1.0 - b)
        else:
            grad_x[t] = g_current
        gv = gh * (1.0 - a) if o.leak else gh
    return grad_x, gv, gi


# ------------------------------------------------------------------------------------------
# Fast: Numba, the samples in parallel, each sample's state in locals across the time loop
# ------------------------------------------------------------------------------------------
@specializable
def euler_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def euler_forward(x, v_init, i_init, a, c, v_leak, v_threshold, v_reset, b, w_in, alpha, beta,
                      out, h_seq, v_seq, i_seq, v_final, i_final, options):
        """Writes out, h_seq, v_seq and i_seq (store_v) [T, N, F], v_final and i_final [N, F]."""
        synapse, leak, fires, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        T, N, F = x.shape
        one = x.dtype.type(1)
        for n in prange(N):
            v = v_init[n].copy()                 # V[t−1]: [F]
            i = i_init[n].copy() if synapse else v_init[n, :0].copy()
            for t in range(T):
                xt, ht, ot = x[t, n], h_seq[t, n], out[t, n]
                for f in range(F):
                    current = xt[f]
                    if synapse:
                        i[f] = i[f] + b[f] * (-i[f] + w_in[f] * xt[f])
                        current = i[f]
                    if leak:
                        ht[f] = v[f] + a[f] * ((v_leak[f] - v[f]) + c[f] * current)
                    else:
                        ht[f] = v[f] + c[f] * current
                    h = ht[f]
                    if fires:
                        s = fire(h, v_threshold[f], one, surrogate, alpha, beta, smooth, strict)
                        v[f] = s * v_reset[f] + (one - s) * h
                        ot[f] = s
                    else:
                        v[f] = h
                        ot[f] = h
                if store_v:
                    v_seq[t, n] = v
                    if synapse:
                        i_seq[t, n] = i
            v_final[n] = v
            if synapse:
                i_final[n] = i
    return euler_forward


@specializable
def euler_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def euler_backward(grad_out, grad_v, grad_v_final, grad_i_final, h_seq, a, c, v_threshold, v_reset, b, w_in,
                       alpha, beta, grad_x, grad_v_init, grad_i_init, options):
        """Writes grad_x [T, N, F], grad_v_init and grad_i_init [N, F]."""
        synapse, leak, fires, detach_reset, surrogate, smooth, strict, store_v, has_grad_v = (
            options if frozen is None else frozen)  # compile.py
        T, N, F = h_seq.shape
        one = h_seq.dtype.type(1)
        for n in prange(N):
            gv = grad_v_final[n].copy()          # dL/dV[t]: [F]
            gi = grad_i_final[n].copy() if synapse else gv[:0].copy()
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, n], grad_out[t, n], grad_x[t, n]
                for f in range(F):
                    g = gv[f] + grad_v[t, n, f] if has_grad_v else gv[f]
                    h = ht[f]
                    if fires:
                        s = fire(h, v_threshold[f], one, surrogate, alpha, beta, smooth, strict)
                        gs = got[f]
                        if not detach_reset:
                            gs += g * (v_reset[f] - h)
                        if wide:   # dS/dH (compile.py); ``wide`` is a constant: one branch is compiled
                            ds_dh = fire_grad_float64(h, v_threshold[f], one, surrogate, alpha, beta)
                        else:
                            ds_dh = fire_grad(h, v_threshold[f], one, surrogate, alpha, beta)
                        gh = g * (one - s) + gs * ds_dh
                    else:
                        gh = g + got[f]
                    g_current = gh * a[f] * c[f] if leak else gh * c[f]
                    if synapse:
                        g_i = gi[f] + g_current
                        gxt[f] = g_i * b[f] * w_in[f]
                        gi[f] = g_i * (one - b[f])
                    else:
                        gxt[f] = g_current
                    gv[f] = gh * (one - a[f]) if leak else gh
            grad_v_init[n] = gv
            if synapse:
                grad_i_init[n] = gi
    return euler_backward


# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class EulerNeuron(BaseNeuron):
    """A NIR neuron node (``kind``: "LIF", "IF", "LI", "CubaLIF" or "CubaLI") run by forward Euler at
    step ``dt`` (seconds), with NIR's field names: ``tau``, ``r``, ``v_leak``, ``v_threshold``,
    ``v_reset`` (``tau_syn``, ``tau_mem``, ``w_in`` for the Cuba kinds), each a number or an array
    broadcast over the input's feature shape (its shape must broadcast to the input's ``[...]`` of
    ``[T, N, ...]``). They are buffers (state-dict entries under these names), fixed like refsnn
    LIF's tau. Equations: the module docstring; docs/nir.md §3.

    ``strict`` (default True): fire on H > v_threshold as NIR does; False fires on >= (a graph
    that refsnn exported from a neuron firing on >=). Surrogates as every neuron, except boxcar
    (its argument scale 1/v_threshold is per layer). Input ``[T, N, ...]`` float32/float64; output
    the spikes (LI, CubaLI: the membrane V) of the same shape. Raises ValueError for an unknown
    kind, a missing or extra parameter, non-finite values, dt/τ outside (0, 1] (Euler needs
    dt <= τ) or parameters that do not broadcast together.
    """

    def __init__(self, kind, dt=1e-4, surrogate="sigmoid", alpha=None, beta=1.0, detach_reset=False,
                 smooth=False, strict=True, store_v_seq=False, dtype=np.float32, **parameters):
        if kind not in KINDS:
            raise ValueError(f"unknown NIR neuron kind {kind!r}; choose one of {sorted(KINDS)}")
        self.synapse, self.leak, self.fires, names = KINDS[kind]
        if set(parameters) != set(names):
            raise ValueError(f"NIR {kind} takes the parameters {names}, got {sorted(parameters)}")
        arrays = {}
        for name in names:
            value = np.asarray(parameters[name], dtype=np.float64)
            if not np.all(np.isfinite(value)):
                raise ValueError(f"NIR {kind}: {name} contains NaN or Inf")
            arrays[name] = value
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
        except ValueError:
            raise ValueError(f"NIR {kind}: the parameter shapes "
                             f"{ {k: a.shape for k, a in arrays.items()} } do not broadcast together") from None
        super().__init__(1.0, surrogate, alpha, beta, smooth, strict, store_v_seq)
        if self.surrogate.code == BOXCAR:
            raise ValueError("the boxcar surrogate scales by 1/v_threshold, one number per layer; "
                             "EulerNeuron has a threshold per neuron: choose another surrogate")
        self.kind, self.dt = kind, check_real(dt, "dt", low=0, low_open=True)
        self.detach_reset = check_flag(detach_reset, "detach_reset")
        for name in ("tau", "tau_mem", "tau_syn"):
            if name in arrays and not np.all((self.dt <= arrays[name]) & (arrays[name] > 0)):
                raise ValueError(f"NIR {kind}: {name} must be >= dt = {self.dt:g} (forward Euler with "
                                 f"dt/{name} in (0, 1]), got min {float(arrays[name].min()):g}")
        if self.fires:  # the threshold the tests shape their inputs with (the per-neuron ones are the buffer)
            self.v_threshold = float(np.mean(arrays["v_threshold"]))
        dtype = np.dtype(dtype)
        for name, value in arrays.items():
            self.buffers[name] = np.array(np.broadcast_to(value, shape), dtype=dtype)  # a writable copy
        self.state_names = ("v", "i") if self.synapse else ("v",)

    def rest_value(self, name):
        return 0.0  # I; the membrane's rest is per neuron (_initial_state)

    def _initial_state(self, state, x):
        init = super()._initial_state(state, x)
        if state is None:  # V starts at rest: v_leak (IF: v_reset), the same for every sample
            rest = self.buffers["v_leak" if self.leak else "v_reset"]
            rest = self._per_feature(rest, x.dtype)                     # [F]
            init["v"] = np.tile(rest, self._shape[1])                   # [N·F]
        return init

    def _per_feature(self, array, dtype):
        """A buffer broadcast to the feature shape of the input, flat [F], in ``dtype``."""
        features = self._shape[2:]
        try:
            fits = np.broadcast_shapes(array.shape, features) == tuple(features)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"NIR {self.kind}: parameters of shape {array.shape} do not broadcast to the "
                             f"input's feature shape {tuple(features)}")
        return np.ascontiguousarray(np.broadcast_to(array, features).reshape(-1), dtype=dtype)

    def _options(self, has_grad_v=None):
        forward = has_grad_v is None
        return EulerOptions(self.synapse, self.leak, self.fires, self.detach_reset and not forward,
                            self.surrogate.code, self.smooth, self.strict, self.store_v_seq and forward,
                            bool(has_grad_v))

    def _args(self, dt):
        """a, c, v_leak, v_threshold, v_reset, b, w_in [F] and alpha, beta in dtype ``dt``: formed in
        float64, rounded to the data's dtype, then held in ``dt`` (see BaseNeuron._constant)."""
        p = {name: value.astype(np.float64) for name, value in self.buffers.items()}
        ones = np.ones(1)
        tau = p.get("tau_mem", p.get("tau", ones))
        a = self.dt / tau if self.leak else ones
        c = p["r"] if self.leak else self.dt * p["r"]
        b = self.dt / p["tau_syn"] if self.synapse else ones
        arrays = (a, c, p.get("v_leak", ones), p.get("v_threshold", ones), p.get("v_reset", ones), b,
                  p.get("w_in", ones))
        _, _, alpha, beta = self._surrogate_args(dt)
        return (*(self._per_feature(np.asarray(v, self._dtype), dt) for v in arrays), alpha, beta)

    def _split(self, array):
        return array.reshape(self._shape[0], self._shape[1], -1)  # [T, n] -> [T, N, F]

    def _state_in(self, init, name):
        return init[name].reshape(self._shape[1], -1) if name in init else np.zeros((self._shape[1], 0), self._dtype)

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        o = self._options()
        N = self._shape[1]
        i_seq = seqs.get("i", h_seq)
        i_final = finals.get("i", np.zeros(0, x.dtype))
        euler_forward(o)(self._split(x), self._state_in(init, "v"), self._state_in(init, "i"), *self._args(x.dtype),
                         self._split(spikes), self._split(h_seq), self._split(seqs["v"]), self._split(i_seq),
                         finals["v"].reshape(N, -1), i_final.reshape(N, -1), o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        o = self._options(has_grad_v=grad_v is not None)
        N = self._shape[1]
        a, c, _, v_threshold, v_reset, b, w_in, alpha, beta = self._args(dt)
        grad_v = self._split(grad_v.astype(dt, copy=False)) if grad_v is not None else np.zeros((0, 0, 0), dt)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        grad_init = {name: self._empty("grad_" + name, (h_seq.shape[1],), dt) for name in self.state_names}
        grad_i_final = grad_finals.get("i", np.zeros(0, dt)).astype(dt, copy=False)
        grad_i_init = grad_init.get("i", np.zeros(0, dt))
        euler_backward(o, wide_grad(self.surrogate))(
            self._split(grad_out.astype(dt, copy=False)), grad_v,
            grad_finals["v"].astype(dt, copy=False).reshape(N, -1), grad_i_final.reshape(N, -1),
            self._split(h_seq.astype(dt, copy=False)), a, c, v_threshold, v_reset, b, w_in, alpha, beta,
            self._split(grad_x), grad_init["v"].reshape(N, -1), grad_i_init.reshape(N, -1), o)
        return grad_x, grad_init, {}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o = self._options(has_grad_v=grad_v is not None)
        N = self._shape[1]
        a, c, v_leak, v_threshold, v_reset, b, w_in, alpha, beta = self._args(x.dtype)
        i_init = init["i"].reshape(N, -1) if self.synapse else np.zeros((N, x.shape[1] // N), x.dtype)
        out, h_seq, v_seq, i_seq, v_final, i_final = euler_forward_reference(
            self._split(x), init["v"].reshape(N, -1), i_init, a, c, v_leak, v_threshold, v_reset, b, w_in,
            alpha, beta, o)
        grad_i_final = grad_finals["i"].reshape(N, -1) if self.synapse else np.zeros_like(i_init)
        grad_x, grad_v_init, grad_i_init = euler_backward_reference(
            self._split(grad_out), None if grad_v is None else self._split(grad_v), grad_finals["v"].reshape(N, -1),
            grad_i_final, h_seq, a, c, v_threshold, v_reset, b, w_in, alpha, beta, o)
        flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
        seqs, finals, grads = {"v": flat(v_seq)}, {"v": v_final.reshape(-1)}, {"v": grad_v_init.reshape(-1)}
        if self.synapse:
            seqs["i"], finals["i"], grads["i"] = flat(i_seq), i_final.reshape(-1), grad_i_init.reshape(-1)
        return flat(out), flat(h_seq), seqs, finals, flat(grad_x), grads, {}

    def extra_repr(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.buffers.items())
        return (f"{self.kind}, dt={self.dt:g}, {shapes}, surrogate={self.surrogate!r}"
                + ("" if self.strict else ", strict=False") + (", smooth=True" if self.smooth else ""))


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests run, under one name (tests/test_neuron_buffers.py compiles the
# first one's specialized kernels only); per-neuron values: tests/test_nir.py
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "nir": [
        dict(kind="LIF", dt=1e-4, tau=3e-4, r=1.0, v_leak=0.0, v_threshold=1.0, v_reset=0.0),
        dict(kind="LIF", dt=1e-3, tau=2.5e-3, r=2.5, v_leak=-0.2, v_threshold=0.8, v_reset=-0.3, strict=False,
             surrogate="atan", detach_reset=True),
        dict(kind="IF", dt=1e-4, r=1e4, v_threshold=1.0, v_reset=0.0, surrogate="fast_sigmoid"),
        dict(kind="CubaLIF", dt=1e-4, tau_syn=2e-4, tau_mem=4e-4, r=2.0, v_leak=0.0, v_threshold=0.5, v_reset=0.0,
             w_in=1.5),
    ],
}
