"""Issue 7: what PyTorch and Keras users do by habit works or fails loudly.
Each test here failed on scratchnet 0.1 (silently wrong, or an unhelpful
error) and runs on both paths: the fused C network and layer by layer."""
import threading

import warnings

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core, _fused

pytestmark = pytest.mark.usefixtures("training_path")

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR_Y = np.array([0, 1, 1, 0])


def xor_model():
    sn.manual_seed(0)
    return sn.Sequential(sn.Dense(2, 16), sn.Tanh(), sn.Dense(16, 1))


def fit_xor():
    model = xor_model()
    model.fit(XOR_X, XOR_Y, optimizer=sn.Adam(model.parameters(), lr=0.05),
              loss=sn.BinaryCrossEntropy(), epochs=300, batch_size=4, seed=0, verbose=0)
    return model


def sine_data(n=256):
    x = np.linspace(-3, 3, n, dtype=np.float32).reshape(-1, 1)
    return x, np.sin(x[:, 0])


def fit_sine():
    sn.manual_seed(1)
    model = sn.Sequential(sn.Dense(1, 32), sn.Tanh(), sn.Dense(32, 1))
    x, y = sine_data()
    model.fit(x, y, optimizer=sn.Adam(model.parameters(), lr=0.01), loss=sn.MSE(), epochs=150,
              batch_size=32, seed=0, verbose=0)
    return model


def test_binary_cross_entropy_model_predicts_labels_and_sigmoid_probabilities():
    model = fit_xor()
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    np.testing.assert_array_equal(model.predict(XOR_X), XOR_Y)
    assert model.predict(XOR_X).dtype == np.int64
    proba = model.predict_proba(XOR_X)
    assert proba.shape == (4,)
    z = model.predict_logits(XOR_X)[:, 0].astype(np.float64)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-z)), rtol=1e-5)
    np.testing.assert_array_equal(proba >= 0.5, XOR_Y == 1)


def test_multi_label_bce_keeps_one_column_per_output():
    sn.manual_seed(2)
    model = sn.Sequential(sn.Dense(2, 8), sn.ReLU(), sn.Dense(8, 3))
    Y = np.stack([XOR_Y, 1 - XOR_Y, XOR_X[:, 0]], axis=1)
    model.fit(XOR_X, Y, optimizer=sn.SGD(model.parameters(), lr=0.1),
              loss=sn.BinaryCrossEntropy(), epochs=2, batch_size=4, verbose=0)
    z = model.predict_logits(XOR_X)
    np.testing.assert_array_equal(model.predict(XOR_X), (z >= 0).astype(np.int64))
    assert model.predict_proba(XOR_X).shape == (4, 3)


def test_regression_model_predicts_values_and_has_no_probabilities():
    model = fit_sine()
    x, y = sine_data()
    pred = model.predict(x)
    assert pred.shape == (256,) and pred.dtype == np.float32
    assert np.abs(pred - y).max() < 0.15
    with pytest.raises(ValueError, match="MSE.*not probabilities"):
        model.predict_proba(x)
    # evaluate defaults to the loss fit used: the mean squared error, no accuracy
    result = model.evaluate(x, y)
    assert set(result) == {"loss"}
    assert result["loss"] == pytest.approx(float(np.mean((pred - y) ** 2)), rel=1e-4)


def test_the_recorded_loss_survives_save_and_load(tmp_path):
    model = fit_xor()
    model.save(tmp_path / "xor.npz")
    loaded = sn.load(tmp_path / "xor.npz")
    assert isinstance(loaded.loss, sn.BinaryCrossEntropy)
    np.testing.assert_array_equal(loaded.predict(XOR_X), XOR_Y)
    np.testing.assert_allclose(loaded.predict_proba(XOR_X), model.predict_proba(XOR_X))
    regression = fit_sine()
    regression.save(tmp_path / "sine.npz")
    assert isinstance(sn.load(tmp_path / "sine.npz").loss, sn.MSE)


def test_single_output_model_without_a_loss_refuses_to_guess():
    model = xor_model()
    with pytest.raises(ValueError, match="one output and no recorded loss"):
        model.predict(XOR_X)
    model.loss = sn.BinaryCrossEntropy()
    assert model.predict(XOR_X).shape == (4,)
    with pytest.raises(TypeError, match="must be a Loss"):
        model.loss = "mse"


def test_fit_refuses_losses_the_model_cannot_mean():
    single = xor_model()
    with pytest.raises(ValueError, match="CrossEntropy needs one output per class"):
        single.fit(XOR_X, XOR_Y, optimizer=sn.SGD(single.parameters()), verbose=0)
    softmax_last = sn.Sequential(sn.Dense(2, 2), sn.Softmax())
    with pytest.raises(ValueError, match="remove the final Softmax"):
        softmax_last.fit(XOR_X, XOR_Y, optimizer=sn.SGD(softmax_last.parameters()), verbose=0)
    sigmoid_last = sn.Sequential(sn.Dense(2, 1), sn.Sigmoid())
    with pytest.raises(ValueError, match="remove the final Sigmoid"):
        sigmoid_last.fit(XOR_X, XOR_Y, optimizer=sn.SGD(sigmoid_last.parameters()),
                         loss=sn.BinaryCrossEntropy(), verbose=0)



PASS_ON = {"dropout": lambda width: sn.Dropout(0.1), "flatten": lambda width: sn.Flatten(),
           "reshape": lambda width: sn.Reshape(width)}


@pytest.mark.parametrize("after", sorted(PASS_ON))
def test_a_final_softmax_or_sigmoid_is_seen_through_layers_that_pass_values_on(after):
    """Dropout (the identity at inference), Flatten and Reshape after a
    Softmax leave it the model's last word: CrossEntropy would apply softmax
    twice (3 classes: no probability above 0.58) and is refused as for a
    Softmax at the very end; predict_proba of such a model, not fitted, is
    its outputs, not their softmax."""
    softmax = sn.Sequential(sn.Dense(2, 2), sn.Softmax(), PASS_ON[after](2))
    with pytest.raises(ValueError, match="remove the final Softmax"):
        softmax.fit(XOR_X, XOR_Y, optimizer=sn.SGD(softmax.parameters()), verbose=0)
    np.testing.assert_allclose(softmax.predict_proba(XOR_X), softmax.predict_logits(XOR_X),
                               rtol=1e-6)
    sigmoid = sn.Sequential(sn.Dense(2, 1), sn.Sigmoid(), PASS_ON[after](1))
    with pytest.raises(ValueError, match="remove the final Sigmoid"):
        sigmoid.fit(XOR_X, XOR_Y, optimizer=sn.SGD(sigmoid.parameters()),
                    loss=sn.BinaryCrossEntropy(), verbose=0)


def test_fit_refuses_an_optimizer_that_does_not_hold_the_models_parameters(tmp_path):
    X = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    model = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))
    other = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))
    with pytest.raises(ValueError, match=r"does not hold 4 of this model's 4 parameters "
                                         r"\(0\.weight, 0\.bias, 2\.weight, 2\.bias\)"):
        model.fit(X, y, optimizer=sn.Adam(other.parameters()), verbose=0)
    # the habit: build the optimizer, then load a checkpoint into a new model
    opt = sn.Adam(model.parameters())
    model.save(tmp_path / "m.npz")
    model = sn.load(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="before its parameters were replaced"):
        model.fit(X, y, optimizer=opt, verbose=0)
    partial = sn.SGD(model.parameters()[:2])
    with pytest.raises(ValueError, match=r"does not hold 2 .*\(2\.weight, 2\.bias\)"):
        model.fit(X, y, optimizer=partial, verbose=0)


def test_fit_refuses_an_optimizer_that_also_holds_other_parameters():
    """Another model's parameters in the optimizer would be moved at every
    step of this fit (weight decay; gradients left from elsewhere), and
    that model changed with no word: refused, and it stays as it was."""
    X = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    model = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))
    other = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))
    before = [p.data.copy() for p in other.parameters()]
    both = sn.AdamW(model.parameters() + other.parameters(), lr=0.1, weight_decay=0.5)
    with pytest.raises(ValueError, match=r"also holds 4 parameter\(s\) that are not this "
                                         r"model's \(0\.weight, 0\.bias, 2\.weight, 2\.bias\)"):
        model.fit(X, y, optimizer=both, verbose=0)
    for p, b in zip(other.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_setting_lr_on_the_optimizer_takes_effect():
    X = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    y = np.arange(64) % 3
    model = sn.Sequential(sn.Dense(4, 8, seed=0), sn.ReLU(), sn.Dense(8, 3, seed=1))
    opt = sn.SGD(model.parameters(), lr=0.5)
    opt.lr = 0.0
    assert opt.lr == 0.0 and opt.param_groups[0]["lr"] == 0.0
    before = [p.data.copy() for p in model.parameters()]
    model.fit(X, y, optimizer=opt, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b.data)
    opt.lr = 1e-4
    history = model.fit(X, y, optimizer=opt, epochs=1, batch_size=16, verbose=0)
    assert history["lr"] == [1e-4]
    assert not all(np.array_equal(a, b.data) for a, b in zip(before, model.parameters()))
    # torch's way keeps working, and lr reads it back
    opt.param_groups[0]["lr"] = 0.25
    assert opt.lr == 0.25
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


def test_lr_of_several_groups():
    model = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))
    params = model.parameters()
    opt = sn.SGD([{"params": params[:2], "lr": 0.1}, {"params": params[2:]}], lr=0.01)
    with pytest.raises(ValueError, match="different learning rates"):
        opt.lr
    opt.lr = 0.05
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]


def test_a_first_flatten_layer_takes_image_shaped_input():
    rng = np.random.default_rng(0)
    images = rng.random((60, 28, 28), dtype=np.float32)
    y = np.arange(60) % 10
    model = sn.Sequential(sn.Flatten(), sn.Dense(784, 32), sn.ReLU(), sn.Dense(32, 10))
    model.fit(images, y, optimizer=sn.Adam(model.parameters()), epochs=1, batch_size=16,
              verbose=0, validation=(images[:10, None], y[:10]))
    want = model.predict_logits(images.reshape(60, -1))
    np.testing.assert_array_equal(model.predict_logits(images), want)
    np.testing.assert_array_equal(model.predict_logits(images[:, None]), want)
    np.testing.assert_array_equal(model.predict(images[:, None]), want.argmax(1))
    assert set(model.evaluate(images[:, None], y)) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="784 features"):
        model.predict(rng.random((5, 27, 28)))


def one_model(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(sn.Dense(32, 64), sn.ReLU(), sn.Dense(64, 48), sn.Tanh(),
                         sn.Dense(48, 10))


def test_predicting_from_several_threads_gives_the_single_thread_answer():
    """Four threads call predict_proba on one model with inputs of their own;
    each gets exactly what a lone call gives (0.1 got another thread's rows
    in 114 of 120 calls)."""
    model = one_model()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 32)).astype(np.float32) for n in (1, 700, 700, 2500)]
    expected = [model.predict_proba(x) for x in inputs]
    wrong, errors = [], []

    def worker(k):
        try:
            for _ in range(30):
                if not np.array_equal(model.predict_proba(inputs[k]), expected[k]):
                    wrong.append(k)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert wrong == []


def test_evaluate_from_several_threads_gives_the_single_thread_answer():
    model = one_model(1)
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((n, 32)).astype(np.float32), rng.integers(0, 10, n))
            for n in (600, 600, 600, 2500)]  # equal shapes share layer buffers
    expected = [model.evaluate(X, y) for X, y in data]
    results = {k: [] for k in range(len(data))}

    def worker(k):
        for _ in range(30):
            results[k].append(model.evaluate(*data[k]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        assert got == [expected[k]] * 30


# ---- found by trying it as a new user (review of this changes) ----

@pytest.mark.parametrize("layer", [0, 2])  # before the ReLU (which kept NaN as 0), the Tanh
def test_predict_refuses_outputs_that_are_not_finite(layer):
    model = one_model()
    x = np.ones((3, 32), np.float32)
    model.layers[layer].weight[0, 0] = np.nan
    for method in (model.predict, model.predict_proba):
        with pytest.raises(ValueError, match="NaN or inf.*diverge"):
            method(x)
    assert np.isnan(model.predict_logits(x)).all()  # the raw outputs, as they are


def test_a_final_softmax_is_not_applied_twice():
    sn.manual_seed(3)
    model = sn.Sequential(sn.Dense(5, 3), sn.Softmax())
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    probs = model.predict_logits(x)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict_proba(x), probs)
    np.testing.assert_array_equal(model.predict(x), probs.argmax(1))
    with pytest.raises(ValueError, match="remove the final Softmax"):
        model.evaluate(x, [0, 1, 2, 0])


def test_setting_a_loss_the_model_cannot_mean_is_refused():
    with pytest.raises(ValueError, match="model.loss: CrossEntropy needs one output per class"):
        xor_model().loss = sn.CrossEntropy()
    model = one_model()
    model.loss = sn.BinaryCrossEntropy()  # ten independent yes/no outputs: fine
    assert model.predict(np.zeros((2, 32), np.float32)).shape == (2, 10)


def test_a_parameter_given_twice_to_an_optimizer_is_refused():
    model = one_model()
    with pytest.raises(ValueError, match="more than once"):
        sn.SGD(model.parameters() + model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        sn.SGD([{"params": model.parameters()[:2]}, {"params": model.parameters()[1:]}])


def test_soft_targets_must_be_probabilities():
    model = one_model()
    x = np.zeros((2, 32), np.float32)
    targets = np.eye(10, dtype=np.float32)[[1, 2]] - 0.5
    with pytest.raises(ValueError, match="soft targets must be probabilities"):
        model.evaluate(x, targets)


def test_a_model_without_dense_layers_is_checked_by_its_output_count():
    """The output count of a model whose last layers are convolutions comes
    from the inputs' shape, as a Dense layer's would: one output and no loss
    leaves predict_proba's meaning unknown, CrossEntropy needs 2 or more
    outputs, and labels must be below the count. (Counted by the last Dense
    layer, none here, these passed: a column of 1.0 as probabilities, a fit
    with loss 0 that learned nothing.)"""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 1, 6, 6)).astype(np.float32)
    one = sn.Sequential(sn.Conv2D(1, 1, 3, seed=0), sn.GlobalAvgPool2D())
    for method in (one.predict_proba, one.predict):
        with pytest.raises(ValueError, match="one output and no recorded loss"):
            method(X)
    with pytest.raises(ValueError, match="CrossEntropy needs one output per class"):
        one.fit(X, np.zeros(20, int), sn.SGD(one.parameters(), lr=0.1),
                loss=sn.CrossEntropy(), epochs=1, verbose=0)
    three = sn.Sequential(sn.Conv2D(1, 3, 3, seed=0), sn.GlobalAvgPool2D())
    assert three.predict_proba(X).shape == (20, 3)  # a classifier: softmax rows
    np.testing.assert_allclose(three.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        three.fit(X, np.full(20, 3), sn.SGD(three.parameters(), lr=0.1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        three.evaluate(X, np.full(20, 5))


def test_a_leaky_relu_slope_must_be_a_finite_number():
    """A NaN or infinite slope is refused where it is given, not later by a
    compiled network ("MLP.predict: invalid argument") or as NaN outputs;
    any finite slope, negative too (as PyTorch's), is taken."""
    for bad in (float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="negative_slope must be a finite number"):
            sn.LeakyReLU(bad)
        layer = sn.LeakyReLU()
        with pytest.raises(ValueError, match="negative_slope must be a finite number"):
            layer.negative_slope = bad
        assert layer.negative_slope == 0.01
    x = np.array([[-2.0, 3.0]], np.float32)
    np.testing.assert_allclose(sn.LeakyReLU(-0.5).forward(x), [[1.0, 3.0]])


def test_errors_in_the_validation_data_name_it():
    """Bad validation= data is named as such: its errors said "X: ..." and
    "y: ...", as if the training data were wrong."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((30, 5)).astype(np.float32), np.arange(30) % 3
    Xv, yv = X[:10].copy(), y[:10].copy()
    bad_nan = Xv.copy()
    bad_nan[0, 0] = np.nan
    images = rng.standard_normal((30, 1, 6, 6)).astype(np.float32)
    cnn = sn.Sequential(sn.Conv2D(1, 3, 3, seed=0), sn.GlobalAvgPool2D())
    for model, data, valid, message in [
            (None, (X, y), (Xv[:, :4], yv), r"validation X: expected 5 features"),
            (None, (X, y), (bad_nan, yv), r"validation X: contains 1 non-finite"),
            (None, (X, y), (Xv, yv + 3), r"validation y: labels must be in \[0, 3\)"),
            (cnn, (images, y), (np.repeat(images[:5], 2, axis=1), y[:5]),
             r"validation X of shape \(5, 2, 6, 6\): layer 0: Conv2D"),
    ]:
        model = model or sn.Sequential(sn.Dense(5, 3, seed=0))
        with pytest.raises(ValueError, match=message):
            model.fit(*data, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0,
                      validation=valid)


def test_multi_hot_targets_train_on_the_gradient_of_their_loss():
    """CrossEntropy with targets whose rows do not sum to 1 (multi-hot):
    one SGD step moves the weights as PyTorch's cross_entropy with
    probabilities does; the gradient was (softmax - T) / N, right only for
    distributions, while the loss reported was PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4)).astype(np.float32)
    T = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]] * 2, np.float32)
    dense = sn.Dense(4, 3, seed=0)
    model = sn.Sequential(dense)
    W0, b0 = dense.weight.data.copy(), dense.bias.data.copy()
    history = model.fit(X, T, sn.SGD(model.parameters(), lr=1.0), loss=sn.CrossEntropy(),
                        epochs=1, batch_size=8, shuffle=False, verbose=0)
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.tensor(X, dtype=torch.float64) @ w + b,
                                             torch.tensor(T, dtype=torch.float64))
    loss.backward()
    assert history["loss"][0] == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(dense.weight.data, W0 - w.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias.data, b0 - b.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_a_scheduler_of_another_optimizer_is_refused():
    model, other = one_model(), one_model()
    opt = sn.SGD(model.parameters(), lr=0.1)
    wrong = sn.CosineAnnealingLR(sn.SGD(other.parameters(), lr=0.1), 5)
    with pytest.raises(ValueError, match="scheduler was built for another optimizer"):
        model.fit(np.zeros((4, 32), np.float32), [0, 1, 2, 3], optimizer=opt, scheduler=wrong,
                  verbose=0)


def test_small_api_edges(tmp_path):
    with pytest.raises(ValueError, match="no layers"):
        sn.Sequential().predict(np.zeros((2, 3), np.float32))
    model = one_model()
    with pytest.raises(ValueError, match="batch_size"):
        model.evaluate(np.zeros((2, 32), np.float32), [0, 1], batch_size=0)
    with pytest.raises(IsADirectoryError, match="is a folder; give a file name"):
        model.save(tmp_path)
    np.save(tmp_path / "images.npy", np.zeros((2, 784), np.float32))
    with pytest.raises(sn.ModelFileError, match=r"a single array \(.npy\)"):
        sn.load(tmp_path / "images.npy")


class _Doubled(sn.Sequential):
    """A subclass with a forward of its own: twice the layers' outputs."""

    def forward(self, x, training=False):
        return 2 * super().forward(x, training=training)


def _small_net(kind):
    """(layers, X) of a small dense or convolutional network, the same
    weights at each call."""
    rng = np.random.default_rng(0)
    if kind == "dense":
        return ((sn.Dense(6, 8, seed=0), sn.ReLU(), sn.Dense(8, 3, seed=1)),
                rng.standard_normal((64, 6)).astype(np.float32))
    return ((sn.Conv2D(1, 2, 3, seed=0), sn.ReLU(), sn.Flatten(), sn.Dense(32, 3, seed=1)),
            rng.standard_normal((64, 1, 6, 6)).astype(np.float32))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_a_subclass_forward_is_what_predict_and_fit_follow(kind, monkeypatch):
    """The compiled networks (the one-image path, the whole-network C path,
    the C trainer) compute the layers' own forward: a subclass's forward
    was never called, its predictions and training silently the layers'."""
    layers, X = _small_net(kind)
    y = np.arange(len(X)) % 3
    model, plain = _Doubled(*layers), sn.Sequential(*layers)
    for x in (X[:1], X):
        np.testing.assert_array_equal(model.predict_logits(x), 2 * plain.predict_logits(x))
    logits = 2 * plain.predict_logits(X).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(X), p / p.sum(1, keepdims=True), rtol=1e-5,
                               atol=1e-7)
    model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=64, verbose=0)
    monkeypatch.setattr(_fused, "ENABLED", False)  # the layer-by-layer path: forward called
    twin = _Doubled(*_small_net(kind)[0])
    twin.fit(X, y, sn.SGD(twin.parameters(), lr=0.1), epochs=1, batch_size=64, verbose=0)
    for a, b in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 64])
def test_a_masked_array_is_refused_on_the_one_image_path_too(rows):
    """A masked array is a float32 ndarray (a subclass): the compiled
    networks' own check took it as rows to read, masked values and all,
    where the layer-by-layer path refuses it."""
    layers, X = _small_net("dense")
    model = sn.Sequential(*layers)
    masked = np.ma.masked_array(X[:rows], mask=np.zeros_like(X[:rows], bool))
    masked.mask[0, 2] = True
    for method in (model.predict_proba, model.predict, model.predict_logits):
        with pytest.raises(ValueError, match="masked"):
            method(masked)
    unmasked = np.ma.masked_array(X[:rows])  # nothing masked: its data, as an array's
    np.testing.assert_array_equal(model.predict_proba(unmasked), model.predict_proba(X[:rows]))


def test_predict_follows_changes_to_the_model_after_a_first_call():
    """predict and predict_proba keep what they worked out about a model
    (the compiled network, whether it is a classifier) between calls: a new
    loss, a layer swapped in the same list, or a replaced weight array, each
    made right after a call, must be seen by the next one."""
    sn.manual_seed(4)
    model = sn.Sequential(sn.Dense(5, 8), sn.ReLU(), sn.Dense(8, 3))
    x = np.random.default_rng(1).standard_normal((1, 5)).astype(np.float32)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def expect_classifier():
        z = model.predict_logits(x)  # the reference: not through the cached path
        np.testing.assert_allclose(model.predict_proba(x), softmax(z), rtol=1e-6)
        np.testing.assert_array_equal(model.predict(x), z.argmax(1))

    expect_classifier()
    model.loss = sn.MSE()
    with pytest.raises(ValueError, match="MSE.*not probabilities"):
        model.predict_proba(x)
    np.testing.assert_array_equal(model.predict(x), model.predict_logits(x))
    model.loss = None
    expect_classifier()
    before = model.predict_proba(x)
    model.layers[1] = sn.Tanh()  # in place: the list object stays the same
    expect_classifier()
    assert not np.array_equal(model.predict_proba(x), before)
    dense = model.layers[2]
    dense.weight.data = np.zeros_like(dense.weight.data)  # a new array
    dense.bias.data = np.array([0.0, 2.0, 1.0], np.float32)
    np.testing.assert_array_equal(model.predict(x), [1])
    np.testing.assert_allclose(model.predict_proba(x), softmax(dense.bias.data[None]), rtol=1e-6)


def test_switching_the_fast_path_off_is_seen_by_a_model_already_compiled(monkeypatch):
    """The compiled networks are kept between calls; SCRATCHNET_FUSED's switch
    (_fused.ENABLED) turned off after a call must reach the next one (the
    layer-by-layer path, same answers)."""
    sn.manual_seed(6)
    model = sn.Sequential(sn.Dense(5, 8), sn.ReLU(), sn.Dense(8, 3))
    x = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
    monkeypatch.setattr(_fused, "ENABLED", True)
    fast = model.predict_proba(x)
    assert model._plan() is not None and model._fused_classifier() is not None
    monkeypatch.setattr(_fused, "ENABLED", False)
    assert model._plan() is None and model._fused_classifier() is None
    np.testing.assert_allclose(model.predict_proba(x), fast, rtol=1e-6)


# Each way of changing model.layers, in place or by a new list: (5 -> 5 -> 5)
# Dense, ReLU, Dense before; a network that still chains after (or none).
# What they add is built before the first call: building a layer moves
# Parameter.version by itself, which would hide a change that does not.
LAYER_CHANGES = {
    "setitem": lambda layers, tanh, dense: layers.__setitem__(1, tanh),
    "delitem": lambda layers, tanh, dense: layers.__delitem__(1),
    "iadd": lambda layers, tanh, dense: layers.__iadd__([tanh, dense]),
    "imul": lambda layers, tanh, dense: layers.__imul__(2),
    "append": lambda layers, tanh, dense: layers.append(dense),
    "extend": lambda layers, tanh, dense: layers.extend([tanh, dense]),
    "insert": lambda layers, tanh, dense: layers.insert(1, tanh),
    "pop": lambda layers, tanh, dense: layers.pop(1),
    "remove": lambda layers, tanh, dense: layers.remove(layers[1]),
    "sort": lambda layers, tanh, dense: layers.sort(key=lambda l: not isinstance(l, sn.ReLU)),
    "reverse": lambda layers, tanh, dense: layers.reverse(),
    "clear": lambda layers, tanh, dense: layers.clear(),
    "init": lambda layers, tanh, dense: layers.__init__([layers[2], layers[1], layers[0]]),
    "extend that fails": lambda layers, tanh, dense: _extend_then_fail(layers, tanh),
}


def _extend_then_fail(layers, layer):
    """extend from a generator that raises after its first layer: the list
    has changed all the same"""
    def more():
        yield layer
        raise KeyError("a bad layer spec")
    with pytest.raises(KeyError):
        layers.extend(more())


@pytest.mark.parametrize("change", [*LAYER_CHANGES, "new list"])
def test_every_change_of_the_layers_list_is_seen_by_the_next_one_image_call(change):
    """The one-image path trusts its compiled classifier while Parameter.version
    has not moved (Sequential._fast_classifier): each change of model.layers
    must move it, or predict_proba and predict answer for the old layers."""
    sn.manual_seed(8)
    model = sn.Sequential(sn.Dense(5, 5), sn.ReLU(), sn.Dense(5, 5))
    tanh, dense = sn.Tanh(), sn.Dense(5, 5)
    x = np.random.default_rng(4).standard_normal((1, 5)).astype(np.float32)
    before = model.predict_proba(x)
    np.testing.assert_array_equal(model.predict_proba(x), before)
    # the path under test is taken (with the fast path on: training_path)
    assert (model._fast_classifier[1] is not None) == _fused.ENABLED
    if change == "new list":
        model.layers = [model.layers[2], model.layers[1], model.layers[0]]
    else:
        LAYER_CHANGES[change](model.layers, tanh, dense)
    if not model.layers:
        for method in (model.predict_proba, model.predict):
            with pytest.raises(ValueError, match="no layers"):
                method(x)
        return
    z = x
    for layer in model.layers:
        z = layer.forward(z, training=False)
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), z.argmax(1))
    assert not np.allclose(model.predict_proba(x), before)


def test_a_loss_set_while_another_call_compiles_is_seen():
    """Another thread sets model.loss while a call is between its checks and
    keeping the classifier it found: that call must not make the next ones
    trust a classifier of the loss before (here the change is made from
    inside the call, where the classifier is built)."""
    sn.manual_seed(10)
    model = sn.Sequential(sn.Dense(5, 8), sn.ReLU(), sn.Dense(8, 3))
    x = np.random.default_rng(6).standard_normal((1, 5)).astype(np.float32)
    build = model._plan

    def build_while_the_loss_changes():
        plan = build()
        model.loss = sn.MSE()
        return plan

    model._plan = build_while_the_loss_changes
    try:
        model.predict_proba(x)  # for the loss it began with (or, seeing the change, raising)
    except ValueError:
        assert not _fused.ENABLED  # the layer path looks at the loss after the build
    del model._plan
    for _ in range(2):
        with pytest.raises(ValueError, match="MSE.*not probabilities"):
            model.predict_proba(x)
        np.testing.assert_array_equal(model.predict(x), model.predict_logits(x))


def test_a_state_given_to_a_used_model_is_what_it_answers_with():
    """__setstate__ (or the state put into __dict__) on a model that has
    answered already: its next answers are the new state's; the state holds
    the layers as a plain list (what versions before the changes-seeing list
    read)."""
    sn.manual_seed(11)
    x = np.random.default_rng(7).standard_normal((1, 5)).astype(np.float32)
    for give in ("setstate", "dict"):
        other = sn.Sequential(sn.Dense(5, 5), sn.Tanh(), sn.Dense(5, 5))
        expected = other.predict_proba(x)
        other.loss = sn.MSE() if give == "dict" else None
        used = sn.Sequential(sn.Dense(5, 5), sn.ReLU(), sn.Dense(5, 5))
        used.predict_proba(x), used.predict_proba(x)
        state = other.__getstate__()
        assert type(state["layers"]) is list
        if give == "setstate":
            used.__setstate__(state)
            np.testing.assert_allclose(used.predict_proba(x), expected, rtol=1e-6)
        else:  # the layers stay the model's own (the property), the loss is other's
            used.__dict__.update(state)
            with pytest.raises(ValueError, match="MSE.*not probabilities"):
                used.predict_proba(x)


def test_adding_to_the_layers_in_place_keeps_the_list():
    model = sn.Sequential(sn.Dense(5, 5), sn.ReLU())
    layers = model.layers
    model.layers += [sn.Dense(5, 3)]
    assert model.layers is layers and len(layers) == 3


def test_a_model_pickled_with_a_plain_layers_list_still_sees_changes():
    """Models pickled before layers became a property kept a plain list under
    "layers": unpickled, it becomes the list that reports its changes."""
    sn.manual_seed(9)
    model = sn.Sequential(sn.Dense(5, 5), sn.ReLU(), sn.Dense(5, 5))
    x = np.random.default_rng(5).standard_normal((1, 5)).astype(np.float32)
    state = model.__getstate__()
    del state["_fast_classifier"]  # as versions before it pickled a model
    old = sn.Sequential.__new__(sn.Sequential)
    old.__setstate__(state)
    before = old.predict_proba(x)
    np.testing.assert_allclose(before, model.predict_proba(x), rtol=1e-6)
    tanh = sn.Tanh()
    np.testing.assert_array_equal(old.predict_proba(x), before)
    old.layers.insert(1, tanh)
    assert not np.allclose(old.predict_proba(x), before)


def test_a_new_leaky_relu_slope_is_seen_by_the_compiled_network():
    sn.manual_seed(5)
    model = sn.Sequential(sn.Dense(4, 6), sn.LeakyReLU(0.01), sn.Dense(6, 3))
    x = -np.abs(np.random.default_rng(2).standard_normal((2, 4))).astype(np.float32)
    before = model.predict_logits(x)
    model.layers[1].negative_slope = 0.5  # in place, after a first call
    reference = x
    for layer in model.layers:
        reference = layer.forward(reference, training=False)
    np.testing.assert_allclose(model.predict_logits(x), reference, rtol=1e-6)
    assert not np.allclose(model.predict_logits(x), before)


def test_prediction_errors_come_in_the_order_they_did_before_the_fast_path():
    """What a model's outputs mean is checked before its layers are compiled;
    an empty model says so; a CrossEntropy subclass is still a classifier."""
    model = sn.Sequential(sn.Dense(5, 8), sn.ReLU(), sn.Dense(8, 3))
    model.loss = sn.MSE()
    model.layers[2] = sn.Dense(7, 3)  # the layers no longer chain
    with pytest.raises(ValueError, match="MSE.*not probabilities"):
        model.predict_proba(np.ones((1, 5), np.float32))
    one = sn.Sequential(sn.Dense(5, 8), sn.ReLU(), sn.Dense(8, 1))
    one.layers[2] = sn.Dense(7, 1)
    for method in (one.predict, one.predict_proba):
        with pytest.raises(ValueError, match="one output and no recorded loss"):
            method(np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="no layers"):
        sn.Sequential().predict_proba(np.ones((1, 5), np.float32))

    class Smoothed(sn.CrossEntropy):
        pass

    model = sn.Sequential(sn.Dense(5, 3))
    model.loss = Smoothed()
    x = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(model.predict_proba(x).sum(1), 1.0, rtol=1e-6)


def test_big_endian_inputs_are_read_as_their_values():
    """A float32 array in the other byte order ('>f4' here) has NumPy's type
    number of float32: read as it is, its bytes would be other numbers (the
    compiled networks gave labels that all differed, or refused NaN that was
    not there). Its values must give the native array's answers, and the
    low-level GEMM must refuse it rather than write native floats into it."""
    sn.manual_seed(7)
    model = sn.Sequential(sn.Dense(20, 16), sn.ReLU(), sn.Dense(16, 3))
    rng = np.random.default_rng(8)
    X = rng.random((50, 20)).astype(np.float32)
    swapped = X.astype(X.dtype.newbyteorder())
    assert np.array_equal(swapped, X) and not swapped.dtype.isnative
    np.testing.assert_array_equal(model.predict_proba(swapped), model.predict_proba(X))
    np.testing.assert_array_equal(model.predict_logits(swapped), model.predict_logits(X))
    np.testing.assert_array_equal(model.predict(swapped[:1]), model.predict(X[:1]))
    with pytest.raises(TypeError, match="byte order"):
        _core.gemm(swapped, swapped.T.copy(), np.zeros((50, 50), np.float32))


# the Dense layer's refusal of other than its 8 inputs, by either path's words
NOT_8_FEATURES = r"takes 8 features per sample|expected input of shape \(batch, 8\)"


def test_new_layer_settings_after_a_first_call_reach_the_compiled_network():
    """The compiled network copies BatchNorm's eps, a convolution's and a
    pooling's window, stride and padding, Reshape's shape: a new value set
    after a first call must be used by the next (it gave the old answers,
    27 apart for a new eps, or answers from a network that no longer
    chains instead of its error)."""
    rng = np.random.default_rng(9)
    X = rng.random((30, 20)).astype(np.float32)
    sn.manual_seed(9)
    dense = sn.Sequential(sn.Dense(20, 16), sn.BatchNorm1d(16), sn.ReLU(), sn.Dense(16, 3))
    dense[1].running_var[:] = 0.01
    dense.predict_logits(X)
    dense[1].eps = 1.0
    np.testing.assert_allclose(dense.predict_logits(X), dense.forward(X), rtol=1e-5, atol=1e-5)
    conv = sn.Sequential(sn.Reshape(1, 4, 5), sn.Conv2D(1, 2, 3, padding=1), sn.ReLU(),
                         sn.MaxPool2D(2), sn.Flatten(), sn.Dense(8, 3))
    conv.predict_logits(X)
    conv[1].padding = (0, 0)  # (2, 2, 3), pooled (2, 1, 1): 2 features, not 8
    with pytest.raises(ValueError, match=NOT_8_FEATURES):
        conv.predict_logits(X)
    conv[1].padding = (1, 1)
    before = conv.predict_logits(X).copy()
    conv[3].stride = (1, 2)  # pooled (2, 3, 2): 12 features
    with pytest.raises(ValueError, match=NOT_8_FEATURES):
        conv.predict_logits(X)
    conv[3].stride = (2, 2)
    np.testing.assert_array_equal(conv.predict_logits(X), before)
    conv[0].shape = (1, 5, 4)  # the same 20 values read as 5 x 4 images
    np.testing.assert_allclose(conv.predict_logits(X), conv.forward(X), rtol=1e-5, atol=1e-6)
    assert not np.allclose(conv.predict_logits(X), before)



def test_new_layer_settings_are_checked_and_put_in_form_as_the_constructors_do():
    """An int for a pair (as the constructors take), a window the weights do
    not have, an eps of 0: set after construction they had given a bare
    TypeError, or an opaque refusal from the compiled network, at predict."""
    rng = np.random.default_rng(15)
    X = rng.random((3, 20)).astype(np.float32)
    conv = sn.Sequential(sn.Reshape(1, 4, 5), sn.Conv2D(1, 2, 3, padding=1), sn.ReLU(),
                         sn.MaxPool2D(2), sn.Flatten(), sn.Dense(8, 3))
    before = conv.predict_logits(X).copy()
    conv[1].padding, conv[3].stride = 1, 2
    assert conv[1].padding == (1, 1) and conv[3].stride == (2, 2)
    np.testing.assert_array_equal(conv.predict_logits(X), before)
    with pytest.raises(ValueError, match=r"padding must be an int >= 0"):
        conv[1].padding = -1
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\): the weights are \(3, 3\)"):
        conv[1].kernel_size = 5
    with pytest.raises(ValueError, match=r"MaxPool2D: stride must be"):
        conv[3].stride = (0, 1)
    with pytest.raises(ValueError, match="Reshape: the shape must be positive integers"):
        conv[0].shape = (0, 20)
    norm = sn.BatchNorm1d(4)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"BatchNorm1d: eps must be a number in \(0.0, inf\]"):
            norm.eps = bad
    assert norm.eps == 1e-5 and conv[1].padding == (1, 1) and conv[0].shape == (1, 4, 5)


def test_binary_accuracy_counts_the_decisions_predict_makes():
    """predict says 1 where sigmoid(z) >= 0.5, z >= 0; evaluate's accuracy
    must count the same decisions, z == 0 included (zero weights: every
    logit 0, predict all right, and accuracy had said 0.0)."""
    X = np.random.default_rng(10).random((40, 5)).astype(np.float32)
    y = np.ones(40, dtype=np.int64)
    model = sn.Sequential(sn.Dense(5, 1))
    model.loss = sn.BinaryCrossEntropy()
    model[0].weight = np.zeros((5, 1), np.float32)
    model[0].bias = np.zeros(1, np.float32)
    np.testing.assert_array_equal(model.predict(X), y)
    assert model.evaluate(X, y)["accuracy"] == 1.0
    assert model.evaluate(X, 1 - y)["accuracy"] == 0.0


def test_a_last_batch_batchnorm_cannot_train_on_is_refused_before_any_step():
    """1025 rows in batches of 64 leave a last batch of one row: one value per
    channel for BatchNorm1d, which raised at the epoch's last step with the
    weights already moved. Refused before training, the model untouched; a
    BatchNorm2d over 2 x 2 images has 4 values per channel even then."""
    rng = np.random.default_rng(11)
    X, y = rng.random((1025, 8)).astype(np.float32), rng.integers(0, 3, 1025)
    model = sn.Sequential(sn.Dense(8, 8), sn.BatchNorm1d(8), sn.ReLU(), sn.Dense(8, 3))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"last batch would hold 1 row\(s\), and layer 1"):
        model.fit(X, y, sn.Adam(model.parameters()), epochs=2, batch_size=64, verbose=0)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    with pytest.raises(ValueError, match=r"every batch would hold 1 row\(s\), and layer 1 .*: "
                                         "choose a batch_size of 2 or more$"):
        model.fit(X, y, sn.Adam(model.parameters()), epochs=2, batch_size=1, verbose=0)
    with pytest.raises(ValueError, match="choose more samples: the data holds 1$"):
        model.fit(X[:1], y[:1], sn.Adam(model.parameters()), batch_size=32, verbose=0)
    model.fit(X, y, sn.Adam(model.parameters()), epochs=1, batch_size=63, verbose=0)
    images = sn.Sequential(sn.Reshape(2, 2, 2), sn.BatchNorm2d(2), sn.Flatten(), sn.Dense(8, 3))
    images.fit(X, y, sn.Adam(images.parameters()), epochs=1, batch_size=64, verbose=0)


def test_errors_name_what_is_wrong(tmp_path):
    """Messages that had named the wrong thing (found by a review as a new
    user): each must say what the user can act on."""
    rng = np.random.default_rng(12)
    X, y = rng.random((40, 6)).astype(np.float32), np.arange(40) % 3
    model = sn.Sequential(sn.Dense(6, 5), sn.ReLU(), sn.Dense(5, 3))
    # finite weights, inputs that overflow them: not only the weights are blamed
    with pytest.raises(ValueError, match="or these inputs are too large for it"):
        model.predict(X * 3e38)
    # a uint64 label past int64's range is shown as itself, not wrapped round
    big = y.astype(np.uint64)
    big[0] = 2 ** 63 + 1
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got 9223372036854775809"):
        model.fit(X, big, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"must be a pair \(X_val, y_val\), got ndarray"):
        model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0, validation=X)
    with pytest.raises(ValueError, match=r"expected a 2-D array .*got a single number"):
        model.predict(np.float32(1))
    missing = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match=r"the folder .*such does not exist") as info:
        model.save(missing)
    assert ".tmp" not in str(info.value)


def test_a_sequential_inside_a_sequential_is_refused_and_a_users_layer_not_saved(tmp_path):
    """A nested Sequential had its input's shape taken for its output's
    (blaming the next layer), and what looks through the layers (the final
    Softmax, BatchNorm's batches, the input size) would not look inside it:
    refused, naming the way to write it. A user's own layer trains and
    resumes from checkpoints, but save refuses it before writing a file
    sn.load could not read."""
    inner = sn.Sequential(sn.Dense(20, 8), sn.ReLU())
    with pytest.raises(TypeError, match=r"not another Sequential.*Sequential\(\*inner.layers"):
        sn.Sequential(inner, sn.Dense(8, 3))

    class Scale(sn.module.Module):
        def forward(self, x, training=False):
            return x * 2.0

        def backward(self, dy):
            return dy * 2.0

    rng = np.random.default_rng(13)
    X, y = rng.random((40, 20)).astype(np.float32), np.arange(40) % 3
    model = sn.Sequential(sn.Dense(20, 8), Scale(), sn.Dense(8, 3))
    opt = sn.SGD(model.parameters(), lr=0.1)
    model.fit(X, y, opt, epochs=1, verbose=0, seed=0, checkpoint=tmp_path / "run.ckpt")
    history = model.fit(X, y, opt, epochs=2, verbose=0, seed=0, resume=tmp_path / "run.ckpt")
    assert len(history["loss"]) == 2
    with pytest.raises(TypeError, match="layer 1 is a Scale, not one of scratchnet's layer types"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_a_change_made_while_the_compiled_network_is_built_is_seen_next_call(monkeypatch):
    """Another thread may change a setting while predict builds the compiled
    network: the network must be kept under the key read before building,
    so the next call rebuilds (kept under the key read after, it gave the
    old slope's answers for good)."""
    rng = np.random.default_rng(14)
    X = rng.standard_normal((4, 8)).astype(np.float32)
    model = sn.Sequential(sn.Dense(8, 16, seed=1), sn.LeakyReLU(0.01), sn.Dense(16, 3, seed=2))
    monkeypatch.setattr(_fused, "ENABLED", True)
    real_build = _fused.build

    def build_then_change(*args, **kwargs):
        network = real_build(*args, **kwargs)  # made with the slope 0.01
        model.layers[1].negative_slope = 0.9   # meanwhile, from "another thread"
        monkeypatch.setattr(_fused, "build", real_build)
        return network

    monkeypatch.setattr(_fused, "build", build_then_change)
    model.predict_proba(X)
    z = model.forward(X)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(X), e / e.sum(1, keepdims=True), atol=1e-6)


def test_finite_values_past_float32s_range_are_named_as_such():
    """float64 data beyond float32's largest value becomes inf in the
    conversion: the error says so, where it said the data held NaN or inf
    (found by a reviewer trying the sklearn wrapper)."""
    model = sn.Sequential(sn.Dense(3, 2, seed=0))
    X = np.ones((4, 3))
    X[1, 2], X[2, 0] = 1e39, -5e40
    with pytest.raises(ValueError, match=r"X: 2 value\(s\) beyond float32's range \(the largest "
                                         r"magnitude 5e\+40 > 3.4e\+38\)"):
        model.fit(X, np.array([0, 1, 0, 1]), sn.SGD(model.parameters()), epochs=1, verbose=0)
    X[1, 2] = X[2, 0] = np.inf  # inf itself is what it was
    with pytest.raises(ValueError, match=r"X: contains 2 non-finite value\(s\) \(NaN or inf\)"):
        model.fit(X, np.array([0, 1, 0, 1]), sn.SGD(model.parameters()), epochs=1, verbose=0)


@pytest.mark.parametrize("case", ["mse shape", "one-hot classes", "bce range", "soft negative",
                                  "nan in a late training batch"])
def test_float_targets_are_checked_whole_before_any_step(case):
    """Targets the loss refuses are refused before training: validation
    targets were first used after a whole epoch had trained, and a bad value
    in a late training batch stopped a fit whose weights had moved (found by
    a reviewer trying the library as a new user)."""
    rng = np.random.default_rng(0)
    X = rng.random((30, 4), dtype=np.float32)
    Y = rng.random((30, 2), dtype=np.float32)
    model = sn.Sequential(sn.Dense(4, 8, seed=0), sn.Tanh(), sn.Dense(8, 2, seed=1))
    before = [p.data.copy() for p in model.parameters()]
    loss, y, validation = {
        "mse shape": (sn.MSE(), Y, (X, Y[:, 0])),
        "one-hot classes": (sn.CrossEntropy(), Y, (X, np.eye(3, dtype=np.float32)[np.arange(30) % 3])),
        "bce range": (sn.BinaryCrossEntropy(), Y, (X, 2 * Y)),
        "soft negative": (sn.CrossEntropy(), Y, (X, Y - 0.5)),
        "nan in a late training batch": (sn.MSE(), np.r_[Y[:-1], [[np.nan, 1]]], None),
    }[case]
    message = {"mse shape": r"validation y: MSE: targets of shape \(30,\) do not match "
                            r"predictions \(30, 2\)",
               "one-hot classes": r"validation y: CrossEntropy: targets of shape \(30, 3\) for "
                                  r"logits \(30, 2\)",
               "bce range": r"validation y: BinaryCrossEntropy: targets must be in \[0, 1\]",
               "soft negative": r"validation y: CrossEntropy: soft targets must be probabilities",
               "nan in a late training batch": r"y: MSE targets: contains 1 non-finite"}[case]
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), loss=loss, epochs=2, batch_size=10,
                  shuffle=False, validation=validation, verbose=0)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_the_model_returns_a_new_array_each_call():
    """model(x) and model.forward(x) returned the last layer's reused buffer:
    a list of results held the last batch's in every entry (found by a
    reviewer writing a PyTorch-style loop)."""
    model = sn.Sequential(sn.Conv2D(1, 2, 3, seed=0), sn.Flatten(), sn.Dense(18, 3, seed=1))
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 1, 5, 5), dtype=np.float32) for _ in range(3)]
    expected = [model.predict_logits(b).copy() for b in batches]
    for call in (model, model.forward, lambda b: model.forward(b, training=True)):
        outs = [call(b) for b in batches]
        for want, out in zip(expected, outs):
            np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_a_dense_layer_after_images_asks_for_flatten():
    """Conv2D straight into Dense: the shapes do not chain; where the counts
    match, the message says what is missing (a reviewer's note)."""
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"takes 72 features per sample \(put sn.Flatten\(\) before "
                                         r"it\), got shape \(2, 6, 6\) from the layer before$"):
        sn.Sequential(sn.Conv2D(1, 2, 3), sn.Dense(72, 3)).predict(x)
    with pytest.raises(ValueError, match=r"got shape \(2, 6, 6\) from the layer before$"):
        sn.Sequential(sn.Conv2D(1, 2, 3), sn.Dense(70, 3)).predict(x)


def test_fit_refuses_shifts_that_can_blank_an_image_and_predict_still_runs():
    """RandomShift(10) on 5 x 5 images blanked 81% of them in training, in
    silence (a reviewer's note). At inference the layer is the identity: a
    saved model holding one still predicts."""
    X = np.random.default_rng(0).random((8, 1, 5, 5), dtype=np.float32)
    model = sn.Sequential(sn.RandomShift(5), sn.Flatten(), sn.Dense(25, 2, seed=0))
    before = model.layers[2].weight.data.copy()
    with pytest.raises(ValueError, match=r"fit: layer 0: RandomShift\(pixels=5\): shifts of up to "
                                         r"5 pixels move some 5 x 5 images out entirely"):
        model.fit(X, np.arange(8) % 2, sn.SGD(model.parameters()), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.layers[2].weight.data, before)
    assert model.predict(X).shape == (8,)
    four = sn.Sequential(sn.RandomShift(4), sn.Flatten(), sn.Dense(25, 2))
    four.fit(X, np.arange(8) % 2, sn.SGD(four.parameters()), epochs=1, verbose=0)


@pytest.mark.parametrize("change", ["replace arrays", "dropout p", "leaky slope", "freeze"])
def test_a_callbacks_change_between_epochs_reaches_the_fused_trainer(change, monkeypatch):
    """The C trainer was built once a fit: a callback that replaced the
    parameter arrays (the README's way, compiled networks rebuild) or set a
    Dropout's p or a LeakyReLU's slope left it training the old ones, the
    history reporting their loss (found by a reviewer). Both paths must now
    end alike."""
    from scratchnet import _fused
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 20)).astype(np.float32)
    y = X[:, :3].argmax(1)

    class Change(sn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch != 1:
                return
            model = self.model
            if change == "replace arrays":
                for p in model.parameters():
                    p.data = p.data * 0.5
            elif change == "dropout p":
                model.layers[2].p = 0.0
            elif change == "freeze":  # the C trainer stepped a frozen layer on
                for p in model.layers[0].parameters():
                    p.requires_grad = False
            else:
                model.layers[1].negative_slope = 0.3

    results = {}
    for fused in (True, False):
        monkeypatch.setattr(_fused, "ENABLED", fused)
        model = sn.Sequential(sn.Dense(20, 32, seed=0), sn.LeakyReLU(0.01), sn.Dropout(0.3, seed=1),
                              sn.Dense(32, 3, seed=2))
        history = model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=3, batch_size=32,
                            seed=0, verbose=0, callbacks=[Change()])
        results[fused] = ([p.data.copy() for p in model.parameters()], history["loss"])
    for a, b in zip(results[True][0], results[False][0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[True][1], results[False][1], rtol=1e-4)


def test_dropout_p_set_later_is_checked():
    layer = sn.Dropout(0.2)
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\), got 1.5"):
        layer.p = 1.5
    assert layer.p == 0.2


class _WeightedMSE(sn.MSE):
    """A user's loss with a setting its get_config does not give."""

    def __init__(self, weight=1.0):
        super().__init__()
        self.weight = weight

    def forward(self, predictions, targets):
        return self.weight * super().forward(predictions, targets)

    def backward(self, rows=None):
        return super().backward(rows) * self.weight


def test_evaluate_and_validation_use_the_loss_given_settings_and_all(tmp_path):
    """evaluate and fit's validation rebuilt the loss from get_config(): a
    user's loss came back with its defaults (val_loss 2.08 for 20.8; found
    by a reviewer). And save refuses such a loss, which sn.load could not
    rebuild (it wrote a file sn.load refused)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    t = X.sum(axis=1)
    model = sn.Sequential(sn.Dense(3, 1, seed=0))
    loss = _WeightedMSE(10.0)
    history = model.fit(X, t, sn.SGD(model.parameters(), lr=1e-3), loss=loss, epochs=1,
                        verbose=0, validation=(X, t))
    direct = 10.0 * sn.MSE()(model.predict_logits(X), t)
    assert history["val_loss"][0] == pytest.approx(direct, rel=1e-6)
    assert model.evaluate(X, t)["loss"] == pytest.approx(direct, rel=1e-6)
    assert model.evaluate(X, t, loss=_WeightedMSE(3.0))["loss"] == pytest.approx(direct * 0.3,
                                                                                  rel=1e-6)
    with pytest.raises(TypeError, match="save: model.loss is a _WeightedMSE, not one of "
                                        "scratchnet's losses"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    model.loss = None
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(sn.load(tmp_path / "m.npz").predict_logits(X),
                                  model.predict_logits(X))


def test_a_gradient_of_another_shape_is_refused_and_dtypes_are_converted():
    """A user's layer that set a transposed gradient of the same size trained
    on it, the optimizers applying it element by element to the wrong weights
    (found by a reviewer; PyTorch refuses such a grad). A float64 or strided
    gradient is converted, as the README says of arrays given."""
    p = sn.Parameter(np.ones((6, 4), np.float32), "w")
    with pytest.raises(ValueError, match=r"parameter 'w': assigned grad of shape \(4, 6\), "
                                         r"expected the data's \(6, 4\)"):
        p.grad = np.zeros((4, 6))
    p.grad = np.arange(48.0).reshape(6, 8)[:, ::2]  # float64, strided
    assert p.grad.dtype == np.float32 and p.grad.flags.c_contiguous
    opt = sn.SGD([p], lr=0.5)
    opt.step()
    np.testing.assert_array_equal(p.data, 1 - 0.5 * np.arange(48.0).reshape(6, 8)[:, ::2])


@pytest.mark.parametrize("held", ["the others", "all"])
def test_a_frozen_layer_stays_as_it_is(held):
    """p.requires_grad = False (PyTorch's idiom) was taken and did nothing:
    the layer trained on; an optimizer over the other parameters was refused
    as one built for another model; layer.trainable = False (Keras's) was
    taken and did nothing (found by a reviewer)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 20)).astype(np.float32)
    y = X[:, :3].argmax(1)
    model = sn.Sequential(sn.Dense(20, 32, seed=0), sn.ReLU(), sn.Dense(32, 3, seed=1))
    for p in model.layers[0].parameters():
        p.requires_grad = False
    frozen = [p.data.copy() for p in model.layers[0].parameters()]
    trained = model.layers[2].weight.data.copy()
    table = model.summary(print_fn=None)  # the frozen 672 are not counted as trainable
    assert "Total params: 771" in table and "Trainable params: 99" in table
    params = model.parameters() if held == "all" else model.layers[2].parameters()
    model.fit(X, y, sn.Adam(params, lr=1e-2), epochs=2, batch_size=32, verbose=0)
    for p, before in zip(model.layers[0].parameters(), frozen):
        np.testing.assert_array_equal(p.data, before)
    assert not np.array_equal(model.layers[2].weight.data, trained)
    with pytest.raises(AttributeError, match="no 'trainable' switch; to freeze one, set "
                                             "p.requires_grad = False"):
        model.layers[0].trainable = False
    with pytest.raises(TypeError, match="requires_grad must be True or False"):
        model.layers[0].weight.requires_grad = "no"


def test_a_users_optimizer_and_loss_are_taken_as_they_are():
    """A user's optimizer whose defaults have no decay failed in fit with a
    bare KeyError: 'decay'; predict_proba called a user's classification
    loss "a regression loss"; sn.Loss was not exported (a reviewer's notes)."""
    class PlainSGD(sn.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        def _update(self, p, g, state, group, lr):
            p.data -= lr * g

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = X[:, :3].argmax(1)
    model = sn.Sequential(sn.Dense(5, 3, seed=0))
    before = model.layers[0].weight.data.copy()
    model.fit(X, y, PlainSGD(model.parameters()), epochs=2, batch_size=16, verbose=0)
    assert not np.array_equal(model.layers[0].weight.data, before)

    class Smoothed(sn.Loss):  # a classification loss of the user's
        def forward(self, logits, targets):
            return sn.CrossEntropy()(logits, targets)

    assert issubclass(Smoothed, sn.Loss)
    model.loss = Smoothed()
    with pytest.raises(ValueError, match="fitted with Smoothed, not CrossEntropy or "
                                         r"BinaryCrossEntropy \(nor a subclass\)"):
        model.predict_proba(X)


def test_a_users_layer_that_adds_to_grad_starts_from_zero_each_step():
    """A user's layer written PyTorch's way (grad += ...) summed its gradients
    over every step of fit (found by a reviewer); and a loss giving
    np.float32 left np.float32 in the history, which json.dumps refuses."""
    import json

    class AddingLinear(sn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.w = sn.Parameter(np.full((n_in, n_out), 0.1, np.float32), "w")

        def parameters(self):
            return [self.w]

        def output_shape(self, shape):
            return (self.w.shape[1],)

        def forward(self, x, training=False):
            self._x = x
            return x @ self.w.data

        def backward(self, dy):
            self.w.grad += self._x.T @ dy  # PyTorch's accumulation
            return dy @ self.w.data.T

    class Float32MSE(sn.MSE):
        def forward(self, p, t):
            return np.float32(super().forward(p, t))

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    t = X @ rng.standard_normal((4, 1)).astype(np.float32)
    runs = []
    for layer in (AddingLinear(4, 1), sn.Dense(4, 1, seed=0)):
        if isinstance(layer, sn.Dense):  # the same map: weights 0.1, a bias fixed at 0
            layer.weight[...] = 0.1
            layer.bias[...] = 0.0
            layer.bias.requires_grad = False
        model = sn.Sequential(layer)
        history = model.fit(X, t, sn.SGD([layer.parameters()[0]], lr=0.05), loss=Float32MSE(),
                            epochs=3, batch_size=8, shuffle=False, verbose=0)
        json.dumps(history)
        runs.append(layer.parameters()[0].data.copy())
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_switches_must_be_booleans_and_verbose_a_level():
    """shuffle="False" shuffled, nesterov="False" used Nesterov, restore_best=
    "False" restored, verbose="0" printed progress (found by a reviewer)."""
    model = sn.Sequential(sn.Dense(3, 2, seed=0))
    X, y = np.ones((8, 3), np.float32), np.arange(8) % 2
    opt = sn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="fit: shuffle must be True or False, got 'False'"):
        model.fit(X, y, opt, verbose=0, shuffle="False")
    for verbose in ("0", 5, -1, 1.5):
        with pytest.raises(ValueError, match="fit: verbose must be 0, 1 or 2"):
            model.fit(X, y, opt, verbose=verbose)
    model.fit(X, y, opt, verbose=False)  # a bool is a level
    with pytest.raises(TypeError, match="SGD: nesterov must be True or False"):
        sn.SGD(model.parameters(), momentum=0.9, nesterov="False")
    with pytest.raises(TypeError, match="EarlyStopping: restore_best must be True or False"):
        sn.EarlyStopping(restore_best="False")


def test_float_labels_past_int64_are_named_as_given():
    """[0, 1, 1e20] was refused naming -9223372036854775808 (the wrapped cast),
    with NumPy's cast warning (found by a reviewer)."""
    model = sn.Sequential(sn.Dense(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got \[1e\+20\]"):
            model.fit(np.ones((3, 3), np.float32), np.array([0, 1, 1e20]),
                      sn.SGD(model.parameters()), verbose=0)


def test_a_seed_must_be_a_whole_number_and_says_so():
    """Dense(seed=3.0) gave NumPy's "SeedSequence expects int ...", fit(seed=-1)
    "expected non-negative integer": neither named the seed (a reviewer's note)."""
    for make in (lambda: sn.Dense(3, 2, seed=3.0), lambda: sn.Dropout(0.5, seed=-1),
                 lambda: sn.RandomFlip(seed=True)):
        with pytest.raises(ValueError, match="seed must be None or a whole number >= 0"):
            make()
    sn.Dense(3, 2, seed=np.random.default_rng(0))  # NumPy's seed forms, as before
    sn.Dense(3, 2, seed=np.random.SeedSequence(1))
    with pytest.raises(ValueError, match="seed must be None or a whole number >= 0, got 3.0"):
        sn.manual_seed(3.0)  # the same rule
    model = sn.Sequential(sn.Dense(3, 2, seed=np.int64(3)))
    with pytest.raises(ValueError, match=r"seed must be None or a whole number >= 0 \(or a NumPy "
                                         r"seed\), got -1"):
        model.fit(np.ones((4, 3), np.float32), np.arange(4) % 2, sn.SGD(model.parameters()),
                  seed=-1, verbose=0)


def test_ragged_and_one_feature_inputs_and_numpy_metadata(tmp_path):
    """Ragged lists gave NumPy's message without naming X; a 1-D X for a
    1-feature model gave no way out; save refused an np.float32 in
    model.metadata (a reviewer's notes)."""
    model = sn.Sequential(sn.Dense(2, 2))
    with pytest.raises(ValueError, match="X: cannot convert to an array: .*inhomogeneous"):
        model.predict([[1, 2], [3]])
    one = sn.Sequential(sn.Dense(1, 2))
    with pytest.raises(ValueError, match=r"got shape \(20,\); for one feature per sample, "
                                         r"X.reshape\(-1, 1\)"):
        one.fit(np.arange(20.0), np.arange(20) % 2, sn.SGD(one.parameters()), verbose=0)
    one.metadata["scale"] = np.float32(1.5)
    one.save(tmp_path / "m.npz")
    assert sn.load(tmp_path / "m.npz").metadata == {"scale": 1.5}


def test_masked_values_are_not_read_as_data():
    """np.asarray drops a masked array's mask: the values under it were
    trained on as data, silently (a reviewer's note)."""
    model = sn.Sequential(sn.Dense(2, 2))
    X = np.ma.masked_array(np.ones((4, 2), np.float32), mask=[[0, 1], [0, 0], [0, 0], [0, 0]])
    y = np.arange(4) % 2
    with pytest.raises(ValueError, match=r"X: a masked array with 1 masked value\(s\)"):
        model.fit(X, y, sn.SGD(model.parameters()), verbose=0)
    with pytest.raises(ValueError, match=r"masked array with 1 masked value"):
        model.fit(X.data, np.ma.masked_array(y, mask=[0, 0, 1, 0]), sn.SGD(model.parameters()),
                  verbose=0)
    model.fit(np.ma.masked_array(X.data), y, sn.SGD(model.parameters()), verbose=0)  # none masked


def test_evaluate_names_the_causes_of_outputs_that_are_not_finite():
    """evaluate said only "CrossEntropy logits: contains 8 non-finite
    value(s)" where predict names the causes (a reviewer's note)."""
    model = sn.Sequential(sn.Dense(3, 8, seed=0), sn.ReLU(), sn.Dense(8, 2, seed=1))
    X = np.full((4, 3), 3e38, np.float32)  # finite, and too large for the model
    with pytest.raises(ValueError, match="evaluate: the model's outputs contain NaN or inf: .* "
                                         "or these inputs are too large for it"):
        model.evaluate(X, np.arange(4) % 2)


def test_what_todays_checks_must_still_take(tmp_path):
    """A review of the day's changes found these refused or broken (each
    worked before): a Parameter pickled before grad became a property; the
    float targets of a model with a user's layer that keeps the default
    output_shape; an np.float32 in model.metadata at export_onnx; a user's
    layer with an attribute named trainable. And refused as they should be:
    grad = None (it became NaN), verbose=1.5."""
    import copy
    p = sn.Parameter(np.ones((2, 3), np.float32), "w")
    old_state = {k: v for k, v in p.__dict__.items() if k != "_grad"}
    old_state["grad"] = np.full((2, 3), 0.5, np.float32)  # as pickles of before had it
    q = sn.Parameter.__new__(sn.Parameter)
    q.__setstate__(copy.deepcopy(old_state))
    np.testing.assert_array_equal(q.grad, 0.5)

    class MyLinear(sn.Module):  # no output_shape: the default says "as it came"
        def __init__(self, n_in, n_out):
            super().__init__()
            self.w = sn.Parameter(np.full((n_in, n_out), 0.1, np.float32), "w")
            self.trainable = True  # a name of its own

        def parameters(self):
            return [self.w]

        def forward(self, x, training=False):
            self._x = x
            return x @ self.w.data

        def backward(self, dy):
            self.w.grad = self._x.T @ dy
            return dy @ self.w.data.T

    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 4)).astype(np.float32)
    model = sn.Sequential(MyLinear(4, 2))
    model.fit(X, X[:, :2], sn.SGD(model.parameters(), lr=0.01), loss=sn.MSE(), epochs=1,
              verbose=0)
    with pytest.raises(ValueError, match=r"assigned grad of shape None, expected the data's "
                                         r"\(2, 3\)"):
        p.grad = None
    with pytest.raises(ValueError, match=r"assigned grad of shape \(\), expected"):
        p.grad = 0.0
    with pytest.raises(ValueError, match="fit: verbose must be 0, 1 or 2"):
        model.fit(X, X[:, :2], sn.SGD(model.parameters()), loss=sn.MSE(), verbose=1.5)
    pytest.importorskip("onnx")
    dense = sn.Sequential(sn.Dense(4, 2, seed=0))
    dense.metadata["test_accuracy"] = np.float32(0.97)  # save takes it: so must export
    dense.export_onnx(tmp_path / "m.onnx")
    assert sn.import_onnx(tmp_path / "m.onnx").metadata == {"test_accuracy": 0.9700000286102295}
