"""Data-parallel training (refsnn.distributed): N processes against one, the allreduce time here,
and the cost model of ring allreduce at 8 and 64 processes (docs/distributed.md).

    python -m experiments.distributed [--processes 2 3] [--skip-runs]

Writes ``experiments/results/distributed.md``. Parts:

1. equality: ``refsnn train --network cnn --neuron clif --epochs 2 --batch-size 64 --dtype
   float64`` in 1 process and under ``mpiexec -n N``: the largest difference of any weight,
   BatchNorm buffer or optimizer array, relative to the array's largest value; the same in
   float32 after one optimizer step (``--batch-size 1437``: the whole training set is one batch);
2. scaling: seconds per epoch of the default float32 run (epochs 2 and 3, after the kernels
   load), 1 process with 2 and with 1 Numba thread, 2 processes with 1 thread each;
3. allreduce: ``World.sum`` (the fixed-order sum) and MPI's own ``Allreduce`` on the gradient
   buffers of the small CNN and of VGG-11 (float32), timed under ``mpiexec -n 2``;
4. cost model: a ring allreduce moves 2·(N-1)/N·B bytes per process in 2·(N-1) messages, so a
   step takes compute(per-process batch) + 2·(N-1)/N·B/bandwidth + 2·(N-1)·latency.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import RESULTS_DIR, log

RUN = ["train", "--network", "cnn", "--neuron", "clif"]
LATENCY = 5e-6        # s per message on an ordinary cluster network (TCP: 10-50 µs, InfiniBand: 1-2 µs)
NETWORKS = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}   # bytes per second


def train(processes, run_dir, *flags, threads=None, command=RUN):
    """One ``refsnn`` run (``command``: the subcommand and its first options; ``threads``:
    NUMBA_NUM_THREADS of each process); its final arrays and checkpoint metadata."""
    command = ([] if processes == 1 else ["mpiexec", "-n", str(processes)]) + [sys.executable, "-m", "refsnn.cli"] + \
        command + ["--no-progress", "--out-dir", str(run_dir), *flags]
    log(("" if threads is None else f"NUMBA_NUM_THREADS={threads} ") + " ".join(command))
    env = None if threads is None else {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    with np.load(run_dir / meta["weights"]) as f:
        return {k: f[k] for k in f.files}, meta


def worst(a, b):
    """``(max |a - b| / max |b|, name)`` over the floating-point arrays (relative to each array's
    scale: elementwise ratios of Adam moments near 0 mean nothing)."""
    return max((float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-300)), k)
               for k in b if b[k].dtype.kind == "f" and b[k].size)


def equality(processes, tmp):
    lines = ["| run | processes | largest relative difference (array) |", "|---|---|---|"]
    for what, flags in (("float64, 2 epochs, batch 64", ["--epochs", "2", "--batch-size", "64", "--dtype", "float64"]),
                        ("float32, 1 step, batch 1437", ["--epochs", "1", "--batch-size", "1437"])):
        reference, _ = train(1, tmp / f"{what[:7]}-1", *flags)
        lines.append(f"| {what} | 1 | (reference) |")
        for n in processes:
            arrays, meta = train(n, tmp / f"{what[:7]}-{n}", *flags)
            assert meta["world_size"] == n
            difference, name = worst(arrays, reference)
            lines.append(f"| {what} | {n} | {difference:.2e} ({name}) |")
    return lines


def methods(tmp):
    """DML, KD (a teacher trained first) and conversion fine-tuning (with its Dropout), 2 processes
    against one, float64."""
    lines = ["| run (float64) | largest relative difference, 2 processes against 1 (array) |", "|---|---|"]
    flags = ["--dtype", "float64"]
    train(1, tmp / "teacher", "--network", "mlp", "--epochs", "1", *flags, command=["train"])
    runs = {"refsnn train --method dml --epochs 1": RUN + ["--method", "dml", "--epochs", "1"],
            "refsnn train --method kd --teacher TEACHER --epochs 1": RUN + ["--method", "kd", "--teacher",
                                                                           str(tmp / "teacher"), "--epochs", "1"],
            "refsnn convert --dataset digits --network cnn --dnn-epochs 1 --finetune-epochs 2":
                ["convert", "--dataset", "digits", "--network", "cnn", "--dnn-epochs", "1", "--finetune-epochs", "2"]}
    for i, (name, command) in enumerate(runs.items()):
        one, _ = train(1, tmp / f"method{i}-1", *flags, command=command)
        two, _ = train(2, tmp / f"method{i}-2", *flags, command=command)
        difference, array = worst(two, one)
        lines.append(f"| `{name}` | {difference:.2e} ({array}) |")
    return lines


def scaling(tmp):
    lines = ["| processes × Numba threads | seconds per epoch (epochs 2, 3) | speed-up over 1 × 1 |", "|---|---|---|"]
    base = None
    for processes, threads in ((1, 1), (1, 2), (2, 1)):
        _, meta = train(processes, tmp / f"scaling-{processes}-{threads}", "--epochs", "3", threads=threads)
        seconds = [row["seconds"] for row in meta["history"][1:]]
        base = base or float(np.mean(seconds))
        lines.append(f"| {processes} × {threads} | {', '.join(f'{t:.2f}' for t in seconds)} | "
                     f"{base / float(np.mean(seconds)):.2f} |")
    load = os.getloadavg()[0]
    return lines + ["", f"(default run: cnn, clif, float32, batch 64, 23 steps per epoch; load average {load:.1f} "
                        f"on {os.cpu_count()} CPUs, shared with other work)"]


def allreduce_worker():
    """Under mpiexec: time World.sum and Allreduce on the gradient buffers; process 0 prints JSON."""
    from mpi4py import MPI

    from refsnn import distributed
    from refsnn.models import build_network
    world = distributed.world()
    results = {}
    for network, shape in (("cnn", (1, 8, 8)), ("vgg11", (3, 32, 32))):
        model = build_network(network, shape, 10, neuron="clif", seed=0)
        buffer = np.random.default_rng(world.rank).random(sum(p.size for _, p, _ in model.named_parameters()),
                                                          dtype=np.float32)
        timings = {}
        for name, reduce in (("World.sum", lambda: world.sum(buffer)),
                             ("Allreduce", lambda: world.comm.Allreduce(MPI.IN_PLACE, buffer.copy()))):
            reduce()
            repeats = 200 if buffer.size < 1e5 else 10
            times = []
            for _ in range(repeats):
                world.comm.Barrier()
                start = time.perf_counter()
                reduce()
                times.append(time.perf_counter() - start)
            timings[name] = float(np.median(times))
        results[network] = {"parameters": int(buffer.size), "bytes": int(buffer.nbytes), **timings}
    if world.rank == 0:
        print(json.dumps(results))


def step_seconds(network, shape, batch, T=4):
    """One training step (forward, backward, Adam) of ``network`` in one process, median of 3."""
    from refsnn.losses import cross_entropy
    from refsnn.models import build_network
    from refsnn.optim import Adam
    model = build_network(network, shape, 10, neuron="clif", seed=0)
    opt = Adam(list(model.named_parameters()), lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((T, batch) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss, grad = cross_entropy(model.forward(x), y)
        model.zero_grad()
        model.backward(grad)
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ring_seconds(nbytes, processes, bandwidth, latency=LATENCY):
    """Ring allreduce: reduce-scatter then all-gather, 2·(N-1) messages of B/N bytes each."""
    return 2 * (processes - 1) / processes * nbytes / bandwidth + 2 * (processes - 1) * latency


def cost_model(measured, compute):
    lines = ["| network | bytes all-reduced per step | allreduce here, 2 processes (World.sum / MPI Allreduce) "
             "| compute per step here (batch 64 per process) | processes | network | ring allreduce | step time "
             "| communication share |", "|---|---|---|---|---|---|---|---|---|"]
    for network, m in measured.items():
        for processes in (8, 64):
            for label, bandwidth in NETWORKS.items():
                ring = ring_seconds(m["bytes"], processes, bandwidth)
                step = compute[network] + ring
                lines.append(f"| {network} ({m['parameters']:,} parameters) | {m['bytes']:,} | "
                             f"{m['World.sum'] * 1e3:.3f} / {m['Allreduce'] * 1e3:.3f} ms | "
                             f"{compute[network]:.3f} s | {processes} | {label} | {ring * 1e3:.3f} ms | "
                             f"{step:.3f} s | {ring / step:.1%} |")
    return lines


def main():
    if sys.argv[1:] == ["allreduce-worker"]:
        return allreduce_worker()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[2, 3])
    p.add_argument("--skip-runs", action="store_true", help="only the allreduce timing and the cost model")
    args = p.parse_args()
    sections = []
    if not args.skip_runs:
        with tempfile.TemporaryDirectory() as tmp:
            sections += ["## N processes against one", ""] + equality(args.processes, Path(tmp)) + [""]
            sections += ["## The other methods, 2 processes against one", ""] + methods(Path(tmp)) + [""]
            sections += ["## Scaling on this machine", ""] + scaling(Path(tmp)) + [""]
    log("allreduce timing under mpiexec -n 2")
    out = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "experiments.distributed", "allreduce-worker"],
                         check=True, capture_output=True, text=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    log("compute per step (one process, batch 64, T = 4)")
    # VGG-11 measured at batch 16 and scaled to 64 (the step is linear in the batch), to save time
    compute = {"cnn": step_seconds("cnn", (1, 8, 8), 64), "vgg11": 4 * step_seconds("vgg11", (3, 32, 32), 16)}
    sections += ["## Cost model (ring allreduce, float32 gradients, latency "
                 f"{LATENCY * 1e6:.0f} µs per message)", ""] + cost_model(measured, compute)
    text = "# Data-parallel training: measured here\n\n" + "\n".join(sections) + "\n"
    (RESULTS_DIR / "distributed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
