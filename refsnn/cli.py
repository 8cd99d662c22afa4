"""``refsnn train | eval | verify | bench`` — the command line."""
import argparse
import dataclasses
import json
import sys
import time
import tomllib

from .energy import ActivityMeter


def _train_parser(sub):
    from .train import TrainConfig
    p = sub.add_parser("train", help="train a spiking network (defaults: CLIF CNN on the shipped 8x8 digits)")
    p.add_argument("--config", help="TOML file with any of the options below (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    helps = {"network": "mlp | cnn", "neuron": "lif | plif | if | clif | s2nn",
             "neuron_options": 'JSON, e.g. \'{"tau": 2.0, "surrogate": "atan"}\'',
             "dataset": "digits | mnist-t10k | mnist | fashion-mnist | kmnist | cifar10 | cifar100",
             "data_dir": "directory holding the data set files (not needed for the shipped ones)",
             "T": "time steps", "encoding": "direct | poisson", "optimizer": "sgd | adam | adamw",
             "schedule": "cosine | step | none", "loss": "ce | tet", "augment": "crop_flip (CIFAR)",
             "dtype": "float32 | float64", "out_dir": "where checkpoints and metrics go",
             "method": "plain | tna | kd | dml", "tna_lambda": "TNA logit-matching weight λ",
             "late_matching": "TNA: λ = 0 for this many first epochs", "twin_precision": "same | full",
             "teacher": "KD: run directory or ternary export of the teacher",
             "ternary": "ternary weights (TWN, straight-through); first/last layers full precision"}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = json.loads if f.name == "neuron_options" else (type(default) if default is not None else str)
        flag = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, **flag,
                       help=f"{helps.get(f.name, '')} (default: {default})")
    return p


def _config_from_args(args):
    from .train import TrainConfig
    values = {}
    if args.config:
        with open(args.config, "rb") as f:
            values.update(tomllib.load(f))
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    return TrainConfig.from_dict(values)


def cmd_train(args):
    from .train import Run, TrainingDiverged, load_run, summary_table
    cfg = _config_from_args(args)
    if args.resume:
        run = load_run(cfg.out_dir)
        if run.epoch >= run.cfg.epochs:
            print(f"run in {cfg.out_dir} already finished {run.epoch} epochs")
        else:
            print(f"resuming {cfg.out_dir} after epoch {run.epoch}")
    else:
        run = Run(cfg)
    c = run.cfg
    print(f"refsnn train: {c.network} with {c.neuron} neurons on {c.dataset} "
          f"({len(run.train_y)} train / {len(run.test_y)} test), T = {c.T}, {c.epochs} epochs, "
          f"{c.optimizer} lr {c.lr}, {c.schedule} schedule, method {c.method}"
          f"{', ternary weights' if c.ternary else ''}, seed {c.seed} → {c.out_dir}")
    start = time.perf_counter()
    try:
        run.fit(progress=not args.no_progress)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 3
    print(f"trained in {time.perf_counter() - start:.1f} s\n")
    print(summary_table(run, ActivityMeter(run.model))[1])
    return 0


def cmd_eval(args):
    from .train import load_for_eval, summary_table
    run = load_for_eval(args.checkpoint)
    print(f"{args.checkpoint}: {run.cfg.network} with {run.cfg.neuron} neurons, {run.cfg.dataset}, "
          f"after epoch {run.epoch}\n")
    print(summary_table(run, ActivityMeter(run.model))[1])
    return 0


def cmd_export_ternary(args):
    from .train import export_ternary_run
    sizes = export_ternary_run(args.run_dir, args.out)
    print(f"wrote {args.out}: ternary weights {sizes['ternary_bytes']:,} bytes (int8 codes + scales), "
          f"the same network in float32 {sizes['float32_bytes']:,} bytes "
          f"({sizes['float32_bytes'] / sizes['ternary_bytes']:.1f}x); file {sizes['file_bytes']:,} bytes")
    return 0


def _convert_parser(sub):
    from .convert import ConvertConfig
    p = sub.add_parser("convert", help="ultra-low-latency ANN-to-SNN conversion (Datta & Beerel 2022): train a "
                                       "clipped-ReLU DNN (or take --dnn), calibrate, convert, fine-tune")
    p.add_argument("--resume", action="store_true", help="continue the fine-tuning saved in --out-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    helps = {"dataset": "digits | mnist-t10k | mnist | fashion-mnist | kmnist | cifar10 | cifar100",
             "network": "mlp | cnn (the DNN, trained with clipped ReLU at T = 1)",
             "dnn_dir": "an existing clipped-ReLU run directory (refsnn train --neuron clipped_relu --T 1) to convert",
             "T": "time steps of the SNN", "calibration_samples": "training images for the (a, b) grid search",
             "dropout": "dropout after every spiking neuron while fine-tuning (mask fixed across steps)",
             "surrogate": "surrogate gradient (boxcar on H/V_th - 1, as the authors)",
             "detach_reset": "no gradient through the reset's spike (the authors' code)",
             "train_amplitude": "learn the spike amplitude b·μ too", "out_dir": "DNN run in OUT_DIR/dnn, SNN checkpoints"}
    for f in dataclasses.fields(ConvertConfig):
        flag = "--dnn" if f.name == "dnn_dir" else f"--{f.name.replace('_', '-')}"
        text = f"{helps.get(f.name, '')} (default: {f.default})"
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, dest=f.name, type=type(f.default) if f.default is not None else str, default=None,
                           help=text)
    return p


def cmd_convert(args):
    from .convert import ConvertConfig, format_report, run_conversion
    from .module import NonFiniteError
    from .train import TrainingDiverged
    cfg = ConvertConfig.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(ConvertConfig)
                                   if getattr(args, f.name) is not None})
    source = f"the DNN run {cfg.dnn_dir}" if cfg.dnn_dir else f"a {cfg.network} DNN trained {cfg.dnn_epochs} epochs"
    print(f"refsnn convert: {source} → SNN with T = {cfg.T}, fine-tuned for {cfg.finetune_epochs} epoch(s) "
          f"(Adam/AMSGrad lr {cfg.finetune_lr}), seed {cfg.seed} → {cfg.out_dir}")
    try:
        results = run_conversion(cfg, progress=not args.no_progress, resume=args.resume)
    except (TrainingDiverged, NonFiniteError) as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 3
    print(f"done in {results['seconds']:.1f} s\n")
    print(format_report(results, cfg))
    return 0


def cmd_bench(args):
    from bench.__main__ import main as bench_main
    return bench_main(args.rest)


def cmd_verify(args):
    from verify.__main__ import main as verify_main
    return verify_main(args.rest)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="refsnn", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    _train_parser(sub)
    p = sub.add_parser("eval", help="evaluate a checkpoint on its test set")
    p.add_argument("checkpoint", help="run directory, its checkpoint.json, or a ternary export (.npz)")
    p = sub.add_parser("export-ternary", help="write a ternary run's network as int8 codes + scales (.npz)")
    p.add_argument("run_dir", help="run directory (trained with --ternary) or its checkpoint.json")
    p.add_argument("out", help="output .npz file")
    _convert_parser(sub)
    # prefix_chars="+" and no help of their own: every argument, "-h" and "--only" included,
    # reaches the tool's own parser (a REMAINDER positional would reject a leading "--option").
    for name, text in (("bench", "side-by-side benchmarks against PyTorch/SpikingJelly (python -m bench)"),
                       ("verify", "agreement with SpikingJelly and snnTorch (python -m verify)")):
        sub.add_parser(name, help=text, prefix_chars="+", add_help=False).add_argument("rest", nargs="*")
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["train"]  # the main job: `refsnn train` with its defaults
    args = parser.parse_args(argv)
    try:
        return {"train": cmd_train, "eval": cmd_eval, "export-ternary": cmd_export_ternary, "bench": cmd_bench,
                "verify": cmd_verify, "convert": cmd_convert}[args.command](args)
    except (FileNotFoundError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
