"""Event data: N-MNIST, SHD/SSC, DVS128 Gesture and CIFAR10-DVS read from their own files and
binned to frames.

A recording is a structured array of events sorted by time, ``EVENTS`` (fields ``t`` in
microseconds, ``x``, ``y``, ``p``; audio: ``x`` is the unit, ``y`` and ``p`` are 0). ``to_frames``
bins one recording into ``T`` count frames, ``[T, C, H, W]`` (polarity as the channel) or
``[T, units]``; ``load_event_dataset`` reads a whole set, bins it and caches the frames next to
the data (``docs/events.md`` §3). The byte layouts are in ``docs/events.md`` §1.

Why refsnn reads the files itself: tonic (GPL-3.0) reads N-MNIST and jAER 2.0 but not the
original DVS128 Gesture AEDAT 3.1 files (its ``DVSGesture`` and ``CIFAR10DVS`` load tonic's own
re-packed ``.npy``/AEDAT4 mirrors) and pulls in librosa, scipy and importRosbag; ``aedat`` on PyPI
reads AEDAT4 only; ``loris`` has no wheel and its source fails to build on Python 3.11. The
formats are small, so each reader is a few lines of NumPy that check every size a file declares
against the bytes it holds
(and ``refsnn.data.MAX_FILE_BYTES``) before allocating, and raise one ``ValueError`` naming the
file and the problem. Every file read lies inside the data directory (symlinks leading out are
refused), including the names listed in DVS128 Gesture's ``trials_to_*.txt``.
"""
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from .data import MAX_FILE_BYTES, _check_labels, _data_directory, _data_file

EVENTS = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])  # t: microseconds
MAX_FRAME_COUNT = np.iinfo(np.uint16).max     # frames are stored as uint16 event counts
BINNINGS = ("time", "count")
_HEADER_LIMIT = 1 << 20                        # longest text header accepted in an AEDAT file


def _events(t, x, y=0, p=0):
    out = np.empty(len(t), EVENTS)
    out["t"], out["x"], out["y"], out["p"] = t, x, y, p
    return out


def _inside(path, root):
    """``path`` (a regular file) if its real location lies inside the data directory ``root``."""
    path = _data_file(path)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} leads outside the data directory {root} (symlink?); refusing to read it")
    return path


def _check_size(path, what):
    """ValueError when ``path`` is larger than ``MAX_FILE_BYTES``, before anything is read."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit for one {what} file "
                         "(refsnn.data.MAX_FILE_BYTES)")


def _read_bounded(path, what):
    """The bytes of ``path``, refused before reading when larger than ``MAX_FILE_BYTES``."""
    _check_size(path, what)
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None


def _check_range(path, name, values, size):
    bad = np.flatnonzero((values < 0) | (values >= size))
    if bad.size:
        raise ValueError(f"{path}: event {bad[0]} has {name} = {values[bad[0]]}, outside the sensor's [0, {size})")


# --------------------------------------------------------------------------------------------
# N-MNIST: 5 bytes an event (docs/events.md §1.1)
# --------------------------------------------------------------------------------------------
def read_nmnist(path, root=None):
    """One N-MNIST ``.bin`` recording -> ``EVENTS`` [n] on the 34x34 sensor.

    Byte 0 = x, byte 1 = y, bit 7 of byte 2 = polarity, bits 6..0 of byte 2 and bytes 3, 4 = the
    23-bit timestamp in microseconds (big-endian). An event with y = 240 is a timestamp-overflow
    marker adding 2^13 µs to every later event (Orchard's reader, github.com/gorchard/event-Python
    ``eventvision.read_dataset``, which tonic's ``read_mnist_file`` copies). ValueError naming the
    file for a size that is not a whole number of events (truncated), over ``MAX_FILE_BYTES``, or
    an x or y outside the sensor; ``root``: the data directory the file must lie in.
    """
    path = _data_file(path) if root is None else _inside(path, root)
    raw = _read_bounded(path, "N-MNIST")
    if len(raw) % 5:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of 5-byte N-MNIST events "
                         "(truncated or not an N-MNIST .bin file)")
    b = np.frombuffer(raw, np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    overflow = b[:, 1] == 240
    t = t + (np.cumsum(overflow) << 13)
    keep = ~overflow
    x, y, p = b[keep, 0], b[keep, 1], b[keep, 2] >> 7
    _check_range(path, "x", x, 34)
    _check_range(path, "y", y, 34)
    return _events(t[keep], x, y, p)


def _nmnist_split(root, split):
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no N-MNIST {split}/ folder in {root} (expected {split}/<digit>/<id>.bin)")
    files, labels = [], []
    others = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in map(str, range(10)))
    if others:  # a class folder out of range is an error, not a folder left out
        raise ValueError(f"{folder}: class folder {others[0]!r} is not a digit 0-9 (N-MNIST's labels; expected "
                         f"{split}/<digit>/<id>.bin)")
    for digit in range(10):
        sub = folder / str(digit)
        found = sorted(sub.glob("*.bin")) if sub.is_dir() else []
        files += [_inside(f, root) for f in found]
        labels += [digit] * len(found)
    if not files:
        raise FileNotFoundError(f"{folder}: no <digit>/<id>.bin files")
    return files, lambda: ((read_nmnist(f, root) for f in files), np.array(labels, np.int64))


# --------------------------------------------------------------------------------------------
# SHD and SSC: HDF5 (docs/events.md §1.2)
# --------------------------------------------------------------------------------------------
def read_hdf5_spikes(path, num_classes, units=700):
    """An SHD/SSC HDF5 file -> ``(recordings, labels)``: a list of ``EVENTS`` (x = unit, t in µs,
    rounded from the file's seconds) and int64 labels [N].

    Reads ``spikes/times`` (variable-length float arrays, seconds), ``spikes/units``
    (variable-length integers in [0, units)) and ``labels`` (Cramer et al. 2020, "The Heidelberg
    spiking data sets", IEEE TNNLS). Needs h5py (``pip install refsnn[events]``). ValueError
    naming the file for a file that is not HDF5, missing or mis-typed datasets, lengths that
    disagree, times that are negative or not finite, units or labels out of range, or more
    events in all than ``MAX_FILE_BYTES`` allows.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("reading SHD/SSC needs h5py: pip install refsnn[events]") from None
    path = _data_file(path)
    _check_size(path, "SHD/SSC")
    try:
        with h5py.File(path, "r") as f:
            return _hdf5_spikes(f, path, num_classes, units)
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None


def _hdf5_spikes(f, path, num_classes, units):
    import h5py
    parts = {}
    for name, kind in (("spikes/times", "f"), ("spikes/units", "iu"), ("labels", "iu")):
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            raise ValueError(f"{path}: no one-dimensional dataset {name!r} (an SHD/SSC file holds spikes/times, "
                             "spikes/units and labels)")
        base = h5py.check_vlen_dtype(ds.dtype) if name.startswith("spikes") else ds.dtype
        if base is None or base.kind not in kind:
            raise ValueError(f"{path}: dataset {name!r} has type {ds.dtype}, expected "
                             f"{'variable-length ' if name.startswith('spikes') else ''}"
                             f"{'floats' if kind == 'f' else 'integers'}")
        parts[name] = ds
    n = len(parts["labels"])
    if len(parts["spikes/times"]) != n or len(parts["spikes/units"]) != n:
        raise ValueError(f"{path}: {len(parts['spikes/times'])} times, {len(parts['spikes/units'])} units "
                         f"and {n} labels: one of each per sample")
    labels = _check_labels(parts["labels"][()].astype(np.int64), num_classes, str(path))
    recordings, total = [], 0
    for i in range(n):
        times, unit = parts["spikes/times"][i], parts["spikes/units"][i]
        total += len(times) * EVENTS.itemsize
        if total > MAX_FILE_BYTES:
            raise ValueError(f"{path}: more than {MAX_FILE_BYTES} bytes of events (refsnn.data.MAX_FILE_BYTES)")
        if len(times) != len(unit):
            raise ValueError(f"{path}: sample {i} has {len(times)} spike times but {len(unit)} units")
        if not (np.isfinite(times).all() and (times >= 0).all()):
            raise ValueError(f"{path}: sample {i} has a spike time that is negative, NaN or Inf")
        _check_range(f"{path}: sample {i}", "unit", unit.astype(np.int64), units)
        t = np.rint(times.astype(np.float64) * 1e6).astype(np.int64)
        order = np.argsort(t, kind="stable")
        recordings.append(_events(t[order], unit[order]))
    return recordings, labels


# --------------------------------------------------------------------------------------------
# AEDAT: DVS128 Gesture (3.1) and CIFAR10-DVS (jAER 2.0) (docs/events.md §1.3, §1.4)
# --------------------------------------------------------------------------------------------
def _aedat_body(path, raw, version):
    """The offset at which the binary part of an AEDAT file starts: after the ``#`` header lines
    (CRLF or LF), the first of which must be ``#!AER-DAT<version>``."""
    if not raw.startswith(f"#!AER-DAT{version}".encode()):
        raise ValueError(f"{path}: not an AEDAT {version} file (its first line must be #!AER-DAT{version}, "
                         f"got {raw[:16]!r})")
    pos = 0
    while pos < len(raw) and raw[pos:pos + 1] == b"#":
        end = raw.find(b"\n", pos, pos + _HEADER_LIMIT)
        if end < 0:
            raise ValueError(f"{path}: AEDAT header line at byte {pos} does not end (truncated, or a line longer "
                             f"than {_HEADER_LIMIT} bytes)")
        line, pos = raw[pos:end], end + 1
        if line.rstrip(b"\r") == b"#!END-HEADER":
            break
    return pos


def read_aedat31(path, root=None):
    """A DVS128 Gesture AEDAT 3.1 recording -> ``EVENTS`` of its polarity packets (128x128).

    After the text header, packets of a 28-byte little-endian header (int16 eventType, int16
    eventSource, int32 eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber,
    eventValid) and ``eventCapacity * eventSize`` bytes of events. Polarity events (type 1,
    8 bytes): uint32 data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and int32
    timestamp, extended by ``eventTSOverflow << 31`` (iniVation's AEDAT 3.1 specification,
    docs.inivation.com; the same decoding as SpikingJelly's ``load_aedat_v3``). Invalid events are
    dropped; other packet types skipped. ValueError naming the file for a bad first line, a
    packet that declares more bytes than remain, a polarity packet whose eventSize is not 8, or
    an x or y outside 128.
    """
    path = _data_file(path) if root is None else _inside(path, root)
    raw = _read_bounded(path, "AEDAT")
    pos, parts = _aedat_body(path, raw, "3.1"), []
    while pos < len(raw):
        if len(raw) - pos < 28:
            raise ValueError(f"{path}: truncated AEDAT 3.1 packet header at byte {pos} ({len(raw) - pos} of 28 bytes)")
        kind, _, size, _, overflow, capacity = np.frombuffer(raw, "<i2", 2, pos).tolist() + \
            np.frombuffer(raw, "<i4", 4, pos + 4).tolist()
        nbytes = capacity * size
        if size < 0 or capacity < 0 or nbytes > len(raw) - pos - 28:
            raise ValueError(f"{path}: AEDAT 3.1 packet at byte {pos} declares {capacity} events of {size} bytes, "
                             f"more than the {len(raw) - pos - 28} bytes left (truncated or corrupt)")
        if kind == 1:
            if size != 8:
                raise ValueError(f"{path}: AEDAT 3.1 polarity packet at byte {pos} has eventSize {size}, expected 8")
            ev = np.frombuffer(raw, "<u4", 2 * capacity, pos + 28).reshape(-1, 2).astype(np.int64)
            ev = ev[(ev[:, 0] & 1) == 1]
            parts.append(_events(ev[:, 1] | (overflow << 31), (ev[:, 0] >> 17) & 0x7FFF,
                                 (ev[:, 0] >> 2) & 0x7FFF, (ev[:, 0] >> 1) & 1))
        pos += 28 + nbytes
    events = np.concatenate(parts) if parts else np.empty(0, EVENTS)
    _check_range(path, "x", events["x"], 128)
    _check_range(path, "y", events["y"], 128)
    return events[np.argsort(events["t"], kind="stable")]


def read_jaer2(path, root=None):
    """A CIFAR10-DVS jAER AEDAT 2.0 recording -> ``EVENTS`` on the 128x128 sensor.

    After the ``#`` header lines, big-endian pairs (uint32 address, uint32 timestamp in µs);
    address bit 0 = polarity, bits 1-7 = x, bits 8-14 = y of the DVS128 (jAER's
    ``DVS128.Extractor``). refsnn turns them as SpikingJelly's ``CIFAR10DVS`` does so that the
    objects stand upright: x' = 127 - y, y' = 127 - x, p' = 1 - p. ValueError naming the file for
    a bad first line or a body that is not a whole number of 8-byte events (truncated).
    """
    path = _data_file(path) if root is None else _inside(path, root)
    raw = _read_bounded(path, "AEDAT")
    pos = _aedat_body(path, raw, "2.0")
    if (len(raw) - pos) % 8:
        raise ValueError(f"{path}: {len(raw) - pos} bytes after the header is not a whole number of 8-byte "
                         "jAER events (truncated)")
    ev = np.frombuffer(raw, ">u4", offset=pos).reshape(-1, 2).astype(np.int64)
    addr = ev[:, 0]
    events = _events(ev[:, 1], 127 - ((addr >> 8) & 0x7F), 127 - ((addr >> 1) & 0x7F), 1 - (addr & 1))
    return events[np.argsort(events["t"], kind="stable")]


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _cifar10_dvs_split(root, split):
    """Per class, the files sorted by the number in their name; the first 90% train, the rest
    test (SpikingJelly's ``split_to_train_test_set(0.9, random_split=False)``; the set has no
    official split)."""
    files, labels = [], []
    for label, name in enumerate(_CIFAR10_CLASSES):
        found = sorted((root / name).glob("*.aedat"), key=lambda f: (int(re.sub(r"\D", "", f.stem) or 0), f.name))
        if not found:
            raise FileNotFoundError(f"no CIFAR10-DVS class folder {name}/ with .aedat files in {root}")
        cut = int(0.9 * len(found))
        chosen = found[:cut] if split == "train" else found[cut:]
        files += [_inside(f, root) for f in chosen]
        labels += [label] * len(chosen)
    return files, lambda: ((read_jaer2(f, root) for f in files), np.array(labels, np.int64))


def read_gesture_labels(path, root):
    """A DVS128 Gesture ``<trial>_labels.csv`` -> int64 ``[k, 3]``: class (1..11), start and end
    time in µs per gesture. ValueError naming the file for a bad header, a row that is not three
    non-negative integers, a class outside 1..11 or an end before its start."""
    path = _inside(path, root)
    lines = _read_bounded(path, "labels").decode("ascii", "replace").split()
    if not lines or lines[0].strip() != "class,startTime_usec,endTime_usec":
        raise ValueError(f"{path}: the first line must be class,startTime_usec,endTime_usec")
    rows = []
    for i, line in enumerate(lines[1:], 2):
        cells = line.split(",")
        if len(cells) != 3 or not all(c.isdigit() for c in cells):
            raise ValueError(f"{path}: line {i} is not three non-negative integers: {line[:60]!r}")
        rows.append([int(c) for c in cells])
    rows = np.array(rows, np.int64).reshape(-1, 3)
    bad = np.flatnonzero((rows[:, 0] < 1) | (rows[:, 0] > 11) | (rows[:, 2] < rows[:, 1]))
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + 2} has class {rows[bad[0], 0]} (1..11) or ends before it starts")
    return rows


def _gesture_split(root, split):
    """The trials named in ``trials_to_<split>.txt``, each cut into its labelled gestures
    (events with start <= t < end, as SpikingJelly's ``DVS128Gesture`` cuts them)."""
    listing = _inside(root / f"trials_to_{split}.txt", root)
    names = _read_bounded(listing, "listing").decode("ascii", "replace").split()
    for name in names:
        if Path(name).name != name or not name.endswith(".aedat"):
            raise ValueError(f"{listing}: {name!r} is not a plain .aedat file name in that folder")
    trials = [(_inside(root / name, root), _inside(root / f"{name[:-6]}_labels.csv", root)) for name in names]

    def read():
        recordings, labels = [], []
        for aedat, csv in trials:
            events = read_aedat31(aedat, root)
            for label, start, end in read_gesture_labels(csv, root):
                recordings.append(events[(events["t"] >= start) & (events["t"] < end)])
                labels.append(label - 1)
        return recordings, np.array(labels, np.int64)
    return [listing, *(f for pair in trials for f in pair)], read


def _hdf5_split(root, split, stem, num_classes):
    path = _inside(root / f"{stem}_{split}.h5", root)
    return [path], lambda: read_hdf5_spikes(path, num_classes)


# --------------------------------------------------------------------------------------------
# Events -> frames (docs/events.md §2)
# --------------------------------------------------------------------------------------------
def to_frames(events, shape, T, binning="time", downsample=1):
    """Bin one recording into ``T`` frames of event counts: uint16 ``[T, C, H, W]`` for a sensor
    of ``shape = (C, H, W)`` (channel = polarity), ``[T, units]`` for ``shape = (units,)``.

    SpikingJelly's ``integrate_events_by_fixed_frames_number`` (``split_by`` "time" or "number"),
    with events sorted by time, n events, t0 and t1 the first and last time:
      * ``"time"``: dt = (t1 - t0) // T µs; frame j holds the events with t0 + j dt <= t < t0 + (j+1) dt,
        the last frame everything from t0 + (T-1) dt on;
      * ``"count"``: frame j holds events j (n // T) .. (j+1) (n // T) - 1, the last one the rest.
    (With dt = 0 or n < T every event falls in the last frame.) ``downsample`` f: pixel (y, x) ->
    (y // f, x // f) (unit u -> u // f), frames of ceil(H / f) x ceil(W / f) (ceil(units / f)).
    ValueError for a count over ``MAX_FRAME_COUNT`` in one frame element.
    """
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {', '.join(BINNINGS)}, got {binning!r}")
    if events.dtype != EVENTS:
        raise TypeError(f"events must be a refsnn.events.EVENTS array (fields t, x, y, p), got dtype {events.dtype}")
    sensor = {"x": shape[-1], "y": 1 if len(shape) == 1 else shape[1], "p": 1 if len(shape) == 1 else shape[0]}
    for field, size in sensor.items():
        _check_range("events", field, events[field], size)
    if len(events) and (np.diff(events["t"]) < 0).any():
        raise ValueError("events must be sorted by time t")
    n, f = len(events), downsample
    if n and binning == "time":
        t = events["t"] - events["t"][0]
        dt = int(t[-1]) // T
        frame = np.minimum(t // dt, T - 1) if dt else np.full(n, T - 1)
    else:
        per = n // T
        frame = np.minimum(np.arange(n) // per, T - 1) if per else np.full(n, T - 1)
    if len(shape) == 1:                                  # audio: [T, units]
        out = (-(-shape[0] // f),)
        index = frame * out[0] + events["x"] // f
    else:                                                # [T, C, H, W], channel = polarity
        channels, height, width = shape
        out = (channels, -(-height // f), -(-width // f))
        index = ((frame * channels + events["p"]) * out[1] + events["y"] // f) * out[2] + events["x"] // f
    counts = np.bincount(index.astype(np.int64), minlength=T * int(np.prod(out))).reshape(T, *out)
    if counts.size and counts.max() > MAX_FRAME_COUNT:
        raise ValueError(f"{counts.max()} events in one frame element, over the {MAX_FRAME_COUNT} a uint16 frame "
                         "holds: use more time bins (T) or less downsampling")
    return counts.astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Data sets, cached as frames (docs/events.md §3)
# --------------------------------------------------------------------------------------------
# name: (per-step input shape, classes, subfolder tonic extracts to, split names, the split's sources and reader)
EVENT_DATASETS = {
    "nmnist": ((2, 34, 34), 10, "NMNIST", ("Train", "Test"), _nmnist_split),
    "shd": ((700,), 20, "SHD", ("train", "test"), lambda root, split: _hdf5_split(root, split, "shd", 20)),
    "ssc": ((700,), 35, "SSC", ("train", "test"), lambda root, split: _hdf5_split(root, split, "ssc", 35)),
    "dvs-gesture": ((2, 128, 128), 11, "DvsGesture", ("train", "test"), _gesture_split),
    "cifar10-dvs": ((2, 128, 128), 10, "CIFAR10DVS", ("train", "test"), _cifar10_dvs_split),
}
CACHE_VERSION = 1


def frame_shape(shape, downsample):
    """The per-step frame shape of a sensor ``shape`` ((C, H, W) or (units,)) downsampled by f."""
    if len(shape) == 1:
        return (-(-shape[0] // downsample),)
    return (shape[0], -(-shape[1] // downsample), -(-shape[2] // downsample))


def cache_path(root, name, split, T, binning, downsample):
    """Where one split's frames are cached: ``root/refsnn-frames-<name>-<split>-T<T>-<binning>-ds<f>.npz``."""
    return Path(root) / f"refsnn-frames-{name}-{split.lower()}-T{T}-{binning}-ds{downsample}.npz"


def _fingerprint(sources, root):
    """What the cache is keyed on besides the binning: each source file's path, size and mtime."""
    return [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in sources]


def _read_cache(path, key, shape, num_classes):
    """``(frames, labels)`` from a cache file written for exactly ``key``, else None (missing,
    corrupt, truncated, for other parameters or other source files: the caller rebuilds it)."""
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as z:
            sizes = {i.filename: i.file_size for i in z.infolist()}
        if set(sizes) != {"key.npy", "labels.npy", "frames.npy"} or sizes["key.npy"] > _HEADER_LIMIT \
                or sizes["labels.npy"] > MAX_FILE_BYTES:
            return None
        with np.load(path, allow_pickle=False) as z:
            if bytes(z["key"]).decode() != json.dumps(key):
                return None
            labels = z["labels"]
            expected = len(labels) * key["T"] * int(np.prod(shape)) * 2
            if not 0 <= sizes["frames.npy"] - expected <= 4096:   # the frames plus a .npy header
                return None
            frames = z["frames"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    if frames.dtype != np.uint16 or frames.shape != (len(labels), key["T"], *shape) or labels.dtype != np.int64 \
            or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        return None
    return frames, labels


def _write_cache(path, key, frames, labels):
    """Write the cache atomically (a temporary file renamed over it: a reader never sees half a
    file); a folder that cannot be written is left without a cache."""
    from .train.checkpoint import atomic_write_bytes  # here: refsnn.train imports refsnn.data
    buf = io.BytesIO()
    np.savez_compressed(buf, key=np.frombuffer(json.dumps(key).encode(), np.uint8), frames=frames, labels=labels)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass


def event_frames(name, root, split, T, binning="time", downsample=1, cache=True):
    """One split of an event data set as frames: uint16 ``[N, T, ...]`` and int64 labels ``[N]``,
    read from the cache when it was written for the same parameters and source files."""
    shape, num_classes, _, _, find = EVENT_DATASETS[name]
    sources, read = find(root, split)
    key = {"version": CACHE_VERSION, "dataset": name, "split": split, "T": T, "binning": binning,
           "downsample": downsample, "sources": _fingerprint(sources, root)}
    out_shape = frame_shape(shape, downsample)
    path = cache_path(root, name, split, T, binning, downsample)
    cached = _read_cache(path, key, out_shape, num_classes) if cache else None
    if cached is not None:
        return cached
    recordings, labels = read()
    frames = np.zeros((len(labels), T, *out_shape), np.uint16)
    for i, events in enumerate(recordings):
        frames[i] = to_frames(events, shape, T, binning, downsample)
    if cache:
        _write_cache(path, key, frames, labels)
    return frames, labels


def load_event_dataset(name, data_dir, T, binning="time", downsample=1, cache=True):
    """``(train_x, train_y, test_x, test_y, info)`` for an event data set in ``data_dir``:
    frames uint16 ``[N, T, C, H, W]`` or ``[N, T, units]`` (event counts, ``to_frames``) and
    int64 labels. The folder holds the set as its authors ship it, or holds the subfolder tonic
    extracts it to (``NMNIST``, ``SHD``, ``SSC``, ``DvsGesture``, ``CIFAR10DVS``):

      * ``nmnist``: ``Train/<digit>/<id>.bin``, ``Test/<digit>/<id>.bin``;
      * ``shd``, ``ssc``: ``shd_train.h5``, ``shd_test.h5`` (``ssc_train.h5``, ``ssc_test.h5``);
      * ``dvs-gesture``: ``trials_to_train.txt``, ``trials_to_test.txt``, ``<trial>.aedat`` and
        ``<trial>_labels.csv``;
      * ``cifar10-dvs``: ``<class>/<...>_<i>.aedat`` for the ten CIFAR-10 classes (90/10 split).

    ``info``: ``name``, ``num_classes``, ``input_shape`` (one time step), ``n_train``, ``n_test``,
    ``frames`` (True: each sample is already ``[T, ...]``), and ``synthetic`` (the path of the
    folder's ``SYNTHETIC.txt``) for the SYNTHETIC stand-in sets refsnn ships. ValueError for bad options or files
    (naming them), FileNotFoundError for a missing folder or file.
    """
    if name not in EVENT_DATASETS:
        raise ValueError(f"unknown event data set {name!r}; known: {', '.join(EVENT_DATASETS)}")
    for option, value in (("T (the number of frames)", T), ("downsample", downsample)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value!r}")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {', '.join(BINNINGS)}, got {binning!r}")
    _, num_classes, subdir, splits, _ = EVENT_DATASETS[name]
    root = _data_directory(data_dir, f"{name} data")
    if (root / subdir).is_dir():
        if not (root / subdir).resolve().is_relative_to(root.resolve()):
            raise ValueError(f"{root / subdir} leads outside the data directory {root}; refusing to read it")
        root = root / subdir
    train_x, train_y = event_frames(name, root, splits[0], int(T), binning, int(downsample), cache)
    test_x, test_y = event_frames(name, root, splits[1], int(T), binning, int(downsample), cache)
    info = {"name": name, "num_classes": num_classes, "input_shape": tuple(train_x.shape[2:]),
            "n_train": len(train_x), "n_test": len(test_x), "frames": True}
    if (root / "SYNTHETIC.txt").is_file():  # refsnn's stand-in sets (data/make_synthetic_events.py)
        info["synthetic"] = str(root / "SYNTHETIC.txt")
    return train_x, train_y, test_x, test_y, info
