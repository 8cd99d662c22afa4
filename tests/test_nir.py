"""NIR exchange (refsnn/nir.py, docs/nir.md): graphs written with the ``nir`` package alone run by
refsnn give the spikes of an independent NumPy simulation of NIR's equations written here; a
trained refsnn network survives to_nir → nir.write → nir.read → from_nir bit for bit; the CLI
writes files nir.read accepts; a from_nir network's gradients are torch autograd's on the same
equations; what NIR or refsnn cannot state is refused in one clear error."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import refsnn
from refsnn.cli import main
from refsnn.layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, AvgPool2d
from refsnn.losses import cross_entropy
from refsnn.neurons import CLIF, IF, LIF, PLIF, Leaky, Synaptic, generic_kernels
from refsnn.optim import Adam

nir = pytest.importorskip("nir")

DT = 1e-4


@pytest.fixture(autouse=True, scope="module")
def generic():
    """The generic kernel builds: one compilation serves every neuron configuration here."""
    with generic_kernels():
        yield


def dyadic(rng, shape, scale=8):
    """Numbers k/scale (small integers k): sums of them and of 0/1 spikes are exact in float64 in any
    order, so the NumPy simulation below and refsnn's BLAS products agree to the bit before the
    neurons, and the neurons' own arithmetic is then compared bit for bit."""
    return rng.integers(-6, 7, size=shape) / scale


# ------------------------------------------------------------------------------------------
# An independent simulation of NIR's equations, forward Euler at DT (NIR 1.0.8's docstrings)
# ------------------------------------------------------------------------------------------
def simulate(nodes, x):
    """x [T, N, ...] through the chain of NIR nodes, plain NumPy loops over time."""
    T = x.shape[0]
    state = [None] * len(nodes)
    out = []
    for t in range(T):
        h = x[t]
        for k, node in enumerate(nodes):
            if isinstance(node, nir.Affine):
                h = h @ node.weight.T + node.bias
            elif isinstance(node, nir.Conv2d):
                w = node.weight
                p = node.padding[0]
                hp = np.pad(h, ((0, 0), (0, 0), (p, p), (p, p)))
                kh, kw = w.shape[2:]
                H, W = hp.shape[2] - kh + 1, hp.shape[3] - kw + 1
                y = np.zeros((h.shape[0], w.shape[0], H, W)) + node.bias[:, None, None]
                for i in range(kh):
                    for j in range(kw):
                        y += np.einsum("nchw,oc->nohw", hp[:, :, i:i + H, j:j + W], w[:, :, i, j])
                h = y
            elif isinstance(node, nir.Conv1d):
                w, p, s = node.weight, int(node.padding), int(node.stride)
                hp = np.pad(h, ((0, 0), (0, 0), (p, p)))
                L = (hp.shape[2] - w.shape[2]) // s + 1
                y = np.zeros((h.shape[0], w.shape[0], L)) + node.bias[:, None]
                for j in range(w.shape[2]):
                    y += np.einsum("ncl,oc->nol", hp[:, :, j:j + s * (L - 1) + 1:s], w[:, :, j])
                h = y
            elif isinstance(node, nir.SumPool2d):
                k = int(node.kernel_size[0])
                N, C, H, W = h.shape
                h = h.reshape(N, C, H // k, k, W // k, k).sum(axis=(3, 5))
            elif isinstance(node, nir.Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(node, nir.LIF):
                v = node.v_leak + 0 * h if state[k] is None else state[k]   # starts at rest
                v = v + DT / node.tau * ((node.v_leak - v) + node.r * h)
                z = (v > node.v_threshold).astype(float)
                state[k] = np.where(z > 0, node.v_reset, v)
                h = z
            elif isinstance(node, nir.IF):
                v = node.v_reset + 0 * h if state[k] is None else state[k]
                v = v + DT * node.r * h
                z = (v > node.v_threshold).astype(float)
                state[k] = np.where(z > 0, node.v_reset, v)
                h = z
            else:
                raise AssertionError(type(node))
        out.append(h)
    return np.stack(out)


def run_graph(tmp_path, nodes, x):
    """Write the chain with nir.write, read it back with from_nir(path), run it in float64."""
    path = tmp_path / "graph.nir"
    nir.write(path, nir.NIRGraph.from_list(*nodes))
    model = refsnn.from_nir(str(path), dtype=np.float64)
    return model, model.forward(x)


def test_affine_lif_graph_gives_the_spikes_of_nir_equations(tmp_path):
    rng = np.random.default_rng(1)
    n_in, n_hid, n_out = 6, 12, 5

    def lif(n):
        return nir.LIF(tau=rng.uniform(1.5, 6.0, n) * DT, r=rng.uniform(0.5, 2.0, n), v_leak=rng.uniform(-0.2, 0.2, n),
                       v_threshold=rng.uniform(0.3, 1.2, n), v_reset=rng.uniform(-0.3, 0.1, n))
    nodes = [nir.Affine(weight=dyadic(rng, (n_hid, n_in), 4), bias=dyadic(rng, n_hid) + 0.5), lif(n_hid),
             nir.Affine(weight=dyadic(rng, (n_out, n_hid), 4), bias=dyadic(rng, n_out) + 0.5), lif(n_out)]
    x = (rng.random((20, 4, n_in)) < 0.4).astype(np.float64)
    model, spikes = run_graph(tmp_path, nodes, x)
    want = simulate(nodes, x)
    np.testing.assert_array_equal(spikes, want)
    hidden = simulate(nodes[:2], x)
    for s in (hidden, want):   # the test means something: both layers fire and rest
        assert 0.05 < s.mean() < 0.6, s.mean()
    assert [type(m).__name__ for m in model] == ["Linear", "EulerNeuron", "Linear", "EulerNeuron"]


def test_conv_if_sumpool_graph_gives_the_spikes_of_nir_equations(tmp_path):
    rng = np.random.default_rng(2)
    shape, c_out = (2, 6, 6), 3
    feat = (c_out, 6, 6)
    nodes = [nir.Conv2d(input_shape=shape[1:], weight=dyadic(rng, (c_out, 2, 3, 3)), stride=1, padding=1, dilation=1,
                        groups=1, bias=dyadic(rng, c_out)),
             nir.IF(r=rng.uniform(0.5, 2.0, feat) / DT, v_threshold=rng.uniform(0.3, 1.0, feat),
                    v_reset=rng.uniform(-0.2, 0.0, feat)),
             nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             nir.Flatten(input_type={"input": np.array([c_out, 3, 3])}, start_dim=0, end_dim=-1),
             nir.Affine(weight=dyadic(rng, (4, 27)), bias=dyadic(rng, 4)),
             nir.IF(r=np.full(4, 1 / DT), v_threshold=rng.uniform(0.5, 1.0, 4), v_reset=np.zeros(4))]
    x = (rng.random((12, 3, *shape)) < 0.4).astype(np.float64)
    model, spikes = run_graph(tmp_path, nodes, x)
    want = simulate(nodes, x)
    np.testing.assert_array_equal(spikes, want)
    assert 0.05 < want.mean() < 0.7, want.mean()
    assert [type(m).__name__ for m in model] == ["Conv2d", "EulerNeuron", "SumPool2d", "Flatten", "Linear",
                                                 "EulerNeuron"]


def test_conv1d_graph_gives_the_spikes_of_nir_equations_and_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    nodes = [nir.Conv1d(input_shape=9, weight=dyadic(rng, (4, 2, 3), 4), stride=2, padding=1, dilation=1, groups=1,
                        bias=dyadic(rng, 4) + 0.25),
             nir.LIF(tau=rng.uniform(1.5, 4, (4, 5)) * DT, r=rng.uniform(1, 2, (4, 5)), v_leak=np.zeros((4, 5)),
                     v_threshold=rng.uniform(0.2, 0.6, (4, 5)), v_reset=np.zeros((4, 5)))]
    x = (rng.random((8, 3, 2, 9)) < 0.5).astype(np.float64)
    model, spikes = run_graph(tmp_path, nodes, x)
    want = simulate(nodes, x)
    np.testing.assert_array_equal(spikes, want)
    assert 0.05 < want.mean() < 0.9, want.mean()
    again = refsnn.from_nir(refsnn.to_nir(model, input_shape=(2, 9)), dtype=np.float64)
    np.testing.assert_array_equal(again.forward(x), want)


def test_neuron_parameters_broadcast_per_channel_or_as_one_value():
    """NIR parameters broadcast over the layer's shape (graphs built without NIR's type check, as some
    exporters write them): per channel [C, 1, 1] and one value [] give the per-neuron results."""
    rng = np.random.default_rng(10)
    conv = nir.Conv2d(input_shape=(4, 4), weight=rng.standard_normal((2, 1, 3, 3)), stride=1, padding=1, dilation=1,
                      groups=1, bias=np.zeros(2))
    def run(shape_of, per_neuron, tau=np.array([2.0, 3.0]) * DT, v_th=np.array([0.3, 0.6])):
        lif = nir.LIF(tau=per_neuron(tau), r=np.ones(shape_of), v_leak=np.zeros(shape_of),
                      v_threshold=per_neuron(v_th), v_reset=np.zeros(shape_of))
        nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), "conv": conv, "lif": lif,
                 "output": nir.Output(output_type={"output": np.array([2, 4, 4])})}
        graph = nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "lif"), ("lif", "output")],
                             type_check=False)
        return refsnn.from_nir(graph, dtype=np.float64).forward(x)
    x = rng.random((6, 2, 1, 4, 4)) * 2
    full = run((2, 4, 4), lambda a: np.broadcast_to(a[:, None, None], (2, 4, 4)).copy())
    np.testing.assert_array_equal(run((2, 1, 1), lambda a: a[:, None, None]), full)
    assert 0 < full.mean() < 1
    same = dict(tau=np.full(2, 2 * DT), v_th=np.full(2, 0.5))   # one value for every neuron
    np.testing.assert_array_equal(run((), lambda a: np.array(a[0]), **same),
                                  run((2, 4, 4), lambda a: np.full((2, 4, 4), a[0]), **same))


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------
def trained_mlp(rng):
    """An MLP with LIF (no input decay, strict), PLIF (learned w) and IF (>=) layers, trained a few steps."""
    model = refsnn.Sequential(Flatten(), Linear(16, 12, rng=rng),
                              LIF(tau=1.7, v_reset=0.1, decay_input=False, strict=True),
                              Linear(12, 10, rng=rng), PLIF(init_tau=2.5, surrogate="atan"),
                              Linear(10, 8, rng=rng), IF(v_threshold=0.8), Linear(8, 3, rng=rng))
    opt = Adam(model.named_parameters(), lr=0.05)
    for _ in range(3):
        x = (rng.random((4, 8, 1, 4, 4)) < 0.5).astype(np.float32)
        model.zero_grad()
        _, grad = cross_entropy(model.forward(x), rng.integers(0, 3, 8))
        model.backward(grad)
        opt.step()
    return model


def test_round_trip_of_a_trained_network_is_bit_identical(tmp_path):
    rng = np.random.default_rng(3)
    model = trained_mlp(rng)
    assert model[4].params["w"] != np.float32(-np.log(1.5))   # PLIF's w has been trained
    path = tmp_path / "mlp.nir"
    nir.write(path, refsnn.to_nir(model, dt=DT, input_shape=(1, 4, 4)))
    back = refsnn.from_nir(str(path))
    assert [type(m).__name__ for m in back] == [type(m).__name__ for m in model]
    x = (rng.random((6, 5, 1, 4, 4)) < 0.5).astype(np.float32)
    assert_same_outputs_and_gradients(model, back, x, rng.standard_normal((6, 5, 3)).astype(np.float32))


def assert_same_outputs_and_gradients(model, back, x, g):
    """Identical outputs, dL/dx and parameter gradients (it trains the same); returns the outputs and
    the parameter names."""
    outs = []
    for net in (model, back):
        net.zero_grad()
        outs.append((net.forward(x).copy(), net.backward(g).copy(),
                     {k: d.copy() for k, _, d in net.named_parameters()}))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])          # and it trains the same: identical gradients
    assert outs[0][2].keys() == outs[1][2].keys()
    for k in outs[0][2]:
        np.testing.assert_array_equal(outs[0][2][k], outs[1][2][k], err_msg=k)
    return outs[0][0], set(outs[0][2])


def test_round_trip_keeps_s2nn_and_a_nir_neurons_surrogate(tmp_path):
    """The single-step S²NN neuron goes out as NIR's Threshold and comes back as itself; an EulerNeuron
    keeps the surrogate it was given (NIR states neither)."""
    rng = np.random.default_rng(9)
    s2nn = refsnn.Sequential(Linear(4, 6, rng=rng), refsnn.SingleStep(v_threshold=0.3, beta=0.5), Linear(6, 2, rng=rng))
    graph = refsnn.to_nir(s2nn)
    assert type(graph.nodes["1"]).__name__ == "Threshold"
    nir.write(tmp_path / "s2nn.nir", graph)
    back = refsnn.from_nir(str(tmp_path / "s2nn.nir"))
    assert type(back[1]).__name__ == "SingleStep" and back[1].surrogate.beta == 0.5
    x, g = rng.standard_normal((1, 5, 4)).astype(np.float32), rng.standard_normal((1, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(s2nn.forward(x), back.forward(x))
    np.testing.assert_array_equal(s2nn.backward(g), back.backward(g))
    lif = nir.LIF(tau=np.full(3, 3 * DT), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    model = refsnn.from_nir(nir.NIRGraph.from_list(lif), surrogate="atan", alpha=3.0)
    nir.write(tmp_path / "lif.nir", refsnn.to_nir(model))
    again = refsnn.from_nir(str(tmp_path / "lif.nir"))
    assert repr(again[0].surrogate) == repr(model[0].surrogate) == "Surrogate('atan', alpha=3.0)"


def test_batchnorm_is_folded_and_nir_equations_reproduce_refsnn_lif(tmp_path):
    """A conv net with BatchNorm (eval, trained running statistics) and average pooling: the folded
    graph, run by NIR's equations (the refsnn neuron description removed from the metadata), gives
    the spikes of the original in float64; the outputs agree to rounding (the fold reorders the
    products: W·(γ/σ) instead of (W∗x − μ)·γ/σ)."""
    rng = np.random.default_rng(4)
    norm = BatchNorm2d(4, dtype=np.float64)
    norm.buffers["running_mean"][...] = rng.standard_normal(4) * 0.3
    norm.buffers["running_var"][...] = rng.uniform(0.5, 2.0, 4)
    norm.params["weight"][...] = rng.uniform(0.5, 1.5, 4)
    norm.params["bias"][...] = rng.standard_normal(4) * 0.2
    model = refsnn.Sequential(Conv2d(1, 4, 3, padding=1, bias=False, rng=rng, dtype=np.float64), norm,
                              LIF(tau=2.0), AvgPool2d(2), Flatten(), Linear(64, 3, rng=rng, dtype=np.float64)).eval()
    graph = refsnn.to_nir(model, dt=DT, input_shape=(1, 8, 8))
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten",
                                                                "Affine", "Output"]
    for node in graph.nodes.values():
        node.metadata.pop("refsnn", None)   # NIR's fields alone
    back = refsnn.from_nir(graph, dtype=np.float64)
    assert type(back[1]).__name__ == "EulerNeuron"
    x = rng.random((8, 4, 1, 8, 8)) * 2
    want, got = model.forward(x), back.forward(x)
    np.testing.assert_array_equal(model[2].forward(model[1].forward(model[0].forward(x))),
                                  back[1].forward(back[0].forward(x)))   # the spikes
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)  # the fold's and tau·dt's rounding, float64


def test_export_nir_cli_writes_a_file_nir_reads(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "2", "--epochs", "1", "--no-progress",
                 "--out-dir", str(run_dir)]) == 0
    out = tmp_path / "net.nir"
    assert main(["export-nir", str(run_dir), str(out)]) == 0
    graph = nir.read(str(out))
    assert graph.metadata["source"] == "refsnn" and graph.metadata["firing"] == ">="
    assert [type(n).__name__ for n in graph.nodes.values()].count("LIF") == 1
    capsys.readouterr()
    assert main(["eval", str(out), "--dataset", "digits", "--T", "2"]) == 0
    nir_line = capsys.readouterr().out
    assert main(["eval", str(run_dir)]) == 0
    run_line = capsys.readouterr().out
    accuracy = run_line.split("test accuracy ")[1].split("%")[0]
    assert f"test accuracy {accuracy}%" in nir_line, (nir_line, run_line)
    graph.metadata = {k: v for k, v in graph.metadata.items() if k != "dataset"}   # a graph that does not say
    nir.write(str(out), graph)
    assert main(["eval", str(out)]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_export_nir_records_the_input_pipeline_and_eval_uses_it(tmp_path, capsys):
    """A Poisson-encoded run: its .nir evaluates as the run does (the same draws from the recorded seed);
    an option contradicting the recorded pipeline is refused; under mpiexec process 0 alone writes the
    file, atomically (both wrote it at once: one failed on HDF5's lock and aborted the other mid-write)."""
    run_dir = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "2", "--epochs", "1", "--no-progress",
                 "--encoding", "poisson", "--seed", "5", "--out-dir", str(run_dir)]) == 0
    out = tmp_path / "net.nir"
    assert main(["export-nir", str(run_dir), str(out)]) == 0
    assert {k: nir.read(str(out)).metadata[k] for k in ("dataset", "T", "encoding", "seed")} == \
        {"dataset": "digits", "T": 2, "encoding": "poisson", "seed": 5}
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    accuracy = capsys.readouterr().out.split("test accuracy ")[1].split("%")[0]
    assert main(["eval", str(out)]) == 0
    assert f"test accuracy {accuracy}%" in capsys.readouterr().out
    assert main(["eval", str(out), "--encoding", "direct"]) == 2
    assert "--encoding direct contradicts the graph's metadata: its run was trained with encoding = 'poisson'" \
        in capsys.readouterr().err
    assert main(["eval", str(out), "--dataset", "nmnist"]) == 2   # (contradicts the recorded digits)
    assert main(["export-nir", str(run_dir), str(tmp_path / "nowhere" / "x.nir")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: {tmp_path / 'nowhere' / 'x.nir'}: the folder {tmp_path / 'nowhere'} does not exist"
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed")
    both = tmp_path / "both.nir"
    p = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "refsnn", "export-nir", str(run_dir), str(both)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("wrote") == 1, p.stdout + p.stderr
    assert sorted(os.listdir(tmp_path)) == ["both.nir", "net.nir", "run"]   # no temporary file left
    assert nir.read(str(both)).metadata["encoding"] == "poisson"


def test_eval_of_a_graph_without_metadata_takes_the_pipeline_as_options(tmp_path, capsys):
    """A graph without refsnn's metadata: --dataset, --T, --encoding (latency here) as options; an
    event data set without --data-dir names the CLI's option."""
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph.from_list(nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0, end_dim=-1),
                                   nir.Affine(weight=rng.standard_normal((10, 64)), bias=np.zeros(10)))
    path = tmp_path / "plain.nir"
    nir.write(str(path), graph)
    assert main(["eval", str(path), "--dataset", "digits", "--T", "3", "--encoding", "latency"]) == 0
    line = capsys.readouterr().out
    assert "inputs: T 3, encoding latency" in line
    model = refsnn.from_nir(str(path), dtype=np.float64)   # the same by hand: latency spikes, mean over time
    from refsnn.data import get_dataset
    from refsnn.encoding import latency
    _, _, x, y, _ = get_dataset("digits")
    acc = (model.forward(latency(x.astype(np.float64), 3, normalize=True, linear=True)).mean(0).argmax(1) == y).mean()
    assert f"test accuracy {acc * 100:.2f}%" in line
    assert main(["eval", str(path), "--dataset", "nmnist"]) == 2
    assert "nmnist is not shipped with refsnn: pass --data-dir" in capsys.readouterr().err


def test_files_that_are_not_graphs_are_named_for_what_they_are(tmp_path):
    """Not a regular file (a directory, a FIFO, a link to /dev/zero); a node type NIR does not know,
    named from the file's HDF5 ``type`` field; nodes the edges leave unconnected (nir.read would add
    Input/Output nodes of its own to them)."""
    (tmp_path / "dir.nir").mkdir()
    os.mkfifo(tmp_path / "fifo.nir")
    os.symlink("/dev/zero", tmp_path / "zero.nir")
    for name in ("dir.nir", "fifo.nir", "zero.nir"):
        with pytest.raises(ValueError, match=rf"{name}: not a regular file"):
            refsnn.from_nir(str(tmp_path / name))
    lif = dict(tau=np.full(2, 3 * DT), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    path = str(tmp_path / "g.nir")
    nir.write(path, nir.NIRGraph.from_list(nir.Affine(weight=np.eye(2), bias=np.zeros(2)), nir.LIF(**lif)))
    with h5py.File(path, "a") as f:
        del f["node/nodes/lif/type"]
        f["node/nodes/lif/type"] = b"Banana"
    with pytest.raises(ValueError, match=r"g.nir: not a NIR graph that nir .* reads \(node 'lif' \(Banana\): type "
                                         r"unknown to NIR\)"):
        refsnn.from_nir(path)
    nir.write(path, nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                        "a": nir.Affine(weight=np.eye(2), bias=np.zeros(2)), "l": nir.LIF(**lif),
                                        "output": nir.Output(output_type={"output": np.array([2])})},
                                 edges=[("input", "a"), ("l", "output")], type_check=False))
    with pytest.raises(ValueError, match=r"g.nir: nodes not connected by the graph's edges: 'a' \(no output edge\), "
                                         r"'l' \(no input edge\)$"):
        refsnn.from_nir(path)


def test_complex_arrays_and_invalid_refsnn_metadata_are_refused_by_name():
    lif = dict(tau=np.full(2, 3 * DT), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    graph = nir.NIRGraph.from_list(nir.Affine(weight=np.eye(2) * (1 + 1j), bias=np.zeros(2)), nir.LIF(**lif))
    with pytest.raises(ValueError, match=r"node 'affine' \(Affine\): weight holds complex numbers"):
        refsnn.from_nir(graph)
    for key, value in (("firing", "banana"), ("reset", "soft")):
        graph = refsnn.to_nir(refsnn.Sequential(Linear(2, 2), LIF()))
        graph.metadata[key] = value
        with pytest.raises(ValueError, match=rf"the graph's metadata says {key}='{value}'"):
            refsnn.from_nir(graph)
    graph = refsnn.to_nir(refsnn.Sequential(Linear(2, 2), LIF()))
    graph.nodes["1"].metadata["firing"] = "banana"
    with pytest.raises(ValueError, match=r"node '1''s metadata says firing='banana'"):
        refsnn.from_nir(graph)


# ------------------------------------------------------------------------------------------
# Exact BPTT: torch autograd on the same equations
# ------------------------------------------------------------------------------------------
def spike_function(torch, alpha=4.0):
    """Θ(u) = 1{u > 0} forward, refsnn's sigmoid surrogate α·σ(αu)(1 − σ(αu)) backward."""
    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > 0).double()

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            s = torch.sigmoid(alpha * u)
            return grad * alpha * s * (1 - s)
    return Spike


def test_from_nir_gradients_equal_torch_autograd_of_nir_equations():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n = (5, 7, 6, 3)
    cuba = dict(tau_syn=rng.uniform(1.5, 4, n[1]) * DT, tau_mem=rng.uniform(2, 6, n[1]) * DT, r=rng.uniform(2, 4, n[1]),
                v_leak=rng.uniform(-0.1, 0.1, n[1]), v_threshold=rng.uniform(0.05, 0.2, n[1]),
                v_reset=rng.uniform(-0.2, 0, n[1]), w_in=rng.uniform(0.5, 2, n[1]))
    lif = dict(tau=rng.uniform(1.5, 5, n[2]) * DT, r=rng.uniform(0.5, 2, n[2]), v_leak=np.zeros(n[2]),
               v_threshold=rng.uniform(0.1, 0.4, n[2]), v_reset=np.zeros(n[2]))
    li = dict(tau=rng.uniform(2, 5, n[3]) * DT, r=np.ones(n[3]), v_leak=np.zeros(n[3]))
    weights = [(rng.standard_normal((n[i + 1], n[i])), rng.standard_normal(n[i + 1]) * 0.1) for i in range(3)]
    nodes = [nir.Affine(weight=weights[0][0], bias=weights[0][1]), nir.CubaLIF(**cuba),
             nir.Affine(weight=weights[1][0], bias=weights[1][1]), nir.LIF(**lif),
             nir.Affine(weight=weights[2][0], bias=weights[2][1]), nir.LI(**li)]
    model = refsnn.from_nir(nir.NIRGraph.from_list(*nodes), dtype=np.float64)
    x = rng.random((10, 4, n[0])) * 1.5
    g = rng.standard_normal((10, 4, n[3]))
    out = model.forward(x)
    grad_x = model.backward(g)

    Spike = spike_function(torch)
    P = [{k: torch.tensor(v) for k, v in p.items()} for p in (cuba, lif, li)]
    W = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)) for w, b in weights]
    xt = torch.tensor(x, requires_grad=True)
    i1 = torch.zeros(4, n[1], dtype=torch.float64)
    v1, v2, v3 = P[0]["v_leak"].expand(4, -1), P[1]["v_leak"].expand(4, -1), P[2]["v_leak"].expand(4, -1)
    outs = []
    for t in range(x.shape[0]):
        h = xt[t] @ W[0][0].T + W[0][1]
        c = P[0]
        i1 = i1 + DT / c["tau_syn"] * (-i1 + c["w_in"] * h)
        v1 = v1 + DT / c["tau_mem"] * ((c["v_leak"] - v1) + c["r"] * i1)
        z1 = Spike.apply(v1 - c["v_threshold"])
        v1 = z1 * c["v_reset"] + (1 - z1) * v1
        c = P[1]
        v2 = v2 + DT / c["tau"] * ((c["v_leak"] - v2) + c["r"] * (z1 @ W[1][0].T + W[1][1]))
        z2 = Spike.apply(v2 - c["v_threshold"])
        v2 = z2 * c["v_reset"] + (1 - z2) * v2
        c = P[2]
        v3 = v3 + DT / c["tau"] * ((c["v_leak"] - v3) + c["r"] * (z2 @ W[2][0].T + W[2][1]))
        outs.append(v3)
    want = torch.stack(outs)
    (want * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=0, atol=1e-12)   # float64, other op order
    for layer, p in ((model[1], cuba), (model[3], lif)):   # both spiking layers fire and rest
        assert 0.05 < (layer.h_seq > p["v_threshold"]).mean() < 0.9
    # float64 sums in other orders (BLAS, torch): relative 1e-10
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, _, grad), param in zip(model.named_parameters(), [p for pair in W for p in pair]):
        np.testing.assert_allclose(grad, param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_scale_and_threshold_nodes_forward_and_backward_as_torch():
    """Affine → Scale → Threshold → Affine → LI: NIR's stateless nodes, the Scale learnable."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    w1, b1, scale = rng.standard_normal((6, 4)), rng.standard_normal(6) * 0.1, rng.uniform(0.5, 2, 6)
    theta, w2, b2 = rng.uniform(-0.5, 0.5, 6), rng.standard_normal((3, 6)), rng.standard_normal(3) * 0.1
    tau = rng.uniform(2, 5, 3) * DT
    model = refsnn.from_nir(nir.NIRGraph.from_list(
        nir.Affine(weight=w1, bias=b1), nir.Scale(scale=scale), nir.Threshold(threshold=theta),
        nir.Affine(weight=w2, bias=b2), nir.LI(tau=tau, r=np.ones(3), v_leak=np.zeros(3))), dtype=np.float64)
    assert [type(m).__name__ for m in model] == ["Linear", "Scale", "Threshold", "Linear", "EulerNeuron"]
    x, g = rng.standard_normal((6, 5, 4)), rng.standard_normal((6, 5, 3))
    out = model.forward(x)
    grad_x = model.backward(g)
    T = [torch.tensor(a, requires_grad=True) for a in (x, w1, b1, scale, w2, b2)]
    z = spike_function(torch).apply((T[0] @ T[1].T + T[2]) * T[3] - torch.tensor(theta))
    y = z @ T[4].T + T[5]
    v, outs = torch.zeros(5, 3, dtype=torch.float64), []
    for t in range(6):
        v = v + DT / torch.tensor(tau) * (-v + y[t])
        outs.append(v)
    (torch.stack(outs) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, torch.stack(outs).detach().numpy(), rtol=0, atol=1e-12)
    assert 0.2 < float(z.detach().mean()) < 0.8
    # float64 sums in other orders (BLAS, torch): relative 1e-10
    np.testing.assert_allclose(grad_x, T[0].grad.numpy(), rtol=1e-10, atol=1e-12)
    grads = {name: grad for name, _, grad in model.named_parameters()}
    assert list(grads) == ["affine.weight", "affine.bias", "scale.scale", "affine_1.weight", "affine_1.bias"]
    for (name, grad), param in zip(grads.items(), T[1:]):
        np.testing.assert_allclose(grad, param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    before = model.state_dict()
    Adam(model.named_parameters(), lr=0.01).step()   # refsnn's optimizers train it like any network
    after = model.state_dict()
    assert all(not np.array_equal(before[k], after[k]) for k in grads)
    assert all(np.array_equal(before[k], after[k]) for k in before if k not in grads)   # NIR's constants stay


def test_from_nir_network_passes_tier1_finite_differences():
    """Every node kind with a backward, in one network, in smooth mode: dL/dx and every parameter
    gradient against central finite differences (refsnn.verify.gradcheck, float64, ≤ 1e-6)."""
    from refsnn.verify.gradcheck import gradcheck
    rng = np.random.default_rng(8)

    def neuron(kind, shape):
        u = lambda lo, hi: rng.uniform(lo, hi, shape)  # noqa: E731
        fields = dict(tau=u(1.5, 4) * DT, tau_mem=u(2, 5) * DT, tau_syn=u(1.5, 3) * DT, r=u(0.5, 2),
                      v_leak=u(-0.1, 0.1), v_threshold=u(0.2, 0.6), v_reset=u(-0.2, 0), w_in=u(0.5, 1.5))
        if kind == "IF":
            fields["r"] = fields["r"] / DT
        return getattr(nir, kind)(**{k: fields[k] for k in nir_fields[kind]})
    nir_fields = {"IF": ("r", "v_threshold", "v_reset"), "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold",
                                                                    "v_reset", "w_in"),
                  "LI": ("tau", "r", "v_leak")}
    graph = nir.NIRGraph.from_list(
        nir.Conv1d(input_shape=7, weight=rng.standard_normal((3, 2, 3)), stride=1, padding=1, dilation=1, groups=1,
                   bias=rng.standard_normal(3) * 0.1),
        neuron("IF", (3, 7)), nir.Flatten(input_type={"input": np.array([3, 7])}, start_dim=0, end_dim=-1),
        nir.Affine(weight=rng.standard_normal((5, 21)) * 0.5, bias=rng.standard_normal(5) * 0.1),
        neuron("CubaLIF", 5), nir.Scale(scale=rng.uniform(0.5, 2, 5)), nir.Threshold(threshold=rng.uniform(0, 0.5, 5)),
        nir.Affine(weight=rng.standard_normal((3, 5)), bias=rng.standard_normal(3) * 0.1), neuron("LI", 3))
    model = refsnn.from_nir(graph, dtype=np.float64)
    report = gradcheck(model, rng.random((5, 2, 2, 7)) * 1.5, tolerance=1e-6)
    assert report.passed, str(report)
    assert set(report.errors) == {"input", "conv1d.weight", "conv1d.bias", "affine.weight", "affine.bias",
                                  "scale.scale", "affine_1.weight", "affine_1.bias"}


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_sum_pool_is_torch_average_pool_with_divisor_one(kernel, stride, padding):
    """SumPool2d (NIR's) forward and backward as torch's avg_pool2d(divisor_override=1), float64."""
    torch = pytest.importorskip("torch")
    from refsnn.layers import SumPool2d
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 2, 7, 7))
    pool = SumPool2d(kernel, stride, padding)
    y = pool.forward(x)
    g = rng.standard_normal(y.shape)
    xt = torch.tensor(x.reshape(6, 2, 7, 7), requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, kernel, stride, padding, divisor_override=1)
    (yt * torch.tensor(g.reshape(yt.shape))).sum().backward()
    # float64 sums of the same terms in another order (overlapping windows add several g into one pixel)
    np.testing.assert_allclose(y.reshape(yt.shape), yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(pool.backward(g).reshape(xt.shape), xt.grad.numpy(), rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------------------
# snnTorch's Leaky and Synaptic with zero reset: NIR's LIF and CubaLIF
# ------------------------------------------------------------------------------------------
def leaky_synaptic_net(rng, dtype, leaky, synaptic):
    """Linear → Leaky(zero, ``leaky``) → Linear → Synaptic(zero, reset_delay=False, ``synaptic``)."""
    return refsnn.Sequential(Linear(10, 12, rng=rng, dtype=dtype), Leaky(reset_mechanism="zero", **leaky),
                             Linear(12, 6, rng=rng, dtype=dtype),
                             Synaptic(reset_mechanism="zero", reset_delay=False, **synaptic)).to(dtype)


def test_round_trip_of_leaky_and_synaptic_is_bit_identical(tmp_path):
    """Learned β, per-neuron α and a learned threshold come back exactly: same outputs, same gradients."""
    rng = np.random.default_rng(6)
    model = leaky_synaptic_net(rng, np.float32, dict(beta=0.9, learn_beta=True, spike_grad="fast_sigmoid"),
                               dict(alpha=rng.uniform(0.3, 0.9, 6), beta=0.8, threshold=0.75, learn_threshold=True))
    model[1].params["beta"][...] = 0.8731   # as if trained
    for layer in (model[0], model[2]):
        layer.params["weight"][...] *= 3   # both layers fire
    graph = refsnn.to_nir(model, dt=DT)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Affine", "LIF", "Affine", "CubaLIF", "Output"]
    nir.write(tmp_path / "snn.nir", graph)
    back = refsnn.from_nir(str(tmp_path / "snn.nir"))
    assert [repr(m) for m in back] == [repr(m) for m in model]
    x = (rng.random((8, 5, 10)) < 0.5).astype(np.float32)
    out, names = assert_same_outputs_and_gradients(model, back, x, rng.standard_normal((8, 5, 6)).astype(np.float32))
    assert names == {"0.weight", "0.bias", "1.beta", "2.weight", "2.bias", "3.threshold"}
    assert 0.05 < out.mean() < 0.95 and 0.05 < model[1].forward(model[0].forward(x)).mean() < 0.95


def test_leaky_and_synaptic_as_nir_lif_and_cubalif_give_snntorchs_spikes():
    """The exported graph run by NIR's equations alone (refsnn's metadata stripped) gives the spikes of
    snnTorch's own Leaky(reset_mechanism="zero") and Synaptic(reset_mechanism="zero", reset_delay=False)
    on the same input, float64. Dyadic weights, spike inputs and decays (Leaky β = 7/8: dt/τ = 1/8 and
    R = 8 exactly; Synaptic α = 1/2, β = 3/4) keep every sum exact over the 10 steps (the membranes'
    denominators stay at most 2^30), so the spikes must be identical, not close."""
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    rng = np.random.default_rng(7)
    model = leaky_synaptic_net(rng, np.float64, dict(beta=0.875), dict(alpha=0.5, beta=0.75, threshold=0.5))
    for layer in (model[0], model[2]):
        for name, array in layer.params.items():
            array[...] = dyadic(rng, array.shape) * (3 if name == "weight" else 1)
    graph = refsnn.to_nir(model, dt=DT)
    for node in graph.nodes.values():
        node.metadata.pop("refsnn", None)   # NIR's fields alone
    by_nir = refsnn.from_nir(graph, dtype=np.float64)
    assert [type(m).__name__ for m in by_nir] == ["Linear", "EulerNeuron", "Linear", "EulerNeuron"]
    x = (rng.random((10, 6, 10)) < 0.5).astype(np.float64)
    fc1, fc2 = torch.nn.Linear(10, 12).double(), torch.nn.Linear(12, 6).double()
    with torch.no_grad():
        for fc, layer in ((fc1, model[0]), (fc2, model[2])):
            fc.weight.copy_(torch.from_numpy(layer.params["weight"]))
            fc.bias.copy_(torch.from_numpy(layer.params["bias"]))
        lif = snn.Leaky(beta=0.875, reset_mechanism="zero").double()
        cuba = snn.Synaptic(alpha=0.5, beta=0.75, threshold=0.5, reset_mechanism="zero", reset_delay=False).double()
        mem1, (syn2, mem2), hidden, out = lif.init_leaky(), cuba.init_synaptic(), [], []
        for x_t in torch.from_numpy(x):
            spk1, mem1 = lif(fc1(x_t), mem1)
            spk2, syn2, mem2 = cuba(fc2(spk1.double()), syn2, mem2)   # snnTorch's spikes are float32
            hidden.append(spk1.double())
            out.append(spk2.double())
    hidden, out = torch.stack(hidden).numpy(), torch.stack(out).numpy()
    assert 0.05 < hidden.mean() < 0.95 and 0.05 < out.mean() < 0.95
    np.testing.assert_array_equal(by_nir[1].forward(by_nir[0].forward(x)), hidden)
    np.testing.assert_array_equal(by_nir.forward(x), out)
    np.testing.assert_array_equal(model.forward(x), out)   # and refsnn's own Leaky and Synaptic


# ------------------------------------------------------------------------------------------
# Refusals: one clear error naming the layer or node and the reason
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, message", [
    (LIF(v_reset=None), "soft reset"),
    (CLIF(), "complementary potential"),
    (MaxPool2d(2), "max-pooling"),
    (Leaky(), "resets by subtracting the threshold"),
    (Synaptic(reset_mechanism="zero"), "with reset_delay=True zeroes its membrane one step after a spike"),
])
def test_to_nir_refuses_what_nir_cannot_state(layer, message):
    model = refsnn.Sequential(Conv2d(1, 2, 3, padding=1), layer, Flatten(), Linear(32, 2))
    with pytest.raises(ValueError, match=rf"'1' .*{message}"):
        refsnn.to_nir(model, input_shape=(1, 4, 4))


def test_from_nir_refuses_recurrent_unknown_and_corrupt_graphs(tmp_path):
    lif = dict(tau=np.full(3, 3 * DT), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    recurrent = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}), "lif": nir.LIF(**lif),
               "w_rec": nir.Linear(weight=np.eye(3)), "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")], type_check=False)
    with pytest.raises(ValueError, match=r"recurrent edge \('w_rec' -> 'lif'\)"):
        refsnn.from_nir(recurrent)
    delay = nir.NIRGraph.from_list(nir.Delay(delay=np.ones(3)), nir.LIF(**lif))
    with pytest.raises(ValueError, match=r"node 'delay': type Delay is not supported"):
        refsnn.from_nir(delay)
    bad_shape = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3)),
                                       nir.LIF(**{k: v[:2] for k, v in lif.items()}), type_check=False)
    with pytest.raises(ValueError, match=r"node 'lif' \(LIF\): tau of shape \(2,\) does not fit the input shape"):
        refsnn.from_nir(bad_shape)
    bad_output = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2])}),
               "affine": nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3)),
               "output": nir.Output(output_type={"output": np.array([5])})},
        edges=[("input", "affine"), ("affine", "output")], type_check=False)
    with pytest.raises(ValueError, match=r"node 'output' \(Output\) declares input shape \(5,\).*gives \(3,\)"):
        refsnn.from_nir(bad_output)
    nan = nir.NIRGraph.from_list(nir.LIF(**{**lif, "tau": np.array([3 * DT, np.nan, DT])}))
    with pytest.raises(ValueError, match=r"node 'lif' \(LIF\): tau contains NaN"):
        refsnn.from_nir(nan)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"\x89HDF not really" * 10)
    with pytest.raises(ValueError, match=r"garbage.nir: not a NIR graph"):
        refsnn.from_nir(str(garbage))
    huge = tmp_path / "huge.nir"   # a valid graph whose weight declares 4 GB, stored in a few bytes
    nir.write(huge, nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3))))
    with h5py.File(huge, "a") as f:
        del f["node/nodes/affine/weight"]
        f.create_dataset("node/nodes/affine/weight", shape=(1 << 16, 1 << 13), dtype="f8", compression="gzip")
    with pytest.raises(ValueError, match=r"huge.nir: its arrays hold 4,294,967,\d+ bytes, over the"):
        refsnn.from_nir(str(huge))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(ValueError, match=r"foreign.h5: not a NIR graph"):
        refsnn.from_nir(str(foreign))


def test_nir_is_imported_only_when_used(monkeypatch):
    """Importing refsnn imports neither nir nor h5py; without nir, from_nir and to_nir say what to install."""
    code = ("import sys, refsnn; refsnn.from_nir, refsnn.to_nir; "
            "assert not {'nir', 'h5py'} & set(sys.modules), sorted({'nir', 'h5py'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "nir", None)   # as if not installed: import nir raises ImportError
    for call in (lambda: refsnn.from_nir("graph.nir"), lambda: refsnn.to_nir(refsnn.Sequential(Linear(2, 2)))):
        with pytest.raises(ImportError, match=r'pip install "refsnn\[nir\]"'):
            call()
