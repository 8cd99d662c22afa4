"""Data-parallel training over MPI (refsnn.distributed) equals one process.

The multi-process tests launch ``mpiexec -n 2`` / ``-n 3`` (oversubscribed on small machines)
and compare every weight, BatchNorm buffer and optimizer array with a run of the same program
in one process without MPI: float64 within 1e-9 relative (the processes add the same terms in
another order, about 1e-16 per operation; a real bug, like the three planted below, is off by
1e-4 and more), float32 within docs/verification.md's 1e-5 after one step. The planted bugs
are monkeypatched inside the launched processes; each must make the comparison fail.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from refsnn import distributed

MPI_MISSING = shutil.which("mpiexec") is None or importlib.util.find_spec("mpi4py") is None
needs_mpi = pytest.mark.skipif(MPI_MISSING, reason="mpiexec and mpi4py are not installed "
                                                   "(pip install refsnn[distributed])")

# The program each process runs: train one epoch on the first `samples` digits (the last batch
# shorter, so split unevenly), evaluate part of the test set, and let process 0 save every array.
WORKER = r'''
import dataclasses, json, sys
import numpy as np
from refsnn import distributed
from refsnn.train import Run, TrainConfig
import refsnn.train.run as run_module

spec = json.loads(sys.argv[1])
world = distributed.world()
plant = spec.get("plant")
if plant == "bn_unsynced":       # BatchNorm statistics over this process's samples only
    distributed.step_world = distributed.World
if plant == "poisson_by_rank":   # Poisson spikes drawn from a seed that depends on the rank
    encode = run_module.encode
    run_module.encode = lambda cfg, x, epoch, first: encode(dataclasses.replace(cfg, seed=cfg.seed + world.rank),
                                                            x, epoch, first)
n = spec["samples"]
if spec.get("finetune"):         # conversion fine-tuning: a converted SNN with Dropout 0.1
    from refsnn.convert import calibrate, convert
    from refsnn.convert.pipeline import ConvertConfig, dnn_config, finetune_epoch, make_finetune_optimizer
    ccfg = ConvertConfig(network="cnn", dataset="digits", dtype=spec["config"]["dtype"])
    dnn = Run(dnn_config(ccfg))
    snn = convert(dnn.model, calibrate(dnn.model, dnn.train_x[:64], ccfg.T, rng=np.random.default_rng(3)), 0.1,
                  rng=np.random.default_rng(4))
    opt = make_finetune_optimizer(snn, 1e-3)
    finetune_epoch(snn, opt, dnn.train_x[:n], dnn.train_y[:n], ccfg.T, spec["config"]["batch_size"])
    arrays = {**{"model/" + k: v for k, v in snn.state_dict().items()},
              **{"optim/" + k: v for k, v in opt.state_dict().items()}}
    evaluation = []
else:
    run = Run(TrainConfig.from_dict(spec["config"]))
    run.train_x, run.train_y = run.train_x[:n], run.train_y[:n]
    run.test_x, run.test_y = run.test_x[:spec["test_samples"]], run.test_y[:spec["test_samples"]]
    if plant == "loss_per_shard":    # each process's mean loss, averaged over the processes
        loss_and_grads = run.loss_and_grads
        def per_shard(x, y, first):
            loss, out, grads = loss_and_grads(x, y, first)
            k = distributed._BATCH[0] / (len(y) * world.size)   # the loop's weight len(y)/n becomes 1/size
            return loss * k, out, [(m, g * g.dtype.type(k)) for m, g in grads]
        run.loss_and_grads = per_shard
    for _ in range(spec.get("steps_epochs", 1)):
        run.train_epoch(progress=False)
        run.epoch += 1
    arrays = {**{"model/" + k: v for k, v in run.model.state_dict().items()},
              **{"optim/" + k: v for k, v in run.opt.state_dict().items()}}
    if run.twin is not None:
        arrays.update({"twin/" + k: v for k, v in run.twin.state_dict().items()})
        arrays.update({"twin_optim/" + k: v for k, v in run.twin_opt.state_dict().items()})
    evaluation = list(run.evaluate())
if world.rank == 0:
    np.savez(spec["out"], **arrays)
    print(json.dumps({"size": world.size, "evaluation": evaluation}))
'''

SMALL = {"network": "cnn", "neuron": "clif", "encoding": "poisson", "T": 2, "batch_size": 16, "dtype": "float64",
         "seed": 3}
SAMPLES = 53          # batches of 16, 16, 16 and 5: the last one split 3 + 2 and 2 + 2 + 1
TEST_SAMPLES = 37     # evaluation in batches of 16, 16 and 5


def launch(tmp_path, processes, config, plant=None, samples=SAMPLES, **spec):
    """Run WORKER in ``processes`` processes (1: plain Python, no MPI); its arrays and output."""
    out = tmp_path / f"{processes}-{plant}-{config['dtype']}-{len(os.listdir(tmp_path))}.npz"
    spec = {"config": config, "samples": samples, "test_samples": TEST_SAMPLES, "plant": plant, "out": str(out),
            **spec}
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    command = [sys.executable, str(worker), json.dumps(spec)]
    if processes > 1:
        command = ["mpiexec", "-n", str(processes)] + command
    p = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["size"] == processes
    with np.load(out) as f:
        return {k: f[k] for k in f.files}, report["evaluation"]


def worst_difference(a, b):
    """``(max |a - b| / max |b|, name)`` over the floating-point arrays of two runs: relative to
    each array's scale, since elementwise ratios of values near 0 (Adam moments) mean nothing."""
    assert sorted(a) == sorted(b)
    return max((float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-300)), k)
               for k in a if a[k].dtype.kind == "f" and a[k].size)


def assert_equal_runs(a, b, rtol):
    worst, name = worst_difference(a, b)
    assert worst <= rtol, f"{name} differs by {worst:.3g} relative (tolerance {rtol:g})"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process run every comparison is against (computed once)."""
    return launch(tmp_path_factory.mktemp("one"), 1, SMALL)


@needs_mpi
@pytest.mark.parametrize("processes", [2, 3])
def test_processes_train_and_evaluate_as_one_process_float64(tmp_path, one_process, processes):
    arrays, evaluation = launch(tmp_path, processes, SMALL)
    reference, reference_evaluation = one_process
    assert_equal_runs(arrays, reference, 1e-9)
    np.testing.assert_allclose(evaluation, reference_evaluation, rtol=1e-12)  # loss, accuracy of 37 test samples


@needs_mpi
def test_float32_one_step_within_float32_tolerance(tmp_path):
    config = dict(SMALL, dtype="float32", batch_size=21)
    reference, _ = launch(tmp_path, 1, config, samples=21)
    arrays, _ = launch(tmp_path, 2, config, samples=21)   # shards of 11 and 10
    assert_equal_runs(arrays, reference, 1e-5)  # docs/verification.md's float32 tolerance


@needs_mpi
@pytest.mark.parametrize("plant", ["loss_per_shard", "bn_unsynced", "poisson_by_rank"])
def test_planted_bug_breaks_the_equality(tmp_path, one_process, plant):
    arrays, _ = launch(tmp_path, 2, SMALL, plant=plant)
    with pytest.raises(AssertionError, match="relative"):
        assert_equal_runs(arrays, one_process[0], 1e-9)


@needs_mpi
@pytest.mark.parametrize("what", ["tna", "finetune", "rate_reg"])
def test_twin_training_and_conversion_fine_tuning_as_one_process(tmp_path, what):
    """TNA (two networks, two optimizers in one gradient sum), the fine-tuning of a converted
    SNN (its Dropout masks drawn for the global batch), and snnTorch's L1 rate penalty (a sum over
    the batch, not a mean: each process's part is not weighed by its share)."""
    config = {"tna": dict(SMALL, method="tna", encoding="direct"), "finetune": dict(SMALL),
              "rate_reg": dict(SMALL, loss="ce_count", rate_reg=0.01)}[what]
    spec = {"finetune": what == "finetune"}
    reference, _ = launch(tmp_path, 1, config, **spec)
    arrays, _ = launch(tmp_path, 2, config, **spec)
    assert_equal_runs(arrays, reference, 1e-9)


def test_shards_are_contiguous_and_cover_the_batch():
    world = distributed.World()
    for n, size in ((5, 3), (64, 3), (29, 2), (3, 3)):
        world.size = size
        shards = []
        for world.rank in range(size):
            shards.append(world.shard(n))
        assert shards[0][0] == 0 and shards[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
        assert max(h - lo for lo, h in shards) - min(h - lo for lo, h in shards) <= 1


def test_launch_without_mpi4py_is_one_clear_error(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from refsnn.cli import main\n"
            f"sys.exit(main(['train', '--epochs', '1', '--out-dir', {str(tmp_path / 'run')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: refsnn was started as one of 2 processes (by mpiexec or srun), "
                                             "but mpi4py is not installed: pip install refsnn[distributed]"]
    with pytest.raises(distributed.DistributedError, match="OMPI_COMM_WORLD_SIZE = 'two'"):
        distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "two"})
    assert distributed.launched_size({}) == 1


# epochs of about a second here (90 steps): long enough to be killed in the middle of one
CLI = ["-m", "refsnn.cli", "train", "--network", "mlp", "--T", "2", "--batch-size", "16", "--dtype", "float64",
       "--no-progress"]


class ProcessGroup:
    """An ``mpiexec`` and its processes, signalled together (as a job killed on a cluster)."""

    def __init__(self, command, **options):
        self.process = subprocess.Popen(command, start_new_session=True, **options)

    def send_signal(self, signum):
        os.killpg(self.process.pid, signum)

    def wait(self, timeout=None):
        return self.process.wait(timeout)


def train(processes, run_dir, *flags, timeout=300):
    command = [sys.executable] + CLI + ["--out-dir", str(run_dir), *flags]
    command = (["mpiexec", "-n", str(processes)] if processes > 1 else []) + command
    p = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def final_arrays(run_dir):
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    with np.load(run_dir / meta["weights"]) as f:
        return meta, {k: f[k] for k in f.files}


@needs_mpi
def test_killed_two_process_run_resumes_with_one_and_two_processes(tmp_path, kill_mid_epoch):
    out = train(2, tmp_path / "whole", "--epochs", "3")
    assert out.startswith("refsnn train: 2 processes, mlp")
    whole_meta, whole = final_arrays(tmp_path / "whole")
    assert whole_meta["world_size"] == 2
    killed = tmp_path / "killed"
    group = ProcessGroup(["mpiexec", "-n", "2", sys.executable] + CLI + ["--epochs", "3", "--out-dir", str(killed)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # killed during epoch 3, timed by epoch 2 (epoch 1 also loads the kernels: 40% of it can outlast
    # the whole of a later epoch)
    meta_file = kill_mid_epoch(group, killed, after_epoch=2)
    assert json.loads(meta_file.read_text())["epoch"] == 2
    shutil.copytree(killed, tmp_path / "killed-again")
    for processes, run_dir in ((1, killed), (2, tmp_path / "killed-again")):
        train(processes, run_dir, "--resume")
        meta, arrays = final_arrays(run_dir)
        assert meta["epoch"] == 3 and meta["world_size"] == processes
        assert_equal_runs(arrays, whole, 1e-9)


def _pid_of_rank(marker, rank, deadline):
    """The pid of the process launched with environment ``marker`` and ``PMI_RANK=rank``."""
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if marker.encode() in environ and f"PMI_RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no process of rank {rank} appeared")


@needs_mpi
def test_a_killed_process_stops_the_others_with_a_message(tmp_path):
    marker = f"REFSNN_TEST_RUN={os.getpid()}-{time.time()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    group = ProcessGroup(["mpiexec", "-n", "3", sys.executable] + CLI + ["--epochs", "50", "--out-dir",
                                                                         str(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert group.process.stdout.readline().startswith("refsnn train: 3 processes")  # training has started
    os.kill(_pid_of_rank(marker, 1, time.time() + 60), signal.SIGKILL)
    start = time.time()
    out, err = group.process.communicate(timeout=60)   # a hang fails here
    assert time.time() - start < 30
    assert group.process.returncode != 0
    report = out + err   # MPICH's mpiexec prints its report on stdout
    assert "BAD TERMINATION" in report and "signal 9" in report, report  # names the process that died and how


@needs_mpi
def test_an_error_in_one_process_ends_all_of_them(tmp_path):
    """Process 0 alone finds the run directory locked; the others must not wait for it forever."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    import fcntl
    with open(run_dir / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = subprocess.run(["mpiexec", "-n", "2", sys.executable] + CLI + ["--epochs", "1", "--out-dir", str(run_dir)],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert f"error: {run_dir} is in use" in p.stderr
