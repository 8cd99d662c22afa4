"""Resuming with a changed option names that change (not a consequence of it in the merged config),
and the effective values and flags the user passed (issue 16's tester, finding 2)."""
import dataclasses
import json

import pytest

from refsnn.cli import main
from refsnn.convert import ConvertConfig
from refsnn.train import ConfigError, TrainConfig
from refsnn.train.config import changed_options
from refsnn.train.run import resume_config


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def converted_run(run_dir, **config):
    """A converted-SNN run's checkpoint.json as refsnn convert writes it (the config is read before the weights)."""
    run_dir.mkdir()
    meta = {"kind": "convert", "epoch": 1, "config": {**dataclasses.asdict(ConvertConfig()), "dataset": "digits",
                                                      "network": "mlp", "out_dir": str(run_dir), **config},
            "history": [], "weights_sha256": "0" * 64, "weights": "snn-epoch0001.npz", "generators": {},
            "scales": [{"a": 1.0, "b": 1.0, "mu": 1.0}], "results": {"dataset": "digits", "dnn_config": {}}}
    (run_dir / "checkpoint.json").write_text(json.dumps(meta))
    return run_dir


def test_resume_a_tet_run_with_loss_ce_names_the_loss():
    # old: "tet_lambda applies to loss tet, not 'ce'" (the saved λ, never passed again)
    saved = TrainConfig(loss="tet", tet_lambda=0.1, tet_target="onehot", dataset="digits", network="mlp")
    with pytest.raises(ConfigError, match=r"cannot change loss \('tet' → 'ce'\) when resuming"):
        resume_config(saved, {"loss": "ce"}, 1)


def test_resume_an_authors_conversion_as_exact_names_the_variant(tmp_path, capsys):
    run_dir = converted_run(tmp_path / "c", variant="authors", amplitude_factor=1.5)
    code, err = run_cli(capsys, "convert", "--resume", "--out-dir", run_dir, "--variant", "exact")
    assert code == 2 and "cannot change variant ('authors' → 'exact')" in err, err  # old: "an option of variant 'authors' only"


def test_resume_with_the_effective_default_amplitude_factor_is_no_change():
    # a run saved before the effective value was stored, resumed as run_conversion checks it
    saved = ConvertConfig.from_dict({**dataclasses.asdict(ConvertConfig()), "variant": "authors",
                                     "amplitude_factor": None})
    cfg = ConvertConfig.from_dict({**dataclasses.asdict(saved), "amplitude_factor": 1.3})
    assert changed_options(saved, cfg, ("finetune_epochs", "data_dir", "dnn_dir", "out_dir")) == []  # old: None → 1.3
    assert ConvertConfig(variant="authors").amplitude_factor == 1.3  # stored as used


def test_authors_conflict_names_the_flag_passed(tmp_path, capsys):
    code, err = run_cli(capsys, "convert", "--variant", "authors", "--no-detach-reset", "--out-dir", tmp_path / "c")
    assert code == 2 and err.strip().endswith("drop --no-detach-reset"), err
    code, err = run_cli(capsys, "convert", "--variant", "authors", "--train-amplitude", "--out-dir", tmp_path / "d")
    assert code == 2 and err.strip().endswith("drop --train-amplitude"), err
