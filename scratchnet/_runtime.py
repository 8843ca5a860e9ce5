"""Run-time configuration read once at import: SCRATCHNET_ISA forces a GEMM
kernel path, OMP_NUM_THREADS (or SCRATCHNET_NUM_THREADS) the thread count."""
import os
import platform
import warnings

from . import _core


# the kernel SCRATCHNET_ISA forced at import (None: none, or one refused)
FORCED_ISA = None


def configure_from_environment():
    global FORCED_ISA
    name = os.environ.get("SCRATCHNET_ISA", "").strip().lower()
    if name:
        try:
            _core.set_isa(name)
            FORCED_ISA = name
        except ValueError as exc:
            warnings.warn(f"SCRATCHNET_ISA ignored: {exc}; using {_core.get_isa()}",
                          RuntimeWarning, stacklevel=3)
    threads = os.environ.get("SCRATCHNET_NUM_THREADS", "").strip()
    if threads:
        try:
            _core.set_num_threads(int(threads))
        except ValueError as exc:  # not a number, or one out of range (set_num_threads says)
            reason = exc if threads.lstrip("+-").isdigit() else "not a whole number"
            warnings.warn(f"SCRATCHNET_NUM_THREADS={threads!r} ignored: {reason}; using "
                          f"{_core.get_num_threads()}", RuntimeWarning, stacklevel=3)


def info():
    """What this build is and what it chose at run time."""
    from . import _fused, _tuning
    from ._version import __version__
    return {
        "version": __version__,
        # a hash of the compiled sources and flags (setup.py): keys the tuning file
        "build": _core.build_id(),
        "compiler": _core.compiler(),
        "openmp": _core.have_openmp(),
        "isa": _core.get_isa(),
        "isa_best": _core.best_isa(),
        "isa_supported": _core.supported_isas(),
        "threads": _core.get_num_threads(),
        "fused": _fused.ENABLED,  # the whole-network C path (SCRATCHNET_FUSED=0: off)
        "cpu": cpu_name(),
        "caches": _core.caches(),
        "gemm_blocks": {isa: _core.gemm_blocking(isa) for isa in _core.supported_isas()},
        # one image's layer of at least this many multiply-adds is cut in two halves,
        # the second for a helper thread; small_parallel_min: never
        "pair_min_flops": _core.pair_min_flops(),
        "tuning": _tuning.STATE["detail"],
    }


def cpu_name():
    """The CPU's model name (/proc/cpuinfo's "model name"), else what the
    platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
