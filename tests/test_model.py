"""The Python API: Sequential's fit / evaluate / predict / save / load, seeds,
and the clear errors promised for bad input."""
import os
import numpy as np
import pytest

import scratchnet as sn

# every test here runs on both paths: the fused C network and layer by layer
pytestmark = pytest.mark.usefixtures("training_path")


def blobs(n=600, features=8, classes=3, seed=0):
    """Separable Gaussian clusters: a task a small MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 3
    y = rng.integers(0, classes, n)
    X = centers[y] + rng.standard_normal((n, features))
    return X.astype(np.float32), y


def small_model(seed=0, dropout=0.0):
    layers = [sn.Dense(8, 16, seed=seed), sn.ReLU()]
    if dropout:
        layers.append(sn.Dropout(dropout))
    return sn.Sequential(*layers, sn.Dense(16, 3, seed=seed + 1))


def test_fit_learns_and_history_has_per_epoch_lists():
    X, y = blobs()
    model = small_model()
    history = model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=1e-2), epochs=4,
                        batch_size=32, validation=(X[:100], y[:100]), seed=0, verbose=0)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"):
        assert len(history[key]) == 4, key
    assert history["loss"][-1] < history["loss"][0]
    result = model.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] > 0.95
    assert model.predict(X).dtype == np.int64
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(X))


def test_the_manual_loop_from_the_readme():
    X, y = blobs()
    model = small_model()
    loss_fn, opt = sn.CrossEntropy(), sn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = None
    for epoch in range(3):
        for start in range(0, len(X), 50):
            xb, yb = X[start:start + 50], y[start:start + 50]
            logits = model.forward(xb, training=True)
            loss = loss_fn.forward(logits, yb)
            assert isinstance(loss, float)
            model.backward(loss_fn.backward())
            opt.step()
            first = loss if first is None else first
    assert loss < first / 4


def test_seeded_training_is_reproducible():
    X, y = blobs()
    runs = []
    for _ in range(2):
        sn.manual_seed(123)
        model = sn.Sequential(sn.Dense(8, 16), sn.ReLU(), sn.Dropout(0.2), sn.Dense(16, 3))
        model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=2, batch_size=16,
                  seed=5, verbose=0)
        runs.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    # and a different fit seed shuffles differently
    sn.manual_seed(123)
    model = sn.Sequential(sn.Dense(8, 16), sn.ReLU(), sn.Dropout(0.2), sn.Dense(16, 3))
    model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=2, batch_size=16, seed=6,
              verbose=0)
    assert not np.array_equal(model.parameters()[0].data, runs[0][0])


def test_manual_seed_makes_a_fit_without_seed_reproducible():
    """fit(seed=None) shuffles and draws dropout from the default stream, so
    sn.manual_seed(n) before it gives the same weights run after run (as
    torch.manual_seed does); it drew from the OS's entropy, and two runs
    after the same manual_seed differed. Another manual_seed, another run."""
    X, y = blobs()

    def run(seed):
        sn.manual_seed(seed)
        model = sn.Sequential(sn.Dense(8, 16), sn.ReLU(), sn.Dropout(0.2), sn.Dense(16, 3))
        model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), epochs=2,
                  batch_size=16, verbose=0)
        return [p.data.copy() for p in model.parameters()]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_dense_seed_and_initialisation():
    a, b = sn.Dense(300, 200, seed=1), sn.Dense(300, 200, seed=1)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert a.weight.data.shape == (300, 200) and a.bias.data.shape == (200,)
    assert a.weight.data.dtype == np.float32 and not a.bias.data.any()
    # He: N(0, 2 / fan_in)
    assert a.weight.data.std() == pytest.approx(np.sqrt(2 / 300), rel=0.05)
    # Xavier: U(-l, l), l = sqrt(6 / (fan_in + fan_out))
    x = sn.Dense(300, 200, init="xavier", seed=1).weight.data
    limit = np.sqrt(6 / 500)
    assert np.abs(x).max() <= limit and np.abs(x).max() > 0.95 * limit
    assert x.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


def test_parameters_are_named_buffers():
    model = small_model()
    names = [p.name for p in model.parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for p in model.parameters():
        assert p.data.dtype == np.float32 and p.grad.shape == p.data.shape


def test_save_load_gives_identical_predictions(tmp_path):
    X, y = blobs()
    model = sn.Sequential(sn.Dense(8, 16, init="xavier", seed=0), sn.LeakyReLU(0.05),
                          sn.Dropout(0.1), sn.Dense(16, 12, seed=1), sn.Tanh(),
                          sn.Dense(12, 3, seed=2), sn.Sigmoid())
    model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=1, seed=0, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = sn.load(path)
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_load_refuses_damaged_or_foreign_files(tmp_path):
    model = small_model()
    good = tmp_path / "good.npz"
    model.save(good)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(sn.ModelFileError, match="garbage.npz"):
        sn.load(garbage)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(sn.ModelFileError):
        sn.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(sn.ModelFileError, match="architecture"):
        sn.load(foreign)
    # right architecture, wrong shape
    arrays = dict(np.load(good))
    arrays["0.weight"] = np.zeros((8, 15), np.float32)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    with pytest.raises(sn.ModelFileError, match="0.weight"):
        sn.load(wrong)
    # a pickled object array is refused, never unpickled
    arrays = dict(np.load(good))
    arrays["0.bias"] = np.array([object()] * 16, dtype=object)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **arrays)
    with pytest.raises(sn.ModelFileError):
        sn.load(pickled)
    with pytest.raises(FileNotFoundError):
        sn.load(tmp_path / "missing.npz")


def test_inputs_of_other_dtypes_and_layouts_are_converted():
    X, y = blobs()
    model = small_model()
    expected = model.predict_proba(X)
    np.testing.assert_allclose(model.predict_proba(X.astype(np.float64)), expected, rtol=1e-6)
    fortran = np.asfortranarray(X)
    np.testing.assert_array_equal(model.predict_proba(fortran), expected)
    strided = np.repeat(X, 2, axis=1)[:, ::2]
    np.testing.assert_array_equal(model.predict_proba(strided), expected)
    model.fit(X.astype(np.float64), y.astype(np.int32), optimizer=sn.SGD(model.parameters(), lr=0.01),
              verbose=0)
    model.fit(X, y.astype(np.float64), optimizer=sn.SGD(model.parameters(), lr=0.01), verbose=0)
    assert model.predict(X[0]).shape == (1,)  # one sample without a batch axis


@pytest.mark.parametrize("bad_X, match", [
    (np.zeros((10, 7), np.float32), "expected 8 features"),
    (np.zeros((0, 8), np.float32), "empty batch"),
    (np.zeros((2, 2, 2), np.float32), "2-D"),
    (np.full((10, 8), np.nan, np.float32), "non-finite"),
    (np.array([[1.0] * 8] * 9 + [[np.inf] * 8], np.float32), "non-finite"),
])
def test_bad_inputs_raise_clear_errors(bad_X, match):
    model = small_model()
    with pytest.raises(ValueError, match=match):
        model.predict(bad_X)
    with pytest.raises(ValueError, match=match):
        model.fit(bad_X, np.zeros(len(bad_X), np.int64),
                  optimizer=sn.SGD(model.parameters(), lr=0.1), verbose=0)


def test_bad_labels_and_options():
    X, y = blobs(n=50)
    model = small_model()
    opt = sn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.fit(X, np.full(50, 3), optimizer=opt, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.fit(X, np.full(50, -1), optimizer=opt, verbose=0)
    with pytest.raises(ValueError, match="whole numbers"):
        model.fit(X, np.full(50, 0.5), optimizer=opt, verbose=0)
    with pytest.raises(ValueError, match="49 labels for 50"):
        sn.CrossEntropy().forward(np.zeros((50, 3), np.float32), np.zeros(49, np.int64))
    with pytest.raises(ValueError, match="samples but targets"):
        model.fit(X, y[:-1], optimizer=opt, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, y, optimizer=opt, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs"):
        model.fit(X, y, optimizer=opt, epochs=-1, verbose=0)
    with pytest.raises(TypeError, match="optimizer"):
        model.fit(X, y, optimizer="adam", verbose=0)
    with pytest.raises(ValueError, match="unknown init"):
        sn.Dense(3, 4, init="orthogonal")
    with pytest.raises(ValueError, match="in_features"):
        sn.Dense(0, 4)
    with pytest.raises(ValueError, match="p must be"):
        sn.Dropout(1.0)
    with pytest.raises(ValueError, match="takes 5 features"):
        sn.Sequential(sn.Dense(3, 4), sn.ReLU(), sn.Dense(5, 2))
    with pytest.raises(TypeError, match="takes layers"):
        sn.Sequential(sn.Dense(3, 4), "relu")
    with pytest.raises(RuntimeError, match="before forward"):
        sn.Dense(3, 4).backward(np.zeros((1, 4), np.float32))


def test_divergence_is_reported_not_silently_continued():
    X, y = blobs(n=64)
    model = small_model()
    opt = sn.SGD(model.parameters(), lr=1e30)
    with pytest.raises((FloatingPointError, ValueError), match="finite"):
        model.fit(X * 1e3, y, optimizer=opt, epochs=5, verbose=0)


def test_bce_and_mse_training():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)).astype(np.float32)
    t = (X[:, :1] + X[:, 1:2] > 0).astype(np.float32)
    model = sn.Sequential(sn.Dense(4, 8, seed=0), sn.Tanh(), sn.Dense(8, 1, seed=1))
    model.fit(X, t, optimizer=sn.Adam(model.parameters(), lr=1e-2), loss=sn.BinaryCrossEntropy(),
              epochs=20, verbose=0, seed=0)
    result = model.evaluate(X, t, loss=sn.BinaryCrossEntropy())
    assert result["accuracy"] > 0.95
    w = rng.standard_normal((4, 2)).astype(np.float32)
    target = X @ w
    reg = sn.Sequential(sn.Dense(4, 2, seed=0))
    reg.fit(X, target, optimizer=sn.Adam(reg.parameters(), lr=5e-2), loss=sn.MSE(),
            epochs=30, verbose=0, seed=0)
    assert reg.evaluate(X, target, loss=sn.MSE())["loss"] < 1e-3
    np.testing.assert_allclose(reg.layers[0].weight.data, w, atol=0.02)


def test_verbose_shows_progress_and_zero_is_silent(capsys):
    X, y = blobs(n=200)
    model = small_model()
    model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=2, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=2, verbose=1)
    captured = capsys.readouterr()
    assert "epoch 2/2" in captured.err and "loss" in captured.err


def test_threads_setting():
    old = sn.get_num_threads()
    try:
        sn.set_num_threads(1)
        assert sn.get_num_threads() == 1
        with pytest.raises(ValueError):
            sn.set_num_threads(0)
        for bad in (2.0, True, "2"):  # 2.0 and True were taken as 2 and 1
            with pytest.raises(TypeError, match="the number of threads must be an int"):
                sn.set_num_threads(bad)
        assert sn.get_num_threads() == 1
        sn.set_num_threads(np.int64(2))
        assert sn.get_num_threads() == 2
    finally:
        sn.set_num_threads(old)
    info = sn.info()
    assert info["isa"] in info["isa_supported"] and info["threads"] >= 1


def test_metadata_is_saved_and_a_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    model = small_model()
    model.metadata = {"dataset": "blobs", "note": [1, 2]}
    model.save(tmp_path / "m.npz")
    assert sn.load(tmp_path / "m.npz").metadata == {"dataset": "blobs", "note": [1, 2]}
    model.metadata["bad"] = object()
    with pytest.raises(TypeError, match="metadata"):
        model.save(tmp_path / "bad.npz")
    del model.metadata["bad"]

    def disk_full(path, **arrays):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        model.save(tmp_path / "full.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_fit_on_fewer_rows_than_one_batch():
    X, y = blobs(n=5)
    for model in (small_model(), small_model(dropout=0.5)):  # the C trainer, and with dropout
        history = model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), epochs=2,
                            batch_size=32, verbose=0)
        assert len(history["loss"]) == 2


def test_backward_after_an_inference_forward_warns_once_where_layers_train_differently():
    """model(x) runs in inference mode (training=False, as Keras's call): a
    PyTorch loop ported as it is trained with BatchNorm on its running
    statistics and Dropout off, and nothing said so. A warning, once per
    model (gradients of an inference forward are right for saliency)."""
    import warnings
    X = np.random.default_rng(0).random((16, 4)).astype(np.float32)
    y = np.arange(16) % 2
    loss = sn.CrossEntropy()
    model = sn.Sequential(sn.Dense(4, 3), sn.BatchNorm1d(3), sn.ReLU(), sn.Dropout(0.5),
                          sn.Dense(3, 2))
    with pytest.warns(RuntimeWarning, match=r"training=False.*BatchNorm1d, Dropout.*"
                                            r"training=True") as seen:
        for _ in range(3):
            loss.forward(model(X), y)
            model.backward(loss.backward())
    assert len([w for w in seen if "training=False" in str(w.message)]) == 1
    quiet = [sn.Sequential(sn.Dense(4, 3), sn.BatchNorm1d(3), sn.Dense(3, 2)),
             sn.Sequential(sn.Dense(4, 3), sn.Dropout(0.0), sn.Dense(3, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss.forward(quiet[0].forward(X, training=True), y)
        quiet[0].backward(loss.backward())
        loss.forward(quiet[1](X), y)  # a Dropout of p = 0 trains no differently
        quiet[1].backward(loss.backward())


def test_save_refuses_metadata_load_would_refuse_and_keeps_files_as_they_were(tmp_path,
                                                                              monkeypatch):
    """model.metadata = "run 7" (or a list, or int keys) was saved, and sn.load
    then refused the file; a replaced file lost its permissions (a private
    model became world-readable) and a symlink was replaced by a file; a
    failed write was named by its temporary file."""
    import stat
    model = small_model()
    for bad in ("run 7", ["x"], 5, {1: "x"}):
        model.metadata = bad
        with pytest.raises(TypeError, match="metadata must be a dict with str keys"):
            model.save(tmp_path / "md.npz")
    assert not (tmp_path / "md.npz").exists()
    model.metadata = {}
    real, link = tmp_path / "real.npz", tmp_path / "latest.npz"
    model.save(real)
    os.chmod(real, 0o600)
    os.symlink(real, link)
    other = sn.Sequential(sn.Dense(8, 2))
    other.save(link)
    assert os.path.islink(link) and sn.load(real).layers[0].weight.shape == (8, 2)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    with pytest.raises(ValueError, match="empty path"):
        model.save("")

    def disk_full(path, **arrays):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError) as failed:
        model.save(real)
    assert failed.value.filename == os.fspath(real) and failed.value.errno == 28


def test_initial_weights_are_drawn_in_pieces_and_load_draws_none(tmp_path, monkeypatch):
    """A layer's weights were drawn whole in float64 (twice the float32
    layer's memory), and sn.load drew a whole model's only to overwrite them
    (7x the save's time), moving the default random stream. The weights are
    the same values drawn a piece at a time; load draws no weights (random
    layers, absent here, still draw their seeds)."""
    from scratchnet import _random, layers
    monkeypatch.setattr(layers, "_DRAW_PIECE", 7)  # many pieces, one ragged
    he = sn.Dense(9, 5, seed=11).weight.data
    want = (_random.generator(11).standard_normal((9, 5)) * np.sqrt(2.0 / 9)).astype(np.float32)
    np.testing.assert_array_equal(he, want)
    xavier = sn.Conv2D(2, 3, 3, init="xavier", seed=12).weight.data
    a = np.sqrt(6.0 / (2 * 9 + 3 * 9))
    np.testing.assert_array_equal(
        xavier, _random.generator(12).uniform(-a, a, (3, 2, 3, 3)).astype(np.float32))

    model = sn.Sequential(sn.Dense(6, 4), sn.ReLU(), sn.Dense(4, 3))
    model.save(tmp_path / "m.npz")
    sn.manual_seed(5)
    wanted = sn.Dense(3, 2).weight.data.copy()
    sn.manual_seed(5)
    loaded = sn.load(tmp_path / "m.npz")
    assert np.array_equal(sn.Dense(3, 2).weight.data, wanted)  # the stream did not move
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], array, err_msg=name)


def test_saving_over_a_read_only_file_works_as_for_a_user(tmp_path, monkeypatch):
    """The writer gave the temporary file the target's mode (0444), then
    reopened it for writing to sync it: refused for any user but root. Root
    ignores modes, so the check a user meets is made here by hand."""
    import builtins
    import stat
    path = tmp_path / "ro.npz"
    small_model().save(path)
    os.chmod(path, 0o444)
    real_open = builtins.open

    def as_a_user(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wa+") and os.path.exists(file) and \
                not os.stat(file).st_mode & stat.S_IWUSR:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", as_a_user)
    other = sn.Sequential(sn.Dense(8, 2))
    other.save(path)
    monkeypatch.undo()
    assert sn.load(path).layers[0].weight.shape == (8, 2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444


def test_backward_after_a_predict_on_the_layers_is_refused():
    """predict / evaluate on a model that runs layer by layer (here a user's
    layer) reuse the layers' buffers: a predict between a user's forward and
    backward made the gradients those of predict's batch, silently. Refused
    now; forward, backward, then predict is fine."""

    class Double(sn.Module):
        def forward(self, x, training=False):
            return x * 2

        def backward(self, dy):
            return dy * 2

    model = sn.Sequential(sn.Dense(4, 3, seed=1), Double(), sn.ReLU(), sn.Dense(3, 2, seed=2))
    loss = sn.CrossEntropy()
    X = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    y = np.arange(8) % 2
    loss.forward(model.forward(X, training=True), y)
    model.predict(X[::-1].copy())
    with pytest.raises(RuntimeError, match="backward after predict"):
        model.backward(loss.backward())
    loss.forward(model.forward(X, training=True), y)
    model.backward(loss.backward())
    model.predict(X)


def test_backward_after_a_failed_forward_says_so_and_predict_uses_a_subclass_forward():
    """A forward pass that raised left the model marked as predict's (the
    message blamed predict); predict on the layer path ran the layers, not a
    subclass's own forward (model(x) and predict disagreed). Both reviews of
    this day's changes."""

    class Double(sn.Module):
        def forward(self, x, training=False):
            return x * 2

        def backward(self, dy):
            return dy * 2

    class Scaled(sn.Sequential):
        def forward(self, x, training=False):
            return super().forward(x, training) * 10

    X = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    model = Scaled(sn.Dense(4, 3, seed=1), Double(), sn.Dense(3, 2, seed=2))
    np.testing.assert_array_equal(model.predict_logits(X), model(X))
    loss = sn.CrossEntropy()
    loss.forward(model.forward(X, training=True), np.arange(6) % 2)
    with pytest.raises(ValueError):
        model.forward(np.zeros((6, 7), np.float32), training=True)
    with pytest.raises(RuntimeError, match="after a forward pass that raised"):
        model.backward(loss.backward())


def test_a_layer_object_used_twice_is_refused_for_training():
    """A layer keeps its forward pass's values for backward: one object in two
    places trained on the wrong ones (a shared ReLU through the layer-by-layer
    path, a Dense used twice anywhere) with no error. Refused where the layers
    are set, and where the list changed in place since, by a training forward
    and by fit; inference through such a list stays allowed (it is right)."""
    act, dense = sn.ReLU(), sn.Dense(4, 4)
    with pytest.raises(ValueError, match=r"Sequential: layers 1 and 3 are the same ReLU object"):
        sn.Sequential(sn.Dense(4, 16), act, sn.Dense(16, 16), act, sn.Dense(16, 3))
    with pytest.raises(ValueError, match=r"layers 0 and 2 are the same Dense object.*tie weights"):
        sn.Sequential(dense, sn.Tanh(), dense)
    model = sn.Sequential(sn.Dense(4, 16), act, sn.Dense(16, 3))
    with pytest.raises(ValueError, match=r"layers 1 and 2 are the same ReLU"):
        model.layers = [model.layers[0], act, act, sn.Dense(16, 3)]
    model.layers[2:2] = [sn.Dense(16, 16), act]  # in place: Dense, ReLU, Dense, ReLU, Dense
    X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    y = np.arange(32) % 3
    with pytest.raises(ValueError, match=r"forward: layers 1 and 3 are the same ReLU"):
        model.forward(X, training=True)
    with pytest.raises(ValueError, match=r"fit: layers 1 and 3 are the same ReLU"):
        model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0)
    assert model.predict(X).shape == (32,)
    model.layers[3] = sn.ReLU()  # one object each: trains
    model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0)
