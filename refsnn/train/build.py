"""What a config builds: the network, its optimizer and schedule, the input encoding, the loss,
and the trained network a saved run or ternary export holds (a KD teacher, ``refsnn eval``).
"""
import functools

import numpy as np

from .. import distributed
from ..data import get_dataset
from ..encoding import delta, direct, latency, poisson
from ..events import EVENT_DATASETS
from ..losses import ce_count_loss, ce_max_membrane_loss, cross_entropy, l1_rate_sparsity, mse_count_loss, tet_loss
from ..models import build_network, skip_input_gradient
from ..optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from ..quant import load_ternary, ternarize
from .checkpoint import EXPORT_KIND, identify, read_checkpoint, read_export, section
from .config import LOSS_OUTPUTS, TrainConfig, dataset_key

TWIN_SEED_STREAM = 1   # the twin's initialization seed is derived from (seed, TWIN_SEED_STREAM)


def make_optimizer(cfg, model):
    params = list(model.named_parameters())
    if cfg.optimizer == "sgd":
        opt = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = CosineAnnealingLR(opt, T_max=cfg.epochs)
    elif cfg.schedule == "step":
        sched = StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        sched = None
    return opt, sched


POISSON_STREAM, EVAL_POISSON_STREAM = 2, 3  # after Batches' streams 0 (shuffle) and 1 (augment)


def load_data(cfg):
    """``get_dataset``'s tuple for the config's data set (event data binned into ``cfg.T`` frames)."""
    return get_dataset(cfg.dataset, cfg.data_dir, cfg.T, cfg.event_bins, cfg.event_downsample)


def encode(cfg, x, epoch, first):
    """[N, ...] images → [T, N, ...] inputs; ``first`` is the position of ``x[0]`` in the epoch's
    order (in the test set with ``epoch=None``). Poisson draws are per sample: sample ``x[j]``
    draws from ``default_rng([seed, epoch, 2, first + j])`` in training and ``default_rng([seed,
    0, 3, first + j])`` in evaluation, so its spikes do not depend on how a batch is split between
    processes (refsnn.distributed), and a test pass gives the same spikes whenever it runs
    (Batches uses streams 0 and 1).
    Event data: its frames [N, T, ...] are the input, time-major [T, N, ...], as they are."""
    x = x.astype(cfg.dtype, copy=False)
    if dataset_key(cfg.dataset) in EVENT_DATASETS:
        return np.ascontiguousarray(x.swapaxes(0, 1))
    if cfg.encoding == "direct":
        return direct(x, cfg.T)
    if cfg.encoding == "latency":  # linear and normalized: every pixel fires within the T steps (docs/losses.md §1)
        return latency(x, cfg.T, normalize=True, linear=True)
    if cfg.encoding == "delta":
        return delta(direct(x, cfg.T))
    key = [cfg.seed, 0, EVAL_POISSON_STREAM] if epoch is None else [cfg.seed, epoch, POISSON_STREAM]
    return np.concatenate([poisson(x[j:j + 1], cfg.T, np.random.default_rng(key + [first + j]))
                           for j in range(len(x))], axis=1)


def training_loss(cfg):
    """The loss ``cfg.loss`` names, ``(out, y) -> (loss, dL/dout)``: cross-entropy of the
    time-averaged logits, TET, or a loss on the output neuron layer's spikes (ce_count, mse_count,
    plus ``cfg.rate_reg`` times their L1 rate penalty) or membrane (ce_max_membrane): refsnn.losses,
    docs/losses.md §2-4, §6."""
    if cfg.loss == "tet":
        return functools.partial(tet_loss, lam=cfg.tet_lambda, phi=cfg.tet_phi, target=cfg.tet_target)
    if cfg.loss in ("ce", "ce_max_membrane"):
        return {"ce": cross_entropy, "ce_max_membrane": ce_max_membrane_loss}[cfg.loss]
    count = ce_count_loss if cfg.loss == "ce_count" else \
        functools.partial(mse_count_loss, correct_rate=cfg.correct_rate, incorrect_rate=cfg.incorrect_rate)
    if not cfg.rate_reg:
        return count

    def regularized(out, y):  # L + λ·Σ spikes (snnTorch's sum: it grows with the batch size)
        loss, grad = count(out, y)
        penalty, grad_penalty = l1_rate_sparsity(out, cfg.rate_reg)
        # under mpiexec the loop weighs this process's loss by its share of the global batch, right
        # for a mean; the penalty is a sum, so it is divided by the share (1 in one process)
        share = distributed.batch_share()
        return loss + penalty / share, grad + grad_penalty / share
    return regularized


def twin_seed(seed):
    """The twin's initialization seed: derived from the run's ``seed``, independent of it."""
    return int(np.random.SeedSequence([seed, TWIN_SEED_STREAM]).generate_state(1)[0])


def build_model(cfg, info, seed=None, quantize=True):
    """The network ``cfg`` describes for a data set's ``info``, ternary layers included when
    ``cfg.ternary`` and ``quantize``, in the config's dtype."""
    model = build_network(cfg.network, info["input_shape"], info["num_classes"], neuron=cfg.neuron,
                          neuron_options=cfg.neuron_options, seed=cfg.seed if seed is None else seed,
                          output=LOSS_OUTPUTS.get(cfg.loss, "logits"))
    if cfg.ternary and quantize:
        ternarize(model, cfg.ternary_per_channel, cfg.ternary_first, cfg.ternary_last)
    skip_input_gradient(model)  # training never uses dL/d(input)
    return model.to(np.dtype(cfg.dtype))


def load_network(path, info=None):
    """``(cfg, model, sha256)``: the trained base network in a training run directory, its
    checkpoint.json or a ternary export, with the config it was trained with.

    ``info`` (a data set's info dict): the network must have been trained on that data set (and
    the data is then not read again). Ternary layers forward with their ternary weights."""
    kind = identify(path)
    if kind == EXPORT_KIND:
        meta, arrays, sha256 = read_export(path)
    else:
        meta, arrays = read_checkpoint(path, kind="train")
        sha256 = meta["weights_sha256"]
    arrays = section(arrays, "model/")
    cfg = TrainConfig.from_dict(meta["config"])
    if info is None:
        info = load_data(cfg)[4]
    elif dataset_key(cfg.dataset) != info["name"]:
        raise ValueError(f"{path} holds a network trained on {cfg.dataset!r} ({cfg.network}); this run uses "
                         f"{info['name']!r}: the teacher must share the data set and its {info['num_classes']} classes")
    try:
        if kind == EXPORT_KIND:
            model = load_ternary(build_model(cfg, info, quantize=False), arrays)
        else:
            model = build_model(cfg, info).load_state_dict(arrays)
    except ValueError as e:
        raise ValueError(f"{path}: the weights do not fit the network its config describes: {e}") from None
    return cfg, model, sha256


class Teacher:
    """A frozen trained network (eval mode) whose time-averaged logits teach a KD student. It sees
    each batch through its own T and encoding (Poisson draws from its own seed, the epoch and
    the samples' positions)."""

    def __init__(self, path, info):
        self.cfg, self.model, self.sha256 = load_network(path, info)
        self.model.eval()

    def logits(self, x, epoch, first):
        out = self.model.forward(encode(self.cfg, x, epoch, first))
        return out.mean(axis=0, dtype=np.float64).astype(out.dtype)  # time mean [N, classes]; float64 sum over T
