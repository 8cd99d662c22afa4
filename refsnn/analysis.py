"""Temporal gradient analysis: how much gradient reaches each time step.

The CLIF paper (Huang et al., ICML 2024, arXiv 2402.04663) argues that in a LIF network the
gradient of the loss with respect to early time steps vanishes: backpropagation through time
carries dL/dV[t] back through the leak (× (1 − 1/tau) per step for LIF) and through the
surrogate, so a signal that matters at step t' reaches step t < t' shrunk geometrically. CLIF's
complementary membrane M adds a second path (through σ(H/tau) and σ(M)) meant to keep it.

What is measured. For each neuron layer, the gradient of the batch-mean loss with respect to the
*input current of that layer at step t*, X[t] (what the neuron's ``backward`` returns), reduced
to its Euclidean norm over the batch and every feature:

    g_layer[t] = ‖∂L/∂X_layer[t]‖₂

This is the quantity that updates the weights feeding that layer at step t (a weight's gradient
is Σ_t (its input at t) × g[t]), so it says directly which steps train the network. It includes
both the gradient a step receives from its own output and what flows back from later steps
through the membrane. The gradient reaching the network's input x[t] is also given (``"input"``):
under direct encoding every step sees the same image, so it shows the same thing one layer
further down, but mixes in the first layer's BatchNorm, which couples steps through its batch
statistics; the per-layer norms are the cleaner measure.
"""
import contextlib
import copy
from collections import OrderedDict

import numpy as np

from .losses import cross_entropy, tet_loss
from .module import check_flag, check_float_array
from .neurons import BaseNeuron



def last_step_cross_entropy(out, y):
    """CE of the last step's logits alone: its gradient reaches step t < T − 1 only through the
    neurons' state (and, in training mode, BatchNorm's batch statistics), so it shows how far
    back in time a signal travels. Returns ``(loss, grad_out)``."""
    loss, grad_last = cross_entropy(out[-1:], y)
    grad = np.zeros_like(out)
    grad[-1] = grad_last[0]
    return loss, grad


LOSSES = {"ce": cross_entropy, "tet": tet_loss, "last": last_step_cross_entropy}


@contextlib.contextmanager
def record_input_grads(model):
    """While active, every neuron layer's ``backward`` also stores what it returns, dL/dX
    ``[T, N, ...]``, in the yielded dict under the layer's qualified name. The wrapped instance
    methods are removed on exit, whatever happens inside the block."""
    recorded = OrderedDict()
    wrapped = []
    for name, m in model.modules():
        if not isinstance(m, BaseNeuron):
            continue
        if "backward" in vars(m):
            raise RuntimeError(f"neuron layer {name!r} already has an instance-level backward (nested recorder?)")

        def recording(*args, _name=name, _backward=m.backward, **kwargs):
            grad_x = _backward(*args, **kwargs)
            recorded[_name] = grad_x.copy()
            return grad_x

        m.backward = recording
        wrapped.append(m)
    try:
        yield recorded
    finally:
        for m in wrapped:
            del m.backward  # back to the class's method


def temporal_gradient_norms(model, x, y, loss="ce", train=True):
    """Per-step gradient norms ``{name: array [T]}`` for one batch (see the module docstring).

    ``model`` maps ``x`` ``[T, N, ...]`` to logits ``[T, N, K]``; ``y`` are integer labels ``[N]``;
    ``loss`` is "ce" (cross-entropy of the time-mean logits, the usual training loss), "tet", or
    "last" (cross-entropy of the last step's logits: only temporal paths reach earlier steps).
    The keys are every neuron layer's qualified name (in ``model.modules()`` order), ``"total"`` (the norm over
    all neuron layers together, sqrt Σ_layers g_layer[t]²) and ``"input"`` (‖∂L/∂x[t]‖).

    ``train=True`` runs the model in training mode (batch statistics in BatchNorm), as during
    training. The analysis runs on a copy: the model's parameters, gradients, running
    statistics, random generators and mode are left untouched.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    x = check_float_array(x, "x", min_ndim=3)
    work = copy.deepcopy(model).train(check_flag(train, "train"))
    for _, m in work.modules():
        if hasattr(m, "needs_input_grad"):
            m.needs_input_grad = True  # a trained model's first conv skips dL/dx (models.skip_input_gradient)
    work.zero_grad()
    out = work.forward(x)
    _, grad_out = LOSSES[loss](out, y)
    with record_input_grads(work) as recorded:
        grad_x = work.backward(grad_out)
    if not recorded:
        raise ValueError("the model has no neuron layer (an ANN has no temporal dynamics to analyze)")
    norms = OrderedDict((name, _step_norms(recorded[name])) for name, _ in work.modules() if name in recorded)
    norms["total"] = np.sqrt(sum(n ** 2 for n in norms.values()))
    norms["input"] = _step_norms(grad_x)
    return norms


def _step_norms(g):
    """‖g[t]‖₂ over everything but the time axis, in float64."""
    g = np.asarray(g, dtype=np.float64)
    return np.sqrt(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))
