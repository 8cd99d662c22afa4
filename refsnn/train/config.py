"""What a run is made of: ``TrainConfig`` and the checks every config value goes through.

A config is a dataclass whose fields are the ``refsnn train`` options (and the keys of its TOML
file and of a saved ``checkpoint.json``). ``__post_init__`` checks every field, so a config that
exists is a valid one; an invalid value raises ``ConfigError`` naming the option (the CLI adds
the file and line it came from). ``ConvertConfig`` (``refsnn.convert``) uses the same checks.
"""
import dataclasses
import inspect
import math
import types

import numpy as np

from ..data import _AUGMENTATIONS, _CIFAR, _IDX_SETS
from ..events import BINNINGS, EVENT_DATASETS
from ..losses import TET_TARGETS
from ..models import ANALOG_ACTIVATIONS, NETWORKS
from ..module import OptionError, check_real
from ..neurons import NEURONS

# losses on an output neuron layer, and what of it they take (refsnn.models.with_output)
LOSS_OUTPUTS = {"ce_count": "spikes", "mse_count": "spikes", "ce_max_membrane": "membrane"}
DATASETS = ("digits", "mnist-t10k", *_IDX_SETS, *_CIFAR, *EVENT_DATASETS)  # the names get_dataset knows


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


def check_neuron_options(neuron, options, filled=None):
    """``options`` are keyword arguments of the neuron (or activation) ``neuron`` with the kinds of
    their defaults (bool, string, else a number or null), and build it (with ``filled``, the options
    the network builder fills in, added); ConfigError naming the option otherwise, or naming a
    required option (one without a default, such as RLeaky's beta) that is missing."""
    cls = NEURONS.get(neuron) or ANALOG_ACTIVATIONS[neuron]
    params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for key, default in params.items():
        if default is inspect.Parameter.empty and key not in options:
            raise ConfigError("neuron_options", f"neuron {neuron} needs the option {key!r} (it has no default), "
                                                f"e.g. --neuron-options '{{\"{key}\": ...}}'")
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
        cls(**options, **(filled or {}))
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
    encoding: str = "direct"          # direct | poisson | latency | delta (event data: its frames, as they are)
    event_bins: str = "time"          # event data: T frames of equal duration (time) or event count (count)
    event_downsample: int = 1         # event data: pixels (units) pooled f x f (f) into one
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"           # sgd | adam | adamw
    lr: float = 1e-2
    momentum: float = 0.9             # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"          # cosine | step | none
    step_size: int = 10               # step schedule
    gamma: float = 0.1
    loss: str = "ce"                  # ce | tet | ce_count | mse_count | ce_max_membrane (docs/losses.md)
    tet_lambda: float = 0.05          # tet: weight λ of the MSE term, 1 - λ on the cross-entropy (docs/losses.md §6)
    tet_phi: float = 1.0              # tet: the constant target φ of the MSE term (tet_target constant)
    tet_target: str = "constant"      # tet: MSE to φ (constant, Deng et al.) | to onehot(y) (CLIF's DVS runs)
    correct_rate: float = 1.0         # mse_count: target firing rate of the correct class (snnTorch's default)
    incorrect_rate: float = 0.0       # mse_count: target firing rate of the other classes
    rate_reg: float = 0.0             # ce_count/mse_count: λ of the L1 penalty on the output spikes
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
               "encoding": ("direct", "poisson", "latency", "delta"), "event_bins": BINNINGS,
               "optimizer": ("sgd", "adam", "adamw"), "schedule": ("cosine", "step", "none"),
               "loss": ("ce", "tet", *LOSS_OUTPUTS), "tet_target": TET_TARGETS, "augment": (None, *_AUGMENTATIONS),
               "dtype": ("float32", "float64"), "method": ("plain", "tna", "kd", "dml"),
               "twin_precision": ("same", "full")}

    def __post_init__(self):
        check_field_types(self)
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{name} must be one of {', '.join(map(str, allowed))}; "
                                        f"got {getattr(self, name)!r}")
        if dataset_key(self.dataset) not in DATASETS:  # get_dataset's spelling: any case, _ or -
            raise ConfigError("dataset", f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        check_counts(self, ("T", "epochs", "batch_size", "step_size", "event_downsample"), ("seed", "late_matching"))
        self._check_event_options()
        for name, low, high, low_open in (("lr", 0.0, math.inf, True), ("momentum", 0.0, math.inf, False),
                                          ("weight_decay", 0.0, math.inf, False), ("gamma", 0.0, math.inf, True),
                                          ("tna_lambda", 0.0, math.inf, False), ("kd_alpha", 0.0, 1.0, False),
                                          ("tet_lambda", 0.0, 1.0, False),
                                          ("kd_temperature", 0.0, math.inf, True),
                                          ("dml_temperature", 0.0, math.inf, True)):
            value = getattr(self, name)
            if not (low < value <= high if low_open else low <= value <= high):
                raise ConfigError(name, f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
        check_neuron_options(self.neuron, self.neuron_options, self._check_recurrent())
        if self.neuron == "s2nn" and self.T != 1:
            raise ConfigError("T", f"the s2nn neuron is single-step: T must be 1, got {self.T}")
        for name in ("out_dir", "data_dir", "teacher"):
            if getattr(self, name) == "":
                raise ConfigError(name, f"{name} must not be empty")
        self._check_methods()
        self._check_output_losses()

    def _check_recurrent(self):
        """``recurrent_mlp`` is built around RLeaky, whose all-to-all feedback needs the layer width
        (``linear_features``): the builder fills it in, so it is checked with a width of 1 here, and
        other networks cannot take that neuron. Returns the options the builder fills in."""
        all_to_all = self.neuron == "rleaky" and self.neuron_options.get("all_to_all", True)
        if self.network == "recurrent_mlp":
            if self.neuron != "rleaky":
                raise ConfigError("neuron", f"network recurrent_mlp is built around the recurrent neuron rleaky "
                                            f"(--neuron rleaky), got {self.neuron!r}")
            if "linear_features" in self.neuron_options:
                raise ConfigError("neuron_options", "recurrent_mlp sets the RLeaky layer's linear_features to its "
                                                    "hidden width: do not pass it")
            return {"linear_features": 1} if all_to_all else None
        if all_to_all:
            raise ConfigError("neuron", f"the rleaky neuron's all-to-all feedback needs the layer width, which "
                                        f"network {self.network} does not give it: use --network recurrent_mlp")
        return None

    def _check_event_options(self):
        """Event data feeds its frames as they are; the image-only options do not apply to it."""
        events = dataset_key(self.dataset) in EVENT_DATASETS
        if events and self.encoding != "direct":
            raise ConfigError("encoding", f"{self.dataset} is event data: its frames are the input (encoding "
                                          f"'direct'), not {self.encoding!r}")
        if events and self.augment is not None:
            raise ConfigError("augment", f"augment {self.augment!r} is for images, not the event frames of "
                                         f"{self.dataset}")
        for name, default in (("event_bins", "time"), ("event_downsample", 1)):
            if not events and getattr(self, name) != default:
                raise ConfigError(name, f"{name} applies to event data ({', '.join(EVENT_DATASETS)}), not "
                                        f"{self.dataset!r}")

    def _check_output_losses(self):
        """The spike-count and membrane losses need a spiking output neuron; each loss's options (TET's,
        mse_count's rates, the rate penalty) only apply to it."""
        if self.loss in LOSS_OUTPUTS and self.neuron in ANALOG_ACTIVATIONS:
            raise ConfigError("loss", f"loss {self.loss!r} takes the {LOSS_OUTPUTS[self.loss]} of an output neuron "
                                      f"layer: the neuron must be a spiking one, not {self.neuron!r}")
        if self.loss == "ce_max_membrane" and "store_v_seq" not in inspect.signature(NEURONS[self.neuron]).parameters:
            raise ConfigError("loss", f"loss 'ce_max_membrane' takes the membrane sequence of the output neuron, which "
                                      f"the {self.neuron} neuron does not keep (no store_v_seq)")
        if self.tet_target == "onehot" and self.tet_phi != 1.0:
            raise ConfigError("tet_phi", f"tet_phi applies to tet_target 'constant' only (the onehot target is 1 at "
                                         f"the label, 0 elsewhere); got tet_phi = {self.tet_phi}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}  # "not given" = the field's default
        for name in ("tet_lambda", "tet_phi", "tet_target"):
            if getattr(self, name) != defaults[name] and self.loss != "tet":
                raise ConfigError(name, f"{name} applies to loss tet, not {self.loss!r}")
        for name, needs in (("correct_rate", ("mse_count",)), ("incorrect_rate", ("mse_count",)),
                            ("rate_reg", ("ce_count", "mse_count"))):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(name, f"{name} must be >= 0, got {value}")
            if name != "rate_reg" and value > 1:  # a firing rate: at most one spike per step
                raise ConfigError(name, f"{name} is a firing rate (spikes per step): it must be in [0, 1], got {value}")
            if value != defaults[name] and self.loss not in needs:
                raise ConfigError(name, f"{name} applies to loss {' or '.join(needs)}, not {self.loss!r}")

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


def dataset_key(name):
    """A data set's name as ``get_dataset`` spells it: any case, ``_`` or ``-``."""
    return str(name).lower().replace("_", "-")


RESUMABLE = ("epochs", "data_dir", "teacher", "out_dir")  # options a resumed run may change


def changed_options(saved, cfg, allowed):
    """The fields in which the config ``cfg`` differs from a run's ``saved`` one; ConfigError
    naming each changed field that is not in ``allowed``, with its old and new value."""
    changed = [f.name for f in dataclasses.fields(saved) if getattr(cfg, f.name) != getattr(saved, f.name)]
    refused = [name for name in changed if name not in allowed]
    if refused:
        listed = ", ".join(f"{name} ({getattr(saved, name)!r} → {getattr(cfg, name)!r})" for name in refused)
        raise ConfigError(refused[0], f"cannot change {listed} when resuming: the run in {cfg.out_dir} was "
                                      f"made with the saved values; only {', '.join(allowed)} may change "
                                      "(start a new run in another out_dir for other options)")
    return changed


def resumed_config(saved, given, allowed):
    """The config of a resumed run: ``given`` (a dict of the options passed again) over the
    ``saved`` config. A changed option not in ``allowed`` is refused by ``changed_options`` before
    the merged values are validated: loss tet → ce with the saved tet_lambda, or variant authors →
    exact with the saved amplitude_factor, names the change, not its consequence."""
    merged = {**dataclasses.asdict(saved), **given}
    try:
        return type(saved).from_dict(merged)
    except ConfigError:
        changed_options(saved, types.SimpleNamespace(**merged), allowed)
        raise
