"""The one forward/backward template every neuron layer runs; a neuron supplies only its kernels.

Input ``x`` is ``[T, N, ...]``; the kernels see it as ``[T, n]`` (n = N·features neurons) and run
one parallel loop over blocks of neurons with the time loop inside (compile.py). ``BaseNeuron``
owns everything around the kernels:

- validation of the options, the input, the state and the upstream gradients;
- allocation: outputs and scratch arrays reused between calls (``reusable_empty``), read-only
  initial states and zero gradients (``constant_array``);
- the state in (``forward(x, state)``) and out (``self.state``, ``self.grad_state``);
- what is saved for the backward, one meaning for every neuron: ``self._saved = (h_seq, init, x)``,
  the charged potential H [T, n], the initial state {name: [n]} and the input [T, n] when the
  backward reads it (``saves_input``; else None). The backward recomputes everything else from H
  with the forward's own floating-point operations (docs/bptt.md);
- the non-finite checks of the forward, and the float64 retry of an overflowing float32 backward.

A neuron class sets ``state_names`` (and ``saves_input``) and writes three methods:

    _forward_kernel(x, init, spikes, h_seq, seqs, finals)    fill the [T, n] / [n] arrays given
    _backward_kernel(dt, grad_out, grad_v, grad_finals, h_seq, init, x)
        -> (grad_x [T, n], {state name: dL/dstate0 [n]}, {parameter name: dL/dparameter})
    _reference(x, init, grad_out, grad_v, grad_finals)      the same through the reference pair
        -> (spikes, h_seq, {name: seq}, {name: final}, grad_x, {name: dL/dstate0}, {name: dL/dparameter})

where the backward runs in dtype ``dt`` (the data's, or float64 for the retry).
"""
import sys

import numba
import numpy as np

from ..module import Module, NonFiniteError, check_flag, check_float_array, check_real
from ..surrogate import BOXCAR, Surrogate, derivative, dtype_constant, primitive


@numba.njit(cache=True, error_model="numpy")
def all_finite(a):
    """np.all(np.isfinite(a)) for a 1-D array in one vectorized pass, without a temporary:
    x − x is 0 for finite x and NaN for ±Inf and NaN."""
    bad = False
    for i in range(a.size):
        bad |= not (a[i] - a[i] == 0)
    return not bad


def fire_reference(h, v_threshold, scale, alpha, beta, o):
    """The spike of the reference kernels (surrogate.fire on an array h [n]): Θ(u) with
    u = (H − V_th)·scale, 1{u > 0} if ``o.strict``, the surrogate's φ(u) if ``o.smooth``."""
    u = (h - v_threshold) * scale
    if o.smooth:
        return np.vectorize(primitive, otypes=[h.dtype])(o.surrogate, u, alpha, beta)
    return (u > 0 if o.strict else u >= 0).astype(h.dtype)


def derivative_reference(u, alpha, beta, o):
    """The surrogate gradient g'(u) on an array, in float64 (the reference runs in float64)."""
    return np.vectorize(derivative, otypes=[np.float64])(o.surrogate, u, alpha, beta)


def fire_grad_reference(h, v_threshold, scale, alpha, beta, o):
    """dS/dH = g'(u)·scale of the reference kernels."""
    return derivative_reference((h - v_threshold) * scale, alpha, beta, o) * scale


# ------------------------------------------------------------------------------------------
# Reused output and scratch arrays
# ------------------------------------------------------------------------------------------
# A fresh np.empty of a few MB is fresh memory from the OS on every call: its page faults cost more
# than the kernel that fills it (measured: LIF forward kernel 1.8 ms into reused arrays, 4.6 ms into
# fresh ones, [4, 32·16384] float32). So each layer keeps its large arrays and hands one out again
# only when nothing else refers to it: the reference count of the array (every NumPy view, reshape,
# memoryview or torch.from_numpy of it holds a reference to it) equals the count with only the
# layer's own list holding it. An output the caller still holds is never overwritten; up to
# ``_POOL`` arrays per role let a caller that keeps the previous call's output (out = layer(x) in a
# loop) still get reused memory.
_POOL = 2


def _count_refs(pool, i):
    a = pool[i]
    return sys.getrefcount(a)


_UNSHARED = _count_refs([np.empty(0)], 0)  # the count when only the pool holds the array


def reusable_empty(scratch, role, shape, dtype):
    """np.empty(shape, dtype), reusing an array of ``scratch[role]`` that nothing else refers to."""
    dtype = np.dtype(dtype)
    pool = scratch.setdefault(role, [])
    for i in range(len(pool)):
        if pool[i].shape == shape and pool[i].dtype == dtype and _count_refs(pool, i) <= _UNSHARED:
            return pool[i]
    a = np.empty(shape, dtype)
    if len(pool) >= _POOL:
        pool.pop(0)
    pool.append(a)
    return a


def constant_array(scratch, role, size, value, dtype):
    """A length-``size`` array of ``value`` kept for reading only (initial states, zero gradients):
    the kernels copy from it and never write to it, and it is never handed to the caller."""
    key = (role, size, float(value), np.dtype(dtype).str)
    a = scratch.get(key)
    if a is None:
        scratch.pop(next((k for k in scratch if isinstance(k, tuple) and k[0] == role), None), None)
        a = scratch[key] = np.full(size, value, dtype)
    return a


def _same_number(a, b):
    """``a == b`` for a Python or NumPy scalar ``a``; False for anything else (arrays, modules)."""
    return isinstance(a, (float, np.floating)) and not isinstance(a, bool) and a == b


def check_time_constant(value, name):
    """tau (or init_tau) > 1."""
    return check_real(value, name, low=1, low_open=True)


class BaseNeuron(Module):
    """A spiking neuron layer (see the module docstring for what it owns).

    ``forward(x, state=None)`` returns spikes ``[T, N, ...]`` in the dtype of ``x``; ``state``
    (a dict like ``self.state``) starts the sequence from a previous chunk's final state.
    After it: ``self.state`` is the final state, ``self.h_seq`` the charged potentials and,
    with ``store_v_seq=True``, ``self.v_seq`` the membrane after reset (and CLIF's ``self.m_seq``).

    ``backward(grad_out, grad_v=None, grad_state=None)`` returns ``dL/dx``; ``grad_v`` is an
    upstream gradient on the membrane sequence, ``grad_state`` one on the final state (from a
    later chunk); the gradient on the initial state is left in ``self.grad_state``.

    The returned arrays and these attributes are written into memory the layer reuses on a later
    call only once nothing else refers to them (``reusable_empty``): what a caller keeps stays as it
    was (tests/test_neuron_buffers.py).
    """

    state_names = ("v",)
    membrane = "v"       # the state that holds the membrane potential (snnTorch's neurons: "mem")
    saves_input = False  # does the backward read x (PLIF's dH/dk)?
    max_steps = None     # the most time steps T it accepts (SingleStep: 1)

    def __init__(self, v_threshold=1.0, surrogate="sigmoid", alpha=None, beta=1.0,
                 smooth=False, strict=False, store_v_seq=False):
        super().__init__()
        self.v_threshold = check_real(v_threshold, "v_threshold")
        self.surrogate = Surrogate(surrogate, alpha, beta)
        if self.surrogate.code == BOXCAR and self.v_threshold <= 0:
            raise ValueError("the boxcar surrogate divides by v_threshold, which must be > 0")
        self.smooth = check_flag(smooth, "smooth")
        self.strict = check_flag(strict, "strict")
        self.store_v_seq = check_flag(store_v_seq, "store_v_seq")
        self._saved = None
        self._scratch = {}  # arrays reused across calls (reusable_empty, constant_array)

    # -- the template ---------------------------------------------------------------
    def forward(self, x, state=None):
        x = self._as_time_major(x)              # x: [T, n]
        init = self._initial_state(state, x)    # {name: [n]}
        T, n = x.shape
        spikes = self._empty("spikes", x.shape, x.dtype)
        h_seq = self._empty("h_seq", x.shape, x.dtype)
        # the sequences after reset, or H as a stand-in the kernel never writes
        seqs = {name: self._empty(name + "_seq", x.shape, x.dtype) if self.store_v_seq else h_seq
                for name in self.state_names}
        finals = {name: self._empty(name + "_final", (n,), x.dtype) for name in self.state_names}
        self._forward_kernel(x, init, spikes, h_seq, seqs, finals)
        self._raise_if_nonfinite(finals[self.membrane], x, h_seq, init)
        self._saved = (h_seq, init, x if self.saves_input else None)
        self.h_seq = h_seq.reshape(self._shape)
        for name in self.state_names:
            setattr(self, name + "_seq", seqs[name].reshape(self._shape) if self.store_v_seq else None)
        self.state = self._unflatten_state(finals)
        return spikes.reshape(self._shape)

    def backward(self, grad_out, grad_v=None, grad_state=None):
        h_seq, init, x = self._saved if self._saved is not None else (None, None, None)
        n = h_seq.shape[1] if h_seq is not None else 0
        self.grad_state = None  # the previous call's, so that its arrays can be reused (reusable_empty)
        grad_out = self._check_grad(grad_out, "grad_out")
        grad_v = self._check_grad(grad_v, "grad_v") if grad_v is not None else None
        grad_finals = self._grad_finals(grad_state, n)
        self._saved = None  # one backward per forward (refsnn.module)

        def run(dt):
            return self._backward_kernel(dt, grad_out, grad_v, grad_finals, h_seq, init, x)

        upstream = {"grad_out": grad_out, "grad_v": grad_v,
                    **{f"grad_state[{name!r}]": g for name, g in grad_finals.items()}}
        grad_x, grad_init, grad_params = self._retry_in_float64(run, h_seq, upstream)
        for name, g in grad_params.items():
            if name in self.params:
                self.grads[name] += g
        self.grad_state = self._unflatten_state(grad_init)
        return grad_x.reshape(self._shape)

    def reference(self, x, grad_out, state=None, grad_v=None, grad_state=None):
        """forward(x, state) then backward(grad_out, grad_v, grad_state) through the file's plain NumPy
        reference pair (float64; tests/test_neuron_reference.py): a dict of the results by name,
        spikes, h_seq, v_seq..., state, grad_x, grad_state, grads (the parameters')."""
        x = self._as_time_major(x)
        init = self._initial_state(state, x)
        flat = lambda a: None if a is None else np.asarray(a, x.dtype).reshape(x.shape)  # noqa: E731
        grad_finals = self._grad_finals(grad_state, x.shape[1])
        spikes, h_seq, seqs, finals, grad_x, grad_init, grad_params = self._reference(
            x, init, flat(grad_out), flat(grad_v), grad_finals)
        out = dict(spikes=spikes, h_seq=h_seq, grad_x=grad_x, state=finals, grad_state=grad_init,
                   grads={k: g for k, g in grad_params.items() if k in self.params},
                   **{name + "_seq": seq for name, seq in seqs.items()})
        return {k: self._unflatten_state(v) if isinstance(v, dict) and k != "grads" else
                v if k == "grads" else v.reshape(self._shape) for k, v in out.items()}

    # -- options and constants the kernels read ---------------------------------------
    def _surrogate_args(self, dtype=None):
        """Threshold and surrogate constants rounded to the data's dtype, so float32 stays float32
        (given as ``dtype`` when that differs: the float32 values in float64, see ``backward``):
        ``(v_threshold, scale, alpha, beta)``."""
        s, d = self.surrogate, self._dtype
        w = (dtype or d).type
        alpha, beta = s.constants(d)
        return (w(dtype_constant(self.v_threshold, "v_threshold", d)),
                w(dtype_constant(s.argument_scale(self.v_threshold), f"1/v_threshold (the {s.name} scale)", d)),
                w(alpha), w(beta))

    def _constant(self, value, dtype):
        """A scalar rounded to the data's dtype, then held in ``dtype`` (float32 stays float32);
        ValueError naming the option that holds it when it is not finite in the data's dtype."""
        with np.errstate(over="ignore"):
            rounded = self._dtype.type(value)
        if not np.isfinite(rounded):
            dtype_constant(value, self._option_named(value), self._dtype)
        return np.dtype(dtype).type(rounded)

    def _option_named(self, value):
        """The attribute or property of this neuron that holds ``value`` (for an error message)."""
        names = [*vars(self), *(k for k in dir(type(self)) if isinstance(getattr(type(self), k, None), property))]
        return next((f"{type(self).__name__}.{k}" for k in names if _same_number(getattr(self, k, None), value)),
                    f"a {type(self).__name__} constant")

    def _check_options_fit(self):
        """Every float option of this neuron (tau, v_reset, beta, lam ...) is finite in the data's dtype:
        ValueError naming the first that is not, before any kernel reads it."""
        for name, value in vars(self).items():
            if type(value) is float:
                dtype_constant(value, f"{type(self).__name__}.{name}", self._dtype)

    # -- the state --------------------------------------------------------------------
    def rest_value(self, name):
        return 0.0

    def _initial_state(self, state, x):
        """Initial state arrays [n] (the rest state when ``state`` is None)."""
        n = x.shape[1]
        if state is None:
            return {name: constant_array(self._scratch, "rest " + name, n, self.rest_value(name), x.dtype)
                    for name in self.state_names}
        if not isinstance(state, dict) or set(state) != set(self.state_names):
            raise ValueError(f"state must be a dict with keys {self.state_names}, got {state!r:.80}")
        out = {}
        for name in self.state_names:
            arr = np.asarray(state[name])
            if arr.shape != self._shape[1:]:
                raise ValueError(f"state[{name!r}] has shape {arr.shape}, expected {self._shape[1:]}")
            check_float_array(arr, f"state[{name!r}]", min_ndim=0)
            out[name] = np.ascontiguousarray(arr, dtype=x.dtype).reshape(n)
        return out

    def _grad_finals(self, grad_state, n):
        """The upstream gradients on the final state [n]: a dict with some of ``state_names`` as keys
        (the ones not given are zeros)."""
        if grad_state is not None and (not isinstance(grad_state, dict) or not set(grad_state) <= set(self.state_names)):
            raise ValueError(f"grad_state must be a dict with keys among {self.state_names}, got {grad_state!r:.80}")
        finals = {}
        for name in self.state_names:
            if grad_state is not None and name in grad_state:
                arr = np.asarray(grad_state[name])
                if arr.shape != self._shape[1:]:
                    raise ValueError(f"grad_state[{name!r}] has shape {arr.shape}, expected {self._shape[1:]}")
                finals[name] = np.ascontiguousarray(arr, dtype=self._dtype).reshape(n)
            else:
                finals[name] = constant_array(self._scratch, "zero " + name, n, 0.0, self._dtype)
        return finals

    def _unflatten_state(self, arrays):
        return {k: v.reshape(self._shape[1:]) for k, v in arrays.items()}

    # -- validation and allocation --------------------------------------------------------
    def _empty(self, role, shape, dtype):
        """np.empty(shape, dtype), or this layer's array from an earlier call that nothing else
        holds any more (reusable_empty)."""
        return reusable_empty(self._scratch, role, shape, dtype)

    def _as_time_major(self, x):
        self._saved = None  # a forward that fails leaves nothing for a backward to misuse
        # drop this layer's own references to the previous call's arrays, so that they can be
        # reused if the caller does not hold them either
        self.h_seq = self.state = None
        for name in self.state_names:
            setattr(self, name + "_seq", None)
        x = check_float_array(x, "input", min_ndim=2)
        self.check_dtype(x)
        if x.shape[0] == 0:
            raise ValueError(f"input has no time steps (shape {x.shape}); expected [T, N, ...] with T >= 1")
        if x.size == 0:
            raise ValueError(f"input is empty (shape {x.shape}); expected [T, N, ...] with N >= 1")
        self._shape = x.shape
        self._dtype = x.dtype
        self._check_options_fit()
        return x.reshape(x.shape[0], -1)

    def _check_grad(self, g, name):
        if self._saved is None:
            raise ValueError(f"{type(self).__name__}.backward called before forward "
                             "(or a second time for one forward)")
        g = check_float_array(g, name, min_ndim=2)
        if g.shape != self._shape:
            raise ValueError(f"{name} has shape {g.shape}, expected the forward output shape {self._shape}")
        return np.ascontiguousarray(g, dtype=self._dtype).reshape(self._shape[0], -1)

    # -- non-finite values ------------------------------------------------------------
    def _raise_if_nonfinite(self, v_final, x, h_seq, init):
        """A NaN or ±Inf anywhere in the input or the initial state, or a membrane that
        overflows, propagates into the final membrane (NaN stays NaN, Inf survives or becomes
        NaN through the leak and the reset), so checking the final state, n values instead of
        T·n, finds every one; only then are the input, state and H searched for the cause."""
        if all_finite(v_final):
            return
        name = type(self).__name__
        bad = ~np.isfinite(x)
        if bad.any():
            t, i = np.unravel_index(np.argmax(bad), bad.shape)
            where = np.unravel_index(i, self._shape[1:])
            raise NonFiniteError(f"{name}: input contains NaN/Inf (first at [t, n, ...] = "
                                 f"{[int(t), *(int(k) for k in where)]})")
        for key, value in init.items():
            if not np.all(np.isfinite(value)):
                raise NonFiniteError(f"{name}: the initial state[{key!r}] contains NaN/Inf")
        t = int(np.argmax(~np.isfinite(h_seq).all(axis=1)))
        raise NonFiniteError(f"{name}: the membrane potential overflowed {self._dtype} at step {t}; "
                             f"the input was finite (largest |input| {float(np.max(np.abs(x))):.3g})"
                             + ("; float64 has the range for it (.to(np.float64) and a float64 input)"
                                if self._dtype == np.float32 else ""))

    def _retry_in_float64(self, run, h_seq, upstream):
        """``run(dtype)`` -> ``(grad_x, grad_init, grad_params)``, run in the data's dtype.

        NaN and Inf propagate backward through time into every total (the gradients on the initial
        state and the parameters), as the forward's into the final state, so a non-finite total is
        the only sign of a non-finite ``grad_x``. Given a finite forward, it comes from a non-finite
        upstream gradient (an error naming it) or an intermediate overflow: in float32 (e.g.
        (vr − H)·dL/dV with H near 3e38, later multiplied by a surrogate gradient of 0) the kernel is
        then run again in float64 on the same H and float32 constants and its result rounded to
        float32; what does not fit raises."""
        grad_x, grad_init, grad_params = run(self._dtype)
        if self._finite([*grad_init.values(), *grad_params.values()]):
            return grad_x, grad_init, grad_params
        name = type(self).__name__
        for key, g in upstream.items():
            if g is not None and not np.all(np.isfinite(g)):
                raise NonFiniteError(f"{name}.backward: {key} contains NaN/Inf")
        if self._dtype == np.float32:
            with np.errstate(over="ignore"):
                grad_x, grad_init, grad_params = run(np.dtype(np.float64))
                rounded = lambda a: np.asarray(a).astype(np.float32)  # noqa: E731
                grad_x = rounded(grad_x)
                grad_init = {k: rounded(a) for k, a in grad_init.items()}
                grad_params = {k: rounded(a) for k, a in grad_params.items()}
            if self._finite([grad_x, *grad_init.values(), *grad_params.values()]):
                return grad_x, grad_init, grad_params
        raise NonFiniteError(f"{name}.backward: the gradient overflowed {self._dtype} (the membrane "
                             f"potential reaches {float(np.max(np.abs(h_seq))):.3g}); the input and "
                             "the upstream gradients were finite")

    def _finite(self, arrays):
        with np.errstate(over="ignore"):
            return all(all_finite(np.asarray(a).astype(self._dtype, copy=False).ravel()) for a in arrays)

    def extra_repr(self):
        return (f"v_threshold={self.v_threshold}, surrogate={self.surrogate!r}"
                + (", smooth=True" if self.smooth else "") + (", strict=True" if self.strict else ""))
