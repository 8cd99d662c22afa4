"""refsnn.plot and `refsnn plot`: a real PNG (matplotlib's Agg backend), the raster and traces
drawn from what the layer computed, and one clear error for a wrong layer, a layer that is not a
neuron, or a missing matplotlib (the optional `plot` extra)."""
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")  # the `plot` extra (CI installs it: .ci/run)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from refsnn import plot  # noqa: E402
from refsnn.cli import main  # noqa: E402
from refsnn.models import spiking_mlp  # noqa: E402


def mlp_and_input(neuron="lif", T=6):
    model = spiking_mlp((16,), 3, neuron=neuron, hidden=(12,), rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(0.6, 1.0, (T, 2, 16)).astype(np.float32)  # [T, N, features]
    return model.eval(), x


def test_neuron_layer_writes_a_png_of_what_the_layer_computed(tmp_path):
    model, x = mlp_and_input()
    (name, layer), = plot.neuron_layers(model).items()
    path = tmp_path / "layer.png"
    fig = plot.neuron_layer(model, x, name, path, sample=1)
    image = matplotlib.image.imread(path)  # opens: a real PNG
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not layer.store_v_seq and "forward" not in vars(layer)  # the layer is left as it was
    raster_ax, membrane_ax = fig.axes
    # the raster marks exactly the layer's spikes of sample 1, and the traces are its membrane
    h = x
    for m in list(model)[:3]:  # Flatten, Linear, LIF
        h = m.forward(h)
    spikes = h[:, 1]
    marks = raster_ax.collections[0].get_offsets()
    assert sorted(map(tuple, np.asarray(marks).astype(int))) == sorted(zip(*np.nonzero(spikes)))
    assert len(membrane_ax.get_lines()) == plot.TRACES + 1  # the traces and the threshold


def test_raster_and_membrane_draw_into_given_axes():
    fig, (top, bottom) = plt.subplots(2, 1)
    s = np.zeros((4, 3)); s[1, 2] = s[3, 0] = 1
    assert plot.raster(s, ax=top) is top
    assert np.asarray(top.collections[0].get_offsets()).tolist() == [[1, 2], [3, 0]]
    v = np.arange(12.0).reshape(4, 3)
    assert plot.membrane(v, 1.0, neurons=[0, 2], ax=bottom, h_seq=v + 1) is bottom
    assert bottom.get_lines()[1].get_ydata().tolist() == [3, 2, 6, 5, 9, 8, 12, 11]  # H[t], V[t] of neuron 2
    with pytest.raises(ValueError, match=r"neurons \[3\] out of range: the layer has 3 neurons"):
        plot.membrane(v, neurons=[3], ax=bottom)
    plt.close(fig)


def test_a_wrong_layer_is_one_clear_error_naming_the_neuron_layers():
    model, x = mlp_and_input()
    with pytest.raises(ValueError, match=r"^no layer 'nine' in this network; its neuron layers are: '2'$"):
        plot.neuron_layer(model, x, "nine")
    with pytest.raises(ValueError, match=r"^layer '1' is a Linear, not a spiking-neuron layer; "
                                         r"the neuron layers are: '2'$"):
        plot.neuron_layer(model, x, "1")
    with pytest.raises(ValueError, match="sample 2 out of range: the input holds 2 samples"):
        plot.neuron_layer(model, x, "2", sample=2)


def test_a_missing_matplotlib_says_which_extra_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    model, x = mlp_and_input()
    with pytest.raises(ImportError, match=r'pip install "refsnn\[plot\]"'):
        plot.neuron_layer(model, x, "2", tmp_path / "x.png")
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refsnn.plot draws with matplotlib") and len(err.splitlines()) == 1, err


def test_refsnn_plot_draws_a_layer_of_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--network", "mlp", "--neuron", "lif", "--T", "2", "--epochs", "1", "--no-progress",
                 "--out-dir", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "mlp.png"
    assert main(["plot", str(run), "--layer", "2", "--sample", "5", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: layer 2 of {run} (mlp, lif neurons), test sample 5")
    assert matplotlib.image.imread(out).ndim == 3
    for argv, message in ((["--layer", "1"], "layer '1' is a "), (["--sample", "360"], "--sample 360: the test set")):
        assert main(["plot", str(run), *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_bad_networks_and_samples_are_one_clear_error():
    model, x = mlp_and_input()
    (name, _), = plot.neuron_layers(model).items()
    with pytest.raises(ValueError, match="has no spiking-neuron layers"):
        plot.neuron_layer(spiking_mlp((16,), 3, neuron="relu", hidden=(12,), rng=np.random.default_rng(0)), x, "0")
    for sample in (0.5, "0", True):
        with pytest.raises(ValueError, match="sample must be an integer"):
            plot.neuron_layer(model, x, name, sample=sample)
    with pytest.raises(ValueError, match=r"input \[T, N, \.\.\.\]"):
        plot.neuron_layer(model, x[0, 0], name)
