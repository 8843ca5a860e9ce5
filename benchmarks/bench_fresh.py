"""The same short training run in fresh Python processes, one after another,
and the spread of their speed: each process loads MNIST and trains
784-128-10 with Adam (lr 1e-3), batch 128, for a few epochs with --threads
threads, and prints fit's per-epoch times (history["time"]).

This catches a "slow mode" that lasts a whole process: in about one fresh
process in three, 2-thread training was seen running at 0.50-0.55 s per
epoch for the whole run against 0.22 s normally (issue 12). A run within one
process cannot show it; the spread over processes does: the min, median and
max of each process's mean epoch time, and how many processes were more than
1.5x the median, and more than 1.5x the fastest (the median is no guide
when most processes are slow).

    python benchmarks/bench_fresh.py [--runs 10] [--threads 2] [--epochs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from scratchnet.bench.options import positive_int, training_parser

SLOW_FACTOR = 1.5  # a process this many times the median mean epoch time is "slow"


def train_once(threads, epochs, train_size):
    """In a fresh process: load MNIST, train, print one JSON line with fit's
    seconds per epoch and the share of the CPUs other processes used meanwhile."""
    import scratchnet as sn
    from scratchnet.bench.machine import cpu_sample, others_share
    from scratchnet.bench.mlp import mlp_net

    sn.set_num_threads(threads)
    (X, y), _ = sn.datasets.load_mnist()
    X, y = X[:train_size], y[:train_size]
    net = mlp_net("adam-b128")  # 784-128-10, Adam lr 1e-3, batch 128: the MLP table's row
    start = cpu_sample()
    history = net.fit(X, y, epochs=epochs)
    print(json.dumps({"epoch_seconds": history["time"], "threads": sn.get_num_threads(),
                      "images": len(X), "other_cpu": others_share(start)}))


def spread(means):
    """min, median and max of the processes' mean epoch times, and how many
    processes took more than SLOW_FACTOR x the median ("slow") and more than
    SLOW_FACTOR x the fastest ("slow_vs_fastest": where most processes are
    slow, the median is one of them and only this count shows it)."""
    median, fastest = statistics.median(means), min(means)
    return {"min": fastest, "median": median, "max": max(means),
            "slow": sum(m > SLOW_FACTOR * median for m in means),
            "slow_vs_fastest": sum(m > SLOW_FACTOR * fastest for m in means)}


def child_command(args):
    return [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(args.threads),
            "--epochs", str(args.epochs), "--train-size", str(args.train_size)]


def main(argv=None):
    parser = training_parser(__doc__, "scratchnet threads in each process (default 2)")
    parser.add_argument("--runs", type=positive_int, default=10,
                        help="fresh processes, one after another (default 10)")
    parser.add_argument("--epochs", type=positive_int, default=3,
                        help="epochs each process trains (default 3)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        train_once(args.threads, args.epochs, args.train_size)
        return 0

    from scratchnet.bench.machine import summary

    print(f"{summary()}; {args.runs} fresh processes one after another, each: load MNIST, "
          f"784-128-10 Adam batch 128, {args.threads} threads, {args.epochs} epochs on "
          f"{min(args.train_size, 60_000)} images", flush=True)
    means = []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        try:
            proc = subprocess.run(child_command(args), capture_output=True, text=True)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        if proc.returncode != 0:
            print(f"run {run}: the process failed (exit {proc.returncode}):\n{proc.stderr}",
                  file=sys.stderr)
            return 1
        result = json.loads(proc.stdout.splitlines()[-1])
        epochs = result["epoch_seconds"]
        means.append(statistics.fmean(epochs))
        busy = ("" if result["other_cpu"] is None
                else f"; other processes used {100 * result['other_cpu']:.0f}% of the CPUs")
        print(f"run {run:2d}: epochs {' '.join(f'{t:.3f}' for t in epochs)} s; mean "
              f"{means[-1]:.3f} s; process {time.perf_counter() - start:.1f} s wall, "
              f"{result['threads']} threads{busy}", flush=True)
    s = spread(means)
    print(f"mean epoch time per process over {args.runs} processes: min {s['min']:.3f} s, "
          f"median {s['median']:.3f} s, max {s['max']:.3f} s")
    print(f"processes above {SLOW_FACTOR}x the median ({SLOW_FACTOR * s['median']:.3f} s): "
          f"{s['slow']} of {args.runs}")
    print(f"processes above {SLOW_FACTOR}x the fastest ({SLOW_FACTOR * s['min']:.3f} s): "
          f"{s['slow_vs_fastest']} of {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
