"""Write the SYNTHETIC event data sets shipped in data/, in the real N-MNIST and SHD file formats.

No real event data set can be downloaded where refsnn is built, so these stand in for N-MNIST and
SHD in tests and experiments: the same readers and the same commands (``refsnn train --dataset
nmnist --data-dir data/SYNTHETIC-nmnist``) then work unchanged on the real sets. They are
SYNTHETIC (not recordings of any sensor) and labelled so in their folder names, in a
``SYNTHETIC.txt`` file in each folder, in the HDF5 files' ``description`` attribute, in
data/README.md and in refsnn's messages.

* ``SYNTHETIC-nmnist/{Train,Test}/<digit>/<id>.bin`` (N-MNIST's 5-byte events, docs/events.md §1.1):
  a shipped MNIST test image on the 34x34 sensor moved along N-MNIST's three saccades (a
  triangle, 100 ms each, sampled every 10 ms, bilinear shifts); each pixel whose brightness
  changes by ``THRESHOLD`` emits an ON (brighter) or OFF event per threshold crossed, at a uniform
  time within the 10 ms step (a DVS pixel's contrast threshold, without its log response), plus
  uniform noise events. Train uses MNIST test images 0..; test the images from 5,000 on.
* ``SYNTHETIC-shd/shd_{train,test}.h5`` (SHD's HDF5 layout, docs/events.md §1.2): 20 classes over
  700 units; each class is a fixed set of ``TRACKS`` rising or falling "formant" tracks (a start
  unit, a slope in units per second, a start time and a duration); a sample stretches the class's
  time axis by a random factor in [0.8, 1.2], shifts its units by up to ±40, emits about 12 spikes
  along each track with unit jitter N(0, 15) and time jitter N(0, 30 ms), and adds about 100
  uniform noise spikes (jitter and noise chosen so that a small MLP does not reach 100%).

Deterministic from ``--seed`` (default 0): the same seed writes byte-identical files (HDF5 with
``track_times=False``). Run from the repository root: ``python data/make_synthetic_events.py``.
"""
import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import shift

from refsnn.data import load_mnist_t10k

OUT = Path(__file__).resolve().parent
THRESHOLD = 0.18         # brightness change (in [0, 1] pixel units) per event
STEP_US = 10_000         # one sampling step of a saccade, µs
SACCADE = [(0.0, 0.0), (1.5, 1.5), (3.0, 0.0), (0.0, 0.0)]  # triangle corners (dy, dx), pixels
NOISE_EVENTS = 20
TRACKS, UNITS, SHD_CLASSES = 5, 700, 20
NOTE = ("SYNTHETIC data written by data/make_synthetic_events.py (seed {seed}), in the {fmt} file format; "
        "not recorded by any sensor. See data/README.md.\n")


def saccade_offsets(steps_per_saccade=10):
    """(dy, dx) at each sampling step along the three saccades."""
    out = []
    for (y0, x0), (y1, x1) in zip(SACCADE[:-1], SACCADE[1:]):
        for k in range(steps_per_saccade):
            a = k / steps_per_saccade
            out.append((y0 + a * (y1 - y0), x0 + a * (x1 - x0)))
    return out + [SACCADE[-1]]


def nmnist_events(image, rng):
    """One recording: int64 [n, 4] rows (t µs, x, y, p), sorted by time."""
    canvas = np.zeros((34, 34))
    canvas[2:30, 2:30] = image
    frames = [shift(canvas, offset, order=1) for offset in saccade_offsets()]
    rows = []
    for k in range(1, len(frames)):
        change = frames[k] - frames[k - 1]
        crossings = np.floor(np.abs(change) / THRESHOLD).astype(np.int64)
        y, x = np.nonzero(crossings)
        count = crossings[y, x]
        y, x = np.repeat(y, count), np.repeat(x, count)
        p = (np.repeat(change[crossings > 0], count) > 0).astype(np.int64)
        t = (k - 1) * STEP_US + rng.integers(0, STEP_US, len(x))
        rows.append(np.stack([t, x, y, p], 1))
    noise = np.stack([rng.integers(0, len(frames) * STEP_US, NOISE_EVENTS), rng.integers(0, 34, NOISE_EVENTS),
                      rng.integers(0, 34, NOISE_EVENTS), rng.integers(0, 2, NOISE_EVENTS)], 1)
    events = np.concatenate(rows + [noise])
    return events[np.argsort(events[:, 0], kind="stable")]


def nmnist_bytes(events):
    """N-MNIST's 5-byte encoding: x, y, polarity bit 7 + timestamp bits 22..16, bits 15..8, bits 7..0."""
    t, x, y, p = events.T
    assert t.max() < 1 << 23
    return np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], 1).astype(np.uint8).tobytes()


def write_nmnist(root, per_class, seed):
    images, labels = load_mnist_t10k()
    rng = np.random.default_rng([seed, 1])
    for split, first in (("Train", 0), ("Test", 5000)):
        for digit in range(10):
            chosen = np.flatnonzero(labels[first:] == digit)[:per_class[split]] + first
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for index in chosen:
                (folder / f"{index:05d}.bin").write_bytes(nmnist_bytes(nmnist_events(images[index, 0], rng)))


def shd_sample(tracks, rng):
    """One SHD recording: times (s, float32) and units (uint16), sorted by time."""
    stretch, unit_shift = rng.uniform(0.8, 1.2), rng.integers(-40, 41)
    times, units = [], []
    for u0, slope, t0, duration in tracks:
        n = rng.poisson(12)
        s = rng.uniform(0, duration, n)
        times.append((t0 + s) * stretch + rng.normal(0, 0.03, n))
        units.append(u0 + unit_shift + slope * s + rng.normal(0, 15, n))
    n = rng.poisson(100)
    times.append(rng.uniform(0, 1, n))
    units.append(rng.uniform(0, UNITS, n))
    t, u = np.concatenate(times), np.rint(np.concatenate(units))
    keep = (t >= 0) & (u >= 0) & (u < UNITS)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order].astype(np.float32), u[keep][order].astype(np.uint16)


def write_shd(root, per_class, seed):
    rng = np.random.default_rng([seed, 2])
    classes = [np.stack([rng.uniform(50, 650, TRACKS), rng.uniform(-400, 400, TRACKS),
                         rng.uniform(0.05, 0.5, TRACKS), rng.uniform(0.15, 0.35, TRACKS)], 1)
               for _ in range(SHD_CLASSES)]
    root.mkdir(parents=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(SHD_CLASSES), per_class[split])
        samples = [shd_sample(classes[c], rng) for c in labels]
        with h5py.File(root / f"shd_{split}.h5", "w", track_times=False) as f:
            f.attrs["description"] = NOTE.format(seed=seed, fmt="SHD HDF5")
            spikes = f.create_group("spikes")
            times = spikes.create_dataset("times", (len(labels),), h5py.vlen_dtype(np.float32), track_times=False)
            units = spikes.create_dataset("units", (len(labels),), h5py.vlen_dtype(np.uint16), track_times=False)
            for i, (t, u) in enumerate(samples):
                times[i], units[i] = t, u
            f.create_dataset("labels", data=labels.astype(np.uint16), track_times=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write SYNTHETIC-nmnist/ and SYNTHETIC-shd/ in")
    args = parser.parse_args()
    for name, write, fmt, per_class in (("SYNTHETIC-nmnist", write_nmnist, "N-MNIST .bin", {"Train": 60, "Test": 15}),
                                        ("SYNTHETIC-shd", write_shd, "SHD HDF5", {"train": 40, "test": 10})):
        root = args.out / name
        if root.exists():
            shutil.rmtree(root)
        write(root, per_class, args.seed)
        (root / "SYNTHETIC.txt").write_text(NOTE.format(seed=args.seed, fmt=fmt))
        (root / ".gitignore").write_text("refsnn-frames-*.npz\n")  # the frame caches refsnn writes here
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"wrote {root} (SYNTHETIC, {size:,} bytes)")


if __name__ == "__main__":
    main()
