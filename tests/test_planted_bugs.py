"""verify.user.check_against finds the bugs people write into PyTorch SNNs.

Each torch LIF below is the plain multi-step loop a user might write (charge, fire, reset), with
one planted bug. The correct loop passes every row; each bug fails a row that names the tensor
where it shows: the spikes and membrane for a wrong reset, the input gradient for a wrong
surrogate slope or a missing detach. Also: the README example in verify/user.py's docstring is
re-run and its printed table must be what the docstring shows.
"""
import contextlib
import io
import re
import textwrap

import numpy as np
import pytest

import refsnn
from refsnn.models import build_network
from verify.user import check_against, print_table

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")
import verify.user as user_module  # noqa: E402


class SigmoidSpike(torch.autograd.Function):
    """Θ(u) forward; SpikingJelly's sigmoid surrogate α·σ(αu)(1 − σ(αu)) backward."""

    @staticmethod
    def forward(ctx, u, alpha):
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u)

    @staticmethod
    def backward(ctx, grad):
        sg = torch.sigmoid(ctx.alpha * ctx.saved_tensors[0])
        return grad * ctx.alpha * sg * (1 - sg), None


class UserLIF(torch.nn.Module):
    """LIF with decay_input, hard reset to v_reset: returns (spikes, membrane after reset).

    bug = None            correct
          "reset_pre"     (a) the reset keeps the pre-charge V instead of H
          "alpha_2x"      (b) surrogate slope twice what the config says
          "no_detach"     (c) claims detach_reset=True but lets the gradient through the reset
    """

    def __init__(self, tau=2.0, v_threshold=1.0, v_reset=0.0, alpha=4.0, detach_reset=False, bug=None):
        super().__init__()
        self.tau, self.v_threshold, self.v_reset, self.alpha = tau, v_threshold, v_reset, alpha
        self.detach_reset, self.bug = detach_reset, bug

    def forward(self, x):
        alpha = 2 * self.alpha if self.bug == "alpha_2x" else self.alpha
        v = torch.full_like(x[0], self.v_reset)
        spikes, membrane = [], []
        for x_t in x:
            h = v + (x_t - (v - self.v_reset)) / self.tau
            s = SigmoidSpike.apply(h - self.v_threshold, alpha)
            s_reset = s.detach() if self.detach_reset and self.bug != "no_detach" else s
            kept = v if self.bug == "reset_pre" else h
            v = s_reset * self.v_reset + (1 - s_reset) * kept
            spikes.append(s)
            membrane.append(v)
        return torch.stack(spikes), torch.stack(membrane)


def inputs(dtype=np.float64, shape=(8, 4, 16), seed=0):
    return np.random.default_rng(seed).normal(0.8, 1.0, shape).astype(dtype)


def failing(rows):
    return {r.tensor for r in rows if not r.passed}


OPTIONS = [dict(), dict(v_reset=-0.2, tau=1.5), dict(detach_reset=True, v_threshold=0.7)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", OPTIONS)
def test_the_correct_loop_passes(options, dtype):
    rows = check_against(refsnn.LIF(**options), UserLIF(**options), inputs=inputs(dtype), dtype=dtype)
    assert [r.tensor for r in rows] == ["spikes", "V after reset", "grad_x"]
    assert not failing(rows), print_table(rows)
    assert 0.05 < float(re.search(r"rate ([0-9.]+)", rows[0].note).group(1)) < 0.95


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", OPTIONS)
def test_reset_with_the_pre_charge_membrane_is_flagged(options, dtype):
    rows = check_against(refsnn.LIF(**options), UserLIF(bug="reset_pre", **options), inputs=inputs(dtype),
                         dtype=dtype)
    assert failing(rows) == {"spikes", "V after reset", "grad_x"}
    assert "differ, first at [t, n, ...]" in rows[0].note


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_doubled_surrogate_slope_is_flagged(dtype):
    rows = check_against(refsnn.LIF(), UserLIF(bug="alpha_2x"), inputs=inputs(dtype), dtype=dtype)
    assert failing(rows) == {"grad_x"}  # the forward is right: only the gradient shows it
    grad_row = rows[-1]
    assert grad_row.max_rel > 1e-2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_missing_detach_is_flagged(dtype):
    rows = check_against(refsnn.LIF(detach_reset=True), UserLIF(detach_reset=True, bug="no_detach"),
                         inputs=inputs(dtype), dtype=dtype)
    assert failing(rows) == {"grad_x"}
    # and the same loop is right for the configuration it actually implements
    rows = check_against(refsnn.LIF(detach_reset=False), UserLIF(detach_reset=True, bug="no_detach"),
                         inputs=inputs(dtype), dtype=dtype)
    assert not failing(rows)


def user_mlp(bug=None):
    """A user's torch MLP with their own LIF; names as refsnn's spiking_mlp (Flatten at 0)."""
    return torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Linear(12, 10), FirstOutput(UserLIF(bug=bug)),
                               torch.nn.Linear(10, 3))


class FirstOutput(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[0]


@pytest.mark.parametrize("bug", [None, "alpha_2x", "reset_pre"])
def test_networks_with_the_users_neuron(bug):
    mine = build_network("mlp", (12,), 3, neuron="lif", hidden=(10,))
    rows = check_against(mine, user_mlp(bug), inputs=inputs(shape=(6, 5, 12)) * 3)
    names = [r.tensor for r in rows]
    assert names == ["output", "grad_x", "1.weight", "1.bias", "3.weight", "3.bias"]
    expected = {None: set(), "alpha_2x": {"grad_x", "1.weight", "1.bias"},
                "reset_pre": set(names) - {"3.bias"}}[bug]  # 3.bias: dL/db = Σ grad_output
    assert failing(rows) == expected, print_table(rows)


def test_spikingjelly_twin_and_weight_file(tmp_path):
    """No torch module: the reference is SpikingJelly's twin; the weight file goes into both."""
    from verify.weights import save_weights
    net = build_network("cnn", (2, 8, 8), 3, neuron="plif", channels=(2, 4), seed=1)
    state = build_network("cnn", (2, 8, 8), 3, neuron="plif", channels=(2, 4), seed=2).state_dict()
    save_weights(tmp_path / "w.safetensors", state)
    rows = check_against(net, weights=tmp_path / "w.safetensors", input_shape=(3, 2, 2, 8, 8), seed=4)
    assert not failing(rows), print_table(rows)
    assert {r.framework for r in rows} == {"spikingjelly"}
    assert {"2.w", "6.w", "0.weight"} <= {r.tensor for r in rows}
    with pytest.raises(ValueError, match="weights do not fit"):  # the file really is loaded
        check_against(net, weights={**state, "2.w": np.zeros(2, np.float32)}, input_shape=(3, 2, 2, 8, 8))


def test_errors():
    with pytest.raises(ValueError, match="inputs"):
        check_against(refsnn.LIF(), UserLIF())
    with pytest.raises(ValueError, match="time-major"):
        check_against(refsnn.LIF(), torch.nn.Flatten(0), inputs=inputs(shape=(3, 2, 4)))
    with pytest.raises(ValueError, match="weights do not fit"):
        check_against(refsnn.PLIF(), UserLIF(), inputs=inputs(shape=(3, 2, 4)))


def test_readme_example_output_is_real():
    """Run the example of verify/user.py's docstring; its printed table must match."""
    doc = user_module.__doc__
    code = re.search(r"::\n\n(.*?)\nprints::", doc, re.S).group(1)
    shown = re.search(r"prints::\n\n(.*?)\n\n", doc, re.S).group(1)
    code, shown = textwrap.dedent(code), textwrap.dedent(shown)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "user.py docstring", "exec"), {"__name__": "readme_example"})
    assert out.getvalue().strip() == shown.strip()
    assert "spikes" in shown and "FAIL" in shown
