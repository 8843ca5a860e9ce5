"""Training with 1 thread and with 2 threads, alternately in one process:
first on the machine as it is (the report says how busy other processes kept
it), then while a busy loop holds one core.

The competing process is `taskset -c 1 sh -c 'while :; do :; done'`, started
by this script and always killed by it (at the end, on an error or Ctrl-C,
and by the kernel should this process die: PR_SET_PDEATHSIG). Each timed
unit is one epoch of 784-128-10 with Adam, batch 128 (the MLP table's
adam-b128 row, fit's history["time"]), after an untimed warm-up epoch with
each thread count; the order of the two turns each round. Reported: the
median epoch of each, and their ratio. Under contention 2 threads should
never be more than 10% slower than 1 (a ratio of at most 1.10): a parallel
region waits for the thread the busy loop displaces, and scratchnet's
back-off (csrc/sn_runtime.c) runs serially while that happens.

    python benchmarks/bench_contention.py [--rounds 9] [--threads 2] [--contended-only]
"""
import contextlib
import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys

import scratchnet as sn
from scratchnet.bench.machine import cpu_sample, others_share, summary
from scratchnet.bench.mlp import mlp_net
from scratchnet.bench.options import positive_int, training_parser

AIM = 1.10  # the most that N threads may take over 1 thread under contention
BUSY_LOOP = ["sh", "-c", "while :; do :; done"]


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_at_once_on_signals():
    """Ctrl-C raises KeyboardInterrupt at once, even inside fit (fit leaves a
    handler of the program's own in place; its own would finish the step and
    return, and drops a Ctrl-C that comes after an epoch's last step), and
    SIGTERM ends the process through SystemExit: either way `finally` blocks
    run and the busy loop is killed."""
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def kill_with_parent():
    """A preexec_fn: the child gets SIGKILL when this process dies (Linux
    prctl(PR_SET_PDEATHSIG)); resolved here, before any fork."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


@contextlib.contextmanager
def busy_core(core):
    """A busy loop pinned to `core` for the duration of the block."""
    proc = subprocess.Popen(["taskset", "-c", str(core), *BUSY_LOOP], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=kill_with_parent())
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def contention_core():
    """The core to keep busy (1, or the second this process may run on), and
    why there is none: (core, None) or (None, reason)."""
    if shutil.which("taskset") is None:
        return None, "taskset is not installed"
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return None, f"this process may run on {len(cores) or 'only one'} CPU"
    return (1 if 1 in cores else cores[1]), None


def epoch_seconds(net, X, y, threads):
    sn.set_num_threads(threads)
    return net.fit(X, y, epochs=1)["time"][0]


def alternate(net, X, y, thread_counts, rounds):
    """{threads: [seconds per epoch]}: one untimed epoch with each thread
    count, then `rounds` rounds of one timed epoch each, the order turning."""
    for threads in thread_counts:
        epoch_seconds(net, X, y, threads)
    times = {threads: [] for threads in thread_counts}
    for r in range(rounds):
        for threads in (thread_counts if r % 2 == 0 else thread_counts[::-1]):
            times[threads].append(epoch_seconds(net, X, y, threads))
    return times


def report(title, times, busy):
    """Print one phase: every epoch, the medians and their ratio; returns the ratio."""
    medians = {threads: statistics.median(seconds) for threads, seconds in times.items()}
    print(f"{title}{'' if busy is None else f' (other processes: {100 * busy:.0f}% of the CPUs)'}")
    for threads, seconds in sorted(times.items()):
        print(f"  {threads} thread{'s' if threads > 1 else ''}: median {medians[threads]:.3f} s "
              f"per epoch; each: {' '.join(f'{t:.3f}' for t in seconds)}")
    one, many = sorted(times)
    ratio = medians[many] / medians[one]
    print(f"  {many} threads / 1 thread: {ratio:.2f}", flush=True)
    return ratio


def phase(title, net, X, y, thread_counts, rounds):
    start = cpu_sample()
    times = alternate(net, X, y, thread_counts, rounds)
    return report(title, times, others_share(start))


def main(argv=None):
    parser = training_parser(__doc__, "the thread count compared with 1 (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=9,
                        help="timed epochs per thread count and phase (default 9)")
    parser.add_argument("--contended-only", action="store_true",
                        help="skip the phase without the busy loop")
    args = parser.parse_args(argv)
    if args.threads < 2:
        parser.error("--threads must be at least 2")
    stop_at_once_on_signals()
    print(f"{summary()}; 784-128-10 Adam batch 128 epochs, 1 and {args.threads} threads "
          f"alternately, {args.rounds} timed epochs each per phase", flush=True)
    (X, y), _ = sn.datasets.load_mnist()
    X, y = X[:args.train_size], y[:args.train_size]
    net = mlp_net("adam-b128")
    counts = (1, args.threads)
    threads_before = sn.get_num_threads()
    try:
        if not args.contended_only:
            phase("without the busy loop:", net, X, y, counts, args.rounds)
        core, reason = contention_core()
        if core is None:
            print(f"contended part skipped: {reason}")
            return 0
        with busy_core(core) as busy:
            print(f"busy loop: pid {busy.pid}, pinned to core {core}", flush=True)
            ratio = phase(f"with the busy loop on core {core}:", net, X, y, counts, args.rounds)
        verdict = "within" if ratio <= AIM else "ABOVE"
        print(f"under contention {args.threads} threads / 1 thread: {ratio:.2f} ({verdict} the "
              f"aim of at most {AIM:.2f})")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        sn.set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
