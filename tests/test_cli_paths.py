"""Every path the command line offers, run end to end: each encoding, method, network family,
neuron, optimizer, schedule, loss and data-set reader that `refsnn train` / `convert` / `eval` /
`export-ternary` accept trains (one short epoch), saves, and evaluates from its run directory.

The readers are fed real files in their real formats, written small (tests/test_data.py's writers):
IDX (gzipped and not) for MNIST / Fashion-MNIST / KMNIST, CIFAR-10/100 binary and python pickles.
"""
import json
import re

import numpy as np
import pytest

from refsnn.cli import main
from refsnn.data import get_dataset
from refsnn.models import NETWORKS
from refsnn.neurons import EXAMPLES, NEURONS
from test_data import cifar_batch, cifar_record_bytes, dump_cifar_pickle, write_idx_set

QUICK = ["--epochs", "1", "--no-progress"]


def run_cli(capsys, *argv):
    """``refsnn *argv`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reported_accuracy(out):
    """The accuracy a report line prints, as a fraction."""
    return float(re.search(r"test accuracy ([\d.]+)%", out).group(1)) / 100


def train_and_eval(capsys, run_dir, *options):
    code, out, err = run_cli(capsys, "train", *QUICK, "--out-dir", run_dir, *options)
    assert code == 0, out + err
    trained = reported_accuracy(out)
    code, out, err = run_cli(capsys, "eval", run_dir)
    assert code == 0, out + err
    assert reported_accuracy(out) == trained  # the saved network is the one that was evaluated
    return out


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A 28x28 MNIST-format set, 48 train / 16 test images, images gzipped, labels not."""
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    write_idx_set(folder, "train", 48, rng, hw=(28, 28))
    write_idx_set(folder, "test", 16, rng, compress_images=False, compress_labels=True, hw=(28, 28))
    return folder


def write_cifar(folder, name, version, n_train=24, n_test=8):
    """A CIFAR-10/100 set with all of its standard file names, binary or python version."""
    rng = np.random.default_rng(1)
    cifar100 = name == "cifar100"
    names = {("cifar10", "binary"): ([f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
             ("cifar10", "python"): ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
             ("cifar100", "binary"): (["train.bin"], ["test.bin"]),
             ("cifar100", "python"): (["train"], ["test"])}[name, version]
    folder.mkdir(parents=True, exist_ok=True)
    for files, n in zip(names, (n_train, n_test)):
        for file in files:
            pixels, fine, coarse = cifar_batch(rng, n // len(files) or 1, cifar100)
            if version == "binary":
                columns = (coarse, fine) if cifar100 else (fine,)
                (folder / file).write_bytes(cifar_record_bytes(pixels, *columns))
            else:
                labels = {b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()} if cifar100 \
                    else {b"labels": fine.tolist()}
                dump_cifar_pickle(folder / file, {b"data": pixels, **labels}, python2=False)
    return folder


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", "binary")


# ------------------------------------------------------------------------------------------
# data-set readers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "kmnist"])
def test_idx_datasets_train_and_evaluate(capsys, tmp_path, idx_dir, dataset):
    out = train_and_eval(capsys, tmp_path / "run", "--dataset", dataset, "--data-dir", idx_dir,
                         "--network", "mlp", "--neuron", "lif")
    assert "16 samples" in out


@pytest.mark.parametrize("name, version", [("cifar10", "binary"), ("cifar10", "python"),
                                           ("cifar100", "binary"), ("cifar100", "python")])
def test_cifar_readers_train_and_evaluate(capsys, tmp_path, name, version):
    folder = write_cifar(tmp_path / "data", name, version)
    out = train_and_eval(capsys, tmp_path / "run", "--dataset", name, "--data-dir", folder,
                         "--network", "mlp", "--neuron", "if", "--augment", "crop_flip")
    assert "8 samples" in out


def test_shipped_mnist_test_set_trains(capsys, tmp_path):
    out = train_and_eval(capsys, tmp_path / "run", "--dataset", "mnist-t10k", "--network", "mlp",
                         "--neuron", "lif", "--T", "1", "--batch-size", "256")
    assert "2000 samples" in out


# ------------------------------------------------------------------------------------------
# encodings, neurons, optimizers, schedules, losses, precision
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
def test_every_encoding_trains_and_evaluates(capsys, tmp_path, encoding):
    out = train_and_eval(capsys, tmp_path / "run", "--network", "mlp", "--neuron", "lif", "--encoding", encoding)
    assert reported_accuracy(out) > 0.5  # digits, one epoch: a network that learned something


@pytest.mark.parametrize("neuron", [*NEURONS, "relu", "clipped_relu"])
def test_every_neuron_trains_and_evaluates(capsys, tmp_path, neuron):
    options = ["--T", "1"] if neuron in ("relu", "clipped_relu") or NEURONS[neuron].max_steps == 1 else []
    if neuron in NEURONS and EXAMPLES[neuron][0]:  # its first example: RLeaky needs beta, LSNN fires sooner
        options += ["--neuron-options", json.dumps(EXAMPLES[neuron][0])]
    train_and_eval(capsys, tmp_path / "run", "--network", "cnn", "--neuron", neuron, *options)


@pytest.mark.parametrize("options", [
    ["--optimizer", "sgd", "--schedule", "step", "--step-size", "1", "--loss", "tet"],
    ["--optimizer", "adamw", "--weight-decay", "0.01", "--schedule", "none", "--dtype", "float64"],
], ids=["sgd-step-tet", "adamw-none-float64"])
def test_optimizers_schedules_losses_and_dtypes(capsys, tmp_path, options):
    train_and_eval(capsys, tmp_path / "run", "--network", "mlp", "--neuron", "lif", *options)


# ------------------------------------------------------------------------------------------
# network families
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_network_family_trains_and_evaluates(capsys, tmp_path, cifar_dir, network):
    # recurrent_mlp is built around the recurrent neuron RLeaky (beta has no default, as in snnTorch)
    neuron = ["rleaky", "--neuron-options", '{"beta": 0.9}'] if network == "recurrent_mlp" else ["lif"]
    train_and_eval(capsys, tmp_path / "run", "--network", network, "--neuron", *neuron, "--T", "1",
                   "--dataset", "cifar10", "--data-dir", cifar_dir, "--batch-size", "24")


# ------------------------------------------------------------------------------------------
# methods: TNA, DML, KD, ternary weights and their export, conversion
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tna", "dml"])
def test_twin_methods_train_and_evaluate(capsys, tmp_path, method):
    train_and_eval(capsys, tmp_path / "run", "--network", "mlp", "--neuron", "lif", "--method", method)


def test_knowledge_distillation_from_a_run_directory(capsys, tmp_path):
    train_and_eval(capsys, tmp_path / "teacher", "--network", "mlp", "--neuron", "relu", "--T", "1")
    train_and_eval(capsys, tmp_path / "student", "--network", "mlp", "--neuron", "lif", "--method", "kd",
                   "--teacher", tmp_path / "teacher")


def test_ternary_run_exports_and_the_export_evaluates(capsys, tmp_path):
    out = train_and_eval(capsys, tmp_path / "run", "--network", "cnn", "--neuron", "lif", "--ternary")
    trained = reported_accuracy(out)
    code, out, err = run_cli(capsys, "export-ternary", tmp_path / "run", tmp_path / "net.npz")
    assert code == 0, out + err
    code, out, err = run_cli(capsys, "eval", tmp_path / "net.npz")
    assert code == 0, out + err
    assert reported_accuracy(out) == trained  # the export forwards with the same ternary weights
    train_and_eval(capsys, tmp_path / "kd", "--network", "mlp", "--neuron", "lif", "--method", "kd",
                   "--teacher", tmp_path / "net.npz")


def test_conversion_runs_and_its_output_evaluates(capsys, tmp_path, idx_dir):
    code, out, err = run_cli(capsys, "convert", "--dataset", "mnist", "--data-dir", idx_dir, "--network", "mlp",
                             "--dnn-epochs", "1", "--finetune-epochs", "1", "--calibration-samples", "16",
                             "--T", "2", "--no-progress", "--out-dir", tmp_path / "conv")
    assert code == 0, out + err
    code, out, err = run_cli(capsys, "eval", tmp_path / "conv")
    assert code == 0, out + err
    assert "16 samples" in out or "accuracy" in out
    assert len(get_dataset("mnist", idx_dir)[3]) == 16
