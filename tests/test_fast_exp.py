"""refsnn.surrogate.fast_exp, the vectorizable exp of every surrogate and of CLIF, against np.exp.

Error in units in the last place (ulp) of the correctly rounded result, measured against exp
computed one precision up (float64 for float32, long double for float64), over a dense sweep of
the whole range (subnormal results included) and the extremes: 0 below the range, inf above it,
NaN in, NaN out.
"""
import numba
import numpy as np
import pytest

from refsnn.surrogate import (_compiled_code_fuses, _fused_multiply_add, _multiply_add, fast_exp, sigmoid_slope,
                              stable_sigmoid)

MAX_ULP = 1.0  # measured: 0.96 (float32), 0.97 (float64)


@numba.njit(cache=True)
def _exp_loop(x, out):
    for i in range(x.size):
        out[i] = fast_exp(x[i])


@numba.njit(cache=True)
def _sigmoid_loop(z, s, d):
    for i in range(z.size):
        s[i] = stable_sigmoid(z[i])
        d[i] = sigmoid_slope(z[i])


def _sweep(dtype):
    lo, hi = (-110.0, 95.0) if dtype == np.float32 else (-760.0, 720.0)
    return np.concatenate([np.linspace(lo, hi, 2_000_001), np.linspace(-1, 1, 100_001),
                           np.geomspace(1e-30, 1e-3, 10_001), -np.geomspace(1e-30, 1e-3, 10_001),
                           np.linspace(-2 * np.log(2), 2 * np.log(2), 100_001)]).astype(dtype)


@pytest.mark.parametrize("dtype,wide", [(np.float32, np.float64), (np.float64, np.longdouble)])
def test_fast_exp_ulp_error_over_the_range(dtype, wide):
    if wide is np.longdouble and np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("no extended-precision long double for the float64 reference")
    x = _sweep(dtype)
    got = np.empty_like(x)
    _exp_loop(x, got)
    assert got.dtype == dtype
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(wide))
        rounded = exact.astype(dtype)
    finite = np.isfinite(rounded) & (rounded != 0)
    ulp = np.spacing(rounded[finite]).astype(wide)  # spacing of the subnormals there too
    err = np.abs(got[finite].astype(wide) - exact[finite]) / ulp
    assert float(err.max()) <= MAX_ULP, f"max error {float(err.max()):.3f} ulp at x = {x[finite][np.argmax(err)]!r}"
    # where exp rounds to 0 or overflows to inf, so does fast_exp
    np.testing.assert_array_equal(got[~finite], rounded[~finite])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_exp_extremes(dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, info.max, -info.max, 1e4, -1e4,
                  np.log(info.max), np.log(info.max) * 1.0001, np.log(info.smallest_subnormal),
                  np.log(info.smallest_subnormal) * 1.01, np.log(info.tiny)], dtype=dtype)
    got = np.empty_like(x)
    _exp_loop(x, got)
    with np.errstate(over="ignore"):
        expect = np.exp(x.astype(np.longdouble)).astype(dtype)
    assert got[0] == 1 and got[1] == 1
    assert got[2] == np.inf and got[3] == 0 and np.isnan(got[4])
    assert got[5] == np.inf and got[6] == 0 and got[7] == np.inf and got[8] == 0
    # near the overflow and underflow thresholds: the correctly rounded result to 1 ulp, inf and 0 exactly
    for g, e in zip(got[9:], expect[9:]):
        if np.isfinite(e) and e != 0:
            assert abs(float(g) - float(e)) <= float(np.spacing(e)), (g, e)
        else:
            assert g == e, (g, e)
    assert got[10] == np.inf and got[12] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_through_fast_exp_keeps_the_dtype_and_the_tails(dtype):
    z = np.array([-1e4, -200.0, -50.0, -3.0, 0.0, 3.0, 50.0, 200.0, 1e4], dtype=dtype)
    s, d = np.empty_like(z), np.empty_like(z)
    _sigmoid_loop(z, s, d)
    t = numba.from_dtype(dtype)  # float32 in, float32 arithmetic and result (no float64 literal)
    stable_sigmoid(dtype(0.5)), sigmoid_slope(dtype(0.5))
    assert any(sig.args == (t,) and sig.return_type == t for sig in stable_sigmoid.nopython_signatures)
    assert any(sig.args == (t,) and sig.return_type == t for sig in sigmoid_slope.nopython_signatures)
    ref = 1 / (1 + np.exp(-z.astype(np.longdouble)))
    np.testing.assert_allclose(s, ref.astype(dtype), rtol=4 * np.finfo(dtype).eps, atol=0)
    assert s[0] == 0 and s[-1] == 1 and d[0] == 0 and d[-1] == 0
    nan = np.full(1, np.nan, dtype)
    _sigmoid_loop(nan, s[:1], d[:1])
    assert np.isnan(s[0]) and np.isnan(d[0])


def test_pure_python_mode_fuses_multiply_adds_as_the_cpu_does():
    # NUMBA_DISABLE_JIT=1 evaluates exp_float32's multiply-adds with _fused_multiply_add (docs/python_mode.md):
    # a·b + c rounded once, as the FMA instruction the compiled _multiply_add becomes
    f = np.float32
    a = f(1 + 2.0 ** -12)   # a·a = 1 + 2^-11 + 2^-24: halfway between two float32 numbers
    assert _fused_multiply_add(a, a, f(2.0 ** -80)) == f(1 + 2.0 ** -11 + 2.0 ** -23)   # above halfway: up
    assert _fused_multiply_add(a, a, f(-2.0 ** -80)) == f(1 + 2.0 ** -11)               # below: down
    assert _fused_multiply_add(a, a, f(0.0)) == f(1 + 2.0 ** -11)                       # a tie: to even
    if not _compiled_code_fuses():
        pytest.skip("the compiled code does not fuse on this CPU (no FMA)")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 20_000)) * np.exp2(rng.integers(-30, 30, (3, 20_000)))).astype(f)
    x[2, :5000] = -(x[0, :5000] * x[1, :5000])   # cancellation: the result is the product's rounding error
    fused = np.array([_multiply_add(a, b, c) for a, b, c in x.T], f)   # (returned as a Python float: exact)
    emulated = np.array([_fused_multiply_add(a, b, c) for a, b, c in x.T])
    np.testing.assert_array_equal(emulated, fused, strict=True)
    assert np.any(fused[:5000] != 0)   # the compiled one did fuse (an unfused a·b − a·b is 0)
