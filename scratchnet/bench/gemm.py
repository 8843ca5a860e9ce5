"""The SGEMM table: GFLOPS of scratchnet, NumPy and PyTorch on square sizes and
on the products of a 784-128-10 MLP's training step, each scratchnet result
checked against a float64 product."""
import argparse
from collections import namedtuple

import numpy as np

from .. import _core
from .machine import cpu_sample, others_share
from .report import cell, print_busy_note, ratio, speedup
from .timing import interleaved
from .workload import SEED

# C (m x n) = op(A) (m x k) @ op(B) (k x n); op is a transpose when trans_* is set
Shape = namedtuple("Shape", "label m k n trans_a trans_b", defaults=(False, False))


def square(*sizes):
    return [Shape(f"square {s}", s, s, s) for s in sizes]


MLP_SHAPES = [
    Shape("first layer forward X@W", 128, 784, 128),
    Shape("weight gradient X^T@dY", 784, 128, 128, trans_a=True),
    Shape("input gradient dY@W^T", 128, 128, 784, trans_b=True),
    Shape("batch 32 forward", 32, 784, 128),
    Shape("wide layer forward", 128, 784, 512),
    Shape("10000-image forward", 10000, 784, 128),
]
GEMM_SETTINGS = {
    "full": dict(shapes=square(256, 512, 1024, 2048) + MLP_SHAPES, repeat=7, block=0.1),
    "short": dict(shapes=square(512, 1024) + MLP_SHAPES[:3], repeat=5, block=0.05),
    "quick": dict(shapes=square(256) + MLP_SHAPES[:3], repeat=3, block=0.02),
}
# max |C - C64| / max |C64| for a correct float32 product of these sizes stays
# far below this; a wrong tile or index gives errors of order 1.
GEMM_TOLERANCE = 1e-4


# the most floats --sizes gives one operand: three libraries' copies of three
# such matrices stay within a machine's memory
MAX_OPERAND = 16384 * 16384


def parse_shapes(text):
    """--sizes: '256,512,128x784x512' -> Shapes; N is N x N x N, MxKxN is (MxK) @ (KxN)."""
    shapes = []
    for item in text.replace(" ", "").split(","):
        dims = item.lower().split("x")
        if not item or len(dims) not in (1, 3) or not all(d.isdigit() and int(d) > 0
                                                          for d in dims):
            raise argparse.ArgumentTypeError(
                f"bad size {item!r}: give N or MxKxN with positive integers")
        m, k, n = (int(dims[0]),) * 3 if len(dims) == 1 else map(int, dims)
        if max(m * k, k * n, m * n) > MAX_OPERAND:
            raise argparse.ArgumentTypeError(
                f"size {item!r} too large: each matrix at most {MAX_OPERAND:,} floats "
                f"(16384 x 16384, 1 GiB)")
        if len(dims) == 1:
            shapes += square(m)
        else:
            shapes.append(Shape(item, m, k, n))
    return shapes


def gemm_flops(m, k, n):
    """A product (m x k) @ (k x n): m*n*k multiply-adds, 2 FLOPs each."""
    return 2.0 * m * n * k


def gemm_case(shape, torch):
    """Each competitor's call for one shape (each writes its own C), and a
    function giving the max relative error of scratchnet's C against float64."""
    rng = np.random.default_rng(SEED)
    ta, tb = shape.trans_a, shape.trans_b
    A = rng.standard_normal((shape.k, shape.m) if ta else (shape.m, shape.k), dtype=np.float32)
    B = rng.standard_normal((shape.n, shape.k) if tb else (shape.k, shape.n), dtype=np.float32)
    opA, opB = (A.T if ta else A), (B.T if tb else B)
    C = {name: np.empty((shape.m, shape.n), np.float32) for name in ("scratchnet", "numpy")}
    fns = {"scratchnet": lambda: _core.gemm(A, B, C["scratchnet"], trans_a=ta, trans_b=tb),
           "numpy": lambda: np.matmul(opA, opB, out=C["numpy"])}
    if torch is not None:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        tA, tB = (tA.T if ta else tA), (tB.T if tb else tB)
        tC = torch.empty(shape.m, shape.n)
        fns["torch"] = lambda: torch.mm(tA, tB, out=tC)

    def error():
        exact = opA.astype(np.float64) @ opB.astype(np.float64)
        return float(np.abs(C["scratchnet"] - exact).max() / np.abs(exact).max())
    return fns, error


SGEMM_KEY = "numpy-sgemm"  # sgemm_turn's place among interleaved()'s competitors


def sgemm_turn(calls, size=1024):
    """NumPy's size^3 SGEMM as one more competitor of interleaved(): a
    callable making `calls` products, and the GFLOPS of one such call taking
    `seconds`. Timed in turn with the training rows, the rate their shares
    are of is the machine's in the same minutes: its speed swings by up to 2x
    from one minute to the next, and a rate measured once before them
    compared one spell with another."""
    fns, _ = gemm_case(square(size)[0], None)
    product = fns["numpy"]

    def turn():
        for _ in range(calls):
            product()

    return turn, lambda seconds: calls * gemm_flops(size, size, size) / seconds / 1e9


def gemm_table(shapes, repeat, block, torch):
    """{"rows": one per shape, "other_cpu": the share of the CPUs other
    processes used meanwhile}. scratchnet's result of its last timed call is
    the one checked."""
    start = cpu_sample()
    cases = [gemm_case(shape, torch) for shape in shapes]
    seconds = interleaved({(i, name): fn for i, (fns, _) in enumerate(cases)
                           for name, fn in fns.items()}, repeat, block)
    rows = []
    for i, (shape, (fns, max_rel_error)) in enumerate(zip(shapes, cases)):
        error = max_rel_error()
        times = {name: seconds[i, name] for name in fns}
        rows.append({"shape": shape.label, "m": shape.m, "k": shape.k, "n": shape.n,
                     "trans_a": shape.trans_a, "trans_b": shape.trans_b,
                     "gflops": {name: gemm_flops(shape.m, shape.k, shape.n) / t / 1e9
                                for name, t in times.items()},
                     "speedup_vs_numpy": speedup(times, "numpy"),
                     "speedup_vs_torch": speedup(times, "torch"),
                     "max_rel_err": error, "ok": error <= GEMM_TOLERANCE})
    return {"rows": rows, "other_cpu": others_share(start)}


def print_gemm_table(table, repeat, file):
    print(f"\nSGEMM in GFLOPS (higher is better), median call over {repeat} rounds; "
          f"scratchnet's result checked against float64", file=file)
    print(f"{'shape':<27} {'M x K x N':>15} {'scratchnet':>10} {'numpy':>8} {'torch':>8} "
          f"{'vs numpy':>8} {'vs torch':>8} {'max rel err':>11}", file=file)
    for row in table["rows"]:
        g = row["gflops"]
        mkn = f"{row['m']}x{row['k']}x{row['n']}"
        print(f"{row['shape']:<27} {mkn:>15} {cell(g['scratchnet'], '.1f', 10)} "
              f"{cell(g['numpy'], '.1f', 8)} {cell(g.get('torch'), '.1f', 8)} "
              f"{ratio(row['speedup_vs_numpy'])} {ratio(row['speedup_vs_torch'])} "
              f"{row['max_rel_err']:>11.1e} {'ok' if row['ok'] else 'WRONG'}", file=file)
    print_busy_note(table["other_cpu"], file)
