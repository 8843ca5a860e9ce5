"""Shared fixtures: the real datasets, found through the normal search path.

CI sets SCRATCHNET_DATA to the shared offline copies. Elsewhere MNIST is still found
in the copy bundled with the package. When a dataset cannot be found, tests that need
it are skipped, or fail when SCRATCHNET_REQUIRE_DATA=1 (so CI cannot go green by
silently skipping them).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def data_required() -> bool:
    return os.environ.get("SCRATCHNET_REQUIRE_DATA") == "1"


def missing_data(reason: str):
    """Fail or skip the calling test, as SCRATCHNET_REQUIRE_DATA asks."""
    if SHARED_DATASETS.is_dir() and not os.environ.get("SCRATCHNET_DATA"):
        # Only a hint: setting the variable here would hide a broken CI setup.
        reason += f"\n(offline copies exist: set SCRATCHNET_DATA={SHARED_DATASETS})"
    if data_required():
        pytest.fail(f"SCRATCHNET_REQUIRE_DATA=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _load(name):
    from scratchnet import datasets

    try:
        return datasets.load(name, download=False)
    except datasets.DatasetNotFoundError as exc:
        # A corrupt file is not caught: it is a real error, never a reason to skip.
        missing_data(str(exc))


@pytest.fixture(scope="session")
def mnist():
    """((X_train, y_train), (X_test, y_test)) of MNIST. Shared: do not modify in place."""
    return _load("mnist")


@pytest.fixture(scope="session")
def fashion_mnist():
    """((X_train, y_train), (X_test, y_test)) of Fashion-MNIST. Shared: do not modify."""
    return _load("fashion-mnist")


@pytest.fixture
def always_paired():
    """For the tests that need the one-image pair's helper thread: every GEMM
    worth a pair goes in two halves (the run-time timing off); the thread
    count, the pair threshold and the timing switch are put back after."""
    from scratchnet import _core

    threads, pair, timing = _core.get_num_threads(), _core.pair_min_flops(), _core.pair_timing()
    _core.set_pair_timing(False)
    yield
    _core.set_num_threads(threads)
    _core.set_pair_min_flops(pair)
    _core.set_pair_timing(timing)


@pytest.fixture(params=["fused", "layers"])
def training_path(request, monkeypatch):
    """Runs a test once on each training/inference path: the fused C network
    and the layer-by-layer path (as SCRATCHNET_FUSED=0 chooses)."""
    from scratchnet import _fused

    monkeypatch.setattr(_fused, "ENABLED", request.param == "fused")
    return request.param


def pytest_configure(config):
    # here rather than in pyproject.toml: tools/check_wheel.sh runs a copy of tests/ alone
    config.addinivalue_line("markers", "sanitizer_skip(reason): skipped under "
                            "tools/check_sanitizers.sh (see pytest_collection_modifyitems)")
    config.addinivalue_line("markers", "full_mnist: tests/test_decoded_cache.py loads all of "
                            "MNIST rather than its first images")
    # Loading a dataset writes its decoded copy to the user cache (55 MB for MNIST):
    # the tests' copies, and anything else cached, go to a folder of this session,
    # never the user's. Subprocesses inherit it.
    config._scratchnet_cache = tempfile.mkdtemp(prefix="scratchnet-tests-cache-")
    os.environ["XDG_CACHE_HOME"] = config._scratchnet_cache


def pytest_unconfigure(config):
    folder = getattr(config, "_scratchnet_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Under tools/check_sanitizers.sh (SCRATCHNET_SANITIZED=1), skip the tests
    marked sanitizer_skip(reason): the long ones (full real-data training,
    benchmarks) take many times longer with AddressSanitizer, and a memory
    measurement counts ASan's shadow memory and quarantine. Everything else
    (kernels, layers, models, save/load, CLI, fuzzing) runs."""
    if os.environ.get("SCRATCHNET_SANITIZED") != "1":
        return
    for item in items:
        mark = item.get_closest_marker("sanitizer_skip")
        if mark is not None:
            reason = mark.args[0] if mark.args else mark.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"under the sanitizers: {reason}"))


def pytest_terminal_summary(terminalreporter):
    """The number of generated fuzz cases run (tests/test_fuzz.py), when any were."""
    strategies = sys.modules.get("fuzz_strategies")
    if strategies is not None and strategies.CASES["run"]:
        terminalreporter.write_line(
            f"fuzz: {strategies.CASES['run']} generated cases run "
            f"(SCRATCHNET_FUZZ_EXAMPLES={strategies.TOTAL}, fixed seed)")
