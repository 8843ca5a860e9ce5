# Run-time state: GEMM kernel choice (ISA) and threads.
import os as _os

_ISA_BY_NAME = {"generic": SN_ISA_GENERIC, "avx2": SN_ISA_AVX2, "avx512": SN_ISA_AVX512}


def isa_names():
    """All ISA names this build knows, lowest first."""
    return list(_ISA_BY_NAME)


def supported_isas():
    """The ISA names this CPU and OS can run, lowest first."""
    return [name for name, isa in _ISA_BY_NAME.items() if sn_isa_supported(isa)]


def best_isa():
    return sn_isa_name(sn_isa_best()).decode()


def get_isa():
    return sn_isa_name(sn_get_isa()).decode()


def set_isa(str name):
    """Force the GEMM micro-kernel: 'generic', 'avx2' or 'avx512' (the
    optimizers' loops follow: AVX2 from 'avx2' up, with the same results)."""
    if name not in _ISA_BY_NAME:
        raise ValueError(f"unknown ISA {name!r}; expected one of {isa_names()}")
    if sn_set_isa(_ISA_BY_NAME[name]) != SN_OK:
        raise ValueError(f"ISA {name!r} is not supported by this CPU/OS; "
                         f"supported: {supported_isas()}")


def gemm_blocking(str name):
    """The GEMM blocking of an ISA's kernel: register tile mr x nr, cache
    blocks kc, mc, nc, small_m (the most rows computed without packing),
    parallel_min (the multiply-adds from which a GEMM uses threads),
    tuned (mc and nc were set by set_gemm_blocks, else derived from the
    caches), mr_tail (the rows of the tail kernel's tile, for a block's
    last rows; 0: none) and small_parallel_min (the multiply-adds from
    which a GEMM of at most small_m rows uses threads)."""
    if name not in _ISA_BY_NAME:
        raise ValueError(f"unknown ISA {name!r}; expected one of {isa_names()}")
    cdef int64_t out[10]
    _check(sn_gemm_blocking(_ISA_BY_NAME[name], out), "gemm_blocking")
    return dict(mr=out[0], nr=out[1], kc=out[2], mc=out[3], nc=out[4], small_m=out[5],
                parallel_min=out[6], tuned=bool(out[7]), mr_tail=out[8],
                small_parallel_min=out[9])


def set_gemm_blocks(str name, int64_t mc, int64_t nc):
    """Set an ISA's GEMM blocks mc and nc (multiples of its mr and nr, at
    most 1024 and 8192); mc = nc = 0: back to those derived from the caches.
    They change the speed only, never a result."""
    if name not in _ISA_BY_NAME:
        raise ValueError(f"unknown ISA {name!r}; expected one of {isa_names()}")
    if sn_set_gemm_blocks(_ISA_BY_NAME[name], mc, nc) != SN_OK:
        raise ValueError(f"set_gemm_blocks: mc={mc}, nc={nc} refused for {name!r} (mc a multiple "
                         f"of mr up to 1024, nc of nr up to 8192, or both 0; the ISA supported)")


def pair_min_flops():
    """The multiply-adds (M x N x K) from which a GEMM of a few rows (one
    image through a layer) is cut in two halves, the second for a helper
    thread; gemm_blocking's small_parallel_min when it never is."""
    return sn_get_pair_min_flops()


def set_pair_min_flops(flops):
    """Set pair_min_flops: 0 for the default, small_parallel_min for never.
    The speed only, never a result."""
    # a whole number: 1.5 and True were taken (as 1)
    if isinstance(flops, (bool, np.bool_)) or not isinstance(flops, (int, np.integer)):
        raise TypeError(f"set_pair_min_flops: a number of multiply-adds must be an int, "
                        f"got {flops!r}")
    if not 0 <= flops <= 1 << 62 or sn_set_pair_min_flops(int(flops)) != SN_OK:
        raise ValueError(f"set_pair_min_flops: {flops} refused (0 for the default, up to "
                         f"small_parallel_min for never)")


def pair_timing():
    """Whether each shape of such a GEMM is timed at run time, alone and in
    two halves now and then, and goes the faster way (the default); else
    it is always cut in two where pair_min_flops says so."""
    return bool(sn_get_pair_timing())


def set_pair_timing(on):
    """Time the pair at run time (True, the default) or always cut in two
    (False: the tests that need the helper). The speed only, never a result."""
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"set_pair_timing: on must be a bool, got {on!r}")
    sn_set_pair_timing(1 if on else 0)


def caches():
    """The caches the GEMM blocks are derived from: bytes of L1d, L2 and L3
    (0: none reported), the logical CPUs sharing L2 and L3, and the source
    ("cpuid", "sysconf" or "defaults")."""
    cdef int64_t out[5]
    source = sn_caches(out).decode()
    return dict(l1d=out[0], l2=out[1], l3=out[2], l2_sharing=out[3], l3_sharing=out[4],
                source=source)


# the most threads set_num_threads takes
MAX_THREADS = SN_MAX_THREADS


def set_num_threads(n):
    # a whole number: 2.0 and True were taken (as 2 and 1)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: the number of threads must be an int, got {n!r}")
    if n < 1 or n > SN_MAX_THREADS:
        raise ValueError(f"number of threads must be in [1, {SN_MAX_THREADS}], got {n} "
                         f"(this machine has {_os.cpu_count()} CPUs)")
    if n > 1 and sn_forked_after_threads():
        import warnings
        warnings.warn("set_num_threads: this process was forked after scratchnet had started "
                      "threads, and OpenMP cannot start them again here: it runs on 1 thread. "
                      "Start worker processes with multiprocessing's 'spawn' or 'forkserver' "
                      "method to use threads in them.", RuntimeWarning, stacklevel=2)
    sn_set_num_threads(int(n))


def get_num_threads():
    return sn_get_num_threads()


def parallel_backoff(bint on):
    """False: parallel regions always use the threads set (no back-off
    under contention), any back-off under way ended; True: back to normal.
    For tests that compare thread counts and must really run on them."""
    sn_parallel_backoff(on)


def max_threads():
    return sn_max_threads()


def have_openmp():
    return bool(sn_have_openmp())


def thread_round_trip_ns(rounds=20000):
    """Nanoseconds for a cache line to go from one of the library's threads
    to another and back (the median of runs of `rounds` round trips), or None
    where it cannot be measured (fewer than two threads; one waited 0.1 s for
    the other; over 1 s in all). On a virtual machine it tells whether the
    vCPUs are close or far apart, which moves training speed; on a busy
    machine it reads higher (sn_runtime.c)."""
    if isinstance(rounds, (bool, np.bool_)) or not isinstance(rounds, (int, np.integer)):
        raise TypeError(f"thread_round_trip_ns: rounds must be an int, got {rounds!r}")
    if not 100 <= rounds <= 1 << 20:
        raise ValueError(f"thread_round_trip_ns: rounds must be in [100, {1 << 20}], "
                         f"not {rounds}")
    cdef int64_t n = rounds
    cdef double ns
    with nogil:
        ns = sn_thread_round_trip_ns(n)
    return None if ns < 0.0 else ns


def compiler():
    return sn_compiler().decode().strip()


cdef extern from *:
    """
    #ifndef SN_BUILD_ID /* a build by other means than setup.py */
    #define SN_BUILD_ID "unknown"
    #endif
    """
    const char *SN_BUILD_ID


def build_id():
    """A hash of the sources this extension was built from and of its
    compiler flags (setup.py's build_hash), "unknown" without one."""
    return SN_BUILD_ID.decode()
