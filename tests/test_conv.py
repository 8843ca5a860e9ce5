"""Conv2D (csrc/sn_conv.c, _core_conv.pxi, layers_conv.py): forward and
backward against a float64 NumPy reference, PyTorch and finite differences;
every GEMM kernel; 1 vs 2 threads; the chunking of the batch; errors."""
import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core
from scratchnet.layers_conv import Conv2D

from reference import numgrad

F32 = np.float32
RTOL, ATOL = 1e-4, 1e-4  # float32 results vs float64 references


# --------------------------------------------------------------------------- references


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def ref_conv(x, w, b, stride=1, padding=0):
    """float64 cross-correlation with zero padding (PyTorch's conv2d)."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, K, OH, OW))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            y += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j].astype(np.float64))
    return y + np.asarray(b, np.float64)[None, :, None, None]


def ref_grads(x, w, dy, stride=1, padding=0):
    """(dx, dw, db) of sum(ref_conv(x, w, b) * dy), in float64, written as the
    adjoint of each (i, j) term of ref_conv."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    OH, OW = dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    dy = dy.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None), slice(i, i + sh * (OH - 1) + 1, sh),
                  slice(j, j + sw * (OW - 1) + 1, sw))
            dw[:, :, i, j] = np.einsum("nchw,nkhw->kc", xp[sl], dy)
            dxp[sl] += np.einsum("nkhw,kc->nchw", dy, w[:, :, i, j].astype(np.float64))
    return dxp[:, :, ph:ph + H, pw:pw + W], dw, dy.sum(axis=(0, 2, 3))


def make(C, K, kernel, stride=1, padding=0, seed=0, bias=True):
    layer = Conv2D(C, K, kernel, stride=stride, padding=padding, seed=seed)
    if bias:  # a zero bias would hide a bias that is never added
        layer.bias.data[...] = np.random.default_rng(seed + 1).standard_normal(K)
    return layer


# (N, C, H, W, K, kernel, stride, padding): kernels 1, 3, 5 and non-square,
# strides 1 and 2 (and unequal), paddings 0, 1, 2, odd and non-square images
CASES = [
    (1, 1, 5, 5, 1, 1, 1, 0),
    (2, 3, 7, 9, 4, 3, 1, 1),
    (3, 2, 8, 6, 5, (3, 5), 2, 2),
    (1, 1, 12, 12, 6, 5, 1, 0),
    (2, 4, 9, 7, 3, (2, 3), (2, 1), (0, 1)),
    (4, 3, 5, 11, 2, 5, 2, 2),
    (2, 2, 10, 10, 3, 2, 3, 0),     # stride above the kernel: pixels skipped
    (3, 5, 6, 6, 7, 3, 2, 1),
    (1, 2, 3, 4, 2, (5, 4), 1, 2),  # the kernel larger than the image, padding makes it fit
]


def case_id(c):
    return "N{}C{}_{}x{}_K{}_k{}_s{}_p{}".format(*c).replace(" ", "")


def case_data(case, seed=0):
    N, C, H, W, K, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    layer = make(C, K, kernel, stride, padding, seed=seed)
    x = rng.standard_normal((N, C, H, W)).astype(F32)
    return layer, x, rng


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_float64_reference(case):
    layer, x, _ = case_data(case)
    y = layer.forward(x)
    want = ref_conv(x, layer.weight.data, layer.bias.data, layer.stride, layer.padding)
    assert y.shape == want.shape == (x.shape[0], *layer.output_shape(x.shape[1:]))
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_float64_reference(case):
    layer, x, rng = case_data(case, seed=1)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape).astype(F32)
    dx = layer.backward(dy)
    want_dx, want_dw, want_db = ref_grads(x, layer.weight.data, dy, layer.stride, layer.padding)
    np.testing.assert_allclose(dx, want_dx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.weight.grad, want_dw, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.bias.grad, want_db, rtol=RTOL, atol=ATOL)


def test_reference_gradients_match_finite_differences():
    """The float64 reference of backward is itself checked, element by element."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    dy = rng.standard_normal(ref_conv(x, w, b, (2, 1), 1).shape)
    f = lambda: float((ref_conv(x, w, b, (2, 1), 1) * dy).sum())
    dx, dw, db = ref_grads(x, w, dy, (2, 1), 1)
    np.testing.assert_allclose(dx, numgrad(f, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dw, numgrad(f, w), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, numgrad(f, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES[1:6], ids=case_id)
def test_gradient_along_a_random_direction(case):
    """g . d = (f(p + e d) - f(p - e d)) / 2e for f = sum(conv(x, w, b) * dy)
    and one random direction d over x, w and b at once (kann's check)."""
    layer, x, rng = case_data(case, seed=3)
    s, p = layer.stride, layer.padding
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.astype(F32)).astype(np.float64)
    w, b = layer.weight.data.astype(np.float64), layer.bias.data.astype(np.float64)
    d_x, d_w, d_b = (rng.standard_normal(a.shape) for a in (x, w, b))
    analytic = ((dx * d_x).sum() + (layer.weight.grad * d_w).sum()
                + (layer.bias.grad * d_b).sum())
    f = lambda t: (ref_conv(x + t * d_x, w + t * d_w, b + t * d_b, s, p) * dy).sum()
    eps = 1e-3
    numeric = (f(eps) - f(-eps)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-3)


# --------------------------------------------------------------------------- PyTorch


TORCH_CASES = CASES[1:4] + [(4, 1, 28, 28, 8, 5, 1, 0), (4, 8, 12, 12, 16, 5, 1, 0),
                            (3, 3, 9, 8, 4, 3, 2, 1)]


@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_matches_torch_forward_and_autograd(case):
    torch = pytest.importorskip("torch")
    layer, x, rng = case_data(case, seed=4)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape).astype(F32)
    dx = layer.backward(dy)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=layer.stride, padding=layer.padding)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=RTOL, atol=1e-3)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=RTOL, atol=1e-3)


def test_matches_torch_conv2d_module_init_shapes():
    """The same weight layout as torch.nn.Conv2d: loading its weights gives its output."""
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(2, 1))
    layer = Conv2D(3, 5, (3, 2), stride=(1, 2), padding=(2, 1))
    assert layer.weight.shape == tuple(conv.weight.shape)
    layer.weight = conv.weight.detach().numpy()
    layer.bias = conv.bias.detach().numpy()
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 7)).astype(F32)
    np.testing.assert_allclose(layer.forward(x), conv(torch.tensor(x)).detach().numpy(),
                               rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- kernel paths


def run_core(x, w, b, dy, stride, padding, chunk=0, input_grad=True):
    """y, dw, db, dx from the _core functions, with this chunk."""
    ws = np.empty(_core.conv2d_workspace_len(x.shape, w.shape, stride, padding, chunk), F32)
    y = np.empty(_core.conv2d_output_shape(x.shape, w.shape, stride, padding), F32)
    _core.conv2d_forward(x, w, b, y, ws, stride, padding, chunk)
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = np.empty_like(x) if input_grad else None
    _core.conv2d_backward(dy, x, w, dw, db, dx, ws, stride, padding, 0.0, chunk)
    return y, dw, db, dx


def core_case(seed=6, N=5, C=3, H=9, W=8, K=4, k=(3, 2), stride=(2, 1), padding=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(F32)
    w = rng.standard_normal((K, C, *k)).astype(F32)
    b = rng.standard_normal(K).astype(F32)
    shape = _core.conv2d_output_shape(x.shape, w.shape, stride, padding)
    dy = rng.standard_normal(shape).astype(F32)
    return x, w, b, dy, stride, padding


def check_against_reference(got, x, w, b, dy, stride, padding):
    y, dw, db, dx = got
    want_dx, want_dw, want_db = ref_grads(x, w, dy, stride, padding)
    np.testing.assert_allclose(y, ref_conv(x, w, b, stride, padding), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dw, want_dw, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db, want_db, rtol=RTOL, atol=ATOL)
    if dx is not None:
        np.testing.assert_allclose(dx, want_dx, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 5])
def test_every_chunk_of_images_per_gemm(chunk):
    """One image per GEMM (dy read in place), several, a ragged last chunk,
    the whole batch: the same gradients up to rounding."""
    args = core_case()
    check_against_reference(run_core(*args, chunk=chunk), *args)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_slices_of_several_chunks_and_a_ragged_end(chunk):
    """A batch cut into the most slices, each of several chunks (dw summed
    within a slice, then slice by slice), the last slice and chunk short."""
    args = core_case(9, N=37, C=2, H=7, W=6, K=5, k=(3, 3), stride=1, padding=1)
    check_against_reference(run_core(*args, chunk=chunk), *args)


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_every_gemm_kernel(isa):
    prev = _core.get_isa()
    _core.set_isa(isa)
    try:
        for args in (core_case(), core_case(7, N=3, C=6, H=12, W=13, K=19, k=(5, 5),
                                            stride=1, padding=2)):
            check_against_reference(run_core(*args), *args)
    finally:
        _core.set_isa(prev)


def test_one_and_two_threads_give_the_same_bits():
    """Large enough that the copies and the GEMMs are split over threads."""
    args = core_case(8, N=16, C=8, H=16, W=16, K=16, k=(3, 3), stride=1, padding=1)
    prev = sn.get_num_threads()
    try:
        results = {}
        for threads in (1, 2, 1, 2):
            sn.set_num_threads(threads)
            got = run_core(*args, chunk=4)
            if threads in results:
                for a, b in zip(results[threads], got):
                    np.testing.assert_array_equal(a, b)
            results[threads] = got
    finally:
        sn.set_num_threads(prev)
    for a, b in zip(results[1], results[2]):
        np.testing.assert_array_equal(a, b)
    check_against_reference(results[2], *args)


def test_beta_accumulates_and_none_skips():
    x, w, b, dy, s, p = core_case()
    ws = np.empty(_core.conv2d_workspace_len(x.shape, w.shape, s, p), F32)
    _, dw, db, dx = run_core(x, w, b, dy, s, p)
    dw2, db2 = np.ones_like(w), np.ones_like(b)
    assert _core.conv2d_backward(dy, x, w, dw2, db2, None, ws, s, p, beta=1.0) is None
    np.testing.assert_allclose(dw2, dw + 1, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(db2, db + 1, rtol=1e-6, atol=1e-5)
    dw3 = np.full_like(w, np.nan)  # beta 0 overwrites without reading
    _core.conv2d_backward(dy, x, w, dw3, None, None, ws, s, p)
    np.testing.assert_array_equal(dw3, dw)
    y = np.empty(dy.shape, F32)
    _core.conv2d_forward(x, w, None, y, ws, s, p)
    np.testing.assert_allclose(y, ref_conv(x, w, np.zeros(len(b)), s, p), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- the layer


def test_layer_config_init_and_buffers():
    layer = Conv2D(3, 8, (5, 3), stride=2, padding=(1, 0), seed=0)
    config = layer.get_config()
    assert config == {"in_channels": 3, "out_channels": 8, "kernel_size": [5, 3],
                      "stride": [2, 2], "padding": [1, 0], "init": "he"}
    rebuilt = Conv2D(**json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config and rebuilt.weight.shape == (8, 3, 5, 3)
    assert layer.bias.shape == (8,) and not layer.bias.data.any()
    assert [p.name for p in layer.parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(Conv2D(3, 8, (5, 3), seed=0).weight.data, layer.weight.data)
    assert layer.output_shape((3, 11, 7)) == (8, 5, 3)

    big = Conv2D(16, 32, 5, seed=1)  # He: N(0, 2 / fan_in), fan_in = 16 * 25
    assert big.weight.data.std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    xav = Conv2D(16, 32, 5, init="xavier", seed=1)
    a = np.sqrt(6 / (400 + 800))
    assert np.abs(xav.weight.data).max() <= a and xav.weight.data.std() == pytest.approx(
        a / np.sqrt(3), rel=0.05)

    x = np.random.default_rng(0).standard_normal((2, 3, 11, 7)).astype(F32)
    y1 = layer.forward(x)
    assert layer.forward(x) is y1  # reused per batch size
    assert layer.forward(x[:1]).shape == (1, 8, 5, 3)


def test_backward_overwrites_grads_and_input_grad_false():
    layer, x, rng = case_data(CASES[2], seed=9)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape).astype(F32)
    dx = layer.backward(dy).copy()
    dw, db = layer.weight.grad.copy(), layer.bias.grad.copy()
    assert layer.backward(dy, input_grad=False) is None
    np.testing.assert_array_equal(layer.weight.grad, dw)  # set, not accumulated
    np.testing.assert_array_equal(layer.bias.grad, db)
    np.testing.assert_array_equal(layer.backward(dy), dx)


def test_input_dtypes_are_converted():
    layer = make(2, 3, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    want = layer.forward(x.astype(F32)).copy()
    np.testing.assert_array_equal(layer.forward(x), want)  # float64
    np.testing.assert_array_equal(layer.forward(np.asfortranarray(x.astype(F32))), want)
    np.testing.assert_array_equal(layer.forward(np.ones((1, 2, 4, 4), np.int32)),
                                  layer.forward(np.ones((1, 2, 4, 4), F32)))
    with pytest.raises(TypeError, match="complex"):
        layer.forward(x.astype(np.complex64))
    with pytest.raises(TypeError, match="expected numbers"):
        layer.forward(np.full((1, 2, 4, 4), "a"))


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 8, 8), r"takes \(2, H, W\) per sample, got \(3, 8, 8\)"),  # wrong channels
    ((2, 2, 2, 8), r"\(2, 2, 8\) per sample is smaller than the kernel"),  # too small
    ((2, 8, 8), r"expected input of shape \(batch, 2, H, W\), got \(2, 8, 8\)"),
])
def test_layer_refuses_inputs_that_do_not_fit(shape, match):
    layer = Conv2D(2, 4, (3, 1))
    with pytest.raises(ValueError, match=match) as info:
        layer.forward(np.zeros(shape, F32))
    assert "Conv2D(in_channels=2" in str(info.value)
    with pytest.raises(ValueError, match="Conv2D"):
        layer.output_shape(shape[1:])


def test_padding_makes_a_small_image_fit():
    assert Conv2D(1, 1, 5, padding=1).output_shape((1, 3, 3)) == (1, 1, 1)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        Conv2D(1, 1, 5).output_shape((1, 4, 9))


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 0}, "kernel_size must be an int >= 1"),
    ({"kernel_size": (3,)}, "kernel_size"),
    ({"kernel_size": 2.5}, "kernel_size"),
    ({"kernel_size": True}, "kernel_size"),
    ({"kernel_size": (3, 3, 3)}, "kernel_size"),
    ({"stride": 0}, "stride must be an int >= 1"),
    ({"stride": (1, -1)}, "stride"),
    ({"padding": -1}, "padding must be an int >= 0"),
    ({"padding": "1"}, "padding"),
    ({"in_channels": 0}, "in_channels"),
    ({"out_channels": 1.5}, "out_channels"),
    ({"init": "zeros"}, "init"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        Conv2D(**args)


def test_backward_errors():
    layer = Conv2D(1, 2, 3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 2, 3, 3), F32))
    layer.forward(np.zeros((1, 1, 5, 5), F32))
    with pytest.raises(ValueError, match=r"gradient of shape \(1, 2, 4, 4\), expected "
                                         r"\(1, 2, 3, 3\)"):
        layer.backward(np.zeros((1, 2, 4, 4), F32))


def test_core_refuses_bad_arrays():
    x, w, b, dy, s, p = core_case()
    ws = np.empty(_core.conv2d_workspace_len(x.shape, w.shape, s, p), F32)
    y = np.empty(dy.shape, F32)
    with pytest.raises(TypeError, match="x must be a C-contiguous float32"):
        _core.conv2d_forward(x.astype(np.float64), w, b, y, ws, s, p)
    with pytest.raises(TypeError, match="w must be a C-contiguous"):
        _core.conv2d_forward(x, np.asfortranarray(w), b, y, ws, s, p)
    with pytest.raises(ValueError, match="workspace has 3 floats, needs"):
        _core.conv2d_forward(x, w, b, y, ws[:3], s, p)
    with pytest.raises(ValueError, match=r"out has shape \(5, 4, 5, 7\), expected"):
        _core.conv2d_forward(x, w, b, np.empty((5, 4, 5, 7), F32), ws, s, p)
    with pytest.raises(ValueError, match="channels"):
        _core.conv2d_forward(x[:, :2].copy(), w, b, y, ws, s, p)
    with pytest.raises(ValueError, match="no convolution"):
        _core.conv2d_output_shape((1, 1, 2, 2), (1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _core.conv2d_output_shape(x.shape, w.shape, 0, 0)
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        _core.conv2d_output_shape(x.shape, w.shape, 1.5, 0)
    with pytest.raises(ValueError, match="must not overlap"):
        _core.conv2d_forward(x, w, b, y, y.reshape(-1), s, p)
    with pytest.raises(ValueError, match=r"dy has shape"):
        _core.conv2d_backward(dy[:, :2].copy(), x, w, np.empty_like(w), None, None, ws, s, p)
    with pytest.raises(ValueError, match="chunk must be in"):
        _core.conv2d_workspace_len(x.shape, w.shape, s, p, chunk=6)


def test_empty_batch():
    layer = Conv2D(2, 3, 3, seed=0)
    layer.weight.grad[...] = 7
    y = layer.forward(np.zeros((0, 2, 5, 5), F32))
    assert y.shape == (0, 3, 3, 3)
    assert layer.backward(np.zeros((0, 3, 3, 3), F32)).shape == (0, 2, 5, 5)
    assert not layer.weight.grad.any() and not layer.bias.grad.any()
