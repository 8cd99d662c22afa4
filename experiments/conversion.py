"""Ultra-low-latency ANN-to-SNN conversion (Datta & Beerel, DATE 2022; docs/methods.md §4) in miniature,
fine-tuned with refsnn's exact gradients and with the authors' rules side by side (§4.1).

For each seed a clipped-ReLU DNN (the small CNN, trained by the ordinary trainer at T = 1) is
converted at every T: once naively (V_th = μ, amplitude μ: a = b = 1), once by threshold
balancing (p99.9), once with the calibrated per-layer (a, b), computed once per T. The calibrated
SNN is then fine-tuned twice from the same conversion (same (a, b), weights and dropout seeds):
``variant="exact"`` (boxcar surrogate, exact gradient, CE on time-averaged logits, Adam/AMSGrad at a
constant lr 1e-4) and ``variant="authors"`` (amplitude 1.3·(b/a)·V_th tied to the threshold, their
backward, CE on summed logits, lr ÷5 at 60/80/90% of the epochs). The test set is measured after
each stage; firing rate and energy (docs/methods.md §6) after fine-tuning; Welch's t-test per T
for authors vs exact.

    NUMBA_NUM_THREADS=1 nice -n 10 python -m experiments.conversion          # MNIST split, 3 seeds
    nice -n 10 python -m experiments.conversion --datasets digits            # results/conversion-digits.md
    nice -n 10 python -m experiments.conversion --seeds 1 --quick --out /tmp/c.md   # smoke test
"""
import argparse
import os
import time

import numpy as np

from experiments.common import command_line, mean_std, p_text, results_suffix, train_and_measure, welch, write_results
from refsnn.convert import (authors_lr, calibrate, clipped_relus, collect_preactivations, convert, evaluate_snn,
                            finetune_epoch, make_finetune_optimizer)
from refsnn.energy import SpikeMeter, activity_summary

# dataset -> (network, DNN epochs, fine-tuning epochs, calibration images)
SETUPS = {"mnist-t10k": ("cnn", 5, 2, 1024), "digits": ("cnn", 20, 5, 512)}
FINETUNE_LR = 1e-4
DROPOUT = 0.1
BATCH = 64
VARIANTS = ("exact", "authors")


def finetune_and_measure(run, scales, variant, T, epochs, seed):
    """Convert with ``scales`` (dropout masks from seed (seed, 4): the same for both variants),
    fine-tune ``epochs`` epochs with ``variant``'s rules, measure: accuracies, activity, energy."""
    snn = convert(run.model, scales, dropout=DROPOUT, rng=np.random.default_rng([seed, 4]), variant=variant)
    converted_acc = evaluate_snn(snn, run.test_x, run.test_y, T)[1]
    opt = make_finetune_optimizer(snn, FINETUNE_LR)
    for epoch in range(epochs):
        if variant == "authors":
            opt.lr = authors_lr(FINETUNE_LR, epoch + 1, epochs)
        finetune_epoch(snn, opt, run.train_x, run.train_y, T, BATCH, seed, epoch, variant=variant)
    meter = SpikeMeter(snn)
    finetuned_acc = evaluate_snn(snn, run.test_x, run.test_y, T, meter=meter)[1]
    activity = activity_summary(meter)
    energies = [r["energy"] for r in meter.rows() if "energy" in r]
    activity["first_layer_share"] = energies[0] / sum(energies)
    return {"converted_acc": converted_acc, "finetuned_acc": finetuned_acc, **activity}


def one_seed(dataset, seed, Ts, quick, log):
    network, dnn_epochs, ft_epochs, n_calib = SETUPS[dataset]
    if quick:
        dnn_epochs, ft_epochs = 1, 1
    dnn = train_and_measure({"network": network, "neuron": "clipped_relu", "dataset": dataset, "T": 1,
                             "epochs": dnn_epochs, "batch_size": BATCH, "lr": 1e-2}, seed)
    run = dnn["run"]
    mus = [float(r.params["threshold"]) for r in clipped_relus(run.model)]
    rng = np.random.default_rng([seed, 3])
    calib = run.train_x[np.sort(rng.choice(len(run.train_x), n_calib, replace=False))]
    # threshold balancing at the 99.9th percentile of the positive activations (Rueckauer et al. 2017)
    percentiles = [float(np.percentile(np.minimum(x[x > 0], mu), 99.9))
                   for x, mu in zip(collect_preactivations(run.model, calib, rng=rng), mus)]
    log(f"{dataset} seed {seed}: DNN {dnn['test_acc'] * 100:.2f}% ({dnn['seconds']:.0f} s), "
        f"μ = {[round(mu, 3) for mu in mus]}, p99.9 = {[round(p, 3) for p in percentiles]}")
    rows = []
    for T in Ts:
        start = time.perf_counter()
        naive_acc = evaluate_snn(convert(run.model, [{"mu": mu, "a": 1.0, "b": 1.0} for mu in mus]),
                             run.test_x, run.test_y, T)[1]
        balanced_acc = evaluate_snn(convert(run.model, [{"mu": mu, "a": p / mu, "b": p / mu}
                                                    for mu, p in zip(mus, percentiles)]),
                                run.test_x, run.test_y, T)[1]
        scales = calibrate(run.model, calib, T, rng=rng)
        row = {"T": T, "dnn_acc": dnn["test_acc"], "naive_acc": naive_acc, "balanced_acc": balanced_acc,
               "scales": scales}
        for variant in VARIANTS:
            t0 = time.perf_counter()
            r = finetune_and_measure(run, scales, variant, T, ft_epochs, seed)
            row.update({f"{key}_{variant}": value for key, value in r.items()})
            log(f"  T = {T}, {variant}: converted {r['converted_acc'] * 100:.2f}%, fine-tuned "
                f"{r['finetuned_acc'] * 100:.2f}%, rate {r['firing_rate']:.4f}, SNN {r['snn_joules'] * 1e9:.1f} nJ "
                f"vs DNN {r['dnn_joules'] * 1e9:.1f} nJ ({time.perf_counter() - t0:.0f} s)")
        rows.append(row)
        log(f"  T = {T}: V_th = μ {naive_acc * 100:.2f}%, p99.9 {balanced_acc * 100:.2f}%; (a, b) = "
            f"{[(s['a'], s['b']) for s in scales]} ({time.perf_counter() - start:.0f} s)")
    return rows


def table(dataset, records, Ts):
    """One row per T, mean ± std over seeds."""
    rows = []
    for T in Ts:
        r = [x for x in records if x["T"] == T]

        def col(key, scale=100, digits=2):
            return mean_std([x[key] for x in r], scale, digits)
        gap = [x["dnn_acc"] - x["finetuned_acc_exact"] for x in r]
        exact, authors = (np.array([x[f"finetuned_acc_{v}"] for x in r]) for v in VARIANTS)
        ab = " / ".join(f"({np.mean([x['scales'][i]['a'] for x in r]):.2f}, "
                        f"{np.mean([x['scales'][i]['b'] for x in r]):.2f})" for i in range(len(r[0]["scales"])))
        rows.append([dataset, T, col("dnn_acc"), col("naive_acc"), col("balanced_acc"), col("converted_acc_exact"),
                     col("converted_acc_authors"), col("finetuned_acc_exact"), col("finetuned_acc_authors"),
                     mean_std(authors - exact), p_text(welch(authors, exact)),
                     mean_std(gap), ab, col("firing_rate_exact", 1, 4), col("firing_rate_authors", 1, 4),
                     col("energy_ratio_exact", 1, 1), col("energy_ratio_authors", 1, 1)])
    return rows


def findings(dataset, records, Ts):
    """Computed statements: the T = 2 gap against the 2-point target, authors vs exact at each T
    (Welch), what calibration adds over V_th = μ at each T, and where the SNN's energy goes."""
    def at(T, key):
        return np.array([x[key] for x in records if x["T"] == T])
    lines = []
    if 2 in Ts:
        gap = (at(2, "dnn_acc") - at(2, "finetuned_acc_exact")) * 100
        gap0 = (at(2, "dnn_acc") - at(2, "converted_acc_exact")) * 100
        verdict = "within" if gap.max() <= 2 else "NOT within"
        lines.append(f"- {dataset}, T = 2: fine-tuned SNN (exact) {at(2, 'finetuned_acc_exact').mean() * 100:.2f}% vs DNN "
                     f"{at(2, 'dnn_acc').mean() * 100:.2f}%, gap {gap.mean():.2f} points (largest over seeds "
                     f"{gap.max():.2f}): {verdict} 2 points. Right after the calibrated conversion the gap is "
                     f"{gap0.mean():.2f} points (largest {gap0.max():.2f}).")
    n = len(at(Ts[0], "dnn_acc"))
    compared = []
    for T in Ts:
        d = (at(T, "finetuned_acc_authors") - at(T, "finetuned_acc_exact")) * 100
        p = welch(at(T, "finetuned_acc_authors"), at(T, "finetuned_acc_exact"))
        if np.isnan(p):
            compared.append(f"T = {T}: {d.mean():+.2f} points (no test: fewer than 2 seeds or no spread)")
            continue
        verdict = "differ" if p < 0.05 else "indistinguishable"
        compared.append(f"T = {T}: {d.mean():+.2f} points (Welch p = {p:.3g}: {verdict} at p < 0.05)")
    lines.append(f"- {dataset}, fine-tuned authors minus exact, {n} seed(s): " + "; ".join(compared) + ".")
    tied = ", ".join(f"T = {T}: {(at(T, 'converted_acc_authors') - at(T, 'converted_acc_exact')).mean() * 100:+.2f}"
                     for T in Ts)
    lines.append(f"- {dataset}, right after conversion, the authors' amplitude 1.3·b·μ minus the calibrated b·μ "
                 f"(points): {tied}.")
    gains = ", ".join(f"T = {T}: {(at(T, 'converted_acc_exact') - at(T, 'naive_acc')).mean() * 100:+.2f}" for T in Ts)
    lines.append(f"- {dataset}, calibrated (a, b) minus V_th = μ, no fine-tuning (points): {gains}.")
    share = ", ".join(f"T = {T}: {at(T, 'first_layer_share_exact').mean() * 100:.0f}%" for T in Ts)
    lines.append(f"- {dataset}, share of the SNN energy spent in the first (analog-input) layer: {share}.")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist-t10k"], choices=sorted(SETUPS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--T", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="1 DNN and 1 fine-tuning epoch (a smoke test)")
    parser.add_argument("--out", help="results file (default conversion.md for the MNIST split, "
                                      "conversion-digits.md for digits, in experiments/results/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    log = lambda text: print(text, flush=True)  # noqa: E731
    rows, found = [], []
    for dataset in args.datasets:
        records = [r for seed in range(args.seeds) for r in one_seed(dataset, seed, args.T, args.quick, log)]
        rows += table(dataset, records, args.T)
        found += findings(dataset, records, args.T)
    header = ["data", "T", "DNN acc (%)", "converted, V_th = μ (%)", "converted, V_th = p99.9 (%)",
              "converted, calibrated (%)", "converted, authors' 1.3·b·μ (%)", "fine-tuned, exact (%)",
              "fine-tuned, authors (%)", "authors − exact (points)", "Welch p", "DNN − fine-tuned exact (points)",
              "mean (a, b) per layer", "firing rate, exact", "firing rate, authors", "DNN/SNN energy, exact",
              "DNN/SNN energy, authors"]
    setups = "; ".join(f"{d}: {SETUPS[d][0]}, DNN {SETUPS[d][1]} epochs, fine-tuning {SETUPS[d][2]} epochs, "
                       f"{SETUPS[d][3]} calibration images" for d in args.datasets)
    notes = "Findings (computed from the runs above):\n\n" + "\n".join(found) + f"""

Setup: {setups}{' (--quick: 1 + 1 epochs)' if args.quick else ''}. {args.seeds} seeds (0..{args.seeds - 1}),
mean ± sample std. DNN: the small CNN (conv3x3-BN-clipped ReLU-maxpool ×2, linear) with a trainable
clipped-ReLU threshold μ per layer (init 4.0), Adam lr 1e-2, cosine schedule, batch {BATCH}, T = 1.
Conversion: BatchNorm folded into the convolutions; IF neurons with soft reset, V_th = a·μ,
spike amplitude b·μ; direct encoding; the output layer's membrane accumulates W·s and its
average over T is the logit. Two baselines, measured without fine-tuning: "V_th = μ" converts the
clipped ReLU literally (a = b = 1: threshold and amplitude μ), "V_th = p99.9" is threshold balancing
at the 99.9th percentile p of the layer's positive activations (Rueckauer et al. 2017; a = b = p/μ);
both assume the activations spread evenly over [0, V_th]. "calibrated" uses the (a, b) grid search
on {{0.01, ..., 2.00}}² over the DNN's pre-activations on the calibration images, once per T and seed.
Fine-tuning, twice from that one conversion (same (a, b), weights, dropout seeds and batch order),
both with trainable V_th and leak λ (init 1, clamped ≤ 1), Adam/AMSGrad from lr {FINETUNE_LR},
dropout {DROPOUT} after every spiking neuron (mask fixed across steps), batch {BATCH}
(docs/methods.md §4.1 gives both variants' equations):
"exact" = refsnn's exact gradient (boxcar surrogate on H/V_th − 1 for the step, amplitude b·μ fixed,
fires on H ≥ V_th), CE on the time-averaged logits, constant lr {FINETUNE_LR};
"authors" = godatta/Ultra-Low-Latency-SNN's rules: amplitude 1.3·(b/a)·V_th tied to the threshold
(so 1.3·b·μ right after conversion), fires on H > V_th, their backward (surrogate without the
amplitude, Σ of the upstream gradient added to the threshold's), CE on the logits summed over T,
lr ÷5 at the start of epochs int(0.6·E), int(0.8·E), int(0.9·E) of E (a milestone 0 is never met): here lr =
{', '.join(f'{authors_lr(FINETUNE_LR, e, 1 if args.quick else SETUPS[args.datasets[0]][2]):.0e}'
           for e in range(1, (1 if args.quick else SETUPS[args.datasets[0]][2]) + 1))} in epochs
1..{1 if args.quick else SETUPS[args.datasets[0]][2]}{' (' + args.datasets[0] + ')' if len(args.datasets) > 1 else ''}.
Welch p: Welch's t-test of the per-seed fine-tuned accuracies, authors vs exact.
Firing rate: spikes per neuron per step over the spiking layers; energy per test sample:
SNN = first-layer MACs·T·4.6 pJ + synaptic operations·0.9 pJ, DNN = all MACs·4.6 pJ (45 nm).
The DNN − fine-tuned gap is per seed (negative: the SNN beats its DNN); the fine-tuned SNN has
been trained {'for more epochs' if not args.quick else 'longer'} than its DNN (DNN epochs + fine-tuning epochs).
"""
    threads = os.environ.get("NUMBA_NUM_THREADS")
    command = (f"NUMBA_NUM_THREADS={threads} " if threads else "") + command_line("experiments.conversion", argv)
    out = args.out or f"conversion{''.join(results_suffix(d) for d in args.datasets)}.md"
    path = write_results(out, "ANN-to-SNN conversion at ultra-low latency (Datta & Beerel 2022): exact vs the "
                         "authors' fine-tuning", command, header, rows, notes, seconds=time.perf_counter() - start)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
