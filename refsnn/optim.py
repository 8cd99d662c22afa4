"""Optimizers and learning-rate schedules with PyTorch's numerics.

Each update follows torch.optim's single-tensor CPU implementation (``foreach=False``):
the same formula, the same order of operations, hyperparameters rounded to the parameter's
dtype where torch rounds them. The optimizer takes ``model.named_parameters()`` (triples
``(name, param, grad)``) and updates the parameter arrays *in place*, so build it after
``model.to(dtype)`` (which replaces the arrays).

Two details make float32 results bit-for-bit equal to torch on FMA hardware (AVX2/AVX-512):

* torch's vectorized kernels for ``add(x, alpha=a)``, ``lerp`` and ``addcmul`` evaluate
  ``a·b + c`` with one rounding (``vec::fmadd``); ``_fused_fma`` reproduces that in float32;
* a Python scalar meets a float32 tensor as ``float32(scalar)``: ``cast(lr)`` etc. below.

What remains: torch's ``sqrt`` (MKL/VML) is not correctly rounded (≤ 0.75 ulp, against
numpy's 0.5), so Adam's denominator can differ by one ulp from torch's in either dtype.

State dicts are flat ``{name: np.ndarray}`` (scalars as 0-d arrays), savable with
``np.savez`` and loadable with ``np.load(..., allow_pickle=False)``:
``"lr"``, the hyperparameters, ``"step"`` (Adam) and ``"state.<param name>.<buffer>"``.
"""
import math

import numba
import numpy as np
from numba import prange

from .module import OptionError, check_flag, check_int, check_real


# -- fused updates -------------------------------------------------------------------------
# One Numba pass per parameter (Adam: two, around NumPy's sqrt) instead of a NumPy pass over
# memory per operation; element by element, torch's operations in torch's order and dtype:
# every scalar argument comes already cast to the parameter's dtype (``cast`` in step()),
# float32 arithmetic stays float32, and each fused multiply-add is _fused_fma. Parameters and
# buffers are flat views of contiguous arrays.
@numba.njit(cache=True)
def _fused_fma(a, b, c):
    """a·b + c, as torch's ``vec::fmadd``, once the caller casts it back to its dtype.

    float32: the product of two float32 numbers is exact in float64, so one float64 addition
    and the cast back give the fused result (a double rounding can only differ on a float32
    tie reached by the float64 sum, about one case in 2^29). float64: plain a·b + c, whose
    one extra rounding is far inside the float64 tolerance.
    """
    return np.float64(a) * np.float64(b) + np.float64(c)


@numba.njit(cache=True, parallel=True)
def _sgd_update(param, grad, buffer, first, weight_decay, momentum, one_minus_dampening, nesterov, neg_lr):
    """SGD.step for one parameter; ``buffer`` empty without momentum; ``first``: buffer <- g."""
    cast = param.dtype.type
    for i in prange(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = cast(_fused_fma(param[i], weight_decay, g))                       # g + wd·p
        if buffer.size > 0:
            if first:
                b = g
            else:
                b = cast(_fused_fma(g, one_minus_dampening, buffer[i] * momentum))  # μ·b + (1 - τ)·g
            buffer[i] = b
            g = cast(_fused_fma(b, momentum, g)) if nesterov else b
        param[i] = cast(_fused_fma(g, neg_lr, param[i]))                         # p - lr·g


@numba.njit(cache=True, parallel=True)
def _adam_moments(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, decay, weight_decay, lerp_weight,
                  lerp_from_end, beta2, one_minus_beta2):
    """Adam/AdamW.step up to the square root, for one parameter: decay ≠ 1 scales p (AdamW),
    weight_decay ≠ 0 adds wd·p to g (Adam); m <- lerp(m, g, 1 - β1) (``lerp_weight`` = 1 - β1,
    or 1 - β1 - 1 measured from g when ``lerp_from_end``: torch.lerp's two forms); v <- β2·v + (1 - β2)·g²;
    v̂ = max(v̂, v) if max_exp_avg_sq is not empty (AMSGrad; NaN propagates, as np.maximum)."""
    cast = param.dtype.type
    amsgrad = max_exp_avg_sq.size > 0
    for i in prange(param.size):
        p = param[i]
        if decay != 1:
            p = p * decay
            param[i] = p
        g = grad[i]
        if weight_decay != 0:
            g = cast(_fused_fma(p, weight_decay, g))
        m = exp_avg[i]
        exp_avg[i] = cast(_fused_fma(g - m, lerp_weight, g if lerp_from_end else m))
        v = cast(_fused_fma(one_minus_beta2 * g, g, exp_avg_sq[i] * beta2))
        exp_avg_sq[i] = v
        if amsgrad:
            previous = max_exp_avg_sq[i]
            max_exp_avg_sq[i] = previous if (previous > v or previous != previous) else v


@numba.njit(cache=True, parallel=True)
def _adam_apply(param, exp_avg, root, bias_correction2_sqrt, eps, neg_step_size):
    """p <- p + (-step_size·m) / (root/√bc2 + eps), root = √v̂ (NumPy's sqrt, taken outside:
    tests/test_optim.py substitutes torch's)."""
    for i in prange(param.size):
        param[i] += neg_step_size * exp_avg[i] / (root[i] / bias_correction2_sqrt + eps)


def _flat(array):
    """A 1-D view of a contiguous array (the updates write through it)."""
    if not array.flags.c_contiguous:
        raise ValueError("optimizer parameters, gradients and state must be C-contiguous arrays")
    return array.reshape(-1)


def _collect_parameters(params):
    """Validate ``(name, param, grad)`` triples: unique names, float arrays, matching grads."""
    entries, names = [], set()
    for entry in params:
        if not (isinstance(entry, tuple) and len(entry) == 3):
            raise TypeError("params must yield (name, param, grad) triples, as Module.named_parameters()")
        name, param, grad = entry
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}")
        if name in names:
            raise ValueError(f"parameter {name!r} appears twice")
        for what, array in (("parameter", param), ("gradient", grad)):
            if not isinstance(array, np.ndarray) or array.dtype not in (np.float32, np.float64):
                raise TypeError(f"{what} {name!r} must be a float32 or float64 numpy array")
        if grad.shape != param.shape or grad.dtype != param.dtype:
            raise ValueError(f"gradient of {name!r} is {grad.dtype}{list(grad.shape)}, "
                             f"parameter is {param.dtype}{list(param.shape)}")
        names.add(name)
        entries.append((name, param, grad))
    if not entries:
        raise ValueError("optimizer got an empty parameter list")
    return entries


class Optimizer:
    """Shared machinery: parameters, per-parameter state, ``lr``, zero_grad and state dicts.

    Subclasses define ``HYPERPARAMETERS`` (names of attributes saved in the state dict),
    ``BUFFERS`` (per-parameter state arrays), ``_validate()`` and ``step()``.
    """
    HYPERPARAMETERS = ()
    BUFFERS = ()

    def __init__(self, params, lr):
        self.params = _collect_parameters(params)
        self.lr = lr
        self.initial_lr = None          # set by the first scheduler, as torch's group["initial_lr"]
        self.state = {name: {} for name, _, _ in self.params}

    def _validate(self):
        """Check the hyperparameters (refsnn.module.check_real: any real scalar) and store them
        as Python numbers."""
        self.lr = check_real(self.lr, "lr (learning rate)", 0.0)
        self.weight_decay = check_real(self.weight_decay, "weight_decay", 0.0)

    def zero_grad(self):
        for _, _, grad in self.params:
            grad[...] = 0

    # -- state dicts ------------------------------------------------------------------
    def state_dict(self):
        """Flat dict of arrays: hyperparameters, ``initial_lr`` (if set), then
        ``state.<param>.<buffer>`` copies."""
        out = {"lr": np.asarray(self.lr, dtype=np.float64)}
        out.update((key, np.asarray(getattr(self, key))) for key in self.HYPERPARAMETERS)
        if self.initial_lr is not None:
            out["initial_lr"] = np.asarray(self.initial_lr, dtype=np.float64)
        for name, buffers in self.state.items():
            out.update((f"state.{name}.{key}", value.copy()) for key, value in buffers.items())
        return out

    def load_state_dict(self, state):
        """Restore exactly what ``state_dict`` saved (a dict or an ``np.load`` result)."""
        state = {key: np.asarray(state[key]) for key in state.keys()}
        missing = [key for key in ("lr",) + self.HYPERPARAMETERS if key not in state]
        if missing:
            raise ValueError(f"optimizer state dict is missing {missing}")
        previous = {key: getattr(self, key) for key in ("lr", "initial_lr") + self.HYPERPARAMETERS}
        try:
            self.lr = float(state["lr"])
            for key in self.HYPERPARAMETERS:
                setattr(self, key, state[key].item() if state[key].ndim == 0 else tuple(state[key].tolist()))
            self.initial_lr = float(state["initial_lr"]) if "initial_lr" in state else None
            self._validate()
            self.state = self._parse_buffers(state)
        except (ValueError, TypeError):      # leave the optimizer as it was
            for key, value in previous.items():
                setattr(self, key, value)
            raise
        return self

    def _parse_buffers(self, state):
        """``state.<param>.<buffer>`` entries -> {param: {buffer: array in the param's dtype}}."""
        parameters = {name: param for name, param, _ in self.params}
        buffers = {name: {} for name in parameters}
        for key, value in state.items():
            if not key.startswith("state."):
                continue
            name, _, buffer = key[len("state."):].rpartition(".")
            if name not in parameters or buffer not in self.BUFFERS:
                raise ValueError(f"state dict entry {key!r} matches no parameter buffer of this "
                                 f"{type(self).__name__} (buffers: {self.BUFFERS})")
            if value.shape != parameters[name].shape:
                raise ValueError(f"{key}: shape {value.shape} in the state dict, "
                                 f"{parameters[name].shape} in the model")
            buffers[name][buffer] = value.astype(parameters[name].dtype)   # copies, as torch casts
        self._check_buffers(buffers)
        return buffers

    def _check_buffers(self, buffers):
        """Every parameter has the same set of buffers (the optimizer's state is all-or-none)."""
        kinds = {tuple(sorted(b)) for b in buffers.values()}
        if len(kinds) > 1:
            raise ValueError(f"state dict has buffers for some parameters only: {sorted(kinds)}")

    def __repr__(self):
        options = ", ".join(f"{k}={getattr(self, k)}" for k in ("lr",) + self.HYPERPARAMETERS)
        return f"{type(self).__name__}({len(self.params)} parameters, {options})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (torch.optim.SGD):

        g <- g + wd·p                                   (weight_decay)
        b <- g at the first step, else μ·b + (1 - τ)·g  (momentum μ, dampening τ)
        g <- g + μ·b if nesterov else b
        p <- p - lr·g
    """
    HYPERPARAMETERS = ("momentum", "dampening", "weight_decay", "nesterov")
    BUFFERS = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self._validate()

    def _validate(self):
        super()._validate()
        self.momentum = check_real(self.momentum, "momentum", 0.0)
        self.dampening = check_real(self.dampening, "dampening")
        self.nesterov = check_flag(self.nesterov, "nesterov")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self):
        for name, param, grad in self.params:
            cast = param.dtype.type
            buffer = np.empty(0, param.dtype)
            first = False
            if self.momentum != 0:
                state = self.state[name]
                first = "momentum_buffer" not in state
                if first:
                    state["momentum_buffer"] = np.empty_like(param)
                buffer = _flat(state["momentum_buffer"])
            _sgd_update(_flat(param), _flat(grad), buffer, first, cast(self.weight_decay), cast(self.momentum),
                        cast(1 - self.dampening), self.nesterov, cast(-self.lr))


class Adam(Optimizer):
    """Adam / AMSGrad (torch.optim.Adam), L2 weight decay added to the gradient:

        g <- g + wd·p
        m <- lerp(m, g, 1 - β1)              v <- β2·v + (1 - β2)·g²
        v̂ <- max(v̂, v) if amsgrad else v
        p <- p - (lr / (1 - β1^t)) · m / (sqrt(v̂) / sqrt(1 - β2^t) + eps)
    """
    HYPERPARAMETERS = ("betas", "eps", "weight_decay", "amsgrad")
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, lr)
        self.betas, self.eps = betas, eps
        self.weight_decay, self.amsgrad = weight_decay, amsgrad
        self.step_count = 0
        self._validate()
        for name, param, _ in self.params:
            self.state[name] = {key: np.zeros_like(param) for key in self.BUFFERS}

    @property
    def BUFFERS(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _validate(self):
        super()._validate()
        self.eps = check_real(self.eps, "eps", 0.0)
        self.amsgrad = check_flag(self.amsgrad, "amsgrad")
        if not (isinstance(self.betas, (tuple, list, np.ndarray)) and len(self.betas) == 2):
            raise OptionError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        self.betas = tuple(check_real(beta, f"betas[{index}]", 0.0, 1.0, high_open=True)
                           for index, beta in enumerate(self.betas))

    def _check_buffers(self, buffers):
        for name, found in buffers.items():
            if set(found) != set(self.BUFFERS):
                raise ValueError(f"state dict has buffers {sorted(found)} for {name!r}, "
                                 f"expected {sorted(self.BUFFERS)}")

    def state_dict(self):
        out = super().state_dict()
        out["step"] = np.asarray(self.step_count)
        return out

    def load_state_dict(self, state):
        if "step" not in state.keys() or not int(state["step"]) >= 0:
            raise ValueError("Adam state dict needs a non-negative 'step'")
        super().load_state_dict(state)
        self.step_count = int(state["step"])
        return self

    def step(self):
        self.step_count += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1 ** float(self.step_count)
        bias_correction2 = 1 - beta2 ** float(self.step_count)
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        beta1_weight = 1 - beta1
        for name, param, grad in self.params:
            cast = param.dtype.type
            state = self.state[name]
            decay, weight_decay = cast(1), cast(0)
            if self.weight_decay != 0:
                if self.decoupled_weight_decay:
                    decay = cast(1 - self.lr * self.weight_decay)
                else:
                    weight_decay = cast(self.weight_decay)
            lerp_weight = cast(beta1_weight)
            lerp_from_end = not abs(lerp_weight) < 0.5       # torch.lerp: start + w·(end - start) for |w| < 0.5
            if lerp_from_end:
                lerp_weight = lerp_weight - 1
            max_exp_avg_sq = state["max_exp_avg_sq"] if self.amsgrad else np.empty(0, param.dtype)
            exp_avg = _flat(state["exp_avg"])
            _adam_moments(_flat(param), _flat(grad), exp_avg, _flat(state["exp_avg_sq"]), _flat(max_exp_avg_sq),
                          decay, weight_decay, lerp_weight, lerp_from_end, cast(beta2), cast(1 - beta2))
            second_moment = state["max_exp_avg_sq"] if self.amsgrad else state["exp_avg_sq"]
            _adam_apply(_flat(param), exp_avg, _flat(np.sqrt(second_moment)), cast(bias_correction2_sqrt),
                        cast(self.eps), cast(-step_size))


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): p <- p·(1 - lr·wd) first,
    then the Adam update without wd in the gradient."""
    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


# -- learning-rate schedules ----------------------------------------------------------------
class _Scheduler:
    """torch.optim.lr_scheduler semantics: construction performs an initial step
    (``last_epoch`` -1 -> 0) that leaves ``lr`` unchanged, then each ``step()`` (once per epoch,
    after the optimizer's steps) advances ``last_epoch`` and sets ``optimizer.lr``.

    ``base_lr`` is the optimizer's ``initial_lr``, recorded by the first scheduler attached.
    Resuming with ``last_epoch >= 0`` needs that ``initial_lr`` (restored by the optimizer's
    ``load_state_dict``); usually one builds with the default and loads the scheduler's state.
    """
    HYPERPARAMETERS = ()

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a refsnn Optimizer")
        last_epoch = check_int(last_epoch, "last_epoch", -1)
        if last_epoch == -1:
            if optimizer.initial_lr is None:
                optimizer.initial_lr = optimizer.lr
        elif optimizer.initial_lr is None:
            raise ValueError("resuming a scheduler with last_epoch >= 0 needs optimizer.initial_lr "
                             "(load the optimizer's state dict first)")
        self.optimizer = optimizer
        self.base_lr = optimizer.initial_lr
        self.last_epoch = int(last_epoch)
        self._advance(initial=True)

    def _advance(self, initial):
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr, initial)

    def step(self):
        self._advance(initial=False)

    def state_dict(self):
        out = {"last_epoch": np.asarray(self.last_epoch), "base_lr": np.asarray(self.base_lr)}
        out.update((key, np.asarray(getattr(self, key))) for key in self.HYPERPARAMETERS)
        return out

    def load_state_dict(self, state):
        """Restore the schedule's position (the optimizer's ``lr`` comes with its own state)."""
        missing = [key for key in ("last_epoch", "base_lr") + self.HYPERPARAMETERS if key not in state]
        if missing:
            raise ValueError(f"scheduler state dict is missing {missing}")
        self.last_epoch = int(state["last_epoch"])
        self.base_lr = float(state["base_lr"])
        for key in self.HYPERPARAMETERS:
            setattr(self, key, np.asarray(state[key]).item())
        return self


class StepLR(_Scheduler):
    """lr <- lr·γ whenever last_epoch is a positive multiple of step_size."""
    HYPERPARAMETERS = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = check_int(step_size, "step_size", 1), check_real(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr, initial):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(_Scheduler):
    """torch's recursive cosine schedule (not the closed form; they differ in the last bits):

        lr_e = η_min + (lr_{e-1} - η_min) · (1 + cos(π·e/T)) / (1 + cos(π·(e-1)/T))

    and at e = T + 1 (mod 2T), where that ratio is 0/0, the closed-form increment
    lr_e = lr_{e-1} + (base_lr - η_min)·(1 - cos(π/T))/2 (the schedule climbs back up after T).
    """
    HYPERPARAMETERS = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = check_int(T_max, "T_max", 1), check_real(eta_min, "eta_min")
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr, initial):
        epoch, period = self.last_epoch, self.T_max
        if initial:
            return lr
        if (epoch - 1 - period) % (2 * period) == 0:
            return lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / period)) / 2
        return ((1 + math.cos(math.pi * epoch / period))
                / (1 + math.cos(math.pi * (epoch - 1) / period))
                * (lr - self.eta_min) + self.eta_min)
