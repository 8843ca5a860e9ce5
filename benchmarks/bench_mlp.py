"""MNIST MLP training time per epoch and inference speed, scratchnet vs a
hand-written NumPy MLP vs the idiomatic PyTorch loop: the same networks,
initial weights and data order, with each one's test accuracy. Each training
row also gives each library's training rate as a share of this machine's
NumPy SGEMM rate (1024^3, measured in the same run), counting the network's
training FLOPs from its layer sizes (784-128-10: 24.5 GFLOP per 60,000-image
epoch; 784-512-256-10: 144.4).

Run it with OpenBLAS's tuning variables unset, or NumPy may be slowed:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mlp.py
"""
import argparse
import sys

from scratchnet import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=bench.thread_count, default=2,
                        help="threads for all three libraries (default 2)")
    parser.add_argument("--epochs", type=bench.positive_int, default=None,
                        help="timed epochs per training row, after a warm-up one "
                             "(default 3, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="only sgd-b128 (on 10,000 images, 1 timed epoch) and infer-b1")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object; the rows are under 'mlp'")
    parser.add_argument("--rows", type=bench.parse_rows, default=None,
                        help=f"rows to run, comma-separated, from: {', '.join(bench.MLP_ROWS)}")
    args = parser.parse_args(argv)

    settings = dict(bench.MLP_SETTINGS["quick" if args.quick else "full"])
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.rows:
        settings["rows"] = args.rows
    return bench.run(mlp=settings, threads=args.threads, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
