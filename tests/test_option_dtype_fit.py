"""A float option that does not fit the data's dtype, or whose derived constant (1/α) does not, is
refused with one ValueError naming the option and the dtype, before any kernel reads it (issue 16's
tester, finding 4: a NonFiniteError blaming the membrane, or a cast warning then zero gradients)."""
import numpy as np
import pytest

from refsnn.cli import main
from refsnn.convert import ConvertConfig
from refsnn.neurons import CLIF, ConvertedNeuron
from refsnn.train import ConfigError


def forward_backward(neuron, dtype):
    x = np.full((2, 3), 0.8, dtype)
    neuron.forward(x)
    return neuron.backward(np.ones_like(x))


def test_rect_authors_alpha_whose_inverse_overflows_float64_is_refused_at_construction():
    # old: constructed; here no error (u outside the window), with u inside it a NonFiniteError blaming the membrane
    with pytest.raises(ValueError, match=r"surrogate alpha = .*1/alpha, which is not finite in float64"):
        forward_backward(CLIF(surrogate="rect_authors", alpha=1e-320), np.float64)


def test_alpha_beyond_float32_is_refused_at_the_first_forward():
    neuron = CLIF(surrogate="rect_authors", alpha=1e39)  # fits float64: accepted until float32 data comes
    # old: a cast-overflow RuntimeWarning, then all-zero gradients
    with pytest.raises(ValueError, match=r"surrogate alpha = 1e\+39 is not finite in float32"):
        forward_backward(neuron, np.float32)
    assert np.any(forward_backward(neuron, np.float64) != 0)  # float64 holds it (|u| ≤ α/2 everywhere: 1/α)


def test_neuron_options_beyond_float32_are_named():
    with pytest.raises(ValueError, match=r"CLIF\.tau = 1e\+39 is not finite in float32"):
        forward_backward(CLIF(tau=1e39), np.float32)
    # a derived constant (the tied amplitude c·b′·V_th) is named by the property that holds it
    neuron = ConvertedNeuron(threshold=1e37, amplitude=1e37, variant="authors", amplitude_factor=100)
    with pytest.raises(ValueError, match=r"ConvertedNeuron\.amplitude = 1e\+39 is not finite in float32"):
        forward_backward(neuron, np.float32)


def test_convert_refuses_an_overflowing_amplitude_factor_before_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"amplitude_factor must be in \(0, 100\]"):
        ConvertConfig(variant="authors", amplitude_factor=1e308)
    # old: trained the DNN, then "ConvertedNeuron: input contains NaN/Inf"
    assert main(["convert", "--variant", "authors", "--amplitude-factor", "1e308", "--out-dir", str(tmp_path / "c")]) == 2
    assert "amplitude_factor must be in (0, 100]" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
