"""Latency and delta encodings (refsnn.encoding): hand-computed cases and snnTorch's
``spikegen.latency`` / ``spikegen.delta`` on the same inputs (exact equality of every spike).
direct and poisson are tested in tests/test_data.py.
"""
import itertools
import math

import numpy as np
import pytest

from refsnn.encoding import delta, latency, latency_times


def test_latency_hand_computed_log_code():
    # t = tau·ln(x'/(x' − 0.01)), x' = max(x, 0.01 + 1e-7): x = 1 → ln(1/0.99) = 0.01 → step 0;
    # x = 0.02 → ln 2 = 0.69 → step 1; x = 0.0115 → ln(0.0115/0.0015) = 2.04 → step 2;
    # x = 0 → ln(0.0100001/1e-7) = ln(100001) = 11.51 → step 12 (the latest: T = 13 holds it).
    x = np.array([[1.0, 0.02, 0.0115, 0.0]])
    times = latency_times(x, 13)
    np.testing.assert_allclose(times[0], [math.log(1 / 0.99), math.log(2), math.log(0.0115 / 0.0015),
                                          math.log(0.0100001 / (0.0100001 - 0.01))], rtol=1e-12)
    spikes = latency(x, 13)
    assert spikes.shape == (13, 1, 4) and spikes.dtype == np.float64
    assert np.array_equal(spikes.sum(axis=0), np.ones((1, 4)))          # one spike per element
    assert np.argmax(spikes, axis=0).tolist() == [[0, 1, 2, 12]]
    clipped = latency(x, 13, clip=True)                                   # x < threshold never fires
    assert clipped.sum(axis=0).tolist() == [[1, 1, 1, 0]]
    with pytest.raises(ValueError, match="beyond the last step T - 1 = 11.*normalize=True"):
        latency(x, 12)


def test_latency_hand_computed_linear_and_normalize():
    # snnTorch's docstring example: linear, normalize, T = 5 → tau = 4, t = 4·(1 − x) = 3.92, 2, 0
    x = np.array([0.02, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(latency_times(x, 5, normalize=True, linear=True), [3.92, 2.0, 0.0], rtol=1e-6)
    expected = [[0, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert latency(x, 5, normalize=True, linear=True).tolist() == expected
    # first_spike_time 2: tau = 5 − 1 − 2 = 2, t = 2·(1 − x) + 2 = 3.96, 3, 2
    assert np.argmax(latency(x, 5, normalize=True, linear=True, first_spike_time=2), axis=0).tolist() == [4, 3, 2]
    # log code normalized: the latest element lands on T − 1, the others scaled by (T − 1)/max t
    t = latency_times(np.array([1.0, 0.02]), 8, normalize=True)
    np.testing.assert_allclose(t, [7 * math.log(1 / 0.99) / math.log(2), 7.0], rtol=1e-12)


def test_delta_hand_computed():
    # snnTorch's docstring examples
    a = np.array([1, 2, 2.9, 3, 3.9])
    assert delta(a, threshold=1).tolist() == [1, 1, 0, 0, 0]
    assert delta(a, threshold=1, padding=True).tolist() == [0, 1, 0, 0, 0]
    b = np.array([1, 2, 0, 2, 2.9], np.float32)
    assert delta(b, threshold=1, off_spike=True).tolist() == [1, 1, -1, 1, 0]
    assert delta(b, threshold=1, padding=True, off_spike=True).tolist() == [0, 1, -1, 1, 0]
    assert delta(b, threshold=1).dtype == np.float32


def _random_frames(rng, dtype):
    x = rng.random((3, 2, 5, 4)).astype(dtype)
    x[x < 0.25] = 0.0                       # a dark background below any threshold
    x[0, 0, 0, 0], x[1, 1, 2, 3] = 1.0, 0.05  # the extremes
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_latency_equals_snntorch(dtype):
    torch = pytest.importorskip("torch")
    spikegen = pytest.importorskip("snntorch.spikegen")
    rng = np.random.default_rng(3)
    compared = refused = 0
    for linear, normalize, clip, threshold, tau, T, first in itertools.product(
            (False, True), (False, True), (False, True), (0.01, 0.3), (0.5, 1.0, 4.0), (6, 16), (0, 2)):
        x = _random_frames(rng, dtype)
        options = dict(threshold=threshold, tau=tau, first_spike_time=first, clip=clip, normalize=normalize,
                       linear=linear)
        try:
            theirs = spikegen.latency(torch.from_numpy(x), num_steps=T, **options).numpy()
        except Exception as e:  # snnTorch raises a bare Exception when a spike falls beyond T − 1
            assert "out of bounds" in str(e)
            with pytest.raises(ValueError, match="beyond the last step"):
                latency(x, T, **options)
            refused += 1
            continue
        mine = latency(x, T, **options)
        assert mine.dtype == dtype and mine.shape == (T,) + x.shape
        np.testing.assert_array_equal(mine, theirs, err_msg=str(options))
        compared += 1
    assert compared > 100 and refused > 10  # both outcomes are exercised


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_delta_equals_snntorch(dtype):
    torch = pytest.importorskip("torch")
    spikegen = pytest.importorskip("snntorch.spikegen")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 3, 2, 5)).astype(dtype)
    x[3] = x[2]  # a step without change
    for threshold, padding, off_spike in itertools.product((0.1, 0.5, 1.0), (False, True), (False, True)):
        theirs = spikegen.delta(torch.from_numpy(x), threshold=threshold, padding=padding, off_spike=off_spike)
        mine = delta(x, threshold=threshold, padding=padding, off_spike=off_spike)
        np.testing.assert_array_equal(mine, theirs.numpy())
        assert mine.dtype == dtype and np.abs(mine).sum() > 0


@pytest.mark.parametrize("call, error, match", [
    (lambda: latency(np.array([0.5, 1.5]), 4), ValueError, r"x in \[0, 1\]"),
    (lambda: latency(np.array([-0.1, 0.5]), 4), ValueError, r"x in \[0, 1\]"),
    (lambda: latency(np.array([np.nan, 0.5]), 4), ValueError, "NaN"),
    (lambda: latency(np.array([1, 0]), 4), TypeError, "dtype"),
    (lambda: latency(np.array([0.5]), 0), ValueError, "T must be positive"),
    (lambda: latency(np.array([0.5]), 4, threshold=0.0), ValueError, "threshold"),
    (lambda: latency(np.array([0.5]), 4, threshold=1.0), ValueError, "threshold"),
    (lambda: latency(np.array([0.5]), 4, tau=0), ValueError, "tau"),
    (lambda: latency(np.array([0.5]), 4, first_spike_time=4), ValueError, "first_spike_time"),
    (lambda: latency(np.array([0.5]), 4, normalize="yes"), TypeError, "normalize"),
    (lambda: delta(np.array([0.5, np.inf])), ValueError, "NaN or Inf"),
    (lambda: delta(np.zeros((0, 3))), ValueError, "T = 0"),
    (lambda: delta(np.array([1, 2])), TypeError, "dtype"),
])
def test_bad_inputs_and_options_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
