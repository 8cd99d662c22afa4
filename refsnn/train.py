"""The trainer: loop, evaluation, metrics, atomic checkpoints and exact resume.

A run lives in ``out_dir``:

* ``checkpoint.json`` — metadata: config, epoch, metrics history, random-generator states,
  library version, and the name and SHA-256 of the weights file. It is the commit point.
* ``checkpoint-epochNNNN.npz`` — model parameters and buffers (``model/<state-dict name>``),
  optimiser (``optim/...``) and schedule (``sched/...``) state. No pickle anywhere.
* ``metrics.csv`` and ``metrics.jsonl`` — one row per finished epoch (rewritten from the
  checkpoint's history, so a resumed run never duplicates or loses a row).

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, and
the json is written last: a run killed at any instant leaves a loadable checkpoint. The order
of batches, the augmentation and Poisson encoding are pure functions of (seed, epoch, step),
and Dropout generators are saved, so a resumed run ends bit-identical to an uninterrupted one.
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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .data import Batches, direct, get_dataset, poisson
from .energy import ActivityMeter
from .losses import accuracy, cross_entropy, tet_loss
from .models import build_network
from .module import NonFiniteError
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR


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

    def __post_init__(self):
        choices = {"encoding": ("direct", "poisson"), "optimizer": ("sgd", "adam", "adamw"),
                   "schedule": ("cosine", "step", "none"), "loss": ("ce", "tet"),
                   "dtype": ("float32", "float64")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("T", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


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


class Run:
    """Everything a training run holds: config, data, model, optimiser, schedule, history."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.train_x, self.train_y, self.test_x, self.test_y, self.info = get_dataset(cfg.dataset, cfg.data_dir)
        self.model = build_network(cfg.network, self.info["input_shape"], self.info["num_classes"],
                                   neuron=cfg.neuron, neuron_options=cfg.neuron_options, seed=cfg.seed)
        self.model.to(np.dtype(cfg.dtype))
        self.opt, self.sched = make_optimizer(cfg, self.model)
        self.epoch = 0
        self.history = []
        self.out_dir = Path(cfg.out_dir)

    # -- checkpoints ----------------------------------------------------------------
    def save(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in self.opt.state_dict().items()})
        if self.sched is not None:
            arrays.update({f"sched/{k}": np.asarray(v) for k, v in self.sched.state_dict().items()})
        data = _npz_bytes(arrays)
        weights = f"checkpoint-epoch{self.epoch:04d}.npz"
        atomic_write_bytes(self.out_dir / weights, data)
        meta = {"refsnn_version": __version__, "epoch": self.epoch, "config": dataclasses.asdict(self.cfg),
                "weights": weights, "weights_sha256": hashlib.sha256(data).hexdigest(),
                "generators": {k: g.bit_generator.state for k, g in _generators(self.model).items()},
                "history": self.history}
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
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
        self.opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})
        if self.sched is not None:
            self.sched.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("sched/")})
        for name, gen in _generators(self.model).items():
            gen.bit_generator.state = meta["generators"][name]
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

    # -- one epoch ------------------------------------------------------------------
    def train_epoch(self, progress=True):
        cfg, model = self.cfg, self.model
        model.train()
        batches = Batches(self.train_x, self.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
                          augment=cfg.augment)
        batches.set_epoch(self.epoch)
        total_loss = total_correct = seen = 0.0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, (x, y) in enumerate(bar):
            where = f"at epoch {self.epoch + 1}, step {step}; the last good checkpoint in {self.out_dir} is kept"
            try:
                out = model.forward(encode(cfg, x, self.epoch, step))
                loss, grad = loss_and_grad(cfg, out, y)
            except NonFiniteError as e:
                raise TrainingDiverged(f"{e} {where}") from None
            model.zero_grad()
            model.backward(grad)
            for name, _, g in model.named_parameters():
                if not np.all(np.isfinite(g)):
                    raise TrainingDiverged(f"gradient of {name} is not finite {where}")
            self.opt.step()
            total_loss += loss * len(y)
            total_correct += accuracy(out, y) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}")
        return total_loss / seen, total_correct / seen

    def evaluate(self, meter=None, progress=False):
        """Test loss and accuracy (eval mode), optionally counting activity."""
        cfg, model = self.cfg, self.model
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
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            lr = self.opt.lr
            train_loss, train_acc = self.train_epoch(progress)
            test_loss, test_acc = self.evaluate()
            if self.sched is not None:
                self.sched.step()
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                                 "test_loss": test_loss, "test_acc": test_acc,
                                 "seconds": round(time.perf_counter() - start, 3)})
            self.save()
            log(f"epoch {self.epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
                f"test loss {test_loss:.4f}  test acc {test_acc:.4f}  ({self.history[-1]['seconds']:.1f} s)")
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


def load_run(path):
    """Rebuild a run (model, optimiser, schedule, history) from a checkpoint."""
    meta, arrays = read_checkpoint(path)
    run = Run(TrainConfig.from_dict(meta["config"]))
    run.restore(meta, arrays)
    return run


def summary_table(run, meter):
    """The final report: accuracy, per-layer activity, synaptic operations and energy."""
    test_loss, test_acc = run.evaluate(meter)
    lines = [f"test accuracy {test_acc * 100:.2f}%  (loss {test_loss:.4f}, {len(run.test_y)} samples, "
             f"T = {run.cfg.T})", "",
             f"{'layer':<10}{'kind':<12}{'rate':>8}{'MACs/step':>14}{'SOPs':>14}{'energy (nJ)':>14}"]
    for r in meter.rows():
        energy = f"{r['energy'] * 1e9:14.3f}" if "energy" in r else f"{'':>14}"
        macs = f"{r['macs']:14,.0f}" if r["macs"] else f"{'':>14}"
        sops = f"{r['sops']:14,.0f}" if r.get("spike_input") else f"{'(analog in)' if r['macs'] else '':>14}"
        lines.append(f"{r['layer']:<10}{r['kind']:<12}{r['rate']:8.4f}{macs}{sops}{energy}")
    e = meter.energy()
    lines += ["", f"energy per sample: SNN {e['snn_joules'] * 1e9:.3f} nJ, same network as a DNN "
                  f"{e['dnn_joules'] * 1e9:.3f} nJ (E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm); "
                  f"rate = firing rate for neurons, input spike rate for weight layers"]
    return test_acc, "\n".join(lines)
