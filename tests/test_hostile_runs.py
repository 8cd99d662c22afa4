"""What a fresh tester found by trying refsnn as a new user and as an attacker, after the first
round of fixes: each input gives one ``error:`` line and exit code 2, and nothing is lost."""
import hashlib
import io
import json
import shutil

import numpy as np
import pytest

from refsnn.cli import main
from refsnn.train.checkpoint import npz_bytes
from test_checkpoint import OPTIONS, meta_of, one_error, rewrite_meta, trained


def test_an_export_never_replaces_a_runs_own_files(tmp_path, capsys):
    run = trained(tmp_path / "run", ternary=True, network="cnn")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for target, message in ((run / "checkpoint.json", "must be a .npz"), (run / "model.npz", "run directory"),
                            (run / meta_of(run)["weights"], "run directory")):
        assert main(["export-ternary", str(run), str(target)]) == 2
        assert message in one_error(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    (tmp_path / "notes.npz").write_bytes(b"a user's file")
    assert main(["export-ternary", str(run), str(tmp_path / "notes.npz")]) == 2
    assert "not a ternary export" in one_error(capsys)
    assert (tmp_path / "notes.npz").read_bytes() == b"a user's file"
    assert main(["export-ternary", str(run), str(tmp_path / "model.npz")]) == 0
    assert main(["export-ternary", str(run), str(tmp_path / "model.npz")]) == 0  # an export may be rewritten


def rewrite_weights(run_dir, change):
    """The run's weights file with ``change(arrays)`` applied, its SHA-256 recorded again (a crafted
    run that passes the integrity check)."""
    name = meta_of(run_dir)["weights"]
    with np.load(run_dir / name) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    data = npz_bytes(arrays)
    (run_dir / name).write_bytes(data)
    rewrite_meta(run_dir, weights_sha256=hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("change", [
    lambda a: a.pop("model/1.weight"),                                       # a missing array
    lambda a: a.update({"model/9.weight": np.zeros(3, np.float32)}),         # an unexpected one
    lambda a: a.update({"model/1.weight": a["model/1.weight"].astype(np.int64)}),   # integers for weights
    lambda a: a.update({"model/1.bias": np.array(["x"] * a["model/1.bias"].size)}),  # strings
], ids=["missing", "unexpected", "int64", "strings"])
def test_weights_that_do_not_fit_the_network_are_one_error(tmp_path, capsys, change):
    run = trained(tmp_path / "run")
    rewrite_weights(run, change)
    assert main(["eval", str(run)]) == 2
    assert str(run) in one_error(capsys)


@pytest.mark.parametrize("meta", ['[' * 100000, None], ids=["nested", "history"])
def test_malformed_metadata_is_one_error(tmp_path, capsys, meta):
    run = trained(tmp_path / "run")
    if meta is None:
        rewrite_meta(run, history=[1])
    else:
        (run / "checkpoint.json").write_text(meta)
    assert main(["train", *OPTIONS, "--out-dir", str(run), "--resume"]) == 2
    assert "corrupt checkpoint metadata" in one_error(capsys)


def test_a_fresh_run_leaves_a_users_files_alone(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "checkpoint-epoch0007.npz").write_bytes(b"the user's own")
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(mine)]) == 2
    assert "--overwrite" in one_error(capsys)  # named like a run's weights: replaced only when asked
    assert (mine / "checkpoint-epoch0007.npz").read_bytes() == b"the user's own"


@pytest.mark.parametrize("argv, message", [
    (["--out-dir", ""], "out_dir must not be empty"),
    (["--neuron", "s2nn", "--T", "4"], "T must be 1"),
    (["--neuron-options", '{"tau": 1' + "0" * 400 + "}"], "tau must be a finite real number"),
], ids=["empty-out-dir", "s2nn-T", "huge-int"])
def test_refused_options_are_one_line_and_leave_nothing_behind(tmp_path, capsys, argv, message):
    code = main(["train", "--no-progress", "--out-dir", str(tmp_path / "run"), *argv]) if "--out-dir" not in argv \
        else main(["train", "--no-progress", *argv])
    assert code == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "run").exists()


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--lr", "true"])
    assert stop.value.code == 2
    assert "--lr" in one_error(capsys)


def test_a_relative_data_dir_is_saved_absolute(tmp_path, monkeypatch, capsys):
    from test_data import write_idx_set
    write_idx_set(tmp_path / "data", "train", 20, np.random.default_rng(0), hw=(8, 8))
    write_idx_set(tmp_path / "data", "test", 10, np.random.default_rng(1), hw=(8, 8))
    monkeypatch.chdir(tmp_path)
    assert main(["train", *OPTIONS, "--epochs", "1", "--dataset", "mnist", "--data-dir", "data",
                 "--out-dir", "run"]) == 0
    assert meta_of(tmp_path / "run")["config"]["data_dir"] == str(tmp_path / "data")


@pytest.mark.parametrize("option", ["--out-dir", "--data-dir", "--dnn"])
def test_conversion_refuses_empty_paths(capsys, option):
    assert main(["convert", option, "", "--no-progress"]) == 2
    assert "must not be empty" in one_error(capsys)


@pytest.mark.parametrize("kind", [["train"], {"train": 1}])
def test_a_kind_that_is_not_a_string_is_one_error(tmp_path, capsys, kind):
    """A list or dict as checkpoint.json's kind was looked up in a dict: a TypeError traceback."""
    run = trained(tmp_path / "run")
    rewrite_meta(run, kind=kind)
    for command in (["eval", str(run)], ["train", "--resume", "--out-dir", str(run), "--no-progress"]):
        assert main(command) == 2
        assert "unknown kind" in one_error(capsys)


@pytest.fixture(scope="module")
def converted_run(tmp_path_factory):
    from refsnn.convert import ConvertConfig, run_conversion
    run = tmp_path_factory.mktemp("conv") / "run"
    run_conversion(ConvertConfig(dataset="digits", network="mlp", T=2, dnn_epochs=1, finetune_epochs=1,
                                 calibration_samples=100, out_dir=str(run)), log=lambda *_: None)
    return run


@pytest.mark.parametrize("field, forged", [
    ("results", {"dnn_acc": 0.5}), ("results", {"dataset": "digits", "dnn_config": [1]}),
    ("scales", [[1, 2]]), ("scales", [{"a": 1.0, "b": 1.0, "mu": "x"}])])
def test_forged_conversion_fields_are_one_error(converted_run, tmp_path, capsys, field, forged):
    """A converted run's results without its data set or DNN config, or scales that are not
    {a, b, mu} numbers, ended in a KeyError or TypeError traceback."""
    run = tmp_path / "run"
    shutil.copytree(converted_run, run)
    rewrite_meta(run, **{field: forged})
    assert main(["eval", str(run)]) == 2
    assert f"field {field!r}" in one_error(capsys)


def test_a_conversion_run_from_before_the_lam_rename_still_evaluates(converted_run, tmp_path, capsys):
    """Runs written before issue 12 named the converted neuron's λ 'leak': eval (and resume) read it as lam."""
    assert main(["eval", str(converted_run)]) == 0
    expected = capsys.readouterr().out.split(":", 1)[1]
    run = tmp_path / "run"
    shutil.copytree(converted_run, run)
    rewrite_weights(run, lambda arrays: arrays.update(
        {k.replace(".lam", ".leak"): arrays.pop(k) for k in [k for k in arrays if ".lam" in k]}))
    assert main(["eval", str(run)]) == 0
    assert capsys.readouterr().out.split(":", 1)[1] == expected
