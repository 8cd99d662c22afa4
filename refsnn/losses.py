"""Losses on spiking network outputs, each returning its value and its exact gradient.

Every loss takes the network output ``out`` of shape [T, N, K] (logits per time step) and
integer labels ``y`` of shape [N], and returns ``(loss, grad...)``: the loss as a Python float
and the gradient with respect to each network's output, same shape and dtype as that output.
Batch reductions are means over N, as in ``torch.nn.functional`` (docs/methods.md §1, §3, §7).

Most losses act on the time-averaged logits

    z = (1/T) Σ_t out[t]                      shape [N, K]
    dL/dout[t] = (1/T) · dL/dz                for every t

Every loss computes in float64 whatever the dtype of ``out`` (the time mean and the batch
means are sums over many elements) and returns its gradients in the dtype of ``out``.
Softmax and log-softmax subtract the row maximum, so logits of any finite float32 size (±3e38
included) give finite, exact values and gradients; a class whose probability underflows to 0
contributes 0 to cross-entropy and KL terms, as torch's xlogy.

| function       | loss                                                              |
| cross_entropy  | CE(z, y), optional label smoothing                                |
| tet_loss       | (1/T) Σ_t [(1-λ)·CE(out[t], y) + λ·mean((out[t] - φ)²)]   (TET)   |
| mse_logits     | mean over N·K of (z_a - z_b)²                                     |
| twin_loss      | CE(z_b, y) + CE(z_t, y) + λ·(1/N) Σ_n Σ_k (z_b - z_t)²   (TNA)    |
| kd_loss        | (1-a)·CE(z_s, y) + a·τ²·KL(p_T ‖ p_s),  p = softmax(z/τ)          |
| dml_loss       | CE(z_a, y) + CE(z_b, y) + KL(p_b ‖ p_a) + KL(p_a ‖ p_b)           |

KL divergences are "batchmean": summed over classes, averaged over the batch.
"""
import numpy as np

from .module import NonFiniteError, check_float_array, check_real


# -- validation ---------------------------------------------------------------------------
def _check_logits(out, name="out"):
    """A finite float32/float64 array [T, N, K]."""
    out = check_float_array(out, name)
    if out.ndim != 3:
        raise ValueError(f"{name} must have shape [T, N, K], got shape {out.shape}")
    if 0 in out.shape:
        raise ValueError(f"{name} must not be empty, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise NonFiniteError(f"{name} contains NaN or Inf logits")
    return out


def _check_pair(out_a, out_b, name_a, name_b):
    out_a, out_b = _check_logits(out_a, name_a), _check_logits(out_b, name_b)
    if out_a.shape != out_b.shape:
        raise ValueError(f"{name_a} has shape {out_a.shape} but {name_b} has shape {out_b.shape}")
    if out_a.dtype != out_b.dtype:
        raise TypeError(f"{name_a} is {out_a.dtype} but {name_b} is {out_b.dtype}")
    return out_a, out_b


def _check_labels(y, n, k):
    """Integer class indices [N], each in [0, K)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels y must be integers, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels y must have shape ({n},) to match the batch, got {y.shape}")
    if np.any(y < 0) or np.any(y >= k):
        raise ValueError(f"labels y must lie in [0, {k}); got min {y.min()}, max {y.max()}")
    return y.astype(np.intp)


# -- building blocks on logits [N, K] ----------------------------------------------------
def _log_softmax(z):
    """log p = (z - m) - log Σ_k exp(z_k - m), m = row maximum: no overflow."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy_logits(z, y, label_smoothing=0.0):
    """CE of logits z [N, K] against the target q = (1-ε)·onehot(y) + ε/K, mean over N.

        L = -(1/N) Σ_n Σ_k q[n,k] · log p[n,k]        dL/dz = (p - q) / N
    """
    n, k = z.shape
    log_p = _log_softmax(z)
    target = np.full_like(z, label_smoothing / k)
    target[np.arange(n), y] += 1.0 - label_smoothing
    loss = -float(np.sum(target * log_p, where=target > 0)) / n
    return loss, (np.exp(log_p) - target) / n


def _time_mean(out):
    """z = mean over time, in float64."""
    return out.mean(axis=0, dtype=np.float64)


def _spread_over_time(grad_z, out):
    """dL/dout[t] = dL/dz / T for z = mean_t out[t]."""
    t = out.shape[0]
    return np.ascontiguousarray(np.broadcast_to(grad_z / t, out.shape), dtype=out.dtype)


def _kl_batchmean(log_p, log_q):
    """KL(p ‖ q) = (1/N) Σ_n Σ_k p·(log p - log q); p = 0 contributes 0 (as torch's xlogy)."""
    p = np.exp(log_p)
    return float(np.sum(p * (log_p - log_q), where=p > 0)) / log_p.shape[0]


# -- the losses --------------------------------------------------------------------------
def cross_entropy(out, y, label_smoothing=0.0):
    """CE on the time-averaged logits (torch ``F.cross_entropy(out.mean(0), y)``).

    Returns ``(loss, grad_out)``.
    """
    out = _check_logits(out)
    y = _check_labels(y, out.shape[1], out.shape[2])
    label_smoothing = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    loss, grad_z = _cross_entropy_logits(_time_mean(out), y, label_smoothing)
    return loss, _spread_over_time(grad_z, out)


def tet_loss(out, y, lam=0.05, phi=1.0):
    """Temporal efficient training (Deng et al. 2022), as used to train CLIF.

        L = (1/T) Σ_t [(1-λ)·CE(out[t], y) + λ·(1/(N·K)) Σ (out[t] - φ)²]
        dL/dout[t] = (1/T)·[(1-λ)·(p_t - onehot)/N + λ·2·(out[t] - φ)/(N·K)]

    The MSE term is torch's ``F.mse_loss(out, full_like(out, φ))`` over all T·N·K elements.
    Returns ``(loss, grad_out)``.
    """
    out = _check_logits(out)
    t, n, k = out.shape
    y = _check_labels(y, n, k)
    lam = check_real(lam, "lam", 0.0, 1.0)
    phi = check_real(phi, "phi")
    grad = np.empty_like(out)
    total = 0.0
    for step in range(t):
        logits = out[step].astype(np.float64)
        ce, grad_ce = _cross_entropy_logits(logits, y)
        deviation = logits - phi
        total += (1.0 - lam) * ce + lam * float(np.sum(deviation * deviation)) / (n * k)
        grad[step] = ((1.0 - lam) * grad_ce + (2.0 * lam / (n * k)) * deviation) / t
    return total / t, grad


def mse_logits(out_a, out_b):
    """Mean over N·K of (z_a - z_b)² on time-averaged logits (torch ``F.mse_loss(z_a, z_b)``).

        dL/dz_a = 2·(z_a - z_b)/(N·K) = -dL/dz_b
    Returns ``(loss, grad_a, grad_b)``.
    """
    out_a, out_b = _check_pair(out_a, out_b, "out_a", "out_b")
    difference = _time_mean(out_a) - _time_mean(out_b)
    loss = float(np.mean(difference * difference))
    grad_z = (2.0 / difference.size) * difference
    return loss, _spread_over_time(grad_z, out_a), _spread_over_time(-grad_z, out_b)


def twin_loss(out_base, out_twin, y, lam=0.005):
    """Twin network augmentation (Deckers et al. 2024), docs/methods.md §1.

        L = CE(z_b, y) + CE(z_t, y) + λ·(1/N) Σ_n Σ_k (z_b - z_t)²
        dL/dz_b = (p_b - onehot)/N + 2λ·(z_b - z_t)/N,   dL/dz_t symmetric

    Both networks get the gradient of the matching term (no stop-gradient).
    Returns ``(loss, grad_base, grad_twin)``.
    """
    out_base, out_twin = _check_pair(out_base, out_twin, "out_base", "out_twin")
    n, k = out_base.shape[1:]
    y = _check_labels(y, n, k)
    lam = check_real(lam, "lam", 0.0)
    z_base, z_twin = _time_mean(out_base), _time_mean(out_twin)
    ce_base, grad_base = _cross_entropy_logits(z_base, y)
    ce_twin, grad_twin = _cross_entropy_logits(z_twin, y)
    difference = z_base - z_twin
    loss = ce_base + ce_twin + lam * float(np.sum(difference * difference)) / n
    matching = (2.0 * lam / n) * difference
    return (loss, _spread_over_time(grad_base + matching, out_base),
            _spread_over_time(grad_twin - matching, out_twin))


def kd_loss(out_student, z_teacher, y, alpha=0.9, temperature=4.0):
    """Knowledge distillation (Hinton et al.) from constant teacher logits ``z_teacher`` [N, K].

        L = (1-a)·CE(z_s, y) + a·τ²·KL(p_T ‖ p_s),   p = softmax(z/τ), KL batchmean
        dL/dz_s = (1-a)·(softmax(z_s) - onehot)/N + a·τ·(p_s - p_T)/N

    (torch: ``F.kl_div(log_softmax(z_s/τ), softmax(z_T/τ), reduction="batchmean")``).
    Returns ``(loss, grad_student)``.
    """
    out_student = _check_logits(out_student, "out_student")
    n, k = out_student.shape[1:]
    z_teacher = check_float_array(z_teacher, "z_teacher", min_ndim=2)
    if z_teacher.shape != (n, k):
        raise ValueError(f"z_teacher must have shape ({n}, {k}) like the student's logits, "
                         f"got {z_teacher.shape}")
    if not np.all(np.isfinite(z_teacher)):
        raise ValueError("z_teacher contains NaN or Inf logits")
    y = _check_labels(y, n, k)
    alpha = check_real(alpha, "alpha", 0.0, 1.0)
    tau = check_real(temperature, "temperature", 0.0, low_open=True)
    z_student = _time_mean(out_student)
    ce, grad_ce = _cross_entropy_logits(z_student, y)
    log_p_student = _log_softmax(z_student / tau)
    log_p_teacher = _log_softmax(z_teacher.astype(np.float64) / tau)
    kl = _kl_batchmean(log_p_teacher, log_p_student)
    loss = (1.0 - alpha) * ce + alpha * tau * tau * kl
    grad_z = (1.0 - alpha) * grad_ce + (alpha * tau / n) * (np.exp(log_p_student) - np.exp(log_p_teacher))
    return loss, _spread_over_time(grad_z, out_student)


def dml_loss(out_a, out_b, y, temperature=1.0):
    """Deep mutual learning as one symmetric objective (TNA with KL in place of MSE).

        L = CE(z_a, y) + CE(z_b, y) + KL(p_b ‖ p_a) + KL(p_a ‖ p_b),   p = softmax(z/τ)

    No τ² factor. Both KL terms send gradient to both networks (no stop-gradient). With
    u = z_a/τ, d = log p_a - log p_b, the symmetric KL S = (1/N) Σ (p_a - p_b)·d has

        dS/du = (p_a ⊙ (d - <p_a, d>) + p_a - p_b) / N,    dS/dz_a = dS/du / τ

    and the same with a and b exchanged (d -> -d) for z_b.
    Returns ``(loss, grad_a, grad_b)``.
    """
    out_a, out_b = _check_pair(out_a, out_b, "out_a", "out_b")
    n, k = out_a.shape[1:]
    y = _check_labels(y, n, k)
    tau = check_real(temperature, "temperature", 0.0, low_open=True)
    z_a, z_b = _time_mean(out_a), _time_mean(out_b)
    ce_a, grad_a = _cross_entropy_logits(z_a, y)
    ce_b, grad_b = _cross_entropy_logits(z_b, y)
    log_p_a, log_p_b = _log_softmax(z_a / tau), _log_softmax(z_b / tau)
    p_a, p_b = np.exp(log_p_a), np.exp(log_p_b)
    d = log_p_a - log_p_b
    loss = ce_a + ce_b + _kl_batchmean(log_p_b, log_p_a) + _kl_batchmean(log_p_a, log_p_b)
    grad_a += (p_a * (d - np.sum(p_a * d, axis=1, keepdims=True)) + p_a - p_b) / (n * tau)
    grad_b += (p_b * (-d + np.sum(p_b * d, axis=1, keepdims=True)) + p_b - p_a) / (n * tau)
    return loss, _spread_over_time(grad_a, out_a), _spread_over_time(grad_b, out_b)


def accuracy(out, y):
    """Fraction of samples whose argmax of the time-averaged logits equals the label
    (ties go to the first maximum, as ``torch.argmax``)."""
    out = check_float_array(out, "out")
    if out.ndim != 3:
        raise ValueError(f"out must have shape [T, N, K], got shape {out.shape}")
    y = _check_labels(y, out.shape[1], out.shape[2])
    return float(np.mean(np.argmax(_time_mean(out), axis=1) == y))
