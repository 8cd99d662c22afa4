"""The converted network's neuron (Datta & Beerel, DATE 2022): IF/LIF with soft reset, a learnable
threshold V_th and leak λ (``lam``), spikes of a learnable amplitude A. docs/bptt.md derives it.

Forward, for t = 0 .. T−1, from V[−1] = 0:

    H[t] = λ·V[t−1] + X[t]                      (λ = 1 is IF)
    S[t] = Θ(u),  u = H[t]/V_th − 1             (boxcar; other surrogates: u = H[t] − V_th)
    V[t] = H[t] − Ŝ[t]·V_th                     (soft reset; Ŝ = S.detach() if detach_reset)
    O[t] = A·S[t]                               (spike amplitude A = b·μ)

Backward (BPTT), reverse time, carrying gV = dL/dV[t] (zero after the last step):

    gS  = A·gO[t] − (gV·V_th unless detach_reset)
    gH  = gV + gS·g'(u)·du/dH                   du/dH = 1/V_th (boxcar), 1
    dL/dX[t] = gH ;  dL/dV[t−1] = λ·gH
    dL/dV_th += gS·g'(u)·du/dV_th − gV·S        du/dV_th = −H/V_th² (boxcar), −1
    dL/dλ    += gH·V[t−1] ;  dL/dA += gO[t]·S

The reset's V_th always passes its gradient (the authors' reset is V_th·(spike as a constant));
detach_reset only stops the one through S.

``variant="authors"``: the fine-tuning rules of the authors' public code (godatta/Ultra-Low-Latency-SNN
at 6179214, models/vgg_tunable_spiking.py:28-55 ``LinearSpike``, :340-350 the layer step;
models/resnet_tunable_spiking.py:39-65). The forward is the one above with

    A = c·b′·V_th                               (tied to the trained threshold; b′ = b/a, the
                                                 calibrated A/V_th; c = 1.3 in their VGG :40, 1.5 in
                                                 their ResNet :51: ``amplitude_factor``)
    S[t] = 1{H[t]/V_th − 1 > 0}                 (strict firing, :40)

and its backward is NOT the derivative of that forward (LinearSpike.backward, :44-55): the spike's
gradient ignores A, and the threshold, given to the activation as an input whose gradient is the
upstream gradient itself, collects the sum of dL/dO over the layer's output:

    gS  = gO[t]                                 (exact: A·gO[t])
    gH  = gV + gS·1{|u| < 1}/V_th
    dL/dV_th += gS·1{|u| < 1}·(−H/V_th²) − gV·S + gO[t]    (exact: + gO[t]·S·c·b′ for the tie)

(reset detached, boxcar surrogate: the only settings it takes); dL/dX and dL/dλ follow from gH as
above. With the same upstream gradients, its dL/dX and dL/dλ are the exact ones ÷ A, and
dL/dV_th = (exact − (A/V_th)·Σ gO·S)/A + Σ gO (tests/test_convert_authors.py). docs/methods.md §4.1. The forward saves only H; the backward recomputes S and
V[t−1] from it with the forward's own operations. At T = 2 a per-step NumPy version would make ~10
full-array passes per step; the fused kernel makes one and keeps the membrane in a local array.
"""
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_real
from ..surrogate import BOXCAR, derivative, fire, typed
from .base import BaseNeuron, derivative_reference, fire_reference
from .compile import BLOCK, KERNEL_OPTIONS, specializable, sum_in_order


class ConvertedOptions(NamedTuple):
    surrogate: int       # the surrogate's code (refsnn.surrogate)
    smooth: bool         # fire with the surrogate's φ (gradient checks)
    strict: bool         # fire on H > V_th
    detach_reset: bool
    authors: bool        # the authors' backward (module docstring): gS = gO, dL/dV_th += gO


VARIANTS = ("exact", "authors")
AUTHORS_AMPLITUDE_FACTOR = 1.3  # c in A = c·b′·V_th: their VGG (vgg_tunable_spiking.py:40); ResNet 1.5 (:51)


# ------------------------------------------------------------------------------------------
# Reference: plain NumPy, one time step of all n neurons at a time
# ------------------------------------------------------------------------------------------
def converted_forward_reference(x, v_threshold, scale, lam, amplitude, alpha, beta, o):
    """x: [T, n] -> out (A·S), h_seq [T, n], v_final [n]."""
    v = np.zeros(x.shape[1], x.dtype)
    out, h_seq = np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        h = lam * v + x[t]
        s = fire_reference(h, v_threshold, scale, alpha, beta, o)
        v = h - s * v_threshold
        out[t], h_seq[t] = amplitude * s, h
    return out, h_seq, v


def converted_backward_reference(grad_out, h_seq, v_threshold, scale, lam, amplitude, alpha, beta, o):
    """-> grad_x [T, n], dL/dV_th, dL/dλ, dL/dA (float64 sums)."""
    n = h_seq.shape[1]
    gv = np.zeros(n)
    grad_x, g_th, g_lam, g_amp = np.empty_like(h_seq), np.zeros(n), np.zeros(n), np.zeros(n)
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        s = fire_reference(h, v_threshold, scale, alpha, beta, o)
        v_prev = h_seq[t - 1] - fire_reference(h_seq[t - 1], v_threshold, scale, alpha, beta, o) * v_threshold \
            if t > 0 else np.zeros(n)
        g_amp += grad_out[t] * s
        gs = grad_out[t] if o.authors else grad_out[t] * amplitude  # the authors' surrogate ignores A
        if not o.detach_reset:
            gs = gs - gv * v_threshold
        gu = gs * derivative_reference((h - v_threshold) * scale, alpha, beta, o)
        gh = gv + gu * scale
        du_dth = -h * scale * scale if o.surrogate == BOXCAR else -1.0
        g_th += gu * du_dth - gv * s
        if o.authors:
            g_th += grad_out[t]  # their threshold input's gradient: the upstream gradient itself
        g_lam += gh * v_prev
        grad_x[t] = gh
        gv = gh * lam
    return grad_x, g_th.sum(), g_lam.sum(), g_amp.sum()


# ------------------------------------------------------------------------------------------
# Fast: Numba, blocks of neurons in parallel, the block's membrane in locals across the time loop
# ------------------------------------------------------------------------------------------
@specializable
def converted_forward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def converted_forward(x, v_threshold, scale, lam, amplitude, alpha, beta, out, h_seq, v_final, options):
        """Writes out (A·S), h_seq [T, n] and v_final [n]."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        surrogate, smooth, strict, detach_reset, authors = options if frozen is None else frozen  # compile.py
        T, n_all = x.shape
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, n_all - lo)
            v = np.zeros(n, x.dtype)
            for t in range(T):
                xt, ht, ot = x[t, lo:lo + n], h_seq[t, lo:lo + n], out[t, lo:lo + n]
                for j in range(n):
                    ht[j] = lam * v[j] + xt[j]
                    h = ht[j]  # as stored, which is what the backward sees
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    v[j] = h - s * v_threshold
                    ot[j] = amplitude * s
            v_final[lo:lo + n] = v
    return converted_forward


@specializable
def converted_backward(frozen, wide):
    @numba.njit(**KERNEL_OPTIONS)
    def converted_backward(grad_out, h_seq, v_threshold, scale, lam, amplitude, alpha, beta, grad_x, partials,
                           options):
        """Writes grad_x [T, n] and partials[block] = (dL/dV_th, dL/dλ, dL/dA) of that block."""
        # the options by name, in the NamedTuple's order (frozen: a plain tuple of compile-time constants)
        surrogate, smooth, strict, detach_reset, authors = options if frozen is None else frozen  # compile.py
        T, n_all = h_seq.shape
        boxcar = surrogate == BOXCAR
        for blk in prange((n_all + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, n_all - lo)
            gv = np.zeros(n, h_seq.dtype)
            v_prev = np.empty(n, h_seq.dtype)
            # float64 partial sums per neuron (one scalar accumulator is a serial reduction: no vectorizing)
            g_th, g_lam, g_amp = np.zeros(n), np.zeros(n), np.zeros(n)
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                if t > 0:  # V[t−1] = H[t−1] − S[t−1]·V_th, recomputed as the forward computed it
                    hp = h_seq[t - 1, lo:lo + n]
                    for j in range(n):
                        v_prev[j] = hp[j] - fire(hp[j], v_threshold, scale, surrogate, alpha, beta, smooth,
                                                 strict) * v_threshold
                else:
                    v_prev[:] = 0.0
                for j in range(n):
                    h = ht[j]
                    g = gv[j]
                    s = fire(h, v_threshold, scale, surrogate, alpha, beta, smooth, strict)
                    g_amp[j] += got[j] * s
                    gs = got[j] if authors else got[j] * amplitude  # the authors' surrogate ignores A
                    if not detach_reset:
                        gs -= g * v_threshold
                    gu = gs * derivative(surrogate, (h - v_threshold) * scale, alpha, beta)
                    gh = g + gu * scale
                    du_dth = -h * scale * scale if boxcar else -typed(1.0, h)  # float32 stays float32
                    g_th[j] += gu * du_dth - g * s
                    if authors:
                        g_th[j] += got[j]  # their threshold input's gradient: the upstream gradient itself
                    g_lam[j] += gh * v_prev[j]
                    gxt[j] = gh
                    gv[j] = gh * lam
            partials[blk, 0] = sum_in_order(g_th)
            partials[blk, 1] = sum_in_order(g_lam)
            partials[blk, 2] = sum_in_order(g_amp)
    return converted_backward




# ------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------
class ConvertedNeuron(BaseNeuron):
    """The converted network's neuron: IF/LIF with soft reset, learnable threshold ``threshold``
    (V_th = a·μ) and leak ``lam`` (λ, init 1), spikes of amplitude ``amplitude`` (b·μ; a buffer,
    or a parameter with ``train_amplitude=True``). The module docstring gives the equations.

    Surrogate ``boxcar`` (Datta & Beerel) on u = H/V_th − 1 by default; any refsnn surrogate
    works. ``detach_reset=True`` (the authors' code) stops the gradient through the reset's
    spike. Fires on H ≥ V_th (``strict=True``: H > V_th, as the authors' code). Each forward
    starts from V = 0. Scalars are float32 parameters by default (``dtype``); the input must have
    their dtype (refsnn.module's dtype rule: ``.to(np.float64)`` converts them).

    ``variant="authors"`` (module docstring): the amplitude is tied to the threshold,
    A = c·b′·V_th with b′ = amplitude/threshold as given (buffer ``ratio``) and c =
    ``amplitude_factor`` (default 1.3, their VGG; 1.5 their ResNet), strict firing, and the
    authors' backward, which is not the derivative of its forward. It takes only the boxcar
    surrogate and a detached reset, and neither ``train_amplitude`` nor ``strict=False``;
    ``amplitude_factor`` is for this variant only. ValueError otherwise, or for an unknown variant.
    """

    def __init__(self, threshold=1.0, lam=1.0, amplitude=1.0, surrogate="boxcar", alpha=None, beta=1.0,
                 detach_reset=True, train_amplitude=False, smooth=False, strict=None, variant="exact",
                 amplitude_factor=None, dtype=np.float32):
        threshold = check_real(threshold, "threshold", low=0, low_open=True)
        lam, amplitude = check_real(lam, "lam"), check_real(amplitude, "amplitude")
        if variant not in VARIANTS:
            raise ValueError(f"ConvertedNeuron: variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        self.variant = variant
        if variant == "authors":
            conflicts = [f"{name}={value!r}" for name, value, theirs in
                         (("surrogate", surrogate, "boxcar"), ("detach_reset", detach_reset, True),
                          ("train_amplitude", train_amplitude, False), ("strict", strict, True))
                         if value is not None and value != theirs]
            if conflicts:
                raise ValueError(f"ConvertedNeuron: variant='authors' is the authors' boxcar surrogate, detached "
                                 f"reset, strict firing and tied amplitude; it does not take {', '.join(conflicts)}")
            strict = True
            self.amplitude_factor = check_real(AUTHORS_AMPLITUDE_FACTOR if amplitude_factor is None
                                               else amplitude_factor, "amplitude_factor", low=0, low_open=True)
        elif amplitude_factor is not None:
            raise ValueError("ConvertedNeuron: amplitude_factor is an option of variant='authors' only")
        self._dtype_init = np.dtype(dtype)
        super().__init__(threshold, surrogate, alpha, beta, smooth, bool(strict))  # creates params["threshold"]
        self.add_param("lam", np.array(lam, dtype=dtype))
        if variant == "authors":
            self.buffers["ratio"] = np.array(amplitude / threshold, dtype=dtype)  # b′ = A/V_th as converted
        elif check_flag(train_amplitude, "train_amplitude"):
            self.add_param("amplitude", np.array(amplitude, dtype=dtype))
        else:
            self.buffers["amplitude"] = np.array(amplitude, dtype=dtype)
        self.detach_reset = check_flag(detach_reset, "detach_reset")

    # BaseNeuron keeps ``v_threshold``; here it is a view of the learnable parameter, created by
    # BaseNeuron's own assignment in __init__.
    @property
    def v_threshold(self):
        return float(self.params["threshold"])

    @v_threshold.setter
    def v_threshold(self, value):
        if "threshold" in self.params:
            self.params["threshold"][...] = value
        else:
            self.add_param("threshold", np.array(value, dtype=self._dtype_init))

    @property
    def lam(self):
        return float(self.params["lam"])

    @property
    def amplitude(self):
        if self.variant == "authors":  # V_th·b′·c in their order (vgg_tunable_spiking.py:40)
            return self.v_threshold * float(self.buffers["ratio"]) * self.amplitude_factor
        return float(self.params["amplitude"] if "amplitude" in self.params else self.buffers["amplitude"])

    def _options(self):
        return ConvertedOptions(self.surrogate.code, self.smooth, self.strict, self.detach_reset,
                                self.variant == "authors")

    def forward(self, x, state=None):
        """Spikes of amplitude A, [T, N, ...]; each forward starts from V = 0 (no ``state``)."""
        if state is not None:
            raise ValueError("ConvertedNeuron starts every forward from V = 0; it takes no state")
        if self.store_v_seq:
            raise ValueError("ConvertedNeuron does not record its membrane sequence (store_v_seq)")
        return super().forward(x)

    def backward(self, grad_out, grad_v=None, grad_state=None):
        """dL/dx from dL/d(out); the spikes' amplitude, threshold and lam gradients accumulate in grads."""
        if grad_v is not None or grad_state is not None:
            raise ValueError("ConvertedNeuron.backward takes grad_out only (its membrane and state are not outputs)")
        return super().backward(grad_out)

    def _forward_kernel(self, x, init, spikes, h_seq, seqs, finals):
        th = self.v_threshold
        if not (math.isfinite(th) and th > 0):
            raise ValueError(f"ConvertedNeuron: threshold must be finite and > 0, got {th}")
        if not math.isfinite(self.lam):
            raise ValueError(f"ConvertedNeuron: lam must be finite, got {self.lam}")
        o = self._options()
        th, scale, alpha, beta = self._surrogate_args()
        converted_forward(o)(x, th, scale, self._constant(self.lam, x.dtype), self._constant(self.amplitude, x.dtype),
                             alpha, beta, spikes, h_seq, finals["v"], o)

    def _backward_kernel(self, dt, grad_out, grad_v, grad_finals, h_seq, init, x):
        n = h_seq.shape[1]
        o = self._options()
        th, scale, alpha, beta = self._surrogate_args(dt)
        grad_x = self._empty("grad_x", h_seq.shape, dt)
        partials = np.zeros(((n + BLOCK - 1) // BLOCK, 3), np.float64)
        converted_backward(o)(grad_out.astype(dt, copy=False), h_seq.astype(dt, copy=False), th, scale,
                              self._constant(self.lam, dt), self._constant(self.amplitude, dt), alpha, beta,
                              grad_x, partials, o)
        g_th, g_lam, g_amp = partials.sum(axis=0)
        return grad_x, {}, {"threshold": g_th, "lam": g_lam, "amplitude": g_amp}

    def _reference(self, x, init, grad_out, grad_v, grad_finals):
        o = self._options()
        th, scale, alpha, beta = self._surrogate_args()
        args = (th, scale, self._constant(self.lam, x.dtype), self._constant(self.amplitude, x.dtype), alpha, beta, o)
        out, h_seq, v_final = converted_forward_reference(x, *args)
        grad_x, g_th, g_lam, g_amp = converted_backward_reference(grad_out, h_seq, *args)
        return out, h_seq, {}, {"v": v_final}, grad_x, {}, {"threshold": g_th, "lam": g_lam, "amplitude": g_amp}

    def extra_repr(self):
        return (f"threshold={self.v_threshold:.4g}, lam={self.lam:.4g}, amplitude={self.amplitude:.4g}, "
                f"surrogate={self.surrogate!r}, detach_reset={self.detach_reset}"
                + (", smooth=True" if self.smooth else "") + (", strict=True" if self.strict else "")
                + (f", variant='authors', amplitude_factor={self.amplitude_factor:g}"
                   if self.variant == "authors" else ""))


def clamp_lam(model, max_lam=1.0):
    """λ ← min(λ, max_lam) for every ConvertedNeuron (after each optimizer step: IF stays IF or
    becomes LIF, never an amplifying neuron)."""
    for _, m in model.modules():
        if isinstance(m, ConvertedNeuron):
            np.minimum(m.params["lam"], max_lam, out=m.params["lam"])


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests run
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "converted": [
        dict(threshold=0.8, lam=0.9),
        dict(threshold=1.2, lam=0.7, train_amplitude=True, amplitude=1.5, detach_reset=False),
        dict(threshold=0.8, lam=1.0, surrogate="sigmoid", strict=True),
        dict(threshold=0.7, lam=0.85, amplitude=1.4, variant="authors"),
    ],
}
