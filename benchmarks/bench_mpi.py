"""One MNIST epoch, side by side: 2 MPI ranks x 1 thread each
(`mpiexec -n 2`, fit(distributed=True)) against 1 process x 2 threads.

The network is `scratchnet train`'s default: 784-512-256-10 with ReLU and
dropout 0.2, Adam lr 1e-3, batch 128 (on 2 ranks: 64 rows each per step, the
gradients summed by one allreduce of 535,818 floats, 2.1 MB, per step). Each
run is a new process (or job): it loads MNIST, trains an untimed warm-up
epoch on 6,000 images, then one timed epoch on all 60,000 (fit's
history["time"]); the two kinds take turns, and the medians are compared.
The distributed runs also time the allreduce of every step (the reduce
between backward and the optimizer step, waiting for the other rank
included). The aim: 2 ranks take at most 1.15x the time of 2 threads.

    python benchmarks/bench_mpi.py [--rounds 5]

Needs `pip install "scratchnet[mpi]"`; as root (containers) Open MPI also
needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, which this
script sets for its own mpiexec.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

AIM = 1.15
HIDDEN = (512, 256)


def worker(distributed):
    """One run: print {"epoch": s, "reduce": s per step, "steps": n} (rank 0)."""
    import scratchnet as sn
    from scratchnet import _sharding, datasets
    from scratchnet import distributed as dist

    reduce_seconds = []
    if distributed:
        plain = _sharding.Shard.reduce

        def timed(self, batch=None, ok=True):
            t = time.perf_counter()
            result = plain(self, batch, ok)
            reduce_seconds.append(time.perf_counter() - t)
            return result

        _sharding.Shard.reduce = timed
    (X, y), _ = datasets.load_mnist()
    sn.manual_seed(0)
    layers = [sn.Dense(784, HIDDEN[0]), sn.ReLU(), sn.Dropout(0.2), sn.Dense(*HIDDEN), sn.ReLU(),
              sn.Dropout(0.2), sn.Dense(HIDDEN[1], 10)]
    model = sn.Sequential(*layers)
    opt = sn.Adam(model.parameters(), lr=1e-3)
    model.fit(X[:6000], y[:6000], opt, epochs=1, batch_size=128, seed=0, verbose=0,
              distributed=distributed)  # warm-up: caches, page faults, first MPI messages
    reduce_seconds.clear()
    history = model.fit(X, y, opt, epochs=1, batch_size=128, seed=1, verbose=0,
                        distributed=distributed)
    if dist.is_main():
        steps = len(reduce_seconds)
        print(json.dumps({"epoch": history["time"][0], "steps": steps,
                          "reduce": sum(reduce_seconds) / steps if steps else 0.0,
                          "accuracy": history["accuracy"][0]}))


def machine_busy():
    """CPU seconds the whole machine has used (not idle, not iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def launch(distributed):
    """One run in new processes; (its result, the share of the CPUs others used)."""
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    script = [sys.executable, os.path.abspath(__file__), "--worker"]
    if distributed:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
        cmd = [mpiexec, "--oversubscribe", "-n", "2", "-x", "OMP_NUM_THREADS=1", *script,
               "--distributed"]
    else:
        cmd, env["OMP_NUM_THREADS"] = script, "2"
    wall, busy, own = time.perf_counter(), machine_busy(), children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True)
    wall, busy, own = time.perf_counter() - wall, machine_busy() - busy, children_cpu() - own
    others = max(0.0, busy - own) / (wall * os.cpu_count())
    return json.loads(proc.stdout.strip().splitlines()[-1]), others


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each kind")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {args.rounds}")
    if args.worker:
        return worker(args.distributed)
    from scratchnet.bench.machine import summary
    print(summary())
    print(f"784-{'-'.join(map(str, HIDDEN))}-10, dropout 0.2, Adam, batch 128, one 60,000-image "
          f"epoch; {args.rounds} rounds after a warm-up round, the order alternating")
    kinds = {"1 process x 2 threads": False, "2 ranks x 1 thread": True}
    results = {name: [] for name in kinds}
    for r in range(args.rounds + 1):
        order = list(kinds) if r % 2 == 0 else list(kinds)[::-1]
        for name in order:
            result, others = launch(kinds[name])
            if r:  # round 0 warms the file cache and the tuning cache up
                results[name].append((result, others))
                print(f"  round {r}: {name:22s} {result['epoch']:.3f} s  (others used "
                      f"{100 * others:.0f}% of the CPUs)", flush=True)
    medians = {name: statistics.median(res["epoch"] for res, _ in runs)
               for name, runs in results.items()}
    threads, ranks = medians["1 process x 2 threads"], medians["2 ranks x 1 thread"]
    runs = results["2 ranks x 1 thread"]
    reduce_ms = statistics.median(1e3 * res["reduce"] for res, _ in runs)
    steps = runs[0][0]["steps"]
    print(f"median epoch: 1 process x 2 threads {threads:.3f} s, 2 ranks x 1 thread "
          f"{ranks:.3f} s: ratio {ranks / threads:.2f} (aim <= {AIM})")
    print(f"allreduce per step on 2 ranks (2.1 MB, waiting included): median {reduce_ms:.2f} ms "
          f"x {steps} steps = {reduce_ms * steps / 1e3:.2f} s of the epoch "
          f"({100 * reduce_ms * steps / 1e3 / ranks:.0f}%)")
    return 0 if ranks <= AIM * threads else 1


if __name__ == "__main__":
    sys.exit(main())
