"""The command line, run in-process through scratchnet.cli.main and, for the
entry points, as a subprocess."""
import json
import subprocess
import sys

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
])
def test_bad_options_are_rejected_by_the_parser(capsys, argv, message):
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
