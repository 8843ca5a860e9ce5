"""scratchnet.plot: every figure rendered to a PNG in a temporary folder with
matplotlib's Agg backend, the file and its pixel size checked, and the numbers
behind it checked against ones computed here, from the figure's own artists
(lines, images, texts) as well as from fig.data."""
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import plot

# matplotlib, onnxruntime, scikit-learn: C++ extensions throwing exceptions,
# which a preloaded libasan cannot intercept (ASan CHECK failure in __cxa_throw)
pytestmark = pytest.mark.sanitizer_skip("C++ extensions of other packages")

matplotlib = pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
matplotlib.use("Agg")


def check_png(fig, path):
    """The file is a PNG of the figure's size in pixels."""
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        size = picture.size
    width, height = fig.get_size_inches() * plot.DPI
    assert size == (round(width), round(height))
    assert 250 <= size[0] <= 2000 and 250 <= size[1] <= 2000
    return size


@pytest.fixture(scope="module")
def trained(mnist):
    """A small MLP after one epoch on 3000 images (it still makes mistakes),
    its history (with validation) and 600 test images."""
    (X, y), (Xt, yt) = mnist
    sn.manual_seed(0)
    model = sn.Sequential(sn.Dense(784, 32), sn.ReLU(), sn.Dropout(0.1), sn.Dense(32, 10))
    history = model.fit(X[:3000], y[:3000], optimizer=sn.Adam(model.parameters()), epochs=3,
                        validation=(Xt[:500], yt[:500]), seed=0, verbose=0,
                        scheduler=None)
    return model, history, Xt[:600], yt[:600]


def test_training_curves_hold_the_history(tmp_path, trained):
    _, history, _, _ = trained
    path = tmp_path / "curves.png"
    fig = plot.training_curves(history, path)
    check_png(fig, path)
    ax_loss, ax_acc, ax_lr = fig.axes
    epochs = [1, 2, 3]
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"training", "validation"}
        for label, name in (("training", key), ("validation", f"val_{key}")):
            np.testing.assert_array_equal(lines[label].get_xdata(), epochs)
            np.testing.assert_array_equal(lines[label].get_ydata(), history[name])
            np.testing.assert_array_equal(fig.data[name], history[name])
    [lr] = ax_lr.lines
    np.testing.assert_array_equal(lr.get_ydata(), history["lr"])


def test_training_curves_without_validation_or_accuracy(tmp_path):
    """A regression's history (no accuracy) without validation: what is there is drawn."""
    history = {"loss": [3.0, 2.0, 1.5, 1.0], "accuracy": [None] * 4,
               "lr": [0.1, 0.05, 0.025, 0.0125], "time": [0.5] * 4}
    fig = plot.training_curves(history, tmp_path / "c.png", val_label="test")
    check_png(fig, tmp_path / "c.png")
    ax_loss, ax_acc, ax_lr = fig.axes
    [line] = ax_loss.lines
    assert line.get_label() == "training"
    np.testing.assert_array_equal(line.get_ydata(), history["loss"])
    assert not ax_acc.lines and "no accuracy" in ax_acc.texts[0].get_text()
    np.testing.assert_array_equal(ax_lr.lines[0].get_ydata(), history["lr"])
    assert set(fig.data) == {"epoch", "loss", "lr"}
    assert plot.training_curves(history, path=None).data["epoch"].tolist() == [1, 2, 3, 4]


def independent_confusion(y_true, y_pred, n):
    counts = [[0] * n for _ in range(n)]
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        counts[t][p] += 1
    return np.array(counts)


def test_confusion_matrix_counts(tmp_path, trained):
    model, _, Xt, yt = trained
    path = tmp_path / "cm.png"
    fig = plot.confusion_matrix(model, Xt, yt, path=path)
    check_png(fig, path)
    expected = independent_confusion(yt, model.predict(Xt), 10)
    assert expected.trace() < len(yt)  # there are mistakes to place
    np.testing.assert_array_equal(fig.data["counts"], expected)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)  # what is drawn
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
             for t in ax.texts}
    assert cells == {(i, j): c for (i, j), c in np.ndenumerate(expected) if c}
    per_class = expected.diagonal() / expected.sum(axis=1)
    np.testing.assert_allclose(fig.data["per_class_accuracy"], per_class)
    shown = [label.get_text() for label in ax.child_axes[0].get_yticklabels()]
    assert shown == [f"{100 * a:.1f}%" for a in per_class]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(d) for d in range(10)]
    assert fig.data["accuracy"] == pytest.approx(model.evaluate(Xt, yt)["accuracy"])


def test_confusion_matrix_counts_the_classes_of_a_model_without_dense_layers():
    """The classes are the model's outputs for the inputs given: a
    convolution's 5 channels averaged, not the 10 assumed without a Dense
    layer (a 10 x 10 table with 5 empty rows, and labels 5-9 accepted)."""
    sn.manual_seed(1)
    model = sn.Sequential(sn.Conv2D(1, 5, 3), sn.GlobalAvgPool2D())
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 40)
    fig = plot.confusion_matrix(model, X, y, path=None)
    assert fig.data["counts"].shape == (5, 5)
    np.testing.assert_array_equal(fig.data["counts"],
                                  independent_confusion(y, model.predict(X), 5))
    for method in (plot.confusion_matrix, plot.mistakes):
        with pytest.raises(ValueError, match=r"y: labels must be in \[0, 5\)"):
            method(model, X, np.where(y == 0, 7, y), path=None)


def test_class_names_need_a_count_from_a_model_without_dense_layers():
    """Without inputs, a convolution's classes are unknown (they depend on the
    input shape): class_names_for asks for n_classes instead of naming 10."""
    model = sn.Sequential(sn.Conv2D(1, 5, 3), sn.GlobalAvgPool2D())
    with pytest.raises(ValueError, match="no Dense layer.*pass n_classes"):
        plot.class_names_for(model)
    assert plot.class_names_for(model, 5) == ["0", "1", "2", "3", "4"]
    assert plot.class_names_for(sn.Sequential(sn.Dense(4, 3))) == ["0", "1", "2"]
    model.metadata["dataset"] = "mnist"
    assert plot.class_names_for(model) == [str(d) for d in range(10)]


def test_confusion_matrix_names_fashion_classes(tmp_path, trained):
    model, _, Xt, yt = trained
    model.metadata["dataset"] = "fashion-mnist"  # as `scratchnet train` records it
    try:
        fig = plot.confusion_matrix(model, Xt, yt, path=None)
    finally:
        del model.metadata["dataset"]
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert names == list(sn.datasets.FASHION_MNIST_CLASSES)
    assert names[0] == "T-shirt/top" and names[-1] == "Ankle boot"
    given = plot.confusion_matrix(model, Xt, yt, class_names="abcdefghij", path=None)
    assert [t.get_text() for t in given.axes[0].get_yticklabels()] == list("abcdefghij")


def test_confusion_matrix_and_mistakes_check_the_labels(trained):
    """Labels are checked as evaluate checks them: negative ones had wrapped
    round (NumPy's indexing) into a plausible matrix, and ones past the
    model's classes grew it; a model fitted for values has no classes."""
    model, _, Xt, yt = trained
    X, y = Xt[:50], yt[:50]
    for method in (plot.confusion_matrix, plot.mistakes):
        with pytest.raises(ValueError, match=r"y: labels must be in \[0, 10\)"):
            method(model, X, -y - 1, path=None)
        with pytest.raises(ValueError, match=r"y: labels must be in \[0, 10\)"):
            method(model, X, y + 10, path=None)
        with pytest.raises(ValueError, match="labels for 50 samples"):
            method(model, X, y[:-1], path=None)
    regression = sn.Sequential(sn.Dense(784, 2))
    regression.loss = sn.MSE()
    with pytest.raises(ValueError, match="needs a classifier.*fitted with MSE"):
        plot.confusion_matrix(regression, X, y % 2, path=None)
    binary = sn.Sequential(sn.Dense(784, 1))
    binary.loss = sn.BinaryCrossEntropy()
    fig = plot.confusion_matrix(binary, X, y % 2, path=None)
    assert fig.data["counts"].shape == (2, 2) and fig.data["counts"].sum() == 50


def tile(mosaic, corner, shape):
    top, left = corner
    return mosaic[top:top + shape[0], left:left + shape[1]]


def test_mistakes_shows_only_misclassified_images(tmp_path, trained):
    model, _, Xt, yt = trained
    path = tmp_path / "mistakes.png"
    fig = plot.mistakes(model, Xt, yt, path=path, limit=20)
    check_png(fig, path)
    predicted, proba = model.predict(Xt), model.predict_proba(Xt)
    wrong = np.flatnonzero(predicted != yt)
    shown = fig.data["indices"]
    assert len(shown) == min(20, len(wrong)) and fig.data["count"] == len(wrong)
    assert set(shown) <= set(wrong)
    np.testing.assert_array_equal(fig.data["true"], yt[shown])
    np.testing.assert_array_equal(fig.data["predicted"], predicted[shown])
    assert (fig.data["predicted"] != fig.data["true"]).all()
    confidence = proba[shown, predicted[shown]]
    np.testing.assert_allclose(fig.data["probability"], confidence)
    assert (np.diff(confidence) <= 0).all()  # the most confident first ...
    assert confidence[-1] >= np.sort(proba[wrong, predicted[wrong]])[-len(shown)]  # ... of all
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    titles = [t.get_text() for t in fig.axes[0].texts]
    for k, index in enumerate(shown):  # each picture drawn is its image
        np.testing.assert_array_equal(tile(mosaic, fig.data["corners"][k], (28, 28)),
                                      Xt[index].reshape(28, 28))
        assert titles[k] == (f"true {yt[index]}\npred {predicted[index]} "
                             f"{100 * proba[index, predicted[index]]:.0f}%")


def test_mistakes_when_there_are_none(tmp_path, trained):
    model, _, Xt, _ = trained
    fig = plot.mistakes(model, Xt[:50], model.predict(Xt[:50]), path=tmp_path / "none.png")
    check_png(fig, tmp_path / "none.png")
    assert fig.data["count"] == 0 and len(fig.data["indices"]) == 0
    assert "no mistakes" in [t.get_text() for t in fig.axes[0].texts]


def test_weights_of_the_first_dense_layer(tmp_path, trained):
    model, _, _, _ = trained
    path = tmp_path / "weights.png"
    fig = plot.weights(model, path=path)
    check_png(fig, path)
    W = model[0].weight.numpy()  # (784, 32)
    assert fig.data["layer"] == 0 and fig.data["images"].shape == (32, 28, 28)
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    for unit in range(32):
        picture = W[:, unit].reshape(28, 28)
        np.testing.assert_array_equal(fig.data["images"][unit], picture)
        np.testing.assert_allclose(tile(mosaic, fig.data["corners"][unit], (28, 28)),
                                   picture / np.abs(picture).max(), rtol=1e-6)
    assert len(plot.weights(model, path=None, limit=8).data["images"]) == 8


def test_weights_of_a_cnn_are_its_first_filters(tmp_path):
    sn.manual_seed(1)
    model = sn.Sequential(sn.Conv2D(1, 6, 5), sn.ReLU(), sn.Conv2D(6, 4, 3), sn.Flatten(),
                          sn.Dense(4 * 22 * 22, 10))
    fig = plot.weights(model, path=tmp_path / "filters.png")
    check_png(fig, tmp_path / "filters.png")
    np.testing.assert_array_equal(fig.data["images"], model[0].weight.numpy()[:, 0])
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    first = model[0].weight.numpy()[0, 0]
    np.testing.assert_allclose(tile(mosaic, fig.data["corners"][0], (5, 5)),
                               first / np.abs(first).max(), rtol=1e-6)


def test_activations_of_each_layer(tmp_path, trained):
    model, _, Xt, _ = trained
    path = tmp_path / "act.png"
    fig = plot.activations(model, Xt[0].reshape(28, 28), path=path)
    check_png(fig, path)
    outputs = fig.data["outputs"]
    assert len(outputs) == len(model) and fig.data["shown"] == [0, 1, 3]  # not Dropout
    np.testing.assert_allclose(outputs[-1], model.predict_logits(Xt[:1]), rtol=1e-5, atol=1e-6)
    W, b = model[0].weight.numpy(), model[0].bias.numpy()
    np.testing.assert_allclose(outputs[0], Xt[:1] @ W + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(outputs[1], np.maximum(outputs[0], 0))
    axes = fig.axes
    np.testing.assert_array_equal(axes[0].images[0].get_array(), Xt[0].reshape(28, 28))
    cells = np.asarray(axes[2].images[0].get_array()).ravel()  # the ReLU row
    np.testing.assert_array_equal(cells[:32], outputs[1].ravel())
    bars = [patch.get_height() for patch in axes[3].patches]  # the logits
    np.testing.assert_allclose(bars, outputs[3].ravel(), rtol=1e-6)


def test_activations_of_a_cnn_are_feature_maps(tmp_path):
    sn.manual_seed(2)
    model = sn.Sequential(sn.Conv2D(1, 4, 3), sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                          sn.Dense(4 * 13 * 13, 10))
    x = np.random.default_rng(0).random(784, dtype=np.float32)
    fig = plot.activations(model, x, path=tmp_path / "maps.png")
    check_png(fig, tmp_path / "maps.png")
    outputs = fig.data["outputs"]
    assert outputs[0].shape == (1, 4, 26, 26) and outputs[2].shape == (1, 4, 13, 13)
    np.testing.assert_allclose(outputs[-1], model.predict_logits(x.reshape(1, 1, 28, 28)),
                               rtol=1e-5, atol=1e-6)
    maps = [np.asarray(ax.images[0].get_array()) for ax in fig.axes[1:5]]  # the Conv2D row
    for channel, drawn in enumerate(maps):
        np.testing.assert_array_equal(drawn, outputs[0][0, channel])


def test_plots_check_their_arguments_and_honour_the_file_format(tmp_path, trained):
    """Found by a reviewer: a .pdf or .jpg path got a PNG under that name;
    mistakes took too few class names (IndexError), limit=-1 (a slice: all
    but one) and columns=0; training_curves(None or {}) and activations of
    two samples failed with messages about something else."""
    model, history, Xt, yt = trained
    plot.training_curves(history, tmp_path / "c.pdf")
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    plot.training_curves(history, tmp_path / "c.svg")
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]
    with pytest.raises(ValueError, match=r"c.xyz: a plot is written as one of .*\.pdf.*not \.xyz"):
        plot.training_curves(history, tmp_path / "c.xyz")
    for bad, message in [(None, "history must be the dict fit returns"),
                         ({}, "history must be the dict fit returns"),
                         ([0.5, 0.4], "history must be the dict fit returns")]:
        with pytest.raises(TypeError, match=message):
            plot.training_curves(bad, path=None)
    for kwargs, message in [(dict(class_names=["a", "b"]), "2 class names for 10 classes"),
                            (dict(limit=-1), "limit must be a positive integer"),
                            (dict(limit=0), "limit must be a positive integer"),
                            (dict(columns=0), "columns must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            plot.mistakes(model, Xt[:50], yt[:50], path=None, **kwargs)
    with pytest.raises(ValueError, match=r"x must be one sample, got 2 of them"):
        plot.activations(model, Xt[:2], path=None)
    plot.activations(model, Xt[0].reshape(28, 28), path=None)  # one image, as before


def test_model_input_takes_rows_or_images():
    mlp = sn.Sequential(sn.Dense(784, 10))
    cnn = sn.Sequential(sn.Conv2D(1, 2, 3), sn.Flatten(), sn.Dense(2 * 26 * 26, 10))
    rows = np.zeros((3, 784), np.float32)
    for X in (rows, rows.reshape(3, 28, 28), rows.reshape(3, 1, 28, 28)):
        assert plot.model_input(mlp, X).shape == (3, 784)
        assert plot.model_input(cnn, X).shape == (3, 1, 28, 28)


NO_EXTRA = ("import sys; sys.modules['matplotlib'] = None; sys.modules['PIL'] = None\n"
            "import numpy as np, scratchnet as sn\n")


def test_without_the_extra_everything_else_works_and_plots_say_how_to_install(tmp_path):
    """matplotlib and Pillow made unimportable in a fresh process."""
    code = NO_EXTRA + """
m = sn.Sequential(sn.Dense(784, 8), sn.ReLU(), sn.Dense(8, 10))
X = np.random.default_rng(0).random((64, 784), dtype=np.float32)
y = np.arange(64) % 10
h = m.fit(X, y, optimizer=sn.SGD(m.parameters(), lr=0.1), epochs=1, verbose=0)
assert m.predict(X).shape == (64,)
assert sn.datasets.image_to_mnist(X[0].reshape(28, 28)).shape == (28, 28)  # arrays: no Pillow
for call in (lambda: sn.plot.training_curves(h), lambda: sn.plot.weights(m),
             lambda: sn.plot.confusion_matrix(m, X, y), lambda: sn.datasets.image_to_mnist("a.png")):
    try:
        call()
    except ImportError as exc:
        print(exc)
    else:
        raise SystemExit("no ImportError")
"""
    # the scratchnet under test (not the source tree's, which is unbuilt in CI)
    here = os.path.dirname(os.path.dirname(os.path.abspath(sn.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": here})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert "pip install 'scratchnet[plot]'" in line
