"""Activity and energy accounting (docs/methods.md §6).

Per layer: firing rate (spikes per neuron per step), dense MACs, synaptic operations
(spikes × fan-out, i.e. a weight layer's dense MACs × the firing rate of its binary input),
and the energy estimate on the 45 nm figures used across the SNN literature:

    SNN energy = Σ_layers with analog input  MACs·T·E_MAC  +  Σ_layers with spike input  SOPs·E_AC
    DNN energy = Σ MACs·E_MAC          (one step, the same network with ReLU)

A weight layer whose input is not binary (the first layer under direct encoding, or a layer
after average pooling) is counted as MACs, never as cheaper accumulates (``SpikeMeter``, for
converted networks, also counts spikes of one amplitude as spikes).

``energy_table`` is the per-layer table ``refsnn train``, ``refsnn convert`` and ``refsnn eval``
print.
"""
import math
from collections import OrderedDict

import numpy as np

from .layers import Conv2d, Linear
from .neurons import BaseNeuron

E_MAC = 4.6e-12  # J per multiply-accumulate, 45 nm (Horowitz 2014)
E_AC = 0.9e-12   # J per accumulate


def dense_macs_per_step(layer, x, y):
    """MACs of one sample and one step: each output element costs fan-in multiply-adds."""
    T, N = x.shape[:2]
    if isinstance(layer, Conv2d):
        kh, kw = layer.kernel_size
        fan_in = layer.in_channels // layer.groups * kh * kw
    else:
        fan_in = layer.in_features
    return y.size // (T * N) * fan_in


class ActivityMeter:
    """Counts activity while active: ``with ActivityMeter(model) as meter: model.forward(x)``.

    Accumulates over every forward inside the block (e.g. a whole test set), then
    ``meter.rows()`` gives the per-layer table and ``meter.energy()`` the totals in joules
    per sample.
    """

    def __init__(self, model):
        self.model = model
        self.stats = OrderedDict()
        for name, m in model.modules():
            if isinstance(m, (Linear, Conv2d, BaseNeuron)):
                self.stats[name or type(m).__name__] = {"module": m, "samples": 0, "steps": 0,
                                                        "events": 0.0, "elements": 0.0,
                                                        "macs": 0, "binary_input": True}

    def __enter__(self):
        for entry in self.stats.values():
            m = entry["module"]
            m.forward = self._wrap(m, m.forward, entry)
        return self

    def __exit__(self, *exc):
        for entry in self.stats.values():
            del entry["module"].forward  # back to the class's method
        return False

    @staticmethod
    def _wrap(module, forward, entry):
        def counted(x, *args, **kwargs):
            y = forward(x, *args, **kwargs)
            T, N = x.shape[:2]
            if isinstance(module, BaseNeuron):
                entry["events"] += float(np.count_nonzero(y))
                entry["elements"] += y.size
            else:
                entry["macs"] = dense_macs_per_step(module, x, y)
                entry["binary_input"] &= bool(np.all((x == 0) | (x == 1)))
                entry["events"] += float(np.count_nonzero(x))
                entry["elements"] += x.size
            entry["samples"] += N
            entry["steps"] = T
            return y
        return counted

    def rows(self):
        """One dict per layer: name, kind, firing rate / input rate, MACs, SOPs (per sample)."""
        out = []
        for name, e in self.stats.items():
            if not e["samples"]:
                continue
            rate = e["events"] / e["elements"]
            row = {"layer": name, "kind": type(e["module"]).__name__, "rate": rate, "macs": 0.0, "sops": 0.0}
            if not isinstance(e["module"], BaseNeuron):
                row["macs"] = float(e["macs"])  # per step
                row["spike_input"] = e["binary_input"]
                # spikes × fan-out = dense MACs × input firing rate, summed over T steps
                row["sops"] = e["macs"] * rate * e["steps"] if e["binary_input"] else 0.0
                row["energy"] = (row["sops"] * E_AC if e["binary_input"]
                                 else e["macs"] * e["steps"] * E_MAC)
            out.append(row)
        return out

    def energy(self):
        """Per-sample totals: SNN energy, the equivalent DNN's energy, MACs and SOPs."""
        rows = [r for r in self.rows() if "energy" in r]
        return {"snn_joules": sum(r["energy"] for r in rows),
                "dnn_joules": sum(r["macs"] for r in rows) * E_MAC,
                "macs_per_step": sum(r["macs"] for r in rows),
                "sops": sum(r["sops"] for r in rows)}


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


def activity_summary(meter):
    """Mean firing rate over the spiking layers (spikes per neuron per step, weighted by neuron
    count), SNN and DNN energy per sample (J) and their ratio."""
    events = sum(e["events"] for e in meter.stats.values() if isinstance(e["module"], BaseNeuron))
    elements = sum(e["elements"] for e in meter.stats.values() if isinstance(e["module"], BaseNeuron))
    energy = meter.energy()
    return {"firing_rate": events / elements if elements else 0.0,
            "snn_joules": energy["snn_joules"], "dnn_joules": energy["dnn_joules"],
            "energy_ratio": energy["dnn_joules"] / energy["snn_joules"] if energy["snn_joules"] else math.inf}


def energy_table(meter, converted=False):
    """The per-layer table (rate, MACs per step, synaptic operations, energy) and the SNN vs DNN
    energy per sample. ``converted``: the table of a converted SNN, with the DNN/SNN ratio and
    the mean firing rate (``activity_summary``), in columns wide enough for ConvertedNeuron."""
    layer_width, kind_width = (8, 17) if converted else (10, 14)
    lines = [f"{'layer':<{layer_width}}{'kind':<{kind_width}}{'rate':>8}{'MACs/step':>14}{'SOPs':>14}"
             f"{'energy (nJ)':>14}"]
    for r in meter.rows():
        energy = f"{r['energy'] * 1e9:14.3f}" if "energy" in r else f"{'':>14}"
        macs = f"{r['macs']:14,.0f}" if r["macs"] else f"{'':>14}"
        sops = f"{r['sops']:14,.0f}" if r.get("spike_input") else f"{'(analog in)' if r['macs'] else '':>14}"
        lines.append(f"{r['layer']:<{layer_width}}{r['kind']:<{kind_width}}{r['rate']:8.4f}{macs}{sops}{energy}")
    if converted:
        s = activity_summary(meter)
        lines += ["", f"energy per sample: SNN {s['snn_joules'] * 1e9:.3f} nJ, DNN {s['dnn_joules'] * 1e9:.3f} nJ "
                      f"(DNN/SNN = {s['energy_ratio']:.2f}; E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm); "
                      f"mean firing rate {s['firing_rate']:.4f} spikes/neuron/step"]
    else:
        e = meter.energy()
        lines += ["", f"energy per sample: SNN {e['snn_joules'] * 1e9:.3f} nJ, same network as a DNN "
                      f"{e['dnn_joules'] * 1e9:.3f} nJ (E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm); "
                      f"rate = firing rate for neurons, input spike rate for weight layers"]
    return "\n".join(lines)
