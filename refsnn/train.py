"""The trainer: loop, evaluation, metrics, atomic checkpoints and exact resume.

A run lives in ``out_dir``:

* ``checkpoint.json`` — metadata: config, epoch, metrics history, random-generator states,
  library version, and the name and SHA-256 of the weights file. It is the commit point.
* ``checkpoint-epochNNNN.npz`` — model parameters and buffers (``model/<state-dict name>``),
  optimiser (``optim/...``) and schedule (``sched/...``) state; for TNA and DML also the twin's
  (``twin/...``, ``twin_optim/...``, ``twin_sched/...``) while training. The finished run keeps
  only the base network (and the twin's weights with ``save_twin``). No pickle anywhere.
* ``metrics.csv`` and ``metrics.jsonl`` — one row per finished epoch (rewritten from the
  checkpoint's history, so a resumed run never duplicates or loses a row).

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, and
the json is written last: a run killed at any instant leaves a loadable checkpoint. The order
of batches, the augmentation and Poisson encoding are pure functions of (seed, epoch, step),
and Dropout generators are saved, so a resumed run ends bit-identical to an uninterrupted one.

Methods (methods.md §1-3), chosen by ``method``:

* ``plain``: the network alone, loss ``ce`` or ``tet``;
* ``tna``: twin network augmentation, base and twin of the same architecture, independently
  initialised, each with its own optimiser and schedule, ``twin_loss`` with λ = ``tna_lambda``
  (λ = 0 during the first ``late_matching`` epochs);
* ``dml``: deep mutual learning, the same pair with ``dml_loss``;
* ``kd``: knowledge distillation from a frozen ``teacher`` (a run directory, its checkpoint.json
  or a ternary export; any architecture, SNN or ANN twin, run in eval mode with its own T).

``ternary`` trains ternary weights (``refsnn.quant``); the twin is quantised like the base
(``twin_precision = "same"``) or kept at full precision (``"full"``).
"""
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .data import Batches, direct, get_dataset, poisson
from .energy import ActivityMeter
from .losses import accuracy, cross_entropy, dml_loss, kd_loss, tet_loss, twin_loss
from .models import build_network
from .module import NonFiniteError
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from .quant import export_bytes, export_ternary, float32_bytes, load_ternary, ternarize

TWIN_SEED_STREAM = 1   # the twin's initialisation seed is derived from (seed, TWIN_SEED_STREAM)


def config_from_dict(cls, d):
    """``cls(**d)`` for a config dataclass, naming any key it does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclasses.dataclass
class TrainConfig:
    network: str = "cnn"
    neuron: str = "clif"
    neuron_options: dict = dataclasses.field(default_factory=dict)  # tau, v_threshold, surrogate, alpha...
    dataset: str = "digits"
    data_dir: str = None
    T: int = 4
    encoding: str = "direct"          # direct | poisson
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"           # sgd | adam | adamw
    lr: float = 1e-2
    momentum: float = 0.9             # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"          # cosine | step | none
    step_size: int = 10               # step schedule
    gamma: float = 0.1
    loss: str = "ce"                  # ce | tet
    augment: str = None               # None | crop_flip (CIFAR)
    seed: int = 0
    dtype: str = "float32"
    out_dir: str = "runs/latest"
    method: str = "plain"             # plain | tna | kd | dml
    tna_lambda: float = 0.005         # λ of the logit-matching term (tna)
    late_matching: int = 0            # tna: λ = 0 during the first late_matching epochs
    twin_precision: str = "same"      # same (quantised like the base) | full
    save_twin: bool = False           # keep the twin's weights in the finished run
    teacher: str = None               # kd: run directory, checkpoint.json or ternary export
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    dml_temperature: float = 1.0
    ternary: bool = False             # ternary weights (TWN, straight-through)
    ternary_per_channel: bool = False
    ternary_first: bool = False       # also ternarise the first weight layer
    ternary_last: bool = False        # also ternarise the last weight layer (the classifier)

    def __post_init__(self):
        choices = {"encoding": ("direct", "poisson"), "optimizer": ("sgd", "adam", "adamw"),
                   "schedule": ("cosine", "step", "none"), "loss": ("ce", "tet"),
                   "dtype": ("float32", "float64"), "method": ("plain", "tna", "kd", "dml"),
                   "twin_precision": ("same", "full")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("T", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        self._check_methods()

    def _check_methods(self):
        for name in ("save_twin", "ternary", "ternary_per_channel", "ternary_first", "ternary_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not (isinstance(self.late_matching, int) and self.late_matching >= 0):
            raise ValueError(f"late_matching must be a non-negative integer, got {self.late_matching!r}")
        for name, low, high in (("tna_lambda", 0.0, math.inf), ("kd_alpha", 0.0, 1.0),
                                ("kd_temperature", 0.0, math.inf), ("dml_temperature", 0.0, math.inf)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        for name in ("kd_temperature", "dml_temperature"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be positive")
        if self.method == "kd" and not self.teacher:
            raise ValueError("method 'kd' needs a teacher: the run directory (or checkpoint.json or ternary "
                             "export) of a trained network on the same data set")
        if self.teacher is not None and self.method != "kd":
            raise ValueError(f"teacher is only used by method 'kd', not {self.method!r}")
        if self.method != "plain" and self.loss != "ce":
            raise ValueError(f"loss {self.loss!r} is only available with method 'plain' "
                             f"({self.method} uses its own loss on time-averaged logits)")
        if self.save_twin and self.method not in ("tna", "dml"):
            raise ValueError("save_twin needs a twin: method 'tna' or 'dml'")
        if self.late_matching and self.method != "tna":
            raise ValueError("late_matching applies to method 'tna' only")
        refinements = [n for n in ("ternary_per_channel", "ternary_first", "ternary_last") if getattr(self, n)]
        if refinements and not self.ternary:
            raise ValueError(f"{', '.join(refinements)} only apply with ternary = true")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------------
# atomic files
# ------------------------------------------------------------------------------------------
def atomic_write_bytes(path, data):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# the pieces of a run
# ------------------------------------------------------------------------------------------
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


def encode(cfg, x, epoch, step):
    """[N, ...] images → [T, N, ...] inputs; Poisson draws from a generator fixed by (seed, epoch, step)."""
    x = x.astype(cfg.dtype, copy=False)
    if cfg.encoding == "direct":
        return direct(x, cfg.T)
    return poisson(x, cfg.T, np.random.default_rng([cfg.seed, epoch, step, 2]))


def loss_and_grad(cfg, out, y):
    return cross_entropy(out, y) if cfg.loss == "ce" else tet_loss(out, y)


def _generators(model):
    return {name: m.rng for name, m in model.modules() if isinstance(getattr(m, "rng", None), np.random.Generator)}


def _section(arrays, prefix):
    """The entries of ``arrays`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _prefixed(prefix, arrays):
    return {f"{prefix}{k}": np.asarray(v) for k, v in arrays.items()}


def twin_seed(seed):
    """The twin's initialisation seed: derived from the run's ``seed``, independent of it."""
    return int(np.random.SeedSequence([seed, TWIN_SEED_STREAM]).generate_state(1)[0])


def build_model(cfg, info, seed=None, quantize=True):
    """The network ``cfg`` describes for a data set's ``info``, ternary layers included when
    ``cfg.ternary`` and ``quantize``, in the config's dtype."""
    model = build_network(cfg.network, info["input_shape"], info["num_classes"], neuron=cfg.neuron,
                          neuron_options=cfg.neuron_options, seed=cfg.seed if seed is None else seed)
    if cfg.ternary and quantize:
        ternarize(model, cfg.ternary_per_channel, cfg.ternary_first, cfg.ternary_last)
    return model.to(np.dtype(cfg.dtype))


class Teacher:
    """A frozen trained network (eval mode) whose time-averaged logits teach a KD student. It sees
    each batch through its own T and encoding (Poisson draws from its own seed, epoch and step)."""

    def __init__(self, path, info):
        self.cfg, self.model, self.sha256 = load_network(path, info)
        self.model.eval()

    def logits(self, x, epoch, step):
        return self.model.forward(encode(self.cfg, x, epoch, step)).mean(axis=0)


class Run:
    """Everything a training run holds: config, data, model, optimiser, schedule, history, and
    for TNA/DML the twin with its own optimiser and schedule, for KD the teacher.

    ``training=False`` builds only what evaluation needs (no optimiser, twin or teacher).
    """

    def __init__(self, cfg, training=True):
        self.cfg = cfg
        self.train_x, self.train_y, self.test_x, self.test_y, self.info = get_dataset(cfg.dataset, cfg.data_dir)
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
        self.out_dir.mkdir(parents=True, exist_ok=True)
        finished = self.epoch >= self.cfg.epochs
        arrays = _prefixed("model/", self.model.state_dict())
        arrays.update(_prefixed("optim/", self.opt.state_dict()))
        if self.sched is not None:
            arrays.update(_prefixed("sched/", self.sched.state_dict()))
        # the twin goes into every checkpoint while training; a finished run keeps only the base
        # network, and the twin's weights with save_twin
        keep_twin = self.twin is not None and (not finished or self.cfg.save_twin)
        if keep_twin:
            arrays.update(_prefixed("twin/", self.twin.state_dict()))
        if keep_twin and not finished:
            arrays.update(_prefixed("twin_optim/", self.twin_opt.state_dict()))
            if self.twin_sched is not None:
                arrays.update(_prefixed("twin_sched/", self.twin_sched.state_dict()))
        data = _npz_bytes(arrays)
        weights = f"checkpoint-epoch{self.epoch:04d}.npz"
        atomic_write_bytes(self.out_dir / weights, data)
        meta = {"refsnn_version": __version__, "epoch": self.epoch, "config": dataclasses.asdict(self.cfg),
                "weights": weights, "weights_sha256": hashlib.sha256(data).hexdigest(),
                "generators": {k: g.bit_generator.state for k, g in _generators(self.model).items()},
                "history": self.history}
        if keep_twin:
            meta["twin_generators"] = {k: g.bit_generator.state for k, g in _generators(self.twin).items()}
        if self.teacher is not None:
            meta["teacher_sha256"] = self.teacher.sha256
        old = self._current_weights_file()
        atomic_write_bytes(self.out_dir / "checkpoint.json", json.dumps(meta, indent=1).encode())
        if old and old != weights:
            (self.out_dir / old).unlink(missing_ok=True)
        self._write_metrics()

    def _current_weights_file(self):
        try:
            return json.loads((self.out_dir / "checkpoint.json").read_text())["weights"]
        except (OSError, ValueError, KeyError):
            return None

    def restore(self, meta, arrays):
        self.model.load_state_dict(_section(arrays, "model/"))
        for name, gen in _generators(self.model).items():
            gen.bit_generator.state = meta["generators"][name]
        if self.opt is not None:
            self.opt.load_state_dict(_section(arrays, "optim/"))
            if self.sched is not None:
                self.sched.load_state_dict(_section(arrays, "sched/"))
        if self.twin is not None:
            if not any(k.startswith("twin_optim/") for k in arrays):
                raise ValueError(f"the checkpoint holds no twin network and optimiser (twin/..., twin_optim/...): "
                                 f"it cannot resume a {self.cfg.method} run")
            self.twin.load_state_dict(_section(arrays, "twin/"))
            self.twin_opt.load_state_dict(_section(arrays, "twin_optim/"))
            if self.twin_sched is not None:
                self.twin_sched.load_state_dict(_section(arrays, "twin_sched/"))
            for name, gen in _generators(self.twin).items():
                gen.bit_generator.state = meta["twin_generators"][name]
        if self.teacher is not None and meta.get("teacher_sha256") != self.teacher.sha256:
            raise ValueError(f"the teacher {self.cfg.teacher} is not the one this run was trained with "
                             "(its weights' SHA-256 differs): resuming would not be exact")
        self.epoch = meta["epoch"]
        self.history = meta["history"]

    def _write_metrics(self):
        if not self.history:
            return
        fields = list(self.history[0])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_bytes(self.out_dir / "metrics.csv", buf.getvalue().encode())
        atomic_write_bytes(self.out_dir / "metrics.jsonl",
                           "".join(json.dumps(r) + "\n" for r in self.history).encode())

    # -- one step, one epoch --------------------------------------------------------
    def matching_lambda(self):
        """TNA's λ in the current epoch: 0 during the first ``late_matching`` epochs."""
        return self.cfg.tna_lambda if self.epoch >= self.cfg.late_matching else 0.0

    def loss_and_grads(self, x, y, step):
        """Forward every trained network on one batch of images ``x``:
        ``(loss, base output, [(network, dL/d its output), ...])``."""
        cfg = self.cfg
        inputs = encode(cfg, x, self.epoch, step)
        out = self.model.forward(inputs)
        if cfg.method == "plain":
            loss, grad = loss_and_grad(cfg, out, y)
            return loss, out, [(self.model, grad)]
        if cfg.method == "kd":
            z_teacher = self.teacher.logits(x, self.epoch, step)
            loss, grad = kd_loss(out, z_teacher, y, cfg.kd_alpha, cfg.kd_temperature)
            return loss, out, [(self.model, grad)]
        out_twin = self.twin.forward(inputs)
        if cfg.method == "tna":
            loss, grad, grad_twin = twin_loss(out, out_twin, y, self.matching_lambda())
        else:
            loss, grad, grad_twin = dml_loss(out, out_twin, y, cfg.dml_temperature)
        return loss, out, [(self.model, grad), (self.twin, grad_twin)]

    def train_epoch(self, progress=True):
        cfg = self.cfg
        trained = [(self.model, self.opt, "")]
        if self.twin is not None:
            trained.append((self.twin, self.twin_opt, "twin "))
        for network, _, _ in trained:
            network.train()
        batches = Batches(self.train_x, self.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
                          augment=cfg.augment)
        batches.set_epoch(self.epoch)
        total_loss = total_correct = seen = 0.0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, (x, y) in enumerate(bar):
            where = f"at epoch {self.epoch + 1}, step {step}; the last good checkpoint in {self.out_dir} is kept"
            try:
                loss, out, grads = self.loss_and_grads(x, y, step)
            except NonFiniteError as e:
                raise TrainingDiverged(f"{e} {where}") from None
            for (network, _, label), (_, grad) in zip(trained, grads):
                network.zero_grad()
                network.backward(grad)
                for name, _, g in network.named_parameters():
                    if not np.all(np.isfinite(g)):
                        raise TrainingDiverged(f"gradient of {label}{name} is not finite {where}")
            for _, opt, _ in trained:
                opt.step()
            total_loss += loss * len(y)
            total_correct += accuracy(out, y) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}")
        return total_loss / seen, total_correct / seen

    def evaluate(self, meter=None, progress=False, model=None):
        """Test loss and accuracy of ``model`` (default: the base network) in eval mode,
        optionally counting activity."""
        cfg = self.cfg
        model = self.model if model is None else model
        model.eval()
        total_loss = total_correct = 0.0
        batches = Batches(self.test_x, self.test_y, max(cfg.batch_size, 256), shuffle=False)
        with meter if meter is not None else contextlib.nullcontext():
            for step, (x, y) in enumerate(tqdm(batches, desc="test", disable=not progress, leave=False)):
                out = model.forward(encode(cfg, x, -1, step))
                total_loss += loss_and_grad(cfg, out, y)[0] * len(y)
                total_correct += accuracy(out, y) * len(y)
        n = len(self.test_y)
        return total_loss / n, total_correct / n

    def fit(self, progress=True, log=print):
        cfg = self.cfg
        if self.opt is None and self.epoch < cfg.epochs:
            raise ValueError("this run was loaded for evaluation only (training=False)")
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            lr = self.opt.lr
            train_loss, train_acc = self.train_epoch(progress)
            test_loss, test_acc = self.evaluate()
            row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "test_loss": test_loss, "test_acc": test_acc}
            if self.twin is not None:
                row["twin_test_acc"] = self.evaluate(model=self.twin)[1]
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


def read_checkpoint(path):
    """``(meta, arrays)`` from a run directory or its ``checkpoint.json``, verified."""
    path = Path(path)
    meta_path = path / "checkpoint.json" if path.is_dir() else path
    if not meta_path.exists():
        raise FileNotFoundError(f"no checkpoint at {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
        weights_path = meta_path.parent / meta["weights"]
        expected_sha = meta["weights_sha256"]
        meta["config"], meta["epoch"], meta["history"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt checkpoint metadata {meta_path}: {e}") from None
    if not weights_path.exists():
        raise FileNotFoundError(f"checkpoint {meta_path} names weights {weights_path.name}, which is missing")
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise ValueError(f"corrupt checkpoint: {weights_path} does not match the SHA-256 recorded in {meta_path} "
                         "(truncated or modified)")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def load_run(path, training=True):
    """Rebuild a run (model, optimiser, schedule, twin, history) from a checkpoint. A finished
    run, or ``training=False``, is rebuilt for evaluation only (no optimiser, twin or teacher)."""
    meta, arrays = read_checkpoint(path)
    cfg = TrainConfig.from_dict(meta["config"])
    run = Run(cfg, training=training and meta["epoch"] < cfg.epochs)
    run.restore(meta, arrays)
    return run


# ------------------------------------------------------------------------------------------
# ternary export: int8 codes + scales, and the networks trained runs hold
# ------------------------------------------------------------------------------------------
EXPORT_FORMAT = "refsnn-ternary-1"


def export_ternary_run(path, out_path):
    """Write the base network of a ternary run as ``int8`` codes + scales (``model/<name>.codes``,
    ``model/<name>.scale``, other arrays as trained) with its config in ``meta.json``; no pickle.
    Returns the sizes in bytes: ``ternary_bytes`` (the arrays), ``float32_bytes`` (the same
    network stored as float32) and ``file_bytes`` (the .npz written)."""
    meta, arrays = read_checkpoint(path)
    cfg = TrainConfig.from_dict(meta["config"])
    if not cfg.ternary:
        raise ValueError(f"the run in {path} was not trained with ternary weights (ternary = false)")
    run = Run(cfg, training=False)
    run.restore(meta, arrays)
    model_arrays = export_ternary(run.model)
    info = {"format": EXPORT_FORMAT, "refsnn_version": __version__, "config": dataclasses.asdict(cfg),
            "epoch": run.epoch, "test_acc": run.history[-1]["test_acc"] if run.history else None}
    data = _npz_bytes({**_prefixed("model/", model_arrays), "meta.json": np.array(json.dumps(info))})
    atomic_write_bytes(out_path, data)
    return {"ternary_bytes": export_bytes(model_arrays), "float32_bytes": float32_bytes(run.model),
            "file_bytes": len(data)}


def read_export(path):
    """``(meta, model arrays, sha256 of the file)`` of a ternary export."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ternary export at {path}")
    data = path.read_bytes()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta.json")))
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
        meta["config"], meta["epoch"]
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable refsnn ternary export: {e}") from None
    return meta, _section(arrays, "model/"), hashlib.sha256(data).hexdigest()


def _dataset_key(name):
    return str(name).lower().replace("_", "-")


def load_network(path, info=None):
    """``(cfg, model, sha256)``: the trained base network in a run directory, its checkpoint.json
    or a ternary export (a ``.npz``), with the config it was trained with.

    ``info`` (a data set's info dict): the network must have been trained on that data set (and
    the data is then not read again). Ternary layers forward with their ternary weights."""
    path = Path(path)
    if path.suffix == ".npz":
        meta, arrays, sha256 = read_export(path)
    else:
        meta, arrays = read_checkpoint(path)
        arrays, sha256 = _section(arrays, "model/"), meta["weights_sha256"]
    cfg = TrainConfig.from_dict(meta["config"])
    if info is None:
        info = get_dataset(cfg.dataset, cfg.data_dir)[4]
    elif _dataset_key(cfg.dataset) != info["name"]:
        raise ValueError(f"{path} holds a network trained on {cfg.dataset!r} ({cfg.network}); this run uses "
                         f"{info['name']!r}: the teacher must share the data set and its {info['num_classes']} classes")
    if path.suffix == ".npz":
        model = load_ternary(build_model(cfg, info, quantize=False), arrays)
    else:
        model = build_model(cfg, info).load_state_dict(arrays)
    return cfg, model, sha256


def load_for_eval(path):
    """A run ready for ``evaluate``/``summary_table`` from a run directory, its checkpoint.json or
    a ternary export (``.npz``)."""
    if Path(path).suffix != ".npz":
        return load_run(path, training=False)
    meta, _, _ = read_export(path)
    run = Run(TrainConfig.from_dict(meta["config"]), training=False)
    _, run.model, _ = load_network(path, run.info)
    run.epoch = meta["epoch"]
    return run


def summary_table(run, meter):
    """The final report: accuracy, per-layer activity, synaptic operations and energy."""
    test_loss, test_acc = run.evaluate(meter)
    lines = [f"test accuracy {test_acc * 100:.2f}%  (loss {test_loss:.4f}, {len(run.test_y)} samples, "
             f"T = {run.cfg.T})", "",
             f"{'layer':<10}{'kind':<14}{'rate':>8}{'MACs/step':>14}{'SOPs':>14}{'energy (nJ)':>14}"]
    for r in meter.rows():
        energy = f"{r['energy'] * 1e9:14.3f}" if "energy" in r else f"{'':>14}"
        macs = f"{r['macs']:14,.0f}" if r["macs"] else f"{'':>14}"
        sops = f"{r['sops']:14,.0f}" if r.get("spike_input") else f"{'(analog in)' if r['macs'] else '':>14}"
        lines.append(f"{r['layer']:<10}{r['kind']:<14}{r['rate']:8.4f}{macs}{sops}{energy}")
    e = meter.energy()
    lines += ["", f"energy per sample: SNN {e['snn_joules'] * 1e9:.3f} nJ, same network as a DNN "
                  f"{e['dnn_joules'] * 1e9:.3f} nJ (E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm); "
                  f"rate = firing rate for neurons, input spike rate for weight layers"]
    return test_acc, "\n".join(lines)
