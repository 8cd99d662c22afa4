"""What `pip install .` installs: the package refsnn and nothing else at the top level of
site-packages (bench/ and experiments/ are repository tools; the verifier is installed as
refsnn.verify, the shipped data sets as refsnn.data_files), and the verifier runs from the wheel
under that name."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# not part of a source tree pip would be given: caches, runs, build leftovers
LEFT_OUT = shutil.ignore_patterns(".git", "build", "dist", "runs", "*.egg-info", "__pycache__", "*.nbi", "*.nbc",
                                  ".pytest_cache", ".hypothesis", ".benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel .` builds from a copy of this tree (a copy: a build inside the tree
    leaves build/, whose stale files a later build would pack)."""
    if importlib.util.find_spec("wheel") is None and importlib.util.find_spec("setuptools.command.bdist_wheel") is None:
        pytest.skip("building a wheel without build isolation needs the wheel package or setuptools >= 70.1")
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=LEFT_OUT)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(tmp / "src")], check=True, capture_output=True)
    (path,) = (tmp / "dist").glob("refsnn-*.whl")
    return path


def test_the_wheel_installs_the_package_refsnn_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"refsnn", f"{wheel.name.split('-py')[0]}.dist-info"}
    for module in (ROOT / "verify").glob("*.py"):
        assert f"refsnn/verify/{module.name}" in names
    assert "refsnn/data_files/digits.csv.gz" in names and "refsnn/plot.py" in names
    assert not [n for n in names if n.split("/")[1] in ("bench", "experiments", "tests")]


def test_the_installed_verifier_runs_as_refsnn_verify(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    for argv in (["-m", "refsnn.verify", "--help"], ["-m", "refsnn", "verify", "--help"]):
        done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.startswith("usage: python -m refsnn.verify"), done.stderr
    where = subprocess.run([sys.executable, "-c", "import refsnn.verify; print(refsnn.verify.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(tmp_path / "site")
