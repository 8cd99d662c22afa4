"""NIR exchange: ``from_nir`` runs a NIR graph as a refsnn network, ``to_nir`` writes a refsnn network as
a NIR graph (the Neuromorphic Intermediate Representation, PyPI ``nir`` 1.0.8; docs/nir.md).

from_nir: a chain Input → nodes → Output becomes a ``Sequential`` whose children carry the node names:
Affine/Linear → Linear, Conv1d/Conv2d → Conv1d/Conv2d, SumPool2d/AvgPool2d → pooling, Flatten, Scale,
Threshold, and the neurons LIF, IF, LI, CubaLIF, CubaLI → ``EulerNeuron`` (NIR's ODEs by forward Euler at ``dt``,
docs/nir.md §3). A branching graph, a recurrent edge, a subgraph, Delay and other nodes or options
refsnn cannot run are refused naming the node and the reason.

to_nir: a ``Sequential`` or ``models.Chain`` (nested ones included) of Linear, Conv1d, Conv2d, BatchNorm
(folded into the layer before it with its running statistics), AvgPool2d, SumPool2d, Flatten, Dropout (the
identity in eval mode), Scale, Threshold and the neurons IF/LIF/PLIF with hard reset, snnTorch's Leaky (as NIR's LIF)
and Synaptic (as CubaLIF) with zero reset, and EulerNeuron. The conventions
(dt, firing on > or >=, hard reset, refsnn's version) go into the graph's metadata, and each refsnn
neuron's exact options into its node's metadata, so that from_nir rebuilds the very same neuron
(docs/nir.md §5).

``nir`` is an optional dependency (``pip install "refsnn[nir]"``), imported only inside these functions.
"""
import os

import numpy as np

from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Flatten, Linear, Scale, SumPool2d,
                     Threshold)
from .layers.pool import AdaptiveAvgPool2d
from .models import Chain
from .module import Module, OptionError, Sequential, check_real, float_dtype
from .neurons import IF, LIF, PLIF, EulerNeuron, Leaky, SingleStep, Synaptic
from .neurons.euler import KINDS
from .neurons.leaky import LeakyFamily
from .neurons.lif import LIFFamily
from .surrogate import Surrogate

DEFAULT_DT = 1e-4  # seconds: SpikingJelly's and snnTorch's NIR exchange use it too (norse: 1e-3)
MAX_ARRAY_BYTES = 1 << 30  # what a NIR file's arrays may hold in all, decompressed (checked before nir.read)
NEURON_NODES = ("LIF", "IF", "LI", "CubaLIF", "CubaLI")
REFSNN_NEURONS = {"LIF": LIF, "IF": IF, "PLIF": PLIF, "SingleStep": SingleStep}
# what to_nir writes into a refsnn neuron's node metadata (and all from_nir accepts there)
DESCRIBED = {"class", "tau", "w", "decay_input", "v_threshold", "v_reset", "surrogate", "alpha", "beta", "detach_reset",
             "strict"}
SURROGATE_OPTIONS = ("surrogate", "alpha", "beta", "detach_reset")   # an EulerNeuron's, in its node's metadata
SNNTORCH_NEURONS = {"Leaky": Leaky, "Synaptic": Synaptic}
# what to_nir writes into a Leaky's or Synaptic's node metadata (their options, snnTorch's names)
SNNTORCH_DESCRIBED = {"class", "beta", "alpha", "threshold", "spike_grad", "spike_grad_alpha", "spike_grad_beta",
                      "learn_beta", "learn_alpha", "learn_threshold", "reset_mechanism", "reset_delay"}


class NIRUnavailable(ImportError, ValueError):
    """The optional ``nir`` package is not installed (a ValueError too: the CLI reports it in one line)."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRUnavailable('NIR exchange needs the nir package: pip install "refsnn[nir]"') from None
    return nir


# ------------------------------------------------------------------------------------------
# from_nir
# ------------------------------------------------------------------------------------------
def read_graph(graph_or_path):
    """A ``nir.NIRGraph`` from itself or from a NIR (HDF5) file; one ValueError for anything else."""
    nir = _nir()
    if isinstance(graph_or_path, (str, os.PathLike)):
        path = os.fspath(graph_or_path)
        if not os.path.lexists(path):
            raise ValueError(f"{path}: no such NIR file")
        if not os.path.isfile(path):   # a directory, FIFO, device or a link to one: never opened
            raise ValueError(f"{path}: not a regular file (a NIR graph is an HDF5 file)")
        types, edges = {}, []
        try:
            size = _array_bytes(path)
            types, edges = _file_nodes(path)
            graph = nir.read(path) if size <= MAX_ARRAY_BYTES else None
        except Exception as e:  # h5py's OSError, nir's KeyError/AssertionError/ValueError on a foreign file
            unknown = sorted(f"{n!r} ({t})" for n, t in types.items() if not isinstance(getattr(nir, t, None), type))
            why = f"node {', '.join(unknown)}: type unknown to NIR" if unknown else f"{type(e).__name__}: {e}"
            raise ValueError(f"{path}: not a NIR graph that nir {nir.__version__} reads ({why})") from None
        if graph is None:
            raise ValueError(f"{path}: its arrays hold {size:,} bytes, over the {MAX_ARRAY_BYTES:,}-byte limit "
                             "(refsnn.nir.MAX_ARRAY_BYTES)")
        if set(graph.nodes) != set(types):   # nir.read added Input/Output nodes to loose ends
            ins, outs = {d for _, d in edges}, {s for s, _ in edges}
            loose = [f"{n!r} (no {' and no '.join(w for w, on in (('input edge', ins), ('output edge', outs)) if n not in on)})"
                     for n, t in types.items() if (n not in ins and t != "Input") or (n not in outs and t != "Output")]
            raise ValueError(f"{path}: nodes not connected by the graph's edges: {', '.join(loose)}")
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir expects a nir.NIRGraph or the path of a NIR file, got {type(graph).__name__}")
    return graph


def _array_bytes(path):
    """The bytes an HDF5 file's arrays hold decompressed, from its headers alone: checked against
    MAX_ARRAY_BYTES before nir.read allocates them (a few bytes of gzip can declare gigabytes)."""
    import h5py   # nir's own dependency
    total = [0]

    def count(_, item):
        if isinstance(item, h5py.Dataset):
            total[0] += int(np.prod(item.shape, dtype=np.float64)) * item.dtype.itemsize
    with h5py.File(path, "r") as f:
        f.visititems(count)
    return total[0]


def _file_nodes(path):
    """``({node name: its type}, [(source, destination)])`` of a NIR file's top-level graph, read from its
    HDF5 ``type`` fields and ``edges`` (what a message names when nir.read fails or adds nodes)."""
    import h5py
    types, edges = {}, []
    with h5py.File(path, "r") as f:
        nodes, pairs = f.get("node/nodes"), f.get("node/edges")
        for name, group in (nodes.items() if isinstance(nodes, h5py.Group) else ()):
            kind = group.get("type") if isinstance(group, h5py.Group) else None
            if isinstance(kind, h5py.Dataset) and kind.shape == ():
                value = kind[()]
                types[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if isinstance(pairs, h5py.Dataset) and pairs.ndim == 2 and pairs.shape[1] == 2 and pairs.size < 1 << 20:
            edges = [tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in e)
                     for e in pairs[()]]
    return types, edges


def _chain(graph):
    """The node names from the Input node to the Output node, in order; refuses cycles, branches,
    subgraphs and nodes off the chain."""
    nir = _nir()
    nodes, edges = graph.nodes, [tuple(str(n) for n in e) for e in graph.edges]
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                raise ValueError(f"NIR graph: the edge ({src!r} -> {dst!r}) names a node {end!r} the graph does "
                                 "not have")
    successors = {name: [] for name in nodes}
    predecessors = {name: [] for name in nodes}
    for src, dst in edges:
        successors[src].append(dst)
        predecessors[dst].append(src)
    state = {}  # depth-first search (a stack, not recursion) for an edge back into the path: 1 on it, 2 done
    for root in nodes:
        if root in state:
            continue
        state[root], path = 1, [(root, iter(successors[root]))]
        while path:
            name, ahead = path[-1]
            nxt = next(ahead, None)
            if nxt is None:
                state[name] = 2
                path.pop()
            elif state.get(nxt) == 1:
                raise ValueError(f"NIR graph: recurrent edge ({name!r} -> {nxt!r}): refsnn.from_nir runs "
                                 "feed-forward chains only")
            elif nxt not in state:
                state[nxt] = 1
                path.append((nxt, iter(successors[nxt])))
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise ValueError(f"NIR graph: node {name!r} is a subgraph (NIRGraph): refsnn.from_nir runs a flat chain "
                             "(exporters write recurrent layers as subgraphs)")
        if len(predecessors[name]) > 1 or len(successors[name]) > 1:
            raise ValueError(f"NIR graph: node {name!r} has {len(predecessors[name])} inputs and "
                             f"{len(successors[name])} outputs: a branching graph; refsnn.from_nir runs chains only")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"NIR graph: needs one Input and one Output node, has inputs {inputs} and outputs {outputs}")
    order = [inputs[0]]
    while successors[order[-1]]:
        order.append(successors[order[-1]][0])
    if order[-1] != outputs[0] or len(order) != len(nodes):
        off = sorted(set(nodes) - set(order))
        raise ValueError(f"NIR graph: the chain from {inputs[0]!r} ends at {order[-1]!r}"
                         + (f" and leaves out {off}" if off else "") + f", not at the Output node {outputs[0]!r}")
    return order


def _array(node_name, node, field):
    """A node's field as a finite float64 array."""
    value = getattr(node, field)
    if np.iscomplexobj(value):   # NumPy would drop the imaginary part with a warning
        raise ValueError(f"NIR node {node_name!r} ({type(node).__name__}): {field} holds complex numbers; NIR's "
                         "parameters are real")
    try:
        value = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"NIR node {node_name!r}: {field} is not numeric ({type(value).__name__})") from None
    if not np.all(np.isfinite(value)):
        raise ValueError(f"NIR node {node_name!r} ({type(node).__name__}): {field} contains NaN or Inf")
    return value


def _choice(metadata, key, allowed, where):
    """Refuses ``metadata[key]``, if present, unless it is one of ``allowed``."""
    value = metadata.get(key, allowed[0])
    value = value.decode() if isinstance(value, bytes) else value.item() if isinstance(value, np.generic) else value
    if value not in allowed:
        raise ValueError(f"NIR graph: {where} says {key}={value!r}; a graph from refsnn states one of "
                         f"{', '.join(map(repr, allowed))}")


def _declared(node, key):
    """The node's declared input or output shape (a tuple), or None."""
    types = getattr(node, key, None) or {}
    value = next(iter(types.values()), None) if isinstance(types, dict) else None
    return None if value is None else tuple(int(v) for v in np.atleast_1d(value))


def _ints(name, node, field, n):
    """A node's integer field (one integer, or ``n`` of them) as a tuple of ``n`` ints."""
    value = np.atleast_1d(np.asarray(getattr(node, field)))
    if value.size == 1:
        value = np.repeat(value, n)
    if value.size != n or value.dtype.kind not in "iuf" or np.any(value != np.round(value)):
        raise ValueError(f"NIR node {name!r}: {field} must be an integer or {n} integers, got {value.tolist()}")
    return tuple(int(v) for v in value)


def _import_layer(name, node, shape, options):
    """(refsnn layer or None for Input/Output, output shape) for one NIR node, given the input shape."""
    nir = _nir()
    kind = type(node).__name__
    dtype = options["dtype"]
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _array(name, node, "weight")
        if weight.ndim != 2:
            raise ValueError(f"NIR node {name!r} ({kind}): weight must be 2-D [out, in], got shape {weight.shape}")
        if shape[-1:] != (weight.shape[1],):
            raise ValueError(f"NIR node {name!r} ({kind}): takes {weight.shape[1]} features, gets shape {shape}")
        layer = Linear(weight.shape[1], weight.shape[0], bias=isinstance(node, nir.Affine), dtype=dtype)
        layer.params["weight"][...] = weight
        if isinstance(node, nir.Affine):
            layer.params["bias"][...] = np.broadcast_to(_array(name, node, "bias"), (weight.shape[0],))
        return layer, shape[:-1] + (weight.shape[0],)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        return _import_conv(name, node, shape, dtype)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        if len(shape) != 3:
            raise ValueError(f"NIR node {name!r} ({kind}): needs an input [C, H, W], gets shape {shape}")
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        layer = cls(*(_ints(name, node, f, 2) for f in ("kernel_size", "stride", "padding")))
        windows = layer._windows(*shape[1:])
        return layer, (shape[0], windows[0].size, windows[2].size)
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        start, end = start % len(shape) if start < 0 else start, end % len(shape) if end < 0 else end
        if start == end:
            return None, shape   # flattens one axis: nothing to do
        if (start, end) != (0, len(shape) - 1):
            raise ValueError(f"NIR node {name!r} (Flatten): flattens axes {start}..{end} of {shape}; refsnn's "
                             "Flatten flattens every feature axis (NIR's start_dim 0, end_dim -1)")
        return Flatten(), (int(np.prod(shape)),)
    if isinstance(node, nir.Scale):
        return Scale(_broadcast(name, node, "scale", shape), dtype=dtype), shape
    if isinstance(node, nir.Threshold):
        threshold = _broadcast(name, node, "threshold", shape)
        exact = _refsnn_neuron(node, {"threshold": threshold}, shape, options)   # an S²NN neuron refsnn wrote
        if exact is not None:
            return exact, shape
        return Threshold(threshold, surrogate=options["surrogate"], alpha=options["alpha"],
                         strict=_strict(node, options), dtype=dtype), shape
    if kind in NEURON_NODES and isinstance(node, getattr(nir, kind)):
        return _import_neuron(name, node, shape, options), shape
    if isinstance(node, (nir.Input, nir.Output)):
        return None, shape
    reason = {"Delay": "a delay line has no refsnn layer",
              "I": "the integrator without threshold has no refsnn layer"}.get(kind, "not a node refsnn runs")
    raise ValueError(f"NIR node {name!r}: type {kind} is not supported ({reason})")


def _import_conv(name, node, shape, dtype):
    """A NIR Conv1d or Conv2d node as refsnn's Conv1d or Conv2d, and its output shape."""
    nir, kind = _nir(), type(node).__name__
    dims = 1 if isinstance(node, nir.Conv1d) else 2
    weight = _array(name, node, "weight")
    groups = _ints(name, node, "groups", 1)[0]
    if len(shape) != 1 + dims or weight.ndim != 2 + dims or shape[0] != weight.shape[1] * groups:
        raise ValueError(f"NIR node {name!r} ({kind}): weight {weight.shape} with groups {groups} does not fit the "
                         f"input shape {shape} [C, {'L' if dims == 1 else 'H, W'}]")
    if _ints(name, node, "dilation", dims) != (1,) * dims:
        raise ValueError(f"NIR node {name!r} ({kind}): dilation {_ints(name, node, 'dilation', dims)} is not "
                         f"supported (refsnn's {kind} has no dilation)")
    kernel, stride = weight.shape[2:], _ints(name, node, "stride", dims)
    if isinstance(node.padding, str):
        if node.padding == "valid":
            padding = (0,) * dims
        elif node.padding == "same" and stride == (1,) * dims and all(k % 2 for k in kernel):
            padding = tuple(k // 2 for k in kernel)
        else:
            raise ValueError(f"NIR node {name!r} ({kind}): padding {node.padding!r} with kernel {kernel} and "
                             f"stride {stride} is not supported (an odd kernel and stride 1 only)")
    else:
        padding = _ints(name, node, "padding", dims)
    if dims == 1:
        layer = Conv1d(shape[0], weight.shape[0], kernel[0], stride[0], padding[0], groups=groups, dtype=dtype)
        out = (layer.output_size(shape[1]),)
    else:
        layer = Conv2d(shape[0], weight.shape[0], kernel, stride, padding, groups=groups, dtype=dtype)
        out = layer.output_size(*shape[1:])
    layer.params["weight"][...] = weight
    layer.params["bias"][...] = np.broadcast_to(_array(name, node, "bias"), (weight.shape[0],))
    return layer, (weight.shape[0], *out)


def _broadcast(name, node, field, shape):
    """A node's parameter array, which must broadcast to the layer's shape."""
    value = _array(name, node, field)
    try:
        fits = np.broadcast_shapes(value.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"NIR node {name!r} ({type(node).__name__}): {field} of shape {value.shape} does not fit "
                         f"the input shape {shape}")
    return value


def _strict(node, options):
    """NIR fires on >; a node refsnn exported from a neuron firing on >= says so in its metadata."""
    if options["from_refsnn"]:
        return (node.metadata or {}).get("firing", options["firing"]) != ">="
    return True


def _import_neuron(name, node, shape, options):
    kind = type(node).__name__
    fields = {f: _broadcast(name, node, f, shape) for f in KINDS[kind][3]}
    exact = _refsnn_neuron(node, fields, shape, options)
    if exact is not None:
        return exact
    surrogate = dict(surrogate=options["surrogate"], alpha=options["alpha"])
    described = (node.metadata or {}).get("refsnn") if options["from_refsnn"] else None
    if isinstance(described, dict) and described.get("class") == "EulerNeuron":   # an EulerNeuron refsnn wrote
        surrogate = {k: v.item() if isinstance(v, np.generic) else v for k, v in described.items()
                     if k in SURROGATE_OPTIONS}
    return EulerNeuron(kind, dt=options["dt"], strict=_strict(node, options), dtype=options["dtype"], **surrogate,
                       **fields)


def _refsnn_neuron(node, fields, shape, options):
    """The refsnn neuron a node's metadata describes, if this graph came from refsnn's to_nir at this dt
    and the node's fields are exactly what to_nir writes for it (else None: NIR's equations run)."""
    described = (node.metadata or {}).get("refsnn") if options["from_refsnn"] else None
    if isinstance(described, dict) and described.get("class") in SNNTORCH_NEURONS:
        return _rebuild_leaky(node, described, fields, shape, options)
    if not isinstance(described, dict) or described.get("class") not in REFSNN_NEURONS or \
            not set(described) <= DESCRIBED:
        return None
    described = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in described.items()}
    cls = REFSNN_NEURONS[described.pop("class")]
    w = described.pop("w", None)
    try:
        neuron = cls(**described)
        if w is not None:
            neuron.params["w"][...] = w
        kind, written = _neuron_fields(neuron, options["dt"], shape)
    except (TypeError, ValueError):
        return None
    if type(node).__name__ != kind or set(written) != set(fields) or \
            not all(np.array_equal(np.broadcast_to(fields[k], shape), written[k]) for k in fields):
        return None
    return neuron.to(options["dtype"])


def _rebuild_leaky(node, described, fields, shape, options):
    """The Leaky or Synaptic a node's metadata describes, if its NIR fields are exactly those to_nir writes
    for it at this dt (else None: NIR's equations run), with its β, α and threshold as exported."""
    if not set(described) <= SNNTORCH_DESCRIBED:
        return None
    kwargs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in described.items()}
    cls = SNNTORCH_NEURONS[kwargs.pop("class")]
    try:
        values = {k: np.asarray(kwargs[k], np.float64) for k in ("alpha", "beta", "threshold") if k in kwargs}
        kind, written = _leaky_fields(cls is Synaptic, values, options["dt"], shape)
        spike_grad = Surrogate(*(kwargs.pop(k) for k in ("spike_grad", "spike_grad_alpha", "spike_grad_beta")))
        neuron = cls(spike_grad=spike_grad, **kwargs).to(options["dtype"])
    except (KeyError, TypeError, ValueError):
        return None
    if type(node).__name__ != kind or set(written) != set(fields) or \
            not all(np.array_equal(np.broadcast_to(fields[k], shape), written[k]) for k in fields):
        return None
    arrays = {**neuron.buffers, **neuron.params}
    for k, value in values.items():   # the exported values, rounded once to the dtype (not via float32)
        arrays[k][...] = value
    return neuron


def from_nir(graph_or_path, dt=None, dtype=np.float32, surrogate="sigmoid", alpha=None):
    """A refsnn ``Sequential`` that runs a NIR graph (a ``nir.NIRGraph`` or the path of a NIR file).

    ``dt`` (seconds): the Euler step (docs/nir.md §3); None takes the dt a refsnn export recorded in the
    graph's metadata, else 1e-4 (SpikingJelly's and snnTorch's). ``dtype``: float32 or float64, the
    layers' parameters and buffers (the input must match, refsnn.module's rule). ``surrogate`` and
    ``alpha``: the surrogate gradient of the neurons and Threshold nodes (NIR does not state one).
    The children are named after the nodes; ``model.input_shape`` is the Input node's shape (one
    sample, one step), so the model takes ``[T, N, *input_shape]`` and gives ``[T, N, *output_shape]``.
    Neurons start at rest (v = v_leak; IF: v_reset; I = 0). Raises ValueError (TypeError for a non-graph)
    naming the node and the reason for anything refsnn cannot run exactly (docs/nir.md §4); NIRUnavailable
    without the nir package.
    """
    nir = _nir()
    graph = read_graph(graph_or_path)
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    from_refsnn = metadata.get("source") == "refsnn"
    if from_refsnn:   # the conventions refsnn's to_nir writes, and nothing else
        _choice(metadata, "firing", (">", ">=", "per node"), "the graph's metadata")
        _choice(metadata, "reset", ("hard",), "the graph's metadata")
    if dt is None and from_refsnn and "dt" in metadata:
        dt = check_real(metadata["dt"], "the dt recorded in the graph's metadata", low=0, low_open=True)
    options = dict(dt=check_real(DEFAULT_DT if dt is None else dt, "dt", low=0, low_open=True),
                   dtype=float_dtype(dtype), surrogate=surrogate, alpha=alpha, from_refsnn=from_refsnn,
                   firing=metadata.get("firing", ">"))
    order = _chain(graph)
    shape = _declared(graph.nodes[order[0]], "input_type")
    if shape is None:
        raise ValueError(f"NIR graph: the Input node {order[0]!r} has no shape")
    input_shape = shape
    model = Sequential()
    for name in order:
        node = graph.nodes[name]
        if from_refsnn:
            _choice(node.metadata or {}, "firing", (">", ">="), f"node {name!r}'s metadata")
        declared = _declared(node, "input_type")
        # a neuron's, Scale's or Threshold's input type is its parameters' shape, which need only broadcast
        # to the layer's (checked by _broadcast): per-channel [C, 1, 1] or one value for all
        by_parameters = type(node).__name__ in NEURON_NODES or isinstance(node, (nir.Scale, nir.Threshold))
        if declared is not None and declared != shape and not by_parameters:
            raise ValueError(f"NIR graph: node {name!r} ({type(node).__name__}) declares input shape {declared}, "
                             f"but the node before it gives {shape}")
        try:
            layer, shape = _import_layer(name, node, shape, options)
        except (ValueError, TypeError) as e:   # a layer's own check (EulerNeuron's tau >= dt...): name the node
            if f"node {name!r}" in str(e):
                raise
            raise ValueError(f"NIR node {name!r} ({type(node).__name__}): {e}") from None
        if layer is not None:
            model.add_child(name, layer)
    model.input_shape, model.output_shape = input_shape, shape
    return model


# ------------------------------------------------------------------------------------------
# to_nir
# ------------------------------------------------------------------------------------------
def _leaves(module, prefix=""):
    """``(qualified name, layer)`` of a Sequential or a ``refsnn.models.Chain`` (its forward ``order``) and
    the chains in it, in forward order."""
    if isinstance(module, (Sequential, Chain)):
        for name in getattr(module, "order", module.children):
            yield from _leaves(module.children[name], f"{prefix}.{name}" if prefix else name)
    elif module.children:
        raise ValueError(f"to_nir: {type(module).__name__} {prefix!r} is not a chain of layers (residual blocks "
                         "and other branching containers are not supported)")
    else:
        yield prefix, module


def _neuron_fields(neuron, dt, shape):
    """(NIR node type, {field: float64 array of ``shape``}) of a refsnn IF/LIF/PLIF at step dt
    (docs/nir.md §5's table)."""
    full = lambda value: np.full(shape, float(value))  # noqa: E731
    vr, vth = neuron.v_reset, neuron.v_threshold
    if isinstance(neuron, SingleStep):   # one step of IF from rest: S = Θ(X − V_th), NIR's Threshold
        return "Threshold", dict(threshold=full(vth))
    if isinstance(neuron, IF):
        return "IF", dict(r=full(1.0 / dt), v_threshold=full(vth), v_reset=full(vr))
    steps = neuron.tau if isinstance(neuron, LIF) else 1.0 / neuron.k   # the time constant in steps
    return "LIF", dict(tau=full(steps * dt), r=full(1.0 if neuron.decay_input else steps), v_leak=full(vr),
                       v_threshold=full(vth), v_reset=full(vr))


def _leaky_fields(synaptic, values, dt, shape):
    """(NIR node type, {field: float64 array of ``shape``}) of snnTorch's Leaky (Synaptic: ``synaptic``) with
    zero reset, ``values`` its beta, threshold (and alpha), at step dt (docs/nir.md §5): τ_mem = dt/(1 − β)
    and R = τ_mem/dt make Euler's V + (dt/τ_mem)·((0 − V) + R·I) snnTorch's β·V + I; τ_syn = dt/(1 − α)
    and w_in = τ_syn/dt make I + (dt/τ_syn)·(−I + w_in·X) its α·I + X (snnTorch's export_to_nir maps
    them so too). β and α are clamped to [0, 1] as the forward uses them; ValueError for 1 (no decay)."""
    full = lambda value: np.broadcast_to(np.asarray(value, np.float64), shape).copy()  # noqa: E731
    decays = {k: np.clip(full(values[k]), 0, 1) for k in (("alpha", "beta") if synaptic else ("beta",))}
    for k, decay in decays.items():
        if np.any(decay == 1):
            raise ValueError(f"{k} = 1 (no decay) has no finite NIR time constant")
    tau_mem = dt / (1 - decays["beta"])
    fields = dict(r=tau_mem / dt, v_leak=full(0.0), v_threshold=full(values["threshold"]), v_reset=full(0.0))
    if not synaptic:
        return "LIF", dict(tau=tau_mem, **fields)
    tau_syn = dt / (1 - decays["alpha"])
    return "CubaLIF", dict(tau_syn=tau_syn, tau_mem=tau_mem, w_in=tau_syn / dt, **fields)


def _export_leaky(name, neuron, dt, shape):
    """snnTorch's Leaky with zero reset as NIR's LIF, Synaptic with zero reset and reset_delay=False as
    CubaLIF (the same spikes: docs/nir.md §5); refuses the rest naming the reason."""
    nir, cls = _nir(), type(neuron).__name__
    if neuron.reset_mechanism != "zero":
        raise ValueError(f"to_nir: {name!r} ({cls}) " + (
            "resets by subtracting the threshold (reset_mechanism='subtract', snnTorch's default), which NIR's "
            "neurons cannot state: they reset to v_reset" if neuron.reset_mechanism == "subtract" else
            "never resets (reset_mechanism='none'), which NIR's firing neurons cannot state"))
    if neuron.synaptic and neuron.reset_delay:
        raise ValueError(f"to_nir: {name!r} (Synaptic) with reset_delay=True zeroes its membrane one step after a "
                         "spike with that step's input current included, which NIR's CubaLIF (v ← v_reset at the "
                         "spike, then v = I) cannot state; Synaptic(reset_mechanism='zero', reset_delay=False) is "
                         "CubaLIF")
    if neuron.smooth:
        raise ValueError(f"to_nir: {name!r} runs in smooth mode (a gradient-check device), which NIR cannot state")
    arrays = {**neuron.buffers, **neuron.params}
    values = {k: arrays[k].astype(np.float64) for k in ("alpha", "beta", "threshold") if k in arrays}
    try:
        kind, fields = _leaky_fields(neuron.synaptic, values, dt, shape)
    except ValueError as e:
        raise ValueError(f"to_nir: {name!r} ({cls}): {e}") from None
    s = neuron.surrogate
    described = {"class": cls, **{k: v.item() if v.ndim == 0 else v for k, v in values.items()},
                 **{f"learn_{k}": k in neuron.params for k in values}, "spike_grad": s.name,
                 "spike_grad_alpha": s.alpha, "spike_grad_beta": s.beta, "reset_mechanism": "zero",
                 "reset_delay": neuron.reset_delay}
    return getattr(nir, kind)(**fields, metadata={"firing": ">", "refsnn": described})


def _export_neuron(name, neuron, dt, shape):
    nir = _nir()
    if isinstance(neuron, LeakyFamily):
        return _export_leaky(name, neuron, dt, shape)
    if isinstance(neuron, EulerNeuron):
        fields = {k: np.broadcast_to(v.astype(np.float64), shape).copy() for k, v in neuron.buffers.items()}
        if neuron.dt != dt:
            raise ValueError(f"to_nir: {name!r} is a NIR neuron run at dt = {neuron.dt:g}, exported at dt = {dt:g}: "
                             "export at its own dt")
        described = {"class": "EulerNeuron", "surrogate": neuron.surrogate.name, "alpha": neuron.surrogate.alpha,
                     "beta": neuron.surrogate.beta, "detach_reset": neuron.detach_reset}
        return getattr(nir, neuron.kind)(**fields, metadata={"firing": ">" if neuron.strict else ">=",
                                                             "refsnn": described})
    if not isinstance(neuron, LIFFamily) or type(neuron) not in REFSNN_NEURONS.values():
        reason = {"CLIF": "its complementary potential m has no NIR node",
                  "RLeaky": "its recurrent connection makes a cycle, which to_nir does not write",
                  "LSNN": "its adaptive threshold has no NIR node",
                  "ConvertedNeuron": "the converted neuron resets by subtraction (soft reset), which NIR's neurons "
                                     "cannot state"}
        maps = "to_nir maps IF, LIF, PLIF, Leaky, Synaptic and EulerNeuron"
        raise ValueError(f"to_nir: {name!r} ({type(neuron).__name__}) is not exported: "
                         f"{reason.get(type(neuron).__name__, maps)}")
    if neuron.v_reset is None:
        raise ValueError(f"to_nir: {name!r} ({type(neuron).__name__}) has soft reset (v_reset None): NIR's neurons "
                         "reset to v_reset (hard reset) only")
    if neuron.smooth:
        raise ValueError(f"to_nir: {name!r} runs in smooth mode (a gradient-check device), which NIR cannot state")
    kind, fields = _neuron_fields(neuron, dt, shape)
    s = neuron.surrogate
    described = {"class": type(neuron).__name__, "v_threshold": neuron.v_threshold, "surrogate": s.name,
                 "alpha": s.alpha, "beta": s.beta, "strict": neuron.strict}
    if not isinstance(neuron, SingleStep):
        described.update(v_reset=neuron.v_reset, detach_reset=neuron.detach_reset)
    if not isinstance(neuron, IF):
        described["decay_input"] = neuron.decay_input
    if isinstance(neuron, LIF):
        described["tau"] = neuron.tau
    if isinstance(neuron, PLIF):
        described["w"] = float(neuron.params["w"])
    return getattr(nir, kind)(**fields, metadata={"firing": ">" if neuron.strict else ">=", "refsnn": described})


def _fold(layer, norm):
    """(weight, bias) of a Linear/Conv2d followed by a BatchNorm in eval mode, in float64:
    W' = W·γ/√(var + ε), b' = (b − mean)·γ/√(var + ε) + β (per output channel)."""
    gamma, beta = norm._affine()
    scale = gamma / np.sqrt(norm.buffers["running_var"].astype(np.float64) + norm.eps)
    weight = layer.params["weight"].astype(np.float64)
    bias = layer.params["bias"].astype(np.float64) if "bias" in layer.params else np.zeros(weight.shape[0])
    weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return weight, (bias - norm.buffers["running_mean"].astype(np.float64)) * scale + beta


def _export_layer(name, layer, shape, norm, dt):
    """(NIR node, output shape) of one refsnn layer (``norm``: the BatchNorm folded into it, or None)."""
    nir = _nir()
    if isinstance(layer, Linear):
        weight, bias = _fold(layer, norm) if norm else (layer.params["weight"], layer.params.get("bias"))
        if shape[-1:] != (layer.in_features,):
            raise ValueError(f"to_nir: {name!r} (Linear) takes {layer.in_features} features, gets shape {shape}")
        node = nir.Linear(weight=weight.copy()) if bias is None else nir.Affine(weight=weight.copy(), bias=bias.copy())
        return node, shape[:-1] + (layer.out_features,)
    if isinstance(layer, Conv2d):
        weight, bias = _fold(layer, norm) if norm else (layer.params["weight"], layer.params.get("bias"))
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise ValueError(f"to_nir: {name!r} (Conv2d) takes {layer.in_channels} channels, gets shape {shape}")
        bias = np.zeros(layer.out_channels, weight.dtype) if bias is None else bias
        node = nir.Conv2d(input_shape=tuple(shape[1:]), weight=weight.copy(), stride=layer.stride,
                          padding=layer.padding, dilation=(1, 1), groups=layer.groups, bias=bias.copy())
        return node, (layer.out_channels, *layer.output_size(*shape[1:]))
    if isinstance(layer, Conv1d):
        if len(shape) != 2 or shape[0] != layer.in_channels:
            raise ValueError(f"to_nir: {name!r} (Conv1d) takes {layer.in_channels} channels, gets shape {shape}")
        weight, bias = layer.params["weight"], layer.params.get("bias")
        bias = np.zeros(layer.out_channels, weight.dtype) if bias is None else bias
        node = nir.Conv1d(input_shape=shape[1], weight=weight.copy(), stride=layer.stride, padding=layer.padding,
                          dilation=1, groups=layer.groups, bias=bias.copy())
        return node, (layer.out_channels, layer.output_size(shape[1]))
    if isinstance(layer, (AvgPool2d, SumPool2d, AdaptiveAvgPool2d)):
        if len(shape) != 3:
            raise ValueError(f"to_nir: {name!r} ({type(layer).__name__}) needs [C, H, W], gets shape {shape}")
        if isinstance(layer, AdaptiveAvgPool2d):
            out = tuple(s if o is None else o for s, o in zip(shape[1:], layer.output_size))
            if any(s % o for s, o in zip(shape[1:], out)):
                raise ValueError(f"to_nir: {name!r} (AdaptiveAvgPool2d) from {shape[1:]} to {out} has windows of "
                                 "different sizes, which NIR's AvgPool2d cannot state")
            kernel = tuple(s // o for s, o in zip(shape[1:], out))
            layer = AvgPool2d(kernel)
        cls = nir.SumPool2d if isinstance(layer, SumPool2d) else nir.AvgPool2d
        node = cls(kernel_size=np.array(layer.kernel_size), stride=np.array(layer.stride),
                   padding=np.array(layer.padding))
        windows = layer._windows(*shape[1:])
        return node, (shape[0], windows[0].size, windows[2].size)
    if isinstance(layer, Flatten):
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1), (int(np.prod(shape)),)
    if isinstance(layer, Scale):
        return nir.Scale(scale=np.broadcast_to(layer.params["scale"], shape).astype(np.float64)), shape
    if isinstance(layer, Threshold):
        node = nir.Threshold(threshold=np.broadcast_to(layer.buffers["threshold"], shape).astype(np.float64),
                             metadata={"firing": ">" if layer.strict else ">="})
        return node, shape
    if isinstance(layer, (LIFFamily, EulerNeuron)) or hasattr(layer, "state_names"):
        return _export_neuron(name, layer, dt, shape), shape
    if type(layer).__name__ == "MaxPool2d":
        raise ValueError(f"to_nir: {name!r} (MaxPool2d): NIR has no max-pooling node")
    raise ValueError(f"to_nir: {name!r} ({type(layer).__name__}) has no NIR node")


def to_nir(model, dt=DEFAULT_DT, input_shape=None):
    """A ``nir.NIRGraph`` of a refsnn network, as in eval mode (BatchNorm folded with its running
    statistics, Dropout the identity).

    ``model``: a Sequential or models.Chain (nested ones included) of the layers the module docstring
    lists. ``dt`` (seconds): the step the graph's time constants are stated at (docs/nir.md §5: LIF's
    tau = tau_steps·dt; IF's r = 1/dt). ``input_shape``: one sample's shape (``[C, H, W]`` or ``[F]``),
    needed unless the first layer is a Linear or the model came from from_nir (``model.input_shape``).
    Node names are the layers' qualified names (the state-dict prefixes). Raises ValueError naming the layer and the reason for anything NIR cannot
    state exactly (soft reset, CLIF, max-pooling... docs/nir.md §4); NIRUnavailable without nir.
    """
    nir = _nir()
    dt = check_real(dt, "dt", low=0, low_open=True)
    if not isinstance(model, Module):
        raise TypeError(f"to_nir expects a refsnn Module, got {type(model).__name__}")
    layers = [(name, layer) for name, layer in _leaves(model) if not isinstance(layer, Dropout)]
    if not layers:
        raise ValueError("to_nir: the model has no layers")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)   # a network from_nir built knows it
    if input_shape is None:
        if not isinstance(layers[0][1], Linear):
            raise OptionError("to_nir: input_shape (one sample's shape, e.g. (1, 28, 28)) is needed when the first "
                              "layer is not a Linear")
        input_shape = (layers[0][1].in_features,)
    shape = tuple(int(s) for s in np.atleast_1d(input_shape))
    nodes, names = {"input": nir.Input(input_type={"input": np.array(shape)})}, ["input"]
    firings = set()
    i = 0
    while i < len(layers):
        name, layer = layers[i]
        norm = None
        if i + 1 < len(layers) and isinstance(layers[i + 1][1], (BatchNorm1d, BatchNorm2d)):
            if not isinstance(layer, (Linear, Conv2d)):
                raise ValueError(f"to_nir: {layers[i + 1][0]!r} (BatchNorm) follows {type(layer).__name__}, not a "
                                 "Linear or Conv2d it could be folded into; NIR has no batch-norm node")
            norm = layers[i + 1][1]
            i += 1
        elif isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            raise ValueError(f"to_nir: {name!r} (BatchNorm) does not follow a Linear or Conv2d it could be folded "
                             "into; NIR has no batch-norm node")
        node, shape = _export_layer(name, layer, shape, norm, dt)
        if "firing" in node.metadata:
            firings.add(node.metadata["firing"])
        nodes[name] = node
        names.append(name)
        i += 1
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    names.append("output")
    from . import __version__
    metadata = {"source": "refsnn", "refsnn_version": __version__, "dt": dt, "reset": "hard",
                "firing": firings.pop() if len(firings) == 1 else "per node" if firings else ">"}
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), metadata=metadata)


# ------------------------------------------------------------------------------------------
# the command line's two jobs: refsnn export-nir and refsnn eval FILE.nir
# ------------------------------------------------------------------------------------------
# the options of refsnn.train.TrainConfig that make a run's inputs; export_run records them in the graph's
# metadata and evaluate_nir feeds the graph the same inputs
INPUT_OPTIONS = ("dataset", "T", "encoding", "event_bins", "event_downsample", "seed")
INPUT_DEFAULTS = {"T": 4, "encoding": "direct", "event_bins": "time", "event_downsample": 1, "seed": 0}
SHIPPED = ("digits", "mnist-t10k")   # the data sets refsnn.data reads without a data_dir


def export_run(path, dt=DEFAULT_DT):
    """The NIR graph of a training run's network (its directory or checkpoint.json, or a ternary
    export) in eval mode, with the run's input pipeline (INPUT_OPTIONS) in the graph's metadata."""
    from .train import load_for_eval
    from .train.checkpoint import identify
    if identify(path) == "convert":
        raise ValueError(f"{path} is a converted-SNN run (refsnn convert): its neuron has no NIR node "
                         "(docs/nir.md §4)")
    run = load_for_eval(path)
    graph = to_nir(run.model.eval(), dt=dt, input_shape=tuple(run.info["input_shape"]))
    graph.metadata.update({name: getattr(run.cfg, name) for name in INPUT_OPTIONS})
    return graph


def input_pipeline(metadata, given):
    """The inputs a graph is evaluated on: ``given`` (INPUT_OPTIONS, None where not given) over what a
    refsnn export recorded in ``metadata`` over INPUT_DEFAULTS. A given value other than the recorded
    one is refused naming both (the graph was trained on the recorded inputs)."""
    recorded = {}
    if metadata.get("source") == "refsnn":
        recorded = {k: metadata[k] for k in INPUT_OPTIONS if k in metadata}
        recorded = {k: v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
                    for k, v in recorded.items()}
    for name, value in given.items():
        if value is not None and name in recorded and value != recorded[name]:
            raise ValueError(f"--{name.replace('_', '-')} {value} contradicts the graph's metadata: its run was "
                             f"trained with {name} = {recorded[name]!r} (leave the option out to use it)")
    return {**INPUT_DEFAULTS, **recorded, **{k: v for k, v in given.items() if v is not None}}


def evaluate_nir(path, dataset=None, data_dir=None, T=None, dt=None, batch_size=256, encoding=None, event_bins=None,
                 event_downsample=None):
    """``(loss, accuracy, n, inputs)`` of a NIR graph on the test split of a data set (refsnn.data.get_dataset's
    names), fed as ``refsnn eval RUN`` feeds the run: ``dataset``, ``T``, ``encoding``, ``event_bins`` and
    ``event_downsample`` (refsnn.train.TrainConfig's meanings; Poisson draws from the recorded ``seed``)
    default to what refsnn's export recorded in the graph's metadata, else INPUT_DEFAULTS; ``inputs``
    is the dict used. Cross-entropy and accuracy of the outputs averaged over time (spike counts, for a
    graph ending in a neuron). The graph's input may be the sample's shape or its flattened size.
    Raises ValueError for an option contradicting the metadata, a missing data set or a shape mismatch."""
    from .data import Batches, get_dataset
    from .losses import cross_entropy
    from .module import check_int
    from .train import TrainConfig
    from .train.build import encode
    from .train.config import ConfigError, dataset_key
    from .train.loop import evaluate
    graph = read_graph(path)
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    inputs = input_pipeline(metadata, dict(dataset=dataset, T=T, encoding=encoding, event_bins=event_bins,
                                           event_downsample=event_downsample))
    if "dataset" not in inputs:
        raise ValueError(f"{path}: a NIR graph without refsnn's metadata is evaluated on the data set --dataset names")
    try:
        cfg = TrainConfig.from_dict({**inputs, "data_dir": data_dir})
    except ConfigError as e:
        raise ValueError(f"--{e.option.replace('_', '-')}: {e}") from None
    if data_dir is None and dataset_key(cfg.dataset) not in SHIPPED:
        raise ValueError(f"{cfg.dataset} is not shipped with refsnn: pass --data-dir (the folder holding its files)")
    model = from_nir(graph, dt=dt)
    _, _, test_x, test_y, info = get_dataset(cfg.dataset, data_dir, cfg.T, cfg.event_bins, cfg.event_downsample)
    sample = tuple(info["input_shape"])
    if int(np.prod(model.input_shape)) != int(np.prod(sample)):
        raise ValueError(f"{path}: the graph takes inputs of shape {model.input_shape}, {cfg.dataset} has samples "
                         f"of shape {sample}")
    if model.output_shape != (info["num_classes"],):
        raise ValueError(f"{path}: the graph's output has shape {model.output_shape}, {cfg.dataset} has "
                         f"{info['num_classes']} classes")

    def feed(x, first):
        x = encode(cfg, x, None, first)                     # [T, N, ...]
        return x.reshape(x.shape[:2] + tuple(model.input_shape))
    batches = Batches(test_x, test_y, check_int(batch_size, "batch_size", 1), shuffle=False)
    loss, acc = evaluate(model, batches, feed, cross_entropy)
    return loss, acc, len(test_y), inputs
