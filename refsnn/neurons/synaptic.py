"""snnTorch's second-order ``Synaptic`` neuron (snnTorch 1.0, ``snntorch/_neurons/synaptic.py``):
a synaptic current I that decays with α feeds a ``Leaky`` membrane that decays with β. The same
option names, defaults and operations as snnTorch; docs/neurons.md §"snnTorch Leaky and Synaptic".

Forward, for t = 0 .. T−1, from I[−1] = U[−1] = 0 (or a given state), α and β clamped to [0, 1]:

    R[t] = Θ(U[t−1] − thr)                          detached
    I[t] = α·I[t−1] + X[t]
    subtract   U[t] = (β·U[t−1] + I[t]) − R[t]·thr
    zero       U[t] = A − A·R[t],  A = β·U[t−1] + I[t]    (the whole membrane, input included)
    none       U[t] = β·U[t−1] + I[t]
    S[t] = Θ(U[t] − thr)                             strict >, as snnTorch

with reset_delay=False applying S[t]'s reset at once, as Leaky does. The kernels, their reference
pair and the backward (BPTT) are Leaky's, with the current I switched on: leaky.py's docstring
gives the recurrence, including dL/dα = Σ gI'·I[t−1] (zero where the clamp holds α).
"""
from .leaky import LeakyFamily, _parameter_array
from ..module import check_flag


class Synaptic(LeakyFamily):
    """snnTorch ``Synaptic`` (1.0): I = α·I + X, U = β·U + I − R·thr (module docstring), spikes
    [T, N, ...]. Options as ``Leaky``'s, plus ``alpha`` (the current's decay, a float or an array
    per neuron, clamped to [0, 1]) and ``learn_alpha``. States ``syn`` (I) and ``mem`` (U, pre-reset
    with reset_delay, post-reset without); ``syn_seq`` and ``mem_seq`` with store_v_seq.
    Raises ValueError / TypeError on a bad option."""

    synaptic = True
    state_names = ("syn", "mem")

    def __init__(self, alpha=0.9, beta=0.8, threshold=1.0, spike_grad="atan", learn_alpha=False, learn_beta=False,
                 learn_threshold=False, reset_mechanism="subtract", reset_delay=True, smooth=False,
                 store_v_seq=False):
        super().__init__(beta, threshold, spike_grad, learn_beta, learn_threshold, reset_mechanism, reset_delay,
                         smooth, store_v_seq)
        self._learn["alpha"] = check_flag(learn_alpha, "learn_alpha")
        self._store("alpha", _parameter_array(alpha, "alpha"))


# ------------------------------------------------------------------------------------------
# Examples: the configurations the tests and the verifier run (each has an exact snnTorch
# counterpart, verify/frameworks.py)
# ------------------------------------------------------------------------------------------
EXAMPLES = {
    "synaptic": [
        dict(),
        dict(alpha=0.5, beta=0.9, reset_mechanism="zero", learn_alpha=True, learn_beta=True, learn_threshold=True),
        dict(alpha=0.8, beta=0.7, threshold=0.75, learn_alpha=True, learn_beta=True, learn_threshold=True,
             spike_grad="fast_sigmoid"),
        dict(alpha=0.9, beta=0.85, reset_delay=False, learn_alpha=True, learn_beta=True, learn_threshold=True),
        dict(alpha=[[0.3], [1.1]], beta=0.9, reset_mechanism="none", learn_alpha=True),
    ],
}
