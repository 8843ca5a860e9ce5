"""scratchnet train --checkpoint PATH and --resume PATH: Ctrl-C in a real
`scratchnet train` process exits with status 130 and no traceback, leaving a
checkpoint that resumes to the weights of an uninterrupted run; resuming into
another network is an error message, not a traceback."""
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from scratchnet import cli
    rng = np.random.default_rng(0)
    X = rng.random((3000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 3000)
    cli.datasets.load = lambda *args, **kwargs: ((X, y), (X[:200], y[:200]))
    sys.exit(cli.main(sys.argv[1:]))
""")


def cli_args(tmp_path, out, *extra):
    return ["train", "--hidden", "64", "--batch-size", "16", "--schedule", "none",
            "--seed", "1", "--quiet", "--out", str(tmp_path / out), *extra]


def test_ctrl_c_in_scratchnet_train_exits_130_and_the_checkpoint_resumes(tmp_path, monkeypatch,
                                                                         capsys):
    ckpt = tmp_path / "run.ckpt"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *cli_args(tmp_path, "m.npz", "--epochs", "100000",
                                                "--checkpoint", str(ckpt))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # into the next epoch
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err and out == ""
    line, command = err.splitlines()
    done = sn.load(ckpt) and int(line.split(" holds epoch ")[1].split(":")[0])
    # in epoch done + 1, or between two epochs (the Ctrl-C came before the next took a step)
    assert line.startswith((f"fit: interrupted in epoch {done + 1} of 100000; {ckpt} holds "
                            f"epoch {done}: to continue",
                            f"fit: interrupted after epoch {done} of 100000 was complete; {ckpt} "
                            f"holds epoch {done}: to continue"))
    assert "scratchnet train --resume" not in line  # the next line has the whole command
    # the whole command: resuming needs the run's own options (a reviewer
    # resumed with --resume alone, which other epochs or layers refuse)
    assert shlex.split(command.removeprefix("to continue: ")) == [
        "scratchnet", *cli_args(tmp_path, "m.npz", "--epochs", "100000", "--checkpoint",
                                str(ckpt)), "--resume", str(ckpt)]
    assert not (tmp_path / "m.npz").exists()

    # resumed to one more epoch, in this process: the same as one run of that many epochs
    rng = np.random.default_rng(0)
    X, y = rng.random((3000, 784), dtype=np.float32), rng.integers(0, 10, 3000)
    monkeypatch.setattr(cli.datasets, "load", lambda *a, **k: ((X, y), (X[:200], y[:200])))
    epochs = str(done + 1)
    assert cli.main(cli_args(tmp_path, "resumed.npz", "--epochs", epochs, "--resume",
                             str(ckpt))) == 0
    assert cli.main(cli_args(tmp_path, "whole.npz", "--epochs", epochs)) == 0
    resumed, whole = sn.load(tmp_path / "resumed.npz"), sn.load(tmp_path / "whole.npz")
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.fixture
def small_data(monkeypatch):
    """`train` on 200 random images: these tests are about the files around training."""
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    monkeypatch.setattr(cli.datasets, "load", lambda *a, **k: ((X, y), (X[:50], y[:50])))


def test_scratchnet_train_refuses_to_resume_another_network(tmp_path, capsys, small_data):
    ckpt = tmp_path / "run.ckpt"
    assert cli.main(cli_args(tmp_path, "a.npz", "--epochs", "1", "--checkpoint",
                             str(ckpt))) == 0
    capsys.readouterr()
    code = cli.main(["train", "--hidden", "32", "--epochs", "2", "--resume", str(ckpt),
                     "--out", str(tmp_path / "b.npz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"scratchnet train: error: fit: cannot resume from {ckpt}: it holds a "
                          "model of another architecture")


# ---------------------------------------------------------------- --checkpoint and --resume, checked first


def no_loading(*args, **kwargs):
    raise AssertionError("the data was loaded although the command line was refused")


@pytest.mark.parametrize("case", ["read-only folder", "no such folder", "a folder", "exists",
                                  "is --out", "is --out, spelt otherwise", "resume missing",
                                  "resume a folder"])
def test_train_checks_checkpoint_and_resume_before_loading_data(tmp_path, monkeypatch, capsys,
                                                                case):
    """Each failed only after the data loaded (and --checkpoint's only after
    the first epoch, naming a temporary file, the model not saved); an
    existing checkpoint was replaced by epoch 1 of a new run; a --checkpoint
    that is --out was replaced by the model at the end, which went elsewhere."""
    monkeypatch.setattr(cli.datasets, "load", no_loading)
    monkeypatch.chdir(tmp_path)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    mkstemp = tempfile.mkstemp

    def read_only_folder(*args, dir=None, **kwargs):  # (the tests may run as root)
        if dir is not None and Path(dir) == read_only:
            raise PermissionError(errno.EACCES, "Permission denied")
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    (tmp_path / "run.ckpt").write_bytes(b"an interrupted run's checkpoint")
    option, path, reason = {
        "read-only folder": ("--checkpoint", read_only / "run.ckpt",
                             f"cannot write in the folder {read_only} (Permission denied)"),
        "no such folder": ("--checkpoint", tmp_path / "nope" / "run.ckpt", "does not exist"),
        "a folder": ("--checkpoint", tmp_path, f"is a folder; give a file name, such as "
                                               f"{tmp_path / 'run.ckpt'}"),
        "exists": ("--checkpoint", tmp_path / "run.ckpt", "already exists"),
        "is --out": ("--checkpoint", tmp_path / "m.npz", "is also --out"),
        "is --out, spelt otherwise": ("--checkpoint", "./m.npz", "is also --out"),
        "resume missing": ("--resume", tmp_path / "nope.ckpt", "No such file or directory"),
        "resume a folder": ("--resume", tmp_path, "Is a directory; give the checkpoint file"),
    }[case]
    code = cli.main(cli_args(tmp_path, "m.npz", "--epochs", "1", option, str(path)))
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"scratchnet train: error: {option} {path}") and reason in err, err
    if case == "exists":  # how to go on, both ways
        assert f"--resume {path}" in err and "--force" in err
        assert (tmp_path / "run.ckpt").read_bytes() == b"an interrupted run's checkpoint"


def test_an_existing_checkpoint_is_taken_on_with_resume_or_replaced_with_force(tmp_path,
                                                                               small_data):
    ckpt = tmp_path / "run.ckpt"

    assert cli.main(cli_args(tmp_path, "a.npz", "--epochs", "1", "--checkpoint",
                             str(ckpt))) == 0
    assert checkpoint_epoch(ckpt) == 1
    # continued, written on: the same file as --resume
    assert cli.main(cli_args(tmp_path, "b.npz", "--epochs", "2", "--checkpoint", str(ckpt),
                             "--resume", str(ckpt))) == 0
    assert checkpoint_epoch(ckpt) == 2
    assert cli.main(cli_args(tmp_path, "c.npz", "--epochs", "1", "--checkpoint", str(ckpt),
                             "--force")) == 0
    assert checkpoint_epoch(ckpt) == 1


def checkpoint_epoch(path):
    """The epoch a checkpoint holds: how far a run resumed from it starts."""
    with np.load(path) as arrays:
        return json.loads(arrays["__training__"].tobytes())["epoch"]


@pytest.mark.parametrize("out_fails", [False, True])
def test_a_checkpoint_that_cannot_be_written_stops_training_and_keeps_the_model(
        tmp_path, monkeypatch, capsys, small_data, out_fails):
    """A full disk at the second checkpoint was a bare OS error naming the
    temporary file, and the model trained so far was lost."""
    monkeypatch.chdir(tmp_path)
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "m.npz"
    savez, checkpoints = np.savez, []

    def full_disk(file, *args, **kwargs):  # the disk is full from the second checkpoint on
        if str(file).startswith(str(ckpt)):
            checkpoints.append(file)
            if len(checkpoints) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        if out_fails and str(file).startswith(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", full_disk)
    code = cli.main(cli_args(tmp_path, "m.npz", "--epochs", "3", "--checkpoint", str(ckpt)))
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"scratchnet train: error: writing --checkpoint {ckpt} after epoch "
                          "2 of 3 failed (No space left on device), which stopped training; ")
    assert checkpoint_epoch(ckpt) == 1
    if out_fails:
        [fallback] = tmp_path.glob("scratchnet-mnist-*.npz")
        assert err.endswith(f"could not save the model to --out ({out}: No space left on "
                            f"device); saved it to {fallback} instead\n")
        kept = sn.load(fallback)
    else:
        assert err.endswith(f"the model trained so far is saved to {out}\n")
        kept = sn.load(out)
    # the model of epoch 2: what a run of 2 epochs makes
    assert cli.main(cli_args(tmp_path, "two.npz", "--epochs", "2")) == 0
    for (name, a), b in zip(kept.state_dict().items(),
                            sn.load(tmp_path / "two.npz").state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert kept.metadata == {"dataset": "mnist"}


@pytest.mark.parametrize("plots_then", [True, False])
def test_resuming_with_plots_added_or_left_out_says_so_in_options(tmp_path, monkeypatch, capsys,
                                                                 small_data, plots_then):
    """The refusal spoke Python: "pass validation (or validation_split) as then"."""
    monkeypatch.setattr(cli, "_check_plots", lambda args: None)  # no plots written here:
    monkeypatch.setattr(cli, "_write_plots", lambda *args, **kwargs: None)  # (no matplotlib)
    ckpt, plots = tmp_path / "run.ckpt", ["--plots", str(tmp_path / "plots")]
    assert cli.main(cli_args(tmp_path, "a.npz", "--epochs", "1", "--checkpoint", str(ckpt),
                             *plots * plots_then)) == 0
    capsys.readouterr()
    code = cli.main(cli_args(tmp_path, "b.npz", "--epochs", "2", "--resume", str(ckpt),
                             *plots * (not plots_then)))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "validation_split" not in err
    assert err.startswith(f"scratchnet train: error: cannot resume from {ckpt}: it was written "
                          f"by a run {'with' if plots_then else 'without'} --plots, which "
                          "evaluates the test set after every epoch")
    assert err.endswith("pass --plots DIR again\n" if plots_then else "leave --plots out\n")
