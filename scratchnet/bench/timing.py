"""Timing side by side: every competitor takes turns, round after round.

Each turn starts with a moment of untimed calls and each competitor reports
the median of its timed calls, so on a shared machine a slow spell hits only
a few of each one's rounds.
"""
import math
import statistics
import time

# Seconds of untimed calls before each turn. On a 2-core machine the threads
# the previous library leaves spinning slow the next one down (measured here:
# for up to ~0.1 s, calls up to 10x slower), whichever library it is.
SETTLE = 0.1
INFERENCE_BLOCK = 0.02  # seconds of inference calls per competitor and row in a round


def run_for(fn, seconds):
    """Call fn until `seconds` have passed (at least once); returns each call's seconds."""
    durations = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        now = time.perf_counter()
        durations.append(now - start)
        if now >= end:
            return durations


def interleaved(fns, rounds, block=0.0, settle=SETTLE, calls=None):
    """Time the callables in fns ({key: callable}) side by side.

    In each of `rounds` rounds each in turn first runs untimed for `settle`
    seconds (at least one call; the first time, this is its warm-up: fresh
    memory, caches, thread pools), then a block of timed calls: `calls` of
    them when given, else as many as fill `block` seconds, at least one.
    Returns {key: median seconds per call}."""
    counts = {}
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            untimed = run_for(fn, settle)
            counts.setdefault(key, calls or max(1, math.ceil(block / statistics.median(untimed))))
            for _ in range(counts[key]):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}
