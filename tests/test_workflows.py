"""The GitHub workflows, checked here since GitHub's runners cannot be run here."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def job(name):
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "tests.yml").read_text())
    return workflow["jobs"][name]


@pytest.mark.skipif(sys.platform == "win32", reason="runs the step's bash with a stand-in pip")
@pytest.mark.parametrize("runner, runner_os, index", [
    ("ubuntu-latest", "Linux", CPU_INDEX),
    ("windows-latest", "Windows", CPU_INDEX),
    ("macos-latest", "macOS", None),
])
def test_torch_cpu_build_is_installed_before_pytest(tmp_path, runner, runner_os, index):
    tests_job = job("test")
    assert runner in tests_job["strategy"]["matrix"]["os"]
    runs = [step.get("run", "") for step in tests_job["steps"]]
    tests = [i for i, run in enumerate(runs) if re.search(r"^\s*pytest\b", run, re.M)]
    installs = [i for i, run in enumerate(runs) if "torch" in run]
    assert tests and installs and max(installs) < min(tests)

    # What the step asks pip for on each OS: a stand-in pip writes its arguments down.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in [("pip", 'echo "$@" >> "$PIP_LOG"'), ("python", "exit 0")]:
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "pip.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               RUNNER_OS=runner_os, PIP_LOG=str(log))
    for i in installs:
        subprocess.run(["bash", "-e", "-c", runs[i]], env=env, check=True)
    [call] = [line for line in log.read_text().splitlines() if "torch" in line]
    pinned = re.search(r'"?(torch==[0-9.]+)"?', (REPO / ".ci" / "run").read_text()).group(1)
    assert pinned in call.split()  # the version the local CI compares against
    if index is None:  # PyTorch's CPU index has no macOS wheels; PyPI's is the CPU build
        assert "--index-url" not in call and "--extra-index-url" not in call
    else:
        assert f"--index-url {index}" in call
