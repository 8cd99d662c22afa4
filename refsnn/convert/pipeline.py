"""The conversion pipeline on the one training loop: train (or load) the clipped-ReLU DNN,
calibrate, convert, fine-tune, measure; checkpoints of kind ``"convert"`` in the one format
(``refsnn.train.checkpoint``), resumable bit-exactly (docs/methods.md §4).
"""
import dataclasses
import os
import re
import time
from pathlib import Path

import numpy as np

from ..data import Batches, get_dataset
from ..events import EVENT_DATASETS
from ..encoding import direct
from ..energy import SpikeMeter, activity_summary, energy_table
from ..losses import cross_entropy
from ..models import NETWORKS
from ..neurons import ConvertedNeuron, clamp_lam
from ..neurons.converted import AUTHORS_AMPLITUDE_FACTOR, VARIANTS
from ..optim import Adam
from ..surrogate import SURROGATES
from ..train import loop
from ..train.build import build_model
from ..train.checkpoint import META, claim_run_dir, generators, prefixed, read_checkpoint, section, write_checkpoint
from ..train.config import (DATASETS, ConfigError, TrainConfig, changed_options, check_counts, check_field_types,
                            config_from_dict, dataset_key)
from ..train.loop import TrainingDiverged
from ..train.run import Run, load_run
from .calibration import calibrate
from .rewrite import convert


# ------------------------------------------------------------------------------------------
# Evaluation and fine-tuning of a converted SNN: direct encoding, cross-entropy, the one loop
# ------------------------------------------------------------------------------------------
def evaluate_snn(model, images, labels, T, batch_size=256, meter=None, progress=False):
    """Test loss and accuracy of ``model`` (eval mode) with direct encoding over T steps."""
    dtype = next(p for _, p, _ in model.named_parameters()).dtype
    return loop.evaluate(model, Batches(images, labels, batch_size, shuffle=False),
                         lambda x, first: direct(x.astype(dtype, copy=False), T), cross_entropy, meter, progress)


def make_finetune_optimizer(model, lr=1e-4, weight_decay=0.0):
    """Adam with AMSGrad over every parameter (weights, thresholds, λ), as the authors."""
    return Adam(list(model.named_parameters()), lr=lr, weight_decay=weight_decay, amsgrad=True)


def summed_cross_entropy(out, y):
    """The authors' loss: CE on the logits summed over T, ``F.cross_entropy(Σ_t out[t], y)``
    (godatta/Ultra-Low-Latency-SNN at 6179214, snn.py:132-134; the model returns the accumulated
    output membrane, models/vgg_tunable_spiking.py:394-399). It is ``cross_entropy`` (time-averaged
    logits z̄) at T·z̄: softmax temperature 1/T instead of 1. dL/dout[t] = (p − onehot(y))/N for
    every t, p = softmax(Σ_t out[t]). Returns ``(loss, grad_out)``; docs/methods.md §4.1."""
    T = out.shape[0]
    loss, grad = cross_entropy(np.asarray(out, np.float64) * T, y)  # T·x is exact in float64
    return loss, (grad * T).astype(out.dtype)


FINETUNE_LOSSES = {"exact": cross_entropy, "authors": summed_cross_entropy}
AUTHORS_LR_STEPS = (0.6, 0.8, 0.9)  # fractions of the epochs (snn.py:278, 337-340)
AUTHORS_LR_REDUCE = 5               # their script.sh:18 (--lr_reduce 5; snn.py's default is 10)


def authors_lr(lr, epoch, epochs):
    """The authors' step schedule (snn.py:118-121): the learning rate of fine-tuning epoch
    ``epoch`` (1-based) of ``epochs``, ``lr / 5^k`` with k the number of distinct milestones
    int(f·epochs), f in 0.6, 0.8, 0.9, in 1 .. ``epoch`` (their loop divides once at each milestone
    epoch it meets; a milestone 0 is never met). Their loop runs epochs 1 .. epochs−1
    (snn.py:516); refsnn runs 1 .. epochs."""
    milestones = {int(f * epochs) for f in AUTHORS_LR_STEPS}
    return lr / AUTHORS_LR_REDUCE ** sum(1 <= m <= epoch for m in milestones)


def finetune_epoch(model, opt, images, labels, T, batch_size=64, seed=0, epoch=0, progress=False, variant="exact"):
    """One epoch of surrogate-gradient training on the one loop: CE on time-averaged logits
    (``variant="exact"``) or on logits summed over T (``"authors"``: ``summed_cross_entropy``);
    λ is clamped to ≤ 1 after every optimizer step (the hook). The batch order is a function of
    (seed, epoch). Returns (mean loss, accuracy) over the epoch. ValueError for another variant."""
    if variant not in FINETUNE_LOSSES:
        raise ValueError(f"variant must be one of {', '.join(FINETUNE_LOSSES)}; got {variant!r}")
    loss_fn = FINETUNE_LOSSES[variant]
    dtype = next(p for _, p, _ in model.named_parameters()).dtype
    batches = Batches(images, labels, batch_size, shuffle=True, seed=seed)
    batches.set_epoch(epoch)

    def loss_and_grads(x, y, first):
        out = model.forward(direct(x.astype(dtype, copy=False), T))
        loss, grad = loss_fn(out, y)
        return loss, out, [(model, grad)]

    return loop.train_epoch([(model, opt, "")], batches, loss_and_grads, after_step=[lambda: clamp_lam(model)],
                            what="fine-tuning", epoch=epoch, desc=f"fine-tune {epoch + 1}", progress=progress)


# ------------------------------------------------------------------------------------------
# The whole pipeline, with atomic checkpoints
# ------------------------------------------------------------------------------------------
RESUMABLE = ("finetune_epochs", "data_dir", "dnn_dir", "out_dir")  # options a resumed conversion may change
# c in A = c·b′·V_th: the authors use 1.3 and 1.5. The bound keeps A finite in float32 (checked before the
# DNN trains: 1e308 passed the "> 0" check and failed only at the SNN's first forward) for any b′·V_th < 3e36.
MAX_AMPLITUDE_FACTOR = 100.0


@dataclasses.dataclass
class ConvertConfig:
    dataset: str = "mnist-t10k"
    data_dir: str = None
    network: str = "cnn"              # mlp | cnn (any chain-shaped network of refsnn.models)
    dnn_dir: str = None               # an existing clipped-ReLU trainer run to convert (else one is trained)
    dnn_epochs: int = 10
    dnn_lr: float = 1e-2
    T: int = 2
    calibration_samples: int = 1024   # training images for the (a, b) search
    finetune_epochs: int = 5
    finetune_lr: float = 1e-4
    batch_size: int = 64
    dropout: float = 0.1              # after every spiking neuron during fine-tuning
    surrogate: str = "boxcar"
    detach_reset: bool = True
    train_amplitude: bool = False
    variant: str = "exact"            # exact | authors: the fine-tuning rules (docs/methods.md §4.1)
    amplitude_factor: float = None    # authors only: c in A = c·b′·V_th (1.3 when not given, stored; ResNet 1.5)
    seed: int = 0
    dtype: str = "float32"
    out_dir: str = "runs/convert"

    def __post_init__(self):
        check_field_types(self)  # the declared types, as TrainConfig (TOML, flags, checkpoints)
        check_counts(self, ("T", "dnn_epochs", "calibration_samples", "batch_size"), ("finetune_epochs", "seed"))
        for name in ("out_dir", "data_dir", "dnn_dir"):
            if getattr(self, name) == "":
                raise ConfigError(name, f"{name} must not be empty")
        for name in ("dnn_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("network", tuple(NETWORKS)), ("surrogate", tuple(SURROGATES)),
                              ("dtype", ("float32", "float64")), ("variant", VARIANTS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.variant == "authors":
            conflicts = [f"--{'no-' if getattr(self, name) is False else ''}{name.replace('_', '-')}"  # the flag passed
                         for name, theirs in (("surrogate", "boxcar"), ("detach_reset", True), ("train_amplitude", False))
                         if getattr(self, name) != theirs]
            if conflicts:
                raise ConfigError("variant", f"variant 'authors' is the authors' boxcar surrogate, detached reset "
                                             f"and tied amplitude: drop {', '.join(conflicts)}")
            if self.amplitude_factor is None:  # the effective value, stored: a resume passing 1.3 changes nothing
                self.amplitude_factor = AUTHORS_AMPLITUDE_FACTOR
            if not 0 < self.amplitude_factor <= MAX_AMPLITUDE_FACTOR:
                raise ConfigError("amplitude_factor", f"amplitude_factor must be in (0, {MAX_AMPLITUDE_FACTOR:g}], "
                                                      f"got {self.amplitude_factor}")
        elif self.amplitude_factor is not None:
            raise ConfigError("amplitude_factor", "amplitude_factor is an option of variant 'authors' only")
        if dataset_key(self.dataset) not in DATASETS:
            raise ConfigError("dataset", f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        if dataset_key(self.dataset) in EVENT_DATASETS:
            raise ConfigError("dataset", f"{self.dataset} is event data: conversion trains its DNN on images at T = 1 "
                                         "and shows the SNN the same image at every step; event frames are not images")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d)


def dnn_config(cfg):
    """The trainer config of the clipped-ReLU DNN (the ANN twin: T = 1)."""
    return TrainConfig(network=cfg.network, neuron="clipped_relu", dataset=cfg.dataset, data_dir=cfg.data_dir,
                       T=1, epochs=cfg.dnn_epochs, batch_size=cfg.batch_size, lr=cfg.dnn_lr, seed=cfg.seed,
                       dtype=cfg.dtype, out_dir=str(Path(cfg.out_dir) / "dnn"))


def train_or_load_dnn(cfg, progress=False, log=print, overwrite=False):
    """The DNN run: ``cfg.dnn_dir`` if given, else ``out_dir/dnn`` (trained, or resumed if a
    checkpoint with the same config is there; one with another config is refused unless
    ``overwrite``). Raises ValueError if the run's activation is not clipped_relu."""
    if cfg.dnn_dir is not None:
        run = load_run(cfg.dnn_dir)
    else:
        target = dnn_config(cfg)
        run = None
        if os.path.lexists(Path(target.out_dir) / META):
            run = load_run(target.out_dir)
            if run.cfg != target:
                if not overwrite:
                    raise ValueError(f"{target.out_dir} holds a DNN run with another config: pass --overwrite to "
                                     "replace it, or choose another --out-dir")
                run = None
        if run is None:
            run = Run(target, overwrite=overwrite)
        if run.epoch < run.cfg.epochs:
            log(f"training the clipped-ReLU DNN: {run.cfg.network} on {run.cfg.dataset}, {run.cfg.epochs} epochs "
                f"→ {run.cfg.out_dir}")
            run.fit(progress=progress, log=log)
    if run.cfg.neuron != "clipped_relu" or run.cfg.T != 1:
        raise ValueError(f"the DNN run must use neuron='clipped_relu' and T=1 (the ANN twin), got "
                         f"neuron={run.cfg.neuron!r}, T={run.cfg.T}")
    return run


def _build_snn(cfg, dnn_config_dict, scales, info):
    """The converted network's structure (weights come from a state dict): the DNN is rebuilt
    from its trainer config for the data set's ``info``, untrained, and converted with the
    saved scales."""
    dnn = build_model(TrainConfig.from_dict(dnn_config_dict), info)
    return convert_with(cfg, dnn, scales)


def convert_with(cfg, dnn, scales):
    """``convert`` with the options of ``cfg`` (a ConvertConfig); dropout masks from seed (cfg.seed, 4)."""
    return convert(dnn, scales, cfg.dropout, cfg.surrogate, cfg.detach_reset, cfg.train_amplitude,
                   rng=np.random.default_rng([cfg.seed, 4]), variant=cfg.variant,
                   amplitude_factor=cfg.amplitude_factor)


def _read_converted(path):
    """read_checkpoint of a ``refsnn convert`` run. Runs written before the converted neuron's λ was
    named ``lam`` (refsnn 0.1.0 before issue 12) saved it as ``leak``: their arrays are read under the new
    name (the values are the same parameter)."""
    meta, arrays = read_checkpoint(path, kind="convert")
    return meta, {re.sub(r"\.leak(?=\.|$)", ".lam", name): a for name, a in arrays.items()}


def _load_converted(path, data_dir=None):
    """``(cfg, snn, meta, data)`` of a ``refsnn convert`` run, ``data`` its data set
    (``get_dataset``'s tuple) read from ``data_dir`` if given, else from the saved config's."""
    meta, arrays = _read_converted(path)
    cfg = ConvertConfig.from_dict(meta["config"])
    data = get_dataset(meta["results"]["dataset"], cfg.data_dir if data_dir is None else data_dir)
    snn = _build_snn(cfg, meta["results"]["dnn_config"], meta["scales"], data[4])
    snn.load_state_dict(section(arrays, "model/"))
    return cfg, snn, meta, data


def load_converted(path, data_dir=None):
    """``(snn, meta)`` from a ``refsnn convert`` output directory (or its checkpoint.json)."""
    _, snn, meta, _ = _load_converted(path, data_dir)
    return snn, meta


def eval_summary(path, data_dir=None, progress=False):
    """``(test accuracy, report)`` of a ``refsnn convert`` run, as ``refsnn eval`` prints it:
    the converted SNN on its test set, with per-layer activity and energy."""
    cfg, snn, meta, (_, _, test_x, test_y, info) = _load_converted(path, data_dir)
    meter = SpikeMeter(snn)
    loss, acc = evaluate_snn(snn, test_x, test_y, cfg.T, cfg.batch_size, meter=meter, progress=progress)
    lines = [f"converted SNN ({meta['results']['dnn_config']['network']} DNN, IF neurons), {info['name']}, "
             f"after fine-tuning epoch {meta['epoch']}", "",
             f"test accuracy {acc * 100:.2f}%  (loss {loss:.4f}, {len(test_y)} samples, T = {cfg.T})", "",
             energy_table(meter, converted=True)]
    return acc, "\n".join(lines)


def run_conversion(cfg, progress=False, log=print, resume=False, overwrite=False):
    """Train (or load) the DNN, calibrate, convert, fine-tune, measure. Checkpoints in
    ``cfg.out_dir`` after conversion and after every fine-tuning epoch; ``resume`` continues
    from them (also in a directory the run was moved to), ``overwrite`` lets a fresh conversion
    replace the run in ``out_dir`` (else refused). ``out_dir`` is locked while the conversion
    runs. Returns the results dict (accuracies, scales, activity and energy)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite (--resume, --overwrite) contradict each other: pick one")
    out_dir = Path(cfg.out_dir)
    loaded = None
    if resume and os.path.lexists(out_dir / META):
        loaded, arrays = _read_converted(out_dir)
        saved = ConvertConfig.from_dict(loaded["config"])
        # the data and the DNN may have moved; fine-tuning may be extended (Adam at a constant lr)
        if "finetune_epochs" in changed_options(saved, cfg, RESUMABLE):
            if cfg.variant == "authors":
                raise ConfigError("finetune_epochs", "the authors' learning-rate steps are fractions of "
                                                     "finetune_epochs: a variant 'authors' run cannot change it")
            if cfg.finetune_epochs < loaded["epoch"]:
                raise ConfigError("finetune_epochs", f"finetune_epochs = {cfg.finetune_epochs}, but {out_dir} has "
                                                     f"already fine-tuned {loaded['epoch']} epochs")
            log(f"{'extending' if cfg.finetune_epochs > saved.finetune_epochs else 'shortening'} fine-tuning "
                f"from {saved.finetune_epochs} to {cfg.finetune_epochs} epochs")
    start = time.perf_counter()
    with claim_run_dir(out_dir, loaded, overwrite):
        if loaded is not None:
            results, scales, history, epoch = loaded["results"], loaded["scales"], loaded["history"], loaded["epoch"]
            train_x, train_y, test_x, test_y, info = get_dataset(results["dataset"], cfg.data_dir)
            snn = _build_snn(cfg, results["dnn_config"], scales, info)
            snn.load_state_dict(section(arrays, "model/"))
            opt = make_finetune_optimizer(snn, cfg.finetune_lr)
            opt.load_state_dict(section(arrays, "optim/"))
            for name, gen in generators(snn).items():
                gen.bit_generator.state = loaded["generators"][name]
            log(f"resuming {out_dir} after fine-tuning epoch {epoch}")

        def save(final=False):
            arrays = {**prefixed("model/", snn.state_dict()), **prefixed("optim/", opt.state_dict())}
            write_checkpoint(out_dir, "convert", epoch, arrays, dataclasses.asdict(cfg), history, final=final,
                             generators={k: g.bit_generator.state for k, g in generators(snn).items()},
                             scales=scales, results=results)

        if loaded is None:
            run = train_or_load_dnn(cfg, progress, log, overwrite)
            train_x, train_y, test_x, test_y = run.train_x, run.train_y, run.test_x, run.test_y
            _, dnn_acc = run.evaluate()
            rng = np.random.default_rng([cfg.seed, 3])
            calib = train_x[np.sort(rng.choice(len(train_x), min(cfg.calibration_samples, len(train_x)),
                                               replace=False))]
            scales = calibrate(run.model, calib, cfg.T, rng=rng)
            snn = convert_with(cfg, run.model, scales)
            _, converted_acc = evaluate_snn(snn, test_x, test_y, cfg.T, cfg.batch_size)
            results = {"dataset": run.info["name"], "dnn_config": dataclasses.asdict(run.cfg),
                       "dnn_dir": str(run.out_dir), "dnn_acc": dnn_acc, "converted_acc": converted_acc}
            history, epoch = [], 0
            opt = make_finetune_optimizer(snn, cfg.finetune_lr)
            save()
            log(f"DNN test accuracy {dnn_acc * 100:.2f}%; converted SNN (T = {cfg.T}) {converted_acc * 100:.2f}%")
            for i, s in enumerate(scales):
                log(f"  layer {i}: μ = {s['mu']:.4f}  a = {s['a']:.2f}  b = {s['b']:.2f}  "
                    f"(calibration error {s['error']:.3e} μ²)")
        while epoch < cfg.finetune_epochs:
            t0 = time.perf_counter()
            if cfg.variant == "authors":
                opt.lr = authors_lr(cfg.finetune_lr, epoch + 1, cfg.finetune_epochs)
            try:
                train_loss, train_acc = finetune_epoch(snn, opt, train_x, train_y, cfg.T, cfg.batch_size, cfg.seed,
                                                       epoch, progress, cfg.variant)
            except TrainingDiverged as e:
                raise TrainingDiverged(f"{e}; the last good checkpoint (fine-tuning epoch {epoch}) in {out_dir} "
                                       "is kept") from None
            test_loss, test_acc = evaluate_snn(snn, test_x, test_y, cfg.T, cfg.batch_size)
            epoch += 1
            history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                            "test_acc": test_acc, "seconds": round(time.perf_counter() - t0, 3)})
            save()
            log(f"fine-tune epoch {epoch:3d}/{cfg.finetune_epochs}  loss {train_loss:.4f}  train acc "
                f"{train_acc:.4f}  test acc {test_acc:.4f}  ({history[-1]['seconds']:.1f} s)")
        meter = SpikeMeter(snn)
        _, final_acc = evaluate_snn(snn, test_x, test_y, cfg.T, cfg.batch_size, meter=meter)
        results = dict(results, finetuned_acc=final_acc, **activity_summary(meter))
        save(final=True)
    return {**results, "scales": scales, "history": history, "snn": snn, "meter": meter,
            "seconds": time.perf_counter() - start}


def format_report(results, cfg):
    """The accuracies, the per-layer (a, b) and the energy table, as printed by ``refsnn convert``."""
    epochs = len(results["history"])
    stages = [("DNN (clipped ReLU, T = 1)", results["dnn_acc"]),
              (f"SNN right after conversion (T = {cfg.T})", results["converted_acc"]),
              (f"SNN after fine-tuning ({epochs} epoch{'' if epochs == 1 else 's'})", results["finetuned_acc"])]
    lines = [f"{name:<40}{acc * 100:6.2f}%" for name, acc in stages]
    lines += ["", f"{'neuron':<8}{'μ':>9}{'a':>7}{'b':>7}{'V_th = aμ':>11}{'amplitude now':>14}"
                 f"{'V_th now':>10}{' lam now':>10}"]
    neurons = [m for _, m in results["snn"].modules() if isinstance(m, ConvertedNeuron)]
    for i, (s, n) in enumerate(zip(results["scales"], neurons)):
        lines.append(f"{i:<8}{s['mu']:9.4f}{s['a']:7.2f}{s['b']:7.2f}{s['a'] * s['mu']:11.4f}"
                     f"{n.amplitude:14.4f}{n.v_threshold:10.4f}{n.lam:10.4f}")
    return "\n".join(lines + ["", energy_table(results["meter"], converted=True)])
