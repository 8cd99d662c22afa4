"""How neuron kernels are compiled: one source, a generic and a specialized build.

A kernel reads its options (charge mode, reset kind, surrogate, ...) from a NamedTuple of scalars,
e.g. ``LIFOptions``. ``@specializable`` turns a kernel maker ``make(frozen, wide)`` into
``build(options, wide=False)``, which returns the compiled kernel for those options:

- specialized (``frozen = options``): the options are compile-time constants, dead branches vanish
  and the inner loop is straight-line code, several times faster. One compilation per configuration.
- generic (``frozen = None``): the kernel reads the options passed to it at run time; one
  compilation serves every configuration (the gradient-check matrix, the verifier).

Each kernel's first line picks one and names the options, in the NamedTuple's order:
``charge, decay_input, ... = options if frozen is None else frozen``. ``frozen`` is a plain tuple:
Numba types a captured tuple of ints and bools as literal constants, which fold even inside the
parallel loop's body (a captured NamedTuple is not literal: measured 6-10x slower). Both builds
compile the same source, so they give the same bits (tests/test_neurons.py checks it). Smooth mode
(``options.smooth``) exists for gradient checks, whose matrix spans every configuration, so it
always takes the generic build; ``with generic_kernels():`` selects it for everything inside.

``wide`` (backward kernels): dS/dH in float64 (``surrogate.fire_grad_float64``, for the atan
surrogate) or in the data's dtype (``fire_grad``). It is chosen in Python from the surrogate
(``wide_grad``) and compiled as a constant in both builds, so the generic build (one per ``wide``)
gives bit for bit what the specialized one gives.

Numba's cache keys a closure by its captured values (pickled): capture only plain constants and
NamedTuples of scalars, never a compiled function, or every process compiles again
(tests/test_kernel_cache.py).
"""
import contextlib
import functools

import numba

from ..surrogate import ATAN

# Neurons per parallel work item. Each (block, time step) pays a fixed cost (slices, LLVM's alias
# checks, the vector loop's prologue and epilogue): measured fwd+bwd at [4, 32·16384] float32, 1 and
# 2 threads interleaved, 4096 was 1.14-1.25x faster than 1024 for LIF and 1.08x for CLIF. Kept at
# 1024 for now: tests/test_scale_paths.py sizes its finite-difference checks over several blocks on
# BLOCK, and at 4096 their inputs grow 4x and two of them exceed their (unchanged) tolerance.
BLOCK = 1024

# Every kernel is compiled with error_model="numpy": Python's error model checks each float division
# for a zero divisor and raises, a branch that keeps LLVM from vectorizing the loop (measured: a
# float32 1/x loop 0.8 ns an element scalar). The divisors here (tau > 1, 1 + e with e >= 0, ...) are
# never zero, and IEEE division is what the maths means anyway.
KERNEL_OPTIONS = dict(cache=True, parallel=True, error_model="numpy")

_generic = [0]  # > 0 inside ``generic_kernels()``


@numba.njit(cache=True, inline="always")
def sum_in_order(a):
    """a[0] + a[1] + ... + a[n-1], left to right, for a 1-D float64 array. This is the order of Numba's
    compiled ``a.sum()``; written out, pure-Python mode (NUMBA_DISABLE_JIT=1, where ``a.sum()`` is NumPy's
    pairwise sum) adds in the same order and gives the same bits (docs/python_mode.md)."""
    total = 0.0
    for i in range(a.size):
        total += a[i]
    return total


@contextlib.contextmanager
def generic_kernels():
    """Run every neuron kernel inside on its generic build (tests and verification: one compilation
    serves every configuration they draw)."""
    _generic[0] += 1
    try:
        yield
    finally:
        _generic[0] -= 1


def wide_grad(surrogate):
    """Is dS/dH formed in float64 (the atan surrogate) rather than in the data's dtype?"""
    return surrogate.code == ATAN


def specializable(make):
    """``make(frozen, wide)`` returns a Numba kernel whose last argument is its options and whose first
    line unpacks ``options if frozen is None else frozen``. Returns ``build(options, wide=False)``."""
    compiled = functools.lru_cache(maxsize=None)(make)

    @functools.wraps(make)
    def build(options, wide=False):
        generic = _generic[0] > 0 or options.smooth
        return compiled(None if generic else tuple(options), wide)
    return build
