"""Per-sample shapes through a Sequential: mismatches reported at
construction where the input shape is known, else at the first forward,
naming the layer and both shapes; Reshape; buffers saved with the model."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.module import Module


def test_a_mismatch_after_a_dense_layer_is_reported_at_construction():
    with pytest.raises(ValueError, match=r"layer 2: Dense\(in_features=5.*takes 5 features per "
                                         r"sample, got shape \(4,\) from the layer before"):
        sn.Sequential(sn.Dense(3, 4), sn.ReLU(), sn.Dense(5, 2))
    with pytest.raises(ValueError, match=r"layer 2: Reshape\(2, 3\) cannot hold the 4 values"):
        sn.Sequential(sn.Dense(3, 4), sn.ReLU(), sn.Reshape(2, 3))


def test_a_mismatch_below_an_unknown_input_is_reported_at_the_first_forward():
    model = sn.Sequential(sn.Flatten(), sn.Dense(784, 10))
    with pytest.raises(ValueError, match="784 features"):
        model.predict(np.zeros((2, 1, 27, 28), np.float32))
    model = sn.Sequential(sn.Reshape(4, 4), sn.Flatten(), sn.Dense(16, 3))
    assert model.predict_logits(np.zeros((2, 16), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"layer 0: Reshape\(4, 4\) cannot hold the 15 values"):
        model.predict(np.zeros((2, 15), np.float32))


def test_reshape_round_trips_and_saves(tmp_path):
    sn.manual_seed(0)
    model = sn.Sequential(sn.Reshape(2, -1), sn.Flatten(), sn.Dense(8, 3))
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    assert sn.Reshape(2, -1).output_shape((8,)) == (2, 4)
    assert model.summary(print_fn=None, in_shape=(8,)).count("(None, 2, 4)") == 1
    y = model.predict_logits(x)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(sn.load(tmp_path / "m.npz").predict_logits(x), y)
    # backward reshapes the gradient back
    layer = sn.Reshape(2, 4)
    layer.forward(x)
    assert layer.backward(np.ones((2, 2, 4), np.float32)).shape == (2, 8)
    for bad in [(), (0, 2), (-1, -1), (2.5,)]:
        with pytest.raises(ValueError, match="Reshape"):
            sn.Reshape(*bad)


class Counter(Module):
    """A layer with a buffer: counts the samples it has seen in training."""

    def __init__(self):
        super().__init__()
        self.seen = np.zeros(1, np.float32)

    def buffers(self):
        return {"seen": self.seen}

    def forward(self, x, training=False):
        if training:
            self.seen += x.shape[0]
        return x

    def backward(self, dy):
        return dy


def test_buffers_are_in_the_state_dict_and_the_model_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sn.layers.LAYERS, "Counter", Counter)
    sn.manual_seed(0)
    model = sn.Sequential(sn.Dense(4, 3), Counter(), sn.Dense(3, 2))
    model.fit(np.zeros((10, 4), np.float32), np.arange(10) % 2,
              optimizer=sn.SGD(model.parameters()), epochs=2, verbose=0)
    assert model.layers[1].seen[0] == 20
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "1.seen"]
    model.save(tmp_path / "m.npz")
    loaded = sn.load(tmp_path / "m.npz")
    assert loaded.layers[1].seen[0] == 20
    fresh = sn.Sequential(sn.Dense(4, 3), Counter(), sn.Dense(3, 2))
    buffer = fresh.layers[1].seen
    fresh.load_state_dict(state)
    assert fresh.layers[1].seen is buffer and buffer[0] == 20  # copied in place
    del state["1.seen"]
    with pytest.raises(ValueError, match=r"missing keys \['1.seen'\]"):
        fresh.load_state_dict(state)
