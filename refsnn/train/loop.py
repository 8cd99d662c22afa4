"""The one training loop and the one evaluation, for every kind of run.

``train_epoch`` is one epoch of exact BPTT over a list of batches. It serves plain training,
the twin methods (TNA and DML train two networks on one loss, KD one student against a frozen
teacher: docs/methods.md §1-3) and the fine-tuning of a converted SNN (docs/methods.md §4).
What differs between them is passed in:

* ``loss_and_grads(x, y, step)``: forward every trained network on one batch and return
  ``(loss, out, grads)``: the loss, the base network's output ``out`` [T, N, classes] and
  ``[(network, dL/d its output), ...]``, one pair per trained network;
* ``after_step``: hooks called after every optimizer step (the converter clamps its neurons'
  λ to ≤ 1 there: ``refsnn.neurons.clamp_lam``).

Per batch the order is fixed: the forward passes and the loss, the divergence checks, then for
each network ``zero_grad`` and ``backward`` (with its gradients checked finite), then every
optimizer's ``step``, then the hooks. ``evaluate`` is the test pass: eval mode, no gradient.
"""
import contextlib
import math

import numpy as np
from tqdm import tqdm

from ..losses import accuracy, cross_entropy
from ..module import NonFiniteError


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN/Inf, or the loss exceeded the divergence bound (see
    ``divergence``); the last good checkpoint, if any, is kept."""


DIVERGENCE_FACTOR = 100


def divergence(loss, out, y, bounded="cross-entropy"):
    """What shows that training diverged on a batch (None if nothing does): a training loss that
    is not finite, or a loss above ``DIVERGENCE_FACTOR`` · ln(classes). ln(classes) is the
    cross-entropy of a uniform guess, the order of any of refsnn's losses at initialization; a
    hundred times it means logit margins of hundreds against the right class, which no
    converging run reaches (``--lr 1e6`` does within a few steps).

    ``bounded`` names what ``loss`` is when the bound applies to it (the cross-entropy; the
    TNA/DML loss, both networks' cross-entropies plus a matching term, so a diverging twin is
    seen too). With None it applies to the cross-entropy of the base output ``out`` (TET; KD,
    whose τ²-scaled distillation term may be large by design)."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    value, name = (loss, bounded) if bounded else (cross_entropy(out, y)[0], "cross-entropy")
    classes = out.shape[-1]
    bound = DIVERGENCE_FACTOR * math.log(classes)
    if not value <= bound:
        return f"the {name} is {value:.4g}, above {DIVERGENCE_FACTOR}·ln({classes}) = {bound:.4g}"
    return None


def train_epoch(networks, batches, loss_and_grads, after_step=(), bounded="cross-entropy", what="training",
                epoch=0, desc=None, progress=False):
    """One epoch over ``batches`` (an iterable of ``(x, y)``: images [N, ...], labels [N]).

    ``networks``: ``[(model, optimizer, label), ...]`` in the order of the gradients that
    ``loss_and_grads`` returns; ``label`` names the network in messages (``""``, ``"twin "``).
    ``bounded``: what the divergence bound applies to (see ``divergence``). ``what`` and
    ``epoch`` (from 0) name the epoch in a ``TrainingDiverged`` message. Returns the epoch's
    mean loss and accuracy of the base output, each batch weighted by its size."""
    for model, _, _ in networks:
        model.train()
    total_loss = total_correct = seen = 0.0
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
    for step, (x, y) in enumerate(bar):
        where = f"{what} diverged at epoch {epoch + 1}, step {step}"
        try:
            loss, out, grads = loss_and_grads(x, y, step)
        except NonFiniteError as e:
            raise TrainingDiverged(f"{where}: {e}") from None
        problem = divergence(loss, out, y, bounded)
        if problem:
            raise TrainingDiverged(f"{where}: {problem}")
        for (model, _, label), (_, grad) in zip(networks, grads):
            model.zero_grad()
            model.backward(grad)
            for name, _, g in model.named_parameters():
                if not np.all(np.isfinite(g)):
                    raise TrainingDiverged(f"{where}: the gradient of {label}{name} is not finite")
        for _, optimizer, _ in networks:
            optimizer.step()
        for hook in after_step:
            hook()
        total_loss += loss * len(y)
        total_correct += accuracy(out, y) * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}")
    return total_loss / seen, total_correct / seen


def evaluate(model, batches, encode, loss, meter=None, progress=False):
    """Mean loss and accuracy of ``model`` in eval mode over ``batches`` (``(x, y)`` pairs):
    ``encode(x, step)`` gives the network's input [T, N, ...] for images x, ``loss(out, y)``
    returns ``(value, gradient)`` (the gradient is not used). ``meter`` (an
    ``refsnn.energy.ActivityMeter``) counts activity while it runs."""
    model.eval()
    total_loss = total_correct = 0.0
    seen = 0
    with meter if meter is not None else contextlib.nullcontext():
        for step, (x, y) in enumerate(tqdm(batches, desc="test", disable=not progress, leave=False)):
            out = model.forward(encode(x, step))
            total_loss += loss(out, y)[0] * len(y)
            total_correct += accuracy(out, y) * len(y)
            seen += len(y)
    return total_loss / seen, total_correct / seen
