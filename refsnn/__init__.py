"""refsnn: exact, framework-free training of spiking neural networks in NumPy and Numba."""
__version__ = "0.1.0"

from .module import Module, Sequential
from .neurons import LIF, PLIF, IF, CLIF, SingleStep, make_neuron
from .surrogate import Surrogate
