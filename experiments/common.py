"""Shared helpers for the experiment scripts: their common options, train one configuration and
measure it, format mean ± std, write a results file that says how it was made."""
import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from refsnn.energy import ActivityMeter
from refsnn.neurons import BaseNeuron
from refsnn.train import Run, TrainConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAIN_DATASET = "mnist-t10k"   # the MNIST split (8,000 train / 2,000 test): big enough to separate the methods


def results_suffix(dataset):
    """``""`` for the main data set, ``"-<dataset>"`` for the others: ``methods.md``, ``methods-digits.md``."""
    return "" if dataset == MAIN_DATASET else f"-{dataset}"


def experiment_parser(description, epochs, batch_and_lr=True):
    """The options every experiment takes: --dataset (default the MNIST split), --seeds, --epochs (and --batch-size, --lr)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=MAIN_DATASET)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=epochs)
    if batch_and_lr:
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--lr", type=float, default=1e-2)
    return parser


def command_line(module, argv=None):
    """The shell command that reruns ``python -m module`` with ``argv`` (``sys.argv[1:]`` when None),
    quoted for the shell (an empty argument such as ``--lambdas ''`` stays visible)."""
    return shlex.join(["nice", "-n", "10", "python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def log(message):
    """Progress to stderr, so that stdout holds only results."""
    print(message, file=sys.stderr, flush=True)


def train_and_measure(config, seed, out_dir=None):
    """Train ``TrainConfig(**config, seed=seed)`` quietly, then measure the test set.

    Returns ``test_acc``, ``firing_rate`` (spikes per neuron per step, the mean over the neuron
    layers; None when the network has none, e.g. the ReLU twin), ``snn_energy_nj`` and
    ``dnn_energy_nj`` (per sample, refsnn.energy), ``seconds`` (training + measuring) and ``run``.
    Checkpoints go to a temporary directory that is deleted afterwards unless ``out_dir`` is given.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="refsnn-exp-") as tmp:
        cfg = TrainConfig(**config, seed=seed, out_dir=str(out_dir) if out_dir is not None else tmp)
        run = Run(cfg)
        run.fit(progress=False, log=lambda *_: None)
        meter = ActivityMeter(run.model)
        _, test_acc = run.evaluate(meter)
    rates = [r["rate"] for r in meter.rows() if isinstance(meter.stats[r["layer"]]["module"], BaseNeuron)]
    energy = meter.energy()
    return {"test_acc": float(test_acc),
            "firing_rate": float(np.mean(rates)) if rates else None,
            "snn_energy_nj": energy["snn_joules"] * 1e9,
            "dnn_energy_nj": energy["dnn_joules"] * 1e9,
            "seconds": time.perf_counter() - start,
            "run": run}


def mean_std(values, scale=100, digits=2):
    """``"98.12 ± 0.31"``: mean and sample standard deviation (ddof=1) of ``values × scale``;
    a single value prints without ± and None values give "—"."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    x = np.asarray(values, dtype=np.float64) * scale
    if len(x) == 1:
        return f"{x[0]:.{digits}f}"
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"


def machine():
    return f"{platform.node() or 'unknown host'}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"


def write_results(path, title, command, header, rows, notes="", seconds=None):
    """A markdown results file: title, the command that regenerates it, run time, machine, date,
    the table (``header``: column names; ``rows``: lists of cells) and free-form notes.
    A bare file name lands in ``experiments/results/``."""
    path = Path(path)
    if path.parent == Path("."):
        path = RESULTS_DIR / path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Regenerate: `{command}`", ""]
    if seconds is not None:
        lines.append(f"Total run time: {seconds:.0f} s ({seconds / 60:.1f} min)  ")
    lines += [f"Machine: {machine()}  ", f"Date: {datetime.date.today().isoformat()}", "",
              "| " + " | ".join(map(str, header)) + " |",
              "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    if notes:
        lines += ["", notes.strip()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def welch(a, b):
    """Welch's t-test p-value for mean(a) ≠ mean(b). nan means no test: either group has fewer than 2
    values (one seed has no spread to test against), or both have no spread and equal means; 0.0 when
    both have no spread and the means differ. nan < 0.05 is False, so it never counts as significant."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.std(a) == 0 and np.std(b) == 0:
        return float("nan") if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def p_text(p, spec=".3g"):
    """A p-value from :func:`welch` for a table or a sentence: ``"n/a"`` when there is no test (nan)."""
    return "n/a" if np.isnan(p) else format(p, spec)


def significance(p):
    """The verdict words for a p-value from :func:`welch` (nan: no test, never significant)."""
    return " (no test: fewer than 2 seeds)" if np.isnan(p) else " (significant)" if p < 0.05 else " (not significant)"
