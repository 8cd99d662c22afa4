"""Threads: one level of parallelism at a time, on one pool of threads, whatever was imported first.

refsnn runs two kinds of parallel work: its Numba kernels and dense matrix products. Both run on
one pool of threads, Numba's, so that only one level of parallelism is ever busy, and that pool is
refsnn's own, whatever was imported first:

* Numba's threading layer: TBB where installed, else Numba's own ``workqueue``; OpenMP (``omp``)
  only when neither loads. Numba's OpenMP layer runs on whatever OpenMP runtime the process loaded
  first: torch's (libgomp), if torch was imported before refsnn, whose idle threads spin (its wait
  policy is read once, when torch loads it). Measured on the small CNN step at 2 threads on a shared
  machine (fresh processes, 6 rounds): torch imported first made refsnn's step 1.8x slower (median
  ratio) with ``omp`` and its earlier Python-pool products, 0.8-1.1x with ``workqueue`` and the
  products on Numba's threads. (``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` in the environment,
  or Numba threads started before refsnn was imported, take precedence.) The ``workqueue`` layer
  must not be entered from two Python threads at once (Numba stops the process): train in one
  thread, or install TBB (``pip install tbb``).
* Matrix products: every product of a layer goes through ``matmul``, which runs it on Numba's
  threads: a ``prange`` over blocks of the output's rows or columns, each block one call of
  single-threaded BLAS (``sgemm``/``dgemm``: NumPy's own OpenBLAS where NumPy is the PyPI build, else
  SciPy's through Numba's ``numba_xxgemm``, the routine Numba's ``np.dot`` calls). The BLAS
  libraries are held at one thread during the call (threadpoolctl, which works at any time), so
  BLAS never starts threads of its own. The blocks depend on the product's shape only, not on the
  thread count, so neither does any bit of the result; on the layers' shapes it equals NumPy's
  (single-threaded) ``np.matmul`` bit for bit (tests/test_threads.py).

``set_num_threads(n)`` is the one way to set refsnn's threads (Numba's kernels and the products);
the default is Numba's (all logical CPUs unless ``NUMBA_NUM_THREADS`` says otherwise).
"""
import contextlib
import os

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

# Numba's threading layer, chosen when Numba starts its threads (on the first parallel kernel): OpenMP
# last, for the reason above. Numba's own default order is tbb, omp, workqueue.
THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]


def _prefer_threads_of_our_own():
    """Put OpenMP last in Numba's threading-layer priority, unless the user chose (environment) or
    Numba's threads are already running (then nothing can change)."""
    from numba.np.ufunc import parallel

    if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ and not parallel._is_initialized:
        numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)


_prefer_threads_of_our_own()

# A product is computed in blocks of its output's rows (or columns), spread over the threads. The blocks
# depend on the shape only: OpenBLAS rounds the edge rows of a block differently depending on the block's
# size, so blocks chosen by the thread count would make the last bits depend on it.
SPLIT_MIN_WORK = 1 << 21   # multiply-adds a block keeps at least: below it the hand-off costs more
BLOCK_ALIGN = 8            # blocks start at multiples of this many rows (columns); at least this many each
# at most this many blocks (a power of two, so that 2, 4, ... threads share them evenly): 4, or more on a
# machine with more than 4 CPUs for Numba
MAX_BLOCKS = 1 << max(2, (numba.config.NUMBA_NUM_THREADS - 1).bit_length())

_KIND = {np.dtype(np.float32): ord("s"), np.dtype(np.float64): ord("d")}
_ONE = {k: np.ones(1, k) for k in _KIND}     # alpha and beta of C = 1·op(A)·op(B) + 0·C, kept alive here
_ZERO = {k: np.zeros(1, k) for k in _KIND}
_state = {"blas": None}


def get_num_threads():
    """Threads refsnn runs on (Numba kernels and matrix products)."""
    return numba.get_num_threads()


def set_num_threads(threads):
    """Run refsnn's Numba kernels and matrix products on ``threads`` threads (1 to Numba's
    ``NUMBA_NUM_THREADS``; a Python or NumPy integer). Raises ValueError outside that range."""
    ok = isinstance(threads, (int, np.integer)) and not isinstance(threads, bool)
    if not ok or not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {numba.config.NUMBA_NUM_THREADS} "
                         f"(NUMBA_NUM_THREADS), got {threads!r}")
    numba.set_num_threads(int(threads))


@contextlib.contextmanager
def _single_threaded_blas():
    """Hold every loaded BLAS (NumPy's, and SciPy's where the products use it) at one thread inside the
    context, and give each its thread count back after: threadpoolctl's controllers, called directly
    (about 1 µs each; ``ThreadpoolController.limit`` costs some 40 µs a product)."""
    if _state["blas"] is None:
        if _NUMPY_GEMM is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba_xxgemm calls: loaded before the selection)
        from threadpoolctl import ThreadpoolController
        _state["blas"] = ThreadpoolController().select(user_api="blas").lib_controllers
    changed = []
    for blas in _state["blas"]:
        threads = blas.get_num_threads()
        if threads != 1:
            blas.set_num_threads(1)
            changed.append((blas, threads))
    try:
        yield
    finally:
        for blas, threads in changed:
            blas.set_num_threads(threads)


def _numpy_gemm():
    """The addresses of ``sgemm`` and ``dgemm`` in the BLAS NumPy calls, where it is NumPy's own
    scipy-openblas64 (the PyPI wheels: Fortran interface, 64-bit integers, ``scipy_?gemm_64_``), so
    that every product rounds exactly as ``np.matmul`` does; else None (then Numba's ``numba_xxgemm``
    is used: SciPy's BLAS, which may be another OpenBLAS build and differ from NumPy's in the last bit)."""
    import ctypes

    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib["user_api"] == "blas" and lib["prefix"] == "libscipy_openblas" and "numpy" in lib["filepath"]:
            try:
                blas = ctypes.CDLL(lib["filepath"])
                return tuple(ctypes.cast(getattr(blas, f"scipy_{k}gemm_64_"), ctypes.c_void_p).value for k in "sd")
            except (OSError, AttributeError):
                pass
    return None


_NUMPY_GEMM = _numpy_gemm()
# The kernels below call these two names when NumPy's BLAS was found; otherwise they never call them,
# but the names must still resolve when the (cached) kernels load: a do-nothing stand-in is registered.
_STANDIN = None
if _NUMPY_GEMM is None:
    import ctypes as _ctypes
    _STANDIN = _ctypes.CFUNCTYPE(None)(lambda: None)
    _NUMPY_GEMM_SYMBOLS = (_ctypes.cast(_STANDIN, _ctypes.c_void_p).value,) * 2
else:
    _NUMPY_GEMM_SYMBOLS = _NUMPY_GEMM
for _name, _address in zip(("refsnn_numpy_sgemm", "refsnn_numpy_dgemm"), _NUMPY_GEMM_SYMBOLS):
    llvm_binding.add_symbol(_name, _address)


def _blas_gemm_by_ctypes(numpy_blas, kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """``_blas_gemm`` in pure-Python mode (``NUMBA_DISABLE_JIT=1``): the same BLAS routine called with the
    same arguments, through ctypes, so that every block of a product rounds as in the compiled code."""
    import ctypes

    address, i64, char = ctypes.c_void_p, ctypes.c_int64, ctypes.c_char
    if numpy_blas:
        gemm = ctypes.CFUNCTYPE(None, *[address] * 13)(_NUMPY_GEMM[0 if kind == ord("s") else 1])
        by_address = [ctypes.byref(v) for v in (char(transa), char(transb), i64(m), i64(n), i64(k))]
        gemm(*by_address, alpha, a, ctypes.byref(i64(lda)), b, ctypes.byref(i64(ldb)), beta, c,
             ctypes.byref(i64(ldc)))
    else:
        from numba import _helperlib
        kinds = [char] * 3 + [i64] * 3 + [address, address, i64, address, i64, address, address, i64]
        xxgemm = ctypes.CFUNCTYPE(ctypes.c_int32, *kinds)(_helperlib.c_helpers["xxgemm"])
        xxgemm(char(kind), char(transa), char(transb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


def _blas_gemm_intrinsic(typingctx, numpy_blas, kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran BLAS ?gemm (kind "s" or "d"; integers in, addresses as integers):
    C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C, column-major, op = "N" or "T";
    from NumPy's BLAS (``numpy_blas``: every argument passed by address, integers 64-bit),
    else through Numba's ``numba_xxgemm`` (SciPy's BLAS)."""
    sig = types.void(numpy_blas, kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        char, address, i64 = ir.IntType(8), ir.IntType(8).as_pointer(), ir.IntType(64)
        use_numpy, kind, *rest = args
        with builder.if_else(builder.icmp_unsigned("!=", use_numpy, use_numpy.type(0))) as (numpy_blas, numba_blas):
            with numpy_blas:
                def by_address(value, ty):
                    slot = cgutils.alloca_once(builder, ty)
                    builder.store(builder.trunc(value, ty) if ty is char else value, slot)
                    return builder.bitcast(slot, address)
                ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = rest
                values = [by_address(ta, char), by_address(tb, char), by_address(m, i64), by_address(n, i64),
                          by_address(k, i64), builder.inttoptr(alpha, address), builder.inttoptr(a, address),
                          by_address(lda, i64), builder.inttoptr(b, address), by_address(ldb, i64),
                          builder.inttoptr(beta, address), builder.inttoptr(c, address), by_address(ldc, i64)]
                fnty = ir.FunctionType(ir.VoidType(), [address] * 13)
                sgemm = cgutils.get_or_insert_function(builder.module, fnty, "refsnn_numpy_sgemm")
                dgemm = cgutils.get_or_insert_function(builder.module, fnty, "refsnn_numpy_dgemm")
                with builder.if_else(builder.icmp_unsigned("==", kind, kind.type(ord("s")))) as (single, double):
                    with single:
                        builder.call(sgemm, values)
                    with double:
                        builder.call(dgemm, values)
            with numba_blas:
                kinds = [char] * 3 + [i64] * 3 + [address, address, i64, address, i64, address, address, i64]
                fnty = ir.FunctionType(ir.IntType(32), kinds)
                xxgemm = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
                builder.call(xxgemm, [builder.trunc(v, t) if t is char else builder.inttoptr(v, t)
                                      if t is address else v for v, t in zip([kind, *rest], kinds)])
        return context.get_dummy_value()

    return sig, codegen


# a Numba intrinsic cannot run as Python: pure-Python mode calls the same routine through ctypes
_blas_gemm = _blas_gemm_by_ctypes if numba.config.DISABLE_JIT else intrinsic(_blas_gemm_intrinsic)


@numba.njit(nogil=True, cache=True)
def _gemm(numpy_blas, kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    _blas_gemm(numpy_blas, kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@numba.njit(nogil=True, cache=True)
def _gemm_block(p, blocks, split_m, step_ab, step_c, numpy_blas, kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta,
                c, ldc):
    """Block ``p`` of ``blocks`` of the column-major product above: of C's rows and op(A)'s rows
    (``split_m``), else of C's and op(B)'s columns, starting at a multiple of BLOCK_ALIGN; it starts
    ``step_ab`` bytes further into A (or B) and ``step_c`` further into C per row (column) before it."""
    total = m if split_m else n
    lo = total * p // blocks // BLOCK_ALIGN * BLOCK_ALIGN
    hi = total if p == blocks - 1 else total * (p + 1) // blocks // BLOCK_ALIGN * BLOCK_ALIGN
    if split_m:
        _blas_gemm(numpy_blas, kind, ta, tb, hi - lo, n, k, alpha, a + lo * step_ab, lda, b, ldb, beta,
                   c + lo * step_c, ldc)
    else:
        _blas_gemm(numpy_blas, kind, ta, tb, m, hi - lo, k, alpha, a, lda, b + lo * step_ab, ldb, beta,
                   c + lo * step_c, ldc)


@numba.njit(parallel=True, nogil=True, cache=True)
def _gemm_blocks(blocks, *args):
    """The ``blocks`` blocks of the product (``_gemm_block``), spread over Numba's threads."""
    for p in numba.prange(blocks):
        _gemm_block(p, blocks, *args)


@numba.njit(nogil=True, cache=True)
def _gemm_blocks_serial(blocks, *args):
    """The same blocks one after the other on the calling thread (one thread: no hand-off to a worker)."""
    for p in range(blocks):
        _gemm_block(p, blocks, *args)


def _blocks(M, N, K):
    """How many blocks a product [M, K] · [K, N] is computed in: the largest power of two that is at most
    MAX_BLOCKS, keeps SPLIT_MIN_WORK multiply-adds and BLOCK_ALIGN rows (columns) in each block. It
    depends on the shape only, never on the thread count, so neither does any bit of the result."""
    limit = min(MAX_BLOCKS, M * N * K // SPLIT_MIN_WORK, max(M, N) // BLOCK_ALIGN)
    blocks = 1
    while 2 * blocks <= limit:
        blocks *= 2
    return blocks


def _layout(x):
    """(row-major?, leading dimension in elements) of 2-D ``x`` for BLAS, or None where BLAS cannot
    read it without a copy (no unit stride, negative or zero strides)."""
    (rows, cols), (s0, s1), e = x.shape, x.strides, x.itemsize
    if (cols == 1 or s1 == e) and s0 % e == 0 and s0 // e >= max(1, cols):
        return True, s0 // e
    if (rows == 1 or s0 == e) and s1 % e == 0 and s1 // e >= max(1, rows):
        return False, s1 // e
    return None


def matmul(a, b, out=None):
    """``a @ b`` for 2-D ``a`` [M, K] and ``b`` [K, N] (any strides), into ``out`` [M, N] if given;
    returns it. Computed in ``_blocks(M, N, K)`` blocks of the output's rows (M >= N) or columns, spread
    over ``get_num_threads()`` of Numba's threads, each block one single-threaded BLAS call.
    Raises ValueError, as ``np.matmul`` does, when the shapes do not fit (BLAS would read or write
    outside the arrays)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected a [M, K] and b [K, N], got shapes {a.shape} and {b.shape}")
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    dtype = np.result_type(a, b)
    if out is None:
        out = np.empty((M, N), dtype=dtype)
    elif out.shape != (M, N):
        raise ValueError(f"matmul: out has shape {out.shape}, expected {(M, N)} for {a.shape} @ {b.shape}")
    la, lb, lc = _layout(a), _layout(b), _layout(out)
    if (dtype not in _KIND or a.dtype != dtype or b.dtype != dtype or out.dtype != dtype or min(M, N) <= 1
            or K == 0 or None in (la, lb, lc) or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        # NumPy's own product for whatever gemm cannot do in place, and for matrix-vector products
        # (NumPy calls gemv there, which rounds differently from gemm)
        with _single_threaded_blas():
            return np.matmul(a, b, out=out)
    # A row-major C [M, N] is the column-major Cᵀ [N, M] = Bᵀ Aᵀ; a column-major C is C = A B.
    # A row-major operand is its column-major transpose ("N" where that is what the product needs).
    if lc[0]:
        first, second, m, n = (b, lb, "N" if lb[0] else "T"), (a, la, "N" if la[0] else "T"), N, M
    else:
        first, second, m, n = (a, la, "T" if la[0] else "N"), (b, lb, "T" if lb[0] else "N"), M, N
    (x, (_, ldx), tx), (y, (_, ldy), ty) = first, second
    blocks = _blocks(M, N, K)
    args = (_NUMPY_GEMM is not None, _KIND[dtype], ord(tx), ord(ty), m, n, K, _ONE[dtype].ctypes.data, x.ctypes.data, ldx,
            y.ctypes.data, ldy, _ZERO[dtype].ctypes.data, out.ctypes.data, lc[1])
    with _single_threaded_blas():
        if blocks == 1:
            _gemm(*args)
        else:   # blocks of the longer of C's axes: rows (and a's rows) or columns (and b's columns)
            axis, operand = (0, a) if M >= N else (1, b)
            split_m = (axis == 0) != lc[0]   # C's rows are the gemm's m only for a column-major C
            run = _gemm_blocks if numba.get_num_threads() > 1 else _gemm_blocks_serial
            run(blocks, split_m, operand.strides[axis], out.strides[axis], *args)
    return out
