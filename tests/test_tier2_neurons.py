"""Tier 2 for neurons: refsnn against SpikingJelly 2.0 and snnTorch (docs/verification.md).

Property-based: hypothesis draws the neuron, its options, the shapes, the dtype and the input
scale (silent to saturated); every row of ``verify.neurons_check.check_neuron`` must pass:
spikes identical outside threshold ties, membranes and gradients within 1e-10 (float64) or 1e-5
(float32) relative. Plus: the snnTorch mapping, the tie detector on a planted tie, the reasons
given for "no equivalent", and ``python -m verify``.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")
from hypothesis import assume, example, given, settings, strategies as st  # noqa: E402

import refsnn  # noqa: E402
from refsnn.neurons import generic_kernels  # noqa: E402
from verify.compare import TOLERANCE, compare, format_table, tie_mask  # noqa: E402
from verify.frameworks import NoEquivalent, mirror  # noqa: E402
from verify.neurons_check import check_neuron, float32_errors  # noqa: E402

# Hypothesis deprecations (e.g. assume() outside a property test) are errors here, not warnings.
pytestmark = pytest.mark.filterwarnings("error::hypothesis.errors.HypothesisDeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def generic():
    """Every refsnn neuron here runs its generic Numba compilation. Hypothesis draws many
    configurations and each would otherwise compile its own specialized kernels (several seconds
    apiece); the generic compilation, one per dtype, serves them all, and
    tests/test_neurons.py::test_specialized_kernels_match_the_generic_ones proves the two
    bit-identical. (Smooth mode would also select it, but changes the maths.)"""
    with generic_kernels():
        yield


def make_input(shape, scale, seed, dtype):
    """Mean scale/2, spread scale: silent for scale 0.01, saturated for 10."""
    return (scale * (np.random.default_rng(seed).standard_normal(shape) + 0.5)).astype(dtype)


# Above threshold the sigmoid surrogate's g' = α·σ(z)(1 − σ(z)), z = α·u, as SpikingJelly and
# refsnn write it, loses digits to cancellation in 1 − σ: relative error ≈ ε·e^z, with ε the
# precision σ is formed in (float32 in SpikingJelly's float32 kernel; float64 in refsnn, in either
# dtype). snnTorch's k·e^(−z)/(e^(−z) + 1)² has none. Where both sides are accurate to tol/10 the
# comparison is meaningful; draws reaching further into the tail are discarded, for sigmoid
# only (the other surrogates cover saturation). The defect is pinned below in
# test_sigmoid_surrogate_accurate_above_threshold and test_sigmoid_surrogate_tail_in_the_frameworks.
def sigmoid_tail_reached(neuron, framework, dtype):
    if neuron.surrogate.name != "sigmoid":
        return False
    eps = np.finfo(np.float32 if framework == "spikingjelly" and dtype == "float32" else np.float64).eps / 2
    z_max = np.log(0.1 * TOLERANCE[np.dtype(dtype)] / eps)
    return float(np.max(neuron.surrogate.alpha * (neuron.h_seq - neuron.v_threshold))) > z_max


def assert_rows_pass(rows, case):
    assert rows, "nothing was compared"
    assert all(r.passed for r in rows), f"{case}\n{format_table(rows)}"


def assert_agrees(neuron, framework, x, seed, case):
    """Every row passes; or, in float32, a gradient or membrane that misses 1e-5 relative is one
    float32 cannot resolve better: a difference of nearly equal terms (e.g. B − gS·g', 300× smaller
    than its terms), where the framework's own float32 result misses the exact answer too. Then
    refsnn's float32 result must be as accurate as the framework's (within 2×) against the exact
    answer (the framework in float64 on the same values), or within 1e-5 of it. Spikes never get
    this allowance."""
    rows = check_neuron(neuron, framework, x, seed=seed)
    failing = [r for r in rows if not r.passed]
    if not failing or x.dtype != np.float32 or any(r.tensor == "spikes" for r in failing):
        return assert_rows_pass(rows, case)
    errors, truth, _ = float32_errors(neuron, framework, x, seed)
    for r in failing:
        key = r.tensor.split()[0]  # "membrane V" -> "membrane"
        mine, theirs = errors[key]
        allowed = max(2 * theirs, TOLERANCE[np.dtype(np.float32)] * float(np.max(np.abs(truth[key]))))
        assert mine <= allowed, (f"{case}\n{format_table(rows)}\n{key}: refsnn float32 error {mine:.3e}, "
                                 f"{framework} float32 error {theirs:.3e}, against float64")


# ---- SpikingJelly, property-based ---------------------------------------------------------
SJ_SURROGATES = ["atan", "sigmoid", "rect", "s2nn"]


@st.composite
def spikingjelly_cases(draw):
    # the registry's SpikingJelly neurons (snnTorch's leaky and synaptic have no SpikingJelly equivalent)
    kind = draw(st.sampled_from(["lif", "plif", "if", "clif", "s2nn"]))
    T = 1 if kind == "s2nn" else draw(st.integers(1, 6))
    shape = (T, draw(st.integers(1, 4)), *draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    surrogate = draw(st.sampled_from(SJ_SURROGATES))
    opts = dict(v_threshold=draw(st.floats(0.2, 2.0)), surrogate=surrogate, alpha=draw(st.floats(0.5, 5.0)))
    if surrogate == "s2nn":
        opts["beta"] = draw(st.floats(0.5, 2.0))
    if kind in ("lif", "plif", "if"):
        opts["v_reset"] = draw(st.one_of(st.none(), st.just(0.0), st.floats(-1.0, 1.0)))
        opts["detach_reset"] = draw(st.booleans())
    if kind in ("lif", "plif"):
        opts["decay_input"] = draw(st.booleans())
    if kind in ("lif", "clif"):
        opts["tau"] = draw(st.floats(1.1, 5.0))
    if kind == "plif":
        opts["init_tau"] = draw(st.floats(1.1, 5.0))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    scale = 10 ** draw(st.floats(-2.0, 1.0))
    return kind, opts, shape, dtype, scale, draw(st.integers(0, 2**32 - 1))


def run_spikingjelly_case(kind, opts, shape, dtype, scale, seed):
    neuron = refsnn.make_neuron(kind, **opts)
    x = make_input(shape, scale, seed, dtype)
    neuron.to(np.dtype(dtype)).forward(x)
    if sigmoid_tail_reached(neuron, "spikingjelly", dtype):
        assume(False)  # discard the draw; direct callers (not property tests) use other surrogates
    assert_agrees(neuron, "spikingjelly", x, seed + 1, (kind, opts, shape, dtype, scale, seed))


@settings(max_examples=100, deadline=None)
@given(spikingjelly_cases())
@example(("lif", dict(v_threshold=1.0, surrogate="sigmoid", alpha=4.0, v_reset=0.0, detach_reset=False,
                      decay_input=True, tau=2.0), (6, 4, 3), "float32", 1.5, 0))
def test_agrees_with_spikingjelly(case):
    run_spikingjelly_case(*case)


# Shrunk failures found by the property tests (before the fixes described), kept as regressions.
def test_regression_plif_w_gradient_cancels_in_float32():
    """dL/dw sums 24 terms of total size 1.72 into 0.0044: float32 rounding on either side is
    then ~1e-5 of the result (refsnn 0.00438487, SpikingJelly 0.00438479, exact 0.00438482).
    Fixed by measuring a parameter gradient's error relative to Σ|terms| (neurons_check.py)."""
    neuron = refsnn.PLIF(init_tau=3.859375, v_threshold=0.203125, v_reset=None, detach_reset=True,
                         surrogate="rect", alpha=2.0)
    x = make_input((3, 4, 2), 1.0, 4, np.float32)
    rows = {r.tensor: r for r in check_neuron(neuron, "spikingjelly", x, seed=4)}
    assert rows["grad_w"].passed and 1e-6 < rows["grad_w"].max_abs / 0.0043848 < 1e-4, rows["grad_w"]


def test_regression_single_step_gradient_cancels_in_float32():
    """One neuron below threshold: dL/dx = B + gS·g' = 0.168 − 0.168 = −0.00052, a 300-fold
    cancellation. SpikingJelly's float32 result misses the exact one by 1.5e-5 relative; refsnn's
    float32 result is closer. assert_agrees accepts it for that reason and no other."""
    neuron = refsnn.SingleStep(v_threshold=0.203125, surrogate="atan", alpha=0.5)
    x = make_input((1, 1, 1), 1.0, 8565231, np.float32)
    rows = {r.tensor: r for r in check_neuron(neuron, "spikingjelly", x, seed=8565231)}
    assert not rows["grad_x[S+V]"].passed
    errors, truth, _ = float32_errors(neuron, "spikingjelly", x, seed=8565231)
    mine, theirs = errors["grad_x[S+V]"]
    scale = float(np.max(np.abs(truth["grad_x[S+V]"])))
    assert theirs / scale > 1e-5 and mine < theirs, (mine, theirs, scale)
    assert_agrees(neuron, "spikingjelly", x, 8565231, "regression")


def test_fast_sigmoid_at_alpha_one_is_superspike():
    """fast_sigmoid 1/(α|u|+1)² equals SpikingJelly's SuperSpike α/(|u|+1)² only at α = 1."""
    for dtype in ("float32", "float64"):
        run_spikingjelly_case("lif", dict(surrogate="fast_sigmoid", alpha=1.0, tau=2.5), (5, 3, 4), dtype, 1.5, 1)
    with pytest.raises(NoEquivalent, match="fast_sigmoid"):
        mirror(refsnn.LIF(surrogate="fast_sigmoid", alpha=2.0), "spikingjelly", np.float64)


def test_the_comparison_can_fail():
    """A wrong configuration on the refsnn side (tau 2.5 against SpikingJelly's 2.0) must fail."""
    x = make_input((6, 3, 4), 1.5, 2, np.float64)
    wrong = refsnn.LIF(tau=2.5)
    m = mirror(refsnn.LIF(tau=2.0), "spikingjelly", np.float64)
    xt = torch.tensor(x, requires_grad=True)
    s, v = m.run(xt)
    s.sum().backward()
    wrong.to(np.float64)
    mine_s = wrong.forward(x)
    mine_g = wrong.backward(np.ones_like(x))
    assert not compare("lif", "spikingjelly", "grad_x", mine_g, xt.grad.numpy()).passed
    assert not compare("lif", "spikingjelly", "spikes", mine_s, s.detach().numpy(), tolerance=0.0).passed


# ---- snnTorch --------------------------------------------------------------------------
SNNTORCH_CONFIGS = {  # the refsnn configurations with an exact snnTorch Leaky equivalent
    "if-subtract": dict(kind="if", v_reset=None),
    "if-zero": dict(kind="if", v_reset=0.0),
    "lif-zero": dict(kind="lif", v_reset=0.0, decay_input=False),
    "plif-zero": dict(kind="plif", v_reset=0.0, decay_input=False),
}
EXP_LIMIT = {"float32": 44.0, "float64": 354.0}  # (e^z + 1)² overflows beyond about these z


@st.composite
def snntorch_cases(draw):
    config = dict(SNNTORCH_CONFIGS[draw(st.sampled_from(sorted(SNNTORCH_CONFIGS)))])
    kind = config.pop("kind")
    dtype = draw(st.sampled_from(["float32", "float64"]))
    threshold = draw(st.floats(0.2, 2.0))
    if config["v_reset"] is None and dtype == "float64":
        # snnTorch forms R·thr in float32 (its spikes are float32), so the subtract reset has an
        # exact float64 equivalent only for float32-representable thresholds (see frameworks.py).
        threshold = float(np.float32(threshold))
    surrogate, alpha = draw(st.sampled_from(["atan", "sigmoid", "fast_sigmoid"])), draw(st.floats(0.5, 25.0))
    if surrogate == "sigmoid" and dtype == "float64":
        alpha = 2.0 ** round(np.log2(alpha))  # float64: exact only for a power-of-two slope (frameworks.py)
    opts = dict(config, v_threshold=threshold, strict=True, detach_reset=True, surrogate=surrogate, alpha=alpha)
    if kind == "lif":
        opts["tau"] = draw(st.floats(1.1, 5.0))
    if kind == "plif":
        opts["init_tau"] = draw(st.floats(1.1, 5.0))
    T = draw(st.integers(1, 6))
    shape = (T, draw(st.integers(1, 4)), *draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    return kind, opts, shape, dtype, 10 ** draw(st.floats(-2.0, 1.0)), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(snntorch_cases())
def test_agrees_with_snntorch(case):
    pytest.importorskip("snntorch")
    kind, opts, shape, dtype, scale, seed = case
    neuron = refsnn.make_neuron(kind, **opts)
    x = make_input(shape, scale, seed, dtype)
    neuron.to(np.dtype(dtype)).forward(x)
    assume(not sigmoid_tail_reached(neuron, "snntorch", dtype))
    if opts["surrogate"] == "sigmoid":
        # snnTorch's sigmoid surrogate computes exp(−k·u) unguarded and returns NaN where it
        # (squared) overflows (snnTorch issue #427; pinned in test_snntorch_sigmoid_overflow below).
        assume(float(np.max(-opts["alpha"] * (neuron.h_seq - opts["v_threshold"]))) < EXP_LIMIT[dtype])
    assert_agrees(neuron, "snntorch", x, seed + 1, case)


def test_snntorch_sigmoid_overflow():
    """snnTorch #427, still in 1.0: its sigmoid surrogate's gradient is NaN far below threshold
    (k·e^(−ku)/(e^(−ku)+1)² = inf/inf); refsnn's is the correct 0 there and equal elsewhere.
    If this starts failing, snnTorch fixed it and the assume() above can go."""
    pytest.importorskip("snntorch")
    neuron = refsnn.LIF(decay_input=False, strict=True, detach_reset=True, surrogate="sigmoid", alpha=32.0)
    x = np.array([[[-40.0, 0.5, 1.5]]])  # exp(32·41) overflows in float64
    rows = {r.tensor: r for r in check_neuron(neuron, "snntorch", x)}
    assert rows["spikes"].passed and rows["membrane H"].passed
    assert not rows["grad_x"].passed and "NaN" in rows["grad_x"].note
    neuron.forward(x)
    assert np.all(np.isfinite(neuron.backward(np.ones_like(x))))


SIGMOID_TAIL = np.array([5.0, 20.0, 30.0, 40.0])  # z = α·u, far above threshold


def exact_sigmoid_derivative(z, alpha):
    e = np.exp(-np.abs(z))
    return alpha * e / (1 + e) ** 2


def test_sigmoid_surrogate_accurate_above_threshold():
    """Found by test_agrees_with_snntorch: α·σ(z)(1 − σ(z)) canceled above threshold (relative
    error ε·e^z, 0 beyond z ≈ 37); refsnn now evaluates α·e/(1 + e)², e = exp(−|z|)."""
    alpha = 2.0
    mine = refsnn.Surrogate("sigmoid", alpha).derivative(SIGMOID_TAIL / alpha)
    np.testing.assert_allclose(mine, exact_sigmoid_derivative(SIGMOID_TAIL, alpha), rtol=1e-12)


def test_sigmoid_surrogate_tail_in_the_frameworks():
    """The other sides of the same cancellation: snnTorch's sigmoid g' is exact in the tail (in
    float64), SpikingJelly's float32 kernel returns 0 from z ≈ 17 on (σ(z) rounds to 1)."""
    from spikingjelly.activation_based import surrogate as sj_surrogate
    snntorch = pytest.importorskip("snntorch")
    alpha = 2.0
    exact = exact_sigmoid_derivative(SIGMOID_TAIL, alpha)
    for dtype, fn in ((torch.float64, snntorch.surrogate.sigmoid(slope=alpha)),
                      (torch.float32, sj_surrogate.Sigmoid(alpha=alpha))):
        u = torch.tensor(SIGMOID_TAIL / alpha, dtype=dtype, requires_grad=True)
        fn(u).backward(torch.ones_like(u))
        grads = u.grad.double().numpy()
        if dtype == torch.float64:
            np.testing.assert_allclose(grads, exact, rtol=1e-12)
        else:
            assert grads[0] > 0 and np.all(grads[1:] == 0), grads


def test_snntorch_spikes_are_float32_in_float64():
    """Why the projections are float32-representable (neurons_check.py): snnTorch's spikes are
    float32 for float64 inputs, so the gradient arriving at them is rounded to float32."""
    pytest.importorskip("snntorch")
    neuron = refsnn.IF(v_reset=0.0, strict=True, detach_reset=True, surrogate="atan").to(np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)) + 0.5
    m = mirror(neuron, "snntorch", np.float64)
    errors = []
    for a in (rng.standard_normal(x.shape), rng.standard_normal(x.shape).astype(np.float32).astype(np.float64)):
        xt = torch.tensor(x, requires_grad=True)
        s, _ = m.run(xt)
        assert s.dtype == torch.float32
        (s * torch.from_numpy(a)).sum().backward()
        neuron.forward(x)
        g = neuron.backward(a)
        errors.append(np.abs(g - xt.grad.numpy()).max() / np.abs(g).max())
    assert errors[0] > 1e-9 and errors[1] < 1e-14, errors


def test_snntorch_subtract_has_no_equivalent_for_leaky_neurons():
    """The stated reason is real: with β < 1, snnTorch's U = βU + X − R·thr differs from every
    refsnn soft reset, which removes the threshold before the leak."""
    snntorch = pytest.importorskip("snntorch")
    neuron = refsnn.LIF(tau=2.0, v_reset=None, decay_input=False, strict=True, detach_reset=True, surrogate="atan")
    with pytest.raises(NoEquivalent, match="after the leak"):
        mirror(neuron, "snntorch", np.float64)
    x = np.array([[1.5], [0.0], [0.0]])
    leaky = snntorch.Leaky(beta=torch.tensor(0.5, dtype=torch.float64),
                           threshold=torch.tensor(1.0, dtype=torch.float64))
    theirs = [leaky(xt)[1].item() for xt in torch.tensor(x)]
    neuron.to(np.float64).forward(x)
    assert theirs == [1.5, -0.25, -0.125]                  # 0.5·1.5 + 0 − 1 ; then 0.5·(−0.25)
    assert neuron.h_seq.ravel().tolist() == [1.5, 0.25, 0.125]  # 0.5·(1.5 − 1) ; then 0.5·0.25


@pytest.mark.parametrize("neuron, framework, reason", [
    (refsnn.LIF(strict=True), "spikingjelly", "fires on H >= V_th"),
    (refsnn.LIF(surrogate="boxcar"), "spikingjelly", "boxcar"),
    (refsnn.LIF(smooth=True), "spikingjelly", "smooth mode"),
    (refsnn.CLIF(strict=True), "snntorch", "complementary"),
    (refsnn.LIF(surrogate="rect", strict=True, detach_reset=True, decay_input=False), "snntorch", "no rect"),
    (refsnn.LIF(strict=True, detach_reset=True), "snntorch", "1/tau"),
    (refsnn.LIF(v_reset=-0.5, strict=True, detach_reset=True, decay_input=False), "snntorch", "zero only"),
    (refsnn.IF(strict=True), "snntorch", "always detached"),
    (refsnn.IF(detach_reset=True), "snntorch", "U > thr"),
    (refsnn.IF(v_reset=None, v_threshold=-0.5, strict=True, detach_reset=True), "snntorch", "thr < 0"),
    (refsnn.IF(v_reset=None, v_threshold=0.3, strict=True, detach_reset=True), "snntorch", "float32"),
    (refsnn.IF(strict=True, detach_reset=True, surrogate="sigmoid", alpha=1.875), "snntorch", "power-of-two"),
])
def test_no_equivalent_reasons(neuron, framework, reason):
    pytest.importorskip(framework)
    with pytest.raises(NoEquivalent, match=reason):
        mirror(neuron, framework, np.float64)


# ---- threshold ties ----------------------------------------------------------------------
def test_planted_tie_is_found_and_only_its_neuron_excluded():
    """IF, float32: H[1] = 0.25 + 0.5 = 0.75 = V_th exactly on neuron (0, 2) only."""
    rng = np.random.default_rng(5)
    x = (rng.uniform(-0.3, 0.3, (4, 2, 3)) + 0.2).astype(np.float32)
    x[0, 0, 2], x[1, 0, 2] = 0.25, 0.5
    neuron = refsnn.IF(v_threshold=0.75)
    spikes = neuron.forward(x)
    assert neuron.h_seq[1, 0, 2] == np.float32(0.75) and spikes[1, 0, 2] == 1.0
    mask, n_near = tie_mask(neuron.h_seq, 0.75)
    expected = np.zeros(x.shape, bool)
    expected[:, 0, 2] = True
    np.testing.assert_array_equal(mask, expected)
    assert n_near == 1
    # A framework that fires the other way at the tie still passes; a flip anywhere else fails.
    flipped = spikes.copy()
    flipped[1, 0, 2] = 0.0
    row = compare("if", "planted", "spikes", spikes, flipped, mask, tolerance=0.0)
    assert row.passed and row.ties == x.shape[0]
    flipped[0, 1, 1] = 1.0 - flipped[0, 1, 1]
    assert not compare("if", "planted", "spikes", spikes, flipped, mask, tolerance=0.0).passed
    # And the full check against SpikingJelly reports exactly that neuron's steps as ties.
    rows = check_neuron(refsnn.IF(v_threshold=0.75), "spikingjelly", x)
    assert_rows_pass(rows, "planted tie")
    assert {r.ties for r in rows} == {x.shape[0]}


# ---- the command -------------------------------------------------------------------------
def test_python_m_verify(capsys):
    from verify.__main__ import main
    assert main(["--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out and "FAIL" not in out
    assert "spikingjelly" in out and "snntorch" in out and "not compared" in out


def test_refsnn_verify_forwards_its_options(capsys):
    from refsnn.cli import main
    assert main(["verify", "--component", "s2nn", "--dtype", "float64", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "s2nn/s2nn4,1" in out and "float32" not in out
    # every compared row is the one component asked for (the legend printed below the table names
    # other neurons' labels, e.g. clif's, so a bare "lif" not in out no longer says that)
    rows = [line for line in out.splitlines() if " float64 " in line]
    assert rows and all(line.startswith("s2nn/") for line in rows)
