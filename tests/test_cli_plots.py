"""The command line's pictures: `train --plots DIR`, `evaluate --plots DIR`, and
`predict MODEL FILE...` on picture files (PNG, JPEG) made here from test-set
digits at other sizes, inverted, moved and in colour."""
import json
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli, plot

# matplotlib, onnxruntime, scikit-learn: C++ extensions throwing exceptions,
# which a preloaded libasan cannot intercept (ASan CHECK failure in __cxa_throw)
pytestmark = pytest.mark.sanitizer_skip("C++ extensions of other packages")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_mnist(monkeypatch, mnist):
    (X, y), (Xt, yt) = mnist
    subset = ((X[:2000], y[:2000]), (Xt[:500], yt[:500]))
    monkeypatch.setattr(cli.datasets, "load", lambda *args, **kwargs: subset)
    return subset


@pytest.fixture
def drawn(monkeypatch):
    """{file name: the figure written to it}: every PNG the plots write."""
    pytest.importorskip("matplotlib")
    figures, save = {}, plot.save_png

    def spy(fig, path):
        figures[path.rsplit("/", 1)[-1]] = fig
        save(fig, path)

    monkeypatch.setattr(plot, "save_png", spy)
    return figures


def check_files(folder, figures, names):
    Image = pytest.importorskip("PIL.Image")
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:
        with Image.open(folder / name) as picture:
            width, height = figures[name].get_size_inches() * plot.DPI
            assert picture.format == "PNG" and picture.size == (round(width), round(height))


def test_train_and_evaluate_write_their_plots(capsys, tmp_path, small_mnist, drawn):
    (_, _), (Xt, yt) = small_mnist
    folder = tmp_path / "plots" / "run"  # made, parents too
    code, out, err = run(capsys, "train", "--epochs", "2", "--hidden", "16", "--json",
                         "--out", tmp_path / "m.npz", "--plots", folder)
    assert code == 0, err
    metrics = json.loads(out)  # --json: still one object, nothing else
    names = ["training_curves.png", "confusion_matrix.png", "mistakes.png", "weights.png"]
    check_files(folder, drawn, names)
    curves = drawn["training_curves.png"]
    assert [line.get_label() for line in curves.axes[0].lines] == ["training", "test"]
    assert len(curves.data["loss"]) == 2
    # the "validation" is the test set: its last point is the test accuracy
    assert curves.data["val_accuracy"][-1] == pytest.approx(metrics["test_accuracy"])
    counts = drawn["confusion_matrix.png"].data["counts"]
    model = sn.load(tmp_path / "m.npz")
    predicted = model.predict(Xt)
    assert counts.sum() == len(yt) and counts.trace() == (predicted == yt).sum()
    np.testing.assert_array_equal(drawn["mistakes.png"].data["indices"][:5],
                                  plot.mistakes(model, Xt, yt, path=None).data["indices"][:5])
    np.testing.assert_array_equal(drawn["weights.png"].data["images"][0],
                                  model[0].weight.numpy()[:, 0].reshape(28, 28))

    again = tmp_path / "evaluated"
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", "--plots", again)
    assert code == 0, err
    assert out.splitlines()[-1] == (f"plots: {again / 'confusion_matrix.png'}, "
                                    f"{again / 'mistakes.png'}")
    check_files(again, drawn, ["confusion_matrix.png", "mistakes.png"])
    np.testing.assert_array_equal(drawn["confusion_matrix.png"].data["counts"], counts)


def test_plots_without_the_extra_is_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "PIL", None)

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before the plots were checked")

    monkeypatch.setattr(cli.datasets, "load", no_loading)
    model = tmp_path / "m.npz"
    sn.Sequential(sn.Dense(784, 10)).save(model)
    for argv in (["train", "--out", tmp_path / "new.npz", "--plots", tmp_path / "p"],
                 ["evaluate", model, "--plots", tmp_path / "p"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == ""
        assert err == (f"scratchnet {argv[0]}: error: plots need matplotlib and Pillow: "
                       "pip install 'scratchnet[plot]'\n")
    code, out, err = run(capsys, "predict", model, tmp_path / "digit.png")
    assert code == 1 and err.count("\n") == 1 and "pip install 'scratchnet[plot]'" in err


# ---------------------------------------------------------------- predict on pictures


@pytest.fixture(scope="module")
def mlp_file(mnist, tmp_path_factory):
    """A quick MLP: 2 epochs on 20000 training images (94% on the test set; of
    the first ten test digits it gets the 5 at index 8 wrong)."""
    (X, y), _ = mnist
    sn.manual_seed(0)
    model = sn.Sequential(sn.Dense(784, 128), sn.ReLU(), sn.Dense(128, 10))
    model.fit(X[:20000], y[:20000], optimizer=sn.Adam(model.parameters()), epochs=2,
              batch_size=64, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("model") / "mlp.npz"
    model.save(path)
    return path


def variants(digit):
    """A test-set digit (28x28, 0..1) as the pictures a user might give: PIL
    images and their file names."""
    Image = pytest.importorskip("PIL.Image")
    grey = Image.fromarray((digit * 255).round().astype(np.uint8))
    big = grey.resize((84, 84), Image.Resampling.BILINEAR)
    # 200 wide, 120 high, black ink on white paper, the digit off to one side
    inverted = Image.new("L", (200, 120), 255)
    inverted.paste(Image.fromarray(255 - np.asarray(grey.resize((100, 100)))), (90, 12))
    # the 28x28 digit moved to a corner of a larger dark field
    offset = Image.new("L", (64, 48), 0)
    offset.paste(grey, (33, 2))
    # dark red ink on yellowish paper, a JPEG
    ink = np.asarray(big, np.float64)[:, :, None] / 255
    paper, red = np.array([250, 245, 200]), np.array([150, 20, 20])
    colour = Image.fromarray((paper + (red - paper) * ink).round().astype(np.uint8), "RGB")
    return {"84x84.png": big, "200x120-inverted.png": inverted, "offset.png": offset,
            "colour.jpg": colour}


def dark_on_light(folder, images):
    """Images (N, 784) in 0..1 as PNG files 0.png, 1.png, ... of dark ink on
    light paper; their paths."""
    Image = pytest.importorskip("PIL.Image")
    paths = []
    for k, image in enumerate(images):
        paths.append(folder / f"{k}.png")
        Image.fromarray((255 * (1 - image.reshape(28, 28))).astype(np.uint8)).save(paths[-1])
    return paths


def test_predict_reads_pictures_of_digits(capsys, tmp_path, mlp_file, mnist):
    (_, _), (Xt, yt) = mnist
    files, truth = [], []
    for k in range(10):  # the first ten test digits, as they come
        for name, picture in variants(Xt[k].reshape(28, 28)).items():
            path = tmp_path / f"{k}-{name}"
            picture.save(path)
            files.append(path)
            truth.append((name, int(yt[k])))
    code, out, err = run(capsys, "predict", mlp_file, *files, "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [r["file"] for r in results] == [str(f) for f in files]
    right = {}
    for result, (name, label) in zip(results, truth):
        top = result["top"]
        assert len(top) == 3 and len({c["class"] for c in top}) == 3
        probabilities = [c["probability"] for c in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        assert all(c["name"] == str(c["class"]) for c in top)
        right[name] = right.get(name, 0) + (top[0]["class"] == label)
    assert all(count >= 9 for count in right.values()), right

    code, out, err = run(capsys, "predict", mlp_file, *files[:4])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    for line, result in zip(lines, results):
        shown = ", ".join(f"{c['name']} {100 * c['probability']:.3g}%" for c in result["top"])
        assert line == f"{result['file']}: {shown}"


def test_predict_gives_a_cnn_images_and_names_fashion_classes(capsys, tmp_path, mnist):
    (_, _), (Xt, _) = mnist
    sn.manual_seed(3)
    model = sn.Sequential(sn.Conv2D(1, 4, 5), sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                          sn.Dense(4 * 12 * 12, 10))
    model.metadata["dataset"] = "fashion-mnist"
    model.save(tmp_path / "cnn.npz")
    paths = dark_on_light(tmp_path, Xt[:3])
    code, out, err = run(capsys, "predict", tmp_path / "cnn.npz", *paths, "--json")
    assert code == 0, err
    # a Fashion-MNIST model's pictures are prepared as Fashion-MNIST's were
    images = np.stack([sn.datasets.image_to_fashion_mnist(p) for p in paths]).reshape(3, 1, 28, 28)
    expected = model.predict_proba(images)
    for result, p in zip(json.loads(out), expected):
        best = np.argsort(-p, kind="stable")[:3]
        assert [c["class"] for c in result["top"]] == best.tolist()
        assert [c["name"] for c in result["top"]] == [
            sn.datasets.FASHION_MNIST_CLASSES[k] for k in best]
        np.testing.assert_allclose([c["probability"] for c in result["top"]], p[best], rtol=1e-6)


def test_predict_refuses_files_it_cannot_read(capsys, tmp_path, mlp_file):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "notes.png").write_text("not a picture")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    for argv, message in [([tmp_path / "notes.png"], "not a picture Pillow can read"),
                          ([tmp_path / "blank.png"], "no ink found"),
                          ([tmp_path / "missing.png"], "No such file"),
                          ([tmp_path / "x.npy", tmp_path / "blank.png"], "give one .npy file")]:
        code, out, err = run(capsys, "predict", mlp_file, *argv)
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert err.startswith("scratchnet predict: error: ") and message in err, err
    code, out, err = run(capsys, "predict", mlp_file, tmp_path / "x.npy")  # .npy as before
    assert code == 0 and out.strip().isdigit(), err


def test_predict_gives_a_one_output_model_both_classes(capsys, tmp_path, mnist):
    """A one-output BinaryCrossEntropy model's pictures ended in a traceback
    (predict_proba gives such a model's (N,) probabilities of class 1)."""
    (_, _), (Xt, _) = mnist
    sn.manual_seed(0)
    model = sn.Sequential(sn.Dense(784, 1))
    model.loss = sn.BinaryCrossEntropy()
    model.save(tmp_path / "binary.npz")
    paths = dark_on_light(tmp_path, Xt[:2])
    code, out, err = run(capsys, "predict", tmp_path / "binary.npz", *paths, "--json")
    assert code == 0, err
    images = np.stack([sn.datasets.image_to_mnist(p) for p in paths]).reshape(2, 784)
    ones = model.predict_proba(images)
    for result, p1, label in zip(json.loads(out), ones, model.predict(images)):
        top = result["top"]
        assert [c["class"] for c in top] == [label, 1 - label]  # as .npy input would say
        assert [c["name"] for c in top] == [str(label), str(1 - label)]
        np.testing.assert_allclose({c["class"]: c["probability"] for c in top}[1], p1,
                                   rtol=1e-6)
        assert sum(c["probability"] for c in top) == pytest.approx(1)
    code, out, err = run(capsys, "predict", tmp_path / "binary.npz", paths[0])
    assert code == 0 and err == "" and out.startswith(f"{paths[0]}: ") and out.count("%") == 2


def test_predict_puts_class_1_first_on_a_tie_as_predict_does(capsys, tmp_path, mnist):
    """At p = 0.5 exactly (a logit of 0) predict says 1 (sigmoid >= 0.5) and
    the pictures' list put 0 first (a review of 905954e)."""
    (_, _), (Xt, _) = mnist
    model = sn.Sequential(sn.Dense(784, 1))
    model.layers[0].weight[...] = 0.0
    model.loss = sn.BinaryCrossEntropy()
    model.save(tmp_path / "zero.npz")
    paths = dark_on_light(tmp_path, Xt[:1])
    code, out, err = run(capsys, "predict", tmp_path / "zero.npz", *paths, "--json")
    assert code == 0, err
    assert [c["class"] for c in json.loads(out)[0]["top"]] == [1, 0]
    assert model.predict(Xt[:1]).tolist() == [1]
    # a logit of -1e-8: predict says 0, and the probability still rounds to 0.5
    model.layers[0].bias[...] = -1e-8
    model.save(tmp_path / "below.npz")
    code, out, err = run(capsys, "predict", tmp_path / "below.npz", *paths, "--json")
    assert code == 0, err
    assert [c["class"] for c in json.loads(out)[0]["top"]] == [0, 1]
    assert model.predict(Xt[:1]).tolist() == [0] and model.predict_proba(Xt[:1])[0] == 0.5


def test_plots_given_a_file_says_it_is_not_a_folder(capsys, tmp_path, monkeypatch):
    """It said "FILE: File exists"."""
    monkeypatch.setattr(plot, "require", lambda: None)  # as if installed
    monkeypatch.setattr(cli.datasets, "load", lambda *a, **k: pytest.fail("data loaded"))
    model, not_a_folder = tmp_path / "m.npz", tmp_path / "plots.png"
    sn.Sequential(sn.Dense(784, 10)).save(model)
    not_a_folder.write_bytes(b"")
    for argv in (["train", "--out", tmp_path / "new.npz"], ["evaluate", model]):
        code, out, err = run(capsys, *argv, "--plots", not_a_folder)
        assert code == 1 and out == ""
        assert err == (f"scratchnet {argv[0]}: error: --plots {not_a_folder}: is a file, not a "
                       "folder; give a folder to write the PNGs in (made if missing)\n")


def test_predict_says_what_a_model_that_cannot_take_pictures_takes(capsys, tmp_path, mnist):
    """A model of 100 inputs said "X: expected 100 features per sample, got
    784"; a regression model ended "use predict()", Python."""
    (_, _), (Xt, _) = mnist
    [picture] = dark_on_light(tmp_path, Xt[:1])
    narrow, regression = tmp_path / "narrow.npz", tmp_path / "regression.npz"
    sn.Sequential(sn.Flatten(), sn.Dense(100, 10)).save(narrow)
    model = sn.Sequential(sn.Dense(784, 1))
    model.loss = sn.MSE()
    model.save(regression)
    for path, message in [
            (narrow, "the model takes 100 features per sample, not 28x28 images, which "
                     "predict makes of pictures; give it a .npy of shape (N, 100)"),
            (regression, "fitted with MSE, a regression loss: its outputs are values, not "
                         "classes, so a picture has no likeliest classes; predict prints its "
                         "values for a .npy of its inputs")]:
        code, out, err = run(capsys, "predict", path, picture)
        assert code == 1 and out == ""
        assert err == f"scratchnet predict: error: {path}: {message}\n"
