"""The machine a benchmark runs on: what it is (CPU model, cores, library
versions), the thread settings of the three libraries, and how busy other
processes kept the CPUs (sampled from /proc/stat) while a table was timed."""
import contextlib
import datetime
import os
import sys
import time

import numpy as np

from .. import _core
from .._runtime import cpu_name  # noqa: F401 (part of this module's interface)
from .._version import __version__

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SETTLE_BEFORE_ROUND_TRIP = 0.3  # seconds: see round_trip


def import_torch():
    """The torch module, or None where it cannot be imported (it is optional)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def configured(threads, isa, torch):
    """Give all three libraries `threads` threads (and scratchnet the kernel
    `isa`, when given) until the block ends; yields notes on what could not
    be set."""
    notes = []
    # the CPUs this process may run on (taskset, a container's cpuset), else all
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    if threads > cpus:  # each library's threads wait on the others': runs crawl
        notes.append(f"{threads} threads on {cpus} CPUs: oversubscribed, so every library "
                     "runs far slower than it can (a run may take minutes); pass --threads "
                     f"{cpus} or fewer")
    with contextlib.ExitStack() as stack:
        stack.callback(_core.set_num_threads, _core.get_num_threads())
        _core.set_num_threads(threads)
        if isa:
            stack.callback(_core.set_isa, _core.get_isa())
            _core.set_isa(isa)
        if torch is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            notes.append("threadpoolctl is not installed: NumPy's BLAS uses its default thread "
                         "count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else all cores)")
        else:
            stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        yield notes


def environment_notes(torch):
    notes = []
    set_vars = [f"{name}={os.environ[name]}" for name in OPENBLAS_VARS if name in os.environ]
    if set_vars:
        notes.append(f"WARNING: {' '.join(set_vars)} is set, which can slow NumPy's OpenBLAS. "
                     f"For a fair comparison run with them unset: "
                     f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...")
    if torch is None:
        notes.append("PyTorch is not importable: its columns are skipped")
    other = other_source_tree(sys.argv[0])
    if other:
        notes.append(f"WARNING: these are the figures of the scratchnet imported from "
                     f"{PACKAGE_DIR}, not of the source tree at {other} this script is in "
                     f"(Python puts the script's folder first on its path, not the tree's): "
                     f"run it with PYTHONPATH={other}, or pip install that tree")
    return notes


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def other_source_tree(script):
    """The source tree holding `script` when it is one of the tree's
    benchmarks/ scripts (the tree: benchmarks/'s parent, with a pyproject.toml
    and a scratchnet package) and scratchnet was imported from elsewhere (an
    installed copy), else None."""
    if not script:
        return None
    folder = os.path.dirname(os.path.abspath(script))
    tree = os.path.dirname(folder)
    package = os.path.join(tree, "scratchnet")
    if not (os.path.basename(folder) == "benchmarks" and
            os.path.isfile(os.path.join(tree, "pyproject.toml")) and
            os.path.isfile(os.path.join(package, "__init__.py"))):
        return None
    return None if os.path.samefile(package, PACKAGE_DIR) else tree


def cpu_sample():
    """(wall seconds, CPU seconds the whole machine used, CPU seconds this process
    used), or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
    own = os.times()
    return time.perf_counter(), busy, own.user + own.system


def others_share(start):
    """The share of all CPUs that other processes (or the hypervisor) used since
    `start`, a cpu_sample(): high values mean the timings were disturbed."""
    end = cpu_sample()
    if start is None or end is None:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return round(max(0.0, others / ((end[0] - start[0]) * os.cpu_count())), 3)


def round_trip():
    """The cache-line round trip between the library's threads now, in whole
    nanoseconds (None: fewer than two threads, or one was not running). On
    the project's 2-vCPU virtual machine the host puts the vCPUs close
    (80-140 ns) or far apart (350-430 ns), and training runs up to 25% slower
    far apart: a figure means little without it. Other busy processes raise
    it too. After a pause: NumPy's OpenBLAS keeps its threads spinning for
    ~0.1 s after a product, and a reading right after the tables' NumPy turn
    once came out 289 ns against 89 ns 0.3 s later."""
    time.sleep(SETTLE_BEFORE_ROUND_TRIP)
    ns = _core.thread_round_trip_ns()
    return None if ns is None else round(ns)


def round_trip_text(ns):
    return "not measured (fewer than two threads running)" if ns is None else f"{ns} ns"


def summary():
    """'CPU: <model> (<n> cores); scratchnet <version>, kernel <isa>; threads'
    round trip <ns>': what a benchmark script prints first."""
    return (f"CPU: {cpu_name()} ({os.cpu_count()} cores); scratchnet {__version__}, "
            f"kernel {_core.get_isa()}; threads' cache-line round trip "
            f"{round_trip_text(round_trip())}")


def describe(threads, torch):
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads,
            "round_trip_ns": round_trip(),
            "scratchnet": __version__, "isa": _core.get_isa(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None}
