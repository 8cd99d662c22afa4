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
| tet_loss       | (1/T) Σ_t [(1-λ)·CE(out[t], y) + λ·mean((out[t] - g)²)]   (TET)   |
|                | g = φ (target="constant") or onehot(y) (target="onehot")          |
| mse_logits     | mean over N·K of (z_a - z_b)²                                     |
| twin_loss      | CE(z_b, y) + CE(z_t, y) + λ·(1/N) Σ_n Σ_k (z_b - z_t)²   (TNA)    |
| kd_loss        | (1-a)·CE(z_s, y) + a·τ²·KL(p_T ‖ p_s),  p = softmax(z/τ)          |
| dml_loss       | CE(z_a, y) + CE(z_b, y) + KL(p_b ‖ p_a) + KL(p_a ‖ p_b)           |

Spike-count and membrane losses (snnTorch's ``snntorch.functional``; docs/losses.md §2-4) take the
output neuron's spikes or membrane [T, N, K] instead of logits, and sum or maximize over time:

| ce_count_loss        | CE(Σ_t spk[t], y)                                           |
| mse_count_loss       | mean((Σ_t spk[t] − target counts)²) / T                      |
| ce_max_membrane_loss | CE(max_t mem[t], y)                                          |
| l1_rate_sparsity     | Lambda · Σ spk   (a regularizer, added to a loss)             |

KL divergences are "batchmean": summed over classes, averaged over the batch.
"""
import numpy as np

from .module import NonFiniteError, OptionError, check_flag, check_float_array, check_real


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


TET_TARGETS = ("constant", "onehot")  # tet_loss's MSE target: φ everywhere, or the one-hot label


def tet_loss(out, y, lam=0.05, phi=1.0, target="constant"):
    """Temporal efficient training (Deng et al. 2022; Gus-Lab/temporal_efficient_training
    functions.py:39-51 at f9bde41), as used to train CLIF; docs/losses.md §6.

    The MSE term pulls every logit towards a target ``g`` [N, K]:

        target="constant"  g = φ everywhere (TET's ``means``; the CLIF authors' default)
        target="onehot"    g = onehot(y), φ unused (the CLIF authors' ``-mse_n_reg``, used for DVS
                           data: HuuYuLong/Complementary-LIF train.py:467-474 at d76af59)

        L = (1/T) Σ_t [(1-λ)·CE(out[t], y) + λ·(1/(N·K)) Σ (out[t] - g)²]
        dL/dout[t] = (1/T)·[(1-λ)·(p_t - onehot(y))/N + λ·2·(out[t] - g)/(N·K)]

    The MSE term is torch's ``F.mse_loss(out, g)`` over all T·N·K elements, as in both sources.
    Returns ``(loss, grad_out)``. ValueError for λ outside [0, 1], a ``target`` other than the two,
    or a φ other than 1 with ``target="onehot"`` (it would be ignored).
    """
    out = _check_logits(out)
    t, n, k = out.shape
    y = _check_labels(y, n, k)
    lam = check_real(lam, "lam", 0.0, 1.0)
    phi = check_real(phi, "phi")
    if not isinstance(target, str) or target not in TET_TARGETS:
        raise OptionError(f"target must be one of {', '.join(TET_TARGETS)}; got {target!r}")
    if target == "onehot" and phi != 1.0:
        raise OptionError(f"phi applies to target 'constant' only (the onehot target is 1 at the label, 0 "
                          f"elsewhere); got phi={phi} with target 'onehot'")
    goal = np.full((n, k), phi) if target == "constant" else np.eye(k)[y]   # g: [N, K], float64
    grad = np.empty_like(out)
    total = 0.0
    for step in range(t):
        logits = out[step].astype(np.float64)
        ce, grad_ce = _cross_entropy_logits(logits, y)
        deviation = logits - goal
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


# -- spike-count and membrane losses (snnTorch's snntorch.functional), docs/losses.md §2-3 --------
def _population(out, population_code, num_classes):
    """The classes C of an output [T, N, K] and the outputs per class G = K / C: (K, 1) without a
    population code; with one, each class owns G consecutive outputs (snnTorch
    ``LossFunctions._population_code``: outputs int(K·c/C) .. int(K·(c+1)/C) - 1 for class c)."""
    k = out.shape[2]
    if not check_flag(population_code, "population_code"):
        if num_classes is not None:
            raise ValueError("num_classes is only used with population_code=True")
        return k, 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"population_code=True needs num_classes, a positive integer; got {num_classes!r}")
    if k % num_classes:
        raise ValueError(f"population code: the {k} outputs must split evenly into num_classes = {num_classes}")
    return int(num_classes), k // int(num_classes)


def _spike_counts(spk, y, population_code, num_classes):
    """``(counts [N, C] float64, labels, C, G)``: c[n, j] = Σ_t Σ_{k in class j} spk[t, n, k]."""
    spk = _check_logits(spk, "spk")
    classes, group = _population(spk, population_code, num_classes)
    y = _check_labels(y, spk.shape[1], classes)
    counts = spk.sum(axis=0, dtype=np.float64).reshape(spk.shape[1], classes, group).sum(axis=2)
    return spk, counts, y, classes, group


def _spread_over_steps(grad_counts, spk, group):
    """dL/dspk[t, n, k] = dL/dc[n, class of k] for every t (c sums over time and over each class's outputs)."""
    grad = np.repeat(grad_counts, group, axis=1)
    return np.ascontiguousarray(np.broadcast_to(grad, spk.shape), dtype=spk.dtype)


def ce_count_loss(spk, y, population_code=False, num_classes=None):
    """Cross-entropy of the spike counts, snnTorch ``SF.ce_count_loss()`` (reduction "mean", no
    weight): spikes ``spk`` [T, N, K] (any real values; the loss is smooth in them), labels [N].

        c = Σ_t spk[t]   [N, C]                 (population code: also summed over each class's K/C outputs)
        L = (1/N) Σ_n −log softmax(c[n])[y_n]
        dL/dspk[t, n, k] = (softmax(c[n]) − onehot(y_n))[class of k] / N      for every t

    Returns ``(loss, grad_spk)``. docs/losses.md §2.
    """
    spk, counts, y, _, group = _spike_counts(spk, y, population_code, num_classes)
    loss, grad_counts = _cross_entropy_logits(counts, y)
    return loss, _spread_over_steps(grad_counts, spk, group)


def mse_count_loss(spk, y, correct_rate=1.0, incorrect_rate=0.0, population_code=False, num_classes=None):
    """Mean squared error of the spike counts against target counts, snnTorch
    ``SF.mse_count_loss(correct_rate, incorrect_rate)`` (its defaults 1 and 0; reduction "mean", no
    weight): spikes ``spk`` [T, N, K], labels [N].

        c = Σ_t spk[t]   [N, C]                 (population code: as ``ce_count_loss``, G = K/C)
        target[n, j] = int(T·correct_rate·G) if j = y_n else int(T·incorrect_rate·G)   (truncated, as snnTorch)
        L = (1/(N·C)) Σ_n Σ_j (c[n, j] − target[n, j])² / T
        dL/dspk[t, n, k] = 2·(c − target)[n, class of k] / (N·C·T)      for every t

    Returns ``(loss, grad_spk)``. docs/losses.md §2.
    """
    spk, counts, y, classes, group = _spike_counts(spk, y, population_code, num_classes)
    correct_rate = check_real(correct_rate, "correct_rate", 0.0)
    incorrect_rate = check_real(incorrect_rate, "incorrect_rate", 0.0)
    t, n = spk.shape[:2]
    # snnTorch's products in its order: num_steps * rate * (num_outputs / num_classes), the last
    # factor only with a population code (without one it is 1.0, which changes nothing)
    on, off = (int(t * rate * (spk.shape[2] / classes)) for rate in (correct_rate, incorrect_rate))
    target = np.full((n, classes), float(off))
    target[np.arange(n), y] = on
    difference = counts - target
    loss = float(np.mean(difference * difference)) / t
    return loss, _spread_over_steps((2.0 / (n * classes * t)) * difference, spk, group)


def ce_max_membrane_loss(mem, y):
    """Cross-entropy of each output's largest membrane potential over time, snnTorch
    ``SF.ce_max_membrane_loss()`` (reduction "mean", no weight; from Zenke's SpyTorch): membrane
    ``mem`` [T, N, K] (refsnn: the output neuron's V after reset, ``models.MembraneOutput``), labels [N].

        m[n, k] = max_t mem[t, n, k],   t*[n, k] its first maximizer (as torch.max, np.argmax)
        L = (1/N) Σ_n −log softmax(m[n])[y_n]
        dL/dmem[t, n, k] = (softmax(m[n]) − onehot(y_n))[k] / N  if t = t*[n, k], else 0

    The gradient is torch's subgradient of ``max``: exact wherever the maximum is unique in time.
    snnTorch has no population code for this loss; neither has refsnn. Returns ``(loss, grad_mem)``.
    docs/losses.md §3.
    """
    mem = _check_logits(mem, "mem")
    t, n, k = mem.shape
    y = _check_labels(y, n, k)
    first = np.argmax(mem, axis=0)  # t*: [N, K]
    peak = np.take_along_axis(mem, first[None], axis=0)[0].astype(np.float64)
    loss, grad_peak = _cross_entropy_logits(peak, y)
    grad = np.zeros_like(mem)
    np.put_along_axis(grad, first[None], grad_peak[None].astype(mem.dtype), axis=0)
    return loss, grad


def l1_rate_sparsity(spk, Lambda=1e-5):
    """L1 firing-rate regularizer, snnTorch ``SF.l1_rate_sparsity(Lambda)`` (its default 1e-5): the
    total spike count of ``spk`` (any shape, e.g. [T, N, K]) times ``Lambda``.

        R = Lambda · Σ spk          dR/dspk = Lambda (every element)

    Returns ``(penalty, grad_spk)``. docs/losses.md §4.
    """
    spk = check_float_array(spk, "spk")
    if not np.all(np.isfinite(spk)):
        raise NonFiniteError("spk contains NaN or Inf")
    Lambda = check_real(Lambda, "Lambda", 0.0)
    return Lambda * float(spk.sum(dtype=np.float64)), np.full(spk.shape, Lambda, spk.dtype)


def accuracy(out, y):
    """Fraction of samples whose argmax of the time-averaged logits equals the label
    (ties go to the first maximum, as ``torch.argmax``)."""
    out = check_float_array(out, "out")
    if out.ndim != 3:
        raise ValueError(f"out must have shape [T, N, K], got shape {out.shape}")
    y = _check_labels(y, out.shape[1], out.shape[2])
    return float(np.mean(np.argmax(_time_mean(out), axis=1) == y))
