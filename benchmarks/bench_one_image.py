"""One-image inference on 1 thread and on 2, alternately in one process: the
784-128-10 network of the MLP table (its initial weights) predicts one MNIST
image at a time, `predict_proba`, in blocks of calls, the thread count
switching between blocks (`scratchnet.set_num_threads`). On 2 threads the
first layer's 1 x 784 x 128 product is cut in two halves, the second for a
helper thread (csrc/sn_helper.c). Reported: each one's median call over the
blocks, and the median of the per-round ratios (1 thread / 2 threads: above
1, two are faster). Run it idle, and beside a busy loop on one core
(`taskset -c 1 sh -c 'while :; do :; done'`) to see that a busy core costs
little.

    python benchmarks/bench_one_image.py [--rounds 15] [--calls 4000]
"""
import argparse
import statistics
import time

import scratchnet as sn
from scratchnet import datasets
from scratchnet.bench.machine import cpu_sample, others_share, summary
from scratchnet.bench.mlp import mlp_net
from scratchnet.bench.options import positive_int

WARM_UP = 500  # untimed calls before each block: the thread count just changed


def block_us(predict, calls):
    """Mean microseconds per call over `calls` calls, after the warm-up."""
    for _ in range(WARM_UP):
        predict()
    start = time.perf_counter()
    for _ in range(calls):
        predict()
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=15,
                        help="rounds of one block on each thread count (default 15)")
    parser.add_argument("--calls", type=positive_int, default=4000,
                        help="timed calls per block (default 4000)")
    args = parser.parse_args(argv)

    (X, _), _ = datasets.load_mnist()
    model = mlp_net("infer-b1", inputs=X.shape[1]).model
    x = X[:1]
    print(summary())
    blocks = {1: [], 2: []}
    sample = cpu_sample()
    previous = sn.get_num_threads()
    try:
        for turn in range(args.rounds):
            for threads in ((1, 2) if turn % 2 == 0 else (2, 1)):
                sn.set_num_threads(threads)
                blocks[threads].append(block_us(lambda: model.predict_proba(x), args.calls))
    finally:
        sn.set_num_threads(previous)
    share = others_share(sample)
    ratios = [one / two for one, two in zip(blocks[1], blocks[2])]
    print(f"1 thread: median {statistics.median(blocks[1]):.2f} us per call")
    print(f"2 threads: median {statistics.median(blocks[2]):.2f} us per call")
    print(f"1 thread / 2 threads, median of {args.rounds} rounds: "
          f"{statistics.median(ratios):.3f}")
    if share is not None:
        print(f"other processes used {100 * share:.0f}% of the CPUs meanwhile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
