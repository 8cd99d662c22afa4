"""refsnn: exact, framework-free training of spiking neural networks in NumPy and Numba."""
__version__ = "0.1.0"

import os as _os

# One level of parallelism at a time: Numba's OpenMP threads and OpenBLAS's threads both spin
# after their work by default and then steal the cores from each other. Passive waiting (and a
# short OpenBLAS timeout) hands the cores over. Effective only where refsnn is imported before
# NumPy (the CLI, the benchmarks); the user's own settings win.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .module import Module, Sequential
from .neurons import LIF, PLIF, IF, CLIF, SingleStep, make_neuron
from .surrogate import Surrogate
