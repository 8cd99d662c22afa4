"""The converted network's neuron (Datta & Beerel, DATE 2022): IF/LIF with soft reset, a learnable
threshold and leak λ (`lam`), spikes of a learnable amplitude. Moved here from refsnn/convert.py."""
import math

import numba
import numpy as np
from numba import prange

from ..module import check_flag, check_real
from ..surrogate import BOXCAR, derivative, fire, typed
from . import BLOCK, KERNEL_OPTIONS, BaseNeuron, _kernel_factory

# ------------------------------------------------------------------------------------------
# The fine-tuning neuron
#
#   H[t] = λ·V[t−1] + X[t]                      (V[−1] = 0; λ = 1 is IF)
#   S[t] = Θ(u),  u = H[t]/V_th − 1             (boxcar; other surrogates: u = H[t] − V_th)
#   V[t] = H[t] − Ŝ[t]·V_th                     (soft reset; Ŝ = S.detach() if detach_reset)
#   O[t] = A·S[t]                               (spike amplitude A = b·μ)
#
# Backward, reverse time, carrying gV = dL/dV[t] (zero after the last step):
#   gS  = A·gO[t] − (gV·V_th unless detach_reset)
#   gH  = gV + gS·g'(u)·du/dH                   du/dH = 1/V_th (boxcar), 1
#   gX[t] = gH ;  gV[t−1] = λ·gH
#   dL/dV_th += gS·g'(u)·du/dV_th − gV·S        du/dV_th = −H/V_th² (boxcar), −1
#   dL/dλ    += gH·V[t−1] ;  dL/dA += gO[t]·S
# The reset's V_th always passes its gradient (the authors' reset is V_th·(spike as a
# constant)); detach_reset only stops the one through S.
#
# Kernels: one Numba call per layer and pass with the time loop inside, parallel over blocks of
# neurons (as neurons.py). At T = 2 a per-step NumPy version would make ~10 full-array passes per
# step; the fused loop makes one and keeps the membrane in a local array. The forward saves only
# H; the backward recomputes S and V[t−1] from it with the forward's own operations. Each kernel
# is compiled for its options (surrogate code, smooth, strict, detach_reset: ``flags``) as
# compile-time constants, or generically for smooth mode (neurons._kernel_factory).
# ------------------------------------------------------------------------------------------
def _make_converted_forward(spec, wide=False):
    @numba.njit(**KERNEL_OPTIONS)
    def converted_forward(x, v_threshold, scale, lam, amplitude, alpha, beta, out, h_seq, v_final, flags):
        """H = λ·V + X ;  S = Θ(u) ;  V = H − S·V_th ;  O = A·S   (x, out, h_seq [T, M])."""
        code, smooth, strict = flags if spec is None else spec
        T, M = x.shape
        for blk in prange((M + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, M - lo)
            v = np.zeros(n, x.dtype)
            for t in range(T):
                xt, ht, ot = x[t, lo:lo + n], h_seq[t, lo:lo + n], out[t, lo:lo + n]
                for j in range(n):
                    ht[j] = lam * v[j] + xt[j]
                    h = ht[j]  # as stored, which is what the backward sees
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    v[j] = h - s * v_threshold
                    ot[j] = amplitude * s
            v_final[lo:lo + n] = v
    return converted_forward


def _make_converted_backward(spec, wide=False):
    @numba.njit(**KERNEL_OPTIONS)
    def converted_backward(grad_out, h_seq, v_threshold, scale, lam, amplitude, alpha, beta, grad_x, partials,
                           flags):
        """grad_x[t] = dL/dX[t]; partials[block] = (dL/dV_th, dL/dλ, dL/dA) of that block (equations above)."""
        code, smooth, strict, detach_reset = flags if spec is None else spec
        T, M = h_seq.shape
        boxcar = code == BOXCAR
        for blk in prange((M + BLOCK - 1) // BLOCK):
            lo = blk * BLOCK
            n = min(BLOCK, M - lo)
            gv = np.zeros(n, h_seq.dtype)
            v_prev = np.empty(n, h_seq.dtype)
            # float64 partial sums per neuron (one scalar accumulator is a serial reduction: no vectorizing)
            g_th, g_lam, g_amp = np.zeros(n), np.zeros(n), np.zeros(n)
            for t in range(T - 1, -1, -1):
                ht, got, gxt = h_seq[t, lo:lo + n], grad_out[t, lo:lo + n], grad_x[t, lo:lo + n]
                if t > 0:  # V[t−1] = H[t−1] − S[t−1]·V_th, recomputed as the forward computed it
                    hp = h_seq[t - 1, lo:lo + n]
                    for j in range(n):
                        v_prev[j] = hp[j] - fire(hp[j], v_threshold, scale, code, alpha, beta, smooth,
                                                 strict) * v_threshold
                else:
                    v_prev[:] = 0.0
                for j in range(n):
                    h = ht[j]
                    g = gv[j]
                    s = fire(h, v_threshold, scale, code, alpha, beta, smooth, strict)
                    g_amp[j] += got[j] * s
                    gs = got[j] * amplitude
                    if not detach_reset:
                        gs -= g * v_threshold
                    gu = gs * derivative(code, (h - v_threshold) * scale, alpha, beta)
                    gh = g + gu * scale
                    du_dth = -h * scale * scale if boxcar else -typed(1.0, h)  # float32 stays float32
                    g_th[j] += gu * du_dth - g * s
                    g_lam[j] += gh * v_prev[j]
                    gxt[j] = gh
                    gv[j] = gh * lam
            partials[blk, 0] = g_th.sum()
            partials[blk, 1] = g_lam.sum()
            partials[blk, 2] = g_amp.sum()
    return converted_backward


converted_forward_kernel = _kernel_factory(_make_converted_forward)
converted_backward_kernel = _kernel_factory(_make_converted_backward)


class ConvertedNeuron(BaseNeuron):
    """The converted network's neuron: IF/LIF with soft reset, learnable threshold ``threshold``
    (V_th = a·μ) and leak ``lam`` (λ, init 1), spikes of amplitude ``amplitude`` (b·μ; a buffer,
    or a parameter with ``train_amplitude=True``). See the comment above for the equations.

    Surrogate ``boxcar`` (Datta & Beerel) on u = H/V_th − 1 by default; any refsnn surrogate
    works. ``detach_reset=True`` (the authors' code) stops the gradient through the reset's
    spike. Fires on H ≥ V_th (``strict=True``: H > V_th, as the authors' code). Each forward
    starts from V = 0. Scalars are float32 parameters by default (``dtype``); the input must have
    their dtype (refsnn.module's dtype rule: ``.to(np.float64)`` converts them).
    """

    def __init__(self, threshold=1.0, lam=1.0, amplitude=1.0, surrogate="boxcar", alpha=None, beta=1.0,
                 detach_reset=True, train_amplitude=False, smooth=False, strict=False, dtype=np.float32):
        threshold = check_real(threshold, "threshold", low=0, low_open=True)
        lam, amplitude = check_real(lam, "lam"), check_real(amplitude, "amplitude")
        self._dtype_init = np.dtype(dtype)
        super().__init__(threshold, surrogate, alpha, beta, smooth, strict)  # creates params["threshold"]
        self.add_param("lam", np.array(lam, dtype=dtype))
        if check_flag(train_amplitude, "train_amplitude"):
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
        return float(self.params["amplitude"] if "amplitude" in self.params else self.buffers["amplitude"])

    def forward(self, x):
        x2 = self._as_time_major(x)
        th = self.v_threshold
        if not (math.isfinite(th) and th > 0):
            raise ValueError(f"ConvertedNeuron: threshold must be finite and > 0, got {th}")
        if not math.isfinite(self.lam):
            raise ValueError(f"ConvertedNeuron: lam must be finite, got {self.lam}")
        T, M = x2.shape
        dt = x2.dtype
        out, h_seq = self._empty("spikes", x2.shape, dt), self._empty("h_seq", x2.shape, dt)
        v_final = self._empty("v_final", (M,), dt)
        c = dt.type
        th, scale, code, alpha, beta = self._surrogate_args()
        flags = (code, self.smooth, self.strict)
        converted_forward_kernel(flags, self.specialize)(x2, th, scale, c(self.lam), c(self.amplitude), alpha,
                                                         beta, out, h_seq, v_final, flags)
        self._raise_if_nonfinite(v_final, x2, h_seq, {})
        self._saved = (h_seq,)
        self.h_seq = h_seq.reshape(self._shape)
        return out.reshape(self._shape)

    def backward(self, grad_out):
        g = self._check_grad(grad_out, "grad_out")
        (h_seq,) = self._saved
        self._saved = None
        T, M = h_seq.shape
        c = self._dtype.type

        def run(dt):
            th, scale, code, alpha, beta = self._surrogate_args(dt)
            grad_x = self._empty("grad_x", h_seq.shape, dt)
            partials = np.zeros(((M + BLOCK - 1) // BLOCK, 3), np.float64)
            flags = (code, self.smooth, self.strict, self.detach_reset)
            converted_backward_kernel(flags, self.specialize)(
                g.astype(dt, copy=False), h_seq.astype(dt, copy=False), th, scale, dt.type(c(self.lam)),
                dt.type(c(self.amplitude)), alpha, beta, grad_x, partials, flags)
            return grad_x, *partials.sum(axis=0)

        grad_x, g_th, g_lam, g_amp = self._backward(run, h_seq, grad_out=g)
        self.grads["threshold"] += g_th
        self.grads["lam"] += g_lam
        if "amplitude" in self.params:
            self.grads["amplitude"] += g_amp
        return grad_x.reshape(self._shape)

    def extra_repr(self):
        return (f"threshold={self.v_threshold:.4g}, lam={self.lam:.4g}, amplitude={self.amplitude:.4g}, "
                f"surrogate={self.surrogate!r}, detach_reset={self.detach_reset}"
                + (", smooth=True" if self.smooth else "") + (", strict=True" if self.strict else ""))


def clamp_lam(model, max_lam=1.0):
    """λ ← min(λ, max_lam) for every ConvertedNeuron (after each optimizer step: IF stays IF or
    becomes LIF, never an amplifying neuron)."""
    for _, m in model.modules():
        if isinstance(m, ConvertedNeuron):
            np.minimum(m.params["lam"], max_lam, out=m.params["lam"])
