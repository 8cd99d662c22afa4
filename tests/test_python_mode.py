"""Pure-Python mode: ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python and gives the compiled
code's numbers, bit for bit (docs/python_mode.md).

One script runs in two fresh processes, compiled and with NUMBA_DISABLE_JIT=1: a forward and backward of
every neuron in the registry (``refsnn.neurons.NEURONS``, and LIF with every surrogate), in float32 and
float64, and two Adam steps of a Conv2d → BatchNorm2d → neuron → MaxPool2d → Linear network (the small CNN,
with CLIF and with LIF). Every array must be equal bit for bit, the neurons' parameter gradients
included: their float64 partial sums are added left to right in both modes (``neurons.compile.sum_in_order``;
with ``.sum()``, NumPy's pairwise order in pure-Python mode, PLIF's w differed by a few ulps).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow   # two processes; the compiled one compiles the kernels it has not cached

SCRIPT = textwrap.dedent("""
    import sys

    import numpy as np

    from refsnn.losses import cross_entropy
    from refsnn.models import small_cnn
    from refsnn.neurons import EXAMPLES, NEURONS
    from refsnn.optim import Adam
    from refsnn.surrogate import SURROGATES

    part, path = sys.argv[1:]
    out = {}
    for dtype in (np.float32, np.float64):
        if part == "neurons":
            # each neuron's first example (the defaults, {}, except where an option is required: RLeaky's beta)
            configs = [(name, dict(EXAMPLES[name][0])) for name in NEURONS] + [("lif", {"surrogate": s})
                                                                              for s in SURROGATES]
            for name, options in configs:
                rng = np.random.default_rng(0)
                label = f"{dtype.__name__}.{name}.{options.get('surrogate', 'default')}"
                layer = NEURONS[name](**options).to(dtype)
                x = (rng.standard_normal((3, 2, 70)) + 0.6).astype(dtype)   # [T, N, n]: n > one kernel block
                try:
                    spikes = layer.forward(x)
                except ValueError:   # a single-step neuron takes T = 1 only
                    x = x[:1]
                    spikes = layer.forward(x)
                grad_x = layer.backward(rng.standard_normal(spikes.shape).astype(dtype))
                out[f"{label}.spikes"], out[f"{label}.grad_x"] = spikes, grad_x
                for param, _, grad in layer.named_parameters():
                    out[f"{label}.param_grad.{param}"] = grad.copy()
        else:   # "cnn-<neuron>": two Adam steps of the small CNN on 4 images, T = 2
            rng = np.random.default_rng(1)
            model = small_cnn((1, 8, 8), 10, neuron=part[4:], rng=np.random.default_rng(0)).to(dtype)
            opt = Adam(list(model.named_parameters()), lr=1e-2)
            images = (rng.random((4, 1, 8, 8)) * 4).astype(dtype)
            labels = rng.integers(0, 10, 4)
            for step in range(2):
                logits = model.forward(np.broadcast_to(images, (2,) + images.shape).copy())
                loss, grad = cross_entropy(logits, labels)
                model.zero_grad()
                model.backward(grad)
                opt.step()
                label = f"{dtype.__name__}.{step}"
                out[f"{label}.logits"], out[f"{label}.loss"] = logits, np.array(loss)
                for param, value, grad in model.named_parameters():
                    out[f"{label}.grad.{param}"] = grad.copy()
                    out[f"{label}.value.{param}"] = value.copy()
    np.savez(path, **out)
""")


def run(part, path, disable_jit):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    if disable_jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT, part, str(path)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as arrays:
        return dict(arrays)


# the small CNN with LIF spikes takes the event-driven convolution for its second layer, CLIF's the dense one
@pytest.mark.parametrize("part", ["neurons", "cnn-clif", "cnn-lif"])
def test_pure_python_mode_gives_the_compiled_numbers(part, tmp_path):
    compiled, python = run(part, tmp_path / "compiled.npz", False), run(part, tmp_path / "python.npz", True)
    assert compiled.keys() == python.keys()
    differ = []
    for key, expected in compiled.items():
        got = python[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        if not np.array_equal(got, expected, equal_nan=True):
            differ.append(key)
    assert not differ, f"pure-Python mode differs from the compiled code in {differ}"
