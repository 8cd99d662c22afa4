"""The S²NN single-step neuron (Suetake et al., arXiv 2201.10879): an IF neuron run for one step.

    H = X  (V[−1] = 0) ;  S = Θ(H − V_th)      with the ``s2nn`` surrogate:
    g'(u) = α·σ(αu)(1 − σ(αu)) for u < 0,  β/(u + 1) for u ≥ 0

    Backward: dL/dX = dL/dH = dL/dS·g'(u) + dL/dV·(1 − S)   (the hard reset to 0 of lif.py, one step)

It runs on lif.py's IF kernels and references (lif_forward_reference / lif_backward_reference with
T = 1); this file only fixes the options and refuses T > 1.
"""
import numpy as np

from .lif import IF


class SingleStep(IF):
    """S = Θ(X − V_th) with the ``s2nn`` surrogate; the input must have T = 1."""

    max_steps = 1

    def __init__(self, v_threshold=1.0, surrogate="s2nn", alpha=None, beta=1.0, smooth=False, strict=False):
        super().__init__(v_threshold, 0.0, surrogate, alpha, beta, False, smooth, strict)

    def forward(self, x, state=None):
        if isinstance(x, np.ndarray) and x.ndim >= 1 and x.shape[0] != 1:
            raise ValueError(f"SingleStep is a single-step neuron: input must have T = 1, got shape {x.shape}")
        return super().forward(x, state)


# Examples: the configurations the tests and the verifier run
EXAMPLES = {
    "s2nn": [
        dict(),
        dict(v_threshold=0.5, alpha=2.0, beta=0.5),
    ],
}
