"""Each script in examples/ run as a user would, in a new process in an empty
folder, with its options for a tiny run (one epoch, a few thousand images)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import missing_data
from scratchnet import datasets

# matplotlib, onnxruntime, scikit-learn: C++ extensions throwing exceptions,
# which a preloaded libasan cannot intercept (ASan CHECK failure in __cxa_throw)
pytestmark = pytest.mark.sanitizer_skip("C++ extensions of other packages")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run_example(tmp_path, name, *args, data=("mnist",), plots=False):
    script = os.path.join(EXAMPLES, name)
    if not os.path.exists(script):
        pytest.skip("examples/ are not shipped with the installed package")
    if plots:
        pytest.importorskip("matplotlib")
        pytest.importorskip("PIL")
    for dataset in data:
        if datasets.find(dataset) is None:
            missing_data(f"{dataset} not found")
    proc = subprocess.run([sys.executable, script, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def pngs(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def test_train_mnist(tmp_path):
    out = run_example(tmp_path, "train_mnist.py", "--epochs", "1", "--subset", "3000",
                      plots=True)
    accuracy = float(re.search(r"'accuracy': ([0-9.]+)", out).group(1))
    assert accuracy > 0.8
    assert (tmp_path / "mnist.npz").is_file()
    assert pngs(tmp_path) == ["mnist_confusion.png", "mnist_curves.png", "mnist_mistakes.png",
                              "mnist_weights.png"]


def test_custom_loop(tmp_path):
    out = run_example(tmp_path, "custom_loop.py", "--epochs", "2", "--subset", "3000")
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert float(lines[-1].rsplit(" ", 1)[1]) > 0.8


def test_fashion_cnn(tmp_path):
    out = run_example(tmp_path, "fashion_cnn.py", "--epochs", "1", "--subset", "1000",
                      "--test", "300", data=("fashion-mnist",), plots=True)
    assert float(re.search(r"test accuracy ([0-9.]+)%", out).group(1)) > 40
    assert pngs(tmp_path) == ["fashion_activations.png", "fashion_confusion.png",
                              "fashion_curves.png", "fashion_filters.png",
                              "fashion_mistakes.png"]


def test_from_scratch_story(tmp_path):
    """Every step's kernel agrees with its NumPy (the script asserts each), in order."""
    out = run_example(tmp_path, "from_scratch_story.py", "--epochs", "1", "--subset", "5000")
    steps = [line.split(".")[0] for line in out.splitlines() if line[:1].isdigit()]
    assert steps == [str(i) for i in range(1, 9)]
    assert out.count("scratchnet's kernel agrees with NumPy") == 13
    by_hand = float(re.search(r"test accuracy by hand: ([0-9.]+)%", out).group(1))
    assert by_hand > 80
    assert f"through sn.Sequential: {by_hand:.2f}%" in out
