"""SGEMM speed, scratchnet vs NumPy vs PyTorch, in GFLOPS; every scratchnet
result is checked against a float64 product (a wrong one makes the exit code 1).

Run it with OpenBLAS's tuning variables unset, or NumPy may be slowed:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""
import argparse
import sys

from scratchnet import _core, bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=bench.thread_count, default=2,
                        help="threads for all three libraries (default 2)")
    parser.add_argument("--repeat", type=bench.positive_int, default=None,
                        help="timed rounds per shape (default 7, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="square 256 and the three 784-128-10 layer shapes, 3 rounds")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object; the rows are under 'gemm'")
    parser.add_argument("--isa", choices=_core.supported_isas(), default=None,
                        help="scratchnet's GEMM kernel (default: the best this CPU has)")
    parser.add_argument("--sizes", type=bench.parse_shapes, default=None,
                        help="run only these shapes, comma-separated: N for N x N x N, "
                             "MxKxN for (MxK) @ (KxN); e.g. 512,128x784x128")
    args = parser.parse_args(argv)

    settings = dict(bench.GEMM_SETTINGS["quick" if args.quick else "full"])
    if args.repeat:
        settings["repeat"] = args.repeat
    if args.sizes:
        settings["shapes"] = args.sizes
    return bench.run(gemm=settings, threads=args.threads, isa=args.isa, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
