"""Surrogate gradients: each a pair of a smooth primitive φ and its derivative g' = φ'.

The forward of a spiking neuron fires Θ(u) = 1{u >= 0}; the backward uses g'(u) in place
of dΘ/du. In *smooth mode* the forward uses φ(u) instead, so that finite differences of the
forward check the hand-written backward exactly (docs/verification.md, tier 1).

| name           | φ(u)                                        | g'(u)                                 |
| atan           | atan(π/2·α·u)/π + 1/2                       | (α/2) / (1 + (π/2·α·u)²)              |
| sigmoid        | σ(α·u)                                      | α·σ(αu)·(1 − σ(αu))                   |
| rect           | clip(α·u + 1/2, 0, 1)                       | α·1{|u| < 1/(2α)}                     |
| fast_sigmoid   | u / (1 + α·|u|) + 1/2       (α = slope)     | 1 / (α·|u| + 1)²                      |
| s2nn           | σ(αu) for u < 0; β·ln(u + 1) + 1/2 for u ≥ 0 | α·σ(αu)(1 − σ(αu)) ; β / (u + 1)      |
| boxcar         | clip(u, −1, 1) + 1/2                        | 1{|u| < 1}, with u = H/V_th − 1       |
| rect_authors   | clip(u/α + 1/2, 0, 1)                       | (1/α)·1{|u| ≤ α/2}                    |

rect_authors: the CLIF authors' ``Rectangle(alpha)`` (HuuYuLong/Complementary-LIF,
modules/surrogate.py:19-21: zero where |u| > α/2, else 1/α): height 1/α and width α, the reverse of
``rect`` (height α, width 1/α: SpikingJelly 2.0's ``surrogate.Rect``), and its window includes the
boundary |u| = α/2 where ``rect``'s excludes it. The two agree only at α = 1, off the boundary
(docs/neurons.md "Surrogate functions").

boxcar: a primitive clip(u,−1,1)/2 + 1/2 would have derivative ½·1{|u|<1}, half the
surrogate the ultra-low-latency authors use; refsnn keeps their g' and takes the primitive
that integrates it (docs/bptt.md §5, docs/neurons.md "Surrogate functions"). Its argument is u = (H − V_th)/V_th, so kernels scale by 1/V_th
(``argument_scale``); every other surrogate takes u = H − V_th.

All functions are Numba-jitted and take the surrogate as an integer code so that one kernel
serves every surrogate. σ is evaluated without overflow for any |α·u| (snnTorch #427).
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .module import check_real

SURROGATES = {"atan": 0, "sigmoid": 1, "rect": 2, "fast_sigmoid": 3, "s2nn": 4, "boxcar": 5, "rect_authors": 6}
DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0, "rect": 1.0, "fast_sigmoid": 25.0, "s2nn": 4.0, "boxcar": 1.0,
                 "rect_authors": 1.0}  # rect_authors: Rectangle(alpha=1.0), Complementary-LIF modules/surrogate.py:26
ATAN, SIGMOID, RECT, FAST_SIGMOID, S2NN, BOXCAR, RECT_AUTHORS = range(7)


def dtype_constant(value, name, dtype):
    """The Python float option ``value`` as a ``dtype`` scalar, the way the kernels receive it;
    ValueError naming the option and the dtype when it is not finite there (1e39 overflows
    float32: the cast gave inf, then NaN or all-zero gradients)."""
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        out = np.dtype(dtype).type(value)
    if not np.isfinite(out):
        raise ValueError(f"{name} = {value:g} is not finite in {np.dtype(dtype).name} "
                         f"(largest {np.finfo(dtype).max:.4g}): choose a smaller value")
    return out


class Surrogate:
    """A surrogate by name with its parameters, validated once on the Python side."""

    def __init__(self, name="sigmoid", alpha=None, beta=1.0):
        if not isinstance(name, str) or name not in SURROGATES:
            raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
        alpha = DEFAULT_ALPHA[name] if alpha is None else check_real(alpha, "surrogate alpha", low=0, low_open=True)
        beta = check_real(beta, "surrogate beta", low=0, low_open=True)
        self.name, self.code, self.alpha, self.beta = name, SURROGATES[name], alpha, beta
        self.constants(np.float64)  # what no dtype holds is refused now; float32 at the first forward

    def constants(self, dtype):
        """``(alpha, beta)`` as ``dtype`` scalars for the kernels; ValueError naming the parameter and
        ``dtype`` when one, or 1/α that rect_authors (its height) and rect (its half-width 1/(2α)) use,
        is not finite there (α = 1e-320 in float64: 1/α = inf)."""
        alpha = dtype_constant(self.alpha, "surrogate alpha", dtype)
        beta = dtype_constant(self.beta, "surrogate beta", dtype)
        if self.code in (RECT, RECT_AUTHORS):
            with np.errstate(over="ignore", divide="ignore"):
                inverse = np.dtype(dtype).type(1) / alpha
            if not np.isfinite(inverse):
                raise ValueError(f"surrogate alpha = {self.alpha:g}: the {self.name} surrogate uses 1/alpha, which is "
                                 f"not finite in {np.dtype(dtype).name} (smallest alpha {1 / np.finfo(dtype).max:.4g})")
        return alpha, beta

    def argument_scale(self, v_threshold):
        """Factor c in u = c·(H − V_th): 1/V_th for boxcar, 1 otherwise."""
        return 1.0 / v_threshold if self.code == BOXCAR else 1.0

    def primitive(self, u):
        return _vectorized(primitive, u, self)

    def derivative(self, u):
        return _vectorized(derivative, u, self)

    def __repr__(self):
        extra = f", beta={self.beta}" if self.code == S2NN else ""
        return f"Surrogate({self.name!r}, alpha={self.alpha}{extra})"


def _vectorized(fn, u, s):
    u = np.asarray(u, dtype=np.float64)
    return np.vectorize(lambda v: fn(s.code, v, s.alpha, s.beta))(u) if u.ndim else fn(s.code, float(u), s.alpha, s.beta)


# ------------------------------------------------------------------------------------------
# A vectorizable exp
# ------------------------------------------------------------------------------------------
# Numba's math.exp is a scalar libm call (no vector math library in this llvmlite), which stops
# LLVM from vectorizing any loop that calls it. fast_exp is plain arithmetic instead:
#
#   n = round(x / ln 2),  r = x − n·ln 2  (Cody–Waite: ln 2 = C1 + C2, n·C1 exact), |r| ≤ ln2/2
#   exp(x) = p(r) · 2^n,  p a polynomial ≈ e^r;  2^n = 2^n1 · 2^n2 (n1 = n >> 1, n2 = n − n1)
#
# each 2^k built from its IEEE bits ((k + bias) << mantissa bits, bit-cast), split in two so
# that subnormal results and overflow to inf come out of the last multiply, correctly rounded.
# x is first clamped to [lo, hi], beyond which exp is 0 or inf anyway; NaN passes the clamp
# (comparisons with NaN are false) and propagates through r. Every step is a select, so loops
# over it vectorize (8 float32 or doubles per AVX-512 instruction). Max error: 1 ulp (float32,
# Cephes' expf polynomial), 1 ulp (float64, Taylor polynomial to degree 13, truncation < 1e-17);
# tests/test_fast_exp.py measures both against np.exp. The float32 exp is compiled with
# fastmath={"contract"} only: each a·b + c may become one fused multiply-add (one rounding instead
# of two), which makes it 1.5x faster here (0.54 -> 0.36 ns an element, AVX-512) and keeps it within
# 1 ulp; no other fast-math license (no reassociation, NaN/inf kept). The float64 exp is not
# contracted: with FMAs its error reached 1.001 ulp (at x = -42.6255), over the 1 ulp it is held to.
# In pure-Python mode (NUMBA_DISABLE_JIT=1) each _multiply_add is an exactly rounded FMA where the
# CPU has them, so fast_exp gives the compiled code's bits (docs/python_mode.md).
@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (an LLVM bitcast: no memory, vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@numba.njit(cache=True, inline="always", fastmath={"contract"})
def _multiply_add(a, b, c):
    """a·b + c in float32, allowed to become one fused multiply-add (exp_float32's contraction)."""
    return a * b + c


def _fused_multiply_add(a, b, c):
    """round(a·b + c) to float32 with one rounding, as an FMA instruction: a·b is exact in float64
    (24 + 24 bits), the float64 sum is rounded to odd (its error, from TwoSum, moves an inexact even
    sum one ulp toward the exact value), and rounding that to float32 is then correctly rounded
    (double rounding through round-to-odd with 29 extra bits: Boldo & Melquiond, 2008)."""
    product, addend = np.float64(a) * np.float64(b), np.float64(c)
    total = product + addend
    shift = total - product
    error = (product - (total - shift)) + (addend - shift)
    if error != 0 and total.view(np.int64) & 1 == 0:
        total = np.nextafter(total, np.inf if error > 0 else -np.inf)
    return np.float32(total)


def _compiled_code_fuses():
    """Whether the compiled code's target CPU has FMA instructions (x86 with the ``fma`` feature, every
    ARM64): then LLVM fuses every ``_multiply_add`` of exp_float32 (its x86 assembly: nine vfmadd)."""
    import platform

    from llvmlite import binding

    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    features = numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    return "+fma" in features.split(",")


if numba.config.DISABLE_JIT:
    # Pure-Python mode (NUMBA_DISABLE_JIT=1): the intrinsics become NumPy bit casts, and the multiply-adds
    # are fused exactly where the compiled code fuses them, so fast_exp gives the compiled code's bits.
    def _float32_from_bits(bits):
        return np.int32(bits).view(np.float32)

    def _float64_from_bits(bits):
        return np.int64(bits).view(np.float64)

    _multiply_add = _fused_multiply_add if _compiled_code_fuses() else _multiply_add


_F32 = np.float32
_I32 = np.int32


@numba.njit(cache=True, fastmath={"contract"})
def exp_float32(x):
    """exp(x) for float32 x in float32 arithmetic (see the comment above)."""
    x = _F32(-104.0) if x < _F32(-104.0) else x  # exp(−104) rounds to 0 in float32
    x = _F32(89.0) if x > _F32(89.0) else x      # exp(89) overflows to inf
    shifter = _F32(12582912.0)                     # 1.5·2^23: t − shifter = x/ln2 rounded to an integer
    nf = _multiply_add(x, _F32(1.44269504088896341), shifter) - shifter
    nf = nf if nf == nf else _F32(0.0)             # NaN: keep the integer conversion defined
    r = _multiply_add(-nf, _F32(-2.12194440e-4), _multiply_add(-nf, _F32(0.693359375), x))
    p = _F32(1.9875691500e-4)
    p = _multiply_add(p, r, _F32(1.3981999507e-3))
    p = _multiply_add(p, r, _F32(8.3334519073e-3))
    p = _multiply_add(p, r, _F32(4.1665795894e-2))
    p = _multiply_add(p, r, _F32(1.6666665459e-1))
    p = _multiply_add(p, r, _F32(5.0000001201e-1))
    p = _multiply_add(p, r * r, r) + _F32(1.0)
    n = _I32(nf)
    n1 = n >> _I32(1)
    n2 = n - n1
    return (p * _float32_from_bits((n1 + _I32(127)) << _I32(23))) * _float32_from_bits((n2 + _I32(127)) << _I32(23))


@numba.njit(cache=True)
def exp_float64(x):
    """exp(x) for float64 x (see the comment above); p(r) = Σ_{k≤13} r^k/k!, Horner."""
    x = -746.0 if x < -746.0 else x  # exp(−746) rounds to 0 in float64
    x = 710.0 if x > 710.0 else x    # exp(710) overflows to inf
    shifter = 6755399441055744.0     # 1.5·2^52
    nf = (x * 1.4426950408889634 + shifter) - shifter
    nf = nf if nf == nf else 0.0
    r = (x - nf * 6.93147180369123816490e-01) - nf * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * (r * r) + r + 1.0
    n = np.int64(nf)
    n1 = n >> 1
    n2 = n - n1
    return (p * _float64_from_bits((n1 + 1023) << 52)) * _float64_from_bits((n2 + 1023) << 52)


def fast_exp(x):
    """exp(x), vectorizable in Numba loops: exp_float32 for float32, exp_float64 otherwise."""
    return exp_float32(x) if isinstance(x, np.float32) else exp_float64(x)


@overload(fast_exp)
def _fast_exp_typed(x):
    if x == types.float32:
        return lambda x: exp_float32(x)
    return lambda x: exp_float64(x)


def typed(value, like):
    """``value`` as a number of ``like``'s float type, so that constants in float32 kernels keep
    the arithmetic in float32 (a Python float literal would promote it to float64)."""
    return np.asarray(like).dtype.type(value)


@overload(typed)
def _typed_impl(value, like):
    nb_type = like if isinstance(like, types.Float) else types.float64
    return lambda value, like: nb_type(value)


# ------------------------------------------------------------------------------------------
# φ and g'. Every constant is typed(value, u): float32 data stays in float32 arithmetic.
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def stable_sigmoid(z):
    """σ(z) without overflow: e = exp(−|z|) ≤ 1, then σ = 1/(1+e) for z ≥ 0 and e/(1+e) below.
    One exp and a select, no branch, so loops over it vectorize."""
    e = fast_exp(-abs(z))
    r = typed(1.0, z) / (typed(1.0, z) + e)
    return r if z >= 0 else e * r


@numba.njit(cache=True, inline="always")
def sigmoid_slope(z):
    """σ'(z) = σ(z)(1 − σ(z)) = e/(1 + e)² with e = exp(−|z|): exact in both tails, where
    σ(1 − σ) would cancel (relative error ε·e^z above threshold, 0 beyond z ≈ 37)."""
    e = fast_exp(-abs(z))
    d = typed(1.0, z) + e
    return e / (d * d)


@numba.njit(cache=True, inline="always")
def primitive(code, u, alpha, beta):
    """φ(u), the smooth stand-in for Θ(u) used in smooth mode."""
    zero, half, one = typed(0.0, u), typed(0.5, u), typed(1.0, u)
    if code == ATAN:  # in float64 (see derivative)
        return math.atan(math.pi / 2 * np.float64(alpha) * np.float64(u)) / math.pi + 0.5
    if code == SIGMOID:
        return stable_sigmoid(alpha * u)
    if code == RECT:
        return min(max(alpha * u + half, zero), one)
    if code == FAST_SIGMOID:
        return u / (one + alpha * abs(u)) + half
    if code == S2NN:
        if u < 0:
            return stable_sigmoid(alpha * u)
        return beta * math.log(u + one) + half
    if code == RECT_AUTHORS:
        return min(max(u / alpha + half, zero), one)
    return min(max(u, -one), one) + half  # BOXCAR


@numba.njit(cache=True, inline="always")
def derivative(code, u, alpha, beta):
    """g'(u) = φ'(u), the surrogate gradient."""
    zero, half, one = typed(0.0, u), typed(0.5, u), typed(1.0, u)
    if code == ATAN:
        # In float64 for any data: atan kernels do not vectorize anyway (libm atan), and the float32
        # dL/dx of a neuron can be a difference of two near-equal terms (B + gS·g', see
        # test_regression_single_step_gradient_cancels_in_float32), which a float64 g' keeps accurate.
        # The casts say so for NumPy too: Numba promotes float32 · float to float64, NumPy (NEP 50) does not.
        alpha, u = np.float64(alpha), np.float64(u)
        z = math.pi / 2 * alpha * u
        return (alpha / 2) / (1.0 + z * z)
    if code == SIGMOID:
        return alpha * sigmoid_slope(alpha * u)
    if code == RECT:
        return alpha if abs(u) < half / alpha else zero
    if code == FAST_SIGMOID:
        d = alpha * abs(u) + one
        return one / (d * d)
    if code == S2NN:
        if u < 0:
            return alpha * sigmoid_slope(alpha * u)
        return beta / (u + one)
    if code == RECT_AUTHORS:  # the boundary |u| = α/2 inside, as the authors' mask |u| > α/2 leaves it
        return one / alpha if abs(u) <= half * alpha else zero
    return one if abs(u) < one else zero  # BOXCAR


@numba.njit(cache=True, inline="always")
def fire(h, v_threshold, scale, code, alpha, beta, smooth, strict):
    """The spike for charged potential h: Θ(u) (or 1{u > 0} if strict), φ(u) in smooth mode."""
    u = (h - v_threshold) * scale
    if smooth:
        return typed(primitive(code, u, alpha, beta), u)
    if strict:
        return typed(1.0, u) if u > 0 else typed(0.0, u)
    return typed(1.0, u) if u >= 0 else typed(0.0, u)


@numba.njit(cache=True, inline="always")
def fire_grad(h, v_threshold, scale, code, alpha, beta):
    """dS/dh = g'(u)·scale, u = (h − V_th)·scale, in the data's dtype: float32 data, float32 vectors
    (measured: the LIF (sigmoid) backward kernel 1.35x faster than with a float64 product)."""
    return typed(derivative(code, (h - v_threshold) * scale, alpha, beta), h) * scale


@numba.njit(cache=True, inline="always")
def fire_grad_float64(h, v_threshold, scale, code, alpha, beta):
    """fire_grad in float64 for any data, which the kernels use for atan: the backward then forms
    gS·g' and the sum it joins (gH = gV·dV/dH + gS·g') in float64, because dL/dx can be a
    near-canceling difference of the two (test_regression_single_step_gradient_cancels_in_float32,
    an atan case; atan's g' is computed in float64 anyway)."""
    return np.float64(derivative(code, (h - v_threshold) * scale, alpha, beta)) * np.float64(scale)
