"""The trainer: loop, evaluation, metrics, atomic checkpoints and exact resume.

A run lives in a run directory: ``out_dir`` for a fresh run, and for a resumed or evaluated one
the directory given (a moved or copied run continues where it is; the ``out_dir`` saved in the
config is a record, never used). The format is ``refsnn.checkpoint``'s, shared with
``refsnn convert`` (kind ``"train"`` here):

* ``checkpoint.json`` — the commit point: ``kind``, ``refsnn_version``, ``epoch``, ``config``,
  ``history`` (one row per finished epoch), ``weights`` and ``weights_sha256`` (the name and
  hash of the weights file), ``generators`` (Dropout generator states), ``twin_generators`` (TNA,
  DML) and ``teacher_sha256`` (KD).
* ``checkpoint-epochNNNN.npz`` — model parameters and buffers (``model/<state-dict name>``),
  optimizer (``optim/...``) and schedule (``sched/...``) state; for TNA and DML also the twin's
  (``twin/...``, ``twin_optim/...``, ``twin_sched/...``) while training. The finished run keeps
  only the base network (and the twin's weights with ``save_twin``). No pickle anywhere. The
  file of the previous epoch is kept until the next save, so a reader polling the run never
  finds the json naming a file that is gone.
* ``metrics.csv`` and ``metrics.jsonl`` — one row per finished epoch (rewritten from the
  checkpoint's history, so a resumed run never duplicates or loses a row).
* ``run.lock`` — locked while a process trains the run: a second trainer on the directory is
  refused, and a killed one leaves no stale lock (the kernel drops it).

Every file is written to a temporary name, flushed, fsynced and renamed over the old one, and
the json is written last: a run killed at any instant leaves a loadable checkpoint, and the next
start removes what the kill left (temporary files, weights the json does not name). A fresh run
refuses a directory that holds another run unless ``overwrite`` (``--overwrite``). Names read
from a checkpoint are checked before use: nothing outside the run directory is read or removed.
The order of batches, the augmentation and Poisson encoding are pure functions of (seed, epoch,
step), and Dropout generators are saved, so a resumed run ends bit-identical to an
uninterrupted one.

Methods (methods.md §1-3), chosen by ``method``:

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
import contextlib
import dataclasses
import inspect
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import (EXPORT_KIND, claim_run_dir, identify, read_checkpoint, read_export, run_paths,
                         write_checkpoint, write_export)
from .data import _AUGMENTATIONS, _CIFAR, _IDX_SETS, Batches, augmentation, direct, get_dataset, poisson
from .energy import ActivityMeter
from .losses import accuracy, cross_entropy, dml_loss, kd_loss, tet_loss, twin_loss
from .models import ANALOG_ACTIVATIONS, NETWORKS, build_network, skip_input_gradient
from .module import NonFiniteError, OptionError, check_real
from .neurons import NEURONS
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from .quant import export_bytes, export_ternary, float32_bytes, load_ternary, ternarize

TWIN_SEED_STREAM = 1   # the twin's initialization seed is derived from (seed, TWIN_SEED_STREAM)


DATASETS = ("digits", "mnist-t10k", *_IDX_SETS, *_CIFAR)  # the names get_dataset knows


class ConfigError(ValueError):
    """An invalid config value; ``option`` names the config key (the CLI adds the file and line)."""

    def __init__(self, option, message):
        super().__init__(message)
        self.option = option


def config_from_dict(cls, d):
    """``cls(**d)`` for a config dataclass, naming any key it does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown config key(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


def check_field_types(cfg):
    """Every field of the config dataclass ``cfg`` holds its declared type, whatever the source
    (TOML, command line, a saved checkpoint): bools only in bool fields, integers (not bools) in
    int fields, finite reals in float fields, strings, dicts; None only where the default is None.
    NumPy scalars are accepted and stored as Python ones (so the config stays JSON)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None and f.default is None:
            continue
        if f.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f.name, f"{f.name} must be true or false, got {value!r}")
            value = bool(value)
        elif f.type is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f.name, f"{f.name} must be an integer, got {value!r}")
            value = int(value)
        elif f.type is float:
            try:
                value = check_real(value, f.name)
            except OptionError:
                raise ConfigError(f.name, f"{f.name} must be a finite real number, got {value!r}") from None
        elif not isinstance(value, f.type):
            raise ConfigError(f.name, f"{f.name} must be a {'string' if f.type is str else f.type.__name__}, "
                                      f"got {value!r}")
        setattr(cfg, f.name, value)


def check_counts(cfg, positive, non_negative):
    """ConfigError unless the int fields named in ``positive`` are >= 1 and those in
    ``non_negative`` >= 0."""
    for names, low, kind in ((positive, 1, "a positive"), (non_negative, 0, "a non-negative")):
        for name in names:
            if getattr(cfg, name) < low:
                raise ConfigError(name, f"{name} must be {kind} integer, got {getattr(cfg, name)}")


def check_neuron_options(neuron, options):
    """``options`` are keyword arguments of the neuron (or activation) ``neuron`` with the kinds of
    their defaults (bool, string, else a number or null), and build it; ConfigError naming the
    option otherwise."""
    cls = NEURONS.get(neuron) or ANALOG_ACTIVATIONS[neuron]
    params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for key, value in options.items():
        if key not in params:
            raise ConfigError("neuron_options", f"unknown option {key!r} for neuron {neuron}; known: "
                                                f"{', '.join(params)}")
        default = params[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            kind = "true or false" if isinstance(default, bool) else "a string" if isinstance(default, str) \
                else "a number"
            raise ConfigError("neuron_options", f"neuron option {key} of {neuron} must be {kind}, got {value!r}")
    try:
        cls(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError("neuron_options", f"neuron_options for {neuron}: {e}") from None


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
    twin_precision: str = "same"      # same (quantized like the base) | full
    save_twin: bool = False           # keep the twin's weights in the finished run
    teacher: str = None               # kd: run directory, checkpoint.json or ternary export
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    dml_temperature: float = 1.0
    ternary: bool = False             # ternary weights (TWN, straight-through)
    ternary_per_channel: bool = False
    ternary_first: bool = False       # also ternarize the first weight layer
    ternary_last: bool = False        # also ternarize the last weight layer (the classifier)

    CHOICES = {"network": tuple(NETWORKS), "neuron": (*NEURONS, *ANALOG_ACTIVATIONS),
               "encoding": ("direct", "poisson"), "optimizer": ("sgd", "adam", "adamw"),
               "schedule": ("cosine", "step", "none"), "loss": ("ce", "tet"), "augment": (None, *_AUGMENTATIONS),
               "dtype": ("float32", "float64"), "method": ("plain", "tna", "kd", "dml"),
               "twin_precision": ("same", "full")}

    def __post_init__(self):
        check_field_types(self)
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{name} must be one of {', '.join(map(str, allowed))}; "
                                        f"got {getattr(self, name)!r}")
        if _dataset_key(self.dataset) not in DATASETS:  # get_dataset's spelling: any case, _ or -
            raise ConfigError("dataset", f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        check_counts(self, ("T", "epochs", "batch_size", "step_size"), ("seed", "late_matching"))
        for name, low, high, low_open in (("lr", 0.0, math.inf, True), ("momentum", 0.0, math.inf, False),
                                          ("weight_decay", 0.0, math.inf, False), ("gamma", 0.0, math.inf, True),
                                          ("tna_lambda", 0.0, math.inf, False), ("kd_alpha", 0.0, 1.0, False),
                                          ("kd_temperature", 0.0, math.inf, True),
                                          ("dml_temperature", 0.0, math.inf, True)):
            value = getattr(self, name)
            if not (low < value <= high if low_open else low <= value <= high):
                raise ConfigError(name, f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
        check_neuron_options(self.neuron, self.neuron_options)
        if self.neuron == "s2nn" and self.T != 1:
            raise ConfigError("T", f"the s2nn neuron is single-step: T must be 1, got {self.T}")
        for name in ("out_dir", "data_dir", "teacher"):
            if getattr(self, name) == "":
                raise ConfigError(name, f"{name} must not be empty")
        self._check_methods()

    def _check_methods(self):
        if self.method == "kd" and not self.teacher:
            raise ConfigError("teacher", "method 'kd' needs a teacher: the run directory (or checkpoint.json or "
                                         "ternary export) of a trained network on the same data set")
        if self.teacher is not None and self.method != "kd":
            raise ConfigError("teacher", f"teacher is only used by method 'kd', not {self.method!r}")
        if self.method != "plain" and self.loss != "ce":
            raise ConfigError("loss", f"loss {self.loss!r} is only available with method 'plain' "
                                      f"({self.method} uses its own loss on time-averaged logits)")
        if self.save_twin and self.method not in ("tna", "dml"):
            raise ConfigError("save_twin", "save_twin needs a twin: method 'tna' or 'dml'")
        if self.late_matching and self.method != "tna":
            raise ConfigError("late_matching", "late_matching applies to method 'tna' only")
        refinements = [n for n in ("ternary_per_channel", "ternary_first", "ternary_last") if getattr(self, n)]
        if refinements and not self.ternary:
            raise ConfigError(refinements[0], f"{', '.join(refinements)} only apply with ternary = true")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d)


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN/Inf, or the loss exceeded the divergence bound (see
    ``check_loss``); the last good checkpoint, if any, is kept."""


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


def check_writable(directory):
    """Create ``directory`` if needed and check that a file can be written in it: OSError naming
    it (read-only file system, permission, a file in the way) before any work is done."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {directory}: {e.strerror}") from None


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


POISSON_STREAM, EVAL_POISSON_STREAM = 2, 3  # after Batches' streams 0 (shuffle) and 1 (augment)


def encode(cfg, x, epoch, step):
    """[N, ...] images → [T, N, ...] inputs. Poisson draws come from ``default_rng([seed, epoch,
    2, step])`` in training and ``default_rng([seed, 0, 3, step])`` in evaluation (``epoch=None``),
    so a test pass gives the same spikes whenever it runs (Batches uses streams 0 and 1)."""
    x = x.astype(cfg.dtype, copy=False)
    if cfg.encoding == "direct":
        return direct(x, cfg.T)
    key = [cfg.seed, 0, EVAL_POISSON_STREAM, step] if epoch is None else [cfg.seed, epoch, POISSON_STREAM, step]
    return poisson(x, cfg.T, np.random.default_rng(key))


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
    """The twin's initialization seed: derived from the run's ``seed``, independent of it."""
    return int(np.random.SeedSequence([seed, TWIN_SEED_STREAM]).generate_state(1)[0])


def build_model(cfg, info, seed=None, quantize=True):
    """The network ``cfg`` describes for a data set's ``info``, ternary layers included when
    ``cfg.ternary`` and ``quantize``, in the config's dtype."""
    model = build_network(cfg.network, info["input_shape"], info["num_classes"], neuron=cfg.neuron,
                          neuron_options=cfg.neuron_options, seed=cfg.seed if seed is None else seed)
    if cfg.ternary and quantize:
        ternarize(model, cfg.ternary_per_channel, cfg.ternary_first, cfg.ternary_last)
    skip_input_gradient(model)  # training never uses dL/d(input)
    return model.to(np.dtype(cfg.dtype))


class Teacher:
    """A frozen trained network (eval mode) whose time-averaged logits teach a KD student. It sees
    each batch through its own T and encoding (Poisson draws from its own seed, epoch and step)."""

    def __init__(self, path, info):
        self.cfg, self.model, self.sha256 = load_network(path, info)
        self.model.eval()

    def logits(self, x, epoch, step):
        out = self.model.forward(encode(self.cfg, x, epoch, step))
        return out.mean(axis=0, dtype=np.float64).astype(out.dtype)  # time mean [N, classes]; float64 sum over T


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
        self.train_x, self.train_y, self.test_x, self.test_y, self.info = get_dataset(cfg.dataset, cfg.data_dir)
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
        fields = {"generators": {k: g.bit_generator.state for k, g in _generators(self.model).items()}}
        if keep_twin:
            fields["twin_generators"] = {k: g.bit_generator.state for k, g in _generators(self.twin).items()}
        if self.teacher is not None:
            fields["teacher_sha256"] = self.teacher.sha256
        self._committed = write_checkpoint(self.out_dir, "train", self.epoch, arrays, dataclasses.asdict(self.cfg),
                                           self.history, final=finished, **fields)

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
                raise ValueError(f"the checkpoint holds no twin network and optimizer (twin/..., twin_optim/...): "
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
        self._committed = meta

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
            try:
                z_teacher = self.teacher.logits(x, self.epoch, step)
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
        cfg = self.cfg
        trained = [(self.model, self.opt, "")]
        if self.twin is not None:
            trained.append((self.twin, self.twin_opt, "twin "))
        for network, _, _ in trained:
            network.train()
        batches = self._batches("training", self.train_x, self.train_y, shuffle=True, seed=cfg.seed,
                                augment=cfg.augment)
        batches.set_epoch(self.epoch)
        total_loss = total_correct = seen = 0.0
        # what the divergence bound applies to (see divergence): the loss itself, or the base's cross-entropy
        bounded = "cross-entropy" if cfg.method == "plain" and cfg.loss == "ce" else \
            {"tna": "TNA loss", "dml": "DML loss"}.get(cfg.method)
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, (x, y) in enumerate(bar):
            where = f"training diverged at epoch {self.epoch + 1}, step {step}"
            try:
                loss, out, grads = self.loss_and_grads(x, y, step)
            except NonFiniteError as e:
                raise TrainingDiverged(f"{where}: {e}; {self._kept()}") from None
            problem = divergence(loss, out, y, bounded)
            if problem:
                raise TrainingDiverged(f"{where}: {problem}; {self._kept()}")
            for (network, _, label), (_, grad) in zip(trained, grads):
                network.zero_grad()
                network.backward(grad)
                for name, _, g in network.named_parameters():
                    if not np.all(np.isfinite(g)):
                        raise TrainingDiverged(f"{where}: the gradient of {label}{name} is not finite; {self._kept()}")
            for _, opt, _ in trained:
                opt.step()
            total_loss += loss * len(y)
            total_correct += accuracy(out, y) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}")
        return total_loss / seen, total_correct / seen

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
        cfg = self.cfg
        model = self.model if model is None else model
        model.eval()
        total_loss = total_correct = 0.0
        batches = self._batches("test", self.test_x, self.test_y, shuffle=False)
        with meter if meter is not None else contextlib.nullcontext():
            for step, (x, y) in enumerate(tqdm(batches, desc="test", disable=not progress, leave=False)):
                out = model.forward(encode(cfg, x, None, step))
                total_loss += loss_and_grad(cfg, out, y)[0] * len(y)
                total_correct += accuracy(out, y) * len(y)
        n = len(self.test_y)
        return total_loss / n, total_correct / n

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


RESUMABLE = ("epochs", "data_dir", "teacher", "out_dir")  # options a resumed run may change


def changed_options(saved, cfg, allowed):
    """The fields in which the config ``cfg`` differs from a run's ``saved`` one; ConfigError
    naming each changed field that is not in ``allowed``, with its old and new value."""
    changed = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(saved, f.name)]
    refused = [name for name in changed if name not in allowed]
    if refused:
        listed = ", ".join(f"{name} ({getattr(saved, name)!r} → {getattr(cfg, name)!r})" for name in refused)
        raise ConfigError(refused[0], f"cannot change {listed} when resuming: the run in {cfg.out_dir} was "
                                      f"made with the saved values; only {', '.join(allowed)} may change "
                                      "(start a new run in another out_dir for other options)")
    return changed


def resume_config(saved, given, trained):
    """``(config, notes)`` to continue a run that has ``trained`` epochs with the options the
    user passed again (``given``, a dict) over its saved config ``saved``. Only ``RESUMABLE``
    options may differ: ``epochs`` (to extend a finished or running run, or shorten it while
    more than ``trained``), ``data_dir`` (the data moved), ``teacher`` (moved; its weights'
    SHA-256 is still checked) and ``out_dir``; ConfigError naming every other one."""
    cfg = TrainConfig.from_dict({**dataclasses.asdict(saved), **given})
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
# ternary export: int8 codes + scales, and the networks trained runs hold
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
    file_bytes = write_export(out_path, meta, _prefixed("model/", model_arrays))
    return {"ternary_bytes": export_bytes(model_arrays), "float32_bytes": float32_bytes(run.model),
            "file_bytes": file_bytes}


def _dataset_key(name):
    return str(name).lower().replace("_", "-")


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
    arrays = _section(arrays, "model/")
    cfg = TrainConfig.from_dict(meta["config"])
    if info is None:
        info = get_dataset(cfg.dataset, cfg.data_dir)[4]
    elif _dataset_key(cfg.dataset) != info["name"]:
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
