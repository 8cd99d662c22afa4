"""Threads: one level of parallelism at a time, whatever was imported first.

refsnn runs two kinds of parallel work: its Numba kernels (Numba's thread pool) and dense matrix
products (BLAS). Left to itself, OpenBLAS keeps its worker threads spinning for about 0.1 s after
every product, where they take the cores from the Numba kernels that follow; its only switch
against that (``OPENBLAS_THREAD_TIMEOUT``) is read when NumPy loads, so it depends on whether
refsnn or NumPy (or torch, which imports NumPy) was imported first: measured on the small CNN
step at 2 threads, 157-184 ms with refsnn first, 235-246 ms with NumPy first, 310-350 ms with
torch first.

So refsnn never lets BLAS start threads of its own. Every product of a layer goes through
``matmul``, which limits the BLAS libraries that NumPy loaded to one thread (with threadpoolctl,
which works at any time) and splits the product by rows (or columns) across a pool of Python
threads that sleep while idle; NumPy releases the GIL inside BLAS. The split does not change a
single bit: every output element is the same dot product over the whole inner dimension, in the
same order, whichever thread computes it.

``set_num_threads(n)`` sets both Numba's thread count and the product split; the default is
Numba's (all logical CPUs unless ``NUMBA_NUM_THREADS`` says otherwise).
"""
import concurrent.futures
import contextlib

import numba
import numpy as np

# a product is split only when each part keeps at least this many multiply-adds: below it the hand-off costs more
SPLIT_MIN_WORK = 1 << 21

_state = {"threads": numba.get_num_threads(), "pool": None, "blas": None}


def get_num_threads():
    """Threads refsnn runs on (Numba kernels and matrix products)."""
    return _state["threads"]


def set_num_threads(threads):
    """Run refsnn's Numba kernels and matrix products on ``threads`` threads (1 to Numba's
    ``NUMBA_NUM_THREADS``). Raises ValueError outside that range."""
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {numba.config.NUMBA_NUM_THREADS} "
                         f"(NUMBA_NUM_THREADS), got {threads!r}")
    numba.set_num_threads(threads)
    if threads != _state["threads"] and _state["pool"] is not None:
        _state["pool"].shutdown()
        _state["pool"] = None
    _state["threads"] = threads


def _single_threaded_blas():
    """A context that holds NumPy's BLAS (every OpenBLAS/MKL/BLIS loaded) at one thread."""
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController
        _state["blas"] = ThreadpoolController().select(user_api="blas")
    return _state["blas"].limit(limits=1)


def _pool():
    if _state["pool"] is None:
        _state["pool"] = concurrent.futures.ThreadPoolExecutor(_state["threads"] - 1, "refsnn-matmul")
    return _state["pool"]


def matmul(a, b, out=None):
    """``a @ b`` for 2-D ``a`` [M, K] and ``b`` [K, N] (any strides), into ``out`` [M, N] if given;
    returns it. Computed on ``get_num_threads()`` threads, each running BLAS on one thread."""
    M, N = a.shape[0], b.shape[1]
    if out is None:
        out = np.empty((M, N), dtype=np.result_type(a, b))
    parts = min(_state["threads"], max(1, M * N * a.shape[1] // SPLIT_MIN_WORK))
    with _single_threaded_blas():
        if parts == 1:
            return np.matmul(a, b, out=out)
        if M >= N:   # split the rows of a and out
            edges = [M * p // parts for p in range(parts + 1)]
            jobs = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(edges, edges[1:])]
        else:        # split the columns of b and out
            edges = [N * p // parts for p in range(parts + 1)]
            jobs = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(edges, edges[1:])]
        futures = [_pool().submit(np.matmul, x, y, out=z) for x, y, z in jobs[1:]]
        np.matmul(*jobs[0][:2], out=jobs[0][2])
        for f in futures:
            f.result()
    return out
