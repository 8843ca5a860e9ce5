"""Pooling, batch normalisation and augmentation layers (issue 8): forward
against float64 NumPy references and PyTorch, backward against autograd and
finite differences along a random direction, 1 vs 2 threads, bad input."""
import json

import numpy as np
import pytest

from scratchnet import _core
from scratchnet.layers_augment import RandomFlip, RandomShift
from scratchnet.layers_norm import BatchNorm1d, BatchNorm2d
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


# ---------------------------------------------------------------- batch norm

def ref_batchnorm(x, gamma, beta, eps, mean=None, var=None):
    """float64 reference: per channel (axis 1) over every other axis."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), mean, var


BN_CASES = [(BatchNorm2d, (4, 3, 5, 6)), (BatchNorm2d, (1, 2, 3, 3)), (BatchNorm2d, (5, 1, 1, 2)),
            (BatchNorm1d, (8, 5)), (BatchNorm1d, (2, 3)), (BatchNorm1d, (3, 4, 6))]


def make_bn(cls, shape, rng, momentum=0.1, eps=1e-5):
    layer = cls(shape[1], momentum=momentum, eps=eps)
    layer.weight = rng.uniform(0.5, 1.5, shape[1]).astype(F32)
    layer.bias = randn(rng, shape[1])
    return layer


@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batchnorm_training_matches_numpy_and_finite_differences(cls, shape):
    rng = np.random.default_rng(5)
    layer = make_bn(cls, shape, rng)
    x = (randn(rng, *shape) * 3 + 1).astype(F32)
    x64 = x.astype(np.float64)
    want, mean, var = ref_batchnorm(x64, layer.weight.data.astype(np.float64),
                                    layer.bias.data.astype(np.float64), 1e-5)
    y = layer.forward(x, training=True)
    assert y.shape == x.shape == (shape[0],) + layer.output_shape(shape[1:])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    n = x.size // shape[1]
    np.testing.assert_allclose(layer.running_mean, 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    direction_check(layer, x, training=True, eps=1e-2, rel=2e-2, abs_=1e-3)


@pytest.mark.parametrize("cls,shape", BN_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_torch_forward_backward(cls, shape, training):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    layer = make_bn(cls, shape, rng)
    layer.running_mean[...] = randn(rng, shape[1])
    layer.running_var[...] = rng.uniform(0.5, 2, shape[1]).astype(F32)
    rm, rv = torch.tensor(layer.running_mean), torch.tensor(layer.running_var)
    x = randn(rng, *shape) * 2
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    yt = torch.nn.functional.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=0.1,
                                        eps=1e-5)
    y = layer.forward(x, training=training)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean, rm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, rv.numpy(), rtol=1e-5, atol=1e-6)
    dy = randn(rng, *shape)
    yt.backward(torch.tensor(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,shape", [(BatchNorm2d, (6, 3, 4, 5)), (BatchNorm1d, (7, 4))])
def test_batchnorm_running_statistics_follow_torch_over_steps(cls, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    layer = cls(shape[1], momentum=0.3, eps=1e-3)
    ref = getattr(torch.nn, cls.__name__)(shape[1], momentum=0.3, eps=1e-3)
    mean_id, var_id = id(layer.running_mean), id(layer.running_var)
    for step in range(5):
        x = (randn(rng, *shape) * (step + 1) + step).astype(F32)
        ref.train()
        layer.forward(x, training=True)
        ref(torch.tensor(x))
    np.testing.assert_allclose(layer.running_mean, ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    # updated in place: the arrays buffers() gave are the ones that moved
    assert id(layer.buffers()["running_mean"]) == mean_id == id(layer.running_mean)
    assert id(layer.buffers()["running_var"]) == var_id
    x = randn(rng, *shape)
    ref.eval()
    with torch.no_grad():
        want = ref(torch.tensor(x)).numpy()
    before = layer.running_mean.copy()
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.running_mean, before)   # inference leaves them


def test_batchnorm_training_and_inference_differ():
    rng = np.random.default_rng(8)
    layer = BatchNorm2d(2)
    assert layer.buffers().keys() == {"running_mean", "running_var"}
    np.testing.assert_array_equal(layer.running_mean, [0, 0])
    np.testing.assert_array_equal(layer.running_var, [1, 1])
    x = randn(rng, 3, 2, 4, 4) * 5 + 3
    # fresh running statistics (0, 1): inference is gamma x + beta = x
    np.testing.assert_allclose(layer.forward(x), x, rtol=1e-5)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    # backward after an inference forward: dx = gamma dy / sqrt(running_var + eps)
    layer.forward(x)
    dy = randn(rng, *x.shape)
    scale = 1 / np.sqrt(layer.running_var.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(layer.backward(dy), dy * scale[None, :, None, None], rtol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_batchnorm_backward_overwrites_grad():
    rng = np.random.default_rng(9)
    layer = make_bn(BatchNorm1d, (6, 3), rng)
    x, dy = randn(rng, 6, 3), randn(rng, 6, 3)
    layer.forward(x, training=True)
    layer.backward(dy)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.backward(dy)
    np.testing.assert_array_equal(once[0], layer.weight.grad)
    np.testing.assert_array_equal(once[1], layer.bias.grad)


def test_batchnorm_threads_bit_identical(threads):
    rng = np.random.default_rng(10)
    x, dy = randn(rng, 16, 8, 20, 20), randn(rng, 16, 8, 20, 20)
    results = []
    for n in (1, 2):
        threads(n)
        layer = make_bn(BatchNorm2d, x.shape, np.random.default_rng(0))
        y = layer.forward(x, training=True).copy()
        dx = layer.backward(dy).copy()
        results.append((y, dx, layer.weight.grad.copy(), layer.running_var.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_batchnorm_config_and_errors():
    layer = BatchNorm2d(4, momentum=0.2, eps=1e-3)
    assert layer.get_config() == {"num_channels": 4, "momentum": 0.2, "eps": 1e-3}
    assert rebuild(layer).get_config() == layer.get_config()
    assert rebuild(BatchNorm1d(3)).get_config() == {"num_features": 3, "momentum": 0.1,
                                                    "eps": 1e-5}
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.output_shape((4, 5, 6)) == (4, 5, 6)
    assert BatchNorm1d(3).output_shape((3,)) == (3,)
    with pytest.raises(ValueError, match=r"BatchNorm2d.*\(3, 5, 6\)"):
        layer.output_shape((3, 5, 6))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*\(4,\)"):
        BatchNorm1d(3).output_shape((4,))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*\(2, 4, 5\)"):
        layer.forward(np.zeros((2, 4, 5), F32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.zeros((1, 4, 1, 1), F32), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(3).forward(np.zeros((1, 3), F32), training=True)
    BatchNorm1d(3).forward(np.zeros((1, 3), F32))          # inference: fine
    for kwargs in ({"momentum": 1.5}, {"momentum": -0.1}, {"eps": 0}, {"eps": "1"}):
        with pytest.raises(ValueError, match="BatchNorm2d: (momentum|eps)"):
            BatchNorm2d(2, **kwargs)
    with pytest.raises(ValueError, match="num_channels"):
        BatchNorm2d(0)
    with pytest.raises(RuntimeError, match="before forward"):
        BatchNorm2d(2).backward(np.zeros((2, 2, 1, 1), F32))


# ---------------------------------------------------------------- augmentation

def ref_shift(x, sy, sx):
    """float64: y[i, j] = x[i - sy, j - sx] inside, 0 outside."""
    H, W = x.shape[-2:]
    y = np.zeros(x.shape)
    for i in range(H):
        for j in range(W):
            if 0 <= i - sy < H and 0 <= j - sx < W:
                y[..., i, j] = x[..., i - sy, j - sx]
    return y


def test_random_shift_matches_reference_and_covers_the_range():
    rng = np.random.default_rng(11)
    layer = RandomShift(3, seed=0)
    x = randn(rng, 64, 2, 5, 6)
    layer.forward(np.full(x.shape, np.nan, F32), training=True)   # the reused buffer: NaN
    y = layer.forward(x, training=True)
    draws = layer._buffers["draws"]
    assert draws.shape == (64, 2)
    assert set(np.unique(draws)) == set(range(-3, 4))     # every shift drawn, none outside
    for b in range(64):
        np.testing.assert_array_equal(y[b], ref_shift(x[b], *draws[b]))
    # the layer refuses shifts that can move an image out entirely (a blank)
    with pytest.raises(ValueError, match=r"shifts of up to 50 pixels move some 3 x 3 images out "
                                         r"entirely \(blank\): use pixels <= 2"):
        RandomShift(50, seed=1).forward(np.ones((32, 1, 3, 3), F32), training=True)
    # the kernels themselves: shifts beyond the image leave zeros only
    d = _core.random_shifts(np.empty((32, 2), np.int32), 50, 12345, 0)
    z = _core.shift2d(np.ones((32, 1, 3, 3), F32), np.empty((32, 1, 3, 3), F32), d, False)
    assert (np.abs(d) >= 3).any()
    np.testing.assert_array_equal(z.sum(axis=(1, 2, 3)) == 0, (np.abs(d) >= 3).any(axis=1))


def test_random_flip_matches_reference_and_is_fair():
    rng = np.random.default_rng(12)
    layer = RandomFlip(seed=0)
    x = randn(rng, 400, 1, 3, 4)
    y = layer.forward(x, training=True)
    flags = layer._buffers["draws"].astype(bool)
    np.testing.assert_array_equal(y[flags], x[flags][..., ::-1])
    np.testing.assert_array_equal(y[~flags], x[~flags])
    assert 150 < flags.sum() < 250                        # p = 1/2: 200 +- 5 sigma


@pytest.mark.parametrize("make", [lambda s: RandomShift(2, seed=s), lambda s: RandomFlip(seed=s)])
def test_augmentation_reproducible_differs_across_calls_identity_at_inference(make):
    rng = np.random.default_rng(13)
    x = randn(rng, 16, 3, 6, 6)
    a, b = make(5), make(5)
    first = [a.forward(x, training=True).copy() for _ in range(3)]
    again = [b.forward(x, training=True).copy() for _ in range(3)]
    for u, v in zip(first, again):
        np.testing.assert_array_equal(u, v)               # same seed, same draws
    assert not np.array_equal(first[0], first[1])         # the stream advances per call
    assert not np.array_equal(first[0], make(6).forward(x, training=True))
    assert a.calls == 3
    # reseed (what fit(seed=...) does) restarts the stream from the generator
    a.reseed(np.random.default_rng(0))
    b.reseed(np.random.default_rng(0))
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))
    # inference: the input itself, no draw taken, backward passes dy through
    calls = a.calls
    assert a.forward(x) is x and a.calls == calls
    dy = randn(rng, *x.shape)
    assert a.backward(dy) is dy


@pytest.mark.parametrize("make", [lambda: RandomShift(3, seed=2), lambda: RandomFlip(seed=2)])
def test_augmentation_backward_is_the_adjoint(make):
    """<A x, w> == <x, A^T w> for the map A of one training call."""
    rng = np.random.default_rng(14)
    layer = make()
    x, w = randn(rng, 20, 2, 5, 7), randn(rng, 20, 2, 5, 7)
    Ax = layer.forward(x, training=True).astype(np.float64)
    ATw = layer.backward(w).astype(np.float64)
    assert (Ax * w).sum() == pytest.approx((x * ATw).sum(), rel=1e-9, abs=1e-9)
    if isinstance(layer, RandomShift):   # the adjoint is zero where the forward filled
        ones = layer.backward(np.ones_like(w))
        assert (ones == 0).any() and set(np.unique(ones)) <= {0.0, 1.0}


def test_augmentation_threads_bit_identical(threads):
    rng = np.random.default_rng(15)
    x = randn(rng, 32, 3, 24, 24)
    for make in (lambda: RandomShift(4, seed=3), lambda: RandomFlip(seed=3)):
        results = []
        for n in (1, 2):
            threads(n)
            layer = make()
            y = layer.forward(x, training=True).copy()
            results.append((y, layer.backward(x).copy()))
        for u, v in zip(*results):
            np.testing.assert_array_equal(u, v)


def test_augmentation_config_and_errors():
    assert RandomShift(2).get_config() == {"pixels": 2}
    assert rebuild(RandomShift(2)).pixels == 2
    assert rebuild(RandomFlip()).get_config() == {}
    assert RandomShift(2).output_shape((1, 28, 28)) == (1, 28, 28)
    with pytest.raises(ValueError, match=r"RandomFlip.*\(784,\)"):
        RandomFlip().output_shape((784,))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="RandomShift: pixels"):
            RandomShift(bad)
    with pytest.raises(ValueError, match=r"RandomShift.*\(4, 784\)"):
        RandomShift(1).forward(np.zeros((4, 784), F32), training=True)
    layer = RandomFlip(seed=0)
    layer.forward(np.zeros((2, 1, 3, 3), F32), training=True)
    with pytest.raises(ValueError, match=r"gradient of shape \(2, 1, 3, 4\)"):
        layer.backward(np.zeros((2, 1, 3, 4), F32))
    x = np.zeros((1, 1, 2, 2), F32)
    with pytest.raises(ValueError, match="overlap"):
        _core.shift2d(x, x, np.zeros((1, 2), np.int32))
