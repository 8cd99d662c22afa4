"""The help texts and the verify legend name what the CLIF options and the authors' conversion added
(issue 16's tester, finding 3)."""
import pytest

from refsnn.cli import main
from refsnn.surrogate import SURROGATES

pytest.importorskip("torch")  # refsnn.verify's mirrors
from refsnn.verify.__main__ import LEGEND, main as verify_main  # noqa: E402
from refsnn.verify.neurons_check import SHORT_SURROGATE  # noqa: E402


def help_text(capsys, run, *argv):
    with pytest.raises(SystemExit):
        run([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_verify_help_and_legend_name_the_clif_authors_mirror_and_labels(capsys):
    assert "CLIF-authors" in help_text(capsys, verify_main).split("options:")[0]  # the description, not just a choice
    for label in ("di = decay_input=True", "hard<v_reset> = the official code's hard reset", "nodi ="):
        assert label in LEGEND
    assert all(f"{SHORT_SURROGATE[name]} = {name}" in LEGEND or SHORT_SURROGATE[name] == name for name in SURROGATES)


def test_convert_and_train_help_say_what_authors_runs_and_clif_take(capsys):
    text = help_text(capsys, main, "convert")
    assert "not --finetune-epochs for a --variant authors run" in text
    text = help_text(capsys, main, "train")
    assert "docs/neurons.md (clif: tau, v_reset" in text
