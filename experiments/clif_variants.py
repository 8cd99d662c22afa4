"""The CLIF authors' neuron options side by side (Huang et al., ICML 2024; HuuYuLong/Complementary-LIF).

The authors train CLIF with tau = 2, soft reset, no input decay and their ``Rectangle()`` surrogate at
α = 1 (train.py:52, 260-261; modules/neuron.py:40-41): refsnn's default CLIF. Their neuron also offers a
hard reset and ``decay_input``, and their Rectangle(α) has height 1/α and width α where refsnn's and
SpikingJelly's ``rect`` has height α and width 1/α (docs/neurons.md). This trains each option on the
same small CNN and seeds, and tests each against the default.

    nice -n 10 python -m experiments.clif_variants [--dataset mnist-t10k] [--seeds 3] [--epochs 3] [--T 4]

Writes ``experiments/results/clif_variants.md`` (``clif_variants-<dataset>.md`` for other data sets).
"""
import time

import numpy as np

from .common import command_line, experiment_parser, log, mean_std, p_text, results_suffix, train_and_measure, welch, write_results

DEFAULT = {"tau": 2.0, "surrogate": "rect"}   # = the authors' training setup
VARIANTS = [("CLIF (authors' training setup: soft reset, rect α = 1)", {}),
            ("CLIF, hard reset (v_reset = 0)", {"v_reset": 0.0}),
            ("CLIF, decay_input", {"decay_input": True}),
            ("CLIF, rect α = 2 (refsnn/SpikingJelly: height 2, width 1/2)", {"alpha": 2.0}),
            ("CLIF, rect_authors α = 2 (authors: height 1/2, width 2)", {"surrogate": "rect_authors", "alpha": 2.0})]


def main(argv=None):
    parser = experiment_parser(__doc__, epochs=3)
    parser.add_argument("--T", type=int, default=4)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = dict(network="cnn", neuron="clif", dataset=args.dataset, T=args.T, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr)
    results = {}
    for label, options in VARIANTS:
        rs = results[label] = []
        for seed in range(args.seeds):
            r = train_and_measure(dict(base, neuron_options=dict(DEFAULT, **options)), seed)
            r.pop("run")
            rs.append(r)
            log(f"{label:<62} seed {seed}: acc {r['test_acc'] * 100:6.2f}%  rate {r['firing_rate']:.4f}  "
                f"({r['seconds']:.0f} s)")
    seconds = time.perf_counter() - start

    acc = {label: np.array([r["test_acc"] for r in rs]) * 100 for label, rs in results.items()}
    default = VARIANTS[0][0]
    rows = []
    for label, rs in results.items():
        d, p = ("—", "—") if label == default else (f"{acc[label].mean() - acc[default].mean():+.2f}",
                                                   p_text(welch(acc[label], acc[default])))
        rows.append([label, mean_std([r["test_acc"] for r in rs]), d, p, mean_std([r["firing_rate"] for r in rs]),
                     f"{np.mean([r['seconds'] for r in rs]):.0f}"])
    per_seed = "\n".join(f"- {label}: " + ", ".join(f"{a:.2f}" for a in acc[label]) for label in acc)
    worse = [label for label in acc if label != default and acc[label].mean() < acc[default].mean()
             and welch(acc[label], acc[default]) < 0.05]
    better = [label for label in acc if label != default and acc[label].mean() > acc[default].mean()
              and welch(acc[label], acc[default]) < 0.05]
    rect, authors = acc[VARIANTS[3][0]], acc[VARIANTS[4][0]]
    convention = f"{authors.mean() - rect.mean():+.2f} points (p = {p_text(welch(authors, rect))})"
    notes = f"""Setup: small CNN (refsnn.models.small_cnn: [conv3x3 → BatchNorm → CLIF → maxpool2] × 2 → linear) on
`{args.dataset}`, T = {args.T}, direct encoding, Adam lr {args.lr}, cosine schedule, batch {args.batch_size}, {args.epochs} epochs,
cross-entropy of the time-mean logits, seeds 0..{args.seeds - 1}; every row CLIF with tau = 2 and only the named option
changed. The first row is the configuration the authors train with, and refsnn's default; with the same seeds it
reproduces the CLIF row at T = {args.T} of `neurons{results_suffix(args.dataset)}.md` when the epochs agree.

Columns: test accuracy in %, mean ± sample std (ddof = 1) over seeds; its difference from the first row in points
and Welch's t-test p-value; firing rate = spikes per neuron per step over the neuron layers, in %; seconds = mean wall
time of one run on a shared 2-core machine.

Test accuracy per seed:
{per_seed}

Verdict: significantly worse than the authors' setup (p < 0.05): {", ".join(worse) or "none"}; significantly
better: {", ".join(better) or "none"}. The two α = 2 rows differ only in the rectangle's convention: the
authors' minus refsnn's is {convention}, what confusing the two conventions changes at α ≠ 1 (at α = 1
they coincide apart from the edge point |u| = 1/2).
"""
    command = command_line("experiments.clif_variants", argv)
    header = ["CLIF option", "test acc (%)", "− first row (points)", "p (Welch)", "firing rate (%)", "seconds / run"]
    path = write_results(f"clif_variants{results_suffix(args.dataset)}.md",
                         f"The CLIF authors' neuron options ({args.dataset}, T = {args.T})", command.strip(), header,
                         rows, notes, seconds)
    print(path)


if __name__ == "__main__":
    main()
