"""Where a CNN training step spends its time: each layer's forward and
backward, timed layer by layer on one batch (after a warm-up), median over
steps. The network is the one of issue 8's benchmark:
conv5x5x32 - ReLU - maxpool2 - conv5x5x64 - ReLU - maxpool2 - dense 1024->128 - ReLU -
dense 10, batch 128, Adam.

    python benchmarks/profile_cnn.py [--steps 12] [--threads 2]
"""
import argparse
import platform
import time

import numpy as np

import scratchnet as sn
from scratchnet.bench import benchmark_cnn
from scratchnet.bench.options import positive_int, thread_count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=12, help="timed steps (default 12)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="default 128")
    parser.add_argument("--threads", type=thread_count, default=2, help="default 2")
    args = parser.parse_args(argv)
    sn.set_num_threads(args.threads)
    model, loss = benchmark_cnn(), sn.CrossEntropy()
    opt = sn.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size)
    names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(model.layers)]
    times = {name: ([], []) for name in names + ["loss", "optimizer"]}

    def timed(key, which, fn, *a, **k):
        start = time.perf_counter()
        out = fn(*a, **k)
        times[key][which].append(time.perf_counter() - start)
        return out

    for step in range(args.steps + 1):  # step 0 warms up
        h = x
        for name, layer in zip(names, model.layers):
            h = timed(name, 0, layer.forward, h, training=True)
        timed("loss", 0, loss.forward, h, y)
        d = timed("loss", 1, loss.backward)
        for i in range(len(model.layers) - 1, -1, -1):
            layer = model.layers[i]
            kwargs = {"input_grad": False} if i == 0 else {}
            d = timed(names[i], 1, layer.backward, d, **kwargs)
        timed("optimizer", 1, opt.step)
        if step == 0:
            for f, b in times.values():
                f.clear()
                b.clear()
    median = {k: (np.median(f) * 1e3 if f else 0.0, np.median(b) * 1e3 if b else 0.0)
              for k, (f, b) in times.items()}
    total = sum(f + b for f, b in median.values())
    print(f"scratchnet {sn.__version__}, {platform.processor() or platform.machine()}, "
          f"kernel {sn.info()['isa']}, {args.threads} threads, batch {args.batch_size}")
    print(f"{'layer':16s} {'forward ms':>10s} {'backward ms':>11s} {'share':>6s}")
    for key, (f, b) in median.items():
        print(f"{key:16s} {f:10.2f} {b:11.2f} {100 * (f + b) / total:5.1f}%")
    print(f"{'step':16s} {total:22.1f} ms  ({60000 / args.batch_size * total / 1e3:.0f} s per "
          f"60,000-image epoch at this rate)")


if __name__ == "__main__":
    main()
