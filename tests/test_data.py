"""Data layer: real file formats written here byte by byte, the shipped sets, splits, batches, encoders.

The IDX and CIFAR files are produced by writers in this file that follow the format
specifications (struct/pickle), never by refsnn, so a reader bug cannot cancel out.
"""
import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from refsnn import data, encoding

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Writers for the real on-disk formats
# ---------------------------------------------------------------------------------------------
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array):
    """IDX: 0, 0, type code, ndim; big-endian uint32 sizes; big-endian payload."""
    code = IDX_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, compress):
    content = idx_bytes(array)
    Path(path).write_bytes(gzip.compress(content) if compress else content)
    return path


def random_array(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype) * 1e3


def cifar_record_bytes(pixels, *label_columns):
    """Binary version: per image, its label byte(s) then 3072 pixel bytes."""
    return np.concatenate([np.stack(label_columns, 1).astype(np.uint8), pixels], 1).tobytes()


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING opcodes), as the real CIFAR pickles do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def reducer_override(self, obj):
        if isinstance(obj, np.dtype):  # numpy 1.x under Python 2 pickled its dtype state as str
            fn, args, state = obj.__reduce__()
            as_str = lambda v: v.encode() if isinstance(v, str) else v
            return fn, tuple(map(as_str, args)), tuple(map(as_str, state))
        return NotImplemented


def dump_cifar_pickle(path, batch, python2):
    """A dict with bytes keys, protocol 2, like ``cifar-10-batches-py/data_batch_1``."""
    if python2:
        buffer = io.BytesIO()
        Python2Pickler(buffer, protocol=2).dump(batch)
        # numpy 1.x (Python 2 era) named the reconstructor numpy.core.multiarray._reconstruct.
        Path(path).write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    else:
        with open(path, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def cifar_batch(rng, n, cifar100=False):
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    fine = rng.integers(0, 100 if cifar100 else 10, size=n)
    coarse = rng.integers(0, 20, size=n)
    return pixels, fine, coarse


def as_images(pixels):
    return pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip_every_dtype(tmp_path, dtype, compress):
    rng = np.random.default_rng(1)
    for shape in [(7,), (3, 5, 4), (2, 1, 3, 2)]:
        expected = random_array(dtype, shape, rng)
        path = write_idx(tmp_path / f"x{len(shape)}", expected, compress)
        got = data.read_idx(path)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative
        assert got.shape == shape
        np.testing.assert_array_equal(got, expected)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    expected = np.arange(24, dtype=np.int16).reshape(2, 3, 4) * 1000 - 7000
    gz_without_suffix = write_idx(tmp_path / "images-idx3-ubyte", expected, compress=True)
    raw_with_suffix = write_idx(tmp_path / "images-idx3-ubyte.gz", expected, compress=False)
    np.testing.assert_array_equal(data.read_idx(gz_without_suffix), expected)
    np.testing.assert_array_equal(data.read_idx(raw_with_suffix), expected)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_corrupt_files(tmp_path, compress):
    good = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    cases = {
        "truncated payload": (good[:-1], "truncated IDX payload"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "bad magic": (b"\x01\x00" + good[2:], "magic"),
        "unknown dtype": (good[:2] + b"\x0a" + good[3:], "type code 0x0A"),
        "truncated header": (good[:9], "truncated IDX header"),
        "empty": (b"", "too short"),
    }
    for what, (content, message) in cases.items():
        path = tmp_path / what.replace(" ", "_")
        path.write_bytes(gzip.compress(content) if compress else content)
        with pytest.raises(ValueError, match=message) as err:
            data.read_idx(path)
        assert path.name in str(err.value), what


def test_read_idx_rejects_truncated_gzip_stream(tmp_path):
    content = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="gzip") as err:
        data.read_idx(path)
    assert "cut.gz" in str(err.value)


def write_idx_set(folder, kind, n, rng, compress_images=True, compress_labels=False, hw=(5, 4)):
    prefix = {"train": "train", "test": "t10k"}[kind]
    images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / (f"{prefix}-images-idx3-ubyte" + (".gz" if compress_images else "")), images, compress_images)
    write_idx(folder / (f"{prefix}-labels-idx1-ubyte" + (".gz" if compress_labels else "")), labels, compress_labels)
    return images, labels


def test_load_idx_dataset_reads_standard_names(tmp_path):
    rng = np.random.default_rng(2)
    train_images, train_labels = write_idx_set(tmp_path, "train", 6, rng)
    test_images, test_labels = write_idx_set(tmp_path / "raw", "test", 3, rng, compress_images=False, compress_labels=True)
    x, y = data.load_idx_dataset(tmp_path, "train")
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (6, 1, 5, 4)
    np.testing.assert_array_equal(x[:, 0] * 255, train_images)
    np.testing.assert_array_equal(y, train_labels)
    x, y = data.load_idx_dataset(tmp_path, "test")  # torchvision's raw/ subfolder
    np.testing.assert_array_equal(np.round(x[:, 0] * 255), test_images)
    np.testing.assert_array_equal(y, test_labels)


def test_load_idx_dataset_mirror_spelling(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images, compress=False)  # as some mirrors name them
    write_idx(tmp_path / "t10k-labels.idx1-ubyte.gz", np.array([3, 1], np.uint8), compress=True)
    x, y = data.load_idx_dataset(tmp_path, "test")
    np.testing.assert_array_equal(x[:, 0] * 255, images)
    np.testing.assert_array_equal(y, [3, 1])


def test_load_idx_dataset_missing_or_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        data.load_idx_dataset(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_idx_dataset(tmp_path, "train")
    rng = np.random.default_rng(3)
    write_idx_set(tmp_path, "train", 4, rng)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        data.load_idx_dataset(tmp_path, "train")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), compress=False)
    with pytest.raises(ValueError, match="4 images but .* 5 labels"):
        data.load_idx_dataset(tmp_path, "train")


def test_get_dataset_idx_sets_from_data_dir(tmp_path):
    rng = np.random.default_rng(4)
    train_images, train_labels = write_idx_set(tmp_path / "FashionMNIST" / "raw", "train", 5, rng, hw=(28, 28))
    test_images, test_labels = write_idx_set(tmp_path / "FashionMNIST" / "raw", "test", 2, rng, hw=(28, 28))
    train_x, train_y, test_x, test_y, info = data.get_dataset("fashion-mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(train_x[:, 0] * 255, train_images)
    np.testing.assert_array_equal(test_y, test_labels)
    assert info["num_classes"] == 10 and info["input_shape"] == (1, 28, 28)
    assert (info["n_train"], info["n_test"]) == (5, 2)
    with pytest.raises(ValueError, match="data_dir"):
        data.get_dataset("kmnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.get_dataset("imagenet")


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------
def test_cifar10_binary_version(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    batches = [cifar_batch(rng, 3) for _ in range(6)]
    for i, (pixels, fine, _) in enumerate(batches[:5], start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_record_bytes(pixels, fine))
    (folder / "test_batch.bin").write_bytes(cifar_record_bytes(batches[5][0], batches[5][1]))

    x, y = data.load_cifar(tmp_path, "cifar10", "train")  # found through the standard subfolder
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, as_images(np.concatenate([b[0] for b in batches[:5]])))
    np.testing.assert_array_equal(y, np.concatenate([b[1] for b in batches[:5]]))
    x, y = data.load_cifar(folder, "cifar10", "test")
    np.testing.assert_array_equal(x, as_images(batches[5][0]))
    np.testing.assert_array_equal(y, batches[5][1])
    # channel planes: the first 1024 bytes are red, row-major
    assert x[0, 0, 0, 1] == np.float32(batches[5][0][0, 1]) / np.float32(255)
    assert x[0, 2, 31, 31] == np.float32(batches[5][0][0, 3071]) / np.float32(255)


def test_cifar100_binary_version_coarse_then_fine(tmp_path):
    rng = np.random.default_rng(6)
    pixels, fine, coarse = cifar_batch(rng, 4, cifar100=True)
    (tmp_path / "train.bin").write_bytes(cifar_record_bytes(pixels, coarse, fine))
    x, y = data.load_cifar(tmp_path, "cifar100", "train")
    np.testing.assert_array_equal(x, as_images(pixels))
    np.testing.assert_array_equal(y, fine)
    _, y = data.load_cifar(tmp_path, "cifar100", "train", label_type="coarse")
    np.testing.assert_array_equal(y, coarse)


def test_cifar_binary_truncated(tmp_path):
    pixels, fine, _ = cifar_batch(np.random.default_rng(7), 2)
    (tmp_path / "test_batch.bin").write_bytes(cifar_record_bytes(pixels, fine)[:-5])
    with pytest.raises(ValueError, match="test_batch.bin"):
        data.load_cifar(tmp_path, "cifar10", "test")


@pytest.mark.parametrize("python2", [False, True])
def test_cifar10_python_version(tmp_path, python2):
    rng = np.random.default_rng(8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [cifar_batch(rng, 2) for _ in range(6)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (pixels, fine, _) in zip(names, batches):
        batch = {b"batch_label": f"{name} of 6".encode(), b"labels": [int(v) for v in fine],
                 b"data": pixels, b"filenames": [b"img_%d.png" % i for i in range(len(fine))]}
        dump_cifar_pickle(folder / name, batch, python2)
    raw = (folder / "test_batch").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, like the real files
    assert (b"U\x04data" in raw) == python2  # Python 2 str opcode for the key b"data"

    x, y = data.load_cifar(tmp_path, "cifar10", "train")
    np.testing.assert_array_equal(x, as_images(np.concatenate([b[0] for b in batches[:5]])))
    np.testing.assert_array_equal(y, np.concatenate([b[1] for b in batches[:5]]))
    x, y = data.load_cifar(tmp_path, "cifar10", "test")
    np.testing.assert_array_equal(x, as_images(batches[5][0]))
    np.testing.assert_array_equal(y, batches[5][1])
    batch = data.read_cifar_pickle(folder / "test_batch")
    assert batch["batch_label"] == b"test_batch of 6" and batch["filenames"][1] == b"img_1.png"


@pytest.mark.parametrize("python2", [False, True])
def test_cifar100_python_version_and_registry(tmp_path, python2):
    rng = np.random.default_rng(9)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    sets = {}
    for kind, n in [("train", 5), ("test", 3)]:
        pixels, fine, coarse = sets[kind] = cifar_batch(rng, n, cifar100=True)
        dump_cifar_pickle(folder / kind, {b"filenames": [b"f"] * n, b"batch_label": kind.encode(),
                                          b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
                                          b"data": pixels}, python2)
    train_x, train_y, test_x, test_y, info = data.get_dataset("cifar100", data_dir=tmp_path)
    np.testing.assert_array_equal(train_x, as_images(sets["train"][0]))
    np.testing.assert_array_equal(train_y, sets["train"][1])
    np.testing.assert_array_equal(test_x, as_images(sets["test"][0]))
    np.testing.assert_array_equal(test_y, sets["test"][1])
    assert info["num_classes"] == 100 and info["input_shape"] == (3, 32, 32)
    _, coarse = data.load_cifar(tmp_path, "cifar100", "test", label_type="coarse")
    np.testing.assert_array_equal(coarse, sets["test"][2])


class SystemCall:
    """Pickles as a call to os.system: what an attacker would put in a "CIFAR batch"."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class EvalCall:
    def __reduce__(self):
        return eval, ("__import__('pathlib').Path('evaluated').touch()",)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": SystemCall(f"touch {marker}"), b"labels": [0]}, protocol=2)
    # control: an ordinary unpickler does run the command
    pickle.loads(payload, encoding="bytes")
    assert marker.exists()
    marker.unlink()

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os)\.system") as err:
        data.load_cifar(tmp_path, "cifar10", "test")
    assert "test_batch" in str(err.value)
    assert not marker.exists()

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": EvalCall()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"(builtins|__builtin__)\.eval"):
        data.read_cifar_pickle(folder / "test_batch")
    assert not Path("evaluated").exists()


def test_restricted_codecs_encode_only_latin1(tmp_path):
    # GLOBAL '_codecs encode' called with a non-latin1 codec is refused
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    path = tmp_path / "b"
    path.write_bytes(payload)
    assert pickle.loads(payload) == "nop"  # control: the stream is a valid call
    with pytest.raises(pickle.UnpicklingError, match="only latin1"):
        data.read_cifar_pickle(path)


def test_cifar_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_cifar(tmp_path / "nowhere")
    for i in range(1, 5):  # data_batch_5 missing: the set is incomplete
        (tmp_path / f"data_batch_{i}").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        data.load_cifar(tmp_path, "cifar10", "train")
    with pytest.raises(ValueError, match="data_dir"):
        data.get_dataset("cifar10")


# ---------------------------------------------------------------------------------------------
# Shipped data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist_t10k()


def test_shipped_md5_match_readme_and_files():
    folder = data.shipped_data_dir()
    readme = (REPO / "data" / "README.md").read_text()
    for name, md5 in data.SHIPPED_MD5.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |") and re.search("[0-9a-f]{32}", line))
        assert re.findall("[0-9a-f]{32}", row)[0] == md5
        assert hashlib.md5(gzip.decompress((folder / name).read_bytes())).hexdigest() == md5
    # the md5 the shared data folder's README gives for the MNIST images
    assert data.SHIPPED_MD5["t10k-images-idx3-ubyte.gz"] == "2646ac647ad5339dbf082846283269ea"


def test_shipped_mnist(mnist):
    images, labels = mnist
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    # known facts about the MNIST test set
    np.testing.assert_array_equal(labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    # pixels equal the raw bytes after the 16-byte header, divided by 255
    raw = np.frombuffer(gzip.decompress((data.shipped_data_dir() / "t10k-images-idx3-ubyte.gz").read_bytes()),
                        np.uint8, offset=16).reshape(10000, 28, 28)
    np.testing.assert_array_equal(images[:, 0], raw.astype(np.float32) / np.float32(255))
    assert images.min() == 0 and images.max() == 1


def test_shipped_digits():
    images, labels = data.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    text = gzip.decompress((data.shipped_data_dir() / "digits.csv.gz").read_bytes()).decode()
    rows = [list(map(int, line.split(","))) for line in text.strip().splitlines()]
    np.testing.assert_array_equal(images.reshape(1797, 64) * 16, [r[:64] for r in rows])
    np.testing.assert_array_equal(labels, [r[64] for r in rows])
    assert images.min() == 0 and images.max() == 1


def test_shipped_corrupt_copy_is_refused(tmp_path):
    folder = data.shipped_data_dir()
    for name in data.SHIPPED_MD5:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    labels = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # a valid IDX file, one wrong label
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(ValueError, match="md5") as err:
        data.load_mnist_t10k(tmp_path)
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value)
    (tmp_path / "digits.csv.gz").write_bytes((folder / "digits.csv.gz").read_bytes()[:-100])
    with pytest.raises(ValueError, match="digits.csv.gz"):
        data.load_digits(tmp_path)


def test_fixed_splits(mnist):
    images, labels = mnist
    train_x, train_y, test_x, test_y = data.mnist_t10k_split()
    np.testing.assert_array_equal(train_x, images[:8000])
    np.testing.assert_array_equal(test_y, labels[8000:])
    assert len(train_y) == 8000 and len(test_x) == 2000

    all_x, all_y = data.load_digits()
    train_x, train_y, test_x, test_y = data.digits_split()
    assert (len(train_x), len(test_x)) == (1437, 360)
    order = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(train_y, all_y[order[:1437]])
    np.testing.assert_array_equal(test_x, all_x[order[1437:]])
    again = data.digits_split()
    np.testing.assert_array_equal(again[0], train_x)
    assert not np.array_equal(data.digits_split(seed=1)[1], train_y)

    *_, info = data.get_dataset("mnist-t10k")
    assert info == {"name": "mnist-t10k", "num_classes": 10, "input_shape": (1, 28, 28), "n_train": 8000, "n_test": 2000}


def test_train_test_split():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    train_x, train_y, test_x, test_y = data.train_test_split(x, y, fraction=0.75, seed=3)
    assert len(train_y) == 7 and len(test_y) == 3  # floor(7.5)
    assert sorted(np.concatenate([train_y, test_y]).tolist()) == list(range(10))
    np.testing.assert_array_equal(train_x[:, 0], 2 * train_y)
    same = data.train_test_split(x, y, n_train=7, seed=3)
    np.testing.assert_array_equal(same[1], train_y)
    with pytest.raises(ValueError, match="exactly one"):
        data.train_test_split(x, y, n_train=3, fraction=0.5)
    with pytest.raises(ValueError, match="n_train"):
        data.train_test_split(x, y, n_train=10)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
def collect(batches):
    return [(x.copy(), y.copy()) for x, y in batches]


def test_batches_shuffle_is_a_function_of_seed_and_epoch():
    x = np.arange(23, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(23)
    loader = data.Batches(x, y, batch_size=5)
    assert len(loader) == 5 and len(data.Batches(x, y, 5, drop_last=True)) == 4
    orders = {}
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = collect(loader)
        assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
        order = np.concatenate([b[1] for b in batches])
        assert sorted(order.tolist()) == list(range(23))  # each epoch is a permutation
        for bx, by in batches:
            np.testing.assert_array_equal(bx[:, 0], by)
        orders[epoch] = order
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    resumed = data.Batches(x, y, batch_size=5)  # a fresh loader jumping straight to epoch 1
    resumed.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([b for _, b in resumed]), orders[1])
    other_seed = data.Batches(x, y, batch_size=5, seed=1)
    assert not np.array_equal(np.concatenate([b for _, b in other_seed]), orders[0])
    in_order = data.Batches(x, y, batch_size=5, shuffle=False, drop_last=True)
    np.testing.assert_array_equal(np.concatenate([b for _, b in in_order]), np.arange(20))


def crop_flip_candidates(image, padding=4):
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[:, top:top + h, left:left + w]
            yield window
            yield window[:, :, ::-1]


def test_batches_crop_flip_augmentation():
    rng = np.random.default_rng(10)
    x = rng.random((12, 3, 32, 32)).astype(np.float32) + 0.5  # no zero pixel in the originals
    y = np.arange(12)
    loader = data.Batches(x, y, batch_size=4, seed=7, augment="crop_flip")
    loader.set_epoch(2)
    first = collect(loader)
    again = collect(loader)
    shifted = flipped = unflipped = 0
    for (bx, by), (ax, _) in zip(first, again):
        np.testing.assert_array_equal(bx, ax)  # pure function of (seed, epoch, batch)
        assert bx.shape == (4, 3, 32, 32) and bx.dtype == np.float32
        for out, label in zip(bx, by):
            matches = np.flatnonzero([np.array_equal(out, cand) for cand in crop_flip_candidates(x[label])])
            assert len(matches) == 1  # exactly one padded crop of the original, mirrored or not
            shifted += matches[0] // 2 != 4 * 9 + 4  # not the centered window
            flipped += matches[0] % 2
            unflipped += 1 - matches[0] % 2
    assert shifted > 0 and flipped > 0 and unflipped > 0
    loader.set_epoch(3)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, collect(loader)))
    with pytest.raises(ValueError, match="augment"):
        data.Batches(x, y, 4, augment="mixup")


# ---------------------------------------------------------------------------------------------
# Encoders and normalization
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_encoder(dtype):
    x = np.random.default_rng(11).random((3, 1, 4, 4)).astype(dtype)
    s = encoding.direct(x, 5)
    assert s.shape == (5, 3, 1, 4, 4) and s.dtype == dtype and s.flags.c_contiguous and s.flags.writeable
    for t in range(5):
        np.testing.assert_array_equal(s[t], x)
    s[0, 0, 0, 0, 0] = 42
    assert x[0, 0, 0, 0] != 42 and s[1, 0, 0, 0, 0] != 42  # own memory, not a view of x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_encoder_rate_and_seed(dtype):
    x = np.array([[-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 1.7]], dtype=dtype)
    T = 20000
    s = encoding.poisson(x, T, np.random.default_rng(12))
    assert s.shape == (T, 1, 7) and s.dtype == dtype
    assert set(np.unique(s).tolist()) <= {0.0, 1.0}
    p = np.clip(x, 0, 1)[0]
    rate = s.mean(axis=0)[0]
    np.testing.assert_array_less(np.abs(rate - p), 5 * np.sqrt(p * (1 - p) / T) + 1e-12)
    assert rate[0] == 0 and rate[1] == 0 and rate[5] == 1 and rate[6] == 1
    np.testing.assert_array_equal(encoding.poisson(x, 50, np.random.default_rng(5)), encoding.poisson(x, 50, np.random.default_rng(5)))
    assert not np.array_equal(encoding.poisson(x, 50, np.random.default_rng(5)), encoding.poisson(x, 50, np.random.default_rng(6)))
    with pytest.raises(ValueError, match="NaN"):
        encoding.poisson(np.array([np.nan], dtype=dtype), 2)
    with pytest.raises(TypeError, match="dtype"):
        encoding.poisson(np.array([1, 0]), 2)


def test_normalize_per_channel():
    x = np.random.default_rng(13).random((2, 3, 4, 4)).astype(np.float32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = data.normalize(x, mean, std)
    assert out.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - mean[c]) / std[c], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="per channel"):
        data.normalize(x, (0.5,), (0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        data.normalize(x, mean, (0.2, 0.0, 0.2))


# ---------------------------------------------------------------------------------------------
# Hostile and broken files (issue 10): sizes checked before allocating, one clear error each
# ---------------------------------------------------------------------------------------------
def attempt(f):
    """Run ``f``; return the most memory it allocated (traced, above the starting level) and the
    exception it raised (None if it returned)."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            f()
            error = None
        except Exception as e:  # noqa: BLE001 - returned to the test, which checks its type
            error = e
        return tracemalloc.get_traced_memory()[1] - start, error
    finally:
        tracemalloc.stop()


def assert_refused_small(f, match, limit=1 << 20):
    """``f`` must raise a ValueError matching ``match`` having allocated less than ``limit`` bytes."""
    peak, error = attempt(f)
    assert peak < limit, f"{peak} bytes allocated before refusing (or accepting)"
    assert isinstance(error, ValueError) and re.search(match, str(error)), repr(error)
    return error


def refused(exception, match, f):
    """Run ``f``, which must raise ``exception`` matching ``match``; return the error."""
    with pytest.raises(exception, match=match) as err:
        f()
    return err.value


def reconstruct_pickle(shape):
    """A hand-written protocol-2 CIFAR "batch" {b"data": _reconstruct(ndarray, shape, b"b")}: numpy's
    own reconstruction, allowed by the restricted unpickler, asked for an array of ``shape``."""
    dims = b"".join(b"J" + struct.pack("<i", s) for s in shape)
    return (b"\x80\x02}U\x04data" b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n"
            + dims + b"\x86U\x01b\x87Rs.")


class ArrayState:
    """Pickles like an ndarray whose state declares ``shape`` but carries only ``raw``."""

    def __init__(self, shape, raw):
        self.shape, self.raw = shape, raw

    def __reduce__(self):
        reconstruct = np.empty(0).__reduce__()[0]
        return reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, np.dtype(np.uint8), False, self.raw)


class DirectArray:
    def __reduce__(self):
        return np.ndarray, ((1 << 31,),)


PICKLE_BOMBS = {  # name: (payload, what the refusal says); none is over 300 bytes
    "reconstruct": (reconstruct_pickle((1 << 20, 3072)), "_reconstruct"),  # 3 GiB from 99 bytes
    "state": (pickle.dumps({b"data": ArrayState((1 << 20, 3072), b"abc")}, protocol=2), "3 bytes"),
    "ndarray": (pickle.dumps({b"data": DirectArray()}, protocol=2), r"numpy\.ndarray"),
    "binbytes8": (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 33) + b"abc.", "declares 8589934592 bytes"),
    "binstring": (b"\x80\x02T" + struct.pack("<i", (1 << 31) - 1) + b"abc.", "BINSTRING"),
    "memo": (b"\x80\x02Nr" + struct.pack("<I", 1 << 24) + b".", "memo index 16777216"),
    "memo text": (b"\x80\x02Np16777216\n.", "memo index 16777216"),
    "object array": (pickle.dumps({b"data": np.array([1, "a"], dtype=object)}, protocol=2), "dtype"),
}


def test_reconstruct_pickle_is_a_valid_numpy_call():
    assert pickle.loads(reconstruct_pickle((2, 3)), encoding="bytes")[b"data"].shape == (2, 3)


@pytest.mark.parametrize("name", list(PICKLE_BOMBS))
def test_cifar_pickle_memory_bomb_refused_before_allocation(tmp_path, name):
    payload, message = PICKLE_BOMBS[name]
    assert len(payload) < 300
    path = tmp_path / "test_batch"
    path.write_bytes(payload)
    error = assert_refused_small(lambda: data.read_cifar_pickle(path), message)  # nothing allocated
    assert isinstance(error, pickle.UnpicklingError) and str(path) in str(error)


def test_cifar_pickle_every_numpy_protocol_still_loads(tmp_path):
    expected = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 12), b"mean": np.linspace(0, 1, 5),
                b"labels": [1, 2]}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):  # 5 stores arrays through _frombuffer
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps(expected, protocol=protocol))
        batch = data.read_cifar_pickle(path)
        assert type(batch["data"]) is np.ndarray and type(batch["mean"]) is np.ndarray
        np.testing.assert_array_equal(batch["data"], expected[b"data"])
        np.testing.assert_array_equal(batch["mean"], expected[b"mean"])


def idx_header(dtype_code, shape):
    return struct.pack(">BBBB", 0, 0, dtype_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def test_gzip_idx_read_only_as_far_as_its_header_says(tmp_path):
    # 4 MiB of zeros compress to 4 KiB; the header claims 2 GiB, which 4 KiB of gzip cannot hold
    forged = tmp_path / "forged-idx1-ubyte.gz"
    forged.write_bytes(gzip.compress(idx_header(0x08, (1 << 31,)) + bytes(4 << 20)))
    assert forged.stat().st_size < 10_000
    assert_refused_small(lambda: data.read_idx(forged), "forged-idx1-ubyte.gz: truncated or forged")
    # an honest-looking header (1,000 items) followed by 16 MiB more than it declares: refused
    # after decompressing the header, the payload and one byte, not the whole stream
    longer = tmp_path / "longer-idx1-ubyte.gz"
    longer.write_bytes(gzip.compress(idx_header(0x08, (1000,)) + bytes(1000 + (16 << 20))))
    assert_refused_small(lambda: data.read_idx(longer), "longer-idx1-ubyte.gz: unexpected trailing bytes", 2 << 20)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_over_the_size_limit_refused_before_reading(tmp_path, monkeypatch, compress):
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1 << 20, raising=False)
    path = write_idx(tmp_path / "big-idx3-ubyte", np.ones((40, 256, 256), np.uint8), compress)  # 2.6 MB
    assert_refused_small(lambda: data.read_idx(path), r"over the 1048576-byte limit .*MAX_FILE_BYTES")
    assert data.read_idx(write_idx(tmp_path / "small", np.ones((4, 256, 256), np.uint8), compress)).shape == (4, 256, 256)


def test_cifar_files_over_the_size_limit_refused(tmp_path, monkeypatch):
    pixels, fine, _ = cifar_batch(np.random.default_rng(20), 400)  # 1.2 MB either way
    (tmp_path / "test_batch.bin").write_bytes(cifar_record_bytes(pixels, fine))
    python = tmp_path / "py"
    python.mkdir()
    dump_cifar_pickle(python / "test_batch", {b"data": pixels, b"labels": fine.tolist()}, python2=True)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1 << 20, raising=False)
    for folder, name in [(tmp_path, "test_batch.bin"), (python, "test_batch")]:
        assert_refused_small(lambda: data.load_cifar(folder, "cifar10", "test"), f"{name}: .*over the 1048576-byte limit")


def test_shipped_file_from_a_user_folder_read_only_to_its_size(tmp_path):
    (tmp_path / "digits.csv.gz").write_bytes(gzip.compress(b"0," * (16 << 20)))  # 32 MiB, the real one is 265 kB
    assert_refused_small(lambda: data.load_digits(tmp_path), "digits.csv.gz: more than 264712 bytes", 2 << 20)


def test_refused_pickle_is_one_error_line_naming_file_and_global(tmp_path, capsys):
    from refsnn.cli import main
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels, fine, _ = cifar_batch(np.random.default_rng(21), 2)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        dump_cifar_pickle(folder / name, {b"data": pixels, b"labels": fine.tolist()}, python2=False)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": SystemCall("true"), b"labels": [0]}, protocol=2))
    err = refused(ValueError, r"test_batch: refusing to load global (posix|os)\.system",
                  lambda: data.get_dataset("cifar10", tmp_path))
    assert isinstance(err, pickle.UnpicklingError)
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: .*test_batch: refusing to load global (posix|os)\.system", lines[0])


def test_empty_idx_set_refused_at_load(tmp_path, capsys):
    from refsnn.cli import main
    rng = np.random.default_rng(22)
    write_idx_set(tmp_path, "train", 0, rng, hw=(28, 28))
    write_idx_set(tmp_path, "test", 3, rng, hw=(28, 28))
    refused(ValueError, "train-images-idx3-ubyte.gz: the IDX header declares 0 images",
            lambda: data.get_dataset("mnist", tmp_path))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"),
                 "--epochs", "1", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "declares 0 images" in lines[0]
    # CIFAR: a python-version batch of 0 images
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    refused(ValueError, "test_batch: holds no images", lambda: data.load_cifar(tmp_path, "cifar10", "test"))


def test_idx_labels_out_of_range_counts_and_dims_refused(tmp_path):
    rng = np.random.default_rng(23)
    images, labels = write_idx_set(tmp_path, "train", 6, rng, hw=(28, 28))
    write_idx_set(tmp_path, "test", 3, rng, hw=(28, 28))
    labels[4] = 10
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, compress=False)
    refused(ValueError, r"train-labels-idx1-ubyte: label 10 of sample 4 lies outside \[0, 10\)",
            lambda: data.get_dataset("mnist", tmp_path))
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:5] % 10, compress=False)
    refused(ValueError, "holds 6 images but .*train-labels-idx1-ubyte holds 5 labels",
            lambda: data.get_dataset("mnist", tmp_path))
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels % 10, compress=False)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images.reshape(6, 784), compress=True)
    refused(ValueError, r"train-images-idx3-ubyte.gz: expected unsigned-byte images \[N, H, W\]",
            lambda: data.get_dataset("mnist", tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:, :20, :20].copy(), compress=True)
    refused(ValueError, "train images are 20x20 but test images 28x28", lambda: data.get_dataset("mnist", tmp_path))


def test_cifar_labels_out_of_range_name_the_file_and_sample(tmp_path):
    pixels, fine, _ = cifar_batch(np.random.default_rng(24), 3)
    fine[2] = 10
    (tmp_path / "test_batch.bin").write_bytes(cifar_record_bytes(pixels, fine))
    refused(ValueError, r"test_batch.bin: label 10 of sample 2 lies outside \[0, 10\)",
            lambda: data.load_cifar(tmp_path, "cifar10", "test"))
    (tmp_path / "test_batch.bin").unlink()
    dump_cifar_pickle(tmp_path / "test_batch", {b"data": pixels, b"labels": fine.tolist()}, python2=True)
    refused(ValueError, r"test_batch 'labels': label 10 of sample 2 lies outside \[0, 10\)",
            lambda: data.load_cifar(tmp_path, "cifar10", "test"))


def test_missing_misplaced_truncated_and_wrong_format_files(tmp_path):
    rng = np.random.default_rng(25)
    absent = tmp_path / "absent"
    for name in ["mnist", "cifar10", "digits", "mnist-t10k"]:
        refused(FileNotFoundError, f"{absent} does not exist", lambda: data.get_dataset(name, absent))
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"x")
    for name in ["fashion-mnist", "cifar100", "digits"]:
        refused(ValueError, f"{a_file} is not a directory", lambda: data.get_dataset(name, a_file))

    idx = tmp_path / "idx"
    write_idx_set(idx, "train", 4, rng)
    write_idx_set(idx, "test", 2, rng)
    (idx / "t10k-images-idx3-ubyte.gz").unlink()
    (idx / "t10k-images-idx3-ubyte").mkdir()  # a directory where the file should be
    refused(ValueError, "t10k-images-idx3-ubyte is a directory", lambda: data.get_dataset("mnist", idx))
    (idx / "t10k-images-idx3-ubyte").rmdir()
    content = gzip.compress(idx_bytes(rng.integers(0, 256, (2, 5, 4), dtype=np.uint8)))
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(content[:-12])  # cut inside the deflate stream
    refused(ValueError, "t10k-images-idx3-ubyte.gz: corrupt or truncated gzip", lambda: data.get_dataset("mnist", idx))

    pixels, fine, _ = cifar_batch(rng, 2)  # CIFAR files where IDX files should be
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(cifar_record_bytes(pixels, fine))
    refused(ValueError, "t10k-images-idx3-ubyte.gz: bad IDX magic", lambda: data.get_dataset("mnist", idx))
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(pickle.dumps({b"data": pixels, b"labels": fine.tolist()}, protocol=2))
    refused(ValueError, "t10k-images-idx3-ubyte.gz: bad IDX magic", lambda: data.get_dataset("mnist", idx))
    # IDX files where CIFAR files should be
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "test_batch").write_bytes(idx_bytes(np.zeros((2, 3072), np.uint8)))
    refused(ValueError, "test_batch: not a valid CIFAR pickle", lambda: data.load_cifar(cifar, "cifar10", "test"))
    (cifar / "test_batch").write_bytes(pickle.dumps({b"data": pixels, b"labels": fine.tolist()}, protocol=2)[:-30])
    refused(ValueError, "test_batch: not a valid CIFAR pickle", lambda: data.load_cifar(cifar, "cifar10", "test"))
    (cifar / "test_batch").unlink()
    (cifar / "test_batch.bin").mkdir()
    refused(ValueError, "test_batch.bin is a directory", lambda: data.load_cifar(cifar, "cifar10", "test"))
    refused(ValueError, "/dev/zero is not a regular file", lambda: data.read_idx("/dev/zero"))  # endless


# ---------------------------------------------------------------------------------------------
# Non-finite input data (issue 10, defect 10)
# ---------------------------------------------------------------------------------------------
def test_non_finite_input_refused_naming_the_sample(tmp_path):
    x = np.random.default_rng(26).random((20, 1, 4, 4)).astype(np.float32)
    y = np.zeros(20, np.int64)
    x[12, 0, 1, 2] = np.nan
    refused(ValueError, "sample 12 of images contains NaN", lambda: data.Batches(x, y, 4))
    refused(ValueError, "sample 12 of x contains NaN", lambda: encoding.direct(x, 2))
    refused(ValueError, "sample 12 of x contains NaN", lambda: encoding.poisson(x, 2))
    refused(ValueError, "sample 12 of images contains NaN", lambda: data.normalize(x, (0.5,), (0.2,)))
    x[12, 0, 1, 2] = 0.5
    x[3, 0, 0, 0] = -np.inf
    refused(ValueError, "sample 3 of images contains Inf", lambda: data.Batches(x, y, 4))
    x[3, 0, 0, 0] = 0.5
    refused(ValueError, "mean must be finite", lambda: data.normalize(x, (np.nan,), (0.2,)))
    values = np.arange(12, dtype=np.float64).reshape(6, 2)
    values[5, 1] = np.nan
    path = write_idx(tmp_path / "features-idx2-double.gz", values, compress=True)
    refused(ValueError, f"sample 5 of {path} contains NaN", lambda: data.read_idx(path))


def test_nan_in_training_data_is_not_reported_as_divergence(tmp_path):
    from refsnn.train import Run, TrainConfig
    run = Run(TrainConfig(dataset="digits", network="mlp", epochs=1, out_dir=str(tmp_path / "run")))
    run.train_x[700, 0, 3, 3] = np.nan
    refused(ValueError, "sample 700 of images contains NaN", lambda: run.fit(progress=False, log=lambda s: None))


def test_empty_batches_refused():
    refused(ValueError, "no samples", lambda: data.Batches(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 4))


# ---------------------------------------------------------------------------------------------
# Options that were silently wrong (issue 10, defect 14)
# ---------------------------------------------------------------------------------------------
def test_crop_flip_refused_on_images_smaller_than_cifar(tmp_path, capsys):
    from refsnn.cli import main
    train_x, train_y, _, _ = data.digits_split()
    refused(ValueError, r"'crop_flip' .*32x32.*shape \(1, 8, 8\)", lambda: data.Batches(train_x, train_y, 4, augment="crop_flip"))
    mnist = np.zeros((4, 1, 28, 28), np.float32)
    refused(ValueError, r"shape \(1, 28, 28\)", lambda: data.Batches(mnist, np.zeros(4), 4, augment="crop_flip"))
    # a padding chosen for the image size stays possible, as a callable
    padded = data.Batches(train_x, train_y, 4, augment=lambda x, rng: data.random_crop_flip(x, rng, padding=1))
    assert next(iter(padded))[0].shape == (4, 1, 8, 8)
    assert main(["train", "--dataset", "digits", "--augment", "crop_flip", "--epochs", "1",
                 "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "crop_flip" in lines[0] and "32x32" in lines[0]
    assert "divergence" not in lines[0] and "refsnn train:" not in captured.out  # refused before the run starts
    assert not (tmp_path / "run").exists()  # and before it writes anything


def test_data_dir_is_honored_for_the_shipped_sets(tmp_path):
    shipped = data.shipped_data_dir()
    # torchvision's layout, uncompressed: MNIST/raw/t10k-images-idx3-ubyte
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (raw / stem).write_bytes(gzip.decompress((shipped / f"{stem}.gz").read_bytes()))
    (tmp_path / "digits.csv").write_bytes(gzip.decompress((shipped / "digits.csv.gz").read_bytes()))
    for name in ["mnist-t10k", "digits"]:
        got, expected = data.get_dataset(name, tmp_path), data.get_dataset(name)
        for a, b in zip(got[:4], expected[:4]):
            np.testing.assert_array_equal(a, b)
        assert got[4] == expected[4]
    # read from there, not from the package: a changed copy is refused, a missing one is reported
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[20] = (labels[20] + 1) % 10
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    refused(ValueError, "t10k-labels-idx1-ubyte: md5", lambda: data.get_dataset("mnist-t10k", tmp_path))
    (tmp_path / "digits.csv").unlink()
    refused(FileNotFoundError, r"no digits file in .*digits.csv.gz, digits.csv", lambda: data.get_dataset("digits", tmp_path))


def test_random_streams_do_not_collide_with_the_initialization_or_each_other():
    # SeedSequence drops trailing zero words: a key ending in 0 is the key without it, so the
    # epoch-0 order once came from the very bits that initialized the model (default_rng(seed)).
    seed, n = 3, 50
    batches = data.Batches(np.zeros((n, 1, 2, 2), np.float32), np.zeros(n, np.int64), 10, seed=seed)
    orders = []
    for epoch in range(6):
        batches.set_epoch(epoch)
        orders.append(batches.order())
    others = [np.random.default_rng(seed).permutation(n)]                            # model initialization
    others += [np.random.default_rng([seed, k]).permutation(n) for k in range(6)]   # e.g. the converter's streams
    for order in orders:
        for other in others:
            assert not np.array_equal(order, other)
