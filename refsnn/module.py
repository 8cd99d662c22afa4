"""The layer protocol shared by every refsnn building block.

A layer is a `Module`:

* ``forward(x)`` returns the output and keeps what ``backward`` needs;
* ``backward(grad_out)`` returns ``grad_in`` and *accumulates* the gradients of the
  layer's own parameters into ``self.grads`` (keyed like ``self.params``);
* ``params`` / ``buffers`` hold arrays under PyTorch's state-dict names, so that a
  refsnn network and its PyTorch twin exchange weights with no mapping table.

Containers (``Sequential`` and the network builders) name their children so that
``named_parameters()`` yields ``"0.weight"``, ``"features.3.bias"``... exactly as
``torch.nn.Module.state_dict()`` would.

Rules every layer follows:

* **dtypes**: a layer computes in the dtype of its input, float32 or float64. A layer with
  floating parameters or buffers (Linear, Conv2d, BatchNorm, ClippedReLU, PLIF,
  ConvertedNeuron) refuses an input of another dtype, as PyTorch does ("expected scalar type
  Double but found Float"): convert the model with ``model.to(np.float64)`` (or the input with
  ``x.astype(np.float32)``). Layers are built in float32 unless given ``dtype``.
* **one backward per forward**: ``backward`` consumes what ``forward`` saved; a second
  ``backward`` for one ``forward`` raises (PyTorch without ``retain_graph``), so no gradient
  is ever accumulated twice.
* **hyper-parameters** (thresholds, time constants, rates...) are any real scalar: Python
  int/float, NumPy integer/floating scalars, 0-d arrays (``check_real``); bool, complex,
  strings, NaN and Inf are refused with an ``OptionError`` naming the option. Counts and sizes
  take integers (``check_int``), switches take True/False (``check_flag``).
"""
import math
import numbers
from collections import OrderedDict

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(x, name="input", min_ndim=1):
    """Return ``x`` as a C-contiguous float32/float64 array or raise a clear error."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {x.shape}")
    return np.ascontiguousarray(x)


class OptionError(ValueError, TypeError):
    """A hyper-parameter of the wrong kind or out of its range. Both a ValueError and a
    TypeError (as NumPy's AxisError is both), so callers catching either see it."""


def _scalar(value):
    """``value`` unwrapped from a 0-d array, or None if it is not a real number (bools excluded)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        return None
    return value


def check_real(value, name, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a Python float: any finite real scalar (Python int/float, NumPy integer or
    floating scalar, 0-d array) within [low, high] (open ends with ``low_open``/``high_open``).
    Anything else (bool, complex, str, None, NaN, Inf, out of range) raises one ``OptionError``
    naming ``name`` and the accepted range."""
    number = _scalar(value)
    try:
        number = None if number is None else float(number)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if (number is None or not math.isfinite(number)
            or (low is not None and (number < low or (low_open and number == low)))
            or (high is not None and (number > high or (high_open and number == high)))):
        if low is not None and high is not None:
            where = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            where = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            where = f" {'<' if high_open else '<='} {high:g}"
        else:
            where = ""
        raise OptionError(f"{name} must be a finite real number{where}, got {value!r}")
    return number


def check_int(value, name, low=None):
    """``value`` as a Python int: a Python or NumPy integer (or 0-d integer array) >= ``low``;
    bools and floats (even 3.0) are refused, as PyTorch refuses them for sizes."""
    number = _scalar(value)
    if number is None or not isinstance(number, (int, np.integer)) or (low is not None and number < low):
        where = f" >= {low}" if low is not None else ""
        raise OptionError(f"{name} must be an integer{where}, got {value!r}")
    return int(number)


def float_dtype(dtype):
    """``dtype`` as np.float32 or np.float64 (anything NumPy reads as one), else an OptionError."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in FLOAT_DTYPES:
        raise OptionError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def check_flag(value, name):
    """``value`` as a Python bool: True or False (NumPy bools included), nothing else."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class NonFiniteError(ValueError):
    """A NaN or Inf where a finite number is required (the trainer reports it as divergence)."""


def check_finite(x, name="input"):
    if not np.all(np.isfinite(x)):
        raise NonFiniteError(f"{name} contains NaN or Inf")
    return x


class Module:
    """Base class: parameters, buffers, children, train/eval mode and state dicts."""

    def __init__(self):
        self.params = OrderedDict()    # name -> array (learnable)
        self.grads = OrderedDict()     # name -> array, same shapes as params
        self.buffers = OrderedDict()   # name -> array (running statistics...)
        self.children = OrderedDict()  # name -> Module
        self.training = True

    # -- building -------------------------------------------------------------------
    def add_param(self, name, value):
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def add_child(self, name, module):
        self.children[str(name)] = module
        return module

    # -- the protocol ---------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def check_dtype(self, x):
        """The dtype rule (module docstring): refuse an input whose dtype differs from this
        layer's own floating parameters and buffers."""
        for kind, arrays in (("parameter", self.params), ("buffer", self.buffers)):
            for name, array in arrays.items():
                if array.dtype.kind == "f" and array.dtype != x.dtype:
                    raise TypeError(
                        f"{type(self).__name__}: the input is {x.dtype} but the {kind} {name!r} is "
                        f"{array.dtype}; convert the model with .to(np.{x.dtype}) or the input with "
                        f".astype(np.{array.dtype}) (mixed dtypes are refused, as in PyTorch)")

    def backward(self, grad_out):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- traversal ------------------------------------------------------------------
    def modules(self, prefix=""):
        """Yield ``(qualified_name, module)`` for this module and every descendant."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self):
        """Yield ``(name, param, grad)`` for every learnable array, PyTorch names."""
        for prefix, m in self.modules():
            for name, p in m.params.items():
                yield (f"{prefix}.{name}" if prefix else name), p, m.grads[name]

    def named_buffers(self):
        for prefix, m in self.modules():
            for name, b in m.buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), b

    def zero_grad(self):
        for _, _, g in self.named_parameters():
            g[...] = 0

    def train(self, mode=True):
        for _, m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype):
        """Cast every parameter, gradient and floating buffer to ``dtype`` in place."""
        dtype = float_dtype(dtype)
        for _, m in self.modules():
            for d in (m.params, m.grads, m.buffers):
                for k, v in d.items():
                    if v.dtype.kind == "f":
                        d[k] = v.astype(dtype)
        return self

    # -- state dicts ----------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers under PyTorch state-dict names (copies)."""
        out = OrderedDict((n, p.copy()) for n, p, _ in self.named_parameters())
        out.update((n, b.copy()) for n, b in self.named_buffers())
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the module by name; shapes must match exactly."""
        targets = OrderedDict((n, p) for n, p, _ in self.named_parameters())
        targets.update(self.named_buffers())
        missing = [n for n in targets if n not in state]
        unexpected = [n for n in state if n not in targets]
        if strict and (missing or unexpected):
            raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        for n, dst in targets.items():
            if n not in state:
                continue
            src = np.asarray(state[n])
            if src.shape != dst.shape:
                raise ValueError(f"{n}: shape {src.shape} in the state dict, {dst.shape} in the model")
            if src.dtype.kind not in "fiub" or (dst.dtype.kind == "f" and src.dtype.kind != "f"):
                raise ValueError(f"{n}: dtype {src.dtype} in the state dict, {dst.dtype} in the model")
            dst[...] = src
        return self

    def __repr__(self):
        inner = "".join(f"\n  ({k}): " + repr(v).replace("\n", "\n  ") for k, v in self.children.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self):
        return ""


class Sequential(Module):
    """Children applied in order, named "0", "1", ... like ``torch.nn.Sequential``."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_child(i, layer)

    def __iter__(self):
        return iter(self.children.values())

    def __getitem__(self, i):
        return list(self.children.values())[i]

    def __len__(self):
        return len(self.children)

    def forward(self, x):
        for layer in self.children.values():
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.children.values()):
            grad_out = layer.backward(grad_out)
        return grad_out
