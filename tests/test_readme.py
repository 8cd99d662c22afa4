"""Every command the README shows runs as written, so that the README cannot rot.

The README puts commands in ```sh blocks and Python in ```python blocks. The commands run in order
in one scratch directory (so `runs/latest` and the other paths they name are shared as a reader
would share them) holding a copy of the repository's data/ (for the commands run from the
repository's root), and each must exit 0; the Python blocks run too. Only these are shortened:
`refsnn train` / `convert` train one epoch (`--epochs 1`, or `--dnn-epochs 1 --finetune-epochs 1`),
except where `--resume --epochs N` extends a run; `python -m bench` gets `--quick` and one
benchmark (a full run takes tens of minutes). Of a `pip install ... && command` line only the
command runs (the install is CI's own step), and the test command itself is not run again.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def blocks(language):
    """The contents of the README's fenced ```language blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def commands():
    """Each shell command line of the README (comments dropped), in order."""
    lines = []
    for block in blocks("sh"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def shortened(argv):
    """The command with only the documented shortenings applied."""
    argv = list(argv)
    if "--epochs" in argv and "--resume" not in argv:  # extending a 1-epoch run is short as written
        argv[argv.index("--epochs") + 1] = "1"
    elif argv[:2] in (["refsnn", "train"], ["refsnn", "convert"]) and "--resume" not in argv:
        argv += ["--epochs", "1"] if argv[1] == "train" else ["--dnn-epochs", "1", "--finetune-epochs", "1"]
    if argv[:3] == ["python", "-m", "bench"]:
        argv += ["--quick", "--only", "startup"]
    return argv


def test_the_readme_has_commands_and_python_to_run():
    assert len(commands()) >= 10 and blocks("python")


def test_the_readme_opens_with_the_two_commands():
    first_two = commands()[:2]
    assert first_two[0].startswith("pip install") and first_two[0].endswith("refsnn train")
    ci = (ROOT / ".ci" / "run").read_text()
    assert first_two[1] in ci  # CI runs exactly the README's test command


def runnable(line):
    """What the test runs of a README line: the command after an `pip install ... &&` (the install
    is CI's own step), with the documented shortenings; None for the test command itself."""
    if line.startswith("pip install"):
        line = line.partition("&&")[2].strip()
    if not line or "pytest" in line:
        return None
    argv = shlex.split(line)
    launcher = argv[:3] if argv[0] == "mpiexec" else []  # mpiexec -n N refsnn ...: the refsnn part shortened
    if argv[len(launcher)] in ("refsnn", "python"):
        return shlex.join(launcher + shortened(argv[len(launcher):]))
    return line


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    shutil.copytree(ROOT / "data", tmp_path / "data")  # "from the repository's root": data/SYNTHETIC-*
    for line in commands():
        command = runnable(line)
        if command is None:
            continue
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"README command failed: {line}\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_readme_python_block_runs(tmp_path, index):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", blocks("python")[index]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
