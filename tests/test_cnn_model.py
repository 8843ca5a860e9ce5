"""Convolutional networks as models: shapes, backprop of a whole network
against PyTorch, fit / predict / save / load, on both paths."""
import numpy as np
import pytest

import scratchnet as sn

pytestmark = pytest.mark.usefixtures("training_path")


def small_cnn(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(sn.Conv2D(1, 3, 3, padding=1), sn.ReLU(),
                         sn.Conv2D(3, 4, (3, 2), stride=2), sn.Tanh(), sn.Flatten(),
                         sn.Dense(4 * 3 * 4, 5))


def images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 7, 8), dtype=np.float32), rng.integers(0, 5, n)


def test_shapes_of_a_cnn():
    model = small_cnn()
    X, _ = images()
    assert model.predict_logits(X).shape == (12, 5)
    text = model.summary(print_fn=None, in_shape=(1, 7, 8))
    assert "(None, 3, 7, 8)" in text and "(None, 4, 3, 4)" in text and "(None, 48)" in text
    with pytest.raises(ValueError, match=r"Conv2D takes images \(N, C, H, W\).*flatten=False"):
        model.predict(np.zeros((2, 56), np.float32))
    with pytest.raises(ValueError, match=r"layer 0: Conv2D.*\(2, 7, 8\)"):
        model.predict(np.zeros((2, 2, 7, 8), np.float32))  # two channels for one
    with pytest.raises(ValueError, match=r"layer 5: Dense.*48 features.*got shape \(64,\)"):
        model.predict(np.zeros((2, 1, 10, 9), np.float32))  # Flatten gives 4*4*4, not 48


def test_backprop_of_a_cnn_matches_pytorch():
    torch = pytest.importorskip("torch")
    model = small_cnn()
    X, y = images()
    loss = sn.CrossEntropy()
    loss.forward(model.forward(X, training=True), y)
    assert model.backward(loss.backward()) is None  # the first Conv2D skips dx
    c1, c2, dense = model.layers[0], model.layers[2], model.layers[5]
    t = {name: torch.tensor(np.asarray(p), dtype=torch.float64, requires_grad=True)
         for name, p in model.named_parameters()}
    F = torch.nn.functional
    h = F.relu(F.conv2d(torch.tensor(X, dtype=torch.float64), t["0.weight"], t["0.bias"],
                        padding=1))
    h = torch.tanh(F.conv2d(h, t["2.weight"], t["2.bias"], stride=2))
    logits = h.flatten(1) @ t["5.weight"] + t["5.bias"]
    F.cross_entropy(logits, torch.tensor(y)).backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, t[name].grad.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    assert c1.weight.grad.shape == (3, 1, 3, 3) and c2.weight.grad.shape == (4, 3, 3, 2)
    assert dense.weight.grad.shape == (48, 5)


def test_a_cnn_learns_and_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((200, 1, 7, 8), dtype=np.float32) * 0.1
    y = rng.integers(0, 2, 200)
    X[y == 1, 0, 2:5, 3:6] += 1.0  # class 1 has a bright square
    model = small_cnn()
    model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=1e-2), epochs=8, batch_size=20,
              seed=0, verbose=0)
    assert model.evaluate(X, y)["accuracy"] > 0.95
    model.save(tmp_path / "cnn.npz")
    loaded = sn.load(tmp_path / "cnn.npz")
    np.testing.assert_array_equal(loaded.predict_logits(X), model.predict_logits(X))
    assert repr(loaded.layers[2]) == repr(model.layers[2])


def every_layer_cnn(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(sn.RandomShift(1), sn.RandomFlip(), sn.Conv2D(1, 4, 3, padding=1),
                         sn.BatchNorm2d(4), sn.ReLU(), sn.MaxPool2D(2), sn.Conv2D(4, 6, 2),
                         sn.ReLU(), sn.AvgPool2D(1), sn.GlobalAvgPool2D(), sn.BatchNorm1d(6),
                         sn.Dense(6, 3))


def test_every_new_layer_in_one_model_trains_reproducibly_and_saves(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.random((60, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    runs = []
    for _ in range(2):
        model = every_layer_cnn()
        model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=1e-2), epochs=2,
                  batch_size=16, seed=5, verbose=0)
        runs.append(model)
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)  # augmentation follows fit's seed
    model = runs[0]
    assert model.layers[3].running_var.min() > 0 and model.layers[3].running_mean.any()
    # inference: no augmentation, running statistics; the same twice
    np.testing.assert_array_equal(model.predict_logits(X), model.predict_logits(X))
    model.save(tmp_path / "cnn.npz")
    loaded = sn.load(tmp_path / "cnn.npz")
    np.testing.assert_array_equal(loaded.predict_logits(X), model.predict_logits(X))
    np.testing.assert_array_equal(loaded.layers[3].running_var, model.layers[3].running_var)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
