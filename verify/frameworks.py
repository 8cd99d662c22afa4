"""Framework mirrors: the SpikingJelly 2.0 or snnTorch module that computes what a refsnn neuron
computes, or the reason that none does.

A mirror is built from a refsnn neuron layer and a dtype. ``Mirror.run(x)`` takes a time-major
torch tensor ``[T, N, ...]`` and returns ``(spikes, membrane)`` as torch tensors (``membrane`` is
None where the framework does not expose one); ``Mirror.parameters`` maps refsnn parameter names
to the framework's tensors, and ``Mirror.parameter_grad(name)`` reads their gradient in refsnn's
parametrization after ``backward``.

SpikingJelly (docs/neurons.md): ``LIFNode``, ``ParametricLIFNode``, ``IFNode``, ``KLIFNode`` and
``ComplementaryLIFNode`` are refsnn's LIF, PLIF, IF/SingleStep, KLIF and CLIF operation for operation,
firing on ``>=`` (so ``strict=True`` has no equivalent there). Surrogates: atan -> ``ATan``,
sigmoid -> ``Sigmoid``, rect -> ``Rect``, s2nn -> ``S2NN``, same α (and β); fast_sigmoid only at
α = 1, where ``SuperSpike(alpha=1)`` is the same function; boxcar has none.

snnTorch ``Leaky`` (1.0, ``reset_delay=True``), read from its source::

    R[t] = Θ(U[t-1] - thr).detach()                  (strict >, from the previous step's membrane)
    U[t] = β·U[t-1] + X[t] - R[t]·thr                 reset_mechanism="subtract"
    U[t] = β·(1 - R[t])·U[t-1] + X[t]                 reset_mechanism="zero"
    S[t] = Θ(U[t] - thr)  (strict >),  returns (S[t], U[t])

R[t] = S[t-1], so the delayed reset is refsnn's immediate reset seen one step later: no time
shift is needed. With V[t-1] = reset(H[t-1], S[t-1]) and H[t] = V[t-1] − V[t-1]/τ + X[t]
(refsnn, decay_input=False):

* zero: H[t] = (1 − 1/τ)(1 − S[t-1])·H[t-1] + X[t], which is snnTorch's U[t] with β = 1 − 1/τ.
  So ``Leaky(beta=1-1/tau, reset_mechanism="zero")`` == refsnn ``LIF(tau, decay_input=False,
  v_reset=0.0, strict=True, detach_reset=True)`` with U = H (the charged, pre-reset potential);
  IF is the case β = 1 and PLIF the case β = 1 − σ(w) (``learn_beta=True``).
* subtract: refsnn's LIF gives H[t] = β·(H[t-1] − S[t-1]·thr) + X[t]: the threshold is removed
  before the leak, snnTorch removes it after. They agree only for β = 1, i.e. refsnn
  ``IF(v_reset=None, strict=True, detach_reset=True)``. refsnn's ``Leaky`` and ``Synaptic``
  (refsnn/neurons/leaky.py, synaptic.py) are snnTorch's neurons themselves, subtract reset, learned
  β, α and threshold and reset_delay included: ``leaky_mirror`` below.

CLIF-authors: the CLIF authors' own neuron (HuuYuLong/Complementary-LIF, ``ComplementaryLIFNeuron``,
modules/neuron.py:39-82, with their ``Rectangle`` surrogate, modules/surrogate.py:6-35), written here
in torch from their equations; it has their hard reset and ``decay_input``, which SpikingJelly 2.0's
``ComplementaryLIFNode`` lacks (``clif_authors_mirror`` below).
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from refsnn.neurons import CLIF, IF, LIF, PLIF, SingleStep
from refsnn.neurons.leaky import LeakyFamily
from refsnn.neurons.klif import KLIF
from refsnn.neurons.lsnn import LSNN
from refsnn.neurons.rleaky import RLeaky

FRAMEWORKS = ("spikingjelly", "snntorch", "norse", "CLIF-authors")
REQUIRES = {"CLIF-authors": "torch"}  # the module a framework needs, where it is not the framework's name
# (CLIF-authors: capitalized as their repository is, so that no output of a non-CLIF check reads "lif")


class NoEquivalent(Exception):
    """The framework has no module computing exactly what this refsnn neuron computes."""


@dataclass
class Mirror:
    framework: str
    module: object                    # the torch module
    run: Callable                     # x [T, N, ...] -> (spikes, membrane or None)
    membrane: Optional[str]           # "v" (after reset), "h" (charged, before reset) or None
    parameters: dict = field(default_factory=dict)      # refsnn name -> torch tensor
    grad_maps: dict = field(default_factory=dict)       # refsnn name -> fn(torch grad) -> refsnn grad
    note: str = ""

    def parameter_grad(self, name):
        """The gradient of refsnn parameter ``name`` as the framework computed it, as NumPy."""
        grad = self.parameters[name].grad
        if grad is None:
            raise ValueError(f"{self.framework}: parameter {name!r} received no gradient")
        return self.grad_maps.get(name, lambda g: g)(grad).detach().numpy()


def torch_dtype(dtype):
    import torch
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return torch.float64 if dtype == np.float64 else torch.float32


def _common_checks(neuron):
    if neuron.smooth:
        raise NoEquivalent("smooth mode (refsnn's gradient-check forward) is not a framework neuron")


# ------------------------------------------------------------------------------------------
# SpikingJelly 2.0
# ------------------------------------------------------------------------------------------
def _spikingjelly_surrogate(s):
    from spikingjelly.activation_based import surrogate
    if s.name == "atan":
        return surrogate.ATan(alpha=s.alpha)
    if s.name == "sigmoid":
        return surrogate.Sigmoid(alpha=s.alpha)
    if s.name == "rect":
        return surrogate.Rect(alpha=s.alpha)
    if s.name == "s2nn":
        return surrogate.S2NN(alpha=s.alpha, beta=s.beta)
    if s.name == "fast_sigmoid":
        if s.alpha == 1.0:  # SuperSpike g' = α/(|u|+1)² equals 1/(α|u|+1)² exactly when α = 1
            return surrogate.SuperSpike(alpha=1.0)
        raise NoEquivalent("SpikingJelly has no fast_sigmoid 1/(α|u|+1)² for α ≠ 1 "
                           "(SuperSpike is α/(|u|+1)², equal only at α = 1)")
    raise NoEquivalent(f"SpikingJelly has no {s.name} surrogate (Rect is α·1{{|u|<1/(2α)}}, "
                       "half of boxcar's 1/V_th·1{|H−V_th|<V_th})")


def spikingjelly_mirror(neuron, dtype):
    """The SpikingJelly 2.0 multi-step node equivalent to ``neuron``, or NoEquivalent."""
    from spikingjelly.activation_based import neuron as sj
    import torch
    _common_checks(neuron)
    if isinstance(neuron, LeakyFamily):
        raise NoEquivalent("SpikingJelly's nodes reset in the step that fires (V = H − S·V_th), snnTorch's "
                           f"{type(neuron).__name__} at the next one, after the leak (U = βU + X − R·thr)"
                           + ("; and none has a synaptic current" if neuron.synaptic else ""))
    if isinstance(neuron, (RLeaky, LSNN)):
        raise NoEquivalent(f"SpikingJelly has no {type(neuron).__name__} (" + (
            "its recurrent nodes are not snnTorch's delayed-reset RLeaky)" if isinstance(neuron, RLeaky) else
            "no node with norse's synaptic current and relaxing threshold b)"))
    sg = _spikingjelly_surrogate(neuron.surrogate)
    if neuron.strict:
        raise NoEquivalent("SpikingJelly fires on H >= V_th; strict=True fires on >")
    th = float(neuron.v_threshold)
    tdt = torch_dtype(dtype)
    if isinstance(neuron, CLIF):
        if neuron.v_reset is not None or neuron.decay_input:
            raise NoEquivalent("SpikingJelly 2.0's ComplementaryLIFNode has the soft reset and no input decay only "
                               "(the authors' code has both: framework CLIF-authors)")
        node = sj.ComplementaryLIFNode(tau=float(neuron.tau), v_threshold=th, surrogate_function=sg,
                                       step_mode="m", store_state_seqs=True).to(tdt)

        def run(x):
            node.reset()
            return node(x), node.state_seqs[0]
        return Mirror("spikingjelly", node, run, "v")
    common = dict(v_threshold=th, v_reset=neuron.v_reset, surrogate_function=sg,
                  detach_reset=neuron.detach_reset, step_mode="m", store_v_seq=True)
    params, grad_maps = {}, {}
    if isinstance(neuron, LIF):
        node = sj.LIFNode(tau=float(neuron.tau), decay_input=neuron.decay_input, **common)
    elif isinstance(neuron, PLIF):
        node = sj.ParametricLIFNode(decay_input=neuron.decay_input, **common).to(tdt)
        with torch.no_grad():  # copy w after the cast, so a float64 w is not rounded to float32
            node.w.copy_(torch.from_numpy(np.asarray(neuron.params["w"], dtype=np.float64)))
        params["w"] = node.w
    elif isinstance(neuron, KLIF):
        node = sj.KLIFNode(scale_reset=neuron.scale_reset, tau=float(neuron.tau), decay_input=neuron.decay_input,
                           **common).to(tdt)
        with torch.no_grad():  # copy k after the cast, as PLIF's w
            node.k.copy_(torch.from_numpy(np.asarray(neuron.params["k"], dtype=np.float64)))
        params["k"] = node.k
    elif isinstance(neuron, IF):  # SingleStep included: an IF neuron run for one step
        node = sj.IFNode(**common)
    else:
        raise NoEquivalent(f"no SpikingJelly mirror for {type(neuron).__name__}")
    node = node.to(tdt)

    def run(x):
        node.reset()
        return node(x), node.v_seq
    return Mirror("spikingjelly", node, run, "v", params, grad_maps)


# ------------------------------------------------------------------------------------------
# snnTorch
# ------------------------------------------------------------------------------------------
def _snntorch_surrogate(s):
    from snntorch import surrogate
    if s.name == "atan":
        return surrogate.atan(alpha=s.alpha)
    if s.name == "sigmoid":  # snnTorch's g' = k·e^(−ku)/(e^(−ku)+1)², the same function
        return surrogate.sigmoid(slope=s.alpha)
    if s.name == "fast_sigmoid":
        return surrogate.fast_sigmoid(slope=s.alpha)
    raise NoEquivalent(f"snnTorch has no {s.name} surrogate")


SUBTRACT_AFTER_LEAK = ("snnTorch subtracts the threshold after the leak (U = βU + X − R·thr), refsnn "
                       "before it (H = β(H − S·V_th) + X): equal only for β = 1, the IF neuron")


def snntorch_mirror(neuron, dtype):
    """snnTorch ``Leaky`` (reset_delay=True) equivalent to ``neuron``, or NoEquivalent.

    Its membrane output is the charged potential H (before reset), its spikes are float32 in any
    dtype, and PLIF's ``w`` maps to ``beta = 1 − σ(w)`` (``learn_beta``), so
    dL/dw = −dL/dβ · σ(w)(1 − σ(w))."""
    import snntorch
    import torch
    # The most basic reason first; strict and detach_reset, which a user can just set, last.
    _common_checks(neuron)
    if isinstance(neuron, LeakyFamily):
        return leaky_mirror(neuron, dtype)
    if isinstance(neuron, RLeaky):
        return rleaky_mirror(neuron, dtype)
    if isinstance(neuron, CLIF):
        raise NoEquivalent("snnTorch has no complementary (CLIF) neuron")
    if not isinstance(neuron, (LIF, PLIF, IF)):
        raise NoEquivalent(f"no snnTorch mirror for {type(neuron).__name__}")
    sg = _snntorch_surrogate(neuron.surrogate)
    if (neuron.surrogate.name == "sigmoid" and np.dtype(dtype) == np.float64
            and math.frexp(neuron.surrogate.alpha)[0] != 0.5):
        raise NoEquivalent("in float64 snnTorch's sigmoid surrogate multiplies the (float32) spike gradient by "
                           "the slope in float32, exact only for a power-of-two slope")
    if not isinstance(neuron, IF) and neuron.decay_input:
        raise NoEquivalent("snnTorch never scales the input by 1/tau; use decay_input=False")
    if neuron.v_reset is None:
        if not isinstance(neuron, IF):
            raise NoEquivalent(SUBTRACT_AFTER_LEAK)
        if np.dtype(dtype) == np.float64 and float(np.float32(neuron.v_threshold)) != neuron.v_threshold:
            raise NoEquivalent("snnTorch forms R·thr in float32 (its spikes are float32 in any dtype), "
                               f"so in float64 it subtracts float32({neuron.v_threshold!r})")
        mechanism = "subtract"
    elif neuron.v_reset == 0.0:
        mechanism = "zero"
    else:
        raise NoEquivalent(f"snnTorch resets to zero only, not to v_reset = {neuron.v_reset:g}")
    if neuron.v_threshold < 0 and mechanism == "subtract":
        raise NoEquivalent("snnTorch's first step subtracts thr, as U[-1] = 0 > thr when thr < 0")
    if not neuron.detach_reset and not isinstance(neuron, SingleStep):  # one step: the reset never acts
        raise NoEquivalent("snnTorch's delayed reset is always detached; use detach_reset=True")
    if not neuron.strict:
        raise NoEquivalent("snnTorch fires on U > thr; use strict=True")
    tdt = torch_dtype(dtype)
    params, grad_maps = {}, {}
    if isinstance(neuron, PLIF):
        w = torch.tensor(float(neuron.params["w"]), dtype=tdt)
        k = torch.sigmoid(w)
        beta = 1 - k
        grad_maps["w"] = lambda g, k=k: -g * k * (1 - k)  # β = 1 − σ(w)
    elif isinstance(neuron, LIF):
        beta = torch.tensor(1.0 - 1.0 / neuron.tau, dtype=tdt)
    else:
        beta = torch.tensor(1.0, dtype=tdt)
    # Tensors (not Python floats) so that beta and threshold keep the run's dtype: snnTorch
    # stores a float argument with torch.as_tensor, i.e. rounded to float32.
    node = snntorch.Leaky(beta=beta, threshold=torch.tensor(neuron.v_threshold, dtype=tdt), spike_grad=sg,
                          learn_beta=isinstance(neuron, PLIF), reset_mechanism=mechanism, reset_delay=True)
    if isinstance(neuron, PLIF):
        params["w"] = node.beta

    def run(x):
        node.mem = torch.zeros(0, dtype=tdt)  # a fresh sequence: Leaky starts from U[-1] = 0
        return step_through(node, x)
    return Mirror("snntorch", node, run, "h", params, grad_maps, note="membrane = pre-reset H")


def step_through(node, x):
    """Run the single-step snnTorch ``node`` over x [T, ...]: the stacked (spikes, membranes) it returns."""
    import torch
    spikes, membranes = zip(*(node(xt) for xt in x))
    return torch.stack(spikes), torch.stack(membranes)


def leaky_mirror(neuron, dtype):
    """snnTorch ``Leaky`` or ``Synaptic`` with refsnn ``neuron``'s options and parameters.

    β, α and the threshold are tensors of the run's dtype (a float argument would be stored in
    float32). A scalar threshold is given the shape (1,): snnTorch's spikes and resets are float32
    in any dtype, and a 0-dim float64 threshold does not promote them, so R·thr would be formed in
    float32; a dimensioned one does, which is the exact product. Both return U (``mem``),
    pre-reset with reset_delay."""
    import snntorch
    import torch
    sg = _snntorch_surrogate(neuron.surrogate)
    if (neuron.surrogate.name == "sigmoid" and np.dtype(dtype) == np.float64
            and math.frexp(neuron.surrogate.alpha)[0] != 0.5):
        raise NoEquivalent("in float64 snnTorch's sigmoid surrogate multiplies the (float32) spike gradient by "
                           "the slope in float32, exact only for a power-of-two slope")
    if np.dtype(dtype) == np.float64 and not neuron.reset_delay:
        # snnTorch's spikes are float32 in any dtype, and with reset_delay=False its immediate reset carries
        # their gradient, dL/dS = A − dL/dU·thr (or ·U), which autograd would round to float32: in float64
        # the mirror takes snnTorch's own surrogate Function with the spike in the input's dtype (as RLeaky's)
        function = _spike_in_input_dtype(getattr(snntorch.surrogate, SNNTORCH_FUNCTIONS[neuron.surrogate.name]))
        sg = lambda u, f=function, a=neuron.surrogate.alpha: f.apply(u, a)  # noqa: E731
    tdt = torch_dtype(dtype)
    params, grad_maps = {}, {}

    def tensor(name, dimensioned=False):
        value = np.asarray(neuron._tensor(name), np.float64)
        t = torch.tensor(value.reshape(1) if dimensioned and value.ndim == 0 else value, dtype=tdt)
        if name in neuron.params:
            t = torch.nn.Parameter(t)
            params[name] = t
            grad_maps[name] = lambda g, shape=value.shape: g.reshape(shape)
        return t

    common = dict(beta=tensor("beta"), threshold=tensor("threshold", dimensioned=True), spike_grad=sg,
                  learn_beta="beta" in neuron.params, learn_threshold="threshold" in neuron.params,
                  reset_mechanism=neuron.reset_mechanism, reset_delay=neuron.reset_delay)
    if neuron.synaptic:
        node = snntorch.Synaptic(alpha=tensor("alpha"), learn_alpha="alpha" in neuron.params, **common)
    else:
        node = snntorch.Leaky(**common)
    for name in params:  # snnTorch wraps a learned value in a Parameter of its own: read that one
        params[name] = getattr(node, name)

    def run(x):
        node.reset_mem()  # a fresh sequence from U[-1] = 0 (and I[-1] = 0)
        spikes, membranes = [], []
        for xt in x:
            out = node(xt)
            spikes.append(out[0])
            membranes.append(out[-1])
        return torch.stack(spikes), torch.stack(membranes)
    when = "pre-reset U (reset_delay)" if neuron.reset_delay else "post-reset U"
    return Mirror("snntorch", node, run, "v", params, grad_maps, note=f"membrane = mem, {when}")


def _spike_in_input_dtype(function):
    """snnTorch surrogate ``function`` (an autograd Function) returning its spike in the input's dtype
    (exact: 0 or 1); its backward, snnTorch's, unchanged."""
    class Spike(function):
        @staticmethod
        def forward(ctx, input_, *args):
            return function.forward(ctx, input_, *args).to(input_.dtype)
    return Spike


SNNTORCH_FUNCTIONS = {"atan": "ATan", "fast_sigmoid": "FastSigmoid", "sigmoid": "Sigmoid"}


def rleaky_mirror(neuron, dtype):
    """snnTorch ``RLeaky`` with refsnn ``neuron``'s options, weights and parameters; its ``mem`` is refsnn's
    ``mem_seq``. In float64 its ``spike_grad`` is snnTorch's own surrogate Function with the spike in the
    input's dtype: snnTorch's surrogates return float32 spikes in any dtype, so autograd rounds dL/dS,
    which the recurrence carries back to every earlier step, to float32 (a finding: snnTorch's float64
    RLeaky gradients are float32-accurate), and its float64 recurrent Linear refuses float32 spikes."""
    import snntorch
    import torch
    from snntorch import surrogate
    s = neuron.surrogate
    if s.name not in SNNTORCH_FUNCTIONS:
        raise NoEquivalent(f"snnTorch has no {s.name} surrogate")
    tdt = torch_dtype(dtype)
    function = getattr(surrogate, SNNTORCH_FUNCTIONS[s.name])
    function = _spike_in_input_dtype(function) if tdt == torch.float64 else function

    def tensor(value):
        return torch.tensor(np.asarray(value, np.float64), dtype=tdt)

    node = snntorch.RLeaky(
        beta=tensor(neuron.params["beta"] if neuron.learn_beta else neuron._beta), threshold=tensor(neuron.v_threshold),
        spike_grad=lambda u: function.apply(u, s.alpha), learn_beta=neuron.learn_beta,
        learn_threshold=neuron.learn_threshold, learn_recurrent=neuron.learn_recurrent,
        reset_mechanism=neuron.reset_mechanism, reset_delay=neuron.reset_delay, all_to_all=neuron.all_to_all,
        linear_features=neuron.linear_features, V=None if neuron.all_to_all else tensor(neuron._array("V")))
    params = {}
    if neuron.all_to_all:
        node.recurrent.to(tdt)
        with torch.no_grad():
            for name in ("weight", "bias"):
                getattr(node.recurrent, name).copy_(tensor(neuron._array("recurrent." + name)))
        if neuron.learn_recurrent:
            params.update({"recurrent.weight": node.recurrent.weight, "recurrent.bias": node.recurrent.bias})
    elif neuron.learn_recurrent:
        params["V"] = node.V
    params.update({name: getattr(node, name) for name in ("beta", "threshold") if name in neuron.params})

    def run(x):
        node.reset_mem()  # a fresh sequence from mem = spk = 0
        return step_through(node, x)
    return Mirror("snntorch", node, run, "v", params,
                  note="membrane = mem, " + ("pre-reset U (reset_delay)" if neuron.reset_delay else "post-reset U"))


# ------------------------------------------------------------------------------------------
# norse 1.1
# ------------------------------------------------------------------------------------------
def norse_mirror(neuron, dtype):
    """norse ``LSNN`` (feed-forward, ``record_states=True``) with refsnn LSNN ``neuron``'s parameters as
    tensors of the run's dtype (``LSNNParameters``' defaults are float32 tensors); compares ``v`` after
    reset."""
    import torch
    from norse.torch import LSNN as NorseLSNN
    from norse.torch import LSNNParameters
    _common_checks(neuron)
    if not isinstance(neuron, LSNN):
        raise NoEquivalent(f"no norse mirror for {type(neuron).__name__} (norse's LIF neurons integrate a "
                           "synaptic current at dt; refsnn's LSNN is the norse neuron mirrored)")
    s = neuron.surrogate
    if not (s.name == "fast_sigmoid" and s.alpha == 1.0):
        raise NoEquivalent("norse's method='super' is 1/(|u|+1)² (norse 1.1's SuperSpike ignores its alpha), "
                           "refsnn's fast_sigmoid at α = 1; no other norse surrogate is a refsnn one")
    if not neuron.strict:
        raise NoEquivalent("norse fires on v̂ − b̂ > 0; use strict=True")
    tdt = torch_dtype(dtype)

    def tensor(value):
        return torch.tensor(float(value), dtype=tdt)

    p = LSNNParameters(tau_syn_inv=tensor(neuron.tau_syn_inv), tau_mem_inv=tensor(neuron.tau_mem_inv),
                       tau_adapt_inv=tensor(neuron.tau_adapt_inv), v_leak=tensor(neuron.v_leak),
                       v_th=tensor(neuron.v_threshold), v_reset=tensor(neuron.v_reset), beta=tensor(neuron.beta),
                       method="super", alpha=100.0)
    node = NorseLSNN(p, dt=neuron.dt, record_states=True)

    def run(x):
        spikes, states = node(x)
        return spikes, states.v
    return Mirror("norse", node, run, "v", note="membrane = v after reset")


# ------------------------------------------------------------------------------------------
# The CLIF authors' neuron (HuuYuLong/Complementary-LIF), in torch
# ------------------------------------------------------------------------------------------
def _authors_surrogate(s):
    """g'(u), u = H − V_th, of the surrogates the authors' train.py offers (lines 258-265) that refsnn has:
    their ``Rectangle(alpha)`` (modules/surrogate.py:19-21: 1/α where |u| <= α/2, the mask |u| > α/2 set
    to 0) and SpikingJelly's ``Sigmoid`` (α·σ(αu)(1 − σ(αu)))."""
    import torch
    alpha = float(s.alpha)
    if s.name == "rect_authors" or (s.name == "rect" and alpha == 1.0):
        return lambda u: torch.zeros_like(u).masked_fill(u.abs() <= alpha / 2, 1.0 / alpha)
    if s.name == "sigmoid":
        def sigmoid_grad(u):
            sg = torch.sigmoid(alpha * u)
            return (1.0 - sg) * sg * alpha
        return sigmoid_grad
    raise NoEquivalent("the CLIF authors' code trains with its Rectangle (refsnn rect_authors, or rect at "
                       "α = 1), SpikingJelly's Sigmoid or PiecewiseQuadratic (train.py:258-265)")


def _authors_spike():
    """Θ(u) = 1{u >= 0} (SpikingJelly's heaviside, which their Rectangle calls) with g'(u) backward."""
    import torch

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, grad_fn):
            ctx.save_for_backward(u)
            ctx.grad_fn = grad_fn
            return (u >= 0).to(u)

        @staticmethod
        def backward(ctx, grad):
            u, = ctx.saved_tensors
            return grad * ctx.grad_fn(u), None
    return Spike


def clif_authors_mirror(neuron, dtype):
    """The authors' ``ComplementaryLIFNeuron`` (modules/neuron.py:39-82) run over time as their
    ``MultiStepCLIFNeuron`` (lines 86-102), for refsnn ``CLIF`` only. Per step, their operations in
    their order, with V[−1] = v_reset (0 for the soft reset, SpikingJelly's BaseNode) and M[−1] = 0:

        X ← X/tau                                    (decay_input, line 63)
        H = V·(1 − 1/tau) + X                        (v_reset None or 0, line 69)
        H = V·(1 − 1/tau) + v_reset/tau + X          (v_reset ≠ 0, line 74)
        M ← M·σ(H/tau) ;  S = Θ(H − V_th) ;  M ← M + S          (lines 48-50)
        V = H − S·V_th (soft) | (1 − S)·H + S·v_reset (hard)    (lines 77-82)
        V ← V − S·σ(M)                               (line 52)

    No detach (their ``_reset`` ignores ``detach_reset``). Compares V after the reset."""
    import torch
    _common_checks(neuron)
    if not isinstance(neuron, CLIF):
        raise NoEquivalent(f"the CLIF authors' code has no {type(neuron).__name__} "
                           "(CLIF-authors mirrors their CLIF only)")
    if neuron.strict:
        raise NoEquivalent("the CLIF authors' neuron fires on H >= V_th (SpikingJelly's heaviside); strict=True "
                           "fires on >")
    grad_fn, spike = _authors_surrogate(neuron.surrogate), _authors_spike()
    tau, th, vr, decay_input = float(neuron.tau), float(neuron.v_threshold), neuron.v_reset, neuron.decay_input

    class AuthorsCLIF(torch.nn.Module):
        def forward(self, x):
            v = torch.full_like(x[0], 0.0 if vr is None else float(vr))
            m = torch.zeros_like(x[0])
            spikes, v_seq = [], []
            for xt in x:
                xt = xt / tau if decay_input else xt
                v = v * (1 - 1.0 / tau) + xt if vr is None or vr == 0 else v * (1 - 1.0 / tau) + vr / tau + xt
                m = m * torch.sigmoid(v / tau)
                s = spike.apply(v - th, grad_fn)
                m = m + s
                v = v - s * th if vr is None else (1.0 - s) * v + s * vr
                v = v - s * torch.sigmoid(m)
                spikes.append(s)
                v_seq.append(v)
            return torch.stack(spikes), torch.stack(v_seq)

    node = AuthorsCLIF()
    rect_note = ("; their Rectangle(1) is refsnn's rect(1) off |H − V_th| = 1/2"
                 if neuron.surrogate.name == "rect" else "")
    return Mirror("CLIF-authors", node, node, "v", note="membrane = V after the complementary reset" + rect_note)


MIRRORS = {"spikingjelly": spikingjelly_mirror, "snntorch": snntorch_mirror, "norse": norse_mirror,
           "CLIF-authors": clif_authors_mirror}


def mirror(neuron, framework, dtype):
    """The ``framework`` module equivalent to refsnn ``neuron`` in ``dtype``; raises NoEquivalent
    (with the reason) when there is none and ImportError when the framework is not installed."""
    if framework not in MIRRORS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {list(MIRRORS)}")
    return MIRRORS[framework](neuron, dtype)


def available(framework):
    """``None`` if ``framework`` can be imported, else the reason it cannot."""
    try:
        __import__("torch")
        __import__(REQUIRES.get(framework, framework))
    except ImportError as e:
        return f"{framework} not installed ({e})"
    return None
