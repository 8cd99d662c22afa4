"""One checkpoint format for every kind of run, and the rules of a run directory.

A run directory is the directory the user names (a moved or copied run continues where it is;
the ``out_dir`` inside a saved config is only a record). It holds:

* ``checkpoint.json``: the commit point, written last. Fields: ``kind`` (``"train"``: a
  ``refsnn train`` run, plain/TNA/DML/KD, twins inside; ``"convert"``: a ``refsnn convert``
  fine-tuning), ``refsnn_version``, ``epoch``, ``config``, ``history`` (one row per finished
  epoch), ``weights`` (the file name of the arrays), ``weights_sha256``, ``world_size`` (how
  many processes trained, refsnn.distributed: a record; any number may resume), the kind's own
  fields (train: ``generators``, ``twin_generators`` with a twin, ``teacher_sha256`` with KD;
  convert: ``generators``, ``scales``, ``results``);
* the arrays, ``checkpoint-epochNNNN.npz`` (train) or ``snn-epochNNNN.npz`` (convert), no pickle.
  The file the previous ``checkpoint.json`` named is kept until the next save, so a reader
  polling a run finds the file named by the json it read (and it retries if a writer moved on);
* ``metrics.csv`` and ``metrics.jsonl``, rewritten from the history at every save and at start;
* ``run.lock``, locked (``flock``) by the process writing the run. The kernel releases the lock
  when that process ends, however it ends, so a killed run never leaves a stale lock.

Data-parallel, process 0 alone writes (``write_checkpoint``, ``claim_run_dir``); the others
hold the same state and compute the same metadata.

A ternary export (``refsnn export-ternary``) is one ``.npz``: the arrays and ``meta.json``
(``kind = "ternary-export"``, ``format``, ``refsnn_version``, ``config``, ``epoch``, ``test_acc``).

Run directories can come from other people. A weights file name read from ``checkpoint.json``
must be a plain name of the kind's pattern (no separator, no ``..``, not absolute) and is checked
before anything is opened or removed; every file read is a regular file (not a symbolic link,
device or FIFO) of bounded size, and every ``.npz`` member an array whose declared size fits in
the bytes the member holds. Only files of the run's own name patterns are ever removed.
"""
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__, distributed

META = "checkpoint.json"
LOCK = "run.lock"
METRICS = ("metrics.csv", "metrics.jsonl")
EXPORT_KIND = "ternary-export"
EXPORT_FORMAT = "refsnn-ternary-1"
WEIGHTS_PREFIX = {"train": "checkpoint-epoch", "convert": "snn-epoch"}
KIND_NAMES = {"train": "training run (refsnn train)", "convert": "converted-SNN run (refsnn convert)",
              EXPORT_KIND: "ternary export (refsnn export-ternary)"}
_KIND_FIELDS = {"train": (("generators", dict),),
                "convert": (("generators", dict), ("scales", list), ("results", dict))}
_LEGACY_KINDS = {None: "train", "converted-snn": "convert"}  # checkpoints written before `kind`
MAX_META_BYTES = 64 << 20      # checkpoint.json: config, generator states and history
MAX_WEIGHTS_BYTES = 4 << 30    # a weights file or an export
_WEIGHTS = re.compile(r"(checkpoint-epoch|snn-epoch)[0-9]{4,}\.npz")
_TMP = re.compile(r"\.(checkpoint\.json|metrics\.csv|metrics\.jsonl|(checkpoint-epoch|snn-epoch)[0-9]{4,}\.npz)"
                  r"\.[A-Za-z0-9_]+\.tmp")   # atomic_write_bytes' temporary names
USAGE = ("pass a run directory (written by refsnn train or refsnn convert), its checkpoint.json, "
         "or a ternary export (refsnn export-ternary)")


class RunExists(ValueError):
    """A fresh run was started in a directory holding another run."""


class RunInUse(ValueError):
    """Another process holds the run directory's lock."""


# ------------------------------------------------------------------------------------------
# bytes in and out
# ------------------------------------------------------------------------------------------
def atomic_write(path, write, suffix=".tmp"):
    """``write(temporary path)``, a file in the same directory named ``.<name>.<random><suffix>``
    (a writer that picks the format by extension wants ``suffix`` to end with it), then fsync it and
    rename it over ``path``: a reader sees the old file or the new one, never a part. The file
    gets the usual mode, 0o666 minus the umask (mkstemp alone gives 0o600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _umask():
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def check_writable(directory):
    """Create ``directory`` if needed and check that a file can be written in it: OSError naming
    it (read-only file system, permission, a file in the way) before any work is done."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {directory}: {e.strerror}") from None


def npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_regular_file(path, limit, what, follow_symlinks=False):
    """The bytes of ``path``: a regular file of at most ``limit`` bytes. A symbolic link (unless
    ``follow_symlinks``), device, FIFO or larger file is refused before it is opened.
    FileNotFoundError if it does not exist."""
    path = Path(path)
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{what} {path} is a symbolic link: refused (a run's files are regular files in its directory)")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a regular file: refused")
    if st.st_size > limit:
        raise ValueError(f"{what} {path} has {st.st_size:,} bytes, more than the {limit:,} refsnn reads: refused")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise ValueError(f"{what} {path} was replaced while being opened: refused")
        data = f.read(st.st_size + 1)   # read(n) allocates n bytes: never more than the file holds
    if len(data) != st.st_size:
        raise ValueError(f"{what} {path} changed size while being read: refused")
    return data


def load_npz(data, source):
    """``{name: array}`` from the bytes of an ``.npz``: no pickle, and every member's declared
    shape and dtype checked against the bytes it holds before anything is allocated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(info.file_size for info in z.infolist()) > len(data):
                raise ValueError("its members declare more bytes than the file holds (compressed or overlapping)")
            for info in z.infolist():
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise ValueError(f"member {info.filename} has .npy version {version}")
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                        else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    raise ValueError(f"member {info.filename} holds Python objects, which need pickle: refused")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise ValueError(f"member {info.filename} declares a {shape} {dtype} array, more than "
                                     f"the bytes it holds")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{source} is not a readable .npz of arrays: {e}") from None


# ------------------------------------------------------------------------------------------
# the arrays of a checkpoint: sections named by a prefix (model/, optim/, twin/...)
# ------------------------------------------------------------------------------------------
def prefixed(prefix, arrays):
    """``arrays`` (a state dict) under ``prefix``: ``{prefix + name: array}``."""
    return {f"{prefix}{k}": np.asarray(v) for k, v in arrays.items()}


def section(arrays, prefix):
    """The entries of ``arrays`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def generators(model):
    """``{module name: numpy Generator}`` of the modules that draw (Dropout): their states go
    into ``checkpoint.json`` so that a resumed run draws the masks it would have drawn."""
    return {name: m.rng for name, m in model.modules() if isinstance(getattr(m, "rng", None), np.random.Generator)}


# ------------------------------------------------------------------------------------------
# checkpoint.json and the weights it names
# ------------------------------------------------------------------------------------------
def run_paths(path):
    """``(run directory, checkpoint.json)`` for a run directory or its checkpoint.json."""
    path = Path(path)
    return (path, path / META) if path.is_dir() else (path.parent, path)


def _weights_name(name, kind, source):
    """``name`` if it is a plain weights file name of the ``kind``'s pattern, else ValueError."""
    if not (isinstance(name, str) and re.fullmatch(rf"{WEIGHTS_PREFIX[kind]}[0-9]{{4,}}\.npz", name)):
        raise ValueError(f"{source} names the weights file {name!r}: refused, a {kind} run's weights are a plain "
                         f"file name {WEIGHTS_PREFIX[kind]}NNNN.npz in the run's own directory")
    return name


def _count(value):
    """A non-negative int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_meta(meta_path):
    """The metadata in ``meta_path`` (a checkpoint.json), checked: a known ``kind``, the fields
    every kind has and the kind's own, a safe weights file name."""
    try:
        data = read_regular_file(meta_path, MAX_META_BYTES, "checkpoint metadata")
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {meta_path}") from None
    try:
        try:
            meta = json.loads(data)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if not isinstance(meta.get("kind"), (str, type(None))):
            raise ValueError(f"unknown kind {meta.get('kind')!r:.80}")
        kind = _LEGACY_KINDS.get(meta.get("kind"), meta.get("kind"))
        if kind not in WEIGHTS_PREFIX:
            raise ValueError(f"unknown kind {meta.get('kind')!r}")
        meta["kind"] = kind
        for field, cls in (("epoch", int), ("config", dict), ("history", list), ("weights_sha256", str),
                           *_KIND_FIELDS[kind]):
            if not isinstance(meta.get(field), cls) or isinstance(meta.get(field), bool):
                raise ValueError(f"field {field!r} missing or not a {cls.__name__}")
        if not _count(meta["epoch"]):
            raise ValueError(f"field 'epoch' is negative ({meta['epoch']})")
        if not all(isinstance(row, dict) for row in meta["history"]):
            raise ValueError("field 'history' is not a list of per-epoch rows")
        if kind == "convert":
            _check_conversion_fields(meta)
    except ValueError as e:
        raise ValueError(f"corrupt checkpoint metadata {meta_path}: {e}") from None
    _weights_name(meta.get("weights"), kind, meta_path)
    return meta


def _check_conversion_fields(meta):
    """What a converted-SNN run's loader reads from its metadata: the data set's name, the DNN's
    config and one (a, b, μ) per converted layer (refsnn.convert)."""
    results = meta["results"]
    if not isinstance(results.get("dataset"), str) or not isinstance(results.get("dnn_config"), dict):
        raise ValueError("field 'results' lacks 'dataset' (a string) or 'dnn_config' (an object)")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not all(isinstance(s, dict) and all(number(s.get(k)) for k in ("a", "b", "mu")) for s in meta["scales"]):
        raise ValueError("field 'scales' is not a list of {a, b, mu} finite numbers")


def read_checkpoint(path, kind=None):
    """``(meta, arrays)`` from a run directory or its ``checkpoint.json``, verified: the run is
    of ``kind`` (if given), the weights file is the one whose SHA-256 the json records, no
    pickle. If a writer commits a newer checkpoint meanwhile, the newer one is read."""
    run_dir, meta_path = run_paths(path)
    meta = read_meta(meta_path)
    if kind is not None and meta["kind"] != kind:
        raise ValueError(f"{meta_path} holds a {KIND_NAMES[meta['kind']]}, not a {KIND_NAMES[kind]}")
    for _ in range(3):
        weights = run_dir / meta["weights"]
        try:
            data = read_regular_file(weights, MAX_WEIGHTS_BYTES, "weights file")
            if hashlib.sha256(data).hexdigest() == meta["weights_sha256"]:
                return meta, load_npz(data, weights)
            error = ValueError(f"corrupt checkpoint: {weights} does not match the SHA-256 recorded in {meta_path} "
                               "(truncated or modified)")
        except FileNotFoundError:
            error = FileNotFoundError(f"checkpoint {meta_path} names weights {meta['weights']}, which is missing")
        newer = read_meta(meta_path)
        if _same(newer, meta) or newer["kind"] != meta["kind"]:
            break
        meta = newer   # a writer committed a newer checkpoint meanwhile
    raise error


def _same(meta, other):
    """Whether two checkpoint metadata name the same weights file with the same content."""
    return (meta["weights"], meta["weights_sha256"]) == (other["weights"], other["weights_sha256"])


def write_checkpoint(run_dir, kind, epoch, arrays, config, history, final=False, **fields):
    """Write ``arrays`` to the weights file, then ``checkpoint.json`` (the commit point), both
    atomically, then the metrics; returns the metadata written. The weights file the previous
    checkpoint.json named is kept until the next save (removed now if ``final``: the run writes
    no more); any other weights file of the run's patterns is removed. Data-parallel, only
    process 0 writes (every process returns the metadata)."""
    run_dir = Path(run_dir)
    data = npz_bytes(arrays)
    weights = f"{WEIGHTS_PREFIX[kind]}{epoch:04d}.npz"
    meta = {"kind": kind, "refsnn_version": __version__, "epoch": epoch, "config": config, "history": history,
            "weights": weights, "weights_sha256": hashlib.sha256(data).hexdigest(),
            "world_size": distributed.world().size, **fields}
    if distributed.world().rank != 0:
        return meta
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / weights, data)
    keep = {weights} if final else {weights, _named_weights(run_dir)}
    atomic_write_bytes(run_dir / META, json.dumps(meta, indent=1).encode())
    _remove_matching(run_dir, _WEIGHTS, keep)
    write_metrics(run_dir, history)
    return meta


def _named_weights(run_dir):
    """The weights file the checkpoint.json in ``run_dir`` names, if it is a valid one."""
    try:
        return read_meta(run_dir / META)["weights"]
    except (OSError, ValueError):
        return None


def write_metrics(run_dir, history):
    """``metrics.csv`` and ``metrics.jsonl``: one row per entry of ``history`` (none: removed)."""
    run_dir = Path(run_dir)
    if not history:
        for name in METRICS:
            (run_dir / name).unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(run_dir / METRICS[0], buf.getvalue().encode())
    atomic_write_bytes(run_dir / METRICS[1], "".join(json.dumps(r) + "\n" for r in history).encode())


def _remove_matching(run_dir, pattern, keep=()):
    """Remove the entries of ``run_dir`` whose whole name matches ``pattern`` (not directories)."""
    for entry in os.scandir(run_dir):
        if pattern.fullmatch(entry.name) and entry.name not in keep and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


# ------------------------------------------------------------------------------------------
# the run directory while a run writes it
# ------------------------------------------------------------------------------------------
def _lock(run_dir):
    """An open descriptor of ``run_dir/run.lock`` holding an exclusive ``flock``."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise ValueError(f"cannot open the lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 16, 0).decode(errors="replace").strip()
        os.close(fd)
        raise RunInUse(f"{run_dir} is in use: another refsnn process{f' (pid {holder})' if holder.isdigit() else ''} "
                       f"is writing a run there (it holds {path}); wait for it to end or choose another "
                       "directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def refuse_existing_run(run_dir, overwrite=False):
    """Raise ``RunExists`` if ``run_dir`` holds a run and ``overwrite`` is false: checked before a
    fresh run starts (so the user hears it first), and again under the lock."""
    if overwrite:
        return
    if os.path.lexists(Path(run_dir) / META):
        raise RunExists(f"{run_dir} already holds a run (its {META}): pass --resume to continue it, "
                        "--overwrite to replace it, or choose another directory")
    # files named like a run's weights but no checkpoint.json: a run killed before its first
    # checkpoint, or someone's own files; the run would remove them, so only with --overwrite
    named = sorted(p.name for p in Path(run_dir).iterdir() if _WEIGHTS.fullmatch(p.name)) \
        if Path(run_dir).is_dir() else []
    if named:
        raise RunExists(f"{run_dir} holds {', '.join(named[:3])}{' ...' if len(named) > 3 else ''} (named like a "
                        "run's weights) but no checkpoint.json: pass --overwrite to let a new run replace them, "
                        "or choose another directory")


@contextlib.contextmanager
def claim_run_dir(run_dir, loaded=None, overwrite=False):
    """Hold ``run_dir``'s lock while the body writes a run there.

    A fresh run (``loaded`` None) refuses a directory holding a checkpoint unless ``overwrite``
    (which removes it); a resumed run (``loaded``: the metadata it was restored from) checks the
    checkpoint is still that one. Then the leftovers of killed writers are removed (temporary
    files of atomic writes, weights files checkpoint.json does not name) and the metrics are
    rewritten from the checkpoint's history. Data-parallel, process 0 alone claims and writes."""
    if distributed.world().rank != 0:
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _lock(run_dir)
    try:
        meta_path = run_dir / META
        if loaded is None:
            refuse_existing_run(run_dir, overwrite)
            if os.path.lexists(meta_path):
                os.unlink(meta_path)
            keep, history = (), []
        else:
            current = read_meta(meta_path)
            if not _same(current, loaded):
                raise ValueError(f"the checkpoint in {run_dir} changed after it was loaded (another process "
                                 "wrote it): load it again")
            keep, history = {current["weights"]}, current["history"]
        _remove_matching(run_dir, _TMP)
        _remove_matching(run_dir, _WEIGHTS, keep)
        write_metrics(run_dir, history)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# ternary exports, and telling what a path holds
# ------------------------------------------------------------------------------------------
def write_export(path, meta, arrays):
    """A ternary export at ``path``: ``arrays`` and ``meta.json`` (``meta`` with ``kind``,
    ``format`` and ``refsnn_version``) in one ``.npz``, written atomically. Returns its size."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"the export {path} must be a .npz file")
    if os.path.lexists(path.parent / META) or os.path.lexists(path.parent / LOCK):
        raise ValueError(f"{path.parent} is a run directory: write the export outside it (an export there could "
                         "replace the run's own files)")
    if os.path.lexists(path):
        try:
            if identify(path) != EXPORT_KIND:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path} exists and is not a ternary export: refused to replace it") from None
    meta = {"kind": EXPORT_KIND, "format": EXPORT_FORMAT, "refsnn_version": __version__, **meta}
    data = npz_bytes({**arrays, "meta.json": np.array(json.dumps(meta))})
    atomic_write_bytes(path, data)
    return len(data)


def read_export(path):
    """``(meta, arrays, sha256 of the file)`` of a ternary export."""
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_WEIGHTS_BYTES, "ternary export", follow_symlinks=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no ternary export at {path}") from None
    try:
        arrays = load_npz(data, path)
        if "meta.json" not in arrays:
            raise ValueError("no meta.json")
        try:
            meta = json.loads(str(arrays.pop("meta.json")))
        except RecursionError:
            raise ValueError("meta.json nested too deeply") from None
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not a JSON object")
        if meta.get("kind", EXPORT_KIND) != EXPORT_KIND or meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"kind {meta.get('kind')!r}, format {meta.get('format')!r}; expected "
                             f"{EXPORT_KIND!r}, {EXPORT_FORMAT!r}")
        if not isinstance(meta.get("config"), dict) or not _count(meta.get("epoch")):
            raise ValueError("its meta.json has no config or no epoch count")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable refsnn ternary export: {e}") from None
    return meta, arrays, hashlib.sha256(data).hexdigest()


def identify(path):
    """What ``path`` holds: ``"train"`` or ``"convert"`` (a run directory or its checkpoint.json)
    or ``"ternary-export"``. Anything else: ValueError saying what it is and what to pass."""
    path = Path(path)
    if path.is_dir():
        if not os.path.lexists(path / META):
            raise ValueError(f"{path} is a directory without {META}, not a refsnn run: {USAGE}")
        return read_meta(path / META)["kind"]
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no checkpoint at {path}: no such file or directory")
    if path.suffix == ".json":
        return read_meta(path)["kind"]
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file: {USAGE}")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        what = "not a readable refsnn ternary export (not an .npz archive)" if path.suffix == ".npz" \
            else "not a refsnn checkpoint or export"
        raise ValueError(f"{path} is {what}: {USAGE}") from None
    if "meta.json.npy" in names:
        return EXPORT_KIND
    if any(name.startswith(("model/", "optim/")) for name in names):
        try:
            owner = read_meta(path.parent / META)
        except (OSError, ValueError):
            owner = None
        if owner is not None and owner["weights"] == path.name:
            raise ValueError(f"{path} is the weights file of the {KIND_NAMES[owner['kind']]} in {path.parent}: "
                             f"pass {path.parent} instead")
        raise ValueError(f"{path} holds the weights of a refsnn run but not its {META}: pass the run directory "
                         f"that holds both")
    raise ValueError(f"{path} is an .npz archive but not a refsnn ternary export (no meta.json): {USAGE}")
