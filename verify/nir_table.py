"""The NIR agreement table: refsnn and the frameworks exchanging small networks through NIR.

For each framework installed (snnTorch 1.0, SpikingJelly 2.0, norse 1.1) a small network is
exported with the framework's own exporter and read by ``refsnn.from_nir``, and refsnn's
``to_nir`` export is read by the framework's own importer; both sides then run on the same input
``[T, N, ...]`` (float32, every framework's NIR importer builds float32 modules) and the spikes of
every neuron layer are compared, layer by layer and step by step. A row says ``agree``, or where
the two first part (``DEPART``: neuron layer, time step, how many spikes differ) or that an
exporter or importer refused (``REFUSED``, its message), and why.

The why is not a guess: each departure has a *repair*, the one change that removes the suspected
cause (the framework's neuron with the reset the graph states, refsnn run at the framework's dt,
the time constant the framework meant), and the row's reason is stated only if the repaired run
agrees exactly ("repaired: agree"). A departure no repair explains, or refsnn refusing a graph
NIR's own type check accepts, is a failure of refsnn (``refsnn_ok`` False, exit status 1); a
framework bug is a finding, reported and not failed.

The conventions the rows meet (read from the installed sources):

* dt: NIR states time constants in seconds and no step; snnTorch's and SpikingJelly's exchange
  assume dt = 1e-4 s, norse's 1e-3 s, refsnn's ``from_nir``/``to_nir`` 1e-4 (and record it in
  the graph's metadata, which no framework reads).
* firing: NIR fires on v > v_threshold; snnTorch (``mem - threshold > 0``) and norse
  (``heaviside``: x > 0) too; SpikingJelly fires on >= (``heaviside``: x >= 0), as refsnn's own
  neurons, which ``to_nir`` records in the graph's metadata (no framework reads it). Random inputs
  never land exactly on a threshold, so the rows "v = v_th" put every potential on it (an
  identity Linear and an input at the threshold) to show the rule each side follows.
"""
import contextlib
import importlib
import io
import logging
from dataclasses import dataclass

import numpy as np

from .frameworks import available
from .networks import _record_outputs

T, N, FEATURES, HIDDEN, CLASSES = 8, 4, 8, 6, 3
IMAGE = (1, 8, 8)
NIR_FRAMEWORKS = ("snntorch", "spikingjelly", "norse")


@dataclass
class Exchange:
    framework: str
    direction: str   # "snntorch → refsnn" (the framework exports) or "refsnn → snntorch"
    network: str
    result: str      # agree | DEPART | REFUSED
    where: str       # the first neuron layer and step where the spikes part, or who refused
    why: str
    refsnn_ok: bool = True


def nir_available():
    """None if nir and nirtorch import, else the reason."""
    try:
        for name in ("nir", "nirtorch"):
            importlib.import_module(name)
    except ImportError as e:
        return f"nir/nirtorch not installed ({e}): pip install \"refsnn[verify]\""
    return None


# ------------------------------------------------------------------------------------------
# running both sides
# ------------------------------------------------------------------------------------------
def _input(shape, seed):
    """[T, N, *shape] float32, mean half a threshold: every layer fires at a moderate rate."""
    return np.random.default_rng(seed).normal(0.5, 1.5, (T, N, *shape)).astype(np.float32)


def refsnn_spikes(model, x):
    """[(layer name, spikes [T, N, ...])] of every neuron layer of a refsnn model, in order."""
    from refsnn.neurons import BaseNeuron
    neurons = {name: m for name, m in model.modules() if isinstance(m, BaseNeuron)}
    outputs = _record_outputs(neurons)
    model.forward(x)
    return [(name, outputs[name]) for name in neurons]


def torch_spikes(module, is_neuron, x, step):
    """[(layer name, spikes [T, N, ...])] of the torch modules ``is_neuron`` picks, recorded with
    forward hooks while ``step(module, x_t, state) -> state`` runs the steps of ``x``."""
    import torch
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, []).append(
        (out[0] if isinstance(out, tuple) else out).detach().numpy().copy()))
        for name, m in module.named_modules() if is_neuron(m)]
    try:
        state = None
        with torch.no_grad():
            for x_t in x:
                state = step(module, torch.from_numpy(np.ascontiguousarray(x_t)), state)
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, np.stack(steps)) for name, steps in seen.items()]


def first_departure(mine, theirs):
    """None if every layer's spikes are equal, else "layer NAME (k-th neuron layer), t = t: d of
    n spikes differ" at the first layer and step where they part."""
    if len(mine) != len(theirs):
        return f"{len(mine)} neuron layers in refsnn, {len(theirs)} in the framework"
    for k, ((name, a), (_, b)) in enumerate(zip(mine, theirs)):
        b = b.reshape(a.shape)
        differ = a != b
        if differ.any():
            t = int(np.nonzero(differ.reshape(len(a), -1).any(axis=1))[0][0])
            return f"neuron layer {k + 1} ({name!r}), t = {t}: {int(differ.sum())} of {a.size} spikes differ"
    return None


@contextlib.contextmanager
def _quiet():
    """The frameworks print and log warnings while converting (snnTorch prints its weight
    scaling, norse logs each unexpected r): kept out of the table."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _refused(error):
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:110]}"


def _compare(framework, direction, network, mine, theirs, repairs):
    """One row from the two runs; on a departure, the first repair whose run agrees gives the why.
    ``repairs``: [(reason, () -> (mine, theirs))]."""
    where = first_departure(mine, theirs)
    if where is None:
        return Exchange(framework, direction, network, "agree", "", "identical spikes in every layer and step")
    for reason, rerun in repairs:
        if first_departure(*rerun()) is None:
            return Exchange(framework, direction, network, "DEPART", where, reason + " (repaired: agree)")
    return Exchange(framework, direction, network, "DEPART", where, "no repair explains it", refsnn_ok=False)


def _refsnn_net(kind, seed, neuron):
    """refsnn's side of an export: Linear → neuron → Linear → neuron, or Conv2d → neuron →
    AvgPool2d → Flatten → Linear → neuron."""
    import refsnn
    from refsnn.layers import AvgPool2d, Conv2d, Flatten, Linear
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        return refsnn.Sequential(Linear(FEATURES, HIDDEN, rng=rng), neuron(), Linear(HIDDEN, CLASSES, rng=rng), neuron())
    return refsnn.Sequential(Conv2d(1, 4, 3, padding=1, rng=rng), neuron(), AvgPool2d(2), Flatten(),
                             Linear(4 * 4 * 4, CLASSES, rng=rng), neuron())


def _export_refsnn(kind, seed, neuron):
    import refsnn
    model = _refsnn_net(kind, seed, neuron)
    return model, refsnn.to_nir(model, input_shape=IMAGE if kind == "conv" else None)


def tie_label(neuron):
    return f"Linear(identity)→{neuron}, v = v_th"


def tie_input(level):
    """[2, 1, FEATURES]: ``level`` at t = 0, then 0. Through an identity Linear it puts every
    neuron's potential exactly on its threshold (IF: level 1; LIF with tau = 2: level 2), where a
    neuron firing on >= spikes and one firing on > does not."""
    x = np.zeros((2, 1, FEATURES), np.float32)
    x[0] = level
    return x


def tie_net(neuron):
    """refsnn Linear(FEATURES, FEATURES) with identity weights and zero bias, then ``neuron``."""
    import refsnn
    from refsnn.layers import Linear
    linear = Linear(FEATURES, FEATURES)
    linear.params["weight"][...] = np.eye(FEATURES)
    linear.params["bias"][...] = 0
    return refsnn.Sequential(linear, neuron)


def _tie_row(fw, name, neuron, strict_neuron, level, run_framework):
    """refsnn → ``fw`` on a tie input: refsnn's ``neuron`` (firing on >=, recorded in the graph's
    metadata) against the framework's import; repaired by ``strict_neuron`` (firing on >)."""
    import refsnn
    x = tie_input(level)
    model = tie_net(neuron)
    theirs = run_framework(refsnn.to_nir(model), x)

    def strict():
        return refsnn_spikes(tie_net(strict_neuron), x), theirs

    return _compare(fw, f"refsnn → {fw}", tie_label(name), refsnn_spikes(model, x), theirs, [
        (f"{fw} fires on v > v_th, refsnn's neurons on >=, which to_nir writes into the graph's metadata and {fw}'s "
         "importer does not read; refsnn's neuron with strict=True (>) agrees", strict)])


V_RESET = -0.3


def _v_reset_row(fw, seed, run_import, refused_why="", repair=None):
    """refsnn → ``fw`` with LIF(tau = 2, v_reset = −0.3), written as NIR's LIF with v_leak = v_reset
    = −0.3 (refsnn's LIF leaks to its reset value, as SpikingJelly's). ``run_import(graph, x)``
    runs the framework's import; ``repair``: (reason, (graph, x) -> their spikes) or None."""
    import refsnn
    x = _input((FEATURES,), seed) * 4  # the potential starts at v_reset: a larger input makes layer 1 fire
    model, graph = _export_refsnn("mlp", seed, lambda: refsnn.LIF(tau=2.0, v_reset=V_RESET))
    label = f"Linear→LIF×2, v_reset = {V_RESET:g}"
    try:
        theirs = run_import(graph, x)
    except Exception as e:  # the framework's importer
        return Exchange(fw, f"refsnn → {fw}", label, "REFUSED", "import: " + _refused(e), refused_why)
    mine = refsnn_spikes(model, x)
    repairs = [] if repair is None else [(repair[0], lambda: (mine, repair[1](graph, x)))]
    return _compare(fw, f"refsnn → {fw}", label, mine, theirs, repairs)


# ------------------------------------------------------------------------------------------
# snnTorch 1.0: snntorch.export_nir.export_to_nir, snntorch.import_nir.import_from_nir
# ------------------------------------------------------------------------------------------
def _snntorch_rows(seed):
    import refsnn
    import snntorch as snn
    import torch
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir
    import nir
    fw, out, into = "snntorch", "snntorch → refsnn", "refsnn → snntorch"
    is_leaky = lambda m: isinstance(m, snn.Leaky)  # noqa: E731

    def leaky_net(per_neuron, **options):
        torch.manual_seed(seed)
        beta = (lambda n: torch.full((n,), 0.8)) if per_neuron else (lambda n: 0.8)
        thr = (lambda n: torch.ones(n)) if per_neuron else (lambda n: 1.0)
        return torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), snn.Leaky(beta=beta(HIDDEN), threshold=thr(HIDDEN),
                                                                               init_hidden=True, **options),
                                   torch.nn.Linear(HIDDEN, CLASSES),
                                   snn.Leaky(beta=beta(CLASSES), threshold=thr(CLASSES), init_hidden=True, output=True,
                                             **options))

    def run_snntorch(net, x):
        utils.reset(net)
        return torch_spikes(net, is_leaky, x, lambda m, x_t, s: m(x_t))

    rows = []
    x = _input((FEATURES,), seed)
    # export: the default Leaky (one β and threshold for the layer), with a batched and an unbatched sample
    errors = []
    for sample in (torch.randn(1, FEATURES), torch.randn(FEATURES)):
        try:
            with _quiet():
                export_to_nir(leaky_net(False), sample)
        except Exception as e:  # the framework's exporter: anything it raises is the finding
            errors.append(_refused(e))
    if len(errors) < 2:
        rows.append(Exchange(fw, out, "Linear→Leaky×2, scalar β", "agree", "", "exported"))
    else:
        rows.append(Exchange(fw, out, "Linear→Leaky×2, scalar β", "REFUSED", "export_to_nir: " + errors[0],
                             "nir's infer_types: the sample's batch dim enters the Input type ([1, 8] against the "
                             "Affine's [8]); with an unbatched sample the scalar β gives LIF parameters of shape () "
                             f"(input type []) against the Affine's [6]: {errors[1]}"))
    # export: per-neuron β and threshold (types infer), default reset (subtract, delayed)
    net = leaky_net(True)
    with _quiet():
        graph = export_to_nir(net, torch.randn(FEATURES))
    model = refsnn.from_nir(graph)

    def zero_reset():
        fixed = leaky_net(True, reset_mechanism="zero", reset_delay=False)
        fixed.load_state_dict({k: v for k, v in net.state_dict().items() if "reset_mechanism" not in k}, strict=False)
        return refsnn_spikes(model, x), run_snntorch(fixed, x)

    rows.append(_compare(fw, out, "Linear→Leaky×2, vector β, no batch", refsnn_spikes(model, x), run_snntorch(net, x), [
        ("Leaky's default reset_mechanism='subtract' (applied a step late, reset_delay=True) is exported as NIR's "
         "reset to v_reset = 0; Leaky(reset_mechanism='zero', reset_delay=False) is what the graph states",
         zero_reset)]))
    # export: a conv net (snnTorch exports Conv2d, AvgPool2d, Flatten)
    torch.manual_seed(seed)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1),
                               snn.Leaky(beta=torch.full((4, 8, 8), 0.8), threshold=torch.ones(4, 8, 8), init_hidden=True),
                               torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, CLASSES),
                               snn.Leaky(beta=torch.full((CLASSES,), 0.8), threshold=torch.ones(CLASSES), init_hidden=True,
                                         output=True))
    try:
        with _quiet():
            export_to_nir(conv, torch.randn(1, *IMAGE))
        rows.append(Exchange(fw, out, "Conv→Leaky→AvgPool→Linear→Leaky", "agree", "", "exported"))
    except Exception as e:  # the framework's exporter
        rows.append(Exchange(fw, out, "Conv→Leaky→AvgPool→Linear→Leaky", "REFUSED", "export_to_nir: " + _refused(e),
                             "nir's infer_types (calculate_conv_output): the sample's batch dim makes the Input "
                             "[1, 1, 8, 8], three spatial dims for a 2-d convolution; an unbatched sample fails "
                             "earlier, in nirtorch's trace (Flatten then merges the channels)"))
    # import: refsnn's LIF (tau = 2 steps, hard reset) and IF
    for name, neuron in (("LIF", lambda: refsnn.LIF(tau=2.0)), ("IF", refsnn.IF)):
        model, graph = _export_refsnn("mlp", seed, neuron)
        label = f"Linear→{name}×2"
        try:
            with _quiet():
                imported = import_from_nir(graph)
                theirs = torch_spikes(imported, is_leaky, x, lambda m, x_t, s: m(x_t, s)[1])
        except Exception as e:
            with _quiet():
                as_leaky = _nir_to_snntorch_module(nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1)))
            rows.append(Exchange(fw, into, label, "REFUSED", "import_from_nir: " + _refused(e),
                                 f"snnTorch requires IF's r = 1 (refsnn and SpikingJelly write r = 1/dt, so that "
                                 f"dt·r·I adds I), and with r = 1 it turns IF into a leaky neuron: "
                                 f"{type(as_leaky).__name__}(beta={float(as_leaky.beta):g})"))
            continue
        rows.append(_compare(fw, into, label, refsnn_spikes(model, x), theirs, []))

    def run_import(graph, x):
        with _quiet():
            return torch_spikes(import_from_nir(graph), is_leaky, x, lambda m, x_t, s: m(x_t, s)[1])

    rows.append(_tie_row(fw, "LIF", refsnn.LIF(tau=2.0), refsnn.LIF(tau=2.0, strict=True), 2.0, run_import))
    rows.append(_v_reset_row(fw, seed, run_import, "snnTorch's importer asserts v_leak = 0 (import_nir.py: 'v_leak not "
                                                   "supported'), so a LIF that leaks to a v_reset other than 0 cannot "
                                                   "be read"))
    return rows


# ------------------------------------------------------------------------------------------
# SpikingJelly 2.0: spikingjelly.activation_based.nir_exchange.export_to_nir / import_from_nir
# ------------------------------------------------------------------------------------------
def _spikingjelly_rows(seed):
    import refsnn
    import torch
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir
    fw, out, into = "spikingjelly", "spikingjelly → refsnn", "refsnn → spikingjelly"
    is_node = lambda m: isinstance(m, neuron.BaseNode)  # noqa: E731
    is_wrapped = lambda m: isinstance(getattr(m, "module", None), neuron.BaseNode)  # noqa: E731

    def net(kind, node):
        torch.manual_seed(seed)
        if kind == "mlp":
            return torch.nn.Sequential(layer.Linear(FEATURES, HIDDEN), node(), layer.Linear(HIDDEN, CLASSES), node())
        return torch.nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), node(), layer.AvgPool2d(2), layer.Flatten(),
                                   layer.Linear(4 * 4 * 4, CLASSES), node())

    def run(module, x):
        functional.reset_net(module)
        return torch_spikes(module, is_node, x, lambda m, x_t, s: m(x_t))

    rows = []
    nodes = (("LIF", lambda: neuron.LIFNode(tau=2.0)), ("IF", neuron.IFNode))
    for kind, shape in (("mlp", (FEATURES,)), ("conv", IMAGE)):
        x = _input(shape, seed)
        for name, node in nodes:
            label = f"Linear→{name}Node×2" if kind == "mlp" else f"Conv→{name}Node→AvgPool→Linear→{name}Node"
            sj = net(kind, node)
            with _quiet():
                graph = export_to_nir(sj, torch.randn(1, *shape))
            rows.append(_compare(fw, out, label, refsnn_spikes(refsnn.from_nir(graph), x), run(sj, x), []))
        for name, node in (("LIF", lambda: refsnn.LIF(tau=2.0)), ("IF", refsnn.IF)):
            label = f"Linear→{name}×2" if kind == "mlp" else f"Conv→{name}→AvgPool→Linear→{name}"
            model, graph = _export_refsnn(kind, seed, node)
            with _quiet():
                imported = import_from_nir(graph)
            theirs = torch_spikes(imported, is_wrapped, x, lambda m, x_t, s: m(x_t, s)[1])
            rows.append(_compare(fw, into, label, refsnn_spikes(model, x), theirs, []))
    # a potential exactly on the threshold: SpikingJelly fires on >=, NIR on >
    x = tie_input(1.0)
    sj = torch.nn.Sequential(layer.Linear(FEATURES, FEATURES), neuron.IFNode())
    with torch.no_grad():
        sj[0].weight.copy_(torch.eye(FEATURES))
        sj[0].bias.zero_()
    with _quiet():
        graph = export_to_nir(sj, torch.randn(1, FEATURES))

    def as_refsnn_if():  # refsnn's own IF fires on >=, as SpikingJelly
        return refsnn_spikes(tie_net(refsnn.IF()), x), run(sj, x)

    rows.append(_compare(fw, out, tie_label("IFNode"), refsnn_spikes(refsnn.from_nir(graph), x), run(sj, x), [
        ("SpikingJelly fires on v >= v_th (heaviside: x >= 0) and its export does not say so; NIR, and from_nir on a "
         "graph without refsnn's metadata, fire on >; refsnn's IF (>=) agrees", as_refsnn_if)]))
    model = tie_net(refsnn.IF())
    with _quiet():
        imported = import_from_nir(refsnn.to_nir(model))
    row = _compare(fw, into, tie_label("IF"), refsnn_spikes(model, x), torch_spikes(imported, is_wrapped, x,
                                                                       lambda m, x_t, s: m(x_t, s)[1]), [])
    if row.result == "agree":
        row.why = "both fire on >= (SpikingJelly's rule; it does not read the graph's metadata)"
    rows.append(row)

    def run_import(graph, x):
        with _quiet():
            return torch_spikes(import_from_nir(graph), is_wrapped, x, lambda m, x_t, s: m(x_t, s)[1])

    rows.append(_v_reset_row(fw, seed, run_import))
    return rows


# ------------------------------------------------------------------------------------------
# norse 1.1: norse.torch.to_nir / from_nir
# ------------------------------------------------------------------------------------------
def _norse_rows(seed):
    import nir
    import norse.torch as norse
    import refsnn
    import torch
    fw, out, into = "norse", "norse → refsnn", "refsnn → norse"
    cells = (norse.LIFBoxCell, norse.IAFCell)
    is_cell = lambda m: isinstance(m, cells)  # noqa: E731
    x = _input((FEATURES,), seed)

    def run(module, x):
        return torch_spikes(module, is_cell, x, lambda m, x_t, s: m(x_t, s)[1])

    torch.manual_seed(seed)
    net = norse.SequentialState(torch.nn.Linear(FEATURES, HIDDEN), norse.LIFBoxCell(), torch.nn.Linear(HIDDEN, CLASSES),
                                norse.LIFBoxCell())
    tau_mem_inv = float(net[1].p.tau_mem_inv)
    with _quiet():
        graph = norse.to_nir(net, torch.randn(1, FEATURES))
    label = "Linear→LIFBoxCell×2"
    rows = []
    try:
        refsnn.from_nir(graph)
    except ValueError as e:
        try:
            graph.infer_types()
            nir_says = "nir's infer_types accepts it"
        except Exception as nir_error:  # nir's own verdict on the same graph
            nir_says = f"nir's infer_types refuses it too ({type(nir_error).__name__})"
        rows.append(Exchange(fw, out, label, "REFUSED", "refsnn.from_nir: " + _refused(e),
                             f"the sample's batch dim enters the Input type ([1, {FEATURES}] against the Affine's "
                             f"[{FEATURES}]), and norse writes each LIF parameter as one 0-d value (input type [] "
                             f"against [{HIDDEN}]); {nir_says}", refsnn_ok="refuses it too" in nir_says))
    # the same graph with each parameter broadcast to its layer (what per-neuron NIR states)
    sizes = {"1": HIDDEN, "3": CLASSES}
    broadcast = _with_lif(graph, nir, lambda name, node, **p: {k: np.full(sizes[name], float(v)) for k, v in p.items()})
    norse_dt = 1e-3

    def meant_tau():  # the time constant norse meant, 1/τ_inv, at norse's own dt
        fixed = _with_lif(broadcast, nir, lambda name, node, **p: {**p, "tau": np.full(sizes[name], 1 / tau_mem_inv)})
        return refsnn_spikes(refsnn.from_nir(fixed, dt=norse_dt), x), run(net, x)

    written = float(np.ravel(broadcast.nodes["1"].tau)[0])
    why = (f"norse's exporter writes tau = dt/τ_inv = {written:g} s for τ = 1/τ_inv = {1 / tau_mem_inv:g} s (dt·τ, "
           f"not τ), and norse runs at dt = {norse_dt:g}, not 1e-4")
    label += ", shapes repaired"
    try:
        mine = refsnn_spikes(refsnn.from_nir(broadcast), x)
    except ValueError as e:  # refsnn refuses a time constant below its step
        repaired = first_departure(*meant_tau()) is None
        rows.append(Exchange(fw, out, label, "REFUSED", "refsnn.from_nir: " + _refused(e),
                             why + (f"; with tau = 1/τ_inv at dt = {norse_dt:g} refsnn agrees (repaired: agree)"
                                    if repaired else "; no repair explains it"), refsnn_ok=repaired))
    else:
        rows.append(_compare(fw, out, label, mine, run(net, x), [(why, meant_tau)]))
    for name, neuron in (("LIF", lambda: refsnn.LIF(tau=2.0)), ("IF", refsnn.IF)):
        model, graph = _export_refsnn("mlp", seed, neuron)
        with _quiet():
            imported = norse.from_nir(graph)

        def at_refsnn_dt(graph=graph, model=model):
            with _quiet():
                return refsnn_spikes(model, x), run(norse.from_nir(graph, dt=1e-4), x)

        repairs = [("norse's from_nir runs the graph at its dt = 1e-3 s, refsnn wrote it for dt = 1e-4 s: every decay "
                    "dt/τ is 10x (5 instead of 0.5); norse.from_nir(graph, dt=1e-4) agrees", at_refsnn_dt)]
        row = _compare(fw, into, f"Linear→{name}×2", refsnn_spikes(model, x), run(imported, x), repairs)
        if name == "IF" and row.result == "agree":
            row.why = ("norse's IAFCell ignores r and dt (v ← v + I, warning that r = 1/dt is not 1), which is what "
                       "NIR's IF with r = 1/dt computes")
        rows.append(row)

    def run_import(graph, x):
        with _quiet():
            return run(norse.from_nir(graph), x)

    rows.append(_tie_row(fw, "IF", refsnn.IF(), refsnn.IF(strict=True), 1.0, run_import))

    def at_refsnn_dt(graph, x):  # at refsnn's dt, so that the reset is the only difference left
        with _quiet():
            return run(norse.from_nir(graph, dt=1e-4), x)

    def with_v_reset(graph, x):  # the v_reset the graph states, put into norse's parameters
        with _quiet():
            imported = norse.from_nir(graph, dt=1e-4)
        for cell in imported.modules():
            if isinstance(cell, norse.LIFBoxCell):
                cell.p = cell.p._replace(v_reset=torch.tensor(V_RESET))
        return run(imported, x)

    row = _v_reset_row(fw, seed, at_refsnn_dt, repair=(
        "norse's from_nir gives LIFBoxParameters v_th and v_leak but not the node's v_reset, which stays norse's "
        f"default 0; with v_reset = {V_RESET:g} set in norse's parameters it agrees", with_v_reset))
    row.network += " (dt=1e-4)"
    rows.append(row)
    return rows


def _with_lif(graph, nir, change):
    """A copy of a flat graph with each LIF node rebuilt from ``change(name, node, **fields)``
    and the Input and Output types without the batch dimension the exporter's sample put there."""
    nodes = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Input):
            node = nir.Input(input_type={k: np.asarray(v)[-1:] for k, v in node.input_type.items()})
        elif isinstance(node, nir.Output):
            node = nir.Output(output_type={k: np.asarray(v)[-1:] for k, v in node.output_type.items()})
        elif isinstance(node, nir.LIF):
            fields = dict(tau=node.tau, r=node.r, v_leak=node.v_leak, v_threshold=node.v_threshold,
                          v_reset=node.v_reset)
            node = nir.LIF(**change(name, node, **{k: np.asarray(v) for k, v in fields.items()}))
        nodes[name] = node
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges))


ROWS = {"snntorch": _snntorch_rows, "spikingjelly": _spikingjelly_rows, "norse": _norse_rows}


def nir_table(frameworks=NIR_FRAMEWORKS, seed=0):
    """``(rows, skipped)``: the ``Exchange`` rows of every framework installed, and
    ``[(framework, reason)]`` for those that are not (or nir itself)."""
    reason = nir_available()
    if reason:
        return [], [("NIR table", reason)]
    rows, skipped = [], []
    for fw in frameworks:
        missing = available(fw)
        if missing:
            skipped.append((fw, missing))
            continue
        rows += ROWS[fw](seed)
    return rows, skipped


def format_nir_table(rows, skipped=()):
    """The table, one row per exchange, then the reasons (wrapped under each row)."""
    head = f"{'framework':<14}{'direction':<24}{'network':<40}{'result':<9}where"
    lines = ["NIR exchange (refsnn.from_nir / to_nir at dt = 1e-4 s; float32; spikes of every neuron layer compared)",
             head, "-" * 110]
    for r in rows:
        lines.append(f"{r.framework:<14}{r.direction:<24}{r.network:<40}{r.result:<9}{r.where}".rstrip())
        lines.append(f"{'':<14}why: {r.why}" + ("" if r.refsnn_ok else "  [refsnn FAILS]"))
    for fw, reason in skipped:
        lines.append(f"not run: {fw}: {reason}")
    failed = sum(not r.refsnn_ok for r in rows)
    lines.append(f"{len(rows)} exchanges: {sum(r.result == 'agree' for r in rows)} agree, "
                 f"{sum(r.result == 'DEPART' for r in rows)} depart, {sum(r.result == 'REFUSED' for r in rows)} refused; "
                 f"refsnn at fault in {failed}")
    return "\n".join(lines)
