"""Run-time choices: the kernel path (ISA), threads, and the floating-point
mode kernels run in."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core


def run_info(env_extra):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-c", "import json, scratchnet; "
                           "print(json.dumps(scratchnet.info()))"],
                          capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_scratchnet_isa_forces_the_kernel_path(isa):
    info, _ = run_info({"SCRATCHNET_ISA": isa})
    assert info["isa"] == isa
    assert info["isa_best"] == _core.best_isa()


@pytest.mark.parametrize("value, fused", [("0", False), ("1", True), (None, True)])
def test_scratchnet_fused_turns_the_fused_path_off(value, fused):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHNET_FUSED"}
    if value is not None:
        env["SCRATCHNET_FUSED"] = value
    proc = subprocess.run(
        [sys.executable, "-c",
         "import json, scratchnet as sn\n"
         "m = sn.Sequential(sn.Dense(4, 8), sn.ReLU(), sn.Dense(8, 3))\n"
         "print(json.dumps([sn.info()['fused'], m._plan() is not None]))"],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [fused, fused]


def test_unknown_or_unsupported_isa_warns_and_falls_back():
    # to the best kernel with the tuner off (else to the one it timed fastest,
    # test_tuning.py: under a sanitizer build, AVX2 beat AVX-512 on a Zen 5)
    info, err = run_info({"SCRATCHNET_ISA": "sse9", "SCRATCHNET_TUNE": "0"})
    assert info["isa"] == _core.best_isa()
    assert "SCRATCHNET_ISA ignored" in err
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.set_isa("sse9")


def test_thread_count_from_the_environment():
    info, _ = run_info({"SCRATCHNET_NUM_THREADS": "1"})
    assert info["threads"] == 1
    info, _ = run_info({"OMP_NUM_THREADS": "1"})
    assert info["threads"] == 1


def test_thread_counts_from_the_environment_are_capped_and_named():
    """OMP_NUM_THREADS=5000 started 5000 threads (set_num_threads takes at
    most 1024); SCRATCHNET_NUM_THREADS=5000 was called 'not a positive
    integer'."""
    info, _ = run_info({"OMP_NUM_THREADS": "5000"})
    assert info["threads"] == 1024
    info, err = run_info({"SCRATCHNET_NUM_THREADS": "5000", "OMP_NUM_THREADS": "2"})
    assert info["threads"] == 2
    assert "SCRATCHNET_NUM_THREADS='5000' ignored: number of threads must be in [1, 1024]" in err
    _, err = run_info({"SCRATCHNET_NUM_THREADS": "two"})
    assert "ignored: not a whole number" in err


def test_gemm_flushes_subnormals_and_restores_the_callers_mode():
    """Inside the GEMM (and what flushes with it: dense layers, the MLP, the
    optimizer steps; not the element-wise kernels) subnormal inputs count as
    0 and subnormal results become 0 (FTZ/DAZ); outside, NumPy in the same
    thread still sees IEEE gradual underflow."""
    tiny = np.float32(1e-20)
    subnormal = np.float32(1e-39)
    assert subnormal != 0 and tiny * tiny != 0  # IEEE: 1e-40 is representable
    A = np.full((8, 8), tiny, np.float32)
    C = _core.gemm(A, A, np.empty((8, 8), np.float32))
    assert not C.any()  # each product 1e-40 flushed to zero
    S = np.full((8, 8), subnormal, np.float32)
    C = _core.gemm(S, np.ones((8, 8), np.float32), np.empty((8, 8), np.float32))
    assert not C.any()  # subnormal inputs read as zero
    p = sn.Parameter(np.full(4, 1e-30, np.float32))
    p.grad[...] = 1e-9
    opt = sn.SGD([p], lr=1e-1)
    opt.step()  # 1e-30 - 1e-10: normal numbers, unaffected
    np.testing.assert_allclose(p.data, 1e-30 - 1e-10, rtol=1e-6)
    # the caller's mode is back: NumPy still makes subnormals
    assert tiny * tiny != 0
    assert np.float32(1e-38) / np.float32(100) != 0


def test_thread_counts_past_the_limit_are_refused():
    """100000 threads crashed the OpenMP runtime (a segfault in training)."""
    old = sn.get_num_threads()
    for bad in (0, 100000):
        with pytest.raises(ValueError, match=r"must be in \[1, 1024\]"):
            sn.set_num_threads(bad)
    assert sn.get_num_threads() == old


def test_thread_round_trip_is_measured_on_two_threads_only():
    """The cache-line round trip the benchmarks print beside their figures
    (close or far-apart vCPUs): a time with two threads; None with one (no
    second thread to answer: it must not wait forever either)."""
    old = sn.get_num_threads()
    try:
        sn.set_num_threads(2)
        if _core.have_openmp() and (os.cpu_count() or 1) >= 2:
            # a thread the OS did not run for 0.1 s gives None: try again
            times = [_core.thread_round_trip_ns(2000) for _ in range(3)]
            measured = [t for t in times if t is not None]
            assert measured, times
            # a line cannot cross between two threads and back in 5 ns (no
            # upper bound: with more busy threads than CPUs, a round trip is a
            # switch between threads, microseconds; CI saw 6.8 ms a round
            # trip before the waits yielded the CPU)
            assert all(t > 5 for t in measured), measured
        sn.set_num_threads(1)
        assert _core.thread_round_trip_ns(2000) is None
    finally:
        sn.set_num_threads(old)
    for bad in (99, (1 << 20) + 1):
        with pytest.raises(ValueError, match=r"rounds must be in \[100, 1048576\]"):
            _core.thread_round_trip_ns(bad)
    for bad in (1500.0, True, "2000"):
        with pytest.raises(TypeError, match="rounds must be an int"):
            _core.thread_round_trip_ns(bad)
