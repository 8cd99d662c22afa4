"""Event data: files written here in each real format (struct, h5py; never by refsnn) read back,
hand-made event lists binned to hand-computed frames, one clear error per bad file, the frame
cache, and a short training run on the shipped SYNTHETIC N-MNIST set.
"""
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refsnn import events as ev
from refsnn.data import get_dataset
from refsnn.train import ConfigError, TrainConfig

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Writers for the real formats (docs/events.md §1)
# ---------------------------------------------------------------------------------------------
def nmnist_bytes(rows):
    """N-MNIST: x, y, polarity bit 7 + timestamp bits 22..16, bits 15..8, bits 7..0."""
    return b"".join(bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF]) for t, x, y, p in rows)


def aedat31_bytes(packets):
    """AEDAT 3.1: text header, then per packet a 28-byte little-endian header and its events.
    ``packets``: (eventType, overflow, [(x, y, p, valid, ts)]) for polarity packets (type 1), or
    (eventType, overflow, raw bytes of 8-byte events) for other types."""
    out = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    for kind, overflow, body in packets:
        if kind == 1:
            body = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)
                            for x, y, p, valid, ts in body)
        n = len(body) // 8
        out += struct.pack("<hhiiiiii", kind, 1, 8, 4, overflow, n, n, n) + body
    return out


def jaer2_bytes(rows):
    """jAER AEDAT 2.0 (DVS128): header lines, then big-endian (address, timestamp) with
    address = y << 8 | x << 1 | polarity (the sensor's raw coordinates)."""
    return b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + \
        b"".join(struct.pack(">II", (y << 8) | (x << 1) | p, t) for t, x, y, p in rows)


def write_shd(path, samples, labels, times_dtype=np.float32):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), h5py.vlen_dtype(times_dtype))
        units = f.create_dataset("spikes/units", (len(samples),), h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = np.asarray(t, times_dtype), np.asarray(u, np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
    return path


def fields(events):
    return [tuple(int(e[k]) for k in ("t", "x", "y", "p")) for e in events]


# ---------------------------------------------------------------------------------------------
# Readers: real-format files read back
# ---------------------------------------------------------------------------------------------
def test_nmnist_file_reads_back_with_overflow_marker(tmp_path):
    rows = [(5, 0, 0, 1), (70_000, 33, 2, 0), ((1 << 23) - 1, 7, 33, 1)]
    # an event with y = 240 adds 2^13 µs to every later event (Orchard's eventvision reader)
    path = tmp_path / "00001.bin"
    path.write_bytes(nmnist_bytes(rows[:2]) + bytes([0, 240, 0, 0, 0]) + nmnist_bytes(rows[2:]))
    got = ev.read_nmnist(path)
    assert fields(got) == [(5, 0, 0, 1), (70_000, 33, 2, 0), ((1 << 23) - 1 + (1 << 13), 7, 33, 1)]


def test_shd_file_reads_back_in_microseconds(tmp_path):
    path = write_shd(tmp_path / "shd_train.h5", [([0.5, 0.0, 0.25], [699, 3, 10]), ([], [])], [19, 0])
    recordings, labels = ev.read_hdf5_spikes(path, 20)
    assert labels.tolist() == [19, 0]
    assert fields(recordings[0]) == [(0, 3, 0, 0), (250_000, 10, 0, 0), (500_000, 699, 0, 0)]  # sorted by time
    assert len(recordings[1]) == 0


def test_aedat31_polarity_packets_read_back(tmp_path):
    path = tmp_path / "user01_lab.aedat"
    other = struct.pack("<Ii", 123, 456)  # a packet of another event type is skipped
    path.write_bytes(aedat31_bytes([(1, 0, [(127, 0, 1, 1, 10), (5, 6, 0, 0, 11), (0, 127, 0, 1, 20)]),
                                    (2, 0, other), (1, 1, [(3, 4, 1, 1, 7)])]))
    got = ev.read_aedat31(path)
    # the invalid event (valid bit 0) is dropped; overflow 1 adds 2^31 µs
    assert fields(got) == [(10, 127, 0, 1), (20, 0, 127, 0), ((1 << 31) + 7, 3, 4, 1)]


def test_jaer2_events_read_back_turned_as_spikingjelly(tmp_path):
    path = tmp_path / "cifar10_cat_0.aedat"
    path.write_bytes(jaer2_bytes([(100, 0, 0, 0), (200, 127, 5, 1)]))
    # x' = 127 - y, y' = 127 - x, p' = 1 - p (SpikingJelly's CIFAR10DVS)
    assert fields(ev.read_jaer2(path)) == [(100, 127, 127, 1), (200, 122, 0, 0)]


def test_dvs_gesture_and_cifar10_dvs_folders_load_as_frames(tmp_path):
    gesture = tmp_path / "DvsGesture"
    gesture.mkdir()
    (gesture / "user01_lab.aedat").write_bytes(aedat31_bytes([(1, 0, [(0, 0, 1, 1, 10), (127, 127, 0, 1, 20),
                                                                      (64, 0, 1, 1, 30), (1, 1, 1, 1, 40)])]))
    (gesture / "user01_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,10,30\n11,30,41\n")
    (gesture / "trials_to_train.txt").write_text("user01_lab.aedat\n")
    (gesture / "trials_to_test.txt").write_text("user01_lab.aedat\n")
    train_x, train_y, _, _, info = get_dataset("dvs-gesture", tmp_path, T=1, downsample=64)
    assert info["input_shape"] == (2, 2, 2) and train_y.tolist() == [2, 10]
    assert train_x[0, 0].tolist() == [[[0, 0], [0, 1]], [[1, 0], [0, 0]]]   # [C=p, y // 64, x // 64]
    assert train_x[1, 0].tolist() == [[[0, 0], [0, 0]], [[1, 1], [0, 0]]]

    for name in ev._CIFAR10_CLASSES:
        (tmp_path / "c10" / name).mkdir(parents=True)
        for i in (0, 1):
            (tmp_path / "c10" / name / f"cifar10_{name}_{i}.aedat").write_bytes(jaer2_bytes([(i, 0, 0, i)]))
    train_x, train_y, test_x, test_y, info = get_dataset("cifar10-dvs", tmp_path / "c10", T=2)
    assert train_y.tolist() == test_y.tolist() == list(range(10))    # 90/10 per class: file 0 trains, 1 tests
    assert train_x.shape == (10, 2, 2, 128, 128) and train_x[:, 1, 1, 127, 127].tolist() == [1] * 10


# ---------------------------------------------------------------------------------------------
# Events -> frames
# ---------------------------------------------------------------------------------------------
HAND = ev._events([0, 10, 30, 59, 60, 90], [0, 1, 2, 3, 0, 1], [0, 0, 1, 1, 2, 3], [1, 0, 1, 1, 0, 0])


def nonzero(frames):
    return [tuple(i) + (int(frames[tuple(i)]),) for i in np.argwhere(frames)]


def test_time_and_count_binning_match_hand_computed_frames():
    # time: dt = (90 - 0) // 3 = 30 µs; frames [0, 30), [30, 60), [60, 90]
    assert nonzero(ev.to_frames(HAND, (2, 4, 4), 3, "time")) == [
        (0, 0, 0, 1, 1), (0, 1, 0, 0, 1), (1, 1, 1, 2, 1), (1, 1, 1, 3, 1), (2, 0, 2, 0, 1), (2, 0, 3, 1, 1)]
    # count: 6 // 4 = 1 event per frame, the last frame takes the other three
    assert nonzero(ev.to_frames(HAND, (2, 4, 4), 4, "count")) == [
        (0, 1, 0, 0, 1), (1, 0, 0, 1, 1), (2, 1, 1, 2, 1), (3, 0, 2, 0, 1), (3, 0, 3, 1, 1), (3, 1, 1, 3, 1)]
    # downsample 2: 2x2 pixels into one; frame 1's two events land in the same element
    assert nonzero(ev.to_frames(HAND, (2, 4, 4), 3, "time", downsample=2)) == [
        (0, 0, 0, 0, 1), (0, 1, 0, 0, 1), (1, 1, 0, 1, 2), (2, 0, 1, 0, 2)]
    # audio: [T, units]
    audio = ev._events([0, 5, 9], [699, 0, 699])
    assert ev.to_frames(audio, (700,), 2, "time")[:, [0, 699]].tolist() == [[0, 1], [1, 1]]
    assert ev.to_frames(audio, (700,), 1, "time", downsample=100).tolist() == [[1, 0, 0, 0, 0, 0, 2]]


def reference_frames(events, shape, T, split_by):
    """SpikingJelly's cal_fixed_frames_number_segment_index bounds (j_l, j_r), computed with
    searchsorted, and a plain loop accumulating each frame."""
    t, n = events["t"], len(events)
    if split_by == "time":
        dt = (t[-1] - t[0]) // T
        lefts = np.searchsorted(t, t[0] + dt * np.arange(T), "left")
        rights = np.append(np.searchsorted(t, t[0] + dt * np.arange(1, T), "left"), n)
    else:
        lefts, rights = (n // T) * np.arange(T), np.append((n // T) * np.arange(1, T), n)
    out = np.zeros((T, *shape), np.int64)
    for j in range(T):
        for e in events[lefts[j]:rights[j]]:
            out[j, e["p"], e["y"], e["x"]] += 1
    return out


@pytest.mark.parametrize("binning", ["time", "count"])
def test_binning_matches_the_reference_bounds_on_random_recordings(binning):
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, T = int(rng.integers(1, 300)), int(rng.integers(1, 9))
        t = np.sort(rng.integers(0, 50_000, n))
        events = ev._events(t, rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n))
        want = reference_frames(events, (2, 34, 34), T, "time" if binning == "time" else "number")
        assert np.array_equal(ev.to_frames(events, (2, 34, 34), T, binning), want)


def test_to_frames_refuses_bad_events():
    with pytest.raises(ValueError, match="x = 4, outside"):
        ev.to_frames(ev._events([0], [4], [0], [0]), (2, 4, 4), 1)
    with pytest.raises(ValueError, match="sorted by time"):
        ev.to_frames(ev._events([5, 1], [0, 0]), (700,), 1)
    with pytest.raises(ValueError, match="over the 65535"):
        ev.to_frames(ev._events(np.zeros(70_000, int), np.zeros(70_000, int)), (1,), 1)


# ---------------------------------------------------------------------------------------------
# Bad files: one clear error each, naming the file
# ---------------------------------------------------------------------------------------------
def test_bad_nmnist_files(tmp_path, monkeypatch):
    path = tmp_path / "1.bin"
    path.write_bytes(nmnist_bytes([(1, 2, 3, 0)])[:-1])
    with pytest.raises(ValueError, match=r"1\.bin: 4 bytes is not a whole number of 5-byte"):
        ev.read_nmnist(path)
    path.write_bytes(nmnist_bytes([(1, 34, 3, 0)]))
    with pytest.raises(ValueError, match=r"1\.bin: event 0 has x = 34, outside the sensor's \[0, 34\)"):
        ev.read_nmnist(path)
    monkeypatch.setattr(ev, "MAX_FILE_BYTES", 4)
    with pytest.raises(ValueError, match=r"1\.bin: 5 bytes, over the 4-byte limit"):
        ev.read_nmnist(path)


def test_bad_aedat_files(tmp_path):
    path = tmp_path / "t.aedat"
    path.write_bytes(jaer2_bytes([(1, 2, 3, 0)]))
    with pytest.raises(ValueError, match=r"t\.aedat: not an AEDAT 3\.1 file"):
        ev.read_aedat31(path)
    good = aedat31_bytes([(1, 0, [(1, 2, 0, 1, 5), (3, 4, 1, 1, 6)])])
    path.write_bytes(good[:-3])
    with pytest.raises(ValueError, match=r"t\.aedat: AEDAT 3\.1 packet at byte \d+ declares 2 events of 8 bytes"):
        ev.read_aedat31(path)
    path.write_bytes(good + b"\x01\x00")
    with pytest.raises(ValueError, match=r"t\.aedat: truncated AEDAT 3\.1 packet header"):
        ev.read_aedat31(path)
    forged = bytearray(good)
    struct.pack_into("<i", forged, good.index(b"#!END-HEADER\r\n") + 14 + 16, 2**31 - 1)  # eventCapacity
    path.write_bytes(bytes(forged))
    with pytest.raises(ValueError, match="declares 2147483647 events"):
        ev.read_aedat31(path)
    path.write_bytes(aedat31_bytes([(1, 0, [(200, 2, 0, 1, 5)])]))
    with pytest.raises(ValueError, match=r"x = 200, outside the sensor's \[0, 128\)"):
        ev.read_aedat31(path)
    path.write_bytes(jaer2_bytes([(1, 2, 3, 0)])[:-1])
    with pytest.raises(ValueError, match=r"t\.aedat: 7 bytes after the header is not a whole number of 8-byte"):
        ev.read_jaer2(path)
    path.write_bytes(b"#!AER-DAT2.0\r\n#" + b"x" * (ev._HEADER_LIMIT + 10))
    with pytest.raises(ValueError, match="header line at byte 14 does not end"):
        ev.read_jaer2(path)


def test_bad_shd_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "shd_train.h5"
    path.write_bytes(b"PK\x03\x04 not hdf5")
    with pytest.raises(ValueError, match=r"shd_train\.h5: not a readable HDF5 file"):
        ev.read_hdf5_spikes(path, 20)
    write_shd(path, [([0.1], [700])], [0])
    with pytest.raises(ValueError, match=r"shd_train\.h5: sample 0: event 0 has unit = 700, outside"):
        ev.read_hdf5_spikes(path, 20)
    write_shd(path, [([0.1], [7])], [20])
    with pytest.raises(ValueError, match="label 20 of sample 0 lies outside"):
        ev.read_hdf5_spikes(path, 20)
    write_shd(path, [([0.1, np.nan], [7, 8])], [1])
    with pytest.raises(ValueError, match="sample 0 has a spike time that is negative, NaN or Inf"):
        ev.read_hdf5_spikes(path, 20)
    write_shd(path, [([0.1, 0.2], [7])], [1])
    with pytest.raises(ValueError, match="sample 0 has 2 spike times but 1 units"):
        ev.read_hdf5_spikes(path, 20)
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="no one-dimensional dataset 'spikes/times'"):
        ev.read_hdf5_spikes(path, 20)


def test_paths_never_leave_the_data_directory(tmp_path):
    root, outside = tmp_path / "DvsGesture", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "a.aedat").write_bytes(aedat31_bytes([]))
    (root / "trials_to_train.txt").write_text("../elsewhere/a.aedat\n")
    with pytest.raises(ValueError, match=r"'\.\./elsewhere/a\.aedat' is not a plain \.aedat file name"):
        ev.load_event_dataset("dvs-gesture", root, T=1)
    (root / "trials_to_train.txt").write_text("a.aedat\n")
    (root / "a.aedat").symlink_to(outside / "a.aedat")
    with pytest.raises(ValueError, match="leads outside the data directory"):
        ev.load_event_dataset("dvs-gesture", root, T=1)


# ---------------------------------------------------------------------------------------------
# The frame cache
# ---------------------------------------------------------------------------------------------
def nmnist_folder(root):
    for split, digit, rows in (("Train", 0, [(0, 1, 1, 1), (9, 2, 2, 0)]), ("Train", 3, [(0, 5, 5, 1)]),
                               ("Test", 3, [(4, 0, 0, 0)])):
        (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
        (root / split / str(digit) / f"{len(rows)}.bin").write_bytes(nmnist_bytes(rows))
    return root


def test_cache_is_keyed_rebuilt_and_written_atomically(tmp_path, monkeypatch):
    root = nmnist_folder(tmp_path)
    first = ev.load_event_dataset("nmnist", root, T=2)
    cache = ev.cache_path(root, "nmnist", "Train", 2, "time", 1)
    assert cache.is_file() and first[0][0, 1, 0, 2, 2] == 1 and first[1].tolist() == [0, 3]
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == [
        "refsnn-frames-nmnist-test-T2-time-ds1.npz", "refsnn-frames-nmnist-train-T2-time-ds1.npz"]  # no tmp left
    # a different binning is a different file; the cache is read back, not rebuilt
    ev.load_event_dataset("nmnist", root, T=2, binning="count")
    assert ev.cache_path(root, "nmnist", "Train", 2, "count", 1).is_file()
    monkeypatch.setattr(ev, "read_nmnist", lambda *a: pytest.fail("read the files despite a valid cache"))
    assert np.array_equal(ev.load_event_dataset("nmnist", root, T=2)[0], first[0])
    monkeypatch.undo()
    # a changed source file changes the key: rebuilt from the files (dt = 1 // 2 = 0: both in the last frame)
    (root / "Train" / "3" / "1.bin").write_bytes(nmnist_bytes([(0, 6, 5, 1), (1, 6, 5, 1)]))
    assert ev.load_event_dataset("nmnist", root, T=2)[0][1, 1, 1, 5, 6] == 2
    # a corrupt or truncated cache is rebuilt
    for damage in (b"garbage", cache.read_bytes()[:100]):
        cache.write_bytes(damage)
        again = ev.load_event_dataset("nmnist", root, T=2)
        assert again[0][1, 1, 1, 5, 6] == 2 and ev._read_cache(cache, *_key(root)) is not None
    # atomic: a write that fails before the rename leaves the old cache whole and no temporary file
    before = cache.read_bytes()
    (root / "Train" / "3" / "1.bin").write_bytes(nmnist_bytes([(0, 7, 5, 1)]))
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    ev.load_event_dataset("nmnist", root, T=2)
    assert cache.read_bytes() == before and not [p for p in root.iterdir() if p.suffix == ".tmp"]


def _key(root):
    sources, _ = ev._nmnist_split(root, "Train")
    return ({"version": ev.CACHE_VERSION, "dataset": "nmnist", "split": "Train", "T": 2, "binning": "time",
             "downsample": 1, "sources": ev._fingerprint(sources, root)}, (2, 34, 34), 10)


# ---------------------------------------------------------------------------------------------
# Configs, the shipped SYNTHETIC sets, and training on them
# ---------------------------------------------------------------------------------------------
def test_config_refuses_image_options_on_event_data():
    with pytest.raises(ConfigError, match="nmnist is event data: its frames are the input"):
        TrainConfig(dataset="nmnist", encoding="poisson")
    with pytest.raises(ConfigError, match="augment 'crop_flip' is for images"):
        TrainConfig(dataset="dvs-gesture", augment="crop_flip")
    with pytest.raises(ConfigError, match="event_bins applies to event data"):
        TrainConfig(dataset="digits", event_bins="count")
    with pytest.raises(ValueError, match="is event data: pass data_dir"):
        get_dataset("shd")
    from refsnn.convert import ConvertConfig  # it took event data as images binned into one frame
    with pytest.raises(ConfigError, match="shd is event data: conversion trains its DNN on images"):
        ConvertConfig(dataset="shd", data_dir="x")


def test_shipped_synthetic_sets_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(REPO / "data" / "make_synthetic_events.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("SYNTHETIC-nmnist", "SYNTHETIC-shd"):
        shipped = sorted(p.relative_to(REPO / "data" / name) for p in (REPO / "data" / name).rglob("*")
                         if p.is_file() and not p.name.startswith("refsnn-frames-"))
        written = sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
        assert shipped == written
        for rel in written:
            new, old = tmp_path / name / rel, REPO / "data" / name / rel
            if rel.suffix == ".h5":  # the same spikes (HDF5 libraries may lay out the bytes differently)
                (a, la), (b, lb) = ev.read_hdf5_spikes(new, 20), ev.read_hdf5_spikes(old, 20)
                assert la.tolist() == lb.tolist() and all(np.array_equal(x, y) for x, y in zip(a, b)), rel
            else:
                assert hashlib.md5(new.read_bytes()).digest() == hashlib.md5(old.read_bytes()).digest(), rel


def test_cli_trains_above_chance_on_the_synthetic_nmnist(tmp_path, capsys):
    from refsnn.cli import main
    data = shutil.copytree(REPO / "data" / "SYNTHETIC-nmnist", tmp_path / "nmnist",
                           ignore=shutil.ignore_patterns("refsnn-frames-*"))
    code = main(["train", "--dataset", "nmnist", "--data-dir", str(data), "--T", "4", "--network", "mlp",
                 "--epochs", "2", "--out-dir", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "SYNTHETIC stand-in" in out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 40, out   # chance is 10%; 2 epochs of the MLP reach about 70%


@pytest.mark.parametrize("folder", ["12", "cat"])
def test_nmnist_class_folder_out_of_range_is_an_error_naming_it(tmp_path, folder):
    root = nmnist_folder(tmp_path)
    (root / "Train" / folder).mkdir()
    (root / "Train" / folder / "1.bin").write_bytes(nmnist_bytes([(0, 1, 1, 1)]))
    with pytest.raises(ValueError, match=f"class folder '{folder}' is not a digit 0-9"):
        ev.load_event_dataset("nmnist", root, T=2)
