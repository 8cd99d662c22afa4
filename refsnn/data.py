"""Data: the shipped sets, IDX and CIFAR readers, splits, batches and spike encoders.

Every loader returns images as float32 ``[N, C, H, W]`` in ``[0, 1]`` and labels as int64 ``[N]``.
Encoders turn a batch ``[N, ...]`` into the time-major input ``[T, N, ...]`` the networks take.

Shipped (offline, md5-checked, provenance in ``data/README.md``):
  * ``digits``      1,797 UCI digits, 8x8, values 0..16 scaled by 1/16;
  * ``mnist-t10k``  the 10,000-image MNIST test set, 28x28, scaled by 1/255.

Read from a folder the user gives (standard on-disk formats):
  * MNIST / Fashion-MNIST / KMNIST in IDX format, gzipped or not;
  * CIFAR-10 / CIFAR-100, "binary version" or "python version" (pickles, read through a
    restricted unpickler that can only rebuild dicts, lists, strings, numbers and numpy arrays).
"""
import gzip
import hashlib
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from .module import check_finite, check_float_array

# --------------------------------------------------------------------------------------------
# Shipped data: where it lives and its checksums (md5 of the *uncompressed* content)
# --------------------------------------------------------------------------------------------
SHIPPED_MD5 = {
    "digits.csv.gz": "a0339c30a8a5312a1b6f9e5c719dcce5",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


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


def _read_maybe_gzip(path):
    """File bytes, decompressed when they start with the gzip magic 1f 8b (whatever the name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({err})") from None


def _read_shipped(filename, directory=None):
    """Uncompressed content of a shipped file, after checking its md5 against SHIPPED_MD5."""
    path = Path(directory if directory is not None else shipped_data_dir()) / filename
    content = _read_maybe_gzip(path)
    md5 = hashlib.md5(content).hexdigest()
    if md5 != SHIPPED_MD5[filename]:
        raise ValueError(f"{path}: md5 of the uncompressed content is {md5}, expected "
                         f"{SHIPPED_MD5[filename]} (data/README.md); the file is corrupt or not the shipped one")
    return content, path


def load_digits(directory=None):
    """The 1,797 UCI 8x8 digits: images float32 ``[1797, 1, 8, 8]`` = pixel/16 in [0, 1], labels int64.

    ``directory`` defaults to the shipped data folder; the md5 of ``digits.csv.gz`` is checked.
    """
    content, path = _read_shipped("digits.csv.gz", directory)
    table = np.loadtxt(io.StringIO(content.decode("ascii")), delimiter=",", dtype=np.int64, ndmin=2)
    pixels, labels = table[:, :64], table[:, 64]
    images = pixels.reshape(-1, 1, 8, 8).astype(np.float32) / np.float32(16)
    return images, labels


def load_mnist_t10k(directory=None):
    """The MNIST test set: images float32 ``[10000, 1, 28, 28]`` = pixel/255 in [0, 1], labels int64.

    ``directory`` defaults to the shipped data folder; both files' md5s are checked.
    """
    image_bytes, image_path = _read_shipped("t10k-images-idx3-ubyte.gz", directory)
    label_bytes, label_path = _read_shipped("t10k-labels-idx1-ubyte.gz", directory)
    return _idx_images_labels(_parse_idx(image_bytes, image_path), _parse_idx(label_bytes, label_path),
                              image_path, label_path)


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
    header, or a payload whose length does not match the dimensions in the header.
    """
    return _parse_idx(_read_maybe_gzip(path), Path(path))


def _parse_idx(data, path):
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes at least)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02X} "
                         f"(known: {', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, file has {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise ValueError(f"{path}: truncated IDX payload: shape {shape} of {dtype.itemsize}-byte items needs "
                         f"{expected} bytes, file has {actual}")
    if actual > expected:
        raise ValueError(f"{path}: {actual - expected} unexpected trailing bytes after the IDX payload of shape {shape}")
    payload = np.frombuffer(data, dtype=dtype, offset=header_len)
    return payload.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _idx_images_labels(images, labels, image_path, label_path):
    """uint8 ``[N, H, W]`` + integer ``[N]`` -> float32 ``[N, 1, H, W]`` in [0, 1] + int64 ``[N]``."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{image_path}: expected unsigned-byte images [N, H, W], got {images.dtype} {images.shape}")
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(f"{label_path}: expected integer labels [N], got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    return images[:, None].astype(np.float32) / np.float32(255), labels.astype(np.int64)


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _find_idx_file(directory, stem):
    """``directory[/raw]/stem[.gz]``, also accepting the mirror spelling ``train-images.idx3-ubyte``."""
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in (directory, directory / "raw"):
        for name in names:
            for path in (folder / name, folder / (name + ".gz")):
                if path.is_file():
                    return path
    raise FileNotFoundError(f"no {stem} or {stem}.gz in {directory} (also looked in {directory / 'raw'})")


def load_idx_dataset(directory, kind="train"):
    """Images float32 ``[N, 1, H, W]`` in [0, 1] and labels int64 from the standard IDX file names.

    ``kind="train"`` reads ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]``,
    ``kind="test"`` the ``t10k-...`` pair; looked for in ``directory`` then ``directory/raw``
    (torchvision's layout). Works for MNIST, Fashion-MNIST and KMNIST alike.
    """
    if kind not in _IDX_PREFIX:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX data directory {directory} does not exist")
    prefix = _IDX_PREFIX[kind]
    image_path = _find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    return _idx_images_labels(read_idx(image_path), read_idx(label_path), image_path, label_path)


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


def _latin1_encode(text, encoding):
    """Stand-in for ``_codecs.encode``: Python 3 pickles (protocol < 3) store bytes as latin-1 text."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only latin1 text")
    return text.encode("latin1")


# What a CIFAR pickle needs: numpy array reconstruction (the name changed in numpy 2) and the
# latin-1 helper. Dicts, lists, tuples, bytes, str and numbers need no global at all.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) raises
    ``pickle.UnpicklingError`` before it is looked up, so a crafted file cannot run code.
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR batch only needs dicts, lists, "
                "bytes, str, ints and numpy arrays") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: a CIFAR batch has none")


def read_cifar_pickle(path):
    """A CIFAR "python version" batch as a dict with str keys (``"data"``, ``"labels"``...).

    Loaded with ``encoding="bytes"`` (the files are Python 2 pickles, so their keys arrive as
    ``b"data"``...) through ``RestrictedUnpickler``; bytes keys are decoded to str.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        try:
            batch = RestrictedUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f"{path}: {err}") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise ValueError(f"{path}: not a valid CIFAR pickle ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar_pickle_batch(path, label_key):
    """pixels uint8 ``[N, 3072]`` and labels int64 ``[N]`` from one python-version batch."""
    batch = read_cifar_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(map(str, batch))})")
    pixels = batch["data"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != CIFAR_PIXELS:
        raise ValueError(f"{path}: 'data' must be a uint8 array [N, {CIFAR_PIXELS}], got "
                         f"{getattr(pixels, 'dtype', type(pixels).__name__)} {getattr(pixels, 'shape', '')}")
    labels = np.asarray(batch[label_key])
    if labels.dtype.kind not in "iu" or labels.shape != (len(pixels),):
        raise ValueError(f"{path}: {label_key!r} must hold {len(pixels)} integers, got {labels.dtype} {labels.shape}")
    return pixels, labels.astype(np.int64)


def _cifar_binary_batch(path, label_bytes, label_index):
    """pixels uint8 ``[N, 3072]`` and labels int64 ``[N]`` from one binary-version batch."""
    raw = Path(path).read_bytes()
    record = label_bytes + CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of {record}-byte CIFAR records "
                         "(truncated or not a CIFAR binary batch)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    return records[:, label_bytes:].copy(), records[:, label_index].astype(np.int64)


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
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR data directory {directory} does not exist")

    for folder in (directory, *(directory / sub for sub in spec["subdirs"])):
        for version in ("binary", "python"):
            paths = [folder / f for f in spec[version][kind]]
            if all(p.is_file() for p in paths):
                if version == "binary":
                    # CIFAR-100 records start with the coarse byte, then the fine byte.
                    label_index = 0 if name == "cifar10" or label_type == "coarse" else 1
                    parts = [_cifar_binary_batch(p, spec["label_bytes"], label_index) for p in paths]
                else:
                    key = "labels" if name == "cifar10" else f"{label_type}_labels"
                    parts = [_cifar_pickle_batch(p, key) for p in paths]
                pixels = np.concatenate([p for p, _ in parts])
                labels = np.concatenate([y for _, y in parts])
                num_classes = spec["classes"][label_type]
                if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                    raise ValueError(f"{folder}: {name} {label_type} labels must lie in [0, {num_classes}), "
                                     f"got [{labels.min()}, {labels.max()}]")
                images = pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)
                return images, labels
    raise FileNotFoundError(
        f"no complete {name} {kind} set in {directory} or its subfolders {list(spec['subdirs'])}: looked for "
        f"binary version {spec['binary'][kind]} or python version {spec['python'][kind]}")


# --------------------------------------------------------------------------------------------
# Normalisation and splits
# --------------------------------------------------------------------------------------------
def normalize(images, mean, std):
    """Per-channel ``(images - mean[c]) / std[c]`` for images ``[..., C, H, W]``; keeps the dtype."""
    images = check_float_array(images, "images", min_ndim=3)
    channels = images.shape[-3]
    mean = np.asarray(mean, dtype=images.dtype).reshape(-1)
    std = np.asarray(std, dtype=images.dtype).reshape(-1)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"mean and std need one value per channel ({channels}), got {mean.size} and {std.size}")
    if not np.all(std > 0):
        raise ValueError(f"std must be positive, got {std}")
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


def digits_split(seed=0):
    """The fixed digits split: 1,437 train / 360 test, permutation ``default_rng(seed)`` (seed 0)."""
    images, labels = load_digits()
    return train_test_split(images, labels, n_train=1437, seed=seed)


def mnist_t10k_split():
    """The fixed MNIST split used by the trainer: the shipped 10,000-image MNIST *test* set cut
    in file order, the first 8,000 images train and the last 2,000 test (no shuffling).
    """
    images, labels = load_mnist_t10k()
    return images[:8000], labels[:8000], images[8000:], labels[8000:]


# --------------------------------------------------------------------------------------------
# Mini-batches with reproducible shuffling and augmentation
# --------------------------------------------------------------------------------------------
_SHUFFLE_STREAM, _AUGMENT_STREAM = 0, 1


def _non_negative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def random_crop_flip(images, rng, padding=4):
    """Zero-pad each side by ``padding``, crop a random window of the original size, then flip
    horizontally with probability 1/2 (torchvision's ``RandomCrop(32, padding=4)`` +
    ``RandomHorizontalFlip()`` for CIFAR). ``images``: ``[N, C, H, W]``; returns a new array.
    """
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


class Batches:
    """Iterate over ``(x, y)`` mini-batches, reproducibly.

    The order of epoch ``e`` is ``default_rng([seed, e, 0]).permutation(N)``, a pure function of
    ``(seed, e)``: call ``set_epoch(e)`` before each epoch (iterating does not advance it), and a
    run resumed at epoch ``e`` sees exactly the batches it would have seen. Augmentation of batch
    ``b`` draws from ``default_rng([seed, e, 1, b])``, so it is reproducible too.

    ``augment``: None, ``"crop_flip"`` (see ``random_crop_flip``) or a callable ``f(x, rng) -> x``.
    Batches are copies; the last one is shorter unless ``drop_last``.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, seed=0, drop_last=False, augment=None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.batch_size = _non_negative_int(batch_size, "batch_size")
        if self.batch_size == 0:
            raise ValueError("batch_size must be positive")
        if isinstance(augment, str):
            if augment not in _AUGMENTATIONS:
                raise ValueError(f"augment must be None, a callable or one of {sorted(_AUGMENTATIONS)}, got {augment!r}")
            augment = _AUGMENTATIONS[augment]
        elif augment is not None and not callable(augment):
            raise TypeError(f"augment must be None, a string or a callable, got {type(augment).__name__}")
        self.images, self.labels = images, labels
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.seed = _non_negative_int(seed, "seed")
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = _non_negative_int(epoch, "epoch")

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
# Encoders: [N, ...] -> [T, N, ...]
# --------------------------------------------------------------------------------------------
def direct(x, T):
    """Direct (analog) encoding: the same frame at each of the ``T`` steps, as a contiguous array."""
    x = check_float_array(x, "x")
    T = _non_negative_int(T, "T")
    if T == 0:
        raise ValueError("T must be positive")
    return np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape))


def poisson(x, T, rng=None):
    """Rate (Bernoulli) encoding: ``s[t] = 1`` with probability ``clip(x, 0, 1)``, independently per
    step and element, from ``rng`` (``None`` -> ``default_rng(0)``). Same dtype as ``x``.
    """
    x = check_finite(check_float_array(x, "x"), "x")
    T = _non_negative_int(T, "T")
    if T == 0:
        raise ValueError("T must be positive")
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    rate = np.clip(x, 0, 1)
    return (rng.random((T,) + x.shape, dtype=x.dtype) < rate).astype(x.dtype)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
_IDX_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}


def get_dataset(name, data_dir=None):
    """``(train_x, train_y, test_x, test_y, info)`` for a dataset name.

    * ``"digits"``, ``"mnist-t10k"``: shipped (``digits_split()``, ``mnist_t10k_split()``);
      ``data_dir`` is not used.
    * ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``: IDX files in ``data_dir`` (or in
      torchvision's ``data_dir/MNIST/raw``, ``FashionMNIST/raw``, ``KMNIST/raw``).
    * ``"cifar10"``, ``"cifar100"`` (fine labels): see ``load_cifar``.

    ``info``: ``name``, ``num_classes``, ``input_shape`` (C, H, W), ``n_train``, ``n_test``.
    """
    key = str(name).lower().replace("_", "-")
    known = ["digits", "mnist-t10k", *_IDX_SETS, *_CIFAR]
    if key not in known:
        raise ValueError(f"unknown dataset {name!r}; known: {known}")
    if key == "digits":
        train_x, train_y, test_x, test_y = digits_split()
    elif key == "mnist-t10k":
        train_x, train_y, test_x, test_y = mnist_t10k_split()
    else:
        if data_dir is None:
            files = ("train-images-idx3-ubyte[.gz] and the other IDX files" if key in _IDX_SETS
                     else f"the CIFAR batches (e.g. the extracted {_CIFAR[key]['subdirs'][1]}/ folder)")
            raise ValueError(f"dataset {key!r} is not shipped with refsnn: pass data_dir=<folder holding {files}>")
        data_dir = Path(data_dir)
        if key in _IDX_SETS:
            folder = data_dir / _IDX_SETS[key] if (data_dir / _IDX_SETS[key]).is_dir() else data_dir
            train_x, train_y = load_idx_dataset(folder, "train")
            test_x, test_y = load_idx_dataset(folder, "test")
        else:
            train_x, train_y = load_cifar(data_dir, key, "train")
            test_x, test_y = load_cifar(data_dir, key, "test")
    num_classes = 100 if key == "cifar100" else 10
    info = {"name": key, "num_classes": num_classes, "input_shape": tuple(train_x.shape[1:]),
            "n_train": len(train_x), "n_test": len(test_x)}
    return train_x, train_y, test_x, test_y, info
