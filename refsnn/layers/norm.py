"""BatchNorm1d and BatchNorm2d over time-major input, forward and backward.

x is viewed as [T, N, C, S] (S = flattened spatial size, 1 for [T, N, C]). A statistics group is
a channel c over (t, n, s) (default: SpikingJelly's multi-step BatchNorm, i.e. torch BatchNorm
on [T·N, C, ...]) or a pair (t, c) over (n, s) (per_step=True). With ``count`` elements per group:

    μ = Σx / count,  σ² = Σ(x - μ)² / count  (biased, two passes),  x̂ = (x - μ)/√(σ² + ε),  y = γ x̂ + β
    running = (1 - m)·running + m·batch  with the unbiased σ²·count/(count - 1) for running_var
    dx = γ/√(σ² + ε) · (g - Σg/count - x̂ · Σ(g x̂)/count),  dγ = Σ g x̂,  dβ = Σ g

Eval mode uses the running statistics as constants: x̂ = (x - running_mean)/√(running_var + ε),
dx = γ g /√(running_var + ε). The forward keeps x itself (not x̂; a reference, not a copy: do not
modify it in place before the backward) and the backward recomputes x̂ with the same operations.
Sums accumulate in float64 (column sums, below); the elementwise kernels run in parallel over
groups. Plain NumPy references (``batchnorm_*_reference``) state the same maths; the tests compare.

Data-parallel training (refsnn.distributed) splits the batch between processes; inside its
steps every sum above (count, Σx, then Σ(x - μ)², and in the backward Σg and Σ g·x̂) is summed
over the processes, so each gets the statistics and dx of one process over the global batch.
"""
import numba
import numpy as np
from numba import prange

from .. import distributed
from ..module import Module, NonFiniteError, check_flag, check_int, check_real, float_dtype
from .common import check_channels, check_input, launch, save_for_backward, saved_for_backward


def _groups_reference(a, per_step):
    """a [T, N, C, S] as float64 [steps, C, elements of the group]."""
    T, N, C, S = a.shape
    steps = T if per_step else 1
    return a.reshape(steps, -1, C, S).transpose(0, 2, 1, 3).reshape(steps, C, -1).astype(np.float64)


def batchnorm_statistics_reference(x, per_step):
    """NumPy: mean and (biased) variance [steps, C] of the groups of x [T, N, C, S]."""
    groups = _groups_reference(x, per_step)
    mean = groups.mean(axis=2)
    return mean, ((groups - mean[:, :, None]) ** 2).mean(axis=2)


def batchnorm_forward_reference(x, per_step, mean, inv_std, gamma, beta):
    """NumPy: y = (x - μ)·(γ/√(σ²+ε)) + β for x [T, N, C, S] and statistics [steps, C]."""
    T, N, C, S = x.shape
    steps = mean.shape[0]
    scale = gamma * inv_std
    x4 = x.reshape(steps, -1, C, S)
    y = (x4 - mean[:, None, :, None]) * scale[:, None, :, None] + beta[None, None, :, None]
    return y.astype(x.dtype).reshape(x.shape)


def batchnorm_backward_reference(g, x, per_step, training, mean, inv_std, gamma):
    """NumPy: dx, Σg and Σ g·x̂ [steps, C] (see the module docstring)."""
    T, N, C, S = x.shape
    steps = mean.shape[0]
    group_g = _groups_reference(g, per_step)
    sum_g = group_g.sum(axis=2)
    sum_g_xhat = (group_g * (_groups_reference(x, per_step) - mean[:, :, None])).sum(axis=2) * inv_std
    count = group_g.shape[2]
    mean_g = sum_g / count if training else np.zeros_like(sum_g)
    mean_g_xhat = sum_g_xhat / count if training else np.zeros_like(sum_g)
    at = (slice(None), None, slice(None), None)    # [steps, C] -> [steps, 1, C, 1]
    x_hat = (x.reshape(steps, -1, C, S) - mean[at]) * inv_std[at]
    dx = (gamma * inv_std)[at] * (g.reshape(steps, -1, C, S) - mean_g[at] - x_hat * mean_g_xhat[at])
    return dx.astype(x.dtype).reshape(x.shape), sum_g, sum_g_xhat


@numba.njit(cache=True)
def _group_steps(group, C, T, per_step):
    """Group index -> (step index into the [steps, C] statistics, channel, first t, end t)."""
    step = group // C
    c = group - step * C
    return (step, c, step, step + 1) if per_step else (0, c, 0, T)


# The sums over a group run as column sums of x viewed as [steps, R, J] (J = C·S columns, each
# column one (c, s); R = the rows summed: T·N, or N per step): every row adds into a float64
# vector of J partial sums, which vectorizes along the contiguous columns (a single float64
# scalar per group cannot: each addition waits for the previous one). The S partial sums of
# a channel are then added pairwise by NumPy.
COLUMN_CHUNK = 2048  # columns per task: the float64 partial sums stay in cache


@numba.njit(cache=True)
def _chunk(task, chunks, J):
    """Task -> (step, first column, end column) of a COLUMN_CHUNK-wide chunk."""
    step = task // chunks
    j0 = (task - step * chunks) * COLUMN_CHUNK
    return step, j0, min(J, j0 + COLUMN_CHUNK)


@numba.njit(cache=True, parallel=True)
def _column_sums(x, sums):
    """sums[step, j] = Σ_r x[step, r, j]."""
    steps, R, J = x.shape
    chunks = (J + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for task in prange(steps * chunks):
        step, j0, j1 = _chunk(task, chunks, J)
        acc = np.zeros(j1 - j0)
        for r in range(R):
            row = x[step, r, j0:j1]
            for j in range(j1 - j0):
                acc[j] += row[j]
        sums[step, j0:j1] = acc


@numba.njit(cache=True, parallel=True)
def _column_products(a, mu_a, b, mu_b, sums):
    """sums[step, j] = Σ_r (a[step, r, j] - mu_a[step, j])·(b[step, r, j] - mu_b[step, j]): the squared
    deviations Σ(x - μ)² with a = b = x, mu_a = mu_b = μ; Σ g·(x - μ) with a = g, mu_a = 0."""
    steps, R, J = a.shape
    chunks = (J + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for task in prange(steps * chunks):
        step, j0, j1 = _chunk(task, chunks, J)
        acc = np.zeros(j1 - j0)
        ma, mb = mu_a[step, j0:j1], mu_b[step, j0:j1]
        for r in range(R):
            row_a, row_b = a[step, r, j0:j1], b[step, r, j0:j1]
            for j in range(j1 - j0):
                acc[j] += (row_a[j] - ma[j]) * (row_b[j] - mb[j])
        sums[step, j0:j1] = acc


def _group_sums(column_sums, C):
    """[steps, C·S] column sums -> [steps, C] group sums (pairwise over S)."""
    return column_sums.reshape(column_sums.shape[0], C, -1).sum(axis=2)


def _bn_statistics(x, per_step, mean, var):
    """mean, var [steps, C] of x [T, N, C, S]: μ = Σx/count, σ² = Σ(x - μ)²/count (two passes,
    float64; over every process in a data-parallel step). Returns count."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    x3 = x.reshape(steps, -1, C * S)
    world = distributed.step_world()
    sums = np.empty((steps, C * S))
    launch(_column_sums, x.size, x3, sums)
    total, count = world.sums(_group_sums(sums, C), np.float64(x3.shape[1] * S))
    mean[...] = total / count
    mean_columns = np.repeat(mean, S, axis=1)
    launch(_column_products, x.size, x3, mean_columns, x3, mean_columns, sums)
    var[...] = world.sum(_group_sums(sums, C)) / count
    return int(count)


@numba.njit(cache=True, parallel=True)
def _bn_normalize(x, per_step, mean, inv_std, gamma, beta, y):
    """y = (x - μ)·(γ/√(σ²+ε)) + β."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    for group in prange(steps * C):
        step, c, t0, t1 = _group_steps(group, C, T, per_step)
        mu, scale, shift = mean[step, c], gamma[c] * inv_std[step, c], beta[c]
        for t in range(t0, t1):
            for n in range(N):
                for s in range(S):
                    y[t, n, c, s] = (x[t, n, c, s] - mu) * scale + shift


def _bn_backward(g, x, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx):
    """Fills Σg and Σ g·x̂ = Σ g·(x - μ) · 1/√(σ²+ε) per group (column sums), then dx (see the
    module docstring). In a data-parallel step (``training``) dx takes these sums over every
    process, while ``sum_g`` and ``sum_g_xhat`` (dβ, dγ) keep this process's: they are summed
    over the processes with the other parameter gradients."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    g3, x3 = g.reshape(steps, -1, C * S), x.reshape(steps, -1, C * S)
    sums = np.empty((steps, C * S))
    launch(_column_sums, x.size, g3, sums)
    sum_g[...] = _group_sums(sums, C)
    launch(_column_products, x.size, g3, np.zeros((steps, C * S)), x3, np.repeat(mean, S, axis=1), sums)
    sum_g_xhat[...] = _group_sums(sums, C) * inv_std
    world = distributed.step_world() if training else distributed.World()
    every_g, every_g_xhat, count = world.sums(sum_g, sum_g_xhat, np.float64(g3.shape[1] * S))
    launch(_bn_input_gradient, x.size, g, x, per_step, training, mean, inv_std, gamma, every_g, every_g_xhat,
           float(count), dx)


@numba.njit(cache=True, parallel=True)
def _bn_input_gradient(g, x, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, count, dx):
    """dx = γ/√(σ²+ε) · (g - Σg/count - x̂ · Σ(g x̂)/count) (training), γ g/√(running_var + ε) (eval);
    count: the elements of a group (over every process)."""
    T, N, C, S = x.shape
    steps = T if per_step else 1
    for group in prange(steps * C):
        step, c, t0, t1 = _group_steps(group, C, T, per_step)
        mu, r = mean[step, c], inv_std[step, c]
        scale = gamma[c] * r
        mean_g = sum_g[step, c] / count if training else 0.0
        mean_g_xhat = sum_g_xhat[step, c] / count if training else 0.0
        for t in range(t0, t1):
            for n in range(N):
                for s in range(S):
                    x_hat = (x[t, n, c, s] - mu) * r
                    dx[t, n, c, s] = scale * (g[t, n, c, s] - mean_g - x_hat * mean_g_xhat)


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, per_step=False, dtype=np.float32):
        super().__init__()
        num_features, dtype = check_int(num_features, "num_features", 1), float_dtype(dtype)
        if momentum is not None:
            momentum = check_real(momentum, "momentum (None for a cumulative average)", 0.0, 1.0)
        self.num_features, self.eps, self.momentum = num_features, check_real(eps, "eps", 0, low_open=True), momentum
        self.affine, self.per_step = check_flag(affine, "affine"), check_flag(per_step, "per_step")
        if affine:
            self.add_param("weight", np.ones(num_features, dtype=dtype))
            self.add_param("bias", np.zeros(num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self._saved = None

    def _affine(self):
        """γ and β as float64 (ones and zeros without affine)."""
        if self.affine:
            return self.params["weight"].astype(np.float64), self.params["bias"].astype(np.float64)
        return np.ones(self.num_features), np.zeros(self.num_features)

    def _update_running(self, means, variances, count):
        """One PyTorch update per row of ``means``/``variances`` ([steps, C]), in order. A batch
        variance beyond the buffers' dtype (float32 inputs near 1e19 and above) is refused
        before any buffer changes, instead of an Inf that would zero every eval-mode output."""
        running_mean, running_var = self.buffers["running_mean"].copy(), self.buffers["running_var"].copy()
        tracked = self.buffers["num_batches_tracked"].copy()
        with np.errstate(over="ignore"):
            for mean, var in zip(means, variances):
                tracked += 1
                m = 1.0 / float(tracked) if self.momentum is None else self.momentum
                running_mean[...] = (1 - m) * running_mean + m * mean
                running_var[...] = (1 - m) * running_var + m * var * (count / (count - 1))
        if not (np.all(np.isfinite(running_var)) and np.all(np.isfinite(running_mean))):
            raise NonFiniteError(f"{type(self).__name__}: the running variance overflowed {running_var.dtype} "
                                 f"(batch variance up to {float(np.max(variances)):.3g}); the input was finite")
        for name, value in (("running_mean", running_mean), ("running_var", running_var),
                            ("num_batches_tracked", tracked)):
            self.buffers[name][...] = value

    def forward(self, x):
        x = check_input(self, x, self._ndims)
        check_channels(self, x, 2, self.num_features)
        T, N, C = x.shape[:3]
        x4 = x.reshape(T, N, C, -1)
        if self.training:
            steps = T if self.per_step else 1
            mean, var = np.empty((steps, C)), np.empty((steps, C))
            count = _bn_statistics(x4, self.per_step, mean, var)  # over every process, data-parallel
            if count < 2:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                                 f"training, got input of shape {x.shape}")
            if not np.all(np.isfinite(var)):
                raise NonFiniteError(f"{type(self).__name__}: " + (
                    "input contains NaN/Inf" if not np.all(np.isfinite(x4)) else
                    f"the batch statistics overflowed float64 (largest |input| {float(np.max(np.abs(x4))):.3g})"))
            self._update_running(mean, var, count)
        else:
            mean = self.buffers["running_mean"].astype(np.float64).reshape(1, C)
            var = self.buffers["running_var"].astype(np.float64).reshape(1, C)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        gamma, beta = self._affine()
        y = np.empty_like(x4)
        launch(_bn_normalize, x4.size, x4, self.per_step and self.training, mean, inv_std, gamma, beta, y)
        save_for_backward(self, x.shape, x.dtype, x4, mean, inv_std, gamma, self.training)
        return y.reshape(x.shape)

    def backward(self, grad_out):
        (x4, mean, inv_std, gamma, training), g = saved_for_backward(self, grad_out)
        per_step = self.per_step and training
        sum_g, sum_g_xhat = np.empty_like(mean), np.empty_like(mean)
        dx = np.empty_like(x4)
        _bn_backward(g.reshape(x4.shape), x4, per_step, training, mean, inv_std, gamma, sum_g, sum_g_xhat, dx)
        if self.affine:
            self.grads["weight"] += sum_g_xhat.sum(axis=0)   # dγ = Σ g x̂
            self.grads["bias"] += sum_g.sum(axis=0)          # dβ = Σ g
        return dx.reshape(g.shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"per_step={self.per_step}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm over channels of ``[T, N, C]`` or ``[T, N, C, L]`` (see the module docstring)."""
    _ndims = (3, 4)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over channels of ``[T, N, C, H, W]`` (see the module docstring)."""
    _ndims = (5,)
