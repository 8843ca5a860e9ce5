"""Each formula is written once, in C, and every path that needs it calls
that one copy: the fused dense kernel and the element-wise activations, the
BCE gradient and the sigmoid, the learning-rate decays of the Python
optimizers and of the C trainer. So the paths agree bit for bit."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core, _fused

F32 = np.float32

ACTS = {"relu": (0.0, lambda y: _core.relu_forward(y, y)),
        "leaky_relu": (0.1, lambda y: _core.leaky_relu_forward(y, y, 0.1)),
        "sigmoid": (0.0, lambda y: _core.sigmoid_forward(y, y)),
        "tanh": (0.0, lambda y: _core.tanh_forward(y, y))}


@pytest.mark.parametrize("rows", [3, 40])  # the few-row GEMM and the blocked one
@pytest.mark.parametrize("act", sorted(ACTS))
def test_fused_dense_forward_is_the_elementwise_path_bit_for_bit(act, rows):
    """act(x @ W + b) applied in the GEMM's epilogue equals the GEMM, then
    bias_add, then the element-wise activation kernel. (Away from the
    subnormal range: the GEMM flushes subnormals to zero, the element-wise
    kernels do not, so sigmoid(-100) is 0 in one and 1.8e-44 in the other.)"""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, 50)).astype(F32)
    W = rng.standard_normal((50, 70)).astype(F32)
    b = rng.standard_normal(70).astype(F32)
    slope, apply = ACTS[act]
    fused = _core.dense_forward(x, W, b, np.empty((rows, 70), F32), act, slope)
    y = _core.gemm(x, W, np.empty((rows, 70), F32))
    _core.bias_add(y, b)
    np.testing.assert_array_equal(fused, apply(y))


def test_bce_gradient_is_sigmoid_minus_target_bit_for_bit():
    z = np.concatenate([np.linspace(-30, 30, 601), [-1e4, -88.5, 88.5, 1e4]]).astype(F32)
    t = np.random.default_rng(4).random(z.size).astype(F32)
    dz = _core.bce_logits_backward(z, t, np.empty_like(z), 1.0)
    np.testing.assert_array_equal(dz, _core.sigmoid_forward(z, np.empty_like(z)) - t)


def test_decayed_lr_is_python_float_arithmetic_bit_for_bit():
    """lr / (1 + decay * steps) in double, as the optimizers' docstrings
    write it: no float32 rounding, no fused multiply-add."""
    rng = np.random.default_rng(5)
    for _ in range(2000):
        lr, decay = float(rng.random()), float(rng.random() * 10.0 ** rng.integers(-6, 1))
        steps = int(rng.integers(0, 10**6))
        assert _core.decayed_lr(lr, decay, steps) == lr / (1 + decay * steps), (lr, decay, steps)
    assert _core.decayed_lr(0.1, 0.5, 0) == 0.1
    with pytest.raises(ValueError, match="steps_taken"):
        _core.decayed_lr(0.1, 0.5, -1)


OPTIMIZERS = {
    "sgd-decay": lambda ps: sn.SGD(ps, lr=0.05, momentum=0.5, decay=0.013),
    "adagrad-lr_decay-decay": lambda ps: sn.AdaGrad(ps, lr=0.05, lr_decay=0.01, decay=0.01),
    "adam-decay": lambda ps: sn.Adam(ps, lr=0.01, decay=0.01),
}
LAYERS = {"relu": sn.ReLU, "leaky_relu": lambda: sn.LeakyReLU(0.1), "sigmoid": sn.Sigmoid,
          "tanh": sn.Tanh}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("act", sorted(LAYERS))
def test_fused_fit_is_the_layer_by_layer_fit_bit_for_bit(act, opt, monkeypatch):
    """The whole-network C trainer and the Python layer-by-layer path share
    every formula (activations and their derivatives, the decayed learning
    rates), so the same seed trains the same model, to the last bit. In
    batches of one row: the C step sums the last layer's gradient over the
    two halves of a batch's rows, then adds the halves (the layer path sums
    all rows at once), so larger batches round differently. And with 8
    inputs and 16 hidden units: the C step splits a layer's inputs between
    its two parts (the batch's columns on multiples of 8, a hidden layer's
    on multiples of 16) and adds the parts' products, so wider layers round
    differently too."""
    rng = np.random.default_rng(6)
    centers = rng.standard_normal((4, 8)) * 2
    y = rng.integers(0, 4, 200)
    X = (centers[y] + rng.standard_normal((200, 8))).astype(F32)

    def fit(fused):
        model = sn.Sequential(sn.Dense(8, 16, seed=0), LAYERS[act](), sn.Dense(16, 4, seed=1))
        optimizer = OPTIMIZERS[opt](model.parameters())
        assert (_fused.trainer(model, optimizer, sn.CrossEntropy(), y, 1) is not None) == fused
        model.fit(X, y, optimizer=optimizer, epochs=2, batch_size=1, seed=1, verbose=0)
        return model

    fast = fit(True)
    monkeypatch.setattr(_fused, "trainer", lambda *args, **kwargs: None)
    slow = fit(False)
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def test_relu_keeps_nan_in_every_kernel():
    """NaN in, NaN out (as PyTorch): a ReLU that turned NaN into 0 let a
    network with NaN weights give answers that looked real."""
    x = np.array([[np.nan, 1.0, -1.0, 0.0], [2.0, 1.0, -1.0, 0.0]], np.float32)
    out = _core.relu_forward(x, np.empty_like(x))
    assert np.isnan(out[0, 0]) and out[0, 1:].tolist() == [1.0, 0.0, 0.0]
    # through the GEMM epilogue: NaN * 0 fills row 0 with NaN; row 1 is finite
    fused = _core.dense_forward(x, np.eye(4, dtype=np.float32), np.zeros(4, np.float32),
                                np.empty_like(x), "relu", 0.0)
    assert np.isnan(fused[0]).all() and fused[1].tolist() == [2.0, 1.0, 0.0, 0.0]
