"""Twin network augmentation against the plain SNN, knowledge distillation and deep mutual
learning, each with full-precision and ternary weights (docs/methods.md §1-3), plus a λ sweep for TNA.

    nice -n 10 python -m experiments.methods [--dataset mnist-t10k] [--seeds 3] [--epochs 5]

Five epochs by default: at the trainer's 20 the plain CLIF CNN already reaches 98.9-99.7 % on the
360 test digits (measured), a ceiling where no method can show a gain.

KD teachers: one full-precision SNN of the same architecture per seed, trained first with its
own seed (1000 + seed) so that it never shares the student's initialization.
Writes ``experiments/results/methods.md`` for the MNIST split (``methods-<dataset>.md`` for other data sets).
"""
import tempfile
import time
from pathlib import Path

import numpy as np

from refsnn.quant import export_bytes, export_ternary, float32_bytes, ternary_layers
from refsnn.train import Run, TrainConfig

from .common import command_line, experiment_parser, results_suffix, log, mean_std, p_text, significance, welch, train_and_measure, write_results

TEACHER_SEED_OFFSET = 1000
METHODS = [("plain SNN", dict(method="plain")), ("KD (SNN teacher)", dict(method="kd")),
           ("DML", dict(method="dml")), ("TNA", dict(method="tna"))]
PRECISIONS = [("full", dict()), ("ternary", dict(ternary=True))]


def measure(config, seed, log, label, out_dir=None):
    r = train_and_measure(config, seed, out_dir=out_dir)
    run = r.pop("run")
    r["twin_test_acc"] = run.history[-1].get("twin_test_acc")
    twin = f"  twin {r['twin_test_acc'] * 100:6.2f}%" if r["twin_test_acc"] is not None else ""
    log(f"{label:<40} seed {seed}: acc {r['test_acc'] * 100:6.2f}%{twin}  rate {r['firing_rate']:.4f}  "
        f"E {r['snn_energy_nj']:8.1f} nJ  ({r['seconds']:.0f} s)")
    return r


def train_teachers(base, seeds, directory, log):
    """One full-precision plain SNN per seed, kept in ``directory/teacher-<seed>``."""
    teachers = {}
    for seed in seeds:
        out_dir = Path(directory) / f"teacher-{seed}"
        teachers[seed] = (out_dir, measure(dict(base), TEACHER_SEED_OFFSET + seed, log, "teacher (plain SNN)", out_dir))
    return teachers


def run_grid(base, seeds, teachers, rows, log):
    """``rows``: (label, config changes); returns {label: [result dicts]} over ``seeds``."""
    results = {}
    for label, changes in rows:
        results[label] = []
        for seed in seeds:
            config = dict(base, **changes)
            if config.get("method") == "kd":
                config["teacher"] = str(teachers[seed][0])
            results[label].append(measure(config, seed, log, label))
    return results


def ternary_footprint(base):
    """(ternary weights, all parameters, export bytes, float32 bytes) of the ternary network."""
    with tempfile.TemporaryDirectory() as tmp:
        model = Run(TrainConfig(**base, ternary=True, out_dir=tmp), training=False).model
    ternary = sum(m.params["weight"].size for _, m in ternary_layers(model))
    total = sum(p.size for _, p, _ in model.named_parameters())
    return ternary, total, export_bytes(export_ternary(model)), float32_bytes(model)


def table_rows(results):
    out = []
    for label, rs in results.items():
        twins = [r["twin_test_acc"] for r in rs]
        snn = [r["snn_energy_nj"] for r in rs]
        out.append([label, mean_std([r["test_acc"] for r in rs]), mean_std(twins) if twins[0] is not None else "—",
                    mean_std([r["firing_rate"] for r in rs]), mean_std(snn, scale=1, digits=1),
                    f"{np.mean(snn) / rs[0]['dnn_energy_nj']:.2f}", f"{np.mean([r['seconds'] for r in rs]):.0f}"])
    return out


def verdict(results):
    acc = {label: np.array([r["test_acc"] for r in rs]) * 100 for label, rs in results.items()}
    lines = ["**Do the paper's claims hold here?** (Welch's t-test over seeds; p > 0.05 means the difference "
             "is within the seed-to-seed noise of this run.)", ""]
    gains = {}
    for precision, _ in PRECISIONS:
        tna = acc[f"TNA, {precision}"]
        for other in ("plain SNN", "KD (SNN teacher)", "DML"):
            ref = acc[f"{other}, {precision}"]
            d, p = tna.mean() - ref.mean(), welch(tna, ref)
            word = ("TNA better" if d > 0 else "TNA worse" if d < 0 else "equal") + significance(p)
            lines.append(f"- {precision} weights, TNA vs {other}: {d:+.2f} points, p = {p_text(p, '.3f')}: {word}.")
        gains[precision] = tna.mean() - acc[f"plain SNN, {precision}"].mean()
    beats = {precision: all(acc[f"TNA, {precision}"].mean() > acc[f"{o}, {precision}"].mean()
                            and welch(acc[f"TNA, {precision}"], acc[f"{o}, {precision}"]) < 0.05
                            for o in ("plain SNN", "KD (SNN teacher)"))
             for precision, _ in PRECISIONS}
    lines += ["", "Claim 1, TNA beats the plain SNN and KD: "
              + ", ".join(f"{p} weights: {'holds (significantly better than both)' if beats[p] else 'not shown'}"
                          for p in beats) + ".",
              "", f"Claim 2, the gain is largest with ternary weights: TNA − plain = {gains['full']:+.2f} points at "
              f"full precision, {gains['ternary']:+.2f} points with ternary weights: "
              + ("larger with ternary weights" if gains["ternary"] > gains["full"] else "not larger with ternary weights")
              + " (a difference of means over seeds, not itself tested)."]
    return "\n".join(lines)


def per_seed(results):
    return "\n".join(f"- {label}: " + ", ".join(f"{r['test_acc'] * 100:.2f}" for r in rs) for label, rs in results.items())


def main(argv=None):
    parser = experiment_parser(__doc__, epochs=5, batch_and_lr=False)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--lambdas", default="0.001,0.05,0.5",
                        help="extra TNA λ values for the sweep (0.005, the default, is in the main table); '' skips it")
    parser.add_argument("--out", default=None, help="results file (default results/methods[-dataset].md)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    seeds = range(args.seeds)
    base = dict(network="cnn", neuron="clif", dataset=args.dataset, T=args.T, epochs=args.epochs)
    rows = [(f"{method}, {precision}", dict(m, **q)) for precision, q in PRECISIONS for method, m in METHODS]
    lambdas = [float(v) for v in args.lambdas.split(",") if v.strip()]
    sweep_rows = [(f"TNA λ = {lam:g}, {precision}", dict(method="tna", tna_lambda=lam, **q))
                  for precision, q in PRECISIONS for lam in sorted(lambdas + [0.005])]
    with tempfile.TemporaryDirectory(prefix="refsnn-teachers-") as directory:
        teachers = train_teachers(base, seeds, directory, log)
        results = run_grid(base, seeds, teachers, rows, log)
        sweep = run_grid(base, seeds, teachers, [r for r in sweep_rows if "λ = 0.005," not in r[0]], log)
    for precision, _ in PRECISIONS:   # λ = 0.005 is the main table's TNA row
        sweep[f"TNA λ = 0.005, {precision}"] = results[f"TNA, {precision}"]
    sweep = {label: sweep[label] for label, _ in sweep_rows if label in sweep}
    seconds = time.perf_counter() - start

    teacher_acc = [t[1]["test_acc"] for t in teachers.values()]
    n_ternary, n_params, ternary_bytes, fp32_bytes = ternary_footprint(base)
    command = command_line("experiments.methods", argv)
    header = ["method, weights", "test acc (%)", "twin test acc (%)", "firing rate (%)", "SNN energy (nJ)",
              "SNN / DNN energy", "seconds / run"]
    sweep_table = "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
                            + ["| " + " | ".join(map(str, row)) + " |" for row in table_rows(sweep)])
    notes = f"""Setup: small CNN (refsnn.models.small_cnn: [conv3x3 → BatchNorm → CLIF → maxpool2] × 2 → linear)
on `{args.dataset}`, T = {args.T}, direct encoding, Adam lr 1e-2, cosine schedule, batch 64, {args.epochs} epochs (teachers included),
seeds 0..{args.seeds - 1} (the seed fixes initialization and batch order; the twin's initialization is derived from
it). Methods (refsnn.train, `--method`): plain = CE on the time-mean logits; KD = (1 − a)·CE + a·τ²·KL with
a = 0.9, τ = 4 from a frozen teacher; DML = both CEs + symmetric KL (τ = 1) between two co-trained networks;
TNA = both CEs + λ·(1/N)·Σ(z_b − z_t)², λ = 0.005. Twins (DML, TNA) have the same architecture, their own
Adam and cosine schedule, and are quantized like the base (`twin_precision = same`); only the base is kept
and measured. Ternary = TWN weights with a straight-through estimator, per layer, Δ = 0.7·mean|W|, on the
hidden conv only: the first conv (analog pixels) and the classifier stay full precision, the defaults
({n_ternary:,} of the network's {n_params:,} parameters; `refsnn export-ternary` stores it in {ternary_bytes:,} bytes
of arrays against {fp32_bytes:,} bytes in float32).

KD teacher: for each seed s one full-precision plain SNN of the same architecture trained first with seed
{TEACHER_SEED_OFFSET} + s (so it never shares the student's initialization), the same for the full-precision
and the ternary students. Teacher test accuracy: {mean_std(teacher_acc)} % ({", ".join(f"{a * 100:.2f}" for a in teacher_acc)}).

Columns: test accuracy of the base network in %, mean ± sample standard deviation (ddof = 1) over seeds;
twin test accuracy (DML, TNA: the discarded twin, for reference); firing rate = spikes per neuron per step
averaged over the neuron layers, in %; SNN energy per test sample on the 45 nm figures (E_MAC 4.6 pJ × T for
the first conv, whose input is analog; E_AC 0.9 pJ per synaptic operation elsewhere) and its ratio to the
same network run as a DNN. The energy model counts a ternary weight's accumulate like a float one.
Seconds = mean wall time of one training run + test evaluation on a shared 2-core machine.

Test accuracy per seed:
{per_seed(results)}

{verdict(results)}
"""
    if lambdas:
        notes += f"""
## λ sweep for TNA

{sweep_table}

Per seed:
{per_seed(sweep)}
"""
    name = args.out or f"methods{results_suffix(args.dataset)}.md"
    path = write_results(name, f"TNA vs plain SNN, KD and DML, full-precision and ternary weights ({args.dataset})",
                         command.strip(), header, table_rows(results), notes, seconds)
    print(path)


if __name__ == "__main__":
    main()
