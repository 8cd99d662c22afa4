"""`refsnn verify --user MODULE:FACTORY` and its Python API, refsnn.verify.user.verify_user.

The README's command runs as written (extracted from README.md, so the two cannot drift) and
prints the table the README shows; each usage error is one line and exit status 2; a failing
gradient says where the two backwards first part (layer, time step) and whether the ratio is
constant. The torch modules here are plain loops written from the equations (the reference
side); the refsnn side is built by name, from a run directory, or is one neuron layer.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from refsnn.verify import user  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_command():
    """The README's `refsnn verify --user` command and the table printed after it."""
    found = re.search(r"^```sh\n(refsnn verify --user [^\n]*)\n```\n\n```text\n(.*?)^```", README, re.S | re.M)
    assert found, "README.md shows no `refsnn verify --user` command followed by its output"
    return found.group(1), found.group(2)


def test_the_readme_command_runs_as_written():
    command, shown = readme_command()
    assert "examples.my_lif:MyLIF" in command and (ROOT / "examples" / "my_lif.py").is_file()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # the module is found from the current directory, as the README says
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == shown.strip()


def test_a_path_to_the_file_works_too_and_a_planted_bug_exits_1(capsys):
    path = str(ROOT / "examples" / "my_lif.py")
    argv = ["--user", f"{path}:MyLIF", "--network", "lif", "--input-shape", "4,16", "--T", "8", "--input-mean", "0.8"]
    assert user.main(argv) == 0
    # the same file checked against a different tau: the spikes differ, exit status 1
    assert user.main(argv + ["--neuron-options", '{"tau": 3.0}']) == 1
    assert "FAIL" in capsys.readouterr().out


def lif_file(tmp_path, name, replace=(), membrane=None):
    """examples/my_lif.py with the (old, new) text replacements in ``replace``; ``membrane``: "h"
    or "v" to return (spikes, that membrane)."""
    text = (ROOT / "examples" / "my_lif.py").read_text()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    if membrane:
        text = text.replace("v, spikes = torch.zeros_like(x[0]), []", "v, spikes, kept = torch.zeros_like(x[0]), [], []")
        text = text.replace("spikes.append(s)", f"spikes.append(s)\n            kept.append({membrane})")
        text = text.replace("return torch.stack(spikes)", "return torch.stack(spikes), torch.stack(kept)")
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_a_surrogate_off_by_a_constant_factor_is_located(tmp_path):
    """The surrogate's α dropped from the backward: the forward agrees, grad_x fails, and the
    note names the last time step (where BPTT starts) and the constant ratio 4."""
    path = lif_file(tmp_path, "no_alpha.py", [("torch.sigmoid(alpha * u)", "torch.sigmoid(alpha * u) / alpha")])
    rows = user.verify_user(f"{path}:MyLIF", network="lif", input_shape=(4, 16), T=8, input_mean=0.8)
    assert [(r.tensor, r.passed) for r in rows] == [("spikes", True), ("grad_x", False)]
    assert "first part at t = 7 (going backwards); ratio refsnn/torch constant 4 there" in rows[1].note
    # α doubled instead: the surrogate's shape changes, so the ratio is not constant
    path = lif_file(tmp_path, "alpha_8.py", [("alpha=4.0", "alpha=8.0")])
    rows = user.verify_user(f"{path}:MyLIF", network="lif", input_shape=(4, 16), T=8, input_mean=0.8)
    assert "at t = 7 (going backwards); ratio refsnn/torch not constant" in rows[1].note


def test_a_ratio_of_one_is_called_a_precision_difference_not_a_scale():
    """A gradient off by rounding only (snnTorch's float32 spikes in a float64 run) is constant
    ratio 1: that is no surrogate's scale."""
    theirs = np.random.default_rng(0).standard_normal((4, 5))
    assert user._parting(theirs * (1 + 1e-9), theirs, 1e-10)[1] == \
        "ratio refsnn/torch 1 to rounding there (a precision difference, not a scale)"
    assert user._parting(theirs * 4, theirs, 1e-10)[1] == "ratio refsnn/torch constant 4 there (a surrogate's scale?)"


def test_the_membrane_row_says_which_membrane(tmp_path):
    after = user.verify_user(f"{lif_file(tmp_path, 'v.py', membrane='v')}:MyLIF", network="lif",
                             input_shape=(4, 16), T=8, input_mean=0.8)
    before = user.verify_user(f"{lif_file(tmp_path, 'h.py', membrane='h')}:MyLIF", network="lif",
                              input_shape=(4, 16), T=8, input_mean=0.8)
    assert [r.tensor for r in after] == ["spikes", "V after reset", "grad_x"] and all(r.passed for r in after)
    assert [r.tensor for r in before] == ["spikes", "H before reset", "grad_x"] and all(r.passed for r in before)
    assert "before the reset" in before[1].note


def test_the_membrane_row_reads_and_names_every_registry_neurons_membrane():
    """The row reads each neuron's membrane state (BaseNeuron.membrane: "v", or snnTorch's "mem" for
    Leaky, Synaptic, RLeaky) and names it: snnTorch's mem is pre-reset with reset_delay=True,
    post-reset without, and then the charged H is the fallback."""
    from refsnn.neurons import EXAMPLES, NEURONS, Leaky, generic_kernels
    from refsnn.verify.compare import compare
    neurons = {name: NEURONS[name](**EXAMPLES[name][0]) for name in NEURONS}
    neurons["leaky, reset_delay=False"] = Leaky(reset_delay=False)

    def membrane_row(neuron, membrane, label):   # your module returning ``membrane``
        return user._membrane_row(neuron, membrane, None, lambda tensor, a, b, ties=None, note="": compare(
            label, "torch", tensor, a, b, ties=ties, note=note))
    names = {}
    with generic_kernels():
        for label, neuron in neurons.items():
            x = np.random.default_rng(0).normal(0.8, 1.0, (1 if label == "s2nn" else 4, 2, 8))
            neuron = neuron.to(np.float64)
            neuron.store_v_seq = True
            neuron.forward(x)
            state = getattr(neuron, neuron.membrane + "_seq")
            row = membrane_row(neuron, state, label)
            assert row.passed, label
            names[label] = row.tensor
    snntorch = {"leaky", "synaptic", "rleaky"}
    assert names == {**{name: "U (snnTorch mem, before reset)" if name in snntorch else "V after reset"
                        for name in NEURONS}, "leaky, reset_delay=False": "U (snnTorch mem, after reset)"}
    assert (neuron.h_seq != state).any()   # the last one spiked: its H differs from its post-reset U
    row = membrane_row(neuron, neuron.h_seq, "leaky")
    assert row.tensor == "H before reset" and row.passed


SNNTORCH = """
import torch, snntorch as snn

class MultiStepLeaky(snn.Leaky):           # snnTorch's own neuron, stepped over the time axis
    def forward(self, x):
        mem = self.init_leaky(); spk_rec, mem_rec = [], []
        for x_t in x:
            spk, mem = super().forward(x_t, mem); spk_rec.append(spk); mem_rec.append(mem)
        return torch.stack(spk_rec), torch.stack(mem_rec)

class Wrapped(torch.nn.Module):            # holds a Synaptic as self.lif: its state dict names are lif.*
    def __init__(self, **options):
        super().__init__()
        self.lif = snn.Synaptic(**options)

    def forward(self, x):
        syn, mem = self.lif.init_synaptic(); spk_rec, mem_rec = [], []
        for x_t in x:
            spk, syn, mem = self.lif(x_t, syn, mem); spk_rec.append(spk); mem_rec.append(mem)
        return torch.stack(spk_rec), torch.stack(mem_rec)

def leaky(): return MultiStepLeaky(beta=0.9)
def leaky_zero(): return MultiStepLeaky(beta=0.8, reset_mechanism="zero")
def leaky_graded(): return MultiStepLeaky(beta=0.9, graded_spikes_factor=2.0)
def synaptic(): return Wrapped(alpha=0.7, beta=0.85)
"""


@pytest.mark.parametrize("factory, network, options", [
    ("leaky", "leaky", {}),
    ("leaky_zero", "leaky", {"beta": 0.8, "reset_mechanism": "zero"}),
    ("synaptic", "synaptic", {"alpha": 0.7, "beta": 0.85}),
])
def test_snntorchs_own_neurons_pass_and_their_membrane_is_named(tmp_path, factory, network, options):
    """snnTorch keeps beta, threshold, graded_spikes_factor and reset_mechanism_val as buffers (lif.* when
    wrapped): they are checked against the refsnn neuron's configuration, not copied, and the membrane
    row is snnTorch's mem (pre-reset with its default reset_delay=True). In float32: snnTorch's spikes
    are float32 in any dtype, so in a float64 run its gradients are float32-accurate, which the failing
    row says."""
    pytest.importorskip("snntorch")
    from refsnn.neurons import generic_kernels
    (tmp_path / "snn_user.py").write_text(SNNTORCH)
    check = dict(network=network, neuron_options=options, input_shape=(4, 16), T=8, input_mean=0.8)
    with generic_kernels():
        rows = user.verify_user(f"{tmp_path}/snn_user.py:{factory}", dtype=np.float32, **check)
        wide = user.verify_user(f"{tmp_path}/snn_user.py:{factory}", dtype=np.float64, **check)
    assert [r.tensor for r in rows] == ["spikes", "U (snnTorch mem, before reset)", "grad_x"], user.print_table(rows)
    assert all(r.passed for r in rows), user.print_table(rows)
    assert 0.05 < float(rows[0].note.split(",")[0].split()[1]) < 0.95   # "rate 0.xx": the neurons fire
    assert [r.passed for r in wide] == [True, True, False] and user.FLOAT32_OUTPUT in wide[2].note
    assert wide[2].max_rel < 1e-6   # float32's rounding, no more


@pytest.mark.parametrize("factory, network, options, tensor, message", [
    ("leaky", "leaky", {"reset_mechanism": "zero"}, "reset_mechanism_val",
     "your reset is 'subtract', refsnn's Leaky has reset_mechanism='zero'"),
    ("leaky", "leaky", {"beta": 0.8}, "beta", "yours is 0.899999976, refsnn's Leaky has beta = 0.800000012"),
    ("synaptic", "synaptic", {"alpha": 0.5, "beta": 0.85}, "lif.alpha", "refsnn's Synaptic has alpha = 0.5"),
    ("leaky_graded", "leaky", {}, "graded_spikes_factor", "yours is 2, refsnn's Leaky has graded_spikes_factor = 1"),
])
def test_a_different_snntorch_configuration_fails_naming_it(tmp_path, capsys, factory, network, options, tensor,
                                                             message):
    pytest.importorskip("snntorch")
    from refsnn.neurons import generic_kernels
    (tmp_path / "snn_user.py").write_text(SNNTORCH)
    argv = ["--user", f"{tmp_path}/snn_user.py:{factory}", "--network", network, "--neuron-options",
            json.dumps(options), "--input-shape", "4,16", "--T", "8", "--input-mean", "0.8"]
    with generic_kernels():
        assert user.main(argv) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if f" {tensor} " in line)
    assert "FAIL" in line and message in line, line


MLP = """
import sys, torch
sys.path.insert(0, {examples!r})
from my_lif import MyLIF, spike

class BadLIF(torch.nn.Module):             # fires on Θ(2(h − 1)) = Θ(h − 1): the surrogate's slope doubled
    def forward(self, x):
        v, spikes = torch.zeros_like(x[0]), []
        for x_t in x:
            h = v + (x_t - v) / 2.0
            s = spike(2.0 * (h - 1.0))
            v = (1 - s) * h
            spikes.append(s)
        return torch.stack(spikes)

def mlp(neuron=MyLIF):                     # refsnn's spiking_mlp: Flatten, Linear, LIF, Linear
    return torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Linear(64, {hidden}), neuron(),
                               torch.nn.Linear({hidden}, 10))

def bad_mlp():
    return mlp(BadLIF)
"""


def mlp_file(tmp_path, hidden=256):
    path = tmp_path / f"mlp{hidden}.py"
    path.write_text(MLP.format(examples=str(ROOT / "examples"), hidden=hidden))
    return str(path)


def test_a_run_directory_and_a_network_by_name(tmp_path):
    """--run: the run's weights go into both sides, its T and sample shape are the input's; a
    slope error inside the network is located in the neuron layer "2"."""
    from refsnn.train import Run, TrainConfig
    Run(TrainConfig(dataset="digits", network="mlp", neuron="lif", T=3, epochs=1, out_dir=str(tmp_path / "run"))).save()
    rows = user.verify_user(f"{mlp_file(tmp_path)}:mlp", run=str(tmp_path / "run"), input_std=3.0)
    assert [r.tensor for r in rows] == ["output", "grad_x", "1.weight", "1.bias", "3.weight", "3.bias"]
    assert all(r.passed for r in rows), user.print_table(rows)
    rows = user.verify_user(f"{mlp_file(tmp_path)}:bad_mlp", run=str(tmp_path / "run"), input_std=3.0)
    failed = {r.tensor: r.note for r in rows if not r.passed}
    assert set(failed) == {"grad_x", "1.weight", "1.bias"}  # the layers below the neuron, and nothing else
    assert "first part in the backward of layer 2 at t = 2 (going backwards); ratio refsnn/torch not constant" \
        in failed["grad_x"]
    # by name: the torch module's weights are copied into refsnn's mlp
    rows = user.verify_user(f"{mlp_file(tmp_path)}:mlp", network="mlp", neuron="lif", input_shape=(3, 1, 8, 8),
                            input_std=3.0)
    assert all(r.passed for r in rows), user.print_table(rows)


def test_a_nir_file(tmp_path):
    """--nir: the file's weights go into refsnn.from_nir's model and into your module; a module whose
    layer has another width is refused naming the tensor."""
    nir = pytest.importorskip("nir")
    import refsnn
    from refsnn.layers import Linear
    rng = np.random.default_rng(3)
    net = refsnn.Sequential(Linear(16, 6, rng=rng), refsnn.LIF(), Linear(6, 3, rng=rng), refsnn.LIF())
    for _, weights, _ in net.named_parameters():  # unit-variance weights: both layers fire
        weights[...] = rng.standard_normal(weights.shape)
    nir.write(tmp_path / "net.nir", refsnn.to_nir(net))
    examples = str(ROOT / "examples")
    (tmp_path / "mine.py").write_text(f"import sys, torch\nsys.path.insert(0, {examples!r})\nfrom my_lif import MyLIF\n"
                                      "def net(width=6):\n    return torch.nn.Sequential(torch.nn.Linear(16, width), "
                                      "MyLIF(), torch.nn.Linear(width, 3), MyLIF())\n"
                                      "def narrow():\n    return net(5)\n")
    options = dict(nir_file=str(tmp_path / "net.nir"), input_shape=(4, 16), T=8, input_mean=0.8, input_std=3.0)
    rows = user.verify_user(f"{tmp_path}/mine.py:net", **options)
    assert [r.tensor for r in rows] == ["output", "grad_x", "0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(r.passed for r in rows), user.print_table(rows)
    x = np.random.default_rng([0, 1]).normal(0.8, 3.0, (8, 4, 16))  # verify_user's input: the output layer fires
    assert 0.05 < refsnn.from_nir(tmp_path / "net.nir", dtype=np.float64).forward(x).mean() < 0.95
    with pytest.raises(ValueError, match=r"shape mismatch: 0.weight is \(6, 16\) in the weights, \(5, 16\) in your"):
        user.verify_user(f"{tmp_path}/mine.py:narrow", **options)


@pytest.mark.parametrize("argv, message", [
    (["--user", "nocolon", "--network", "lif"], "wants MODULE:FACTORY"),
    (["--user", "{dir}/missing.py:f", "--network", "lif"], "missing.py: no such file"),
    (["--user", "no_such_module_h4:f", "--network", "lif"], "cannot import no_such_module_h4: ModuleNotFoundError"),
    (["--user", "{dir}/syntax.py:f", "--network", "lif"], "cannot import {dir}/syntax.py (line 1): SyntaxError"),
    (["--user", "{dir}/raises.py:f", "--network", "lif"], "cannot import {dir}/raises.py: ZeroDivisionError"),
    (["--user", "{dir}/ok.py:three", "--network", "lif", "--input-shape", "2,3"], "three() returned int 3, not a torch.nn.Module"),
    (["--user", "{dir}/ok.py:absent", "--network", "lif"], "has no 'absent'"),
    (["--user", "{dir}/mlp9.py:mlp", "--network", "mlp", "--neuron", "lif", "--input-shape", "2,1,8,8"],
     "copying your torch module's weights into refsnn's Sequential: weights do not fit the module: "
     "shape mismatch: 1.weight: (9, 64) in the weights, (256, 64) in the module"),
    (["--user", "{dir}/mlp9.py:mlp", "--network", "mlp", "--neuron-options", '{"tau": "x"}', "--input-shape", "2,1,8,8"],
     "neuron option tau of clif must be a number"),
    (["--user", "{dir}/ok.py:three", "--network", "lif", "--input-shape", "2,x"], "expected sizes separated by commas"),
    (["--user", "{dir}/ok.py:three"], "one of the arguments --network --run --nir is required"),
    (["--user", "{dir}/mlp9.py:mlp", "--network", "mlp", "--input-shape", "2,1,7,7"],
     "the torch module's forward raised RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    (["--user", "{dir}/mlp9.py:mlp", "--run", "{dir}/nowhere"], "no checkpoint at"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "syntax.py").write_text("def f(:\n")
    (tmp_path / "raises.py").write_text("x = 1 / 0\n")
    (tmp_path / "ok.py").write_text("three = lambda: 3\n")
    mlp_file(tmp_path, hidden=9)
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    try:
        code = user.main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(dir=tmp_path) in err


def test_the_refsnn_command_routes_to_it(capsys):
    """`refsnn verify --user ...` reaches the same code (exit status 2 and the one line)."""
    from refsnn.cli import main
    assert main(["verify", "--user", "nocolon", "--network", "lif"]) == 2
    assert capsys.readouterr().err.startswith("error: --user wants MODULE:FACTORY")


def test_a_nir_neurons_constants_are_configuration_not_weights(tmp_path):
    """A one-node NIR LIF graph (NIR's own constants tau, r, v_leak, v_threshold, v_reset, no refsnn
    metadata) against examples/my_lif.py's MyLIF, which has no buffers: the constants are not demanded
    from the torch module (was: 'not in your torch module: lif.tau; ...'); the spikes agree."""
    nir = pytest.importorskip("nir")
    dt, n = 1e-4, 16   # tau = 2·dt, r = 1: v += (x − v)/2, MyLIF's charge (dyadic: exact in float64)
    lif = nir.LIF(tau=np.full(n, 2 * dt), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    nir.write(tmp_path / "lif.nir", nir.NIRGraph.from_list(lif))
    rows = user.verify_user(f"{ROOT / 'examples' / 'my_lif.py'}:MyLIF", nir_file=str(tmp_path / "lif.nir"),
                            input_shape=(4, n), T=8, input_mean=0.8, dt=dt)
    assert [r.tensor for r in rows] == ["output", "grad_x"] and all(r.passed for r in rows), user.print_table(rows)


def test_a_file_imports_modules_beside_it_and_a_non_python_file_is_named(tmp_path, capsys):
    """--user DIR/FILE.py:F runs FILE with DIR first on sys.path (as `python DIR/FILE.py` would), and
    restores sys.path; --user /etc/passwd:x is one line saying it is not a Python file."""
    (tmp_path / "helper_beside_h13.py").write_text("import torch\nclass Same(torch.nn.Module):\n"
                                                   "    def forward(self, x):\n        return x\n")
    (tmp_path / "mine.py").write_text("from helper_beside_h13 import Same\n")
    path = list(sys.path)
    assert user.load_factory(f"{tmp_path}/mine.py:Same").__name__ == "Same"
    assert sys.path == path
    (tmp_path / "notes.txt").write_text("x = 1\n")
    assert user.main(["--user", f"{tmp_path}/notes.txt:x", "--network", "lif"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/notes.txt: not a Python file (MODULE:FACTORY wants a .py " \
                                      "file)\n"
