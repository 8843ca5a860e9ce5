"""Kernels called from many Python threads: the memory they keep does not
grow with the number of threads that ever called them, and concurrent calls
get the single-thread answer, bit for bit."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from scratchnet import _core


# Run in a fresh interpreter so its peak RSS (VmHWM) is this test's alone.
# `work` is called once in the main thread (the warm-up: imports, first
# workspaces), then in 200 short-lived threads, 4 alive at a time; the
# growth of the peak RSS across those threads is printed in MB.
GROWTH_SCRIPT = """
import threading
import numpy as np
import scratchnet as sn
from scratchnet import _core

def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")

{setup}

work()
before = peak_mb()
for _ in range(50):
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print(peak_mb() - before)
"""

GEMM_SETUP = """
rng = np.random.default_rng(0)
A = rng.standard_normal((256, 512), dtype=np.float32)
B = rng.standard_normal((512, 512), dtype=np.float32)  # used transposed: packed

def work():
    _core.gemm(A, B, np.empty((256, 512), np.float32), trans_b=True)
"""

PREDICT_SETUP = """
model = sn.Sequential(sn.Dense(784, 256), sn.ReLU(), sn.Dense(256, 10))
X = np.random.default_rng(0).random((256, 784), dtype=np.float32)

def work():
    model.predict(X)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.sanitizer_skip("peak RSS includes ASan's shadow memory and quarantine")
@pytest.mark.parametrize("setup", [GEMM_SETUP, PREDICT_SETUP], ids=["gemm", "predict"])
def test_memory_does_not_grow_with_the_number_of_calling_threads(setup):
    script = GROWTH_SCRIPT.format(setup=textwrap.dedent(setup))
    # from the tests' folder: the installed scratchnet, not the source tree's
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth = float(proc.stdout.strip().splitlines()[-1])
    assert growth < 40, f"peak RSS grew {growth:.0f} MB over 200 short-lived threads"


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
def test_concurrent_gemm_calls_get_the_single_thread_bits(trans_a, trans_b):
    """6 threads, each with its own operands, all multiplying at once, several
    times over, get what the same products computed one at a time got. The
    shapes go parallel and pack (shared packing buffers would mix them up)."""
    rng = np.random.default_rng(1)
    M, N, K = 200, 300, 260
    jobs = []
    for _ in range(6):
        A = rng.standard_normal((K, M) if trans_a else (M, K), dtype=np.float32)
        B = rng.standard_normal((N, K) if trans_b else (K, N), dtype=np.float32)
        jobs.append((A, B))

    def product(A, B):
        return _core.gemm(A, B, np.empty((M, N), np.float32), trans_a=trans_a, trans_b=trans_b)

    want = [product(A, B) for A, B in jobs]
    got = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def run(i):
        start.wait()
        for _ in range(20):
            got[i].append(product(*jobs[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, results in enumerate(got):
        assert len(results) == 20
        for C in results:
            np.testing.assert_array_equal(C, want[i], err_msg=f"thread {i}")


def test_a_pair_of_threads_flushes_subnormals_as_one_thread_does(always_paired):
    """One image through a layer on two threads (the helper sums K's last kc
    block, the caller adds it) rounds as one thread does, in flush-to-zero:
    sums that cancel into the subnormal range give 0 both ways, and so does
    a sigmoid of a large negative input (the pair's last add and epilogue
    once ran in the caller's own floating-point mode and gave 1e-39)."""
    K, N = 784, 128
    a = np.zeros((1, K), np.float32)
    a[0, 0] = a[0, 600] = 1.0
    b = np.zeros((K, N), np.float32)
    b[0, :], b[600, :] = 1.5e-38, -1.4e-38  # rows 0 and 600: both kc blocks
    x = np.zeros((1, K), np.float32)
    x[0, 0] = 1.0
    w = np.zeros((K, N), np.float32)
    w[0, :] = -90.0  # sigmoid(-90) ~ 8e-40, subnormal
    bias = np.zeros(N, np.float32)
    prev_isa = _core.get_isa()
    try:
        for isa in _core.supported_isas():
            _core.set_isa(isa)
            got = {}
            for threads in (1, 2):
                _core.set_num_threads(threads)
                _core.set_pair_min_flops(0)  # two threads: the pair
                c = np.full((1, N), np.nan, np.float32)
                _core.gemm(a, b, c)
                y = np.full((1, N), np.nan, np.float32)
                _core.dense_forward(x, w, bias, y, act="sigmoid")
                got[threads] = (c, y)
            for one, two in zip(got[1], got[2]):
                np.testing.assert_array_equal(one.view(np.uint32), two.view(np.uint32),
                                              err_msg=isa)
                assert not one.any(), isa  # flushed to zero
    finally:
        _core.set_isa(prev_isa)


def test_one_image_predictions_from_several_threads_get_the_one_thread_bits(always_paired):
    """One image at a time goes through the first layer in two halves, the
    second for a helper thread when it is free (csrc/sn_helper.c; one caller
    at a time offers it, the others compute both halves): 4 Python threads
    predicting images at once get what one thread alone got, bit for bit.
    (The first layer is paired whatever the tuner found here: the default
    threshold is set for the test.)"""
    import scratchnet as sn

    rng = np.random.default_rng(2)
    model = sn.Sequential(sn.Dense(784, 128), sn.ReLU(), sn.Dense(128, 10))
    X = rng.random((64, 784), dtype=np.float32)
    _core.set_pair_min_flops(0)
    assert _core.pair_min_flops() <= 784 * 128
    _core.set_num_threads(1)
    want = [model.predict_proba(X[i:i + 1]) for i in range(len(X))]
    _core.set_num_threads(2)
    got = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def run(t):
        start.wait()
        for _ in range(5):
            got[t].append([model.predict_proba(X[i:i + 1]) for i in range(len(X))])

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t, runs in enumerate(got):
        assert len(runs) == 5
        for probs in runs:
            for i, p in enumerate(probs):
                np.testing.assert_array_equal(p, want[i], err_msg=f"thread {t}, image {i}")


def _helper_threads():
    """{thread id: the CPU it last ran on} of the threads named sn-helper
    (/proc: field 39 of the thread's stat line, the 37th after its name)."""
    found = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().strip() != "sn-helper":
                    continue
            with open(f"/proc/self/task/{task}/stat") as f:
                found[int(task)] = int(f.read().rsplit(")", 1)[1].split()[36])
        except OSError:  # a thread that ended meanwhile
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="the helper's placement is managed on Linux, with two CPUs or more")
def test_the_pair_helper_moves_off_the_callers_cpu_within_the_cpus_it_is_given(always_paired):
    """The helper thread (csrc/sn_helper.c) leaves the CPU its caller offers
    halves from, but never for a CPU its affinity does not allow. For each
    of two CPUs: the calling thread pinned there and the helper placed
    beside it (pinned there, then allowed every CPU again, as the OS left it
    when another library's threads spun on the other CPU: it ran only when
    the caller yielded, every half was taken back, and a call took 3.4-3.8
    us instead of 2.45 alone, 784-128-10 on an AMD EPYC Zen 5), one-image
    predictions soon find it on another CPU (the OS may move it too, when
    the other CPU is idle). Then restricted to the caller's CPU, as
    `taskset -a` restricts a process's threads, it stays within it (the
    helper once kept a mask of its own from the CPUs it started with, and
    so left such a restriction)."""
    import scratchnet as sn

    model = sn.Sequential(sn.Dense(784, 128), sn.ReLU(), sn.Dense(128, 10))
    x = np.random.default_rng(3).random((1, 784), dtype=np.float32)
    want = model.predict_proba(x)
    mask = os.sched_getaffinity(0)  # this thread's
    helpers = {}

    def predict_for(seconds, until=lambda: False):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            for _ in range(200):
                np.testing.assert_array_equal(model.predict_proba(x), want)

    try:
        _core.set_num_threads(2)
        _core.set_pair_min_flops(0)  # the first layer in two halves
        model.predict_proba(x)  # the helper starts
        helpers = _helper_threads()
        assert helpers, "no sn-helper thread"
        for cpu in sorted(mask)[:2]:
            os.sched_setaffinity(0, {cpu})
            for tid in helpers:
                os.sched_setaffinity(tid, {cpu})
                os.sched_setaffinity(tid, mask)
            predict_for(2.0, until=lambda: cpu not in _helper_threads().values())
            where = _helper_threads()
            assert where and cpu not in where.values(), (cpu, where)
            for tid in helpers:
                os.sched_setaffinity(tid, {cpu})
            predict_for(0.3)
            for tid in helpers:
                assert os.sched_getaffinity(tid) == {cpu}, (cpu, os.sched_getaffinity(tid))
    finally:
        os.sched_setaffinity(0, mask)
        for tid in helpers:
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:  # the thread ended
                pass


# A parent that has run parallel regions forks; the child predicts (a large
# batch: the threads' path) and trains a step, and exits 0 if it got the
# parent's answer on one thread. Without the fork handler the child's first
# region waited forever for OpenMP threads it does not have.
FORK_SCRIPT = """
import os
import warnings
import numpy as np
import scratchnet as sn

sn.set_num_threads(2)
model = sn.Sequential(sn.Dense(784, 256, seed=1), sn.ReLU(), sn.Dense(256, 10, seed=2))
X = np.random.default_rng(0).random((1000, 784), dtype=np.float32)
want = model.predict_proba(X)
pid = os.fork()
if pid == 0:
    same = np.array_equal(model.predict_proba(X), want)
    model.fit(X[:256], np.arange(256) % 10, sn.SGD(model.parameters(), lr=0.1), epochs=1,
              batch_size=128, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sn.set_num_threads(2)
    warned = any("forked" in str(w.message) for w in caught)
    os._exit(0 if same and sn.get_num_threads() == 1 and warned else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), sn.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_process_forked_after_the_threads_ran_runs_on_one_thread():
    """multiprocessing's default start method on Linux forks: a child of a
    parent whose parallel regions had run hung in its first region."""
    try:
        # from the tests' folder, as the test above: the installed scratchnet,
        # not the checkout's (which CI does not build in place)
        done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung in a parallel region")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "2"], done.stdout + done.stderr


def test_model_calls_from_several_threads_get_the_one_thread_outputs():
    """model(x) runs the layers' own forward, whose buffers are the model's:
    calls from four threads got each other's outputs (54-68 of 200 wrong per
    thread). It takes the model's lock, as predict does."""
    import scratchnet as sn
    model = sn.Sequential(sn.Dense(64, 64, seed=1), sn.ReLU(), sn.Dense(64, 10, seed=2))
    rng = np.random.default_rng(0)
    batches = [rng.random((256, 64), dtype=np.float32) for _ in range(4)]
    wanted = [model(x) for x in batches]
    wrong = [0] * len(batches)

    def call(k):
        for _ in range(60):
            wrong[k] += not np.array_equal(model(batches[k]), wanted[k])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [0] * len(batches)


def test_model_calls_during_fit_leave_the_training_alone():
    """A thread calling model(x) while fit trains layer by layer (a CNN)
    overwrote the activations fit's backward pass reads: a loss of 6571 and
    other weights, silently. model(x) now waits for fit's lock."""
    import scratchnet as sn
    rng = np.random.default_rng(0)
    X = rng.random((600, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, len(X))

    def train(with_reader):
        model = sn.Sequential(sn.Conv2D(1, 4, 3, seed=1), sn.ReLU(), sn.Flatten(),
                              sn.Dense(4 * 6 * 6, 10, seed=2))
        stop = threading.Event()

        def read():
            while not stop.is_set():
                model(X[:32])

        reader = threading.Thread(target=read)
        if with_reader:
            reader.start()
        try:
            model.fit(X, y, sn.SGD(model.parameters(), lr=0.05, momentum=0.9), epochs=2,
                      batch_size=32, verbose=0, seed=0)
        finally:
            stop.set()
            if with_reader:
                reader.join()
        return model.state_dict()

    alone, beside = train(False), train(True)
    for name in alone:
        np.testing.assert_array_equal(beside[name], alone[name], err_msg=name)


def test_a_callback_may_wait_for_model_calls_in_another_thread():
    """fit held the layers' lock through its callbacks, and model(x) waits
    for that lock: a callback that had a worker thread call model(x) and
    waited for it hung for ever. fit holds it for each epoch's steps only
    (no backward pass is pending in a callback)."""
    import concurrent.futures
    import scratchnet as sn
    X = np.random.default_rng(0).random((64, 6), dtype=np.float32)
    y = np.arange(64) % 3
    model = sn.Sequential(sn.Dense(6, 5, seed=1), sn.BatchNorm1d(5), sn.ReLU(),
                          sn.Dense(5, 3, seed=2))
    seen = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        def callback(epoch, logs):
            seen.append(pool.submit(lambda: model(X[:4])).result(timeout=20).shape)

        model.fit(X, y, sn.SGD(model.parameters(), lr=0.1), epochs=2, verbose=0,
                  callback=callback)
    assert seen == [(4, 3), (4, 3)]
