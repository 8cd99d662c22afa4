"""Neurons (CLIF paper, Huang et al. ICML 2024): LIF vs PLIF vs CLIF at several T, and the
temporal gradient analysis (how much gradient reaches early time steps) for the same networks.

    nice -n 10 python -m experiments.neurons [--dataset mnist-t10k] [--seeds 3] [--epochs 20] [--T 2 4 6]

Writes ``experiments/results/neurons.md``, ``temporal_gradients.md`` and ``temporal_gradients.png``
(with a ``-<dataset>`` suffix for data sets other than the MNIST split).
"""
import time

import numpy as np

from refsnn.analysis import temporal_gradient_norms
from refsnn.data import get_dataset
from refsnn.encoding import direct
from refsnn.models import build_network

from .common import command_line, RESULTS_DIR, experiment_parser, log, p_text, results_suffix, mean_std, train_and_measure, welch, write_results

# The CLIF paper's setup for all three neurons: tau = 2, no input decay, soft reset, the same
# rectangular surrogate (its train.py default), so that LIF and PLIF differ from CLIF only by
# the complementary membrane (PLIF: by the learnable leak).
SHARED = {"surrogate": "rect"}
NEURONS = [("LIF", "lif", dict(SHARED, tau=2.0, decay_input=False, v_reset=None)),
           ("PLIF", "plif", dict(SHARED, init_tau=2.0, decay_input=False, v_reset=None)),
           ("CLIF", "clif", dict(SHARED, tau=2.0))]
ANALYSIS_SAMPLES = 256


def train_all(base, seeds, Ts, analysis_T):
    """{(label, T): [results]}; the trained models at ``analysis_T`` are kept for the analysis."""
    results = {}
    for T in Ts:
        for label, neuron, options in NEURONS:
            rs = results[label, T] = []
            for seed in seeds:
                r = train_and_measure(dict(base, neuron=neuron, neuron_options=dict(options), T=T), seed)
                if T != analysis_T:
                    r.pop("run")
                rs.append(r)
                log(f"{label:<5} T={T} seed {seed}: acc {r['test_acc'] * 100:6.2f}%  rate {r['firing_rate']:.4f}  "
                    f"E {r['snn_energy_nj']:7.1f} nJ  ({r['seconds']:.0f} s)")
    return results


def accuracy_rows(results, Ts):
    rows = []
    for T in Ts:
        for label, _, _ in NEURONS:
            rs = results[label, T]
            rows.append([label, T, mean_std([r["test_acc"] for r in rs]), mean_std([r["firing_rate"] for r in rs]),
                         mean_std([r["snn_energy_nj"] for r in rs], scale=1, digits=1),
                         f"{np.mean([r['snn_energy_nj'] / r['dnn_energy_nj'] for r in rs]):.2f}",
                         f"{np.mean([r['seconds'] for r in rs]):.0f}"])
    return rows


def verdict(results, Ts):
    lines = ["**Does the paper's claim (CLIF beats LIF and PLIF) hold here?** Welch's t-test over seeds; "
             "p > 0.05 means the difference is within the seed-to-seed noise of this run.", ""]
    wins = []
    for T in Ts:
        clif = np.array([r["test_acc"] for r in results["CLIF", T]]) * 100
        for other in ("LIF", "PLIF"):
            acc = np.array([r["test_acc"] for r in results[other, T]]) * 100
            d = clif.mean() - acc.mean()
            p = welch(clif, acc)
            wins.append(d > 0 and p < 0.05)
            lines.append(f"- T = {T}: CLIF − {other} = {d:+.2f} points (p = {p_text(p, '.3f')}).")
    summary = ("holds: CLIF is significantly better than both at every T." if all(wins) else
               f"holds in {sum(wins)} of {len(wins)} comparisons (significant and in CLIF's favor); "
               "elsewhere it is not shown at this scale.")
    return "\n".join(lines + ["", "Accuracy claim " + summary])


# ------------------------------------------------------------------------------------------
# temporal gradients
# ------------------------------------------------------------------------------------------
def gradient_profiles(results, base, seeds, T, x, y, info):
    """{(label, stage, loss): [T] mean over seeds of ‖∂L/∂X[t]‖ (all neuron layers together),
    plus the per-layer profiles under "last"}."""
    profiles, layers = {}, {}
    xs = direct(x.astype(np.float32), T)
    for label, neuron, options in NEURONS:
        for stage in ("init", "trained"):
            for loss in ("ce", "last"):
                per_seed = []
                for i, seed in enumerate(seeds):
                    model = (build_network(base["network"], info["input_shape"], info["num_classes"], neuron=neuron,
                                           neuron_options=options, seed=seed) if stage == "init"
                             else results[label, T][i]["run"].model)
                    norms = temporal_gradient_norms(model, xs, y, loss=loss)
                    per_seed.append(norms)
                profiles[label, stage, loss] = np.mean([n["total"] for n in per_seed], axis=0)
                if loss == "last":
                    names = [k for k in per_seed[0] if k not in ("total", "input")]
                    layers[label, stage] = {k: np.mean([n[k] for n in per_seed], axis=0) for k in names}
    return profiles, layers


def gradient_table(profiles, layers, T):
    header = ["neuron", "stage", "loss", "layer"] + [f"t = {t}" for t in range(T)] + ["‖g[T−1]‖"]
    rows = []
    for (label, stage, loss), g in profiles.items():
        rows.append([label, stage, loss, "all"] + [f"{v / g[-1]:.3g}" for v in g] + [f"{g[-1]:.3g}"])
        if loss == "last":
            for name, gl in layers[label, stage].items():
                rows.append([label, stage, loss, name] + [f"{v / gl[-1]:.3g}" for v in gl] + [f"{gl[-1]:.3g}"])
    return header, rows


def plot(profiles, T, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    colors = {"LIF": "tab:blue", "PLIF": "tab:green", "CLIF": "tab:red"}
    markers = {"LIF": "o", "PLIF": "x", "CLIF": "s"}  # LIF and PLIF coincide at init: PLIF's leak starts at tau = 2
    titles = {"ce": "training loss (CE of the time-mean logits)",
              "last": "CE of the last step only (temporal paths)"}
    for ax, loss in zip(axes, ("ce", "last")):
        for (label, stage, lo), g in profiles.items():
            if lo == loss:
                ax.plot(range(T), g / g[-1], color=colors[label], linestyle="--" if stage == "init" else "-",
                        marker=markers[label], label=f"{label}, {stage}")
        if loss == "last":  # geometric decay: straight lines on a log scale
            ax.set_yscale("log")
        ax.set_xticks(range(T))
        ax.set_xlabel("time step t")
        ax.set_ylabel("‖∂L/∂X[t]‖ / ‖∂L/∂X[T−1]‖")
        ax.set_title(titles[loss], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gradient_verdict(profiles):
    lines = []
    for stage in ("init", "trained"):
        first = {label: profiles[label, stage, "last"][0] / profiles[label, stage, "last"][-1]
                 for label, _, _ in NEURONS}
        lines.append(f"- {stage}: gradient of the last-step loss reaching t = 0, relative to t = T−1: "
                     + ", ".join(f"{label} {v:.3g}" for label, v in first.items())
                     + f" (CLIF / LIF = {first['CLIF'] / first['LIF']:.2f}).")
    return "\n".join(lines)


def main(argv=None):
    parser = experiment_parser(__doc__, epochs=20)
    parser.add_argument("--T", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--analysis-T", type=int, default=6, help="T of the gradient analysis (must be in --T)")
    args = parser.parse_args(argv)
    if args.analysis_T not in args.T:
        parser.error("--analysis-T must be one of --T (the analysis uses those trained networks)")
    start = time.perf_counter()
    seeds = range(args.seeds)
    base = dict(network="cnn", dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    results = train_all(base, seeds, args.T, args.analysis_T)
    train_seconds = time.perf_counter() - start

    _, _, test_x, test_y, info = get_dataset(args.dataset)
    profiles, layers = gradient_profiles(results, base, seeds, args.analysis_T, test_x[:ANALYSIS_SAMPLES],
                                         test_y[:ANALYSIS_SAMPLES], info)
    suffix = results_suffix(args.dataset)
    png = RESULTS_DIR / f"temporal_gradients{suffix}.png"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(profiles, args.analysis_T, png)
    seconds = time.perf_counter() - start
    command = command_line("experiments.neurons", argv)
    setup = f"""Setup: small CNN (refsnn.models.small_cnn) on `{args.dataset}`, direct encoding, Adam lr {args.lr},
cosine schedule, batch {args.batch_size}, {args.epochs} epochs, cross-entropy of the time-mean logits, seeds
0..{args.seeds - 1}. All three neurons as in the CLIF paper's code: tau = 2, no input decay, soft reset,
rectangular surrogate (α = 1); PLIF's leak is learnable (initial tau 2)."""
    per_seed = "\n".join(f"- {label}, T = {T}: " + ", ".join(f"{r['test_acc'] * 100:.2f}" for r in rs)
                         for (label, T), rs in results.items())
    notes = f"""{setup}

Columns: test accuracy in %, mean ± sample standard deviation (ddof = 1) over seeds; firing rate =
spikes per neuron per step averaged over the neuron layers, in %; SNN energy per test sample on the
45 nm figures (first conv: MACs × T × 4.6 pJ; spike-driven layers: synaptic operations × 0.9 pJ) and
its ratio to the same network as a DNN (one step, Σ MACs × 4.6 pJ); seconds = mean wall time of one
training run + test evaluation on a shared 2-core machine. Training took {train_seconds:.0f} s in all.

Test accuracy per seed:
{per_seed}

{verdict(results, args.T)}

The temporal gradient analysis of these networks is in `temporal_gradients{suffix}.md`.
"""
    header = ["neuron", "T", "test acc (%)", "firing rate (%)", "SNN energy (nJ)", "SNN / DNN energy", "seconds / run"]
    path = write_results(f"neurons{suffix}.md", f"LIF vs PLIF vs CLIF ({args.dataset})", command.strip(), header,
                         accuracy_rows(results, args.T), notes, seconds)
    print(path)

    g_header, g_rows = gradient_table(profiles, layers, args.analysis_T)
    g_notes = f"""{setup}

What is measured (refsnn.analysis.temporal_gradient_norms): for each neuron layer, the Euclidean norm over a
batch of {ANALYSIS_SAMPLES} test images of ∂L/∂X[t], the gradient of the batch-mean loss with respect to
that layer's input current at step t (what trains the weights feeding it at that step); "all" is the
norm over all neuron layers together. Networks in training mode (BatchNorm on batch statistics), T =
{args.analysis_T}, averaged over the {args.seeds} seeds; "init" = the freshly initialized network of each
seed, "trained" = the networks of `neurons{suffix}.md` after training. Each row is divided by its value at the
last step, whose absolute size is the last column. Layer names are module names: `2` is the first
neuron layer, `6` the second.

Two losses:
- `ce`, the training loss (cross-entropy of the time-mean logits): every step receives a direct
  gradient from its own output, so a flat profile is expected for any neuron;
- `last`, the cross-entropy of the last step's logits alone: step t < T−1 receives gradient only
  through the membrane (and the complementary membrane) carried forward in time, plus a small
  coupling through BatchNorm's batch statistics. This is the quantity the CLIF paper's argument is
  about: for LIF, wherever the surrogate is zero (|H − V_th| ≥ 1/2 for rect), each step back multiplies
  the carried gradient by exactly 1 − 1/tau = 1/2.

Plot: `temporal_gradients{suffix}.png` (dashed = init, solid = trained; the `last` panel on a log scale). LIF and PLIF are
identical at initialization (PLIF's leak starts at tau = 2), so their "init" rows coincide.

**Does the claim (CLIF's gradient reaches early steps where LIF's vanishes) hold here?**
{gradient_verdict(profiles)}
A ratio > 1 for CLIF / LIF means more gradient reaches the first step under CLIF.
"""
    path = write_results(f"temporal_gradients{suffix}.md", f"Temporal gradients, LIF vs PLIF vs CLIF ({args.dataset})",
                         command.strip(), g_header, g_rows, g_notes, seconds)
    print(path)
    print(png)


if __name__ == "__main__":
    main()
