"""Weights across the framework boundary, without pickle.

A state dict is a flat ``{name: array}`` keyed by PyTorch's state-dict names (``"0.weight"``,
``"layer1.0.bn1.running_mean"``...), which refsnn modules use for their own parameters and
buffers, so a file written by either side loads into the other with no mapping table.

Two formats, chosen by the file's suffix:

* ``.safetensors`` — read and written with ``safetensors.numpy``; a file written by
  ``safetensors.torch.save_file(model.state_dict(), path)`` loads here, and the reverse.
* ``.npz`` — NumPy's zip of ``.npy`` files, read with ``allow_pickle=False`` (a member that
  is not a ``.npy`` array is refused, as are declared sizes larger than the file: the reader
  of refsnn's own checkpoints) and written without pickling (object arrays are refused).

Neither format can execute code when loaded (``torch.load`` of a ``.pt`` file can).

    state = load_weights("model.safetensors")       # {name: np.ndarray}
    load_into(net, "model.safetensors")             # copy into a refsnn module, strict names
    save_weights("trained.safetensors", net.state_dict())
"""
import io
import os
import zipfile

import numpy as np

from refsnn.train.checkpoint import MAX_WEIGHTS_BYTES, load_npz, read_regular_file

FORMATS = (".safetensors", ".npz")


def _format(path):
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"{os.fspath(path)!r}: unknown weight format {suffix!r}; "
                         f"use one of {', '.join(FORMATS)}")
    return suffix


def _as_numpy(name, value):
    """An array from a numpy array, a number or a torch tensor (detached, on the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"state dict entry {name!r} has dtype {array.dtype}; only bool, integer "
                        "and float arrays can be saved")
    return array if array.flags.c_contiguous else array.copy(order="C")  # ascontiguousarray makes 0-d 1-d


def _check_names(state):
    if not hasattr(state, "items"):
        raise TypeError(f"a state dict must be a mapping name -> array, got {type(state).__name__}")
    for name in state:
        if not isinstance(name, str) or not name:
            raise TypeError(f"state dict names must be non-empty strings, got {name!r}")


# ------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------
def load_weights(path):
    """``{name: np.ndarray}`` from a ``.safetensors`` or ``.npz`` file (no pickle).

    Raises FileNotFoundError for a missing file and ValueError for one that is not a valid
    file of its format (corrupt, truncated, holding pickled objects or, in an ``.npz``, a
    member that is not a ``.npy`` array)."""
    kind = _format(path)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path!r} does not exist")
    try:
        if kind == ".safetensors":
            from safetensors.numpy import load_file
            return dict(load_file(path))
        data = read_regular_file(path, MAX_WEIGHTS_BYTES, "weight file", follow_symlinks=True)
        if data.startswith(np.lib.format.MAGIC_PREFIX):
            raise ValueError("a single .npy array, not an .npz archive")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            others = [name for name in archive.namelist() if not name.endswith(".npy")]
        if others:
            raise ValueError(f"member(s) {others} are not .npy arrays (an .npz of weights holds arrays only)")
        return load_npz(data, path)
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors, zipfile and the .npy reader each raise their own kinds
        raise ValueError(f"cannot read weight file {path!r} as {kind} (corrupt or truncated?): "
                         f"{type(error).__name__}: {error}") from error


def save_weights(path, state_dict):
    """Write ``{name: array}`` (numpy arrays, numbers or torch tensors) to ``path``.

    The format follows the suffix. Names and arrays are stored as given; float arrays keep
    their dtype (float32 stays float32, so a float32 model round-trips bit for bit)."""
    kind = _format(path)
    _check_names(state_dict)
    arrays = {name: _as_numpy(name, value) for name, value in state_dict.items()}
    path = os.fspath(path)
    if kind == ".safetensors":
        from safetensors.numpy import save_file
        save_file(arrays, path)
        return
    # np.savez would pickle nothing either, but it reserves the keyword "file" and appends
    # ".npz" to other names; writing the members directly keeps every name and the path.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


# ------------------------------------------------------------------------------------------
# into a refsnn module
# ------------------------------------------------------------------------------------------
def load_into(module, source, strict=True, skip=()):
    """Copy a state dict into a refsnn ``Module`` by name; returns the module.

    ``source`` is a weight file path (``.safetensors``/``.npz``) or a mapping name -> array
    (numpy arrays or torch tensors, e.g. ``torch_model.state_dict()``). Values are cast to
    the dtype of the module's arrays. With ``strict`` every parameter and buffer of the module
    must be in ``source`` and every entry of ``source`` must be one of them. Shapes must match
    exactly. On any mismatch nothing is copied and a ValueError lists every offending name.
    ``skip``: names of the module's entries left as they are and not required in ``source``
    (a neuron's configuration, which verify.user compares instead of copying)."""
    state = load_weights(source) if isinstance(source, (str, os.PathLike)) else source
    _check_names(state)
    state = {name: _as_numpy(name, value) for name, value in state.items()}
    targets = {name: param for name, param, _ in module.named_parameters()}
    targets.update(module.named_buffers())
    targets = {name: array for name, array in targets.items() if name not in skip}
    problems = []
    if strict:
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        if missing:
            problems.append(f"missing from the weights: {missing}")
        if unexpected:
            problems.append(f"not in the {type(module).__name__}: {unexpected}")
    shapes = [f"{name}: {state[name].shape} in the weights, {array.shape} in the module"
              for name, array in targets.items() if name in state and state[name].shape != array.shape]
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes))
    if problems:
        raise ValueError("weights do not fit the module: " + " | ".join(problems))
    for name, array in targets.items():
        if name in state:
            array[...] = state[name]
    return module
