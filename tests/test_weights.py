"""Weights across the framework boundary without pickle (verify/weights.py).

The torch side here is written by hand from SpikingJelly layers (not built by verify.networks),
so names, shapes and dtypes are PyTorch's own. Round trips must be bit-identical.
"""
import zipfile

import numpy as np
import pytest

from refsnn.models import build_network
from verify.weights import load_into, load_weights, save_weights

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
sjl = pytest.importorskip("spikingjelly.activation_based.layer")
from safetensors.torch import load_file as torch_load_file  # noqa: E402
from safetensors.torch import save_file as torch_save_file  # noqa: E402
from spikingjelly.activation_based import functional, neuron  # noqa: E402


def torch_cnn():
    """refsnn's small_cnn((2, 8, 8), 3, neuron="plif", channels=(4, 8)) in SpikingJelly."""
    layers = []
    for c_in, c_out in ((2, 4), (4, 8)):
        layers += [sjl.Conv2d(c_in, c_out, 3, padding=1, bias=False, step_mode="m"),
                   sjl.BatchNorm2d(c_out, step_mode="m"), neuron.ParametricLIFNode(init_tau=3.0, step_mode="m"),
                   sjl.MaxPool2d(2, step_mode="m")]
    model = torch.nn.Sequential(*layers, sjl.Flatten(step_mode="m"), sjl.Linear(8 * 2 * 2, 3, step_mode="m"))
    with torch.no_grad():  # running statistics, counters and PLIF leaks away from their defaults
        model(torch.rand(2, 3, 2, 8, 8) * 3)
    functional.reset_net(model)
    return model


def refsnn_cnn():
    return build_network("cnn", (2, 8, 8), 3, neuron="plif", channels=(4, 8))


def assert_state_equal(mine, theirs):
    """Same names, same dtypes and shapes, bit-identical values. (Order is not compared: refsnn
    lists parameters before buffers, torch module by module, safetensors sorts by name.)"""
    assert sorted(mine) == sorted(theirs)
    for name in theirs:
        a, b = np.asarray(mine[name]), theirs[name].numpy()
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_torch_state_dict_loads_and_round_trips(tmp_path, suffix):
    theirs = torch_cnn()
    state = theirs.state_dict()
    assert state["1.num_batches_tracked"].item() == 1 and state["2.w"].item() != 0
    torch_save_file(state, tmp_path / "torch.safetensors")

    mine = load_into(refsnn_cnn(), tmp_path / "torch.safetensors")
    assert_state_equal(mine.state_dict(), state)

    save_weights(tmp_path / f"refsnn{suffix}", mine.state_dict())
    back = load_weights(tmp_path / f"refsnn{suffix}")
    assert_state_equal(back, state)
    if suffix == ".safetensors":  # and torch reads refsnn's file
        assert_state_equal({k: v.numpy() for k, v in torch_load_file(tmp_path / "refsnn.safetensors").items()},
                           state)
    reloaded = torch_cnn()
    reloaded.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})
    assert_state_equal(reloaded.state_dict(), state)


def test_float64_and_torch_tensors_round_trip(tmp_path):
    mine = build_network("mlp", (6,), 2, neuron="lif", hidden=(5,)).to(np.float64)
    for fmt in ("a.safetensors", "a.npz"):
        save_weights(tmp_path / fmt, mine.state_dict())
        back = load_weights(tmp_path / fmt)
        assert all(back[k].dtype == np.float64 and back[k].tobytes() == v.tobytes()
                   for k, v in mine.state_dict().items())
    tensors = {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3).requires_grad_(True),
               "file": torch.tensor(3)}  # "file" is np.savez's own keyword; kept as a name here
    save_weights(tmp_path / "t.npz", tensors)
    back = load_weights(tmp_path / "t.npz")
    assert back["w"].tolist() == [[0, 1, 2], [3, 4, 5]] and back["file"] == 3


def test_load_into_a_dict_from_torch_and_strict_names():
    theirs = torch_cnn()
    mine = load_into(refsnn_cnn(), theirs.state_dict())
    assert mine.children["2"].params["w"] == theirs[2].w.item()
    partial = {"9.bias": np.full(3, 7.0, np.float32)}
    with pytest.raises(ValueError, match=r"missing from the weights: \['0.weight'"):
        load_into(refsnn_cnn(), partial)
    assert load_into(refsnn_cnn(), partial, strict=False).children["9"].params["bias"].tolist() == [7, 7, 7]


def test_mismatches_name_every_offender_and_copy_nothing():
    state = {k: v.numpy() for k, v in torch_cnn().state_dict().items()}
    state["extra.weight"] = np.zeros(2, np.float32)
    del state["9.bias"]
    state["0.weight"] = np.zeros((4, 2, 5, 5), np.float32)
    net = refsnn_cnn()
    before = net.state_dict()
    with pytest.raises(ValueError) as info:
        load_into(net, state)
    message = str(info.value)
    assert "missing from the weights: ['9.bias']" in message
    assert "not in the Sequential: ['extra.weight']" in message
    assert "0.weight: (4, 2, 5, 5) in the weights, (4, 2, 3, 3) in the module" in message
    assert_state_equal(net.state_dict(), {k: torch.from_numpy(v) for k, v in before.items()})


def test_missing_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(tmp_path / "nothing.safetensors")
    with pytest.raises(ValueError, match="unknown weight format '.pt'"):
        load_weights(tmp_path / "model.pt")
    state = {k: v.numpy() for k, v in torch_cnn().state_dict().items()}
    for suffix in (".safetensors", ".npz"):
        good = tmp_path / f"good{suffix}"
        save_weights(good, state)
        data = good.read_bytes()
        for label, payload in (("truncated", data[: len(data) // 2]), ("garbage", b"\x00not a weight file" * 9),
                               ("empty", b"")):
            bad = tmp_path / f"{label}{suffix}"
            bad.write_bytes(payload)
            with pytest.raises(ValueError, match="corrupt or truncated"):
                load_weights(bad)
            with pytest.raises(ValueError, match="corrupt or truncated"):
                load_into(refsnn_cnn(), bad)


def test_pickled_objects_are_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="corrupt or truncated.*pickle"):
        load_weights(tmp_path / "evil.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_weights(tmp_path / "single.npz")
    with pytest.raises(TypeError, match="only bool, integer and float"):
        save_weights(tmp_path / "x.npz", {"w": np.array(["text"])})
    with pytest.raises(TypeError, match="mapping"):
        save_weights(tmp_path / "x.npz", [np.zeros(2)])


def test_npz_members_that_are_not_arrays_are_refused(tmp_path):
    """np.load hands such a member back as raw bytes; a weight file holds arrays only."""
    with zipfile.ZipFile(tmp_path / "notes.npz", "w") as archive:
        with archive.open("w.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(3))
        archive.writestr("notes.txt", b"not an array")
    with pytest.raises(ValueError, match=r"\['notes.txt'\] are not .npy arrays"):
        load_weights(tmp_path / "notes.npz")
    with pytest.raises(ValueError, match="not .npy arrays"):
        load_into(refsnn_cnn(), tmp_path / "notes.npz")
