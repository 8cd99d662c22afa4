"""refsnn: exact, framework-free training of spiking neural networks in NumPy and Numba."""
__version__ = "0.1.0"

# first: kernel_cache makes every refsnn kernel's Numba cache depend on all of refsnn's Numba code
# (see its docstring); it must run before any module that defines a kernel
from . import kernel_cache
# next: it chooses Numba's threading layer before any refsnn kernel starts Numba's threads (see its
# docstring); refsnn.threads.set_num_threads(n) sets how many threads refsnn runs on
from . import threads
from .module import Module, Sequential
from .neurons import LIF, PLIF, IF, CLIF, SingleStep, make_neuron
from .surrogate import Surrogate


def __getattr__(name):
    """``refsnn.from_nir`` and ``refsnn.to_nir`` (refsnn/nir.py, docs/nir.md), loaded on first use so
    that importing refsnn imports neither the optional ``nir`` package nor h5py."""
    if name in ("from_nir", "to_nir"):
        from . import nir
        return getattr(nir, name)
    raise AttributeError(f"module 'refsnn' has no attribute {name!r}")
