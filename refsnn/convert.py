"""Ultra-low-latency ANN-to-SNN conversion (Datta & Beerel, DATE 2022, arXiv 2112.12133).

The pipeline (methods.md §4):

1. **DNN.** A network with the PACT clipped ReLU ``y = clip(x, 0, μ)``, μ trainable per layer
   (``layers.ClippedReLU``, init 4.0), trained by the ordinary trainer as the ANN twin
   (``neuron="clipped_relu"``, T = 1).
2. **Calibrate.** On calibration images (a subset of the training set) collect each layer's
   pre-activations x and choose the layer's (a, b) by grid search, minimizing

       E(a, b) = Σ_x ( clip(x, 0, μ) − r_T(x; a·μ, b·μ) )²

   where r_T(x; θ, A) is the average output over T steps of an IF neuron with soft reset,
   threshold θ and spike amplitude A, driven by the constant input x (closed form below).
3. **Convert.** Every clipped ReLU becomes a ``ConvertedNeuron`` (threshold a·μ, amplitude b·μ,
   leak 1, i.e. IF). The first layer sees the analog pixels at every step (direct encoding);
   the output layer has no neuron: it emits W·s[t] + bias at each step and the losses average
   over T, so the logit is the accumulated output membrane divided by T (the DNN's scale).
4. **Fine-tune** with surrogate gradients (``boxcar`` on H/V_th − 1), trainable threshold and
   leak λ (clamped to ≤ 1 after each optimizer step), Adam with AMSGrad, lr 1e-4, dropout
   masks fixed across time steps.

BatchNorm (**choice**): the authors' DNNs have none; refsnn's CNN has it. It is folded into the
preceding convolution at conversion time: in eval mode BatchNorm is an exact per-channel affine
map, so folding changes no DNN output, keeps the trainer and the networks unchanged (any
``refsnn train --neuron clipped_relu --T 1`` run converts as it is) and gives the authors'
BN-free SNN. Dropout in the SNN is a conversion option (after every spiking neuron).

Closed form of the T-step response. IF, soft reset, V[−1] = 0, constant input x, threshold θ:
with 0 ≤ x < θ at most one spike per step and V[t] = (t+1)·x − n·θ ∈ [0, θ), so after T
steps n = ⌊T·x/θ⌋ spikes; with x ≥ θ one spike every step; with x < 0 none. Hence

    r_T(x; θ, A) = A · clip(⌊T·x/θ⌋, 0, T) / T.

Grid search without a pass over the data per grid point: with z = x/μ, y = clip(z, 0, 1) and
k(z) = clip(⌊T·z/a⌋, 0, T), E(a, b)/μ² = Σy² − 2(b/T)·Σ_j j·Y_j + (b/T)²·Σ_j j²·N_j, where N_j
and Y_j are the count and the sum of y over {z : k(z) = j} = {j·a/T ≤ z < (j+1)·a/T} (j < T)
or {z ≥ a} (j = T). On sorted z these are differences of cumulative sums at T boundaries, so
each a costs T binary searches and every b is then free.
"""
import contextlib
import copy
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import META, claim_run_dir, read_checkpoint, write_checkpoint
from .data import Batches, direct, get_dataset
from .energy import ActivityMeter
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, ClippedReLU, Conv2d, Dropout,
                     Flatten, Linear, MaxPool2d)
from .losses import accuracy, cross_entropy
from .models import NETWORKS, Chain
from .module import NonFiniteError, Sequential, check_flag, check_int, check_real
from .neurons import BaseNeuron, ConvertedNeuron, clamp_lam
from .optim import Adam
from .surrogate import SURROGATES
from .train import (DATASETS, ConfigError, Run, TrainConfig, TrainingDiverged, _dataset_key, _generators, _prefixed,
                    _section, build_model, check_counts, check_field_types, changed_options, config_from_dict, divergence,
                    load_run)


# ------------------------------------------------------------------------------------------
# The T-step response and the (a, b) search
# ------------------------------------------------------------------------------------------
def if_response(x, T, threshold, amplitude):
    """Average output over T steps of an IF neuron (soft reset, V[−1] = 0, fires on H ≥ θ) with
    constant input x: ``amplitude · clip(⌊T·x/threshold⌋, 0, T) / T`` (see the module docstring)."""
    T = check_int(T, "T", 1)
    threshold = check_real(threshold, "threshold", 0, low_open=True)
    amplitude = check_real(amplitude, "amplitude")
    x = np.asarray(x, dtype=np.float64)
    return amplitude * np.clip(np.floor(T * x / threshold), 0, T) / T


def _check_grid(grid, name):
    grid = np.asarray(grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"{name} must be a non-empty array of finite values > 0")
    return grid


DEFAULT_GRID = np.round(np.arange(1, 201) * 0.01, 2)  # 0.01, 0.02, ..., 2.00 for both a and b


def grid_errors(z, y, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID):
    """E[i, j] = Σ (y − r_T(z; a_grid[i], b_grid[j]))² for inputs z and targets y (1-D arrays),
    from per-spike-count sums on sorted z (module docstring)."""
    T = check_int(T, "T", 1)
    a_grid, b_grid = _check_grid(a_grid, "a_grid"), _check_grid(b_grid, "b_grid")
    z = np.asarray(z, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"z and y must be non-empty and of one size, got {z.size} and {y.size}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(y))):
        raise ValueError("pre-activations contain NaN or Inf")
    order = np.argsort(z, kind="stable")
    z_sorted = z[order]
    cum_y = np.concatenate([[0.0], np.cumsum(y[order])])
    # first index with z ≥ j·a/T, j = 1..T (z ≥ a means T spikes): k(z) ≥ j exactly there
    bounds = np.arange(1, T + 1)[None, :] * a_grid[:, None] / T                    # [A, T]
    first = np.searchsorted(z_sorted, bounds, side="left")                          # [A, T]
    ends = np.concatenate([first[:, 1:], np.full((len(a_grid), 1), z.size)], axis=1)
    counts = ends - first                                                           # N_j, j = 1..T
    sums = cum_y[ends] - cum_y[first]                                               # Y_j
    j = np.arange(1, T + 1)
    cross = (sums * j).sum(axis=1) / T                                              # Σ_j (j/T)·Y_j
    square = (counts * j * j).sum(axis=1) / T ** 2                                  # Σ_j (j/T)²·N_j
    return float(np.sum(y * y)) - 2 * b_grid[None, :] * cross[:, None] + b_grid[None, :] ** 2 * square[:, None]


def search_scales(preactivations, mu, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID):
    """The (a, b) on the grid minimizing Σ (clip(x, 0, μ) − r_T(x; a·μ, b·μ))² over the layer's
    pre-activations x. Returns ``(a, b, error)`` with the error per pre-activation, in units of μ²
    (the first minimum in grid order on ties)."""
    mu = check_real(mu, "the clipping threshold μ", 0, low_open=True)
    z = np.asarray(preactivations, dtype=np.float64).ravel() / mu
    errors = grid_errors(z, np.clip(z, 0.0, 1.0), T, a_grid, b_grid)
    i, j = np.unravel_index(int(np.argmin(errors)), errors.shape)
    a_grid, b_grid = _check_grid(a_grid, "a_grid"), _check_grid(b_grid, "b_grid")
    return float(a_grid[i]), float(b_grid[j]), float(max(errors[i, j], 0.0) / z.size)


# ------------------------------------------------------------------------------------------
# From DNN to SNN
# ------------------------------------------------------------------------------------------
WEIGHT_LAYERS = (Conv2d, Linear)
BATCHNORMS = (BatchNorm1d, BatchNorm2d)
PASS_THROUGH = (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten)


def forward_layers(model):
    """The leaf layers of a chain-shaped network in forward order (Sequential, Chain)."""
    if isinstance(model, Chain):
        return [leaf for name in model.order for leaf in forward_layers(model.children[name])]
    if isinstance(model, Sequential):
        return [leaf for child in model for leaf in forward_layers(child)]
    if model.children:
        raise ValueError(f"cannot convert {type(model).__name__}: only chains of layers convert "
                         "(Sequential/Chain of Conv2d, Linear, BatchNorm, ClippedReLU, pooling, Flatten, Dropout)")
    return [model]


def _check_convertible(layers):
    activations = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, BATCHNORMS):
            if i == 0 or not isinstance(layers[i - 1], WEIGHT_LAYERS):
                raise ValueError(f"layer {i} ({type(layer).__name__}) does not follow a Conv2d/Linear, "
                                 "so it cannot be folded into one")
        elif isinstance(layer, ClippedReLU):
            activations += 1
        elif not isinstance(layer, WEIGHT_LAYERS + PASS_THROUGH + (Dropout,)):
            raise ValueError(f"layer {i} is {type(layer).__name__}: conversion needs a DNN whose activations are "
                             "ClippedReLU (train it with neuron='clipped_relu') and whose other layers are "
                             "Conv2d, Linear, BatchNorm, pooling, Flatten or Dropout")
    if activations == 0:
        raise ValueError("the DNN has no ClippedReLU activation to convert")
    last_weight = max(i for i, l in enumerate(layers) if isinstance(l, WEIGHT_LAYERS))
    if any(isinstance(l, ClippedReLU) for l in layers[last_weight:]):
        raise ValueError("the DNN must end with a Conv2d/Linear output layer (no activation after it)")
    return activations


def fold_batchnorm(layer, bn):
    """(W', b') of the weight layer followed by BatchNorm in eval mode, per output channel o:
    W'[o] = W[o]·γ_o/√(σ²_o + ε),  b'_o = (b_o − m_o)·γ_o/√(σ²_o + ε) + β_o."""
    weight = layer.params["weight"].astype(np.float64)
    bias = layer.params["bias"].astype(np.float64) if "bias" in layer.params else np.zeros(weight.shape[0])
    if bn is None:
        return weight, bias
    if bn.num_features != weight.shape[0]:
        raise ValueError(f"BatchNorm has {bn.num_features} channels, the layer before it {weight.shape[0]}")
    gamma, beta = bn._affine()
    scale = gamma / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    folded = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded, (bias - bn.buffers["running_mean"].astype(np.float64)) * scale + beta


def _weight_layer_like(layer, weight, bias, dtype):
    if isinstance(layer, Conv2d):
        new = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     bias=True, groups=layer.groups, dtype=dtype)
    else:
        new = Linear(layer.in_features, layer.out_features, bias=True, dtype=dtype)
    new.params["weight"][...] = weight
    new.params["bias"][...] = bias
    return new


def _fresh_copy(layer):
    clone = copy.deepcopy(layer)
    if hasattr(clone, "_saved"):
        clone._saved = None
    return clone


def clipped_relus(model):
    """The DNN's ClippedReLU layers in forward order."""
    return [layer for layer in forward_layers(model) if isinstance(layer, ClippedReLU)]


def collect_preactivations(dnn, images, batch_size=256, max_values=2_000_000, rng=None):
    """Inputs of every ClippedReLU of ``dnn`` (eval mode, T = 1) on ``images`` [N, ...]: one 1-D
    float64 array per layer. A layer with more than ``max_values`` values keeps a random subset,
    drawn batch by batch in proportion to the batch size (so memory stays ~max_values)."""
    layers = forward_layers(dnn)
    _check_convertible(layers)
    rng = np.random.default_rng(0) if rng is None else rng
    dnn.eval()
    dtype = next(p for _, p, _ in dnn.named_parameters()).dtype
    per_layer = {i: [] for i, layer in enumerate(layers) if isinstance(layer, ClippedReLU)}
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=dtype)
        keep = math.ceil(max_values * len(batch) / len(images))
        x = direct(batch, 1)
        for i, layer in enumerate(layers):
            if i in per_layer:
                values = x.ravel()
                if values.size > keep:
                    values = values[rng.choice(values.size, keep, replace=False)]
                per_layer[i].append(values.astype(np.float64))
            x = layer.forward(x)
    return [np.concatenate(values) for values in per_layer.values()]


def calibrate(dnn, images, T, a_grid=DEFAULT_GRID, b_grid=DEFAULT_GRID, batch_size=256, max_values=2_000_000,
              rng=None):
    """One dict per ClippedReLU: μ, the chosen a and b, and the calibration error per value (μ²)."""
    scales = []
    for layer, x in zip(clipped_relus(dnn), collect_preactivations(dnn, images, batch_size, max_values, rng)):
        mu = float(layer.params["threshold"])
        a, b, err = search_scales(x, mu, T, a_grid, b_grid)
        scales.append({"mu": mu, "a": a, "b": b, "error": err,
                       "clipped_fraction": float(np.mean(x > mu)), "negative_fraction": float(np.mean(x <= 0))})
    return scales


def convert(dnn, scales, dropout=0.0, surrogate="boxcar", detach_reset=True, train_amplitude=False, strict=False,
            rng=None):
    """The SNN of a trained clipped-ReLU DNN (the DNN is left untouched).

    Weight layers are copied with BatchNorm folded in (``fold_batchnorm``); the i-th ClippedReLU
    becomes a ``ConvertedNeuron`` with threshold a_i·μ_i, amplitude b_i·μ_i and leak 1, followed
    by ``Dropout(dropout)`` when dropout > 0 (a mask per forward, shared by all steps); pooling
    and Flatten are copied; the DNN's own Dropout layers are dropped. ``scales`` is what
    ``calibrate`` returns (dicts with "mu", "a", "b").
    """
    layers = forward_layers(dnn)
    n_activations = _check_convertible(layers)
    if len(scales) != n_activations:
        raise ValueError(f"{len(scales)} (a, b) pairs for {n_activations} ClippedReLU layers")
    dropout = check_real(dropout, "dropout", 0.0, 1.0, high_open=True)
    rng = np.random.default_rng(0) if rng is None else rng
    dtype = next(p for _, p, _ in dnn.named_parameters()).dtype
    out, scale_iter = [], iter(scales)
    for i, layer in enumerate(layers):
        if isinstance(layer, WEIGHT_LAYERS):
            bn = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], BATCHNORMS) else None
            out.append(_weight_layer_like(layer, *fold_batchnorm(layer, bn), dtype))
        elif isinstance(layer, ClippedReLU):
            s = next(scale_iter)
            out.append(ConvertedNeuron(threshold=s["a"] * s["mu"], amplitude=s["b"] * s["mu"], lam=1.0,
                                       surrogate=surrogate, detach_reset=detach_reset,
                                       train_amplitude=train_amplitude, strict=strict, dtype=dtype))
            if dropout > 0:
                out.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        elif isinstance(layer, PASS_THROUGH):
            out.append(_fresh_copy(layer))
    return Sequential(*out)


# ------------------------------------------------------------------------------------------
# Evaluation, activity and fine-tuning
# ------------------------------------------------------------------------------------------
def _single_amplitude(x):
    """Spikes of one amplitude: every non-zero entry has the same value c (c folds into the
    next layer's weights, so each spike costs one accumulate)."""
    nonzero = x[x != 0]
    return nonzero.size == 0 or bool(np.all(nonzero == nonzero.flat[0]))


class SpikeMeter(ActivityMeter):
    """``ActivityMeter`` for converted networks, whose spikes carry the amplitude b·μ: a weight
    layer's input counts as spikes (synaptic operations at E_AC) when its non-zero entries share
    one value, not only when they are 1. Analog inputs (direct-encoded pixels) stay MACs."""

    @staticmethod
    def _wrap(module, forward, entry):
        counted = ActivityMeter._wrap(module, forward, entry)
        if isinstance(module, BaseNeuron):
            return counted

        def counted_amplitude_spikes(x, *args, **kwargs):
            spikes_so_far = entry["binary_input"]
            y = counted(x, *args, **kwargs)
            entry["binary_input"] = spikes_so_far and _single_amplitude(x)
            return y
        return counted_amplitude_spikes


def evaluate(model, images, labels, T, batch_size=256, meter=None, progress=False):
    """Test loss and accuracy of ``model`` (eval mode) with direct encoding over T steps."""
    model.eval()
    dtype = next(p for _, p, _ in model.named_parameters()).dtype
    total_loss = total_correct = 0.0
    batches = Batches(images, labels, batch_size, shuffle=False)
    with meter if meter is not None else contextlib.nullcontext():
        for x, y in tqdm(batches, desc="test", disable=not progress, leave=False):
            out = model.forward(direct(x.astype(dtype, copy=False), T))
            total_loss += cross_entropy(out, y)[0] * len(y)
            total_correct += accuracy(out, y) * len(y)
    return total_loss / len(labels), total_correct / len(labels)


def make_finetune_optimizer(model, lr=1e-4, weight_decay=0.0):
    """Adam with AMSGrad over every parameter (weights, thresholds, leaks), as the authors."""
    return Adam(list(model.named_parameters()), lr=lr, weight_decay=weight_decay, amsgrad=True)


def finetune_epoch(model, opt, images, labels, T, batch_size=64, seed=0, epoch=0, progress=False):
    """One epoch of surrogate-gradient training (CE on time-averaged logits); λ is clamped to ≤ 1
    after every optimizer step. The batch order is a function of (seed, epoch). Returns
    (mean loss, accuracy) over the epoch."""
    model.train()
    dtype = next(p for _, p, _ in model.named_parameters()).dtype
    batches = Batches(images, labels, batch_size, shuffle=True, seed=seed)
    batches.set_epoch(epoch)
    total_loss = total_correct = seen = 0.0
    for step, (x, y) in enumerate(tqdm(batches, desc=f"fine-tune {epoch + 1}", disable=not progress, leave=False)):
        where = f"fine-tuning diverged at epoch {epoch + 1}, step {step}"
        try:
            out = model.forward(direct(x.astype(dtype, copy=False), T))
            loss, grad = cross_entropy(out, y)
        except NonFiniteError as e:
            raise TrainingDiverged(f"{where}: {e}") from None
        problem = divergence(loss, out, y)
        if problem:
            raise TrainingDiverged(f"{where}: {problem}")
        model.zero_grad()
        model.backward(grad)
        opt.step()
        clamp_lam(model)
        total_loss += loss * len(y)
        total_correct += accuracy(out, y) * len(y)
        seen += len(y)
    return total_loss / seen, total_correct / seen


def activity_summary(meter):
    """Mean firing rate over the spiking layers (spikes per neuron per step, weighted by neuron
    count), SNN and DNN energy per sample (J) and their ratio."""
    events = sum(e["events"] for e in meter.stats.values() if isinstance(e["module"], BaseNeuron))
    elements = sum(e["elements"] for e in meter.stats.values() if isinstance(e["module"], BaseNeuron))
    energy = meter.energy()
    return {"firing_rate": events / elements if elements else 0.0,
            "snn_joules": energy["snn_joules"], "dnn_joules": energy["dnn_joules"],
            "energy_ratio": energy["dnn_joules"] / energy["snn_joules"] if energy["snn_joules"] else math.inf}


def energy_table(meter):
    """Per-layer rates, MACs, synaptic operations and energy, then SNN vs DNN totals."""
    lines = [f"{'layer':<8}{'kind':<17}{'rate':>8}{'MACs/step':>14}{'SOPs':>14}{'energy (nJ)':>14}"]
    for r in meter.rows():
        energy = f"{r['energy'] * 1e9:14.3f}" if "energy" in r else f"{'':>14}"
        macs = f"{r['macs']:14,.0f}" if r["macs"] else f"{'':>14}"
        sops = f"{r['sops']:14,.0f}" if r.get("spike_input") else f"{'(analog in)' if r['macs'] else '':>14}"
        lines.append(f"{r['layer']:<8}{r['kind']:<17}{r['rate']:8.4f}{macs}{sops}{energy}")
    s = activity_summary(meter)
    lines += ["", f"energy per sample: SNN {s['snn_joules'] * 1e9:.3f} nJ, DNN {s['dnn_joules'] * 1e9:.3f} nJ "
                  f"(DNN/SNN = {s['energy_ratio']:.2f}; E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm); "
                  f"mean firing rate {s['firing_rate']:.4f} spikes/neuron/step"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The whole pipeline, with atomic checkpoints
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ConvertConfig:
    dataset: str = "mnist-t10k"
    data_dir: str = None
    network: str = "cnn"              # mlp | cnn (any chain-shaped network of refsnn.models)
    dnn_dir: str = None               # an existing clipped-ReLU trainer run to convert (else one is trained)
    dnn_epochs: int = 10
    dnn_lr: float = 1e-2
    T: int = 2
    calibration_samples: int = 1024   # training images for the (a, b) search
    finetune_epochs: int = 5
    finetune_lr: float = 1e-4
    batch_size: int = 64
    dropout: float = 0.1              # after every spiking neuron during fine-tuning
    surrogate: str = "boxcar"
    detach_reset: bool = True
    train_amplitude: bool = False
    seed: int = 0
    dtype: str = "float32"
    out_dir: str = "runs/convert"

    def __post_init__(self):
        check_field_types(self)  # the declared types, as TrainConfig (TOML, flags, checkpoints)
        check_counts(self, ("T", "dnn_epochs", "calibration_samples", "batch_size"), ("finetune_epochs", "seed"))
        for name in ("out_dir", "data_dir", "dnn_dir"):
            if getattr(self, name) == "":
                raise ConfigError(name, f"{name} must not be empty")
        for name in ("dnn_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("network", tuple(NETWORKS)), ("surrogate", tuple(SURROGATES)),
                              ("dtype", ("float32", "float64"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if _dataset_key(self.dataset) not in DATASETS:
            raise ConfigError("dataset", f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d)


def dnn_config(cfg):
    """The trainer config of the clipped-ReLU DNN (the ANN twin: T = 1)."""
    return TrainConfig(network=cfg.network, neuron="clipped_relu", dataset=cfg.dataset, data_dir=cfg.data_dir,
                       T=1, epochs=cfg.dnn_epochs, batch_size=cfg.batch_size, lr=cfg.dnn_lr, seed=cfg.seed,
                       dtype=cfg.dtype, out_dir=str(Path(cfg.out_dir) / "dnn"))


def train_or_load_dnn(cfg, progress=False, log=print, overwrite=False):
    """The DNN run: ``cfg.dnn_dir`` if given, else ``out_dir/dnn`` (trained, or resumed if a
    checkpoint with the same config is there; one with another config is refused unless
    ``overwrite``). Raises ValueError if the run's activation is not clipped_relu."""
    if cfg.dnn_dir is not None:
        run = load_run(cfg.dnn_dir)
    else:
        target = dnn_config(cfg)
        run = None
        if os.path.lexists(Path(target.out_dir) / META):
            run = load_run(target.out_dir)
            if run.cfg != target:
                if not overwrite:
                    raise ValueError(f"{target.out_dir} holds a DNN run with another config: pass --overwrite to "
                                     "replace it, or choose another --out-dir")
                run = None
        if run is None:
            run = Run(target, overwrite=overwrite)
        if run.epoch < run.cfg.epochs:
            log(f"training the clipped-ReLU DNN: {run.cfg.network} on {run.cfg.dataset}, {run.cfg.epochs} epochs "
                f"→ {run.cfg.out_dir}")
            run.fit(progress=progress, log=log)
    if run.cfg.neuron != "clipped_relu" or run.cfg.T != 1:
        raise ValueError(f"the DNN run must use neuron='clipped_relu' and T=1 (the ANN twin), got "
                         f"neuron={run.cfg.neuron!r}, T={run.cfg.T}")
    return run


def _build_snn(cfg, dnn_config_dict, scales, info):
    """The converted network's structure (weights come from a state dict): the DNN is rebuilt
    from its trainer config for the data set's ``info``, untrained, and converted with the
    saved scales."""
    dnn = build_model(TrainConfig.from_dict(dnn_config_dict), info)
    return convert(dnn, scales, cfg.dropout, cfg.surrogate, cfg.detach_reset, cfg.train_amplitude,
                   rng=np.random.default_rng([cfg.seed, 4]))


def _load_converted(path, data_dir=None):
    """``(cfg, snn, meta, data)`` of a ``refsnn convert`` run, ``data`` its data set
    (``get_dataset``'s tuple) read from ``data_dir`` if given, else from the saved config's."""
    meta, arrays = read_checkpoint(path, kind="convert")
    cfg = ConvertConfig.from_dict(meta["config"])
    data = get_dataset(meta["results"]["dataset"], cfg.data_dir if data_dir is None else data_dir)
    snn = _build_snn(cfg, meta["results"]["dnn_config"], meta["scales"], data[4])
    snn.load_state_dict(_section(arrays, "model/"))
    return cfg, snn, meta, data


def load_converted(path, data_dir=None):
    """``(snn, meta)`` from a ``refsnn convert`` output directory (or its checkpoint.json)."""
    _, snn, meta, _ = _load_converted(path, data_dir)
    return snn, meta


def eval_summary(path, data_dir=None, progress=False):
    """``(test accuracy, report)`` of a ``refsnn convert`` run, as ``refsnn eval`` prints it:
    the converted SNN on its test set, with per-layer activity and energy."""
    cfg, snn, meta, (_, _, test_x, test_y, info) = _load_converted(path, data_dir)
    meter = SpikeMeter(snn)
    loss, acc = evaluate(snn, test_x, test_y, cfg.T, cfg.batch_size, meter=meter, progress=progress)
    lines = [f"converted SNN ({meta['results']['dnn_config']['network']} DNN, IF neurons), {info['name']}, "
             f"after fine-tuning epoch {meta['epoch']}", "",
             f"test accuracy {acc * 100:.2f}%  (loss {loss:.4f}, {len(test_y)} samples, T = {cfg.T})", "",
             energy_table(meter)]
    return acc, "\n".join(lines)


def run_conversion(cfg, progress=False, log=print, resume=False, overwrite=False):
    """Train (or load) the DNN, calibrate, convert, fine-tune, measure. Checkpoints in
    ``cfg.out_dir`` after conversion and after every fine-tuning epoch; ``resume`` continues
    from them (also in a directory the run was moved to), ``overwrite`` lets a fresh conversion
    replace the run in ``out_dir`` (else refused). ``out_dir`` is locked while the conversion
    runs. Returns the results dict (accuracies, scales, activity and energy)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite (--resume, --overwrite) contradict each other: pick one")
    out_dir = Path(cfg.out_dir)
    loaded = None
    if resume and os.path.lexists(out_dir / META):
        loaded, arrays = read_checkpoint(out_dir, kind="convert")
        saved = ConvertConfig.from_dict(loaded["config"])
        # the data and the DNN may have moved; fine-tuning may be extended (Adam at a constant lr)
        if "finetune_epochs" in changed_options(saved, cfg, ("finetune_epochs", "data_dir", "dnn_dir", "out_dir")):
            if cfg.finetune_epochs < loaded["epoch"]:
                raise ConfigError("finetune_epochs", f"finetune_epochs = {cfg.finetune_epochs}, but {out_dir} has "
                                                     f"already fine-tuned {loaded['epoch']} epochs")
            log(f"{'extending' if cfg.finetune_epochs > saved.finetune_epochs else 'shortening'} fine-tuning "
                f"from {saved.finetune_epochs} to {cfg.finetune_epochs} epochs")
    start = time.perf_counter()
    with claim_run_dir(out_dir, loaded, overwrite):
        if loaded is not None:
            results, scales, history, epoch = loaded["results"], loaded["scales"], loaded["history"], loaded["epoch"]
            train_x, train_y, test_x, test_y, info = get_dataset(results["dataset"], cfg.data_dir)
            snn = _build_snn(cfg, results["dnn_config"], scales, info)
            snn.load_state_dict(_section(arrays, "model/"))
            opt = make_finetune_optimizer(snn, cfg.finetune_lr)
            opt.load_state_dict(_section(arrays, "optim/"))
            for name, gen in _generators(snn).items():
                gen.bit_generator.state = loaded["generators"][name]
            log(f"resuming {out_dir} after fine-tuning epoch {epoch}")

        def save(final=False):
            arrays = {**_prefixed("model/", snn.state_dict()), **_prefixed("optim/", opt.state_dict())}
            write_checkpoint(out_dir, "convert", epoch, arrays, dataclasses.asdict(cfg), history, final=final,
                             generators={k: g.bit_generator.state for k, g in _generators(snn).items()},
                             scales=scales, results=results)

        if loaded is None:
            run = train_or_load_dnn(cfg, progress, log, overwrite)
            train_x, train_y, test_x, test_y = run.train_x, run.train_y, run.test_x, run.test_y
            _, dnn_acc = run.evaluate()
            rng = np.random.default_rng([cfg.seed, 3])
            calib = train_x[np.sort(rng.choice(len(train_x), min(cfg.calibration_samples, len(train_x)),
                                               replace=False))]
            scales = calibrate(run.model, calib, cfg.T, rng=rng)
            snn = convert(run.model, scales, cfg.dropout, cfg.surrogate, cfg.detach_reset, cfg.train_amplitude,
                          rng=np.random.default_rng([cfg.seed, 4]))
            _, converted_acc = evaluate(snn, test_x, test_y, cfg.T, cfg.batch_size)
            results = {"dataset": run.info["name"], "dnn_config": dataclasses.asdict(run.cfg),
                       "dnn_dir": str(run.out_dir), "dnn_acc": dnn_acc, "converted_acc": converted_acc}
            history, epoch = [], 0
            opt = make_finetune_optimizer(snn, cfg.finetune_lr)
            save()
            log(f"DNN test accuracy {dnn_acc * 100:.2f}%; converted SNN (T = {cfg.T}) {converted_acc * 100:.2f}%")
            for i, s in enumerate(scales):
                log(f"  layer {i}: μ = {s['mu']:.4f}  a = {s['a']:.2f}  b = {s['b']:.2f}  "
                    f"(calibration error {s['error']:.3e} μ²)")
        while epoch < cfg.finetune_epochs:
            t0 = time.perf_counter()
            try:
                train_loss, train_acc = finetune_epoch(snn, opt, train_x, train_y, cfg.T, cfg.batch_size, cfg.seed,
                                                       epoch, progress)
            except TrainingDiverged as e:
                raise TrainingDiverged(f"{e}; the last good checkpoint (fine-tuning epoch {epoch}) in {out_dir} "
                                       "is kept") from None
            test_loss, test_acc = evaluate(snn, test_x, test_y, cfg.T, cfg.batch_size)
            epoch += 1
            history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                            "test_acc": test_acc, "seconds": round(time.perf_counter() - t0, 3)})
            save()
            log(f"fine-tune epoch {epoch:3d}/{cfg.finetune_epochs}  loss {train_loss:.4f}  train acc "
                f"{train_acc:.4f}  test acc {test_acc:.4f}  ({history[-1]['seconds']:.1f} s)")
        meter = SpikeMeter(snn)
        _, final_acc = evaluate(snn, test_x, test_y, cfg.T, cfg.batch_size, meter=meter)
        results = dict(results, finetuned_acc=final_acc, **activity_summary(meter))
        save(final=True)
    return {**results, "scales": scales, "history": history, "snn": snn, "meter": meter,
            "seconds": time.perf_counter() - start}


def format_report(results, cfg):
    """The accuracies, the per-layer (a, b) and the energy table, as printed by ``refsnn convert``."""
    epochs = len(results["history"])
    stages = [("DNN (clipped ReLU, T = 1)", results["dnn_acc"]),
              (f"SNN right after conversion (T = {cfg.T})", results["converted_acc"]),
              (f"SNN after fine-tuning ({epochs} epoch{'' if epochs == 1 else 's'})", results["finetuned_acc"])]
    lines = [f"{name:<40}{acc * 100:6.2f}%" for name, acc in stages]
    lines += ["", f"{'neuron':<8}{'μ':>9}{'a':>7}{'b':>7}{'V_th = aμ':>11}{'amplitude bμ':>14}"
                 f"{'V_th now':>10}{' lam now':>10}"]
    neurons = [m for _, m in results["snn"].modules() if isinstance(m, ConvertedNeuron)]
    for i, (s, n) in enumerate(zip(results["scales"], neurons)):
        lines.append(f"{i:<8}{s['mu']:9.4f}{s['a']:7.2f}{s['b']:7.2f}{s['a'] * s['mu']:11.4f}"
                     f"{n.amplitude:14.4f}{n.v_threshold:10.4f}{n.lam:10.4f}")
    return "\n".join(lines + ["", energy_table(results["meter"])])
