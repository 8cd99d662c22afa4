"""Ultra-low-latency ANN-to-SNN conversion (Datta & Beerel, DATE 2022; docs/methods.md §4) in miniature.

For each seed a clipped-ReLU DNN (the small CNN, trained by the ordinary trainer at T = 1) is
converted at every T: once naively (V_th = μ, amplitude μ: a = b = 1, the usual threshold
balancing), once with the calibrated per-layer (a, b), and the calibrated SNN is then fine-tuned
with the boxcar surrogate, trainable threshold and leak (Adam/AMSGrad, lr 1e-4). The test set is
measured after each stage; firing rate and energy (docs/methods.md §6) after fine-tuning.

    nice -n 10 python -m experiments.conversion                       # MNIST split + digits, 3 seeds
    nice -n 10 python -m experiments.conversion --datasets digits --seeds 1 --quick   # smoke test
"""
import argparse
import sys
import time

import numpy as np

from experiments.common import mean_std, train_and_measure, write_results
from refsnn.convert import (calibrate, clipped_relus, collect_preactivations, convert, evaluate_snn, finetune_epoch,
                            make_finetune_optimizer)
from refsnn.energy import SpikeMeter, activity_summary

# dataset -> (network, DNN epochs, fine-tuning epochs, calibration images)
SETUPS = {"mnist-t10k": ("cnn", 5, 2, 1024), "digits": ("cnn", 20, 5, 512)}
FINETUNE_LR = 1e-4
DROPOUT = 0.1
BATCH = 64


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
        snn = convert(run.model, scales, dropout=DROPOUT, rng=np.random.default_rng([seed, 4]))
        converted_acc = evaluate_snn(snn, run.test_x, run.test_y, T)[1]
        opt = make_finetune_optimizer(snn, FINETUNE_LR)
        for epoch in range(ft_epochs):
            finetune_epoch(snn, opt, run.train_x, run.train_y, T, BATCH, seed, epoch)
        meter = SpikeMeter(snn)
        finetuned_acc = evaluate_snn(snn, run.test_x, run.test_y, T, meter=meter)[1]
        activity = activity_summary(meter)
        energies = [r["energy"] for r in meter.rows() if "energy" in r]
        activity["first_layer_share"] = energies[0] / sum(energies)
        rows.append({"T": T, "dnn_acc": dnn["test_acc"], "naive_acc": naive_acc, "balanced_acc": balanced_acc,
                     "converted_acc": converted_acc, "finetuned_acc": finetuned_acc, "scales": scales, **activity})
        log(f"  T = {T}: V_th = μ {naive_acc * 100:.2f}%, p99.9 {balanced_acc * 100:.2f}%, calibrated "
            f"{converted_acc * 100:.2f}%, fine-tuned {finetuned_acc * 100:.2f}%, rate {activity['firing_rate']:.4f}, "
            f"SNN {activity['snn_joules'] * 1e9:.1f} nJ vs DNN {activity['dnn_joules'] * 1e9:.1f} nJ; (a, b) = "
            f"{[(s['a'], s['b']) for s in scales]} ({time.perf_counter() - start:.0f} s)")
    return rows


def table(dataset, records, Ts):
    """One row per T, mean ± std over seeds."""
    rows = []
    for T in Ts:
        r = [x for x in records if x["T"] == T]

        def col(key, scale=100, digits=2):
            return mean_std([x[key] for x in r], scale, digits)
        gap = [x["dnn_acc"] - x["finetuned_acc"] for x in r]
        ab = " / ".join(f"({np.mean([x['scales'][i]['a'] for x in r]):.2f}, "
                        f"{np.mean([x['scales'][i]['b'] for x in r]):.2f})" for i in range(len(r[0]["scales"])))
        rows.append([dataset, T, col("dnn_acc"), col("naive_acc"), col("balanced_acc"), col("converted_acc"),
                     col("finetuned_acc"), mean_std(gap), ab, col("firing_rate", 1, 4), col("snn_joules", 1e9, 0),
                     col("dnn_joules", 1e9, 0), col("energy_ratio", 1, 1)])
    return rows


def findings(dataset, records, Ts):
    """Computed statements: the T = 2 gap against the 2-point target, what calibration adds over
    V_th = μ at each T, and where the SNN's energy goes."""
    def at(T, key):
        return np.array([x[key] for x in records if x["T"] == T])
    lines = []
    if 2 in Ts:
        gap, gap0 = (at(2, "dnn_acc") - at(2, "finetuned_acc")) * 100, (at(2, "dnn_acc") - at(2, "converted_acc")) * 100
        verdict = "within" if gap.max() <= 2 else "NOT within"
        lines.append(f"- {dataset}, T = 2: fine-tuned SNN {at(2, 'finetuned_acc').mean() * 100:.2f}% vs DNN "
                     f"{at(2, 'dnn_acc').mean() * 100:.2f}%, gap {gap.mean():.2f} points (largest over seeds "
                     f"{gap.max():.2f}): {verdict} 2 points. Right after the calibrated conversion the gap is "
                     f"{gap0.mean():.2f} points (largest {gap0.max():.2f}).")
    gains = ", ".join(f"T = {T}: {(at(T, 'converted_acc') - at(T, 'naive_acc')).mean() * 100:+.2f}" for T in Ts)
    lines.append(f"- {dataset}, calibrated (a, b) minus V_th = μ, no fine-tuning (points): {gains}.")
    share = ", ".join(f"T = {T}: {at(T, 'first_layer_share').mean() * 100:.0f}%" for T in Ts)
    lines.append(f"- {dataset}, share of the SNN energy spent in the first (analog-input) layer: {share}.")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist-t10k", "digits"], choices=sorted(SETUPS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--T", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="1 DNN and 1 fine-tuning epoch (a smoke test)")
    parser.add_argument("--out", default="conversion.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    log = lambda text: print(text, flush=True)  # noqa: E731
    rows, found = [], []
    for dataset in args.datasets:
        records = [r for seed in range(args.seeds) for r in one_seed(dataset, seed, args.T, args.quick, log)]
        rows += table(dataset, records, args.T)
        found += findings(dataset, records, args.T)
    header = ["data", "T", "DNN acc (%)", "converted, V_th = μ (%)", "converted, V_th = p99.9 (%)",
              "converted, calibrated (%)", "after fine-tuning (%)", "DNN − fine-tuned (points)",
              "mean (a, b) per layer", "firing rate",
              "SNN energy (nJ)", "DNN energy (nJ)", "DNN/SNN energy"]
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
on {{0.01, ..., 2.00}}² over the DNN's pre-activations on the calibration images. Fine-tuning: boxcar surrogate on
H/V_th − 1, trainable V_th and leak λ (init 1, clamped ≤ 1), Adam/AMSGrad lr {FINETUNE_LR},
dropout {DROPOUT} after every spiking neuron (mask fixed across steps), batch {BATCH}.
Firing rate: spikes per neuron per step over the spiking layers; energy per test sample:
SNN = first-layer MACs·T·4.6 pJ + synaptic operations·0.9 pJ, DNN = all MACs·4.6 pJ (45 nm).
The DNN − fine-tuned gap is per seed (negative: the SNN beats its DNN); the fine-tuned SNN has
been trained {'for more epochs' if not args.quick else 'longer'} than its DNN (DNN epochs + fine-tuning epochs).
"""
    command = " ".join(["nice -n 10 python -m experiments.conversion", *(sys.argv[1:] if argv is None else argv)])
    path = write_results(args.out, "ANN-to-SNN conversion at ultra-low latency (Datta & Beerel 2022)", command,
                         header, rows, notes, seconds=time.perf_counter() - start)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
