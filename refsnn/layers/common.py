"""What every layer of refsnn.layers shares: input checks, what the forward saves for the backward,
and how a parallel kernel is launched.

Saving: ``forward`` calls ``save_for_backward(layer, out_shape, dtype, *saved)``; ``layer._saved``
is then the tuple of what ``backward`` reads (as in refsnn.neurons), and ``layer._output_like`` the
shape and dtype of the forward's output, which ``grad_out`` must have. ``saved_for_backward``
checks ``grad_out`` against it, hands back ``_saved`` and releases it, so that a second
``backward`` for one ``forward`` raises (refsnn.module's rule).
"""
import numba

from ..module import OptionError, check_float_array, check_int


def check_input(layer, x, ndims, min_ndim=None):
    """``x`` as a contiguous float array whose rank is in ``ndims`` (or at least ``min_ndim``)."""
    name = f"{type(layer).__name__} input"
    x = check_float_array(x, name)
    layer.check_dtype(x)
    if min_ndim is not None:
        if x.ndim < min_ndim:
            raise ValueError(f"{name} must have at least {min_ndim} dimensions [T, N, ...], got shape {x.shape}")
    elif x.ndim not in ndims:
        want = " or ".join(str(rank) for rank in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {x.shape}")
    return x


def check_channels(layer, x, axis, expected, what="channels"):
    if x.shape[axis] != expected:
        raise ValueError(f"{type(layer).__name__} expects {expected} {what} on axis {axis}, "
                         f"got input of shape {x.shape}")


def save_for_backward(layer, out_shape, dtype, *saved):
    """Keep what the backward reads (``layer._saved``) and the shape and dtype of the output
    (``layer._output_like``: what ``grad_out`` must be)."""
    layer._saved = saved
    layer._output_like = (out_shape, dtype)


def saved_for_backward(layer, grad_out):
    """The forward's saved tuple and ``grad_out``, checked against the output's shape and cast to
    its dtype; the saved tuple is then released."""
    saved = layer._saved
    if saved is None:
        raise ValueError(f"{type(layer).__name__}.backward called before forward "
                         "(or a second time for one forward)")
    grad_out = check_float_array(grad_out, "grad_out")
    out_shape, dtype = layer._output_like
    if grad_out.shape != out_shape:
        raise ValueError(f"{type(layer).__name__}: grad_out has shape {grad_out.shape}, "
                         f"expected the forward output shape {out_shape}")
    layer._saved = None
    return saved, grad_out.astype(dtype, copy=False)


PARALLEL_MIN_WORK = 1 << 16  # elements; below this a kernel runs on one thread


def launch(kernel, work, *args):
    """Call a parallel kernel, on a single thread when ``work`` (elements touched) is small:
    waking the thread pool then costs more than it saves, and far more on a busy machine."""
    if work >= PARALLEL_MIN_WORK:
        return kernel(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def pair(value, name, low):
    """An int or a pair of ints, each >= ``low``, as a pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return check_int(value[0], f"{name}[0]", low), check_int(value[1], f"{name}[1]", low)
    if isinstance(value, (tuple, list)):
        raise OptionError(f"{name} must be an integer or a pair of integers, got {value!r}")
    value = check_int(value, name, low)
    return value, value


def uniform(rng, bound, shape, dtype):
    """U(-bound, bound) drawn in float64, cast to ``dtype`` (torch.nn's default initialization draws from it)."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
