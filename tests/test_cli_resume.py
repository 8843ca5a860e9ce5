"""scratchnet train --checkpoint PATH and --resume PATH: Ctrl-C in a real
`scratchnet train` process exits with status 130 and no traceback, leaving a
checkpoint that resumes to the weights of an uninterrupted run; resuming into
another network is an error message, not a traceback."""
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

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
    assert line.startswith(f"fit: interrupted in epoch {done + 1} of 100000; {ckpt} holds "
                           f"epoch {done}: to continue")
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


def test_scratchnet_train_refuses_to_resume_another_network(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    monkeypatch.setattr(cli.datasets, "load", lambda *a, **k: ((X, y), (X[:50], y[:50])))
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
