"""What a shipped build must get right, wherever it is installed: every kernel
path this CPU can run, forced through SCRATCHNET_ISA in a fresh process,
trains to the same model within float32 tolerance; the bundled MNIST copy and
nothing of the build's inputs ship with the package.

tools/check_wheel.sh runs these (with the rest of the suite) against a wheel
installed in a fresh virtual environment; cibuildwheel runs them against each
built wheel."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core

PACKAGE_DIR = Path(sn.__file__).resolve().parent

# A few SGD steps of a small MLP on fixed data: big enough for the packed GEMM
# path (and its edge tiles), small enough to run in a fraction of a second.
TRAIN_SCRIPT = r"""
import json, sys
import numpy as np
import scratchnet as sn

out = sys.argv[1]
rng = np.random.default_rng(7)
X = rng.standard_normal((97, 133)).astype(np.float32)
y = rng.integers(0, 10, size=97)
model = sn.Sequential(sn.Dense(133, 70, seed=1), sn.ReLU(), sn.Dense(70, 37, seed=2), sn.Tanh(),
                      sn.Dense(37, 10, seed=3))
loss_fn = sn.CrossEntropy()
opt = sn.SGD(model.parameters(), lr=0.05, momentum=0.9)
losses = []
for step in range(4):
    logits = model.forward(X, training=True)
    losses.append(float(loss_fn.forward(logits, y)))
    model.backward(loss_fn.backward())
    opt.step()
arrays = {f"p{i}": p.data.copy() for i, p in enumerate(model.parameters())}
arrays["logits"] = np.array(model.forward(X, training=False), copy=True)
arrays["losses"] = np.array(losses)
np.savez(out, **arrays)
print(json.dumps(sn.info()))
"""


def train_with_isa(isa, out):
    env = dict(os.environ, SCRATCHNET_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(out)], capture_output=True,
                          text=True, env=env, cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["isa"] == isa, (isa, info, proc.stderr)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_every_kernel_path_trains_to_the_same_model(tmp_path):
    isas = _core.supported_isas()
    assert isas[0] == "generic"  # the portable path runs on every CPU
    results = {isa: train_with_isa(isa, tmp_path / f"{isa}.npz") for isa in isas}
    ref = results["generic"]
    assert np.all(np.isfinite(ref["logits"])) and ref["losses"][-1] < ref["losses"][0]
    for isa, res in results.items():
        assert res.keys() == ref.keys()
        for key in ref:
            scale = max(1.0, float(np.abs(ref[key]).max()))
            np.testing.assert_allclose(res[key], ref[key], rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=f"{isa} differs from generic in {key}")


def test_bundled_mnist_ships_with_the_package():
    folder = PACKAGE_DIR / "data" / "mnist"
    names = {p.name for p in folder.iterdir()}
    assert {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "NOTICE"} <= names


def test_installed_package_carries_no_build_inputs():
    if (PACKAGE_DIR / "_core.pyx").exists():
        pytest.skip("running from a source checkout (editable install), not a wheel")
    leftovers = sorted(p.name for p in PACKAGE_DIR.iterdir()
                       if p.suffix in (".pyx", ".pxd", ".pxi", ".c", ".h"))
    assert not leftovers, f"build inputs shipped in the wheel: {leftovers}"


def test_info_describes_the_build():
    info = sn.info()
    assert info["compiler"] and info["compiler"] != "unknown"
    assert re.fullmatch("[0-9a-f]{16}", info["build"])  # setup.py's source hash reached the C
    assert info["isa"] in info["isa_supported"] and info["isa_best"] in info["isa_supported"]
    assert info["threads"] >= 1
    assert isinstance(info["openmp"], bool)
