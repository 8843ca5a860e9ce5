"""Parameter behaves like the array it holds, and assigning to a layer's
parameter attribute checks the value and copies it in place."""
import pickle

import numpy as np
import pytest

import scratchnet as sn


def test_numpy_sees_the_parameter_as_its_array():
    layer = sn.Dense(3, 4, seed=0)
    w = layer.weight
    arr = np.asarray(w)
    assert arr is w.data  # no copy: the same buffer
    assert np.asarray(w, dtype=np.float64).dtype == np.float64
    copied = np.array(w, copy=True)
    assert copied is not w.data and np.array_equal(copied, w.data)
    with pytest.raises(ValueError):
        np.asarray(w, dtype=np.float64, copy=False)  # NumPy 2's copy=False: no copy possible
    assert np.asarray(w, copy=False) is w.data
    np.testing.assert_array_equal(np.add(w, 1.0), w.data + 1.0)


def test_attributes_of_the_array():
    w = sn.Dense(3, 4, seed=0).weight
    assert w.shape == (3, 4) and w.dtype == np.float32 and w.size == 12 and w.ndim == 2
    assert len(w) == 3
    np.testing.assert_array_equal(w.T, w.data.T)
    assert np.shares_memory(w.numpy(), w.data)  # like torch's .numpy(): shared, not copied
    assert [row.shape for row in w] == [(4,)] * 3


def test_indexing_reads_and_writes_the_data_in_place():
    layer = sn.Dense(3, 4, seed=0)
    data = layer.weight.data
    layer.weight[...] = 0.5
    assert layer.weight.data is data and (data == 0.5).all()
    layer.weight[0] = 2.0
    np.testing.assert_array_equal(layer.weight[0], np.full(4, 2.0, np.float32))
    layer.bias[1:3] = [1.0, 2.0]
    np.testing.assert_array_equal(layer.bias.data, [0, 1, 2, 0])


def test_index_writes_reach_a_compiled_network():
    # predict runs through a C network that points into .data: in-place
    # writes must show up in its answers
    model = sn.Sequential(sn.Dense(3, 4, seed=0), sn.ReLU(), sn.Dense(4, 2, seed=1))
    X = np.ones((5, 3), np.float32)
    model.predict_logits(X)  # builds and caches the compiled network
    model.layers[2].weight[...] = 0.0
    model.layers[2].bias[...] = [1.0, -1.0]
    np.testing.assert_array_equal(model.predict_logits(X), np.tile([1.0, -1.0], (5, 1)))


def test_repr_names_the_parameter_and_shows_values():
    model = sn.Sequential(sn.Dense(2, 3, seed=0))
    model.layers[0].bias[...] = [0.25, 0.5, 0.75]
    text = repr(model.layers[0].bias)
    assert "0.bias" in text and "(3,)" in text and "float32" in text
    assert "0.25" in text and "0.75" in text


def test_assigning_a_float_array_of_the_right_shape_copies_it_in():
    model = sn.Sequential(sn.Dense(3, 4, seed=0), sn.ReLU(), sn.Dense(4, 2, seed=1))
    layer = model.layers[0]
    param, data = layer.weight, layer.weight.data
    opt = sn.SGD(model.parameters(), lr=0.1)
    new = np.arange(12, dtype=np.float64).reshape(3, 4)
    layer.weight = new
    assert layer.weight is param and layer.weight.data is data  # the same buffer
    np.testing.assert_array_equal(data, new)
    layer.bias = sn.Parameter(np.ones(4))  # a Parameter of the right shape: its values
    assert layer.bias is model.parameters()[1]
    np.testing.assert_array_equal(layer.bias.data, np.ones(4))
    # the optimizer still updates the layer's weights
    X, y = np.ones((2, 3), np.float32), np.array([0, 1])
    model.fit(X, y, optimizer=opt, epochs=1, verbose=0)
    assert not np.array_equal(layer.weight.data, new)


@pytest.mark.parametrize("value, error, match", [
    ("abc", TypeError, "str"),
    (["a", "b", "c"], TypeError, "<U1"),
    (np.zeros((3, 4), np.int64), TypeError, "int64"),
    (np.zeros((3, 4), bool), TypeError, "bool"),
    (np.zeros((3, 4), complex), TypeError, "complex"),
    (None, TypeError, "NoneType"),
    (np.zeros((4, 3), np.float32), ValueError, r"shape \(4, 3\).*\(3, 4\)"),
    (0.5, ValueError, r"shape \(\).*\(3, 4\)"),
    (sn.Parameter(np.zeros(4)), ValueError, r"shape \(4,\)"),
    (np.full((3, 4), np.nan), ValueError, "non-finite"),
])
def test_assigning_anything_else_raises_naming_layer_and_attribute(value, error, match):
    layer = sn.Dense(3, 4, seed=0)
    before = layer.weight.data.copy()
    with pytest.raises(error, match=match) as info:
        layer.weight = value
    assert "Dense" in str(info.value) and ".weight" in str(info.value)
    np.testing.assert_array_equal(layer.weight.data, before)  # left untouched


def test_other_attributes_are_set_as_usual():
    layer = sn.Dense(3, 4, seed=0)
    layer.note = "abc"
    layer.init = "xavier"
    assert layer.note == "abc" and layer.init == "xavier"


def test_replacing_data_keeps_the_shape():
    layer = sn.Dense(3, 2)
    layer.weight.data = np.ones((3, 2))
    assert layer.weight.data.dtype == np.float32 and layer.weight.data.sum() == 6
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        layer.weight.data = np.ones((2, 3))
    assert layer.weight.grad.shape == layer.weight.data.shape == (3, 2)


def test_arithmetic_and_array_methods_work_on_a_parameter():
    layer = sn.Dense(3, 2, seed=0)
    w = layer.weight
    data = w.data.copy()
    np.testing.assert_array_equal(w * 2, data * 2)
    np.testing.assert_array_equal(w + w, data + data)
    np.testing.assert_array_equal(1 - w, 1 - data)
    np.testing.assert_array_equal(np.ones((4, 3), np.float32) @ w, np.ones((4, 3), np.float32) @ data)
    assert w.sum() == pytest.approx(data.sum()) and w.mean() == pytest.approx(data.mean())
    assert w.reshape(-1).shape == (6,) and w.astype(np.float64).dtype == np.float64
    assert w.tolist() == data.tolist() and w.copy() is not w.data
    layer.weight += 1.0  # in place: the same Parameter and the same array
    assert layer.weight is w
    np.testing.assert_array_equal(w.data, data + 1)
    w *= 0.0
    assert not w.data.any()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        w.nope
    assert w == w and w != layer.bias  # identity: parameters key optimizer state


@pytest.mark.parametrize("optimizer", [sn.SGD, sn.AdaGrad, sn.RMSProp, sn.Adam])
def test_weights_gradients_and_optimizer_state_start_on_cache_lines(optimizer):
    """The kernels read and write these 16 floats (64 bytes) at a time:
    NumPy's own arrays start 16, 32 or 48 bytes into a line, where every
    such vector straddles two (784-512-256-10 training 1.02x slower)."""
    model = sn.Sequential(sn.Dense(784, 50, seed=0), sn.ReLU(), sn.Dense(50, 10, seed=1))
    conv = sn.Conv2D(1, 3, 3, seed=2)
    kwargs = {"momentum": 0.9} if optimizer is sn.SGD else {}
    if optimizer is sn.RMSProp:
        kwargs = {"momentum": 0.9, "centered": True}
    opt = optimizer(model.parameters(), **kwargs)
    X = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    model.fit(X, np.arange(64) % 10, opt, epochs=1, verbose=0)
    norms = [sn.BatchNorm1d(n) for n in range(3, 60, 7)]
    made = [*model.parameters(), *conv.parameters(), *(p for n in norms for p in n.parameters())]
    arrays = [a for p in made for a in (p.data, p.grad)]
    states = [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)]
    assert len(states) >= len(model.parameters())
    assert [a.ctypes.data % 64 for a in arrays + states] == [0] * len(arrays + states)
    # a pickled model, and an optimizer's state loaded back, start on lines too
    copy = pickle.loads(pickle.dumps(model))
    arrays = [a for p in copy.parameters() for a in (p.data, p.grad)]
    loaded = optimizer(copy.parameters(), **kwargs)
    loaded.load_state_dict(opt.state_dict())
    states = [v for s in loaded.state.values() for v in s.values() if isinstance(v, np.ndarray)]
    assert len(states) >= len(model.parameters())
    assert [a.ctypes.data % 64 for a in arrays + states] == [0] * len(arrays + states)
