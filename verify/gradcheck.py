"""Tier 1: the hand-written backward against central finite differences.

A spike Θ(u) has zero derivative almost everywhere, so the network is checked in
*smooth mode*: every neuron's forward uses its surrogate's primitive φ, whose true
derivative is the surrogate gradient g' the backward uses. The backward, unchanged,
must then equal finite differences of the smooth forward (docs/verification.md, tier 1).

The check follows HIPS autograd / JAX ``check_grads``: float64, a scalar loss
``L = <forward(x), R>`` with a fixed random ``R``, and for random unit directions d,

    (L(p + eps·d) - L(p - eps·d)) / (2·eps)   vs   <dL/dp, d>

for the input and every learnable parameter p, plus element-wise on small tensors.
"""
from dataclasses import dataclass, field

import numpy as np


def relative_error(a, b, floor=1e-30):
    return abs(a - b) / max(abs(a), abs(b), floor)


def check_directional(fun, x, grad, rng, n_directions=3, eps=1e-5, elementwise=False):
    """Worst relative error between ``<grad, d>`` and central differences of the scalar
    ``fun`` at ``x`` along random directions (and along every axis if ``elementwise``).

    ``fun(x)`` must not modify ``x``; ``x`` is perturbed in place and restored.
    The step is ``eps`` relative to the RMS of ``x`` (at least ``eps``). The default 1e-5 is
    near the optimum for central differences in float64, ε^(1/3) ≈ 6e-6: at 1e-6 rounding
    noise (∝ 1/step) already dominates the truncation error (∝ step²) on single elements.
    """
    step = eps * max(1.0, float(np.sqrt(np.mean(x * x))) if x.size else 1.0)
    directions = []
    for _ in range(n_directions):
        d = rng.standard_normal(x.shape)
        directions.append(d / (np.linalg.norm(d) or 1.0))
    if elementwise:
        for i in range(x.size):
            d = np.zeros(x.shape)
            d.flat[i] = 1.0
            directions.append(d)
    # A component far below the gradient's norm is ill-conditioned for a relative test
    # (central differences carry ~1e-10 absolute noise): errors are measured relative to
    # at least 1e-3·‖grad‖, i.e. on the scale of a well-conditioned direction.
    floor = 1e-3 * float(np.linalg.norm(grad)) or 1e-30
    worst = 0.0
    for d in directions:
        x0 = x.copy()
        x[...] = x0 + step * d
        up = fun(x)
        x[...] = x0 - step * d
        down = fun(x)
        x[...] = x0
        numeric = (up - down) / (2 * step)
        analytic = float(np.sum(grad * d))
        worst = max(worst, relative_error(numeric, analytic, floor))
    return worst


@dataclass
class GradcheckReport:
    """Worst relative error per checked tensor ("input", then parameter names)."""
    errors: dict = field(default_factory=dict)
    tolerance: float = 1e-6

    @property
    def worst(self):
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def passed(self):
        return self.worst <= self.tolerance

    def __str__(self):
        rows = [f"{name:<32} {err:.3e} {'ok' if err <= self.tolerance else 'FAIL'}"
                for name, err in self.errors.items()]
        return "\n".join(rows + [f"worst {self.worst:.3e} (tolerance {self.tolerance:g})"])


def set_smooth(module, smooth=True):
    """Switch every neuron inside ``module`` to (or from) smooth mode."""
    for _, m in module.modules():
        if hasattr(m, "smooth"):
            m.smooth = smooth


def _rng_states(module):
    return [(m.rng, m.rng.bit_generator.state) for _, m in module.modules()
            if isinstance(getattr(m, "rng", None), np.random.Generator)]


def gradcheck(module, x, n_directions=3, eps=1e-5, elementwise=False, seed=0,
              tolerance=1e-6, loss=None):
    """Check ``module.backward`` against finite differences of ``module.forward``.

    ``module`` must already be float64; it is put in smooth mode for the check and
    restored afterwards, as are its buffers (BatchNorm running statistics) and the
    random generators of its layers (so Dropout draws the same mask every time).

    ``loss`` is an optional ``(value_fn, grad_fn)`` pair on the output; the default is
    ``<out, R>`` with a fixed random ``R``. Returns a ``GradcheckReport``.
    """
    arrays = [(name, p) for name, p, _ in module.named_parameters()] + list(module.named_buffers())
    float32 = [name for name, a in arrays if a.dtype == np.float32]
    if float32:
        raise TypeError(f"gradcheck runs in float64: call module.to(np.float64) first "
                        f"(float32: {', '.join(float32[:3])}{', ...' if len(float32) > 3 else ''})")
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    was_smooth = {id(m): getattr(m, "smooth") for _, m in module.modules() if hasattr(m, "smooth")}
    buffers = {n: b.copy() for n, b in module.named_buffers()}
    rng_states = _rng_states(module)
    set_smooth(module, True)

    def restore_randomness():
        for gen, state in rng_states:
            gen.bit_generator.state = state

    out = module.forward(x)
    if loss is None:
        projection = rng.standard_normal(out.shape)
        loss = (lambda y: float(np.sum(y * projection)), lambda y: projection)
    value_fn, grad_fn = loss

    def evaluate(_=None):
        restore_randomness()
        return value_fn(module.forward(x))

    try:
        restore_randomness()
        out = module.forward(x)
        module.zero_grad()
        grad_x = module.backward(grad_fn(out))
        report = GradcheckReport(tolerance=tolerance)
        report.errors["input"] = check_directional(evaluate, x, grad_x, rng, n_directions, eps, elementwise)
        for name, p, g in list(module.named_parameters()):
            report.errors[name] = check_directional(evaluate, p, g.copy(), rng, n_directions, eps,
                                                    elementwise and p.size <= 64)
    finally:
        for _, m in module.modules():
            if id(m) in was_smooth:
                m.smooth = was_smooth[id(m)]
        for n, b in module.named_buffers():
            b[...] = buffers[n]
        restore_randomness()
    return report
