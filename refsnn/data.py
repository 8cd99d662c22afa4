"""Data: the shipped sets, IDX and CIFAR readers, splits and batches.

Every loader returns images as float32 ``[N, C, H, W]`` in ``[0, 1]`` and labels as int64 ``[N]``.
The input encodings (``[N, ...]`` -> ``[T, N, ...]``) live in ``refsnn.encoding``.

Shipped (offline, md5-checked, provenance in ``data/README.md``):
  * ``digits``      1,797 UCI digits, 8x8, values 0..16 scaled by 1/16;
  * ``mnist-t10k``  the 10,000-image MNIST test set, 28x28, scaled by 1/255.

Read from a folder the user gives (standard on-disk formats):
  * MNIST / Fashion-MNIST / KMNIST in IDX format, gzipped or not;
  * CIFAR-10 / CIFAR-100, "binary version" or "python version" (pickles, read through a
    restricted unpickler that can only rebuild dicts, lists, strings, numbers and numpy arrays).

Files may come from anyone, so every reader checks the sizes a file declares against the bytes
it holds and against ``MAX_FILE_BYTES`` before allocating, decompresses gzip incrementally (never
more than the header declares), and raises one ``ValueError`` (``FileNotFoundError`` for a
missing file) whose message names the file.
"""
import contextlib
import gzip
import hashlib
import io
import pickle
import pickletools
import struct
import zlib
from pathlib import Path

import numpy as np

from .module import check_float_array, check_int

# Largest content (uncompressed) accepted from one data file. The largest standard file,
# CIFAR-100's python-version ``train``, holds about 155 MB.
MAX_FILE_BYTES = 1 << 30
# Deflate expands at most 1032:1 (a 258-byte match in 2 bits), so a gzip file of n bytes holds
# at most 1032 n bytes of content: a larger declared size cannot be honest.
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20

# --------------------------------------------------------------------------------------------
# Shipped data: where it lives, its checksums (md5 of the *uncompressed* content) and sizes
# --------------------------------------------------------------------------------------------
SHIPPED_MD5 = {
    "digits.csv.gz": "a0339c30a8a5312a1b6f9e5c719dcce5",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
SHIPPED_BYTES = {"digits.csv.gz": 264_712, "t10k-images-idx3-ubyte.gz": 7_840_016, "t10k-labels-idx1-ubyte.gz": 10_008}


def shipped_data_dir():
    """The folder holding the shipped files.

    Installed (``pip install .``): ``refsnn/data_files/`` inside the package (setup.py maps the
    top-level ``data/`` folder to the package ``refsnn.data_files``). Source tree or editable
    install: the top-level ``data/`` folder next to ``refsnn/``.
    """
    here = Path(__file__).resolve().parent
    candidates = (here / "data_files", here.parent / "data")
    for candidate in candidates:
        if all((candidate / name).is_file() for name in SHIPPED_MD5):
            return candidate
    raise FileNotFoundError(
        f"shipped data files {sorted(SHIPPED_MD5)} not found in {[str(c) for c in candidates]}; "
        "reinstall refsnn (the wheel carries them as refsnn/data_files)")


# --------------------------------------------------------------------------------------------
# Reading files that may be hostile
# --------------------------------------------------------------------------------------------
def _data_directory(directory, what):
    """``directory`` as a Path, or FileNotFoundError / ValueError saying what is wrong with it."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"{what} directory {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"{what} directory {directory} is not a directory")
    return directory


def _data_file(path):
    """``path`` as a Path if it is a regular file (symlinks followed), else a clear error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a data file")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    return path


class _Source:
    """A data file opened for bounded reading: ``stream`` yields its content, decompressed
    incrementally when the file starts with the gzip magic 1f 8b (whatever its name);
    ``capacity`` is the most content the file can hold."""

    def __init__(self, path, stream, size, gzipped):
        self.path, self.stream, self.size, self.gzipped = path, stream, size, gzipped
        self.capacity = size * _DEFLATE_MAX_RATIO if gzipped else size

    def read(self, n):
        """Up to ``n`` bytes (fewer only at the end of the content)."""
        return self.stream.read(n)

    def read_array(self, nbytes):
        """``nbytes`` bytes into a new uint8 array, in chunks; returns ``(array, bytes read)``."""
        out = np.empty(nbytes, np.uint8)
        view, got = memoryview(out), 0
        while got < nbytes:
            n = self.stream.readinto(view[got:got + _CHUNK])
            if not n:
                break
            got += n
        return out, got

    def at_end(self):
        return self.stream.read(1) == b""

    def describe(self):
        return f"{self.size}-byte gzip file" if self.gzipped else f"{self.size}-byte file"


@contextlib.contextmanager
def _open_source(path):
    """A ``_Source`` for ``path``; read errors (corrupt gzip, I/O) become a ValueError naming the file."""
    path = _data_file(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            size = path.stat().st_size
            if not gzipped:
                yield _Source(path, raw, size, False)
                return
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield _Source(path, stream, size, True)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({err})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None


def _check_declared_size(nbytes, source, what):
    """Refuse content of ``nbytes`` (declared by ``what``) that ``source`` cannot hold or that
    exceeds ``MAX_FILE_BYTES``."""
    if nbytes > source.capacity:
        most = f" (at most {source.capacity} bytes)" if source.gzipped else ""
        raise ValueError(f"{source.path}: truncated or forged: {what}: more than the {source.describe()} "
                         f"can hold{most}")
    if nbytes > MAX_FILE_BYTES:
        raise ValueError(f"{source.path}: {what}: {nbytes} bytes in all, over the {MAX_FILE_BYTES}-byte limit "
                         "for one data file (refsnn.data.MAX_FILE_BYTES)")


def _check_finite_samples(x, name):
    """Raise ValueError naming the first sample (index along axis 0) of ``x`` that holds NaN or Inf."""
    if x.dtype.kind not in "fc" or x.ndim == 0:
        return x
    step = max(1, _CHUNK // max(1, x[0].size)) if len(x) else 1
    for start in range(0, len(x), step):
        finite = np.isfinite(x[start:start + step]).reshape(min(step, len(x) - start), -1).all(axis=1)
        if not finite.all():
            i = start + int(np.argmin(finite))
            what = "NaN" if np.isnan(x[i]).any() else "Inf"
            raise ValueError(f"sample {i} of {name} contains {what}")
    return x


def _check_labels(labels, num_classes, name):
    """Labels must lie in ``[0, num_classes)``: else a ValueError naming the first bad sample."""
    if num_classes is not None and labels.size:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise ValueError(f"{name}: label {labels[bad[0]]} of sample {bad[0]} lies outside [0, {num_classes})")
    return labels


def _read_shipped(path, filename):
    """Uncompressed content of the shipped file ``filename`` stored at ``path`` (gzipped or not),
    after checking its size and md5 against SHIPPED_BYTES and SHIPPED_MD5."""
    size, md5 = SHIPPED_BYTES[filename], SHIPPED_MD5[filename]
    with _open_source(path) as source:
        content = source.read(size + 1)
    if len(content) != size:
        held = f"more than {size}" if len(content) > size else len(content)
        raise ValueError(f"{path}: {held} bytes of content, expected {size} (data/README.md); the file is "
                         f"corrupt or not the shipped {filename}")
    digest = hashlib.md5(content).hexdigest()
    if digest != md5:
        raise ValueError(f"{path}: md5 of the uncompressed content is {digest}, expected "
                         f"{md5} (data/README.md); the file is corrupt or not the shipped one")
    return content


def _find_file(directory, names, what):
    """The first of ``directory/name`` that exists (a directory there is reported by its reader)."""
    for name in names:
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"no {what} in {directory}: looked for {', '.join(names)}")


def load_digits(directory=None):
    """The 1,797 UCI 8x8 digits: images float32 ``[1797, 1, 8, 8]`` = pixel/16 in [0, 1], labels int64.

    ``directory`` defaults to the shipped data folder; it may hold ``digits.csv.gz`` or the
    uncompressed ``digits.csv``. The md5 of the content is checked, so it is always the same set.
    """
    if directory is None:
        path = shipped_data_dir() / "digits.csv.gz"
    else:
        path = _find_file(_data_directory(directory, "digits data"), ["digits.csv.gz", "digits.csv"], "digits file")
    content = _read_shipped(path, "digits.csv.gz")
    table = np.loadtxt(io.StringIO(content.decode("ascii")), delimiter=",", dtype=np.int64, ndmin=2)
    pixels, labels = table[:, :64], table[:, 64]
    images = pixels.reshape(-1, 1, 8, 8).astype(np.float32) / np.float32(16)
    return images, labels


def load_mnist_t10k(directory=None):
    """The MNIST test set: images float32 ``[10000, 1, 28, 28]`` = pixel/255 in [0, 1], labels int64.

    ``directory`` defaults to the shipped data folder; it may hold the two ``t10k`` IDX files
    gzipped or not, also in its ``raw/`` subfolder (torchvision's layout). Both files' md5s are checked.
    """
    files = []
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        if directory is None:
            path = shipped_data_dir() / f"{stem}.gz"
        else:
            path = _find_idx_file(_data_directory(directory, "MNIST data"), stem)
        source = _Source(path, io.BytesIO(_read_shipped(path, f"{stem}.gz")), SHIPPED_BYTES[f"{stem}.gz"], False)
        files.append((_read_idx_source(source), path))
    (images, image_path), (labels, label_path) = files
    return _idx_images_labels(images, labels, image_path, label_path, num_classes=10)


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, KMNIST)
#   header: 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 sizes, then the
#   big-endian payload, prod(sizes) items, row-major.
# --------------------------------------------------------------------------------------------
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Read an IDX file (gzipped or not, told by its magic bytes) into a native-endian array.

    Raises ValueError naming the file for a bad magic number, an unknown type code, a truncated
    header, a payload whose length does not match the dimensions in the header (a gzip stream is
    decompressed only as far as the header says, plus one byte to see that it ends there), a
    declared size over ``MAX_FILE_BYTES``, or a NaN/Inf in a floating-point file (naming the sample).
    """
    with _open_source(path) as source:
        return _read_idx_source(source)


def _read_idx_source(source):
    path = source.path
    head = source.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: {len(head)} bytes, too short for an IDX header (4 bytes at least)")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{head.hex()}: an IDX file starts with two zero bytes")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02X} "
                         f"(known: {', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    sizes = source.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
                         f"file has {4 + len(sizes)}")
    shape = struct.unpack(f">{ndim}I", sizes)
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    # what the header declares, short even for a hostile header of 255 dimensions
    declared = (f"shape {shape if ndim <= 4 else f'({shape[0]}, {shape[1]}, ... {ndim} dimensions)'} of "
                f"{dtype.itemsize}-byte items needs {expected if expected < 10**18 else 'over 10^18'} bytes")
    if not source.gzipped:  # the file size tells the payload size before anything is read
        actual = source.size - header_len
        if actual < expected:
            raise ValueError(f"{path}: truncated IDX payload: {declared}, file has {actual}")
        if actual > expected:
            raise ValueError(f"{path}: {actual - expected} unexpected trailing bytes after the IDX payload: {declared}")
    _check_declared_size(header_len + expected, source, f"the IDX header ({declared} after {header_len} header bytes)")
    payload, got = source.read_array(expected)
    if got < expected:
        raise ValueError(f"{path}: truncated IDX payload: {declared}, the stream ends after {got}")
    if not source.at_end():
        raise ValueError(f"{path}: unexpected trailing bytes after the IDX payload: {declared}, "
                         "the content is longer")
    array = payload.view(dtype)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return _check_finite_samples(array.reshape(shape), str(path))


def _idx_images_labels(images, labels, image_path, label_path, num_classes=None):
    """uint8 ``[N, H, W]`` + integer ``[N]`` -> float32 ``[N, 1, H, W]`` in [0, 1] + int64 ``[N]``."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{image_path}: expected unsigned-byte images [N, H, W], got {images.dtype} {images.shape}")
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(f"{label_path}: expected integer labels [N], got {labels.dtype} {labels.shape}")
    if len(images) == 0:
        raise ValueError(f"{image_path}: the IDX header declares 0 images: an empty data set cannot be trained or evaluated")
    if 0 in images.shape[1:]:
        raise ValueError(f"{image_path}: images of size {images.shape[1]}x{images.shape[2]} are empty")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    _check_labels(labels, num_classes, label_path)
    return images[:, None].astype(np.float32) / np.float32(255), labels.astype(np.int64)


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _find_idx_file(directory, stem):
    """``directory[/raw]/stem[.gz]``, also accepting the mirror spelling ``train-images.idx3-ubyte``."""
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in (directory, directory / "raw"):
        for name in names:
            for path in (folder / name, folder / (name + ".gz")):
                if path.exists():
                    return path
    raise FileNotFoundError(f"no {stem} or {stem}.gz in {directory} (also looked in {directory / 'raw'})")


def load_idx_dataset(directory, kind="train", num_classes=None):
    """Images float32 ``[N, 1, H, W]`` in [0, 1] and labels int64 from the standard IDX file names.

    ``kind="train"`` reads ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]``,
    ``kind="test"`` the ``t10k-...`` pair; looked for in ``directory`` then ``directory/raw``
    (torchvision's layout). Works for MNIST, Fashion-MNIST and KMNIST alike. An empty set, a
    count mismatch, and (given ``num_classes``) a label outside ``[0, num_classes)`` are refused.
    """
    if kind not in _IDX_PREFIX:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    directory = _data_directory(directory, "IDX data")
    prefix = _IDX_PREFIX[kind]
    image_path = _find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    return _idx_images_labels(read_idx(image_path), read_idx(label_path), image_path, label_path, num_classes)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
#   binary version: records of <label byte(s)><3072 pixel bytes> (CIFAR-100: coarse then fine);
#   python version: pickled dicts {b"data": uint8 [N, 3072], b"labels" | b"fine_labels", ...}.
#   Pixels: 1024 red, 1024 green, 1024 blue, each a 32x32 row-major plane.
# --------------------------------------------------------------------------------------------
CIFAR_PIXELS = 3 * 32 * 32

_CIFAR = {
    "cifar10": {
        "subdirs": ("cifar-10-batches-bin", "cifar-10-batches-py"),
        "binary": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
        "python": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "label_bytes": 1,
        "classes": {"fine": 10},
    },
    "cifar100": {
        "subdirs": ("cifar-100-binary", "cifar-100-python"),
        "binary": {"train": ["train.bin"], "test": ["test.bin"]},
        "python": {"train": ["train"], "test": ["test"]},
        "label_bytes": 2,
        "classes": {"coarse": 20, "fine": 100},
    },
}


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """A pickle the restricted unpickler refuses (a global it may not load, a size its bytes do not
    back): an ``UnpicklingError`` and a ``ValueError``, so callers report it as bad input."""


def _latin1_encode(text, encoding):
    """Stand-in for ``_codecs.encode``: Python 3 pickles (protocol < 3) store bytes as latin-1 text."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise RefusedPickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only latin1 text")
    return text.encode("latin1")


def _shape_nbytes(shape, dtype):
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise RefusedPickleError(f"refusing an array shape {shape!r}: expected a tuple of non-negative ints")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


class _PickledArray(np.ndarray):
    """``numpy.ndarray`` as a CIFAR pickle sees it. numpy pickles an array as
    ``_reconstruct(ndarray, (0,), b"b")`` (an empty array) followed by
    ``__setstate__((version, shape, dtype, is_fortran, raw_bytes))``: here the state's shape must
    match the bytes the file carries, checked before numpy allocates, and object arrays are refused."""

    def __new__(cls, *args, **kwargs):
        raise RefusedPickleError("refusing numpy.ndarray(...) called directly: a pickled array is "
                                 "rebuilt from an empty array and its bytes")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise RefusedPickleError(f"refusing an array state of type {type(state).__name__}")
        shape, dtype, _, raw = state[-4:]
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise RefusedPickleError(f"refusing an array of dtype {dtype!r}: only plain numeric arrays")
        nbytes = _shape_nbytes(shape, dtype)
        if not isinstance(raw, bytes) or len(raw) != nbytes:
            size = len(raw) if isinstance(raw, bytes) else type(raw).__name__
            raise RefusedPickleError(f"refusing an array of shape {shape} {dtype} ({nbytes} bytes) whose "
                                     f"data in the file is {size} bytes")
        super().__setstate__(state)


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct``, for the only call a numpy pickle makes: an empty array."""
    if subtype is not _PickledArray or _shape_nbytes(shape, np.dtype("u1")) != 0:
        raise RefusedPickleError(f"refusing _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r}): "
                                 "a pickled array starts empty and gets its data from the file")
    return _RECONSTRUCT(subtype, shape, dtype)


def _frombuffer(buffer, dtype, shape, order):
    """numpy's ``_frombuffer`` (how pickle protocol 5 stores an array), for in-band bytes only."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedPickleError(f"refusing _frombuffer({type(buffer).__name__}, {dtype!r}): only plain "
                                 "numeric arrays with their bytes in the file")
    nbytes = _shape_nbytes(shape, dtype)
    if len(buffer) != nbytes or order not in ("C", "F"):
        raise RefusedPickleError(f"refusing an array of shape {shape} {dtype} ({nbytes} bytes, order {order!r}) "
                                 f"whose data in the file is {len(buffer)} bytes")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


# What a CIFAR pickle needs: numpy array reconstruction (the names changed in numpy 2) and the
# latin-1 helper. Dicts, lists, tuples, bytes, str and numbers need no global at all.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _PickledArray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) raises
    ``RefusedPickleError`` before it is looked up, so a crafted file cannot run code. Arrays are
    rebuilt only from the bytes the file carries (see ``_PickledArray``). Use it through
    ``read_cifar_pickle``, which first checks every length and memo index the stream declares.
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickleError(
                f"refusing to load global {module}.{name}: a CIFAR batch only needs dicts, lists, "
                "bytes, str, ints and numpy arrays") from None

    def persistent_load(self, pid):
        raise RefusedPickleError("refusing a persistent id: a CIFAR batch has none")


_PICKLE_OPS = {op.code.encode("latin1")[0]: op for op in pickletools.opcodes}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_COUNTED = {pickletools.TAKEN_FROM_ARGUMENT1: "<B", pickletools.TAKEN_FROM_ARGUMENT4: "<i",
            pickletools.TAKEN_FROM_ARGUMENT4U: "<I", pickletools.TAKEN_FROM_ARGUMENT8U: "<Q"}
_MAX_PICKLE_OPS = 10_000_000  # a CIFAR-100 train batch has about 500,000


def _check_pickle_sizes(raw):
    """Walk the opcodes of the pickle ``raw`` without building anything: every length it declares
    must fit in the bytes that follow, and every memo index must be below the number of opcodes
    read so far (Python's C unpickler allocates a declared length, or a memo of the declared index,
    before reading). Returns nothing; raises RefusedPickleError or ValueError."""
    pos, ops, end = 0, 0, len(raw)
    while True:
        if pos >= end:
            raise ValueError("the stream ends before its STOP opcode (truncated)")
        op = _PICKLE_OPS.get(raw[pos])
        if op is None:
            raise ValueError(f"unknown pickle opcode 0x{raw[pos]:02x} at byte {pos}: not a pickle")
        pos, ops = pos + 1, ops + 1
        if ops > _MAX_PICKLE_OPS:
            raise RefusedPickleError(f"refusing more than {_MAX_PICKLE_OPS} pickle operations")
        if op.name == "STOP":
            return
        n = op.arg.n if op.arg is not None else 0
        if n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if op.arg is pickletools.stringnl_noescape_pair else 1):
                newline = raw.find(b"\n", pos)
                if newline < 0:
                    raise ValueError(f"{op.name} at byte {pos - 1} has no end of line (truncated)")
                arg, pos = raw[pos:newline], newline + 1
        elif n in _COUNTED:
            fmt = _COUNTED[n]
            width = struct.calcsize(fmt)
            if pos + width > end:
                raise ValueError(f"{op.name} at byte {pos - 1} is truncated")
            (n,) = struct.unpack_from(fmt, raw, pos)
            pos += width
            if n < 0 or pos + n > end:
                raise RefusedPickleError(f"refusing {op.name} at byte {pos - width - 1}: it declares {n} bytes, "
                                         f"the file has {end - pos} left")
            pos += n
        else:
            arg, pos = raw[pos:pos + n], pos + n
        if op.name == "FRAME" and int.from_bytes(arg, "little") > end - pos:
            raise RefusedPickleError(f"refusing a frame of {int.from_bytes(arg, 'little')} bytes at byte {pos - 9}: "
                                     f"the file has {end - pos} left")
        if op.name in _PUT_OPS:
            index = int(arg) if op.name == "PUT" else int.from_bytes(arg, "little")
            if index >= ops:
                raise RefusedPickleError(f"refusing memo index {index} at operation {ops}: a pickle numbers "
                                         "its memo entries in order")


def read_cifar_pickle(path):
    """A CIFAR "python version" batch as a dict with str keys (``"data"``, ``"labels"``...).

    Loaded with ``encoding="bytes"`` (the files are Python 2 pickles, so their keys arrive as
    ``b"data"``...) through ``RestrictedUnpickler``, after ``_check_pickle_sizes``; bytes keys are
    decoded to str. A refused pickle raises ``RefusedPickleError`` naming the file and what was refused.
    """
    path = _data_file(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit for one data file "
                         "(refsnn.data.MAX_FILE_BYTES)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        _check_pickle_sizes(raw)
        batch = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedPickleError as err:
        raise RefusedPickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise ValueError(f"{path}: not a valid CIFAR pickle ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v.view(np.ndarray) if isinstance(v, np.ndarray) else v
            for k, v in batch.items()}


def _cifar_pickle_batch(path, label_key, num_classes):
    """pixels uint8 ``[N, 3072]`` and labels int64 ``[N]`` from one python-version batch."""
    batch = read_cifar_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(map(str, batch))})")
    pixels = batch["data"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != CIFAR_PIXELS:
        raise ValueError(f"{path}: 'data' must be a uint8 array [N, {CIFAR_PIXELS}], got "
                         f"{getattr(pixels, 'dtype', type(pixels).__name__)} {getattr(pixels, 'shape', '')}")
    if len(pixels) == 0:
        raise ValueError(f"{path}: holds no images: an empty data set cannot be trained or evaluated")
    try:
        labels = np.asarray(batch[label_key])
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"{path}: {label_key!r} is not a list of integers ({err})") from None
    if labels.dtype.kind not in "iu" or labels.shape != (len(pixels),):
        raise ValueError(f"{path}: {label_key!r} must hold {len(pixels)} integers, got {labels.dtype} {labels.shape}")
    return pixels, _check_labels(labels, num_classes, f"{path} {label_key!r}").astype(np.int64)


def _cifar_binary_batch(path, label_bytes, label_index, num_classes):
    """pixels uint8 ``[N, 3072]`` and labels int64 ``[N]`` from one binary-version batch."""
    record = label_bytes + CIFAR_PIXELS
    with _open_source(path) as source:
        if source.gzipped:
            raise ValueError(f"{path}: a gzip file; a CIFAR binary batch is stored uncompressed (extract the archive)")
        if source.size == 0 or source.size % record:
            raise ValueError(f"{path}: {source.size} bytes is not a whole number of {record}-byte CIFAR records "
                             "(truncated or not a CIFAR binary batch)")
        _check_declared_size(source.size, source, f"{source.size // record} CIFAR records")
        raw, got = source.read_array(source.size)
    if got != source.size:
        raise ValueError(f"{path}: the file shrank while being read ({got} of {source.size} bytes)")
    records = raw.reshape(-1, record)
    labels = _check_labels(records[:, label_index], num_classes, path)
    return records[:, label_bytes:].copy(), labels.astype(np.int64)


def load_cifar(directory, name="cifar10", kind="train", label_type="fine"):
    """CIFAR-10/100 images float32 ``[N, 3, 32, 32]`` in [0, 1] and labels int64.

    Looks in ``directory`` and in its standard subfolders (``cifar-10-batches-bin``,
    ``cifar-10-batches-py``, ``cifar-100-binary``, ``cifar-100-python``) for a complete set of
    binary-version files, then of python-version files, and uses the first it finds.
    ``label_type``: CIFAR-100 has "fine" (100 classes) and "coarse" (20) labels; CIFAR-10 only "fine".
    """
    if name not in _CIFAR:
        raise ValueError(f"name must be one of {sorted(_CIFAR)}, got {name!r}")
    if kind not in ("train", "test"):
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    spec = _CIFAR[name]
    if label_type not in spec["classes"]:
        raise ValueError(f"label_type for {name} must be one of {sorted(spec['classes'])}, got {label_type!r}")
    directory = _data_directory(directory, "CIFAR data")
    num_classes = spec["classes"][label_type]

    for folder in (directory, *(directory / sub for sub in spec["subdirs"])):
        for version in ("binary", "python"):
            paths = [folder / f for f in spec[version][kind]]
            if all(p.exists() for p in paths):
                if version == "binary":
                    # CIFAR-100 records start with the coarse byte, then the fine byte.
                    label_index = 0 if name == "cifar10" or label_type == "coarse" else 1
                    parts = [_cifar_binary_batch(p, spec["label_bytes"], label_index, num_classes) for p in paths]
                else:
                    key = "labels" if name == "cifar10" else f"{label_type}_labels"
                    parts = [_cifar_pickle_batch(p, key, num_classes) for p in paths]
                pixels = np.concatenate([p for p, _ in parts])
                labels = np.concatenate([y for _, y in parts])
                images = pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)
                return images, labels
    raise FileNotFoundError(
        f"no complete {name} {kind} set in {directory} or its subfolders {list(spec['subdirs'])}: looked for "
        f"binary version {spec['binary'][kind]} or python version {spec['python'][kind]}")


# --------------------------------------------------------------------------------------------
# Normalization and splits
# --------------------------------------------------------------------------------------------
def normalize(images, mean, std):
    """Per-channel ``(images - mean[c]) / std[c]`` for images ``[..., C, H, W]``; keeps the dtype."""
    images = _check_finite_samples(check_float_array(images, "images", min_ndim=3), "images")
    channels = images.shape[-3]
    mean = np.asarray(mean, dtype=images.dtype).reshape(-1)
    std = np.asarray(std, dtype=images.dtype).reshape(-1)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"mean and std need one value per channel ({channels}), got {mean.size} and {std.size}")
    if not np.all(np.isfinite(mean)):
        raise ValueError(f"mean must be finite, got {mean}")
    if not np.all((std > 0) & np.isfinite(std)):
        raise ValueError(f"std must be positive and finite, got {std}")
    return (images - mean[:, None, None]) / std[:, None, None]


def train_test_split(images, labels, n_train=None, fraction=None, seed=0):
    """Deterministic random split -> ``(train_x, train_y, test_x, test_y)``.

    Give exactly one of ``n_train`` (count) or ``fraction`` (train share, rounded down). The
    permutation is ``np.random.default_rng(seed).permutation(N)``: its first ``n_train`` indices
    train, the rest test.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if (n_train is None) == (fraction is None):
        raise ValueError("give exactly one of n_train or fraction")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
        n_train = int(np.floor(fraction * n))
    if not 0 < n_train < n:
        raise ValueError(f"n_train must lie in [1, {n - 1}] for {n} samples, got {n_train}")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:n_train], order[n_train:]
    return images[train], labels[train], images[test], labels[test]


def digits_split(seed=0, directory=None):
    """The fixed digits split: 1,437 train / 360 test, permutation ``default_rng(seed)`` (seed 0).
    ``directory``: see ``load_digits``."""
    images, labels = load_digits(directory)
    return train_test_split(images, labels, n_train=1437, seed=seed)


def mnist_t10k_split(directory=None):
    """The fixed MNIST split used by the trainer: the shipped 10,000-image MNIST *test* set cut
    in file order, the first 8,000 images train and the last 2,000 test (no shuffling).
    ``directory``: see ``load_mnist_t10k``.
    """
    images, labels = load_mnist_t10k(directory)
    return images[:8000], labels[:8000], images[8000:], labels[8000:]


# --------------------------------------------------------------------------------------------
# Mini-batches with reproducible shuffling and augmentation
# --------------------------------------------------------------------------------------------
# Stream tags in the keys [seed, epoch, tag, ...]. NumPy's SeedSequence drops trailing zero words
# (default_rng([s, e, 0]) is default_rng([s, e]), and at e = 0 default_rng(s), the model's
# initialization), so no tag is 0: 1 augmentation, 2 and 3 Poisson draws (refsnn.train), 4 order.
_SHUFFLE_STREAM, _AUGMENT_STREAM = 4, 1


def random_crop_flip(images, rng, padding=4):
    """Zero-pad each side by ``padding``, crop a random window of the original size, then flip
    horizontally with probability 1/2 (torchvision's ``RandomCrop(32, padding=4)`` +
    ``RandomHorizontalFlip()`` for CIFAR). ``images``: ``[N, C, H, W]``; returns a new array.
    """
    padding = check_int(padding, "padding", low=0)
    n, _, height, width = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    top = rng.integers(0, 2 * padding + 1, size=n)
    left = rng.integers(0, 2 * padding + 1, size=n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        window = padded[i, :, top[i]:top[i] + height, left[i]:left[i] + width]
        out[i] = window[:, :, ::-1] if flip[i] else window
    return out


_AUGMENTATIONS = {"crop_flip": random_crop_flip}


def augmentation(augment, image_shape):
    """The function ``f(x, rng) -> x`` for ``augment`` (None, a name in ``_AUGMENTATIONS`` or a
    callable) on images of shape ``image_shape`` (``(C, H, W)``), or a clear error.

    ``"crop_flip"`` is CIFAR's recipe (4-pixel padding, random crop, horizontal flip) and is refused
    on images smaller than 32x32: on the 8x8 digits a 4-pixel shift moves half the digit off the
    image, and a flip turns a digit into another shape. For other sizes pass a callable, e.g.
    ``lambda x, rng: random_crop_flip(x, rng, padding=1)``.
    """
    if augment is None or callable(augment):
        return augment
    if not isinstance(augment, str):
        raise TypeError(f"augment must be None, a string or a callable, got {type(augment).__name__}")
    if augment not in _AUGMENTATIONS:
        raise ValueError(f"augment must be None, a callable or one of {sorted(_AUGMENTATIONS)}, got {augment!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or min(shape[1:]) < 32:
        raise ValueError(f"augment 'crop_flip' is CIFAR's augmentation (4-pixel padding, random crop, horizontal flip) "
                         f"for images of at least 32x32 [C, H, W], got images of shape {shape}: on small images such "
                         "as the 8x8 digits it shifts half the image away and a flip changes a digit; train without "
                         "augmentation")
    return _AUGMENTATIONS[augment]


class Batches:
    """Iterate over ``(x, y)`` mini-batches, reproducibly.

    The order of epoch ``e`` is ``default_rng([seed, e, 4]).permutation(N)``, a pure function of
    ``(seed, e)``: call ``set_epoch(e)`` before each epoch (iterating does not advance it), and a
    run resumed at epoch ``e`` sees exactly the batches it would have seen. Augmentation of batch
    ``b`` draws from ``default_rng([seed, e, 1, b])``, so it is reproducible too.

    ``augment``: None, ``"crop_flip"`` (see ``augmentation``) or a callable ``f(x, rng) -> x``.
    Batches are copies; the last one is shorter unless ``drop_last``. Empty data and floating-point
    images holding NaN or Inf are refused here, naming the first such sample.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, seed=0, drop_last=False, augment=None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(images) == 0:
            raise ValueError("Batches got no samples: an empty data set cannot be trained or evaluated")
        self.batch_size = check_int(batch_size, "batch_size", low=0)
        if self.batch_size == 0:
            raise ValueError("batch_size must be positive")
        self.augment = augmentation(augment, np.shape(images)[1:])
        self.images, self.labels = _check_finite_samples(np.asarray(images), "images"), labels
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = check_int(seed, "seed", low=0)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = check_int(epoch, "epoch", low=0)

    def order(self):
        """Sample indices of the current epoch, in the order they are served."""
        n = len(self.images)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch, _SHUFFLE_STREAM]).permutation(n)

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self.order()
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.augment is not None:
                x = self.augment(x, np.random.default_rng([self.seed, self.epoch, _AUGMENT_STREAM, b]))
            yield x, y


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
_IDX_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}


def get_dataset(name, data_dir=None, T=None, binning="time", downsample=1):
    """``(train_x, train_y, test_x, test_y, info)`` for a dataset name.

    * ``"digits"``, ``"mnist-t10k"``: shipped (``digits_split()``, ``mnist_t10k_split()``). With
      ``data_dir``, the same files are read from there instead of the package (``digits.csv[.gz]``;
      ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``, also in ``data_dir/MNIST/raw``
      or ``data_dir/raw``), md5-checked, so the set and its split are always the same.
    * ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``: IDX files in ``data_dir`` (or in
      torchvision's ``data_dir/MNIST/raw``, ``FashionMNIST/raw``, ``KMNIST/raw``).
    * ``"cifar10"``, ``"cifar100"`` (fine labels): see ``load_cifar``.
    * event data (``refsnn.events.EVENT_DATASETS``: ``"nmnist"``, ``"shd"``, ``"ssc"``,
      ``"dvs-gesture"``, ``"cifar10-dvs"``): their files in ``data_dir``, binned into ``T`` uint16
      count frames per sample (``binning``, ``downsample``: see ``refsnn.events.load_event_dataset``).

    ``info``: ``name``, ``num_classes``, ``input_shape`` (C, H, W), ``n_train``, ``n_test``.
    """
    from .events import EVENT_DATASETS, load_event_dataset
    key = str(name).lower().replace("_", "-")
    if key in EVENT_DATASETS:
        if data_dir is None or T is None:
            raise ValueError(f"dataset {key!r} is event data: pass data_dir=<folder holding its files> and T=<number "
                             "of frames per sample> (docs/events.md)")
        return load_event_dataset(key, data_dir, T, binning, downsample)
    known = ["digits", "mnist-t10k", *_IDX_SETS, *_CIFAR, *EVENT_DATASETS]
    if key not in known:
        raise ValueError(f"unknown dataset {name!r}; known: {known}")
    num_classes = 100 if key == "cifar100" else 10
    if data_dir is None and key not in ("digits", "mnist-t10k"):
        files = ("train-images-idx3-ubyte[.gz] and the other IDX files" if key in _IDX_SETS
                 else f"the CIFAR batches (e.g. the extracted {_CIFAR[key]['subdirs'][1]}/ folder)")
        raise ValueError(f"dataset {key!r} is not shipped with refsnn: pass data_dir=<folder holding {files}>")
    if data_dir is not None:
        data_dir = _data_directory(data_dir, f"{key} data")
    if key == "digits":
        train_x, train_y, test_x, test_y = digits_split(directory=data_dir)
    elif key == "mnist-t10k":
        folder = data_dir / "MNIST" if data_dir is not None and (data_dir / "MNIST").is_dir() else data_dir
        train_x, train_y, test_x, test_y = mnist_t10k_split(folder)
    elif key in _IDX_SETS:
        folder = data_dir / _IDX_SETS[key] if (data_dir / _IDX_SETS[key]).is_dir() else data_dir
        train_x, train_y = load_idx_dataset(folder, "train", num_classes)
        test_x, test_y = load_idx_dataset(folder, "test", num_classes)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise ValueError(f"{key} in {folder}: train images are {train_x.shape[2]}x{train_x.shape[3]} "
                             f"but test images {test_x.shape[2]}x{test_x.shape[3]}")
    else:
        train_x, train_y = load_cifar(data_dir, key, "train")
        test_x, test_y = load_cifar(data_dir, key, "test")
    info = {"name": key, "num_classes": num_classes, "input_shape": tuple(train_x.shape[1:]),
            "n_train": len(train_x), "n_test": len(test_x)}
    return train_x, train_y, test_x, test_y, info
