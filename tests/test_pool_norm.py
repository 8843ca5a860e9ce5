"""Pooling, batch normalisation and augmentation layers (issue 8): forward
against float64 NumPy references and PyTorch, backward against autograd and
finite differences along a random direction, 1 vs 2 threads, bad input."""
import json

import numpy as np
import pytest

from scratchnet import _core
from scratchnet.layers_pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D

F32 = np.float32


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


@pytest.fixture
def threads():
    """Set the thread count inside a test; restored afterwards."""
    prev = _core.get_num_threads()
    yield _core.set_num_threads
    _core.set_num_threads(prev)


def rebuild(layer):
    """The layer built again from its JSON-able config."""
    return type(layer)(**json.loads(json.dumps(layer.get_config())))


def direction_check(layer, x, training=False, eps=1e-2, rel=1e-2, abs_=1e-4, seed=0):
    """kann-style: <dx, d> against (f(x + e d) - f(x - e d)) / 2e, with
    f(x) = <forward(x), w> for random d and upstream gradient w."""
    rng = np.random.default_rng(seed)
    y = layer.forward(x, training=training).copy()
    w = rng.standard_normal(y.shape)
    dx = layer.backward(w.astype(F32)).astype(np.float64)
    d = rng.standard_normal(x.shape)

    def f(e):
        xe = (x.astype(np.float64) + e * d).astype(F32)
        return float((layer.forward(xe, training=training).astype(np.float64) * w).sum())

    numerical = (f(eps) - f(-eps)) / (2 * eps)
    assert numerical == pytest.approx(float((dx * d).sum()), rel=rel, abs=abs_)


# ---------------------------------------------------------------- pooling

def windows(x, kh, kw, sh, sw):
    """float64 view (N, C, Ho, Wo, kh, kw) of the pooling windows of x."""
    N, C, H, W = x.shape
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.empty((N, C, Ho, Wo, kh, kw))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
    return out


def ref_maxpool_backward(x, dy, kh, kw, sh, sw):
    """float64: each window's dy goes to its first maximum (row-major)."""
    N, C, H, W = x.shape
    dx = np.zeros(x.shape)
    for n in range(N):
        for c in range(C):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    win = x[n, c, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    a, b = np.unravel_index(np.argmax(win), win.shape)  # first maximum
                    dx[n, c, i * sh + a, j * sw + b] += dy[n, c, i, j]
    return dx


def ref_avgpool_backward(shape, dy, kh, kw, sh, sw):
    dx = np.zeros(shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            dx[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += dy[:, :, i:i + 1, j:j + 1] / (kh * kw)
    return dx


POOL_CASES = [  # (N, C, H, W), kernel, stride
    ((2, 3, 8, 8), 2, None),          # the usual 2x2 / 2
    ((2, 3, 7, 9), 3, 2),             # overlapping, odd sizes
    ((1, 2, 6, 5), (2, 3), (1, 2)),   # non-square window and stride, batch 1
    ((3, 1, 5, 5), 3, 1),             # stride 1, heavy overlap
    ((1, 1, 4, 4), 4, None),          # one window covers the plane
    ((2, 2, 9, 6), (3, 1), (3, 1)),
]


@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_numpy_reference(shape, kernel, stride, kind):
    rng = np.random.default_rng(1)
    x = randn(rng, *shape)
    layer = (MaxPool2D if kind == "max" else AvgPool2D)(kernel, stride)
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    y = layer.forward(x)
    win = windows(x.astype(np.float64), kh, kw, sh, sw)
    want = win.max(axis=(4, 5)) if kind == "max" else win.mean(axis=(4, 5))
    assert y.shape == (shape[0],) + layer.output_shape(shape[1:])
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    dy = randn(rng, *y.shape)
    dx = layer.backward(dy)
    if kind == "max":
        want_dx = ref_maxpool_backward(x.astype(np.float64), dy.astype(np.float64), kh, kw, sh, sw)
    else:
        want_dx = ref_avgpool_backward(shape, dy.astype(np.float64), kh, kw, sh, sw)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-6)
    # max-pool is piecewise linear: distinct values 0.05 apart and a small
    # step keep every arg-max in place
    spaced = (rng.permutation(x.size).reshape(shape) * 0.05).astype(F32)
    direction_check(layer, spaced if kind == "max" else x, eps=1e-3)


@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
def test_pool_matches_torch(shape, kernel, stride):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    # ties on purpose: values rounded to a few levels, so the arg-max tie rule matters
    x = np.round(randn(rng, *shape) * 2) / 2
    for cls, fn in ((MaxPool2D, F.max_pool2d), (AvgPool2D, F.avg_pool2d)):
        layer = cls(kernel, stride)
        xt = torch.tensor(x, requires_grad=True)
        yt = fn(xt, layer.kernel_size, layer.stride)
        y = layer.forward(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
        dy = randn(rng, *y.shape)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_global_avg_pool_matches_torch_and_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for shape in ((2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 8)):
        x = randn(rng, *shape)
        layer = GlobalAvgPool2D()
        y = layer.forward(x)
        assert y.shape == shape[:2] == (shape[0],) + layer.output_shape(shape[1:])
        np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6, atol=1e-7)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.adaptive_avg_pool2d(xt, 1)[:, :, 0, 0]
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-7)
        dy = randn(rng, *y.shape)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-6, atol=1e-7)
        direction_check(layer, x)


def test_maxpool_ties_go_to_the_first_position_in_scan_order():
    x = np.zeros((1, 1, 3, 3), F32)       # every window is a tie
    layer = MaxPool2D(2, 1)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 2, 2), F32))
    # windows start at (0,0), (0,1), (1,0), (1,1): each top-left gets 1
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    x = np.array([[[[1, 5], [5, 5]]]], F32)
    layer = MaxPool2D(2)
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1), F32))[0, 0],
                                  [[0, 1], [0, 0]])


def test_maxpool_overlapping_windows_add():
    x = np.zeros((1, 1, 3, 3), F32)
    x[0, 0, 1, 1] = 9.0                    # the max of all four 2x2 windows
    layer = MaxPool2D(2, 1)
    layer.forward(x)
    dx = layer.backward(np.array([[[[1, 2], [3, 4]]]], F32))
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


def test_maxpool_nan_wins_like_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 3, 3] = -np.inf
    y = MaxPool2D(2).forward(x)
    want = torch.nn.functional.max_pool2d(torch.tensor(x), 2).numpy()
    np.testing.assert_array_equal(y, want)   # NaN compares equal to NaN here
    assert np.isnan(y[0, 0, 0, 0])
    x = np.full((1, 1, 2, 2), -np.inf, F32)  # all -inf: the first position
    layer = MaxPool2D(2)
    assert layer.forward(x)[0, 0, 0, 0] == -np.inf
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1), F32))[0, 0],
                                  [[1, 0], [0, 0]])


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D, GlobalAvgPool2D])
def test_pool_threads_bit_identical(cls, threads):
    rng = np.random.default_rng(4)
    x = randn(rng, 8, 16, 28, 28)          # above the threshold for a second thread
    layer = cls() if cls is GlobalAvgPool2D else cls(3, 2)
    results = []
    for n in (1, 2):
        threads(n)
        y = layer.forward(x).copy()
        dx = layer.backward(np.ones_like(y)).copy()
        results.append((y, dx))
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)


def test_pool_config_output_shape_and_errors():
    layer = MaxPool2D((3, 2), stride=1)
    assert layer.get_config() == {"kernel_size": [3, 2], "stride": [1, 1]}
    assert rebuild(layer).kernel_size == (3, 2) and rebuild(layer).stride == (1, 1)
    assert MaxPool2D(2).stride == (2, 2)
    assert rebuild(GlobalAvgPool2D()).get_config() == {}
    assert AvgPool2D(2).output_shape((3, 7, 5)) == (3, 3, 2)
    assert GlobalAvgPool2D().output_shape((5, 3, 3)) == (5,)
    with pytest.raises(ValueError, match=r"MaxPool2D.*\(3, 2, 9\)"):
        MaxPool2D(3).output_shape((3, 2, 9))
    with pytest.raises(ValueError, match=r"AvgPool2D.*\(4, 4\)"):
        AvgPool2D(2).output_shape((4, 4))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D.*\(10,\)"):
        GlobalAvgPool2D().output_shape((10,))
    for bad in (0, -1, 1.5, (2,), (2, 2, 2), True, "2"):
        with pytest.raises(ValueError, match="kernel_size"):
            MaxPool2D(bad)
    with pytest.raises(ValueError, match="stride"):
        AvgPool2D(2, stride=(1, 0))
    with pytest.raises(ValueError, match=r"MaxPool2D.*\(2, 8\)"):
        MaxPool2D(2).forward(np.zeros((2, 8), F32))
    with pytest.raises(ValueError, match=r"MaxPool2D.*\(1, 2, 2\)"):
        MaxPool2D(3).forward(np.zeros((1, 1, 2, 2), F32))
    layer = AvgPool2D(2)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 1, 1, 1), F32))
    layer.forward(np.zeros((1, 1, 4, 4), F32))
    with pytest.raises(ValueError, match=r"gradient of shape \(1, 1, 3, 3\).*\(1, 1, 2, 2\)"):
        layer.backward(np.zeros((1, 1, 3, 3), F32))
    with pytest.raises(ValueError, match="GlobalAvgPool2D"):
        GlobalAvgPool2D().forward(np.zeros((2, 3), F32))


def test_pool_core_rejects_bad_buffers():
    x = np.zeros((1, 1, 4, 4), F32)
    with pytest.raises(ValueError, match="y has shape"):
        _core.maxpool2d_forward(x, np.zeros((1, 1, 3, 3), F32), np.zeros((1, 1, 3, 3), np.int32),
                                (2, 2), (2, 2))
    with pytest.raises(TypeError, match="argmax must be a C-contiguous int32"):
        _core.maxpool2d_forward(x, np.zeros((1, 1, 2, 2), F32), np.zeros((1, 1, 2, 2)),
                                (2, 2), (2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        _core.avgpool2d_forward(x, np.zeros((1, 1, 1, 1), F32), (5, 1), (1, 1))
    with pytest.raises(ValueError, match="invalid argument"):   # an arg-max outside the plane
        _core.maxpool2d_backward(np.ones((1, 1, 2, 2), F32), np.full((1, 1, 2, 2), 16, np.int32),
                                 np.zeros((1, 1, 4, 4), F32))
    with pytest.raises(ValueError, match="overlap"):
        _core.avgpool2d_backward(x, x, (1, 1), (1, 1))
