"""The one training loop and the one evaluation, for every kind of run.

``train_epoch`` is one epoch of exact BPTT over a list of batches. It serves plain training,
the twin methods (TNA and DML train two networks on one loss, KD one student against a frozen
teacher: docs/methods.md §1-3) and the fine-tuning of a converted SNN (docs/methods.md §4).
What differs between them is passed in:

* ``loss_and_grads(x, y, first)``: forward every trained network on one batch and return
  ``(loss, out, grads)``: the loss, the base network's output ``out`` [T, N, classes] and
  ``[(network, dL/d its output), ...]``, one pair per trained network; ``first`` is the
  position of ``x[0]`` in the epoch (random draws per sample are keyed by it);
* ``after_step``: hooks called after every optimizer step (the converter clamps its neurons'
  λ to ≤ 1 there: ``refsnn.neurons.clamp_lam``).

Per batch the order is fixed: the forward passes and the loss, the divergence checks, then for
each network ``zero_grad`` and ``backward`` (with its gradients checked finite), then every
optimizer's ``step``, then the hooks. ``evaluate`` is the test pass: eval mode, no gradient.

Under ``mpiexec`` both are data-parallel (``refsnn.distributed``): each process takes its shard
of every batch, its loss and output gradients are scaled by its share of the batch, and the
loss, the accuracy and every gradient are summed over the processes before they are used.
"""
import contextlib
import math

import numpy as np
from tqdm import tqdm

from .. import distributed
from ..losses import accuracy, cross_entropy
from ..module import NonFiniteError


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN/Inf, or the loss exceeded the divergence bound (see
    ``divergence``); the last good checkpoint, if any, is kept."""


DIVERGENCE_FACTOR = 100


def divergence(loss, out, y, bounded="cross-entropy", cross_entropy_value=None):
    """What shows that training diverged on a batch (None if nothing does): a training loss that
    is not finite, or a loss above ``DIVERGENCE_FACTOR`` · ln(classes). ln(classes) is the
    cross-entropy of a uniform guess, the order of any of refsnn's losses at initialization; a
    hundred times it means logit margins of hundreds against the right class, which no
    converging run reaches (``--lr 1e6`` does within a few steps).

    ``bounded`` names what ``loss`` is when the bound applies to it (the cross-entropy; the
    TNA/DML loss, both networks' cross-entropies plus a matching term, so a diverging twin is
    seen too). With None it applies to the cross-entropy of the base output ``out`` (TET; KD,
    whose τ²-scaled distillation term may be large by design), or to ``cross_entropy_value``
    when given (the global batch's, summed over the processes)."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if bounded:
        value, name = loss, bounded
    else:
        value = cross_entropy(out, y)[0] if cross_entropy_value is None else cross_entropy_value
        name = "cross-entropy"
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
    world = distributed.world()
    check_batches(batches, world)
    for model, _, _ in networks:
        model.train()
    total_loss = total_correct = seen = 0.0
    bar = tqdm(batches, desc=desc, disable=not progress or world.rank != 0, leave=False)
    for step, (x, y) in enumerate(bar):
        where = f"{what} diverged at epoch {epoch + 1}, step {step}"
        n = len(y)
        with distributed.global_batch(n) as (lo, hi):
            x, y = x[lo:hi], y[lo:hi]
            try:
                loss, out, grads = loss_and_grads(x, y, int(seen) + lo)
            except NonFiniteError as e:
                raise TrainingDiverged(f"{where}: {e}") from None
            share = len(y) / n  # the loss is Σ over the global batch / n: this shard's part of it
            ce = cross_entropy(out, y)[0] * share if bounded is None and math.isfinite(loss) else 0.0
            loss, correct, ce = map(float, world.sum(np.array([loss * share, accuracy(out, y) * len(y), ce])))
            problem = divergence(loss, out, y, bounded, ce)
            if problem:
                raise TrainingDiverged(f"{where}: {problem}")
            for (model, _, _), (_, grad) in zip(networks, grads):
                model.zero_grad()
                model.backward(grad * grad.dtype.type(share) if world.size > 1 else grad)
            sum_gradients([model for model, _, _ in networks], world)
        if step == 0 and epoch == 0:
            check_gradient_reaches(networks, grads, world)
        for (model, _, label) in networks:
            for name, _, g in model.named_parameters():
                if not np.all(np.isfinite(g)):
                    raise TrainingDiverged(f"{where}: the gradient of {label}{name} is not finite")
        for _, optimizer, _ in networks:
            optimizer.step()
        for hook in after_step:
            hook()
        total_loss += loss * n
        total_correct += correct
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}")
    return total_loss / seen, total_correct / seen


def check_gradient_reaches(networks, grads, world):
    """After the first step of a run: ValueError when the loss has a gradient on a network's output
    (dL/d out not all zero) but every parameter gradient of that network is exactly zero, so no step
    will ever change it (a run that stays at its initial loss, silently). The usual cause is an output
    neuron layer that never fires with a surrogate that is zero away from its threshold (CLIF's rect).
    A network with any path from the loss to a parameter (any firing, a bias before the output, a
    surrogate with full support) has a nonzero gradient there, so healthy runs never see it. Only the
    first step of epoch 1 is checked: later, momentum or weight decay still move a silent network."""
    for (model, _, label), (_, grad) in zip(networks, grads):
        if not world.sum(np.array([float(np.any(grad != 0))]))[0]:
            continue  # the loss is stationary in the output: nothing to reach the weights
        if all(not np.any(g) for _, _, g in model.named_parameters()):
            raise ValueError(f"no gradient reaches the weights of the {label}network: at the first step every "
                             "parameter gradient is exactly zero, though the loss's gradient on the output is not, "
                             "so training cannot change anything. Most likely the output neurons never fire and "
                             "their surrogate gradient is zero away from the threshold (CLIF's default 'rect'): "
                             "choose a surrogate with full support (e.g. --neuron-options '{\"surrogate\": "
                             "\"atan\"}' where the neuron takes one) or another neuron (--neuron lif)")


def sum_gradients(models, world):
    """Replace every parameter gradient of ``models`` by its sum over the processes
    (``World.sum``: fixed order, one buffer for all of them). One process: nothing to do."""
    if world.size == 1:
        return
    grads = [g for model in models for _, _, g in model.named_parameters()]
    for g, total in zip(grads, world.sums(*grads)):
        g[...] = total


def check_batches(batches, world):
    """Data-parallel runs need a sample for every process in every batch (``refsnn.data.Batches``:
    the last one is the shortest); a ValueError says which batch size fits."""
    if world.size == 1 or not hasattr(batches, "batch_size"):
        return
    n = len(batches.images)
    smallest = min(batches.batch_size, n) if batches.drop_last or n % batches.batch_size == 0 else \
        n % batches.batch_size
    if min(batches.batch_size, n) < world.size:
        raise ValueError(f"the batch size {min(batches.batch_size, n)} (of {n} samples) is smaller than the {world.size} "
                         f"processes: every batch needs a sample for each process; choose a batch size of at least "
                         f"{world.size}, or fewer processes")
    if smallest < world.size:
        raise ValueError(f"a batch of {smallest} samples (of {n} in batches of {batches.batch_size}) cannot be "
                         f"shared by {world.size} processes: choose a batch size that leaves at least {world.size} "
                         "samples in the last batch, or fewer processes")


def evaluate(model, batches, encode, loss, meter=None, progress=False):
    """Mean loss and accuracy of ``model`` in eval mode over ``batches`` (``(x, y)`` pairs):
    ``encode(x, first)`` gives the network's input [T, N, ...] for images x (``first``: the
    position of ``x[0]`` in the test set), ``loss(out, y)`` returns ``(value, gradient)`` (the
    gradient is not used). ``meter`` (an ``refsnn.energy.ActivityMeter``) counts activity while
    it runs.

    Data-parallel, each process evaluates its shard of every batch and the sums are reduced; with a ``meter``
    every process evaluates every sample, so that the meter counts the whole test set."""
    world = distributed.world() if meter is None else distributed.World()
    check_batches(batches, world)
    model.eval()
    total_loss = total_correct = 0.0
    seen = 0
    with meter if meter is not None else contextlib.nullcontext():
        for x, y in tqdm(batches, desc="test", disable=not progress or distributed.world().rank != 0, leave=False):
            n = len(y)
            with distributed.global_batch(n) if world.size > 1 else contextlib.nullcontext((0, n)) as (lo, hi):
                out = model.forward(encode(x[lo:hi], seen + lo))
                batch_loss, correct = map(float, world.sum(np.array([loss(out, y[lo:hi])[0] * (hi - lo),
                                                                     accuracy(out, y[lo:hi]) * (hi - lo)])))
            total_loss += batch_loss
            total_correct += correct
            seen += n
    return total_loss / seen, total_correct / seen
