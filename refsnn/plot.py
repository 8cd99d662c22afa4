"""Pictures of a spiking layer, for teaching: which neurons fire when (a raster), and how their
membrane charges, crosses the threshold and resets (membrane traces).

    fig = refsnn.plot.neuron_layer(model, x, "3", "lif.png")   # both panels for layer "3"

or from a trained run: ``refsnn plot RUN_DIR --layer 3 --sample 0 --out lif.png``.

matplotlib is an optional dependency (``pip install "refsnn[plot]"``); it is imported only when
a plot is drawn, so ``import refsnn.plot`` works without it.
"""
import numpy as np

from .neurons import BaseNeuron

TRACES = 5  # membrane traces drawn by default: the most active neurons of the sample


def require_matplotlib():
    """The matplotlib module, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError('refsnn.plot draws with matplotlib, which is not installed: pip install "refsnn[plot]"') \
            from None
    return matplotlib


def _axes(ax):
    """``ax``, or the current axes of pyplot when None (a new figure if there is none)."""
    if ax is not None:
        return ax
    require_matplotlib()
    import matplotlib.pyplot as plt
    return plt.gca()


def _time_by_neuron(a, name):
    """[T, ...] of one sample → [T, n] (n = every neuron of the layer, flattened)."""
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"{name} must be [T, ...] (one sample: time first, then the layer's neurons), "
                         f"got shape {a.shape}")
    return a.reshape(a.shape[0], -1)


def raster(spikes, ax=None):
    """Spike raster of one sample: a mark at (t, i) where neuron i fired at step t.

    ``spikes``: [T, ...] (the layer's neurons flattened in C order, so conv channel c's neurons are
    rows c·H·W to (c+1)·H·W - 1). Returns the axes."""
    s = _time_by_neuron(spikes, "spikes")  # s: [T, n]
    ax = _axes(ax)
    t, i = np.nonzero(s)
    ax.scatter(t, i, marker="|", s=40, linewidths=1.0, color="black")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_ylabel(f"neuron (of {s.shape[1]})")
    ax.set_title(f"spikes: {len(t)} in {s.shape[0]} steps × {s.shape[1]} neurons "
                 f"(rate {len(t) / s.size:.3f})", fontsize="medium")
    return ax


def membrane(v_seq, v_threshold=None, neurons=None, ax=None, h_seq=None):
    """Membrane traces of one sample for the chosen ``neurons`` (flat indices; default the first
    ``TRACES``), with the threshold as a dashed line when ``v_threshold`` is given.

    ``v_seq``: [T, ...], the membrane V[t] after each step's reset (a neuron's ``v_seq`` with
    ``store_v_seq=True``). With ``h_seq`` (the neuron's ``h_seq``: H[t], charged, before the
    reset) each step is drawn as a saw tooth: up to H[t], then down to V[t] where the neuron
    fired, so a spike is a crossing of the threshold line. Returns the axes."""
    v = _time_by_neuron(v_seq, "v_seq")  # v: [T, n]
    h = None if h_seq is None else _time_by_neuron(h_seq, "h_seq")  # h: [T, n]
    if h is not None and h.shape != v.shape:
        raise ValueError(f"h_seq has {h.shape[0]} steps × {h.shape[1]} neurons, v_seq {v.shape[0]} × {v.shape[1]}")
    neurons = list(range(min(TRACES, v.shape[1]))) if neurons is None else [int(i) for i in neurons]
    bad = [i for i in neurons if not 0 <= i < v.shape[1]]
    if bad:
        raise ValueError(f"neurons {bad} out of range: the layer has {v.shape[1]} neurons (0 to {v.shape[1] - 1})")
    ax = _axes(ax)
    steps = np.arange(v.shape[0])
    ax.xaxis.get_major_locator().set_params(integer=True)  # time steps are whole numbers
    for i in neurons:
        if h is None:
            ax.plot(steps, v[:, i], marker="o", markersize=3, label=f"neuron {i}")
        else:  # t, t, t+1, t+1, ...: H[0], V[0], H[1], V[1], ...
            ax.plot(np.repeat(steps, 2), np.stack([h[:, i], v[:, i]], axis=1).ravel(), marker="o", markersize=3,
                    label=f"neuron {i}")
    if v_threshold is not None:
        ax.axhline(v_threshold, color="gray", linestyle="--", label="V_th")
    ax.set_xlabel("time step t")
    ax.set_ylabel("membrane V[t] (after reset)" if h is None else "membrane: H[t] (charged), then V[t]")
    ax.legend(fontsize="small", loc="best")
    return ax


def neuron_layers(model):
    """``{name: layer}`` of the spiking-neuron layers of ``model``, by the names ``model.modules()``
    gives (the names in ``refsnn eval``'s activity table)."""
    return {name: m for name, m in model.modules() if isinstance(m, BaseNeuron)}


def neuron_layer(model, x, layer_name, path=None, sample=0, neurons=None, title=None):
    """Run ``model.forward(x)`` with layer ``layer_name``'s ``store_v_seq`` on and draw that layer
    for sample ``sample`` of the batch: its raster above, its membrane traces below (``neurons``:
    flat indices, default the ``TRACES`` most active of those that fire at some steps but not at
    all). ``x``: [T, N, ...], the model's input. ``title``: default the layer, its class and the sample.

    The model runs as it is: call ``model.eval()`` first for a trained network. Saves the figure to
    ``path`` if given (the format from its extension: .png, .pdf, .svg) and returns it (a
    ``matplotlib.figure.Figure``, made without pyplot, so no window opens)."""
    layers = neuron_layers(model)
    if not layers:
        raise ValueError(f"this network ({type(model).__name__}) has no spiking-neuron layers to draw")
    layer = dict(model.modules()).get(layer_name)
    if layer_name not in layers:
        names = ", ".join(repr(n) for n in layers) or "none"
        if layer is None:
            raise ValueError(f"no layer {layer_name!r} in this network; its neuron layers are: {names}")
        raise ValueError(f"layer {layer_name!r} is a {type(layer).__name__}, not a spiking-neuron layer; "
                         f"the neuron layers are: {names}")
    if np.ndim(x) < 2:
        raise ValueError(f"x must be the model's input [T, N, ...], got shape {np.shape(x)}")
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)):
        raise ValueError(f"sample must be an integer index into the batch, got {sample!r}")
    if not 0 <= sample < np.shape(x)[1]:
        raise ValueError(f"sample {sample} out of range: the input holds {np.shape(x)[1]} samples")
    require_matplotlib()
    from matplotlib.figure import Figure
    recorded = {}
    forward, store = layer.forward, layer.store_v_seq

    def record(*args, **kwargs):  # keeps the layer's output (its spikes) on the way through
        recorded["spikes"] = forward(*args, **kwargs)
        return recorded["spikes"]

    layer.forward, layer.store_v_seq = record, True
    try:
        model.forward(x)
    finally:
        del layer.forward  # back to the class's method
        layer.store_v_seq = store
    recorded_v = getattr(layer, layer.membrane + "_seq", None)  # v_seq, or snnTorch's neurons' mem_seq
    if recorded_v is None:
        raise ValueError(f"layer {layer_name!r} ({type(layer).__name__}) does not record its membrane "
                         "(store_v_seq): only its raster could be drawn")
    spikes = np.array(recorded["spikes"][:, sample])  # [T, ...] of the sample
    v_seq, h_seq = np.array(recorded_v[:, sample]), np.array(layer.h_seq[:, sample])
    if neurons is None:  # traces that show charging, crossing the threshold and the reset
        counts = np.count_nonzero(spikes.reshape(spikes.shape[0], -1), axis=0)
        always_or_never = (counts == 0) | (counts == spikes.shape[0])
        neurons = sorted(np.lexsort((-counts, always_or_never))[:TRACES])
    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    raster(spikes, ax=top)
    # one dashed line for one threshold (none for a threshold per neuron, snnTorch's neurons')
    membrane(v_seq, layer.v_threshold if np.ndim(layer.v_threshold) == 0 else None, neurons, ax=bottom, h_seq=h_seq)
    fig.suptitle(title or f"layer {layer_name} ({type(layer).__name__}), sample {sample}")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
