"""A cached kernel is current only if every refsnn file with Numba code is unchanged (refsnn/kernel_cache.py).

Numba alone compares only the hash of the file a kernel is written in, so a kernel that inlines a
jitted function from another file (LIF and refsnn/surrogate.py's ``fire``) kept loading the old code
after only that other file changed (numba/numba#1833)."""
import hashlib
import importlib
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

import refsnn
from refsnn import kernel_cache
from refsnn.neurons import LIF, lif

PACKAGE = pathlib.Path(refsnn.__file__).parent


def imports_numba(path):
    """Does a line of the module start with ``import numba`` or ``from numba`` (read word by word here,
    not with the locator's regular expression)?"""
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) > 1 and words[0] in ("import", "from") and words[1].split(".")[0].rstrip(",") == "numba":
            return True
    return False


def expected_digest(root):
    """The digest as refsnn/kernel_cache.py's docstring defines it, computed here on its own."""
    digest = hashlib.sha256()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    for relative in files:
        data = (root / relative).read_bytes()
        if imports_numba(root / relative):
            digest.update(relative.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def copy_sources(root):
    """A copy of refsnn's ``.py`` files (the package's other files are neither hashed nor needed)."""
    def skip(folder, names):
        return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or os.path.isdir(os.path.join(folder, n)))]
    shutil.copytree(PACKAGE, root, ignore=skip)
    return root


def test_digest_covers_the_numba_files_and_sees_one_byte_of_surrogate(tmp_path):
    before, after = copy_sources(tmp_path / "before"), copy_sources(tmp_path / "after")
    assert kernel_cache.package_digest(str(before)) == expected_digest(before)
    assert "surrogate.py" in kernel_cache.numba_sources(str(before))
    assert "cli.py" not in kernel_cache.numba_sources(str(before))  # Python only: its edits recompile nothing

    surrogate = after / "surrogate.py"
    data = bytearray(surrogate.read_bytes())
    assert data.startswith(b'"""')
    data[10] = ord("x") if data[10] != ord("x") else ord("y")  # one byte of the docstring, same size
    surrogate.write_bytes(bytes(data))
    assert kernel_cache.package_digest(str(after)) == expected_digest(after)
    assert kernel_cache.package_digest(str(after)) != kernel_cache.package_digest(str(before))

    (after / "cli.py").write_text("# edited\n", encoding="utf-8")
    assert kernel_cache.package_digest(str(after)) == expected_digest(after)  # unchanged by cli.py


def test_a_refsnn_kernel_is_stamped_with_the_package_digest():
    layer = LIF()
    layer.forward(np.ones((2, 1, 3), np.float32))  # compiles (or loads) LIF's forward kernel
    kernel = lif.lif_forward(layer._options())
    assert kernel.signatures, "the kernel the layer ran"
    assert type(kernel._cache._impl.locator) in kernel_cache.LOCATORS
    stamp = kernel._cache._cache_file._source_stamp
    numba_own = hashlib.sha256(pathlib.Path(lif.__file__).read_bytes()).digest()  # Numba's hash of lif.py
    assert stamp == (numba_own, expected_digest(PACKAGE))


CALLEE = "import numba\n\n\n@numba.njit(cache=True)\ndef value():\n    return {}\n"
CALLER = "import numba\n\nfrom .callee import value\n\n\n@numba.njit(cache=True)\ndef call():\n    return value()\n"


def run_caller(name):
    """Import ``name.caller`` afresh (new dispatchers, so their cache stamps are read again) and run it."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    importlib.invalidate_caches()
    return importlib.import_module(name + ".caller").call()


@pytest.mark.parametrize("followed", [False, True], ids=["numba-alone", "followed"])
def test_caller_recompiles_when_only_its_callee_file_changes(tmp_path, monkeypatch, followed):
    name = f"kernel_cache_pkg_{'followed' if followed else 'plain'}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "callee.py").write_text(CALLEE.format(1))
    (package / "caller.py").write_text(CALLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(kernel_cache, "_roots", list(kernel_cache._roots))  # forget the temp package after
    if followed:
        kernel_cache.follow(str(package))

    assert run_caller(name) == 1  # compiled and saved
    (package / "callee.py").write_text(CALLEE.format(20))  # only the callee's file changes
    # Numba alone loads the caller's stale entry, which carries the old callee inlined (the defect);
    # with the package followed, the caller's stamp changed, so it compiles again
    assert run_caller(name) == (20 if followed else 1)
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]
