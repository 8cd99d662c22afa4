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
             "dtype": "float32 | float64", "out_dir": "where checkpoints and metrics go"}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = json.loads if f.name == "neuron_options" else (type(default) if default is not None else str)
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
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
          f"{c.optimizer} lr {c.lr}, {c.schedule} schedule, seed {c.seed} → {c.out_dir}")
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
    from .train import load_run, summary_table
    run = load_run(args.checkpoint)
    print(f"{args.checkpoint}: {run.cfg.network} with {run.cfg.neuron} neurons, {run.cfg.dataset}, "
          f"after epoch {run.epoch}\n")
    print(summary_table(run, ActivityMeter(run.model))[1])
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
    p.add_argument("checkpoint", help="run directory or its checkpoint.json")
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
        return {"train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "verify": cmd_verify}[args.command](args)
    except (FileNotFoundError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
