"""Time to result from a fresh process: the README's one-liner (import scratchnet,
load MNIST, train a 784-128-10 MLP for two epochs, print the test accuracy) run as
new processes, timed from the start of each process to its end.

The runs import scratchnet with bytecode compiled, as a user's installed package
has it (pip compiles it on install): where the scratchnet they import has
modules without it (a source tree run with PYTHONDONTWRITEBYTECODE set, as on
the project's machine, would compile them again in every run, about 0.1 s), it
is compiled first, untimed, into their __pycache__ folders, and the line after
the CPU's says so.

Cold runs start from an empty user cache (XDG_CACHE_HOME is a new temporary
folder), so they gunzip and verify MNIST and write its decoded copy; warm runs
find that copy and memory-map it. Cold and warm runs take turns, so a change in
the machine's load falls on both. Prints each run, the medians, the CPU, the
load average and the share of the CPUs that other processes used meanwhile.

    python benchmarks/bench_time_to_result.py [--cold 3] [--warm 7]
"""
import argparse
import compileall
import importlib.util
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from scratchnet import bench
from scratchnet.bench.machine import cpu_sample

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def one_liner():
    with open(README, encoding="utf-8") as f:
        found = re.search(r'^python -c "import scratchnet as sn; .*"$', f.read(), re.MULTILINE)
    if found is None:
        sys.exit(f"{README} has no line `python -c \"import scratchnet as sn; ...\"`")
    return found.group(0)


def scratchnet_folder(python):
    """The folder of the scratchnet that `python -c` imports here (the runs' own)."""
    where = subprocess.run([python, "-c", "import os, scratchnet; "
                            "print(os.path.dirname(os.path.abspath(scratchnet.__file__)))"],
                           capture_output=True, text=True)
    if where.returncode != 0:
        sys.exit(f"cannot import scratchnet:\n{where.stderr}")
    return where.stdout.strip()


def compile_bytecode(folder):
    """Compile the modules under folder whose bytecode is missing or older than
    their source (compileall skips the others), as the runs read it: no -O
    whatever this process has. Returns what was done, as printed."""
    sources = [os.path.join(root, name) for root, _, names in os.walk(folder)
               for name in names if name.endswith(".py")]

    def stamp(path):
        cached = importlib.util.cache_from_source(path, optimization="")
        return os.stat(cached).st_mtime_ns if os.path.exists(cached) else None

    before = {path: stamp(path) for path in sources}
    compileall.compile_dir(folder, quiet=2, optimize=0)
    after = {path: stamp(path) for path in sources}
    compiled = sum(after[p] is not None and after[p] != before[p] for p in sources)
    left = sum(after[p] is None for p in sources)
    if not compiled and not left:
        return f"scratchnet from {folder}: bytecode compiled"
    done = f"{compiled} of its {len(sources)} modules compiled now (untimed)"
    if left:
        done += f"; {left} could not be (each run compiles them again)"
    return f"scratchnet from {folder}: {done}"


def timed_run(command, cache):
    """(wall seconds, the accuracy printed) of one new process using that user cache."""
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the one-liner failed:\n{proc.stderr}")
    return seconds, float(proc.stdout)


def others_share(start, start_children):
    """The share of all CPUs used by processes other than this one and its runs
    since start (cpu_sample()) and start_children (children_cpu())."""
    end = cpu_sample()
    if start is None or end is None:
        return None
    used = (end[1] - start[1]) - (end[2] - start[2]) - (children_cpu() - start_children)
    return max(0.0, used / ((end[0] - start[0]) * os.cpu_count()))


def children_cpu():
    """CPU seconds used by the runs this process has waited for."""
    times = os.times()
    return times.children_user + times.children_system


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=bench.positive_int, default=3,
                        help="runs with an empty user cache (default 3)")
    parser.add_argument("--warm", type=bench.positive_int, default=7,
                        help="runs with the decoded copy in the user cache (default 7)")
    args = parser.parse_args(argv)

    text = one_liner()
    command = [sys.executable, *shlex.split(text)[1:]]
    print(text)
    print(f"cpu: {bench.cpu_name()}, {os.cpu_count()} cores; load average before: "
          f"{load_average()}")
    print(compile_bytecode(scratchnet_folder(sys.executable)))
    times = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as folder:
        warm_cache = os.path.join(folder, "warm")
        timed_run(command, warm_cache)  # untimed: writes the decoded copy the warm runs read
        sample, sample_children = cpu_sample(), children_cpu()
        for i in range(max(args.cold, args.warm)):
            for kind, count in (("cold", args.cold), ("warm", args.warm)):
                if i >= count:
                    continue
                cache = os.path.join(folder, f"cold-{i}") if kind == "cold" else warm_cache
                seconds, accuracy = timed_run(command, cache)
                times[kind].append(seconds)
                print(f"{kind} run {i + 1}: {seconds:.2f} s, test accuracy {accuracy:.4f}, "
                      f"load average {load_average()}", flush=True)
        share = others_share(sample, sample_children)
    for kind, values in times.items():
        print(f"{kind}: median {statistics.median(values):.2f} s of {len(values)} runs "
              f"({min(values):.2f} to {max(values):.2f} s)")
    print(f"load average after: {load_average()}")
    if share is not None:
        print(f"other processes used {100 * share:.0f}% of the CPUs meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
