"""refsnn train | eval | export-ternary | convert | plot | verify: the command line.

Exit codes: 0 done; 2 an error, reported as one "error: ..." line; 3 training diverged; 130
and 143 interrupted by SIGINT (Ctrl-C) and SIGTERM; 141 the reader of the output went away
(refsnn eval ... | head).
"""
import argparse
import dataclasses
import errno
import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (setup.py installs it there)
    import tomli as tomllib

from .train.checkpoint import atomic_write, read_regular_file
from .energy import ActivityMeter


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _json_object(text):
    """argparse type of --neuron-options: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of the neuron's options, e.g. "
                                         f"'{{\"tau\": 3.0, \"surrogate\": \"atan\"}}'; got {text!r}")
    return value


def _one_of(names):
    return " | ".join(str(n) for n in names)


def _add_config_options(p, cls, helps, flags=None):
    """One option per field of the config dataclass ``cls``, each with its help from ``helps``
    (every field must have one) and its default; ``--x/--no-x`` for bool fields."""
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = (flags or {}).get(f.name, f"--{f.name.replace('_', '-')}")
        if f.type is bool:
            kind = {"action": argparse.BooleanOptionalAction}
        elif f.type is dict:
            kind = {"type": _json_object, "metavar": "JSON"}
        else:
            kind = {"type": f.type}
        p.add_argument(flag, dest=f.name, default=None, help=f"{helps[f.name]} (default: {default})", **kind)


def _train_parser(sub):
    from .models import ANALOG_ACTIVATIONS, NETWORKS
    from .neurons import NEURONS
    from .surrogate import SURROGATES
    from .train import DATASETS, DIVERGENCE_FACTOR, RESUMABLE, TrainConfig
    choices = TrainConfig.CHOICES
    p = sub.add_parser("train", help="train a spiking network (defaults: CLIF CNN on the shipped 8x8 digits)",
                       description=f"Train a network; exit code 3 if training diverges (a loss or gradient "
                                   f"NaN/Inf, or a cross-entropy above {DIVERGENCE_FACTOR}·ln(classes)).")
    p.add_argument("--config", help="TOML file with any of the options below, by their config names "
                                    "(lr = 0.01, neuron_options = {tau = 2.0}); flags override it")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the run in --out-dir with its saved options; of the others only "
                        f"{', '.join('--' + n.replace('_', '-') for n in RESUMABLE if n != 'out_dir')} may be "
                        "passed with new values (any other changed option is refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out-dir (without it such a directory is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    helps = {
        "network": _one_of(NETWORKS),
        "neuron": f"spiking neuron {_one_of(NEURONS)}, or the ANN twin's activation {_one_of(ANALOG_ACTIVATIONS)} "
                  "(with --T 1)",
        "neuron_options": "the neuron's keyword arguments as a JSON object, e.g. "
                          f"'{{\"tau\": 2.0, \"surrogate\": \"atan\"}}' (surrogates: {_one_of(SURROGATES)}); "
                          "each neuron's options are in docs/neurons.md (clif: tau, v_reset for the official hard "
                          "reset, decay_input)",
        "dataset": f"{_one_of(DATASETS)} (digits and mnist-t10k are shipped; the others need --data-dir)",
        "data_dir": "directory holding the data set files (the shipped digits and mnist-t10k are read from the package unless given)",
        "T": "time steps per sample",
        "encoding": "direct (the analog image at every step) | poisson (spikes with probability = pixel value) | "
                    "latency (one spike per pixel, the brighter the earlier) | delta (spikes where the input "
                    "changes: at t = 0 for an image); event data (nmnist, shd, ...) feeds its frames as they are",
        "event_bins": "event data: time (T frames of equal duration) | count (T frames of equal event count)",
        "event_downsample": "event data: pool f x f pixels (f audio units) into one",
        "epochs": "epochs to train; with --resume a new value extends (or shortens) the run, and a cosine "
                  "schedule then anneals over the new number from where the run is",
        "batch_size": "mini-batch size, for training and for evaluation",
        "optimizer": _one_of(choices["optimizer"]),
        "lr": "learning rate",
        "momentum": "SGD momentum",
        "weight_decay": "weight decay (L2 for sgd and adam, decoupled for adamw)",
        "schedule": "per-epoch learning-rate schedule: cosine (annealed to 0 over --epochs) | step (times "
                    "--gamma every --step-size epochs) | none",
        "step_size": "step schedule: epochs between decays",
        "gamma": "step schedule: decay factor",
        "loss": "ce (cross-entropy of the time-averaged logits) | tet (temporal efficient training) | on an output "
                "neuron layer (snnTorch's, docs/losses.md): ce_count (cross-entropy of the spike counts) | mse_count "
                "(squared error of the spike counts) | ce_max_membrane (cross-entropy of the peak membrane)",
        "tet_lambda": "tet: weight λ of the MSE term (1 - λ on the per-step cross-entropy)",
        "tet_phi": "tet: the constant target φ of the MSE term (--tet-target constant)",
        "tet_target": "tet: the MSE term's target, constant (φ everywhere: Deng et al.'s TET) | onehot (the "
                      "label's one-hot vector: the CLIF authors' -mse_n_reg, for DVS data)",
        "correct_rate": "mse_count: target firing rate of the correct class (a target count of int(T·rate))",
        "incorrect_rate": "mse_count: target firing rate of the other classes",
        "rate_reg": "ce_count/mse_count: λ of the L1 rate penalty λ·Σ output spikes added to the loss",
        "augment": "crop_flip: random crop of the padded image and horizontal flip (CIFAR)",
        "seed": "seed of the initialization, batch order, augmentation, dropout and Poisson draws",
        "dtype": _one_of(choices["dtype"]),
        "out_dir": "run directory: checkpoints and metrics",
        "method": "plain | tna (twin network augmentation) | kd (knowledge distillation from --teacher) | "
                  "dml (deep mutual learning)",
        "tna_lambda": "TNA: weight λ of the logit-matching term",
        "late_matching": "TNA: λ = 0 for this many first epochs",
        "twin_precision": "TNA/DML with --ternary: the twin is same (ternary too) or full precision",
        "save_twin": "TNA/DML: keep the twin's weights in the finished run",
        "teacher": "KD: run directory, checkpoint.json or ternary export of the teacher",
        "kd_alpha": "KD: weight α of the distillation term (1 - α on the cross-entropy)",
        "kd_temperature": "KD: softmax temperature τ",
        "dml_temperature": "DML: softmax temperature of the mutual KL terms",
        "ternary": "ternary weights (TWN, straight-through); first/last layers full precision",
        "ternary_per_channel": "ternary: one scale per output channel (default one per layer)",
        "ternary_first": "ternary: also the first weight layer",
        "ternary_last": "ternary: also the last weight layer (the classifier)",
    }
    _add_config_options(p, TrainConfig, helps)
    return p


def _toml_line(text, key):
    """The line number (from 1) where the top-level ``key`` of a TOML text is set, or None."""
    assign = re.compile(rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[.=]""")
    table = re.compile(rf"""\s*\[\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*[.\]]""")
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        if table.match(line) or (not in_table and assign.match(line)):
            return number
        in_table = in_table or line.lstrip().startswith("[")
    return None


MAX_CONFIG_BYTES = 1 << 20  # a TOML config is a few lines; /dev/zero or a huge file is refused


def _given_options(args, cls):
    """``(values, origins)``: the options given in ``--config`` and as flags (flags win), and for
    each one taken from the file, ``"FILE line N"``."""
    values, origins = {}, {}
    if getattr(args, "config", None):
        text = read_regular_file(args.config, MAX_CONFIG_BYTES, "config file", follow_symlinks=True)
        try:
            values = tomllib.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{args.config}: not a valid TOML file: {e}") from None
        for key in values:
            line = _toml_line(text.decode("utf-8"), key)
            origins[key] = f"{args.config}" + (f" line {line}" if line else "") + f" ({key})"
    for f in dataclasses.fields(cls):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
            origins.pop(f.name, None)
    for name in ("data_dir", "teacher", "dnn_dir"):  # saved absolute: a resume or eval elsewhere finds the same files
        if isinstance(values.get(name), str) and values[name]:
            values[name] = str(Path(values[name]).absolute())
    return values, origins


def _from_origins(make, origins):
    """``make()``, a ConfigError about an option from a TOML file naming the file and line."""
    from .train import ConfigError
    try:
        return make()
    except ConfigError as e:
        if e.option in origins:
            raise ConfigError(e.option, f"{origins[e.option]}: {e}") from None
        raise


def _saved_epoch(run_dir):
    """The epoch of the checkpoint in ``run_dir`` (its checkpoint.json), or None if there is none."""
    from .train.checkpoint import META, read_meta
    try:
        return read_meta(Path(run_dir) / META)["epoch"]
    except (OSError, ValueError):
        return None


def _stopped(places, argv):
    """Where a stopped run stands and the exact command that continues it: the first of
    ``places`` (``(run directory, what its epochs are)``) holding a checkpoint."""
    for run_dir, what in places:
        epoch = _saved_epoch(run_dir)
        if epoch is not None:
            again = [a for a in argv if a not in ("--resume", "--overwrite")] + ["--resume"]
            return f"the last checkpoint is {Path(run_dir) / 'checkpoint.json'} ({what} {epoch}); resume with: " \
                   f"refsnn {shlex.join(again)}"
    return f"no checkpoint yet in {places[0][0]}: start again with: refsnn {shlex.join(argv)}"


def _os_error(e):
    text = e.strerror or str(e)
    return f"{e.filename}: {text}" if e.filename else text


# the errors of a write that a full, size-limited, read-only or failing disk gives
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def cmd_train(args):
    from . import distributed
    from .train import Run, TrainConfig, resume_run, summary_table
    from .train.checkpoint import check_writable, refuse_existing_run
    given, origins = _given_options(args, TrainConfig)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: pick one")
    if args.resume:
        out_dir = given.pop("out_dir", TrainConfig.out_dir)
        args.places = [(out_dir, "epoch")]  # what an interruption or a failed write reports
        run, notes = _from_origins(lambda: resume_run(out_dir, given), origins)
        for note in notes:
            print(note)
        if run.epoch >= run.cfg.epochs:
            print(f"run in {out_dir} already finished {run.epoch} epochs (--epochs N extends it)\n")
            run.fit(progress=False)  # trains nothing: tidies the directory (leftovers, metrics)
            print(summary_table(run, ActivityMeter(run.model))[1])
            return 0
        print(f"resuming {out_dir} after epoch {run.epoch}")
    else:
        cfg = _from_origins(lambda: TrainConfig.from_dict(given), origins)
        refuse_existing_run(cfg.out_dir, args.overwrite)
        args.places = [(cfg.out_dir, "epoch")]
        run = Run(cfg, overwrite=args.overwrite)  # loads the data and refuses what it cannot take
        check_writable(cfg.out_dir)  # before the first epoch, not after it
    c = run.cfg
    if run.info.get("synthetic"):
        print(f"refsnn train: {c.dataset} here is a SYNTHETIC stand-in in the real file format, not the recorded "
              f"data set ({run.info['synthetic']})")
    processes = distributed.world().size  # data-parallel under mpiexec (refsnn.distributed)
    print(f"refsnn train: {processes} process{'es' if processes > 1 else ''}, {c.network} with {c.neuron} neurons "
          f"on {c.dataset} "
          f"({len(run.train_y)} train / {len(run.test_y)} test), T = {c.T}, {c.epochs} epochs, "
          f"{c.optimizer} lr {c.lr}, {c.schedule} schedule, method {c.method}"
          f"{', ternary weights' if c.ternary else ''}, seed {c.seed} → {c.out_dir}")
    start = time.perf_counter()
    run.fit(progress=not args.no_progress)
    print(f"trained in {time.perf_counter() - start:.1f} s\n")
    print(summary_table(run, ActivityMeter(run.model))[1])
    return 0


def _eval_trained(path, data_dir):
    """The report of a training run or a ternary export."""
    from .train import load_for_eval, summary_table
    run = load_for_eval(path, data_dir)
    return (f"{run.cfg.network} with {run.cfg.neuron} neurons, {run.cfg.dataset}, after epoch {run.epoch}\n\n"
            + summary_table(run, ActivityMeter(run.model))[1])


def _eval_converted(path, data_dir):
    """The report of a ``refsnn convert`` run."""
    from .convert import eval_summary
    return eval_summary(path, data_dir)[1]


# refsnn eval: the report of each kind a checkpoint.json (or a ternary export) declares
EVAL_REPORTS = {"train": _eval_trained, "ternary-export": _eval_trained, "convert": _eval_converted}


def cmd_eval(args):
    from .train.checkpoint import identify
    if args.checkpoint.endswith(".nir"):
        return cmd_eval_nir(args)
    nir_only = ("dataset", "T", "dt", "encoding", "event_bins", "event_downsample")
    if any(getattr(args, name) is not None for name in nir_only):
        raise ValueError("--dataset, --T, --dt, --encoding, --event-bins and --event-downsample are for a NIR graph "
                         "(FILE.nir); a run is evaluated on its own data set with its own inputs")
    print(f"{args.checkpoint}: {EVAL_REPORTS[identify(args.checkpoint)](args.checkpoint, args.data_dir)}")
    return 0


def cmd_eval_nir(args):
    """refsnn eval FILE.nir [--dataset NAME]: a NIR graph run by refsnn, fed the inputs its refsnn export
    recorded (docs/nir.md §6)."""
    from .nir import evaluate_nir
    loss, acc, n, inputs = evaluate_nir(args.checkpoint, args.dataset, args.data_dir, T=args.T, dt=args.dt,
                                        encoding=args.encoding, event_bins=args.event_bins,
                                        event_downsample=args.event_downsample)
    print(f"{args.checkpoint}: NIR graph on {inputs['dataset']}: test accuracy {acc * 100:.2f}%  (loss {loss:.4f}, "
          f"{n} samples, inputs: " + ", ".join(f"{k} {v}" for k, v in inputs.items() if k != "dataset") + ")")
    return 0


def _write_atomically(path, write):
    """``write(temporary path)`` then rename it over ``path``, in process 0 only under mpiexec (the
    others would write the same file at once): a reader sees the old file or the whole new one."""
    from . import distributed
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: the folder {path.parent} does not exist")
    if distributed.world().rank == 0:
        atomic_write(path, write, suffix=f".tmp{path.suffix}")  # plot picks its format by the extension


def cmd_export_nir(args):
    from .nir import _nir, export_run
    nir = _nir()
    graph = export_run(args.run, dt=args.dt)
    _write_atomically(args.out, lambda tmp: nir.write(tmp, graph))
    print(f"wrote {args.out}: NIR graph of {len(graph.nodes)} nodes, dt = {graph.metadata['dt']:g} s, firing on "
          f"{graph.metadata['firing']} (docs/nir.md)")
    return 0


def cmd_export_ternary(args):
    from . import distributed
    from .train import export_ternary_run
    if distributed.world().rank != 0:   # process 0 writes the file (atomically)
        return 0
    sizes = export_ternary_run(args.run_dir, args.out)
    print(f"wrote {args.out}: ternary weights {sizes['ternary_bytes']:,} bytes (int8 codes + scales), "
          f"the same network in float32 {sizes['float32_bytes']:,} bytes "
          f"({sizes['float32_bytes'] / sizes['ternary_bytes']:.1f}x); file {sizes['file_bytes']:,} bytes")
    return 0


def _convert_parser(sub):
    from .convert import ConvertConfig
    from .models import NETWORKS
    from .surrogate import SURROGATES
    from .train import DATASETS
    p = sub.add_parser("convert", help="ultra-low-latency ANN-to-SNN conversion (Datta & Beerel 2022): train a "
                                       "clipped-ReLU DNN (or take --dnn), calibrate, convert, fine-tune")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir with its saved options; only --finetune-epochs, "
                        "--data-dir and --dnn may be passed with new values (not --finetune-epochs for a "
                        "--variant authors run: its lr steps are fractions of the epochs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out-dir (without it such a directory is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    helps = {"dataset": f"{_one_of(DATASETS)} (digits and mnist-t10k are shipped; the others need --data-dir)",
             "data_dir": "directory holding the data set files (the shipped digits and mnist-t10k are read from the package unless given)",
             "network": f"the DNN, trained with clipped ReLU at T = 1: a chain-shaped network of "
                        f"{_one_of(NETWORKS)} (not the ResNets)",
             "dnn_dir": "an existing clipped-ReLU run directory (refsnn train --neuron clipped_relu --T 1) to convert",
             "dnn_epochs": "epochs of the DNN's training", "dnn_lr": "learning rate of the DNN's training (Adam)",
             "T": "time steps of the SNN", "calibration_samples": "training images for the (a, b) grid search",
             "finetune_epochs": "epochs of surrogate-gradient fine-tuning; with --resume a new value extends it "
                                "(not for --variant authors)",
             "finetune_lr": "learning rate of the fine-tuning (Adam with AMSGrad)",
             "batch_size": "mini-batch size, for training, calibration and evaluation",
             "dropout": "dropout after every spiking neuron while fine-tuning (mask fixed across steps)",
             "surrogate": f"surrogate gradient, {_one_of(SURROGATES)} (boxcar on H/V_th - 1, as the authors)",
             "detach_reset": "no gradient through the reset's spike (the authors' code)",
             "train_amplitude": "learn the spike amplitude b·μ too",
             "variant": "fine-tuning rules: exact (the exact gradient of refsnn's forward) | authors (the "
                        "authors' code: amplitude tied to the threshold, their surrogate and threshold "
                        "gradients, CE on logits summed over T, strict firing, lr ÷5 at 60/80/90%% of the "
                        "epochs; docs/methods.md §4.1)",
             "amplitude_factor": "--variant authors only: c in amplitude = c·(b/a)·V_th; their VGG 1.3 "
                                 "(used when not given), their ResNet 1.5",
             "seed": "seed of the DNN, the calibration sample and dropout",
             "dtype": "float32 | float64",
             "out_dir": "DNN run in OUT_DIR/dnn, SNN checkpoints"}
    _add_config_options(p, ConvertConfig, helps, flags={"dnn_dir": "--dnn"})
    return p


def cmd_convert(args):
    from .convert import ConvertConfig, format_report, run_conversion
    from .convert.pipeline import RESUMABLE
    from .train.checkpoint import META, check_writable, read_meta, refuse_existing_run
    from .train.config import resumed_config
    given, origins = _given_options(args, ConvertConfig)
    out_dir = given.get("out_dir", ConvertConfig.out_dir)
    if args.resume and (Path(out_dir) / META).exists():  # the saved options, and the ones given
        saved = read_meta(Path(out_dir) / META)["config"]
        cfg = resumed_config(ConvertConfig.from_dict(saved), {**given, "out_dir": out_dir}, RESUMABLE)
    else:
        cfg = ConvertConfig.from_dict(given)
        if not args.resume:
            refuse_existing_run(cfg.out_dir, args.overwrite)
        check_writable(cfg.out_dir)
    args.places = [(cfg.out_dir, "fine-tuning epoch"), (Path(cfg.out_dir) / "dnn", "DNN epoch")]
    source = f"the DNN run {cfg.dnn_dir}" if cfg.dnn_dir else f"a {cfg.network} DNN trained {cfg.dnn_epochs} epochs"
    print(f"refsnn convert: {source} → SNN with T = {cfg.T}, fine-tuned for {cfg.finetune_epochs} epoch(s) "
          f"(Adam/AMSGrad lr {cfg.finetune_lr}, variant {cfg.variant}), seed {cfg.seed} → {cfg.out_dir}")
    results = run_conversion(cfg, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    print(f"done in {results['seconds']:.1f} s\n")
    print(format_report(results, cfg))
    return 0


def cmd_plot(args):
    from . import plot
    from .train import encode, load_for_eval
    from .train.checkpoint import identify
    try:
        plot.require_matplotlib()  # before loading the run
    except ImportError as e:
        raise ValueError(str(e)) from None
    if identify(args.run_dir) == "convert":
        raise ValueError(f"{args.run_dir} is a converted-SNN run (refsnn convert), whose neurons do not record "
                         "their membrane: refsnn plot draws the neuron layers of a refsnn train run")
    run = load_for_eval(args.run_dir, args.data_dir)
    n = len(run.test_y)
    if not 0 <= args.sample < n:
        raise ValueError(f"--sample {args.sample}: the test set of {run.cfg.dataset} has {n} samples (0 to {n - 1})")
    layer = args.layer if args.layer is not None else next(iter(plot.neuron_layers(run.model)), "")
    # the sample's input as refsnn eval gives it (Poisson draws are per sample, keyed by its position)
    x = encode(run.cfg, run.test_x[args.sample:args.sample + 1], None, args.sample)
    run.model.eval()
    what = (f"layer {layer} of {args.run_dir} ({run.cfg.network}, {run.cfg.neuron} neurons), test sample "
            f"{args.sample} (label {run.test_y[args.sample]}), T = {run.cfg.T}")
    out = Path(args.out)
    if not out.suffix:  # matplotlib then writes PNG and adds the suffix itself: say the name it writes
        out = out.with_name(out.name + ".png")
    _write_atomically(out, lambda tmp: plot.neuron_layer(run.model, x, layer, tmp, title=what))
    print(f"wrote {out}: {what}")
    return 0


def cmd_verify(args):
    from .verify.__main__ import main as verify_main
    return verify_main(args.rest)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


class _Parser(argparse.ArgumentParser):
    """argparse, with a misused option reported as the one ``error:`` line every other error
    gets (not the whole usage block), exit code 2 as argparse's."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser():
    """The ``refsnn`` argument parser, every subcommand included."""
    parser = _Parser(prog="refsnn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _train_parser(sub)
    p = sub.add_parser("eval", help="evaluate a checkpoint (or a NIR graph) on its test set")
    p.add_argument("checkpoint", help="run directory (refsnn train or refsnn convert), its checkpoint.json, "
                                      "a ternary export (.npz), or a NIR graph (.nir)")
    p.add_argument("--data-dir", help="where the data set is now, if not where the run was trained")
    p.add_argument("--dataset", help="with a NIR graph (FILE.nir): the data set to evaluate it on (default: the "
                                     "one a refsnn export recorded)")
    p.add_argument("--T", type=int, help="with a NIR graph: time steps per sample (default: the T a refsnn "
                                         "export recorded, else 4)")
    p.add_argument("--encoding", help="with a NIR graph: how images become inputs, as refsnn train's --encoding "
                                      "(default: the one a refsnn export recorded, else direct)")
    p.add_argument("--event-bins", help="with a NIR graph of event data: time | count (default: as recorded, "
                                        "else time)")
    p.add_argument("--event-downsample", type=int, help="with a NIR graph of event data: pool f x f pixels into "
                                                        "one (default: as recorded, else 1)")
    p.add_argument("--dt", type=float, help="with a NIR graph: the Euler step in seconds (default: the dt a refsnn "
                                            "export recorded, else 1e-4)")
    p = sub.add_parser("export-nir", help="write a trained run's network as a NIR graph (HDF5; needs "
                                          "pip install \"refsnn[nir]\")")
    p.add_argument("run", help="run directory (refsnn train), its checkpoint.json, or a ternary export (.npz)")
    p.add_argument("out", help="output NIR file (.nir)")
    p.add_argument("--dt", type=float, default=1e-4, help="the time step in seconds the graph states time "
                                                          "constants at (default: 1e-4)")
    p = sub.add_parser("export-ternary", help="write a ternary run's network as int8 codes + scales (.npz)")
    p.add_argument("run_dir", help="run directory (trained with --ternary) or its checkpoint.json")
    p.add_argument("out", help="output .npz file")
    _convert_parser(sub)
    p = sub.add_parser("plot", help="draw a neuron layer of a trained run for one test sample: spike raster and "
                                    "membrane traces (needs matplotlib: pip install \"refsnn[plot]\")")
    p.add_argument("run_dir", help="run directory (refsnn train), its checkpoint.json, or a ternary export (.npz)")
    p.add_argument("--layer", help="the neuron layer, by its name in refsnn eval's table (default: the first)")
    p.add_argument("--sample", type=int, default=0, help="index of the test sample (default: 0)")
    p.add_argument("--out", required=True, help="image file to write; the format from its extension (.png, .pdf, .svg)")
    p.add_argument("--data-dir", help="where the data set is now, if not where the run was trained")
    # prefix_chars="+" and no help of its own: every argument, "-h" and "--component" included,
    # reaches the verifier's own parser (a REMAINDER positional would reject a leading "--option").
    # The benchmarks are not a subcommand: bench/ is a repository tool, not installed (python -m bench
    # in a checkout).
    p = sub.add_parser("verify", help="agreement with SpikingJelly and snnTorch (python -m refsnn.verify); "
                                      "--user MODULE:FACTORY checks your own PyTorch SNN",
                       prefix_chars="+", add_help=False)
    p.add_argument("rest", nargs="*", help="arguments of python -m refsnn.verify (refsnn verify -h lists them)")
    return parser


def main(argv=None):
    """The command line; under ``mpiexec -n N`` (refsnn.distributed) every process runs it, process
    0 alone prints to stdout, and an error in any process ends them all (exit code kept)."""
    from . import distributed
    try:
        world = distributed.world()
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if world.rank != 0:
        sys.stdout = open(os.devnull, "w")
    code = _main(argv)
    if code and world.size > 1:
        world.abort(code)  # the others may be waiting for this process in a collective
    return code


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["train"]  # the main job: `refsnn train` with its defaults
    from .train import TrainingDiverged
    args = build_parser().parse_args(argv)
    args.argv, args.places = argv, None  # places: run directories a command writes (see _stopped)
    handlers = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    # NumPy's overflow/invalid warnings would print source lines before the one error line: the
    # trainer and the layers check for NaN/Inf themselves and name where they arose
    errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    errstate.__enter__()
    try:
        code = {"train": cmd_train, "eval": cmd_eval, "export-ternary": cmd_export_ternary, "plot": cmd_plot,
                "export-nir": cmd_export_nir,
                "verify": cmd_verify, "convert": cmd_convert}[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe is seen now and not at exit
        return code
    except BrokenPipeError:  # `refsnn eval ... | head`: the reader has gone, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Interrupted as e:
        where = f": {_stopped(args.places, argv)}" if args.places else ""
        print(f"\ninterrupted by {signal.Signals(e.signum).name}{where}", file=sys.stderr)
        return 128 + e.signum
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        where = f"; {_stopped(args.places, argv)}" if args.places and e.errno in WRITE_ERRORS else ""
        print(f"error: {_os_error(e)}{where}", file=sys.stderr)
        return 2
    except ValueError as e:  # refsnn's own errors are ValueErrors (ConfigError, NonFiniteError, ...)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # a missing optional dependency (h5py, nir, matplotlib, mpi4py, torch...)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: a smaller --batch-size or --T needs less (or the input declares sizes "
              "this machine cannot hold)", file=sys.stderr)
        return 2
    finally:
        errstate.__exit__(None, None, None)
        for s, handler in handlers.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
