"""The TNA and CLIF claims in miniature on event data: TNA against plain training, CLIF against
LIF, and CLIF trained with TET as its authors train it (the constant target, and the one-hot
target of their DVS runs; docs/losses.md §6) against plain CLIF, on the SYNTHETIC N-MNIST and SHD
stand-ins shipped in data/ (real file formats, read by refsnn.events; data/README.md). Not the
recorded data sets: the numbers say whether the claims show on these small synthetic tasks,
nothing about N-MNIST or SHD themselves.

    nice -n 10 python -m experiments.events [--seeds 3] [--epochs 10] [--network mlp]

The same runs on the real sets: ``--nmnist-dir DIR --shd-dir DIR`` (the folders holding
``Train/``/``Test/`` and ``shd_train.h5``/``shd_test.h5``). Writes
``experiments/results/events.md`` (``events-<network>.md`` for another network).
"""
import time
from pathlib import Path

from .common import command_line, experiment_parser, log, mean_std, p_text, train_and_measure, welch, write_results

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = [("LIF, plain", dict(neuron="lif", method="plain")), ("CLIF, plain", dict(neuron="clif", method="plain")),
        ("LIF, TNA", dict(neuron="lif", method="tna")), ("CLIF, TNA", dict(neuron="clif", method="tna")),
        ("CLIF, TET", dict(neuron="clif", method="plain", loss="tet")),
        ("CLIF, TET one-hot", dict(neuron="clif", method="plain", loss="tet", tet_target="onehot"))]
COMPARISONS = [("CLIF vs LIF (plain)", "CLIF, plain", "LIF, plain"),
               ("TNA vs plain (CLIF)", "CLIF, TNA", "CLIF, plain"), ("TNA vs plain (LIF)", "LIF, TNA", "LIF, plain"),
               ("TET vs plain CE (CLIF)", "CLIF, TET", "CLIF, plain"),
               ("TET one-hot vs plain CE (CLIF)", "CLIF, TET one-hot", "CLIF, plain")]


def main(argv=None):
    parser = experiment_parser(__doc__.split("\n\n")[0], epochs=10)
    parser.set_defaults(dataset=None)
    parser.add_argument("--network", default="mlp", help="mlp (default) or another refsnn.models network")
    parser.add_argument("--nmnist-dir", default=str(DATA / "SYNTHETIC-nmnist"))
    parser.add_argument("--shd-dir", default=str(DATA / "SYNTHETIC-shd"))
    parser.add_argument("--T-nmnist", type=int, default=8)
    parser.add_argument("--T-shd", type=int, default=10)
    args = parser.parse_args(argv)
    sets = [("nmnist", args.nmnist_dir, args.T_nmnist), ("shd", args.shd_dir, args.T_shd)]
    synthetic = all((Path(d) / "SYNTHETIC.txt").is_file() for _, d, _ in sets)
    start, rows, results = time.perf_counter(), [], {}
    for name, data_dir, T in sets:
        for label, changes in ROWS:
            runs = []
            for seed in range(args.seeds):
                config = dict(network=args.network, dataset=name, data_dir=data_dir, T=T, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, **changes)
                r = train_and_measure(config, seed)
                r.pop("run")
                log(f"{name} {label:<17} seed {seed}: acc {r['test_acc'] * 100:6.2f}%  rate {r['firing_rate']:.4f}  "
                    f"({r['seconds']:.0f} s)")
                runs.append(r)
            results[name, label] = runs
            rows.append([f"{name}{' (SYNTHETIC)' if synthetic else ''}", label, T,
                         mean_std([r["test_acc"] for r in runs]), mean_std([r["firing_rate"] for r in runs], 1, 4),
                         f"{sum(r['seconds'] for r in runs) / len(runs):.1f}"])
    notes = ["Welch's t-test p-values over the seeds (test accuracy):", ""]
    for name, _, _ in sets:
        for what, a, b in COMPARISONS:
            acc = [[r["test_acc"] for r in results[name, k]] for k in (a, b)]
            diff = (sum(acc[0]) / len(acc[0]) - sum(acc[1]) / len(acc[1])) * 100
            notes.append(f"- {name}: {what}: {diff:+.2f} points, p = {p_text(welch(*acc))}")
    notes += ["", "Data: " + ("the SYNTHETIC stand-ins data/SYNTHETIC-nmnist and data/SYNTHETIC-shd (made by "
                              "data/make_synthetic_events.py, seed 0; data/README.md), NOT the recorded N-MNIST and "
                              "SHD" if synthetic else f"{args.nmnist_dir}, {args.shd_dir}") + ". Frames: T bins of "
              "equal duration per recording (refsnn.events.to_frames, binning 'time'), fed as they are. "
              f"{args.network} network, Adam lr {args.lr}, batch {args.batch_size}, cosine schedule, "
              f"{args.epochs} epochs, seeds 0..{args.seeds - 1}; TNA with the trainer's defaults (λ = 0.005); TET "
              "with the CLIF authors' λ = 0.05, the constant target φ = 1 (their default) or the one-hot target "
              "of their DVS runs (-mse_n_reg; docs/losses.md §6)."]
    command = command_line("experiments.events", argv)
    title = "TNA, CLIF and TET on event data in miniature" + (" (SYNTHETIC event sets)" if synthetic else "")
    path = write_results("events.md" if args.network == "mlp" else f"events-{args.network}.md", title,
                         command.strip(), ["data set", "neuron, method", "T", "test acc (%)", "firing rate",
                                           "s per run"], rows, "\n".join(notes), time.perf_counter() - start)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
