"""The trainer and CLI: exact resume after SIGKILL, checkpoint integrity, errors, config files."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refsnn.cli import main
from refsnn.train import Run, TrainConfig, TrainingDiverged, load_run, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "refsnn", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def final_arrays(out_dir):
    meta, arrays = read_checkpoint(out_dir)
    return meta, arrays


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, kill_mid_epoch):
    epochs = "6"
    slow = ["--network", "cnn", "--neuron", "clif", "--no-progress"]  # ~0.5 s epochs: room to kill mid-epoch
    whole = cli(*slow, "--epochs", epochs, "--out-dir", str(tmp_path / "whole"))
    killed = cli(*slow, "--epochs", epochs, "--out-dir", str(tmp_path / "killed"))
    meta_file = kill_mid_epoch(killed, tmp_path / "killed")  # inside epoch 3
    assert killed.returncode == -signal.SIGKILL
    assert json.loads(meta_file.read_text())["epoch"] < int(epochs)  # really interrupted
    resumed = cli(*slow, "--epochs", epochs, "--out-dir", str(tmp_path / "killed"), "--resume")
    out_resumed, _ = resumed.communicate(timeout=600)
    out_whole, _ = whole.communicate(timeout=600)
    assert resumed.returncode == 0, out_resumed
    assert whole.returncode == 0, out_whole
    assert "resuming" in out_resumed
    meta_a, a = final_arrays(tmp_path / "whole")
    meta_b, b = final_arrays(tmp_path / "killed")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-identical, optimizer state included
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(meta_a["history"]) == strip(meta_b["history"])
    assert len((tmp_path / "killed" / "metrics.csv").read_text().splitlines()) == int(epochs) + 1


def small_config(tmp_path, **kw):
    options = dict(network="mlp", neuron="lif", T=2, epochs=1, batch_size=64, out_dir=str(tmp_path))
    return TrainConfig(**{**options, **kw})


def test_checkpoint_round_trip_and_eval(tmp_path, capsys):
    run = Run(small_config(tmp_path))
    run.fit(progress=False, log=lambda s: None)
    again = load_run(tmp_path)
    for (n, p, _), (m, q, _) in zip(run.model.named_parameters(), again.model.named_parameters()):
        assert n == m
        np.testing.assert_array_equal(p, q)
    assert main(["eval", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "energy per sample" in out


def test_corrupt_and_truncated_checkpoints(tmp_path, capsys):
    run = Run(small_config(tmp_path))
    run.fit(progress=False, log=lambda s: None)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    weights = tmp_path / meta["weights"]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        read_checkpoint(tmp_path)
    assert main(["eval", str(tmp_path)]) == 2
    assert "corrupt checkpoint" in capsys.readouterr().err
    weights.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])  # one flipped byte
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        read_checkpoint(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        read_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint metadata"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "nowhere")


def test_checkpoint_refuses_pickles(tmp_path):
    run = Run(small_config(tmp_path))
    run.fit(progress=False, log=lambda s: None)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    weights = tmp_path / meta["weights"]
    np.savez(weights, evil=np.array([{"a": 1}], dtype=object))  # an object array needs pickle
    import hashlib
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pickle"):
        read_checkpoint(tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = Run(small_config(tmp_path, epochs=2))
    run.train_epoch(progress=False)
    run.epoch = 1
    run.save()
    good = (tmp_path / "checkpoint.json").read_text()
    run.model[1].params["weight"][...] = np.nan
    with pytest.raises(TrainingDiverged, match="epoch 2, step 0"):
        run.fit(progress=False, log=lambda s: None)
    assert (tmp_path / "checkpoint.json").read_text() == good
    read_checkpoint(tmp_path)  # still loadable


def test_wrong_data_directory(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "absent"), "--out-dir",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    assert "absent" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar10", "--out-dir", str(tmp_path / "run")]) == 2
    assert "data_dir" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    for args in (["--optimizer", "lbfgs"], ["--T", "0"], ["--encoding", "phase"], ["--lr", "-1"],
                 ["--neuron", "hodgkin"], ["--network", "gpt"]):
        assert main(["train", *args, "--out-dir", str(tmp_path), "--no-progress"]) == 2, args
        assert "error:" in capsys.readouterr().err


def test_toml_config_and_flag_override(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('network = "mlp"\nneuron = "plif"\nT = 2\nepochs = 1\nlr = 0.002\n'
                      f'out_dir = "{tmp_path / "out"}"\n[neuron_options]\nsurrogate = "atan"\n')
    assert main(["train", "--config", str(config), "--lr", "0.003", "--no-progress"]) == 0
    meta, _ = read_checkpoint(tmp_path / "out")
    assert meta["config"]["neuron"] == "plif" and meta["config"]["lr"] == 0.003
    assert meta["config"]["neuron_options"] == {"surrogate": "atan"}
    config.write_text("epochz = 3\n")
    assert main(["train", "--config", str(config)]) == 2


class _Communicator:
    """Stands in for mpi4py's communicator of 3 processes (check_batches only asks its size)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 3


def test_a_batch_size_below_the_number_of_processes_is_named_as_such():
    from refsnn.data import Batches
    from refsnn.distributed import World
    from refsnn.train.loop import check_batches
    images, labels = np.zeros((10, 4), np.float32), np.zeros(10, np.int64)
    with pytest.raises(ValueError, match="the batch size 2 .* is smaller than the 3 processes"):
        check_batches(Batches(images, labels, 2), World(_Communicator()))
    with pytest.raises(ValueError, match="leaves at least 3 samples in the last batch"):  # 10 = 4 + 4 + 2
        check_batches(Batches(images, labels, 4), World(_Communicator()))
    check_batches(Batches(images, labels, 5), World(_Communicator()))
