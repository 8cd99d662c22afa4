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
"""
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
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
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
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        for n, dst in targets.items():
            if n not in state:
                continue
            src = np.asarray(state[n])
            if src.shape != dst.shape:
                raise ValueError(f"{n}: shape {src.shape} in the state dict, {dst.shape} in the model")
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
