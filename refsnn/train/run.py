"""A training run: ``Run`` (config, data, networks, optimizers, history), its epochs on the one
loop (``refsnn.train.loop``), its checkpoints (``refsnn.train.checkpoint``, kind ``"train"``),
exact resume, and loading a run for evaluation or a ternary export.

A run lives in a run directory: ``out_dir`` for a fresh run, and for a resumed or evaluated one
the directory given (a moved or copied run continues where it is; the ``out_dir`` saved in the
config is a record, never used). Its ``checkpoint.json`` carries ``generators`` (Dropout
generator states), ``twin_generators`` (TNA, DML) and ``teacher_sha256`` (KD); its weights file
the model (``model/<state-dict name>``), optimizer (``optim/...``) and schedule (``sched/...``)
state, and for TNA and DML the twin's (``twin/...``, ``twin_optim/...``, ``twin_sched/...``)
while training. The finished run keeps only the base network (and the twin's weights with
``save_twin``). The order of batches and the augmentation are pure functions of (seed, epoch,
step), Poisson encoding of (seed, epoch, sample position), and Dropout generators are saved, so
a resumed run ends bit-identical to an uninterrupted one, with any number of processes.

Methods (docs/methods.md §1-3), chosen by ``method``:

* ``plain``: the network alone, loss ``ce`` or ``tet``;
* ``tna``: twin network augmentation, base and twin of the same architecture, independently
  initialized, each with its own optimizer and schedule, ``twin_loss`` with λ = ``tna_lambda``
  (λ = 0 during the first ``late_matching`` epochs);
* ``dml``: deep mutual learning, the same pair with ``dml_loss``;
* ``kd``: knowledge distillation from a frozen ``teacher`` (a run directory, its checkpoint.json
  or a ternary export; any architecture, SNN or ANN twin, run in eval mode with its own T).

``ternary`` trains ternary weights (``refsnn.quant``); the twin is quantized like the base
(``twin_precision = "same"``) or kept at full precision (``"full"``).
"""
import dataclasses
import math
import time
from pathlib import Path

from ..data import Batches, augmentation
from ..energy import energy_table
from ..losses import dml_loss, kd_loss, twin_loss
from ..module import NonFiniteError
from ..optim import CosineAnnealingLR
from ..quant import export_bytes, export_ternary, float32_bytes
from . import loop
from .build import Teacher, build_model, encode, load_data, load_network, make_optimizer, training_loss, twin_seed
from .checkpoint import (EXPORT_KIND, check_writable, claim_run_dir, generators, identify, prefixed, read_checkpoint,
                         read_export, run_paths, section, write_checkpoint, write_export)
from .config import RESUMABLE, ConfigError, TrainConfig, changed_options, resumed_config
from .loop import TrainingDiverged


class Run:
    """Everything a training run holds: config, data, model, optimizer, schedule, history, and
    for TNA/DML the twin with its own optimizer and schedule, for KD the teacher.

    ``training=False`` builds only what evaluation needs (no optimizer, twin or teacher).
    ``overwrite``: a fresh run may replace a run already in ``cfg.out_dir`` (else ``fit`` refuses).
    """

    def __init__(self, cfg, training=True, overwrite=False):
        self.cfg = cfg
        self.overwrite = overwrite
        self._committed = None  # the metadata of the checkpoint on disk this run was restored from or saved
        self.train_x, self.train_y, self.test_x, self.test_y, self.info = load_data(cfg)
        augmentation(cfg.augment, self.info["input_shape"])  # refused here, before the run writes anything
        self.model = build_model(cfg, self.info)
        self.opt = self.sched = self.twin = self.twin_opt = self.twin_sched = self.teacher = None
        if training:
            self.opt, self.sched = make_optimizer(cfg, self.model)
            if cfg.method in ("tna", "dml"):
                self.twin = build_model(cfg, self.info, seed=twin_seed(cfg.seed),
                                        quantize=cfg.twin_precision == "same")
                self.twin_opt, self.twin_sched = make_optimizer(cfg, self.twin)
            if cfg.method == "kd":
                self.teacher = Teacher(cfg.teacher, self.info)
        self.epoch = 0
        self.history = []
        self.out_dir = Path(cfg.out_dir)

    # -- checkpoints ----------------------------------------------------------------
    def save(self):
        finished = self.epoch >= self.cfg.epochs
        arrays = prefixed("model/", self.model.state_dict())
        arrays.update(prefixed("optim/", self.opt.state_dict()))
        if self.sched is not None:
            arrays.update(prefixed("sched/", self.sched.state_dict()))
        # the twin goes into every checkpoint while training; a finished run keeps only the base
        # network, and the twin's weights with save_twin
        keep_twin = self.twin is not None and (not finished or self.cfg.save_twin)
        if keep_twin:
            arrays.update(prefixed("twin/", self.twin.state_dict()))
        if keep_twin and not finished:
            arrays.update(prefixed("twin_optim/", self.twin_opt.state_dict()))
            if self.twin_sched is not None:
                arrays.update(prefixed("twin_sched/", self.twin_sched.state_dict()))
        fields = {"generators": {k: g.bit_generator.state for k, g in generators(self.model).items()}}
        if keep_twin:
            fields["twin_generators"] = {k: g.bit_generator.state for k, g in generators(self.twin).items()}
        if self.teacher is not None:
            fields["teacher_sha256"] = self.teacher.sha256
        self._committed = write_checkpoint(self.out_dir, "train", self.epoch, arrays, dataclasses.asdict(self.cfg),
                                           self.history, final=finished, **fields)

    def restore(self, meta, arrays):
        self.model.load_state_dict(section(arrays, "model/"))
        for name, gen in generators(self.model).items():
            gen.bit_generator.state = meta["generators"][name]
        if self.opt is not None:
            self.opt.load_state_dict(section(arrays, "optim/"))
            if self.sched is not None:
                self.sched.load_state_dict(section(arrays, "sched/"))
        if self.twin is not None:
            if not any(k.startswith("twin_optim/") for k in arrays):
                raise ValueError(f"the checkpoint holds no twin network and optimizer (twin/..., twin_optim/...): "
                                 f"it cannot resume a {self.cfg.method} run")
            self.twin.load_state_dict(section(arrays, "twin/"))
            self.twin_opt.load_state_dict(section(arrays, "twin_optim/"))
            if self.twin_sched is not None:
                self.twin_sched.load_state_dict(section(arrays, "twin_sched/"))
            for name, gen in generators(self.twin).items():
                gen.bit_generator.state = meta["twin_generators"][name]
        if self.teacher is not None and meta.get("teacher_sha256") != self.teacher.sha256:
            raise ValueError(f"the teacher {self.cfg.teacher} is not the one this run was trained with "
                             "(its weights' SHA-256 differs): resuming would not be exact")
        self.epoch = meta["epoch"]
        self.history = meta["history"]
        self._committed = meta

    # -- one step, one epoch --------------------------------------------------------
    def matching_lambda(self):
        """TNA's λ in the current epoch: 0 during the first ``late_matching`` epochs."""
        return self.cfg.tna_lambda if self.epoch >= self.cfg.late_matching else 0.0

    def loss_and_grads(self, x, y, first):
        """Forward every trained network on one batch of images ``x`` (``first``: the position
        of ``x[0]`` in the epoch): ``(loss, base output, [(network, dL/d its output), ...])``,
        what ``loop.train_epoch`` takes."""
        cfg = self.cfg
        inputs = encode(cfg, x, self.epoch, first)
        out = self.model.forward(inputs)
        if cfg.method == "plain":
            loss, grad = training_loss(cfg)(out, y)
            return loss, out, [(self.model, grad)]
        if cfg.method == "kd":
            try:
                z_teacher = self.teacher.logits(x, self.epoch, first)
            except NonFiniteError as e:  # the frozen teacher is broken: not this run's divergence
                raise ValueError(f"the teacher {cfg.teacher} gives non-finite values: {e}") from None
            loss, grad = kd_loss(out, z_teacher, y, cfg.kd_alpha, cfg.kd_temperature)
            return loss, out, [(self.model, grad)]
        out_twin = self.twin.forward(inputs)
        if cfg.method == "tna":
            loss, grad, grad_twin = twin_loss(out, out_twin, y, self.matching_lambda())
        else:
            loss, grad, grad_twin = dml_loss(out, out_twin, y, cfg.dml_temperature)
        return loss, out, [(self.model, grad), (self.twin, grad_twin)]

    def train_epoch(self, progress=True):
        """One epoch of the base network (and the twin) on the one loop: ``(loss, accuracy)``."""
        cfg = self.cfg
        networks = [(self.model, self.opt, "")]
        if self.twin is not None:
            networks.append((self.twin, self.twin_opt, "twin "))
        batches = self._batches("training", self.train_x, self.train_y, shuffle=True, seed=cfg.seed,
                                augment=cfg.augment)
        batches.set_epoch(self.epoch)
        # what the divergence bound applies to (see loop.divergence): the loss itself, or the base's cross-entropy
        bounded = "cross-entropy" if cfg.method == "plain" and cfg.loss == "ce" else \
            {"tna": "TNA loss", "dml": "DML loss"}.get(cfg.method)
        try:
            return loop.train_epoch(networks, batches, self.loss_and_grads, bounded=bounded, epoch=self.epoch,
                                    desc=f"epoch {self.epoch + 1}/{cfg.epochs}", progress=progress)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}; {self._kept()}") from None

    def _batches(self, split, images, labels, **options):
        """``Batches`` of ``batch_size`` over a split; a data problem it finds (NaN or Inf in a
        sample...) is reported as such, never as a divergence."""
        try:
            return Batches(images, labels, self.cfg.batch_size, **options)
        except ValueError as e:
            raise ValueError(f"the {split} set of {self.cfg.dataset}: {e}: the input data is broken (this is not a "
                             "training divergence)") from None

    def _kept(self):
        """What a failed epoch leaves: the last checkpoint, or none yet."""
        if self.epoch > 0:
            return f"the last good checkpoint (epoch {self.epoch}) in {self.out_dir} is kept"
        return f"no checkpoint yet in {self.out_dir} (none is written before the first epoch ends)"

    def evaluate(self, meter=None, progress=False, model=None):
        """Test loss and accuracy of ``model`` (default: the base network) in eval mode, in
        batches of ``batch_size``, optionally counting activity."""
        batches = self._batches("test", self.test_x, self.test_y, shuffle=False)
        return loop.evaluate(self.model if model is None else model, batches,
                             lambda x, first: encode(self.cfg, x, None, first), training_loss(self.cfg), meter,
                             progress)

    def fit(self, progress=True, log=print):
        cfg = self.cfg
        if self.opt is None and self.epoch < cfg.epochs:
            raise ValueError("this run was loaded for evaluation only (training=False)")
        check_writable(self.out_dir)  # now, not when the first epoch's checkpoint fails
        # the run's directory is ours until the last epoch is saved: lock, leftovers, metrics
        # (also for a finished run: a kill after its last checkpoint may have left some)
        with claim_run_dir(self.out_dir, self._committed, self.overwrite):
            while self.epoch < cfg.epochs:
                start = time.perf_counter()
                lr = self.opt.lr
                train_loss, train_acc = self.train_epoch(progress)
                try:  # the last optimizer steps can leave weights that overflow on the test set
                    test_loss, test_acc = self.evaluate()
                    twin_acc = self.evaluate(model=self.twin)[1] if self.twin is not None else None
                except NonFiniteError as e:
                    raise TrainingDiverged(f"training diverged in epoch {self.epoch + 1}: the test pass after it "
                                           f"found {e}; {self._kept()}") from None
                row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                       "test_loss": test_loss, "test_acc": test_acc}
                if self.twin is not None:
                    row["twin_test_acc"] = twin_acc
                for sched in (self.sched, self.twin_sched):
                    if sched is not None:
                        sched.step()
                self.epoch += 1
                row["seconds"] = round(time.perf_counter() - start, 3)
                self.history.append(row)
                self.save()
                twin = f"  twin test acc {row['twin_test_acc']:.4f}" if self.twin is not None else ""
                log(f"epoch {self.epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
                    f"test loss {test_loss:.4f}  test acc {test_acc:.4f}{twin}  ({row['seconds']:.1f} s)")
        return self.history

    def replan_schedules(self):
        """After ``epochs`` changed on resume: a cosine schedule anneals over the new number of
        epochs from where the run is. Its ``T_max`` becomes ``epochs`` and the learning rate of
        the next epoch e (= ``last_epoch``) the closed form η_min + (base_lr − η_min)·(1 +
        cos(π·e/epochs))/2, torch's recursion going on from there. The epochs already trained
        keep the old schedule, so this is not the run a fresh start with the new ``epochs``
        would give. Step and constant schedules do not depend on ``epochs``."""
        for sched, opt in ((self.sched, self.opt), (self.twin_sched, self.twin_opt)):
            if isinstance(sched, CosineAnnealingLR):
                sched.T_max = self.cfg.epochs
                e, lo = sched.last_epoch, sched.eta_min
                opt.lr = lo + (sched.base_lr - lo) * (1 + math.cos(math.pi * e / sched.T_max)) / 2


def resume_config(saved, given, trained):
    """``(config, notes)`` to continue a run that has ``trained`` epochs with the options the
    user passed again (``given``, a dict) over its saved config ``saved``. Only ``RESUMABLE``
    options may differ: ``epochs`` (to extend a finished or running run, or shorten it while
    more than ``trained``), ``data_dir`` (the data moved), ``teacher`` (moved; its weights'
    SHA-256 is still checked) and ``out_dir``; ConfigError naming every other one."""
    cfg = resumed_config(saved, given, RESUMABLE)
    changed = changed_options(saved, cfg, RESUMABLE)
    notes = []
    if "epochs" in changed:
        if cfg.epochs <= trained:
            raise ConfigError("epochs", f"epochs = {cfg.epochs}, but the run has already trained {trained}: pass "
                                        f"more than {trained} to extend it")
        if trained >= saved.epochs and cfg.method in ("tna", "dml"):
            raise ConfigError("epochs", f"a finished {cfg.method} run keeps no twin optimizer state, so it cannot "
                                        "be extended: start a new run with the epochs you want")
        verb = "extending" if cfg.epochs > saved.epochs else "shortening"
        notes.append(f"{verb} from {saved.epochs} to {cfg.epochs} epochs"
                     + (f"; the cosine schedule now anneals over {cfg.epochs} epochs from epoch {trained + 1}"
                        if cfg.schedule == "cosine" else ""))
    notes += [f"{name}: {getattr(saved, name)} → {getattr(cfg, name)}" for name in changed
              if name in ("data_dir", "teacher")]
    return cfg, notes


def resume_run(path, given=None):
    """``(run, notes)``: the run saved in the directory ``path``, ready to train on, with the
    options in ``given`` (see ``resume_config``); ``notes`` say what changed. The run's
    directory is ``path``, wherever the run was first written."""
    meta, arrays = read_checkpoint(path, kind="train")
    saved = TrainConfig.from_dict(meta["config"])
    cfg, notes = resume_config(saved, {**(given or {}), "out_dir": str(run_paths(path)[0])}, meta["epoch"])
    run = Run(cfg, training=meta["epoch"] < cfg.epochs)
    run.restore(meta, arrays)
    if cfg.epochs != saved.epochs:
        run.replan_schedules()
    return run, notes


def load_run(path, training=True, data_dir=None):
    """Rebuild a training run (model, optimizer, schedule, twin, history) from a run directory or
    its checkpoint.json. The run's directory is that directory, wherever the run was written
    (the ``out_dir`` saved in its config is only a record). A finished run, or
    ``training=False``, is rebuilt for evaluation only (no optimizer, twin or teacher).
    ``data_dir``: where the data set is now, if not where the run was trained."""
    meta, arrays = read_checkpoint(path, kind="train")
    changes = {"out_dir": str(run_paths(path)[0])}
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    cfg = TrainConfig.from_dict({**meta["config"], **changes})
    run = Run(cfg, training=training and meta["epoch"] < cfg.epochs)
    try:
        run.restore(meta, arrays)
    except (ValueError, KeyError, TypeError) as e:  # arrays or states that do not fit the network
        raise ValueError(f"{path}: the checkpoint does not fit the network its config describes: {e}") from None
    return run


# ------------------------------------------------------------------------------------------
# a finished run: its ternary export, evaluation and report
# ------------------------------------------------------------------------------------------
def export_ternary_run(path, out_path):
    """Write the base network of a ternary run as ``int8`` codes + scales (``model/<name>.codes``,
    ``model/<name>.scale``, other arrays as trained) with its config in ``meta.json``; no pickle.
    Returns the sizes in bytes: ``ternary_bytes`` (the arrays), ``float32_bytes`` (the same
    network stored as float32) and ``file_bytes`` (the .npz written)."""
    run = load_run(path, training=False)
    if not run.cfg.ternary:
        raise ValueError(f"the run in {path} was not trained with ternary weights (ternary = false)")
    model_arrays = export_ternary(run.model)
    meta = {"config": dataclasses.asdict(run.cfg), "epoch": run.epoch,
            "test_acc": run.history[-1]["test_acc"] if run.history else None}
    file_bytes = write_export(out_path, meta, prefixed("model/", model_arrays))
    return {"ternary_bytes": export_bytes(model_arrays), "float32_bytes": float32_bytes(run.model),
            "file_bytes": file_bytes}


def load_for_eval(path, data_dir=None):
    """A run ready for ``evaluate``/``summary_table`` from a training run directory, its
    checkpoint.json or a ternary export; ``data_dir``: where the data set is now, if not where
    the network was trained. A ``refsnn convert`` run is evaluated by
    ``refsnn.convert.eval_summary``."""
    kind = identify(path)
    if kind == "train":
        return load_run(path, training=False, data_dir=data_dir)
    if kind != EXPORT_KIND:
        raise ValueError(f"{path} is a converted-SNN run (refsnn convert): evaluate it with "
                         "refsnn.convert.eval_summary (refsnn eval does)")
    meta, _, _ = read_export(path)
    changes = {} if data_dir is None else {"data_dir": str(data_dir)}
    run = Run(TrainConfig.from_dict({**meta["config"], **changes}), training=False)
    _, run.model, _ = load_network(path, run.info)
    run.epoch = meta["epoch"]
    return run


def summary_table(run, meter):
    """The final report: accuracy, per-layer activity, synaptic operations and energy."""
    test_loss, test_acc = run.evaluate(meter)
    return test_acc, (f"test accuracy {test_acc * 100:.2f}%  (loss {test_loss:.4f}, {len(run.test_y)} samples, "
                      f"T = {run.cfg.T})\n\n" + energy_table(meter))
