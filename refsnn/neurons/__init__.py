"""Spiking neurons with fused forward and backward-through-time (BPTT) kernels, one family per file.

Each file reads top to bottom as a lesson: the equations, a plain NumPy reference pair
(``*_forward_reference`` / ``*_backward_reference``), the fast Numba pair with the same names, the
layer class, and the file's EXAMPLES (the configurations the tests and the verifier run).
base.py is the forward/backward template every neuron runs; compile.py builds the kernels.

This is the registry, the one list of neurons. Adding a neuron is its file and one line here.
"""
from . import clif, converted, euler, klif, leaky, lif, lsnn, rleaky, single_step, synaptic
from .base import BaseNeuron
from .clif import CLIF
from .compile import BLOCK, generic_kernels
from .converted import ConvertedNeuron, clamp_lam
from .leaky import Leaky
from .euler import EulerNeuron
from .klif import KLIF
from .lif import IF, LIF, PLIF
from .lsnn import LSNN
from .rleaky import RLeaky
from .single_step import SingleStep
from .synaptic import Synaptic

# The neurons a network is built from, by name (make_neuron, the models, the CLI, the verifier).
NEURONS = {"lif": LIF, "plif": PLIF, "if": IF, "clif": CLIF, "s2nn": SingleStep, "leaky": Leaky, "synaptic": Synaptic,
           "rleaky": RLeaky, "lsnn": LSNN, "klif": KLIF}

# Every neuron layer, with the configurations (constructor options) its file gives as examples.
ALL_NEURONS = {**NEURONS, "converted": ConvertedNeuron, **dict.fromkeys(euler.EXAMPLES, EulerNeuron)}
EXAMPLES = {**lif.EXAMPLES, **clif.EXAMPLES, **single_step.EXAMPLES, **converted.EXAMPLES, **euler.EXAMPLES,
            **leaky.EXAMPLES, **synaptic.EXAMPLES, **rleaky.EXAMPLES, **lsnn.EXAMPLES, **klif.EXAMPLES}


def make_neuron(name, **options):
    """A neuron layer by name ("lif", "plif", "if", "clif", "s2nn") with its options."""
    if name not in NEURONS:
        raise ValueError(f"unknown neuron {name!r}; choose one of {sorted(NEURONS)}")
    return NEURONS[name](**options)


def examples(names=None):
    """``[(label, make)]``: every example configuration of the named neurons (all by default),
    ``label`` e.g. ``"lif-1"`` and ``make()`` a new layer."""
    return [(f"{name}-{i}", lambda name=name, options=options: ALL_NEURONS[name](**options))
            for name in (names or ALL_NEURONS) for i, options in enumerate(EXAMPLES[name])]


__all__ = ["ALL_NEURONS", "BLOCK", "BaseNeuron", "CLIF", "ConvertedNeuron", "EXAMPLES", "EulerNeuron", "IF", "KLIF", "LIF", "LSNN", "Leaky", "NEURONS",
           "PLIF", "RLeaky", "SingleStep", "Synaptic", "clamp_lam", "examples", "generic_kernels", "make_neuron"]
