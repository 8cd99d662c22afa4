"""refsnn.threads: no bit of a product depends on the thread count, and set_num_threads is validated.

Every dense product of a layer goes through ``refsnn.threads.matmul``, which computes it in blocks of
output rows or columns (chosen from the shape only), spread over Numba's threads, each block one
single-threaded BLAS call. On the shapes and memory layouts the layers use, the result equals NumPy's
``np.matmul`` on one BLAS thread bit for bit, at every thread count; on any shape, it is the same at
every thread count.
"""
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from refsnn import threads

# (a [M, K], b [K, N], out) of the layers' products in one training step of the small CNN (T·N = 64 here)
# and of VGG-11 (T·N = 8 here): "C" row-major, "F" column-major (a transposed view)
LAYER_PRODUCTS = [
    ((1568, 288), "C", (288, 64), "F", "C"),       # conv forward: cols · Wrᵀ (rows split)
    ((288, 1568), "F", (1568, 64), "C", "C"),      # conv weight gradient: colsᵀ · G
    ((1568, 64), "C", (64, 288), "C", "C"),        # conv input gradient: G · Wr, into the cols buffer
    ((2048, 576), "C", (576, 128), "F", "C"),
    ((576, 2048), "F", (2048, 128), "C", "C"),
    ((64, 27), "C", (27, 8192), "C", "C"),         # first conv: W · cols (columns split)
    ((64, 8192), "C", (8192, 27), "F", "C"),
    ((128, 512), "C", (512, 2304), "C", "C"),      # columns split
    ((2304, 128), "F", (128, 512), "C", "C"),
    ((512, 1152), "C", (1152, 256), "F", "F"),     # an output written through a transposed view
    ((8, 3136), "C", (3136, 10), "F", "C"),        # linear forward: X · Wᵀ (too small to split)
    ((10, 8), "F", (8, 3136), "C", "C"),           # linear weight gradient: Gᵀ · X
]


def operand(shape, order, dtype, rng):
    """A [rows, cols] array laid out row-major ("C") or as the transposed view of a row-major array ("F")."""
    if order == "C":
        return rng.standard_normal(shape).astype(dtype)
    return rng.standard_normal(shape[::-1]).astype(dtype).T


@pytest.fixture(params=sorted({1, 2, numba.config.NUMBA_NUM_THREADS}))
def thread_count(request):
    previous = threads.get_num_threads()
    if request.param > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"NUMBA_NUM_THREADS is {numba.config.NUMBA_NUM_THREADS}")
    threads.set_num_threads(request.param)
    yield request.param
    threads.set_num_threads(previous)


def single_threaded_numpy(a, b):
    with threadpool_limits(1):   # OpenBLAS's own multithreaded gemm rounds differently from its 1-thread one
        return np.matmul(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_shape, a_order, b_shape, b_order, out_order", LAYER_PRODUCTS)
def test_matmul_equals_numpy_bit_for_bit_on_the_layer_products(a_shape, a_order, b_shape, b_order, out_order, dtype,
                                                               thread_count):
    rng = np.random.default_rng(0)
    a, b = operand(a_shape, a_order, dtype, rng), operand(b_shape, b_order, dtype, rng)
    expected = single_threaded_numpy(a, b)
    out = operand((a_shape[0], b_shape[1]), out_order, dtype, rng)
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, expected, strict=True)
    result = threads.matmul(a, b)
    assert result.dtype == dtype and result.flags.c_contiguous
    np.testing.assert_array_equal(result, expected, strict=True)


def test_the_layer_products_are_split_both_ways():
    split = [(a[0] >= b[1], threads._blocks(a[0], b[1], a[1]) > 1) for a, _, b, _, _ in LAYER_PRODUCTS]
    assert (True, True) in split and (False, True) in split   # some split by rows, some by columns


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_bit_depends_on_the_thread_count(dtype):
    rng = np.random.default_rng(2)
    previous = threads.get_num_threads()
    counts = range(1, numba.config.NUMBA_NUM_THREADS + 1)
    try:
        for _ in range(12):
            M, K, N = (int(v) for v in rng.integers(1, 1500, 3))
            a = operand((M, K), "CF"[int(rng.integers(2))], dtype, rng)
            b = operand((K, N), "CF"[int(rng.integers(2))], dtype, rng)
            results = []
            for count in counts:
                threads.set_num_threads(count)
                results.append(threads.matmul(a, b))
            for r in results[1:]:
                np.testing.assert_array_equal(r, results[0], strict=True)
            np.testing.assert_allclose(results[0], single_threaded_numpy(a, b), rtol=1e-4 if dtype == np.float32
                                       else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-12)
    finally:
        threads.set_num_threads(previous)


def test_blocks_depend_on_the_shape_only():
    assert threads._blocks(64, 10, 3136) == 1                     # too little work to split
    assert threads._blocks(1568, 64, 288) == threads.MAX_BLOCKS   # 29 M multiply-adds
    assert threads._blocks(12, 8, 1 << 30) == 1                   # too few rows and columns for two blocks
    for M, N, K in [(1568, 64, 288), (128, 2304, 512), (37, 5000, 999)]:
        blocks = threads._blocks(M, N, K)
        assert blocks & (blocks - 1) == 0 and blocks <= threads.MAX_BLOCKS
        assert M * N * K // blocks >= threads.SPLIT_MIN_WORK and max(M, N) // blocks >= threads.BLOCK_ALIGN


@pytest.mark.parametrize("case", ["vector", "column", "empty", "inner 0", "strided", "int", "mixed", "aliased",
                                  "broadcast"])
def test_matmul_falls_back_to_numpy_where_gemm_cannot(case):
    rng = np.random.default_rng(1)
    a, b, out = rng.standard_normal((40, 30)), rng.standard_normal((30, 20)), None
    if case == "vector":
        a = a[:1]
    elif case == "column":
        b = b[:, :1]
    elif case == "empty":
        a = a[:0]
    elif case == "inner 0":
        a, b = a[:, :0], b[:0]
    elif case == "strided":   # no unit stride on either axis
        a = rng.standard_normal((80, 90))[::2, ::3]
    elif case == "int":
        a, b = np.arange(12).reshape(3, 4), np.arange(8).reshape(4, 2)
    elif case == "mixed":
        a = a.astype(np.float32)
    elif case == "aliased":   # out overlaps an input
        a, b = rng.standard_normal((30, 30)), rng.standard_normal((30, 30))
        out = a
    elif case == "broadcast":  # zero strides
        b = np.broadcast_to(rng.standard_normal((1, 20)), (30, 20))
    expected = np.matmul(a, b)
    np.testing.assert_array_equal(threads.matmul(a, b, out=out), expected, strict=True)


def test_set_num_threads_sets_numbas():
    previous = threads.get_num_threads()
    try:
        for count in (1, numba.config.NUMBA_NUM_THREADS):
            threads.set_num_threads(count)
            assert threads.get_num_threads() == numba.get_num_threads() == count
    finally:
        threads.set_num_threads(previous)


@pytest.mark.parametrize("bad", [0, -1, numba.config.NUMBA_NUM_THREADS + 1, 1.0, 2.5, True, "2", None])
def test_set_num_threads_refuses_what_is_not_a_thread_count(bad):
    """Bools, floats (even 1.0), strings and None are refused; NumPy integers are taken (below)."""
    previous = threads.get_num_threads()
    with pytest.raises(ValueError, match="threads must be an integer from 1 to"):
        threads.set_num_threads(bad)
    assert threads.get_num_threads() == previous


def test_without_numpys_openblas_the_products_use_scipys_blas(monkeypatch):
    # where NumPy is not the PyPI build (no scipy-openblas64 in it), matmul calls SciPy's BLAS through
    # Numba's numba_xxgemm: another build, so equal to np.matmul only to rounding
    monkeypatch.setattr(threads, "_NUMPY_GEMM", None)
    monkeypatch.setitem(threads._state, "blas", None)   # select the BLAS libraries again, SciPy's included
    rng = np.random.default_rng(3)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a, b = operand((1568, 288), "C", dtype, rng), operand((288, 64), "F", dtype, rng)
        np.testing.assert_allclose(threads.matmul(a, b), single_threaded_numpy(a, b), rtol=tol, atol=tol)
        a, b = operand((64, 27), "C", dtype, rng), operand((27, 8192), "C", dtype, rng)
        np.testing.assert_allclose(threads.matmul(a, b), single_threaded_numpy(a, b), rtol=tol, atol=tol)
    from threadpoolctl import threadpool_info
    assert any("scipy.libs" in lib["filepath"] or "scipy" in lib["filepath"] for lib in threadpool_info()
               if lib["user_api"] == "blas")


def layer_products(numpy_blas):
    """matmul of every LAYER_PRODUCTS case in both dtypes, through NumPy's BLAS or (``numpy_blas`` False)
    SciPy's through numba_xxgemm."""
    if not numpy_blas:
        threads._NUMPY_GEMM, threads._state["blas"] = None, None
    rng = np.random.default_rng(4)
    return [threads.matmul(operand(a_shape, a_order, dtype, rng), operand(b_shape, b_order, dtype, rng))
            for a_shape, a_order, b_shape, b_order, _ in LAYER_PRODUCTS for dtype in (np.float32, np.float64)]


@pytest.mark.parametrize("numpy_blas", [True, False])
def test_pure_python_mode_computes_the_same_products(numpy_blas, monkeypatch, tmp_path):
    # NUMBA_DISABLE_JIT=1 calls the same ?gemm on the same blocks through ctypes (no Numba intrinsic)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import numpy as np; "
              f"from test_threads import layer_products; np.savez({str(tmp_path / 'p.npz')!r}, "
              f"*layer_products({numpy_blas}))")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setattr(threads, "_NUMPY_GEMM", threads._NUMPY_GEMM)
    monkeypatch.setitem(threads._state, "blas", threads._state["blas"])
    compiled = layer_products(numpy_blas)
    with np.load(tmp_path / "p.npz") as python:
        for i, expected in enumerate(compiled):
            np.testing.assert_array_equal(python[f"arr_{i}"], expected, strict=True)


@pytest.mark.parametrize("first", ["numpy", "torch"])
def test_numbas_threads_are_not_the_openmp_runtime_loaded_first(first):
    # torch's libgomp, loaded before refsnn, has its idle threads spin: refsnn puts OpenMP last in
    # Numba's threading-layer priority, whatever was imported first
    if first == "torch":
        pytest.importorskip("torch")
    script = (f"import {first}\nimport numba\nimport refsnn\nrefsnn.threads.set_num_threads(1)\n"
              "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    layer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                           check=True).stdout.split()[-1]
    assert layer in ("tbb", "workqueue")


def test_set_num_threads_takes_numpy_integers():
    previous = threads.get_num_threads()
    try:
        threads.set_num_threads(np.int64(1))
        assert threads.get_num_threads() == 1
    finally:
        threads.set_num_threads(previous)


@pytest.mark.parametrize("a_shape, b_shape, out_shape", [((64, 32), (16, 64), None), ((4096, 256), (256, 256), (2, 256)),
                                                         ((40, 30), (30, 20), (8, 8)), ((5,), (5, 3), None)])
def test_matmul_refuses_shapes_that_do_not_fit(a_shape, b_shape, out_shape):
    """BLAS would read or write outside the arrays: one ValueError, as np.matmul gives (it overwrote
    the heap before the check)."""
    a, b = np.ones(a_shape, np.float32), np.ones(b_shape, np.float32)
    out = None if out_shape is None else np.empty(out_shape, np.float32)
    with pytest.raises(ValueError, match="matmul: "):
        threads.matmul(a, b, out=out)
