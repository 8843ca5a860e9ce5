"""The MNIST CNN of issue 8, scratchnet vs PyTorch in one run: conv5x5x32 -
ReLU - maxpool2 - conv5x5x64 - ReLU - maxpool2 - dense 1024->128 - ReLU -
dense 10, batch 128, Adam 1e-3, both libraries from the same initial weights
on the same real MNIST batches and with the same thread count.

Training: a fixed number of steps, scratchnet's and PyTorch's rounds taking
turns after a warm-up; the median step is extrapolated to a 60,000-image
epoch. Inference: predict_proba on one image (PyTorch under inference_mode).
The training rate is also given as a share of this machine's NumPy SGEMM rate
(1024^3, measured in the same run), counting the network's training FLOPs from
its layer shapes.

Run it with OpenBLAS's tuning variables unset, or NumPy may be slowed:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cnn.py
"""
import argparse
import sys

from scratchnet import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    full = bench.CNN_SETTINGS["full"]
    parser.add_argument("--threads", type=bench.thread_count, default=2,
                        help="threads for both libraries (default 2)")
    parser.add_argument("--rounds", type=bench.positive_int, default=full["rounds"],
                        help=f"alternating rounds of timed training steps (default "
                             f"{full['rounds']})")
    parser.add_argument("--steps", type=bench.positive_int, default=full["calls"],
                        help=f"timed training steps per library and round (default "
                             f"{full['calls']})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object; the rows are under 'cnn'")
    args = parser.parse_args(argv)
    settings = dict(full, rounds=args.rounds, calls=args.steps)
    return bench.run(cnn=settings, threads=args.threads, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
