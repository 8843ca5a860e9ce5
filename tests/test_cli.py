"""The command line, run in-process through scratchnet.cli.main and, for the
entry points, as a subprocess."""
import errno
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_reports_kernel_compiler_threads(capsys):
    code, out, _ = run(capsys, "info", "--json")
    assert code == 0
    details = json.loads(out)
    assert details["isa"] in ("generic", "avx2", "avx512")
    assert details["compiler"] and details["threads"] >= 1
    assert details["version"] == sn.__version__
    code, out, _ = run(capsys, "info")
    assert code == 0 and "isa" in out and "compiler" in out


def test_short_train_then_evaluate_and_predict(capsys, tmp_path, mnist):
    model_path = tmp_path / "m.npz"
    code, out, err = run(capsys, "train", "--dataset", "mnist", "--epochs", "1", "--hidden",
                         "32", "--out", str(model_path), "--no-download")
    assert code == 0, err
    assert "epoch 1/1" in err  # the progress bar
    line = [l for l in out.splitlines() if l.startswith("test accuracy:")]
    assert line and line[0].endswith("%")
    accuracy = float(line[0].split()[-1].rstrip("%"))
    assert accuracy > 85.0
    code, out, err = run(capsys, "evaluate", str(model_path), "--dataset", "mnist", "--json",
                         "--no-download")
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == pytest.approx(accuracy / 100, abs=5e-5)

    (_, _), (Xt, yt) = mnist
    images = tmp_path / "images.npy"
    np.save(images, (Xt[:20].reshape(20, 28, 28) * 255).round().astype(np.uint8))
    code, out, err = run(capsys, "predict", str(model_path), str(images), "--json")
    assert code == 0, err
    labels = json.loads(out)
    assert len(labels) == 20
    np.testing.assert_array_equal(labels, sn.load(model_path).predict(Xt[:20]))


def test_json_output_is_one_object(capsys, tmp_path, mnist):
    code, out, err = run(capsys, "train", "--epochs", "1", "--hidden", "16", "--json",
                         "--out", str(tmp_path / "m.npz"), "--no-download", "--seed", "1")
    assert code == 0, err
    metrics = json.loads(out)
    assert {"test_accuracy", "test_loss", "epochs", "seconds", "model"} <= set(metrics)
    assert err == ""  # --json implies no progress bar


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "cifar"], "invalid choice"),
    (["train", "--hidden", "12,x"], "hidden sizes"),
    (["train", "--epochs", "0"], "must be positive"),
    (["train", "--optimizer", "lbfgs"], "invalid choice"),
    (["download", "imagenet"], "invalid choice"),
    (["train", "--dropout", "1.5"], "must be in [0, 1)"),
    (["train", "--lr", "nan"], "must be positive"),
    (["train", "--lr", "inf"], "must be positive"),
    (["train", "--seed", "-1"], "must be 0 or more"),
    # argparse names the type: it said "invalid parse value", "invalid _seed value"
    (["train", "--lr", "abc"], "invalid float value: 'abc'"),
    (["train", "--batch-size", "1e3"], "invalid int value: '1e3'"),
    (["train", "--seed", "abc"], "invalid int value: 'abc'"),
    (["train", "--dropout", "x"], "invalid float value: 'x'"),
    (["export", "m.npz", "m.onnx", "--opset", "5"], "must be 13 or more"),  # it exited 1
    # --out "" saved to the default name; --checkpoint "" failed after an epoch
    (["train", "--out", ""], "argument --out: empty; give a file name"),
    (["train", "--checkpoint", ""], "argument --checkpoint: empty; give a file name"),
    (["train", "--resume", ""], "argument --resume: empty; give the checkpoint file"),
    # a model without hidden layers was trained, silently (an empty shell variable?)
    (["train", "--hidden", ""], "argument --hidden: no hidden sizes in ''"),
    (["train", "--hidden", ","], "argument --hidden: no hidden sizes in ','"),
])
def test_bad_options_are_rejected_by_the_parser(capsys, monkeypatch, tmp_path, argv, message):
    def no_loading(*args, **kwargs):  # one the parser lets through must not train for long
        raise AssertionError(f"the parser accepted {argv}")

    monkeypatch.setattr(cli.datasets, "load", no_loading)
    monkeypatch.chdir(tmp_path)  # nor write a model in the current folder
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_errors_are_reported_without_a_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", str(tmp_path / "nope.npz"))
    assert code == 1 and "error" in err and "Traceback" not in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    code, _, err = run(capsys, "evaluate", str(bad))
    assert code == 1 and "bad.npz" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "train", "--data-dir", str(empty), "--no-download")
    assert code == 1 and str(empty) in err


def test_console_entry_points(tmp_path):
    for argv in (["scratchnet", "info", "--json"],
                 [sys.executable, "-m", "scratchnet", "info", "--json"]):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["version"] == sn.__version__


# ---------------------------------------------------------------- no silent wrong answers


@pytest.fixture
def small_mnist(monkeypatch, mnist):
    """`train` on 2000 images: these tests are about what happens around training."""
    (X, y), (Xt, yt) = mnist
    subset = ((X[:2000], y[:2000]), (Xt[:500], yt[:500]))
    monkeypatch.setattr(cli.datasets, "load", lambda *args, **kwargs: subset)


def train(capsys, out, *extra):
    return run(capsys, "train", "--epochs", "1", "--hidden", "16", "--out", str(out), *extra)


def test_hidden_none_trains_a_linear_model(capsys, tmp_path, small_mnist):
    """--hidden "" trained a 784-10 model silently and is refused now; none
    asks for that model by name (the only way left to train one)."""
    code, out, err = train(capsys, tmp_path / "linear.npz", "--hidden", "none")
    assert code == 0, err
    model = sn.load(tmp_path / "linear.npz")
    assert [type(l).__name__ for l in model.layers] == ["Dense"]
    assert model.layers[0].weight.shape == (784, 10)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"scratchnet {sn.__version__}\n"


# (predict and info have flags only)
@pytest.mark.parametrize("command", ["train", "evaluate", "download", "bench"])
def test_every_option_with_a_value_shows_its_default(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    entries, options = [], text.split("options:", 1)[1]
    for line in options.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries:
            entries[-1] += line
    entries = [" ".join(e.split()) for e in entries]
    # "--epochs EPOCHS ..." takes a value; "--force overwrite ..." is a flag.
    valued = [e for e in entries if e.split()[1:2] and (e.split()[1].isupper()
                                                        or e.split()[1].startswith("{"))]
    assert valued
    for entry in valued:
        assert "(default: " in entry, entry
    if command == "train":  # the per-dataset defaults are the real ones
        assert len(valued) == 16
        epochs = [", ".join(f"{d['epochs']} for {name}" for name, d in table.items())
                  if len({d["epochs"] for d in table.values()}) > 1
                  else str(table["mnist"]["epochs"]) for table in (cli.DEFAULTS, cli.CNN_DEFAULTS)]
        assert (f"(default: {epochs[0]}; with --model cnn, {epochs[1]})"
                in " ".join(text.split()))


def test_train_never_replaces_a_model_silently(capsys, tmp_path, small_mnist):
    out = tmp_path / "m.npz"
    out.write_bytes(b"a model trained for hours")
    code, stdout, err = train(capsys, out)
    assert code == 1 and stdout == ""
    assert err.count("\n") == 1 and str(out) in err and "--force" in err
    assert out.read_bytes() == b"a model trained for hours"

    code, stdout, err = train(capsys, out, "--force", "--quiet")
    assert code == 0, err
    assert stdout.splitlines()[-1] == f"model saved to {out}"
    sn.load(out)


def test_train_model_file_that_appears_during_training_is_kept(capsys, tmp_path, monkeypatch,
                                                               small_mnist):
    out = tmp_path / "m.npz"
    fit = sn.Sequential.fit

    def fit_while_another_run_writes_out(self, *args, **kwargs):
        out.write_bytes(b"another run's model")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(sn.Sequential, "fit", fit_while_another_run_writes_out)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = train(capsys, out, "--quiet")
    assert code == 1 and "appeared during training" in err
    assert out.read_bytes() == b"another run's model"
    fallback = stdout.splitlines()[-1].removeprefix("model saved to ")
    assert f"saved it to {fallback} instead" in err
    sn.load(fallback)


@pytest.mark.parametrize("case", ["no such folder", "a folder", "parent is a file", "onnx"])
def test_train_checks_out_before_anything_else(capsys, tmp_path, monkeypatch, case):
    def load_data(*args, **kwargs):
        raise AssertionError("the data was loaded although --out is unusable")

    monkeypatch.setattr(cli.datasets, "load", load_data)
    (tmp_path / "file").write_text("")
    out, reason = {"no such folder": (tmp_path / "nope" / "m.npz", "does not exist"),
                   "a folder": (tmp_path, "is a folder"),
                   "parent is a file": (tmp_path / "file" / "m.npz", "is not a folder"),
                   # a .npz under that name, which no ONNX tool reads
                   "onnx": (tmp_path / "m.onnx", "scratchnet export MODEL.npz")}[case]
    code, stdout, err = train(capsys, out)
    assert code == 1 and stdout == ""
    assert err.count("\n") == 1
    assert err.startswith(f"scratchnet train: error: --out {out}: ") and reason in err


@pytest.mark.parametrize("failing", [("out",), ("out", "cwd"), ("out", "cwd", "tmp")])
def test_train_keeps_the_model_when_saving_fails(capsys, tmp_path, monkeypatch, small_mnist,
                                                 failing):
    folders = {"out": tmp_path / "out", "cwd": tmp_path / "cwd", "tmp": tmp_path / "tmp"}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.chdir(folders["cwd"])
    monkeypatch.setattr(tempfile, "tempdir", str(folders["tmp"]))
    save = sn.Sequential.save

    def save_on_a_full_disk(self, path):
        if any(Path(path).parent == folders[name] for name in failing):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, path)

    monkeypatch.setattr(sn.Sequential, "save", save_on_a_full_disk)
    out = folders["out"] / "m.npz"
    code, stdout, err = train(capsys, out, "--quiet")
    assert code == 1
    assert f"{out}: No space left on device" in err
    assert not out.exists()
    where = stdout.splitlines()[-1]
    if len(failing) == 3:
        assert where == "model NOT saved" and "the trained model is lost" in err
        return
    folder = folders["tmp" if "cwd" in failing else "cwd"]
    [fallback] = folder.glob("scratchnet-mnist-*.npz")
    assert where == f"model saved to {fallback}"
    assert f"saved it to {fallback} instead" in err
    sn.load(fallback)


def test_quiet_train_says_where_the_model_went(capsys, tmp_path, small_mnist):
    out = tmp_path / "m.npz"
    code, stdout, err = train(capsys, out, "--quiet")
    assert code == 0 and err == ""
    lines = stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("test accuracy: ")
    assert lines[1] == f"model saved to {out}"


def test_diverging_training_is_an_error_not_a_traceback(capsys, tmp_path, small_mnist):
    code, _, err = train(capsys, tmp_path / "m.npz", "--optimizer", "sgd", "--lr", "1e30",
                         "--quiet")
    assert code == 1 and "not finite" in err and "learning rate" in err


def test_os_errors_name_the_file_without_python_noise(capsys, tmp_path):
    missing = tmp_path / "nope.npz"
    code, _, err = run(capsys, "evaluate", str(missing))
    assert code == 1 and err == f"scratchnet evaluate: error: {missing}: No such file or directory\n"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code, _, err = run(capsys, "download", "mnist", "--data-dir", str(not_a_folder))
    assert code == 1 and err == (f"scratchnet download: error: --data-dir {not_a_folder}: is a "
                                 "file, not a folder; give a folder to put the four files in\n")


def test_data_dir_that_is_a_file_is_named_so(capsys, tmp_path, monkeypatch):
    """It was "mnist not found", with the advice to put the files in it and
    to download into it."""
    monkeypatch.setattr(cli.datasets, "load", lambda *a, **k: pytest.fail("data loaded"))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    sn.Sequential(sn.Dense(784, 10)).save(tmp_path / "m.npz")
    for argv in (["train", "--out", str(tmp_path / "new.npz")], ["evaluate", str(tmp_path / "m.npz")]):
        code, out, err = run(capsys, *argv, "--data-dir", str(not_a_folder), "--no-download")
        assert code == 1 and out == ""
        assert err == (f"scratchnet {argv[0]}: error: --data-dir {not_a_folder}: is a file, not "
                       "a folder; give the folder that holds the four files\n")


@pytest.mark.parametrize("name, what", [("m.onnx", "an ONNX file"), ("seven.png", "a picture"),
                                        ("seven.JPG", "a picture")])
def test_a_model_that_is_onnx_or_a_picture_is_named_so(capsys, tmp_path, name, what):
    """They were "not a readable scratchnet model (a damaged or truncated .npz ...)"."""
    wrong = tmp_path / name
    wrong.write_bytes(b"\x89PNG\r\n\x1a\n not a zip file")
    model = tmp_path / "m.npz"
    sn.Sequential(sn.Dense(784, 10)).save(model)
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    named = (f"{wrong}: {what}, not a scratchnet model (the .npz that `scratchnet train` or "
             "model.save writes)")
    swapped = "; the arguments look swapped: scratchnet "
    for argv, usage in [(["evaluate", wrong], None),
                        (["predict", wrong, tmp_path / "x.npy"], None),
                        (["predict", wrong, tmp_path / "other.png"], None),
                        (["predict", wrong, model], "predict MODEL.npz IMAGES.npy, or predict "
                                                    "MODEL.npz PICTURE..."),
                        (["export", wrong, tmp_path / "out.onnx"], None),
                        (["export", wrong, model], "export MODEL.npz OUT.onnx")]:
        code, out, err = run(capsys, *map(str, argv))
        assert code == 1 and out == ""
        assert err == f"scratchnet {argv[0]}: error: {named}" + (
            f"{swapped}{usage}" if usage else "") + "\n"
    sn.load(model)  # intact: export with the arguments swapped offered --force to replace it


# ---------------------------------------------------------------- missing data, in CLI words


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """No dataset anywhere, and every download refused at once by a closed local port."""
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cli.datasets, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(cli.datasets, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setenv("SCRATCHNET_MIRROR", "http://127.0.0.1:9/")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path


def assert_speaks_cli(err):
    assert "Traceback" not in err
    assert "root=" not in err and "download=" not in err  # Python's words
    for name in cli.datasets.FILES:
        assert name in err


def test_data_not_found_offline_says_what_to_put_where(capsys, no_data):
    code, stdout, err = run(capsys, "train", "--dataset", "fashion-mnist", "--no-download",
                            "--out", str(no_data / "m.npz"))
    assert code == 1 and stdout == ""
    assert err.startswith("scratchnet train: error: fashion-mnist not found (--no-download")
    assert_speaks_cli(err)
    for _, folder in cli.datasets.search_path("fashion-mnist"):
        assert str(folder) in err
    assert "--data-dir" in err and "SCRATCHNET_DATA" in err
    assert "scratchnet download fashion-mnist" in err  # it was not what failed


def test_data_download_failed_does_not_suggest_downloading(capsys, no_data):
    sn.Sequential(sn.Dense(784, 10)).save(no_data / "model.npz")
    code, _, err = run(capsys, "evaluate", str(no_data / "model.npz"), "--dataset",
                       "fashion-mnist")
    assert code == 1
    assert "fashion-mnist not found, and the download failed" in err and "127.0.0.1:9" in err
    assert_speaks_cli(err)
    assert "scratchnet download fashion-mnist" not in err


def test_download_command_failure_says_where_to_put_the_files(capsys, no_data):
    code, _, err = run(capsys, "download", "fashion-mnist", "--quiet")
    assert code == 1 and "127.0.0.1:9" in err
    assert_speaks_cli(err)
    assert f"in {cli.datasets.cache_dir('fashion-mnist')}:" in err
    assert "scratchnet download fashion-mnist" not in err


def test_data_dir_one_level_too_high_gets_the_right_option(capsys, no_data, tmp_path):
    nested = tmp_path / "datasets" / "mnist"
    nested.mkdir(parents=True)
    for name in cli.datasets.FILES:
        (nested / name).write_bytes(b"")
    sn.Sequential(sn.Dense(784, 10)).save(tmp_path / "model.npz")
    code, _, err = run(capsys, "evaluate", str(tmp_path / "model.npz"), "--data-dir",
                       str(nested.parent), "--no-download")
    assert code == 1 and f"pass --data-dir {nested}" in err
    assert "as root" not in err and "scratchnet download" not in err


# ---------------------------------------------------------------- predict's inputs


@pytest.fixture
def model_file(tmp_path):
    """An untrained model whose biases make the input's scale matter."""
    sn.manual_seed(0)
    model = cli.build_model([16], 0.0)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        if p.data.ndim == 1:
            p.data[:] = rng.normal(0, 3, p.data.shape)
    path = tmp_path / "model.npz"
    model.save(path)
    return path


def test_predict_scales_integer_pixels_and_takes_one_image(capsys, tmp_path, model_file, mnist):
    (_, _), (Xt, _) = mnist
    pixels = (Xt[:20] * 255).round()
    model = sn.load(model_file)
    expected = model.predict(pixels.astype(np.uint8).astype(np.float32) / 255)
    assert (expected != model.predict(pixels.astype(np.float32))).any()  # scale matters
    for name, array, count in [("int64.npy", pixels.astype(np.int64), 20),
                               ("one.npy", pixels[0].reshape(28, 28).astype(np.uint8), 1),
                               ("nchw.npy", pixels.reshape(20, 1, 28, 28).astype(np.uint8), 20)]:
        np.save(tmp_path / name, array)
        code, out, err = run(capsys, "predict", str(model_file), str(tmp_path / name), "--json")
        assert code == 0, err
        assert json.loads(out) == expected[:count].tolist()


@pytest.mark.parametrize("name, write, message", [
    ("float255.npy", lambda p: np.save(p, np.full((2, 784), 200.0, np.float32)), "divide by 255"),
    # standardised pixels: dividing by 255 would not undo that (it was the hint)
    ("standardised.npy", lambda p: np.save(p, np.linspace(-0.5, 2.8, 1568, dtype=np.float32)
                                           .reshape(2, 784)), "not standardised or shifted"),
    ("big-ints.npy", lambda p: np.save(p, np.full((2, 784), 300)), "must be 0..255"),
    ("strings.npy", lambda p: np.save(p, np.array(["a", "b"])), "predict needs pixels"),
    ("wide.npy", lambda p: np.save(p, np.zeros((2, 10), np.float32)), "784 features"),
    ("archive.npz", lambda p: np.savez(p, x=np.zeros((2, 784))), "a .npz archive"),
    ("empty.npy", lambda p: p.write_bytes(b""), "not a readable .npy array"),
    ("text.npy", lambda p: p.write_text("0 1 2"), "not a .npy file at all"),
])
def test_predict_refuses_inputs_it_would_get_wrong(capsys, tmp_path, model_file, name, write,
                                                   message):
    path = tmp_path / name
    write(path)
    code, out, err = run(capsys, "predict", str(model_file), str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"scratchnet predict: error: {path}: ") and message in err
    assert "allow_pickle" not in err and err.count("\n") == 1


def test_a_regression_model_predicts_its_values_and_evaluates_to_its_loss(capsys, tmp_path,
                                                                          small_mnist, mnist):
    """predict printed a regression (MSE) model's outputs cut to whole
    numbers (3.94 as 3) while --json gave them; evaluate ended in a
    traceback (KeyError 'accuracy'); --plots is a classifier's, refused
    before any work."""
    (X, y), (Xt, yt) = mnist
    sn.manual_seed(0)
    for outputs in (1, 2):
        model = sn.Sequential(sn.Dense(784, 8), sn.ReLU(), sn.Dense(8, outputs))
        targets = np.stack([y[:200]] * outputs, 1).astype(np.float32) / 3
        model.fit(X[:200], targets if outputs > 1 else targets[:, 0],
                  sn.Adam(model.parameters(), lr=1e-2), loss=sn.MSE(), epochs=2, verbose=0)
        path = tmp_path / f"regression{outputs}.npz"
        model.save(path)
        np.save(tmp_path / "five.npy", Xt[:5])
        code, out, err = run(capsys, "predict", str(path), str(tmp_path / "five.npy"))
        assert code == 0, err
        want = model.predict(Xt[:5]).reshape(5, -1)
        got = np.array([[float(v) for v in line.split()] for line in out.splitlines()])
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert not np.array_equal(got, np.trunc(got))
    one = tmp_path / "regression1.npz"
    code, out, err = run(capsys, "evaluate", str(one))
    want = sn.load(one).evaluate(Xt[:500], yt[:500])["loss"]  # small_mnist's test set
    assert code == 0 and err == ""
    assert out.strip() == f"test loss: {want:.4f} (MSE; no accuracy)"
    code, out, err = run(capsys, "evaluate", str(one), "--json")
    assert code == 0 and json.loads(out)["test_accuracy"] is None
    code, out, err = run(capsys, "evaluate", str(one), "--plots", str(tmp_path / "plots"))
    assert code == 1 and "--plots: the plots are a classifier's" in err and out == ""
    assert not (tmp_path / "plots").exists()


def test_evaluate_defaults_to_the_dataset_the_model_was_trained_on(capsys, tmp_path,
                                                                    monkeypatch, model_file):
    """A Fashion-MNIST model evaluated without --dataset was scored on MNIST
    (about 10%, silently): train records the dataset in the model file."""
    model = sn.load(model_file)
    model.metadata["dataset"] = "fashion-mnist"
    model.save(tmp_path / "fashion.npz")
    asked = []
    rng = np.random.default_rng(0)
    fake = (rng.random((20, 784), dtype=np.float32), rng.integers(0, 10, 20))

    def fake_load(name, **kwargs):
        asked.append(name)
        return fake, fake

    monkeypatch.setattr(cli.datasets, "load", fake_load)
    assert run(capsys, "evaluate", str(tmp_path / "fashion.npz"), "--json")[0] == 0
    code, _, err = run(capsys, "evaluate", str(tmp_path / "fashion.npz"), "--dataset", "mnist")
    assert code == 0 and "was trained on fashion-mnist; evaluating it on mnist" in err
    code, _, err = run(capsys, "evaluate", str(model_file))  # no record: mnist
    assert code == 0 and "note" not in err
    assert asked == ["fashion-mnist", "mnist", "mnist"]


@pytest.mark.parametrize("dataset", ["fashion-mnist", None])
def test_export_of_a_model_of_images_takes_its_datasets_shape(capsys, tmp_path, dataset):
    """A CNN's export said "give it, e.g. input_shape=(1, 28, 28)", Python's
    spelling; a model train recorded a dataset for exports its images."""
    pytest.importorskip("onnx")
    model = sn.Sequential(sn.Conv2D(1, 2, 5, seed=0), sn.Flatten(), sn.Dense(2 * 24 * 24, 10))
    if dataset:
        model.metadata["dataset"] = dataset
    model.save(tmp_path / "cnn.npz")
    code, out, err = run(capsys, "export", str(tmp_path / "cnn.npz"), str(tmp_path / "c.onnx"))
    if dataset:
        assert code == 0 and (tmp_path / "c.onnx").exists(), err
        inputs = sn.import_onnx(tmp_path / "c.onnx")
        x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
        np.testing.assert_allclose(inputs.predict_logits(x), model.predict_logits(x), rtol=1e-5,
                                   atol=1e-5)
    else:
        assert code == 1 and "give it, e.g. --input-shape 1,28,28" in err


def test_train_records_the_dataset_in_the_model(capsys, tmp_path, small_mnist):
    out = tmp_path / "m.npz"
    code, _, err = train(capsys, out, "--quiet")
    assert code == 0, err
    assert sn.load(out).metadata == {"dataset": "mnist"}


# ---------------------------------------------------------------- --model cnn


@pytest.fixture
def small_images(monkeypatch, mnist):
    """`train` and `evaluate` on a small subset, as rows or, when asked with
    flatten=False, as images (N, 1, 28, 28); records what was asked."""
    (X, y), (Xt, yt) = mnist
    asked = []

    def load(name, flatten=True, **kwargs):
        asked.append(flatten)
        shape = (-1, 784) if flatten else (-1, 1, 28, 28)
        return (X[:1000].reshape(shape), y[:1000]), (Xt[:300].reshape(shape), yt[:300])

    monkeypatch.setattr(cli.datasets, "load", load)
    return asked


def test_cnn_train_then_evaluate_and_predict(capsys, tmp_path, mnist, small_images):
    model_path = tmp_path / "cnn.npz"
    code, out, err = run(capsys, "train", "--model", "cnn", "--epochs", "1", "--out",
                         str(model_path), "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["network"] == "cnn" and metrics["epochs"] == 1
    assert metrics["test_accuracy"] > 0.3  # 8 steps on 1000 images; chance is 0.1
    model = sn.load(model_path)
    assert isinstance(model.layers[0], sn.RandomShift) and model.metadata["dataset"] == "mnist"
    assert any(isinstance(layer, sn.Conv2D) for layer in model.layers)

    code, out, err = run(capsys, "evaluate", str(model_path), "--json")
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == metrics["test_accuracy"]
    assert small_images == [False, False]  # train and evaluate both loaded images

    (_, _), (Xt, _) = mnist
    expected = model.predict(Xt[:12].reshape(-1, 1, 28, 28)).tolist()
    pixels = (Xt[:12] * 255).round().astype(np.uint8)
    for name, array, count in [("rows.npy", Xt[:12], 12),
                               ("stack.npy", pixels.reshape(12, 28, 28), 12),
                               ("nchw.npy", pixels.reshape(12, 1, 28, 28), 12),
                               ("one.npy", pixels[0].reshape(28, 28), 1)]:
        np.save(tmp_path / name, array)
        code, out, err = run(capsys, "predict", str(model_path), str(tmp_path / name), "--json")
        assert code == 0, err
        assert json.loads(out) == expected[:count], name
    np.save(tmp_path / "small.npy", np.zeros((2, 10, 10), np.float32))
    code, out, err = run(capsys, "predict", str(model_path), str(tmp_path / "small.npy"))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "(2, 100)" in err and "28x28 images" in err


def test_cnn_defaults_follow_the_dataset():
    for dataset, shifts, flips, dense_in in (("mnist", True, False, 64 * 4 * 4),
                                              ("fashion-mnist", False, True, 64 * 7 * 7)):
        d = cli.CNN_DEFAULTS[dataset]
        model = cli.build_cnn(d["dropout"], **cli._cnn_settings(dataset))
        kinds = [type(layer) for layer in model.layers]
        assert [l for l in model.layers if isinstance(l, sn.Dense)][0].in_features == dense_in
        assert (kinds[0] is sn.RandomShift and model.layers[0].pixels == d["shift"]) == shifts
        assert (sn.RandomFlip in kinds) == flips  # mirrored clothes are clothes; digits not
        assert kinds.count(sn.Conv2D) == 2 and kinds.count(sn.BatchNorm2d) == 2
        assert model.predict_proba(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    plain = cli.build_cnn(0.0)
    assert not any(isinstance(layer, (sn.Dropout, sn.RandomShift, sn.RandomFlip))
                   for layer in plain.layers)


def test_hidden_sizes_are_refused_for_the_cnn(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:  # (without the check: no data in tmp_path, exit 1)
        cli.main(["train", "--model", "cnn", "--hidden", "64", "--no-download",
                  "--data-dir", str(tmp_path), "--out", str(tmp_path / "m.npz")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("scratchnet train: error: --hidden ")
    assert "--model cnn" in err and "Traceback" not in err


def test_export_help_says_when_input_shape_is_needed(capsys, tmp_path):
    """The help said --input-shape is needed unless the model starts with
    Dense; a model starting with Flatten exports without it, taking rows."""
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--input-shape INPUT_SHAPE the per-sample input shape, e.g. 1,28,28 (default: a "
            "model that starts with Dense, or with Flatten then Dense, takes rows of that Dense "
            "layer's inputs, e.g. 784; any other model takes 1,28,28 if `scratchnet train` made "
            "it, else needs this option)") in text
    onnx = pytest.importorskip("onnx")  # what it says of rows
    for layers in ([sn.Dense(784, 10)], [sn.Flatten(), sn.Dense(784, 10)]):
        sn.Sequential(*layers).save(tmp_path / "m.npz")
        code, _, err = run(capsys, "export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx"),
                           "--force")
        assert code == 0, err
        dims = onnx.load(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 784]


def test_hidden_none_refuses_a_dropout_it_has_no_layer_for(capsys, tmp_path):
    """--hidden none --dropout 0.5 trained a linear model and dropped the
    dropout unseen (a review)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--hidden", "none", "--dropout", "0.5", "--out",
                  str(tmp_path / "m.npz")])
    assert exc.value.code == 2 and "--hidden none has none" in capsys.readouterr().err
