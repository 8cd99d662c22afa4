"""Compiled kernels load from Numba's cache in a fresh process (the start-up target: first step
<= 3 s with a warm cache). A kernel whose closure captured another compiled function (a
dispatcher) got a new cache entry in every process, so every run compiled the neuron backward
again (5 s of `refsnn train`'s first epoch)."""
import os
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np
from refsnn.neurons import CLIF, LIF
rng = np.random.default_rng(0)
for make in (lambda: LIF(surrogate="sigmoid"), lambda: LIF(surrogate="atan"), lambda: CLIF()):
    layer = make()
    x = rng.standard_normal((3, 2, 40)).astype(np.float32)
    out = layer.forward(x)
    layer.backward(np.ones_like(out))
"""


@pytest.mark.slow
def test_neuron_kernels_are_compiled_once_across_processes(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_DEBUG_CACHE="1")

    def saved():
        run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        return [line for line in run.stdout.splitlines() if "data saved" in line]

    assert saved(), "the first process compiles and saves the kernels"
    assert saved() == [], "a second process must load every kernel from the cache, not compile it again"
