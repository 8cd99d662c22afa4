"""Conv2d's event-driven path (refsnn.layers.conv_events) against independent sides.

Each case runs the layer on a sparse input (spikes, or non-binary values such as average-pooled
spikes) and compares the output, the input gradient and the weight and bias gradients with
torch.nn.functional.conv2d and torch autograd, and the kernels with the plain NumPy references
of refsnn.layers.conv_events. Which path ran is asserted through ``Conv2d.last_path``; the choice is
forced by monkeypatching ``refsnn.layers.conv.SPARSE_COST`` (0: always event-driven; inf: never).

Tolerances (normwise relative error, max|Δ| / max|reference|): 1e-10 in float64 (docs/verification.md);
in float32 the layer sums up to C·kh·kw = 400 products in another order than torch, each sum
rounding to about 2^-24 relative per addition, so 1e-5 (docs/verification.md's float32 tolerance).
"""
import numpy as np
import pytest

from refsnn.layers import Conv2d, conv_events
from refsnn.layers import conv as conv_module

torch = pytest.importorskip("torch")

TOL = {np.float64: 1e-10, np.float32: 1e-5}
CASES = [  # (in, out, kernel, stride, padding, bias, H, W)
    (8, 5, 3, 1, 1, True, 9, 8),
    (8, 6, 3, 2, 0, True, 9, 9),
    (6, 70, 5, 2, 1, False, 11, 7),        # out_channels past one block of 64
    (16, 130, 1, 1, 0, True, 5, 6),        # 3 blocks, the last one partial
    (7, 4, (2, 3), (2, 1), (1, 0), True, 8, 9),  # non-square kernel and stride
    (12, 9, 3, 1, 1, True, 1, 1),          # a 1x1 map: only the center tap is valid
    (16, 8, 3, 1, 1, True, 4, 4),          # small maps: the input gradient per tap (Conv2d._input_gradient_nhwc)
    (16, 8, 3, 1, 1, False, 2, 3),
]


def rel_err(mine, theirs):
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    assert mine.shape == theirs.shape
    return float(np.max(np.abs(mine - theirs), initial=0.0) / max(np.max(np.abs(theirs), initial=0.0), 1e-300))


def sparse_input(shape, rate, binary, seed=0):
    rng = np.random.default_rng(seed)
    active = rng.random(shape) < rate
    values = np.ones(shape) if binary else rng.integers(1, 5, shape) / 4.0 * rng.choice([-1.0, 1.0], shape)
    return active * values


def torch_reference(conv, x, g):
    """Forward and the three gradients of torch.nn.functional.conv2d in float64, images folded."""
    T, N = x.shape[:2]
    x_t = torch.tensor(x.reshape(T * N, *x.shape[2:]), dtype=torch.float64, requires_grad=True)
    w_t = torch.tensor(conv.params["weight"], dtype=torch.float64, requires_grad=True)
    b_t = torch.tensor(conv.params["bias"], dtype=torch.float64, requires_grad=True) if "bias" in conv.params else None
    y_t = torch.nn.functional.conv2d(x_t, w_t, b_t, stride=conv.stride, padding=conv.padding)
    y_t.backward(torch.tensor(g.reshape(y_t.shape), dtype=torch.float64))
    out = {"output": y_t.detach().numpy().reshape(T, N, *y_t.shape[1:]), "input": x_t.grad.numpy().reshape(x.shape),
           "weight": w_t.grad.numpy()}
    if b_t is not None:
        out["bias"] = b_t.grad.numpy()
    return out


def run_layer(conv, x, g):
    y = conv.forward(x)
    path = conv.last_path
    dx = conv.backward(g)
    out = {"output": y, "input": dx, "weight": conv.grads["weight"]}
    if "bias" in conv.params:
        out["bias"] = conv.grads["bias"]
    return out, path


@pytest.fixture
def always_sparse(monkeypatch):
    monkeypatch.setattr(conv_module, "SPARSE_COST", 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("binary", [True, False], ids=["spikes", "pooled"])
@pytest.mark.parametrize("case", CASES)
def test_sparse_path_matches_torch(case, binary, dtype, always_sparse):
    cin, cout, k, s, p, bias, H, W = case
    conv = Conv2d(cin, cout, k, stride=s, padding=p, bias=bias, rng=np.random.default_rng(1)).to(dtype)
    x = sparse_input((2, 3, cin, H, W), 0.15, binary).astype(dtype)
    Ho, Wo = conv.output_size(H, W)
    g = np.random.default_rng(2).standard_normal((2, 3, cout, Ho, Wo)).astype(dtype)
    mine, path = run_layer(conv, x, g)
    assert path == "sparse"
    theirs = torch_reference(conv, x, g)
    errors = {name: rel_err(mine[name], theirs[name]) for name in theirs}
    assert all(e <= TOL[dtype] for e in errors.values()), errors
    assert mine["output"].dtype == dtype and mine["input"].dtype == dtype


@pytest.mark.parametrize("fill", ["zeros", "ones"])
def test_all_zero_and_all_one_inputs(fill, always_sparse):
    """No active input (every output is the bias, dW = 0) and every input active (dense work on
    the sparse path)."""
    conv = Conv2d(9, 70, 3, padding=1, rng=np.random.default_rng(3)).to(np.float64)
    x = (np.zeros if fill == "zeros" else np.ones)((2, 2, 9, 6, 5))
    g = np.random.default_rng(4).standard_normal((2, 2, 70, 6, 5))
    mine, path = run_layer(conv, x, g)
    assert path == "sparse"
    theirs = torch_reference(conv, x, g)
    for name in theirs:
        assert rel_err(mine[name], theirs[name]) <= 1e-10, name
    if fill == "zeros":
        np.testing.assert_array_equal(mine["output"], np.broadcast_to(conv.params["bias"][:, None, None], mine["output"].shape))
        np.testing.assert_array_equal(mine["weight"], 0)


def test_every_tap_and_channel_counts(always_sparse):
    """One active input at a time, at every (channel, row, column): the output is the weight taps
    that reach it, and dW[:, c, i, j] the G values it meets. A kernel that skipped a tap, a
    channel, an edge pixel or the last entry of a pixel fails here exactly (float64, one product)."""
    C, O, H, W = 6, 3, 4, 5
    conv = Conv2d(C, O, 3, padding=1, bias=False, rng=np.random.default_rng(5)).to(np.float64)
    g = np.random.default_rng(6).standard_normal((1, 1, O, H, W))
    for c in range(C):
        for h in range(H):
            for w in range(W):
                x = np.zeros((1, 1, C, H, W))
                x[0, 0, c, h, w] = 1.0
                x[0, 0, (c + 1) % C, h, w] = 0.5     # a second entry at the same pixel
                conv.zero_grad()
                mine, path = run_layer(conv, x, g)
                assert path == "sparse"
                theirs = torch_reference(conv, x, g)
                np.testing.assert_allclose(mine["output"], theirs["output"], rtol=0, atol=1e-15)
                np.testing.assert_allclose(mine["weight"], theirs["weight"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3, 0.6])
def test_path_is_chosen_by_measured_rate(rate):
    """Around the crossover both paths run (the choice follows Conv2d._sparse_pays on the counted
    non-zeros) and both agree with torch; a 64-channel layer on spikes at 2% goes event-driven,
    at 60% dense."""
    conv = Conv2d(64, 64, 3, padding=1, rng=np.random.default_rng(7)).to(np.float64)
    x = sparse_input((2, 2, 64, 6, 6), rate, binary=True, seed=8)
    expected = "sparse" if conv._sparse_pays(int(np.count_nonzero(x)), x.shape, 6, 6) else "nhwc"
    g = np.random.default_rng(9).standard_normal((2, 2, 64, 6, 6))
    mine, path = run_layer(conv, x, g)
    assert path == expected
    if rate == 0.02:
        assert path == "sparse"
    if rate == 0.6:
        assert path == "nhwc"
    theirs = torch_reference(conv, x, g)
    for name in theirs:
        assert rel_err(mine[name], theirs[name]) <= 1e-10, (name, path)


def test_sparse_and_dense_paths_agree(monkeypatch):
    """The same layer and input through both paths: equal to float32 rounding."""
    x = sparse_input((2, 4, 32, 8, 8), 0.1, binary=False, seed=10).astype(np.float32)
    g = np.random.default_rng(11).standard_normal((2, 4, 96, 8, 8)).astype(np.float32)
    results = {}
    for cost, path in ((0.0, "sparse"), (np.inf, "nhwc")):
        monkeypatch.setattr(conv_module, "SPARSE_COST", cost)
        conv = Conv2d(32, 96, 3, padding=1, rng=np.random.default_rng(12))
        results[path], taken = run_layer(conv, x, g)
        assert taken == path
    for name in results["nhwc"]:
        assert rel_err(results["sparse"][name], results["nhwc"][name]) <= 1e-5, name


def test_without_input_gradient(always_sparse):
    """needs_input_grad=False on the event-driven path: None, and bit-identical parameter gradients."""
    x = sparse_input((2, 3, 10, 7, 6), 0.2, binary=True).astype(np.float32)
    g = np.random.default_rng(13).standard_normal((2, 3, 20, 4, 3)).astype(np.float32)
    full, skipping = (Conv2d(10, 20, 3, stride=2, padding=1, rng=np.random.default_rng(14)) for _ in range(2))
    skipping.needs_input_grad = False
    np.testing.assert_array_equal(full.forward(x), skipping.forward(x))
    assert full.backward(g).shape == x.shape
    assert skipping.backward(g) is None
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(full.grads[name], skipping.grads[name])


def test_weight_gradient_split_over_images():
    """weight_gradient with the images split into parts (as with more threads than weight
    blocks) sums to the one-part result."""
    rng = np.random.default_rng(15)
    x = sparse_input((5, 7, 6, 5), 0.3, binary=False, seed=16)
    g = rng.standard_normal((5, 6, 5, 40))
    counts = np.empty(5 * 30, np.int32)
    conv_events.count_active(x.reshape(5, 7, 30), counts)
    compressed = conv_events.compress(x.reshape(5, 7, 30), counts)
    wt_shape = (1, 3, 3, 7, conv_events.BLOCK)
    sums = []
    for parts in (1, 3):
        dwt = np.zeros((parts,) + wt_shape)
        conv_events.weight_gradient(*compressed, 6, 5, g, 3, 3, 1, 1, 1, 1, parts, dwt)
        sums.append(conv_events.unblocked_weight(dwt.sum(axis=0), 40))
    reference = conv_events.weight_gradient_reference(x, g.transpose(0, 3, 1, 2), (3, 3), (1, 1), (1, 1))
    for dw in sums:
        assert rel_err(dw, reference) <= 1e-12


@pytest.mark.parametrize("binary", [True, False])
def test_kernels_match_numpy_references(binary):
    """compress, forward and weight_gradient against the plain NumPy references beside them."""
    rng = np.random.default_rng(17)
    B, C, H, W, O = 3, 11, 7, 6, 70
    x = sparse_input((B, C, H, W), 0.2, binary, seed=18)
    counts = np.empty(B * H * W, np.int32)
    conv_events.count_active(x.reshape(B, C, H * W), counts)
    compressed = conv_events.compress(x.reshape(B, C, H * W), counts)
    for mine, theirs in zip(compressed, conv_events.compress_reference(x.reshape(B, C, H * W))):
        np.testing.assert_array_equal(mine, theirs)
    weight, bias = rng.standard_normal((O, C, 3, 3)), rng.standard_normal(O)
    wt = conv_events.blocked_weight(weight)
    np.testing.assert_array_equal(conv_events.unblocked_weight(wt, O), weight)
    padded_bias = np.zeros(wt.shape[0] * conv_events.BLOCK)
    padded_bias[:O] = bias
    for (sh, sw), (ph, pw) in (((1, 1), (1, 1)), ((2, 1), (0, 1))):
        Ho, Wo = (H + 2 * ph - 3) // sh + 1, (W + 2 * pw - 3) // sw + 1
        out = np.empty((B, O, Ho, Wo))
        conv_events.forward(*compressed, H, W, wt, padded_bias, 3, 3, sh, sw, ph, pw, out)
        assert rel_err(out, conv_events.forward_reference(x, weight, bias, (sh, sw), (ph, pw))) <= 1e-12
        g = rng.standard_normal((B, O, Ho, Wo))
        dwt = np.zeros((1,) + wt.shape)
        conv_events.weight_gradient(*compressed, H, W, np.ascontiguousarray(g.transpose(0, 2, 3, 1)), 3, 3, sh, sw,
                                    ph, pw, 1, dwt)
        reference = conv_events.weight_gradient_reference(x, g, (3, 3), (sh, sw), (ph, pw))
        assert rel_err(conv_events.unblocked_weight(dwt[0], O), reference) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cin, cout, k, s, p, spikes", [(1, 4, 3, 1, 1, False), (3, 5, (3, 2), 2, 0, False),
                                                         (9, 70, 3, 1, 1, True), (9, 6, 3, 1, 1, False)])
def test_input_repeated_over_time(cin, cout, k, s, p, spikes, dtype):
    """A first layer (needs_input_grad=False) whose input is the same at every step convolves one
    step (last_time_shared); output and parameter gradients as torch's over all T·N images. One
    changed element at a late step turns it off."""
    conv = Conv2d(cin, cout, k, stride=s, padding=p, rng=np.random.default_rng(20)).to(dtype)
    conv.needs_input_grad = False
    rng = np.random.default_rng(21)
    image = (rng.random((1, 3, cin, 8, 7)) < 0.1) * 1.0 if spikes else rng.standard_normal((1, 3, cin, 8, 7))
    x = np.repeat(image, 4, axis=0).astype(dtype)
    Ho, Wo = conv.output_size(8, 7)
    g = rng.standard_normal((4, 3, cout, Ho, Wo)).astype(dtype)
    for changed in (False, True):
        if changed:
            x[3, 2, 0, 7, 6] += 1
        conv.zero_grad()
        y = conv.forward(x)
        assert conv.last_time_shared is (not changed)
        assert y.shape == (4, 3, cout, Ho, Wo) and y.dtype == dtype and y.flags.c_contiguous
        assert conv.backward(g) is None
        theirs = torch_reference(conv, x, g)
        mine = {"output": y, "weight": conv.grads["weight"], "bias": conv.grads["bias"]}
        for name in mine:
            assert rel_err(mine[name], theirs[name]) <= TOL[dtype], (name, changed)


def test_input_gradient_asked_for_after_a_time_shared_forward():
    """A forward that convolved one time step for all (needs_input_grad False) cannot give dL/dx:
    switching needs_input_grad on before the backward is one clear error, not a [1, N, ...] dx."""
    conv = Conv2d(2, 3, 3, padding=1)
    conv.needs_input_grad = False
    x = np.repeat(np.random.default_rng(0).standard_normal((1, 2, 2, 6, 6)), 4, axis=0).astype(np.float32)
    y = conv.forward(x)
    assert conv.last_time_shared
    conv.needs_input_grad = True
    with pytest.raises(ValueError, match="needs_input_grad was set after a forward"):
        conv.backward(np.ones_like(y))
