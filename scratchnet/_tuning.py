"""The GEMM tuned for this machine, once.

csrc/sn_blocking.c derives the GEMM's cache blocks (kc, mc, nc) from the
cache sizes the CPU reports. Here the blocks mc and nc around those, and,
where the CPU has two SIMD kernels (AVX2 and AVX-512), the kernel itself,
are timed on this machine the first time scratchnet is imported (well under
a second), and the winner is kept in ~/.cache/scratchnet/tuning.json, keyed
by CPU model, core count, the kernels the CPU supports, their kc,
scratchnet's version, the build (a hash of the compiled sources and flags)
and the rules here (a hash of this file); later imports only read it.
`scratchnet tune` times them again; SCRATCHNET_TUNE=0 uses the derived
blocks and the best kernel.

What may change: mc and nc change only the speed, never a bit of a result.
The kernel changes the rounding (as SCRATCHNET_ISA does), so a file made for
another CPU, core count, version, kc, build or rules is never used: it is
timed again.
kc orders the sums, so it is always derived, never timed.

Also timed: whether one image's first layer may be cut in two halves, the
second for a helper thread on the other core (pair_min_flops). Where the
cores are far apart (two vCPUs 0.4 us apart for a round trip, AMD EPYC Zen
5), handing a half over costs more than it saves; on that VM the distance
changes from minute to minute (0.1 us, then 0.4), so each call's shape is
also timed at run time, alone and paired now and then, and goes the faster
way (csrc/sn_pair_choice.c). Here only a pair that loses even so is turned
off. Speed only."""
import datetime
import hashlib
import json
import math
import os
import tempfile
import time

import numpy as np

from . import _core, _runtime, datasets
from ._runtime import cpu_name
from ._lines import on_lines, zeros_on_lines
from ._version import __version__

FILE_VERSION = 1
MAX_FILE_BYTES = 1 << 20  # a tuning file is a few KB: anything larger is not one
# the timed GEMMs (M, N, K), one thread: a large square one and one of an
# MLP's training step (a batch of 128 rows through 784 -> 512)
SHAPES = ((768, 768, 768), (128, 512, 784))
ROUNDS = 3             # the candidates take turns; each keeps its fastest call
BUDGET = 0.4           # seconds: no round starts after this
MIN_GAIN = 0.03        # the derived blocks and the best kernel give way only to a
#                        candidate this much faster: noise on a shared machine is no reason

# one image through 784-H-10 for each H: first layers of 100,352 and 200,704
# multiply-adds, within the range where a GEMM of a few rows may be paired
PAIR_HIDDEN = (128, 256)
PAIR_CALLS = 200       # calls in a timed block (about a millisecond)
PAIR_ROUNDS = 5
# The halves are kept unless they were this much slower than one thread.
# Timed at run time too (the pair_timing default), they go alone where the
# other CPU is far or busy, so paired_us is above alone_us only by that
# timing's cost and the noise of a shared machine; turned off in the file,
# they stay off when the CPUs come close again. At 3% a file made while
# the two vCPUs were far (paired_us 2.10 against 2.0, AMD EPYC Zen 5,
# 2026-11-28) turned them off for good, and one image through 784-128-10
# then took 2.5 us a call, against 2.2 paired, whenever the vCPUs were
# close. Before the run-time timing, 784-128-10's halves, 10% faster here,
# gave the bench's batch-1 row 3.3-3.4 us in three of eight runs against
# 2.6-2.7 on one thread, and only halves 15% faster were kept.
PAIR_MAX_LOSS = 0.10

# how the GEMM was configured at import: read by info() and `scratchnet info`
STATE = {"source": "derived", "detail": "not configured yet"}


def tuning_path():
    return datasets.user_cache_root() / "tuning.json"


def _rules_hash():
    """The first 16 hex digits of a SHA-256 of this file (the rules a choice
    is made by), "unknown" where it cannot be read."""
    try:
        with open(__file__, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return "unknown"


def machine_key():
    """What a tuning is valid for. With each kernel's kc (derived from the
    caches, never timed): the mc and nc timed were timed with it, and a
    build that derives another kc times them again. With the build's hash
    (setup.py's build_hash: the compiled sources and flags) and the rules':
    other kernels or other rules time them again, where the version alone
    kept, between two development builds of one version, a choice the older
    made (one image through 784-128-10 went alone for hours under a pair
    rule since changed)."""
    isas = list(_core.supported_isas())
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "isas": isas,
            "kc": {isa: _core.gemm_blocking(isa)["kc"] for isa in isas},
            "version": __version__, "build": _core.build_id(), "rules": _rules_hash()}


def _simd_isas():
    """The kernels worth timing: every supported one but the generic one,
    unless it is the only one."""
    isas = [isa for isa in _core.supported_isas() if isa != "generic"]
    return isas or ["generic"]


def _derived(isa):
    """(mr, nr, mc, nc) of isa with the blocks derived from the caches."""
    _core.set_gemm_blocks(isa, 0, 0)
    b = _core.gemm_blocking(isa)
    return b["mr"], b["nr"], b["mc"], b["nc"]


def candidates(isa):
    """(mc, nc) pairs to time for isa, the derived pair first: mc at a
    quarter, half, once and twice the derived one, and nc at the derived one
    and at a quarter of it (rounded to the tile, within the C bounds)."""
    mr, nr, mc0, nc0 = _derived(isa)
    mcs = [mc0] + [min(max(mr, round(mc0 * f / mr) * mr), 1024 // mr * mr)
                   for f in (0.125, 0.25, 0.5, 2.0)]
    ncs = [nc0, max(nr, nc0 // 4 // nr * nr)]
    pairs = [(mc, nc0) for mc in mcs] + [(mc0, nc) for nc in ncs[1:]]
    return list(dict.fromkeys(pairs))  # unique, in order


def timed_shapes(isas=None, shapes=None):
    """The GEMMs (M, N, K) time_candidates times for these kernels (shapes:
    SHAPES): with the generic kernel alone (slower), smaller ones, to keep
    within the budget."""
    shapes = SHAPES if shapes is None else shapes
    if list(isas or _simd_isas()) == ["generic"]:
        return [tuple(min(d, 512) for d in shape) for shape in shapes]
    return [tuple(shape) for shape in shapes]


def time_candidates(isas=None, rounds=ROUNDS, budget=BUDGET, shapes=None):
    """[{"isa", "mc", "nc", "seconds", "gflops"}] for every candidate of
    every isa: its fastest call of each GEMM of timed_shapes(isas, shapes)
    on one thread, summed, the candidates taking turns round after round.
    Restores the kernel, the blocks and the thread count it found."""
    isas = list(isas or _simd_isas())
    shapes = timed_shapes(isas, shapes)
    cands = [(isa, mc, nc) for isa in isas for mc, nc in candidates(isa)]
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, k), dtype=np.float32),
                 rng.standard_normal((k, n), dtype=np.float32), np.empty((m, n), np.float32))
                for m, n, k in shapes]
    best = {(c, i): math.inf for c in cands for i in range(len(shapes))}
    saved_isa, saved_threads = _core.get_isa(), _core.get_num_threads()
    saved_blocks = {isa: _core.gemm_blocking(isa) for isa in isas}
    start = time.perf_counter()
    try:
        _core.set_num_threads(1)  # the blocks are per core's caches
        for r in range(rounds + 1):  # round 0 warms up (pages, packing buffers)
            if r > 1 and time.perf_counter() - start > budget:
                break
            for isa, mc, nc in cands:
                _core.set_isa(isa)
                _core.set_gemm_blocks(isa, mc, nc)
                for i, (A, B, C) in enumerate(operands):
                    t0 = time.perf_counter()
                    _core.gemm(A, B, C)
                    if r > 0:
                        key = ((isa, mc, nc), i)
                        best[key] = min(best[key], time.perf_counter() - t0)
    finally:
        _core.set_isa(saved_isa)
        _core.set_num_threads(saved_threads)
        for isa, b in saved_blocks.items():
            _restore_blocks(isa, b)
    flop = sum(2.0 * m * n * k for m, n, k in shapes)
    rows = []
    for isa, mc, nc in cands:
        seconds = sum(best[(isa, mc, nc), i] for i in range(len(shapes)))
        rows.append({"isa": isa, "mc": mc, "nc": nc, "seconds": seconds,
                     "gflops": flop / seconds / 1e9})
    return rows


def never_paired():
    """pair_min_flops's value for never: where the threads take over."""
    return _core.gemm_blocking(_core.get_isa())["small_parallel_min"]


def time_pair(hidden=PAIR_HIDDEN, rounds=PAIR_ROUNDS, calls=PAIR_CALLS):
    """[{"hidden", "flops", "paired_us", "alone_us"}]: microseconds per call
    of one image through a 784-hidden-10 network (_core.MLP.predict), its
    first layer (flops multiply-adds) allowed to go in two halves, the
    second for the helper thread (pair_min_flops at its default: the halves
    as the run-time timing chooses them, csrc/sn_pair_choice.c), or computed
    on one thread (never), the two taking turns, each block after untimed
    calls; each the fastest block's mean. Restores the threshold and the
    thread count."""
    rng = np.random.default_rng(1)
    x = rng.random((1, 784), dtype=np.float32)
    never = never_paired()
    saved, saved_threads = _core.pair_min_flops(), _core.get_num_threads()
    rows = []
    try:
        _core.set_num_threads(max(2, saved_threads))  # a pair needs a second thread
        for h in hidden:
            # weights on lines, as a model's are: each thread's half of a
            # row then its own lines (16 bytes off, the halves shared one and
            # were 2.8 us a call against 2.4 on one thread; on lines 2.4-2.3)
            layers = [(on_lines(rng.standard_normal((784, h), dtype=np.float32) * 0.05),
                       zeros_on_lines(h), None, None, "relu", 0.0, 0.0),
                      (on_lines(rng.standard_normal((h, 10), dtype=np.float32) * 0.1),
                       zeros_on_lines(10), None, None, "none", 0.0, 0.0)]
            net = _core.MLP(layers, 1, False)
            best = {0: math.inf, never: math.inf}
            for r in range(rounds + 1):  # round 0 warms up
                for setting in best:
                    _core.set_pair_min_flops(setting)
                    # untimed calls first: the helper sleeps after 200 us
                    # without a half (the other setting's block), and a loop
                    # of calls finds it awake (timed from asleep, each block
                    # was mostly its wake-up: 3.8 us a call instead of 2.4)
                    for _ in range(calls // 4):
                        net.predict(x)
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        net.predict(x)
                    if r > 0:
                        best[setting] = min(best[setting], (time.perf_counter() - t0) / calls)
            rows.append({"hidden": h, "flops": 784 * h, "paired_us": best[0] * 1e6,
                         "alone_us": best[never] * 1e6})
    finally:
        _core.set_pair_min_flops(saved)
        _core.set_num_threads(saved_threads)
    return rows


def choose_pair(rows):
    """pair_min_flops from time_pair's rows: the default (0) if the halves
    were at most PAIR_MAX_LOSS slower for every network timed; else the first
    layer of the smallest network from which they were for every larger one;
    else never."""
    rows = sorted(rows, key=lambda row: row["flops"])
    start = len(rows)
    while (start > 0 and
           rows[start - 1]["paired_us"] <= rows[start - 1]["alone_us"] * (1 + PAIR_MAX_LOSS)):
        start -= 1
    if start == 0:
        return 0
    return rows[start]["flops"] if start < len(rows) else never_paired()


def choose(timings, default_isa=None):
    """The choice from time_candidates' rows: per kernel, the fastest blocks
    unless the derived ones (each kernel's first row) are within MIN_GAIN of
    them; then the fastest kernel, unless the default one (the best the CPU
    supports) is within MIN_GAIN of it. {"isa": name, "blocks": {isa: [mc, nc]}}."""
    by_isa = {}
    for row in timings:
        by_isa.setdefault(row["isa"], []).append(row)
    blocks, seconds = {}, {}
    for isa, rows in by_isa.items():
        derived, fastest = rows[0], min(rows, key=lambda row: row["seconds"])
        pick = derived if derived["seconds"] <= fastest["seconds"] * (1 + MIN_GAIN) else fastest
        blocks[isa], seconds[isa] = [pick["mc"], pick["nc"]], pick["seconds"]
    default_isa = default_isa if default_isa in seconds else max(seconds, key=_isa_rank)
    fastest_isa = min(seconds, key=seconds.get)
    isa = default_isa if seconds[default_isa] <= seconds[fastest_isa] * (1 + MIN_GAIN) \
        else fastest_isa
    return {"isa": isa, "blocks": blocks}


def _restore_blocks(isa, blocking):
    """Put back the blocks gemm_blocking(isa) gave: the set ones, or the
    derived ones (0, 0)."""
    tuned = blocking["tuned"]
    _core.set_gemm_blocks(isa, blocking["mc"] if tuned else 0, blocking["nc"] if tuned else 0)


def _isa_rank(isa):
    return _core.isa_names().index(isa)


def _valid_choice(choice):
    """The choice if it is well formed and one tune() could have made here
    (a kernel it times: never the generic one where a SIMD one runs), with
    blocks this build accepts; else None."""
    timed = _simd_isas()
    if not (isinstance(choice, dict) and choice.get("isa") in timed
            and isinstance(choice.get("blocks"), dict) and choice["blocks"]):
        return None
    for isa, pair in choice["blocks"].items():
        if isa not in timed or not (isinstance(pair, list) and len(pair) == 2
                                    and all(type(v) is int for v in pair)):
            return None
        saved = _core.gemm_blocking(isa)
        try:
            _core.set_gemm_blocks(isa, pair[0], pair[1])  # the C checks decide
        except (ValueError, OverflowError):  # out of range, or beyond a C integer
            return None
        finally:
            _restore_blocks(isa, saved)
    pair = choice.get("pair_min_flops")
    if type(pair) is not int or not 0 <= pair <= never_paired():
        return None
    return choice


def load(path=None):
    """The saved choice for this machine, or (None, why not)."""
    path = path or tuning_path()
    try:
        if not path.exists():
            return None, "no tuning file yet"
        # a FIFO or a device would block the import or never end
        if not path.is_file():
            return None, f"{path} is not a regular file: timed again"
        with open(path, "rb") as f:
            text = f.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            return None, f"{path} larger than a tuning file: timed again"
        record = json.loads(text.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, not JSON, nested too deep
        return None, f"{path} unreadable ({type(exc).__name__}): timed again"
    if not isinstance(record, dict) or record.get("file_version") != FILE_VERSION:
        return None, f"{path}: another format: timed again"
    if record.get("machine") != machine_key():
        return None, (f"{path}: made for another CPU, core count, version, kc, build or "
                      "tuning rules: timed again")
    choice = _valid_choice(record.get("choice"))
    if choice is None:
        return None, f"{path}: a choice this machine cannot apply: timed again"
    return choice, f"read from {path}"


def save(choice, timings, path=None, pair_timings=None):
    """Writes the record atomically (a temporary file renamed over it)."""
    path = path or tuning_path()
    record = {"file_version": FILE_VERSION, "machine": machine_key(), "choice": choice,
              "timings": timings, "pair_timings": pair_timings,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def apply(choice):
    """Sets every timed kernel's blocks, and the kernel unless SCRATCHNET_ISA
    forced one (a name it refused forces none)."""
    for isa, (mc, nc) in choice["blocks"].items():
        _core.set_gemm_blocks(isa, mc, nc)
    _core.set_pair_min_flops(choice["pair_min_flops"])
    if _runtime.FORCED_ISA is None:
        _core.set_isa(choice["isa"])


def tune(path=None):
    """Times the candidates, applies and saves the choice; returns (choice,
    timings, where it was saved or why not). The pair is timed with the
    chosen kernel and blocks; its rows are in STATE["pair_timings"]. If
    the timing fails, the kernel, blocks and pair threshold it found are
    put back before the error propagates."""
    saved_isa, saved_pair = _core.get_isa(), _core.pair_min_flops()
    saved_blocks = {isa: _core.gemm_blocking(isa) for isa in _core.supported_isas()}
    try:
        timings = time_candidates()
        choice = choose(timings, default_isa=_core.best_isa())
        apply(dict(choice, pair_min_flops=0))
        pair_timings = time_pair()
        choice["pair_min_flops"] = choose_pair(pair_timings)
        apply(choice)
    except BaseException:
        _core.set_isa(saved_isa)
        _core.set_pair_min_flops(saved_pair)
        for isa, b in saved_blocks.items():
            _restore_blocks(isa, b)
        raise
    STATE["pair_timings"] = pair_timings
    path = path or tuning_path()
    try:
        save(choice, timings, path, pair_timings)
        saved = f"saved to {path}"
    except OSError as exc:
        where = exc.filename or path
        saved = f"not saved ({where}: {exc.strerror or exc}): timed again at the next import"
    STATE.update(source="tuned", detail=f"timed now, {saved}", choice=choice)
    return choice, timings, saved


def configure():
    """At import: the saved choice, else a tuning now; nothing with
    SCRATCHNET_TUNE=0. Never fails the import: on any error the derived
    blocks stay and info() says why."""
    if os.environ.get("SCRATCHNET_TUNE", "").strip() == "0":
        STATE.update(source="derived", detail="SCRATCHNET_TUNE=0: blocks derived from the caches")
        return
    try:
        choice, why = load()
        if choice is None:
            tune()
            STATE["detail"] += f" ({why})"
            return
        apply(choice)
        STATE.update(source="tuned", detail=why, choice=choice)
    except Exception as exc:  # a tuning problem must never stop scratchnet from working
        STATE.update(source="derived", detail=f"tuning failed ({type(exc).__name__}: {exc}): "
                                               "blocks derived from the caches")
