"""Every C kernel of scratchnet._core against a float64 NumPy reference.

GEMM runs on every ISA this CPU supports (generic, avx2, avx512), on shapes
around the micro-kernel tiles and the cache blocks, with leading dimensions
larger than the row length, alpha/beta, beta = 0 over NaN, K = 0, M or N = 0,
1 vs 2 threads, and bad arguments. The element-wise kernels and the losses are
checked against the formulas of docs/formulas.md written out in float64.

GEMM tolerance: the classic forward error bound of a float32 dot product of
length K, |fl(A B) - A B| <= gamma_K |A| |B| with gamma_K ~ K u (u = 2^-24).
We use (K + 2) * eps32 (eps32 = 2^-23 = 2u, so a factor of 2 margin; the +2
covers alpha, beta and the final rounding) times
|alpha| |op(A)| @ |op(B)| + |beta| |C0|, computed in float64.
"""
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scratchnet as sn
from scratchnet import _core

F32 = np.float32
F64 = np.float64
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23
ISAS = _core.supported_isas()

# register tile (mr, nr), cache blocks (kc, mc, nc) and the unpacked-rows
# limit (small_m) of each micro-kernel, as the C code reports them
BLOCKING = {isa: _core.gemm_blocking(isa) for isa in ISAS}


# --------------------------------------------------------------------------- helpers


def rng_for(*key):
    """A generator seeded from the test's parameters, so each case differs."""
    return np.random.default_rng([zlib.crc32(repr(k).encode()) for k in key] or [0])


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


@pytest.fixture(params=ISAS)
def isa(request):
    """Force one GEMM micro-kernel for the test, then restore the previous one."""
    prev = _core.get_isa()
    _core.set_isa(request.param)
    assert _core.get_isa() == request.param
    yield request.param
    _core.set_isa(prev)


@pytest.fixture(autouse=True)
def one_thread():
    """Run every test on one OpenMP thread (restored afterwards); the thread
    tests ask for 2 themselves. On a loaded machine every OpenMP barrier of a
    2-thread GEMM can cost a scheduler time slice, which would make this file
    slow without testing anything more."""
    prev = _core.get_num_threads()
    _core.set_num_threads(1)
    yield
    _core.set_num_threads(prev)


def operands(rng, M, N, K, trans_a, trans_b):
    """A, B stored as gemm expects for the transposes (float32, contiguous)."""
    A = randn(rng, *((K, M) if trans_a else (M, K)))
    B = randn(rng, *((N, K) if trans_b else (K, N)))
    return A, B


def gemm_reference(A, B, C0, trans_a, trans_b, alpha, beta):
    """(C, tol): float64 alpha op(A) op(B) + beta C0 and the error bound."""
    a = A.astype(F64)
    b = B.astype(F64)
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    K = a.shape[1]
    ref = alpha * (a @ b)
    bound = abs(alpha) * (np.abs(a) @ np.abs(b))
    if beta != 0.0:
        c0 = C0.astype(F64)
        ref = ref + beta * c0
        bound = bound + abs(beta) * np.abs(c0)
    tol = (K + 2) * EPS32 * bound + 1e-30
    return ref, tol


def assert_gemm_close(C, ref, tol, what=""):
    C64 = np.asarray(C, dtype=F64)
    assert C.shape == ref.shape, f"{what}: shape {C.shape} != {ref.shape}"
    assert np.isfinite(C64).all(), f"{what}: non-finite values in C"
    err = np.abs(C64 - ref)
    bad = err > tol
    if bad.any():
        i, j = np.argwhere(bad)[0]
        pytest.fail(f"{what}: {int(bad.sum())} of {C.size} elements outside the bound; "
                    f"first at ({i}, {j}): got {C64[i, j]!r}, want {ref[i, j]!r}, "
                    f"|err| {err[i, j]:.3g} > tol {tol[i, j]:.3g}")


def run_gemm_case(rng, M, N, K, trans_a, trans_b, alpha, beta, naive=False, what=""):
    A, B = operands(rng, M, N, K, trans_a, trans_b)
    if beta == 0.0:
        C = np.full((M, N), np.nan, dtype=F32)  # must be overwritten, never read
    else:
        C = randn(rng, M, N)
    ref, tol = gemm_reference(A, B, C, trans_a, trans_b, alpha, beta)
    A_before, B_before = A.copy(), B.copy()
    out = _core.gemm(A, B, C, trans_a, trans_b, alpha, beta, naive=naive)
    assert out is C
    assert_gemm_close(C, ref, tol, what or f"M={M} N={N} K={K} ta={trans_a} tb={trans_b} "
                                           f"alpha={alpha} beta={beta} naive={naive}")
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)


# --------------------------------------------------------------------------- GEMM: shapes

SIZES = (1, 2, 7, 33, 128, 129, 300)
TRANS = [(False, False), (True, False), (False, True), (True, True)]


def diagonal(d):
    """7 shapes (M, N, K) in which each size appears once in each role:
    (S_i, S_i+d, S_3i+2d), indices mod 7. The 7 diagonals d = 0..6 together
    are the Latin square (S_i, S_j, S_(i+2j)): all 49 (M, N), (M, K) and
    (N, K) pairs of sizes, 49 of the 343 combinations."""
    return [(SIZES[i], SIZES[(i + d) % 7], SIZES[(3 * i + 2 * d) % 7]) for i in range(7)]


def test_diagonals_cover_every_size_in_every_role():
    for d in range(7):
        for role in range(3):
            assert sorted(shape[role] for shape in diagonal(d)) == sorted(SIZES)
    square = [shape for d in range(7) for shape in diagonal(d)]
    for r1, r2 in ((0, 1), (0, 2), (1, 2)):
        assert len({(s[r1], s[r2]) for s in square}) == 49


@pytest.mark.parametrize("t", range(4), ids=["NN", "TN", "NT", "TT"])
def test_gemm_sizes_every_isa(isa, t):
    """Each transpose pair gets two diagonals (every size in every role,
    twice); over the 4 pairs each ISA runs the whole Latin square. Shapes
    alternate between beta = 0 over a NaN-filled C and alpha = -0.75,
    beta = 1.5 over a random C."""
    trans_a, trans_b = TRANS[t]
    shift = ISAS.index(isa)
    rng = rng_for("sizes", isa, t)
    shapes = diagonal((t + shift) % 7) + diagonal((t + 4 + shift) % 7)
    for n, (M, N, K) in enumerate(shapes):
        alpha, beta = (1.0, 0.0) if n % 2 == 0 else (-0.75, 1.5)
        run_gemm_case(rng, M, N, K, trans_a, trans_b, alpha, beta)


@pytest.mark.parametrize("t", range(4), ids=["NN", "TN", "NT", "TT"])
def test_gemm_naive_sizes(t):
    trans_a, trans_b = TRANS[t]
    rng = rng_for("naive", t)
    for n, (M, N, K) in enumerate(diagonal(2 * t)):
        alpha, beta = (1.0, 0.0) if n % 2 == 0 else (0.5, -2.0)
        run_gemm_case(rng, M, N, K, trans_a, trans_b, alpha, beta, naive=True)


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
@pytest.mark.parametrize("alpha,beta", [(2.0, 0.0), (0.0, 0.5), (0.0, 0.0), (1.0, 1.0),
                                        (-1.25, -0.5)])
def test_gemm_alpha_beta(isa, trans_a, trans_b, alpha, beta, naive):
    rng = rng_for("alphabeta", isa, trans_a, trans_b, alpha, beta, naive)
    for M, N, K in ((7, 33, 129), (33, 17, 2), (1, 1, 1), (13, 40, 100)):
        run_gemm_case(rng, M, N, K, trans_a, trans_b, alpha, beta, naive=naive)


def test_gemm_beta0_nan_in_c_does_not_propagate(isa):
    """beta == 0 overwrites C without reading it: full and edge tiles alike."""
    rng = rng_for("nan", isa)
    b = BLOCKING[isa]
    for M, N, K in ((b["mr"], b["nr"], 5), (2 * b["mr"] + 1, 3 * b["nr"] - 1, 300),
                    (1, 1, 1), (b["mc"] + 1, 2 * b["nr"], 7)):
        for ta, tb in TRANS:
            for naive in (False, True):
                A, B = operands(rng, M, N, K, ta, tb)
                for fill in (np.nan, np.inf, -np.inf):
                    C = np.full((M, N), fill, dtype=F32)
                    _core.gemm(A, B, C, ta, tb, 1.0, 0.0, naive=naive)
                    ref, tol = gemm_reference(A, B, None, ta, tb, 1.0, 0.0)
                    assert_gemm_close(C, ref, tol, f"fill={fill} M={M} N={N} K={K}")


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_leading_dimensions(isa, trans_a, trans_b, naive):
    """A, B and C as column slices of wider arrays (ld > row length). The
    columns outside the slices hold NaN (A, B: must never be read) or a
    sentinel (C: must never be written)."""
    rng = rng_for("ld", isa, trans_a, trans_b, naive)
    for M, N, K in ((7, 33, 129), (129, 2, 33), (33, 129, 300), (1, 7, 2), (2, 1, 7),
                    (128, 128, 1), (13, 50, 260)):
        pad_a, pad_b, pad_c = 3, 5, 11
        a_shape = (K, M) if trans_a else (M, K)
        b_shape = (N, K) if trans_b else (K, N)
        bigA = np.full((a_shape[0], a_shape[1] + pad_a), np.nan, dtype=F32)
        bigB = np.full((b_shape[0], b_shape[1] + pad_b), np.nan, dtype=F32)
        bigC = np.full((M, N + pad_c), 7.0, dtype=F32)
        A = bigA[:, :a_shape[1]]
        B = bigB[:, :b_shape[1]]
        C = bigC[:, :N]
        A[...] = randn(rng, *a_shape)
        B[...] = randn(rng, *b_shape)
        C[...] = randn(rng, M, N)
        assert not C.flags.c_contiguous or M == 1
        C0 = C.copy()
        ref, tol = gemm_reference(A, B, C0, trans_a, trans_b, 0.5, -1.0)
        out = _core.gemm(A, B, C, trans_a, trans_b, 0.5, -1.0, naive=naive)
        assert out is C
        assert_gemm_close(C, ref, tol, f"ld M={M} N={N} K={K}")
        assert (bigC[:, N:] == 7.0).all(), "gemm wrote outside C's columns"


def test_gemm_leading_dimension_offset_slices(isa):
    """Slices that start inside a row (big[:, 3:3+K]) and row slices."""
    rng = rng_for("offset", isa)
    M, N, K = 37, 45, 70
    bigA = randn(rng, M + 4, K + 9)
    bigB = randn(rng, K + 2, N + 6)
    bigC = randn(rng, M + 3, N + 10)
    A = bigA[2:2 + M, 3:3 + K]
    B = bigB[1:1 + K, 6:6 + N]
    C = bigC[3:3 + M, 4:4 + N]
    before = bigC.copy()
    ref, tol = gemm_reference(A, B, C.copy(), False, False, 1.0, 1.0)
    _core.gemm(A, B, C, False, False, 1.0, 1.0)
    assert_gemm_close(C, ref, tol, "offset slices")
    mask = np.ones(bigC.shape, bool)
    mask[3:3 + M, 4:4 + N] = False
    np.testing.assert_array_equal(bigC[mask], before[mask])


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_k_zero(trans_a, trans_b, naive):
    """K = 0: C = beta C (a NaN C with beta = 0 becomes 0). The operands are
    fresh C-contiguous (M, 0) / (0, N) arrays."""
    M, N = 7, 33
    A = np.zeros((0, M) if trans_a else (M, 0), dtype=F32)
    B = np.zeros((N, 0) if trans_b else (0, N), dtype=F32)
    C = np.full((M, N), np.nan, dtype=F32)
    _core.gemm(A, B, C, trans_a, trans_b, 1.0, 0.0, naive=naive)
    np.testing.assert_array_equal(C, np.zeros((M, N), F32))
    C = np.arange(M * N, dtype=F32).reshape(M, N)
    _core.gemm(A, B, C, trans_a, trans_b, 2.0, -0.5, naive=naive)
    np.testing.assert_array_equal(C, -0.5 * np.arange(M * N, dtype=F32).reshape(M, N))


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_k_zero_sliced(isa, trans_a, trans_b, naive):
    """K = 0 with operands sliced out of wider arrays (non-zero row strides)."""
    M, N = 7, 33
    A = np.ones((4, M) if trans_a else (M, 4), F32)
    A = A[:0] if trans_a else A[:, :0]
    B = np.ones((N, 4) if trans_b else (4, N), F32)
    B = B[:, :0] if trans_b else B[:0]
    C = np.full((M, N), np.nan, dtype=F32)
    _core.gemm(A, B, C, trans_a, trans_b, naive=naive)
    np.testing.assert_array_equal(C, 0.0)
    C[...] = 2.0
    _core.gemm(A, B, C, trans_a, trans_b, 3.0, 0.25, naive=naive)
    np.testing.assert_array_equal(C, 0.5)


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("M,N,K", [(0, 5, 3), (5, 0, 3), (0, 0, 3), (0, 5, 0), (0, 0, 0)])
def test_gemm_empty_output(M, N, K, naive):
    """M or N = 0: nothing to do, C (empty) returned; fresh empty arrays."""
    rng = rng_for("empty", M, N, K)
    for ta, tb in TRANS:
        A, B = operands(rng, M, N, K, ta, tb)
        C = np.empty((M, N), dtype=F32)
        out = _core.gemm(A, B, C, ta, tb, 1.0, 0.0, naive=naive)
        assert out is C and out.shape == (M, N)


def _edge_cases(isa, count, seed):
    """Random (M, N, K) around the micro-kernel tile and cache block edges."""
    b = BLOCKING[isa]
    mr, nr, kc, mc = b["mr"], b["nr"], b["kc"], b["mc"]
    rng = np.random.default_rng(seed)

    def around(values, lo=1, hi=None):
        out = set()
        for v in values:
            for d in (-3, -2, -1, 0, 1, 2, 3):
                if v + d >= lo and (hi is None or v + d <= hi):
                    out.add(v + d)
        return sorted(out)

    Ms = around([b["small_m"], mr, 2 * mr, mc, 2 * mc], hi=300)
    Ns = around([nr, 2 * nr, 5 * nr])
    Ks = around([kc, 2 * kc], hi=520) + [1, 2, 3]
    cases = [(int(rng.choice(Ms)), int(rng.choice(Ns)), int(rng.choice(Ks)))
             for _ in range(count)]
    # the exact block edges at least once each
    cases += [(mr, nr, kc), (mc, nr, kc + 1), (mc + 1, nr + 1, kc - 1), (mr - 1, nr - 1, 2 * kc)]
    return cases


@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_block_edges(isa, trans_a, trans_b):
    rng = rng_for("edges", isa, trans_a, trans_b)
    for n, (M, N, K) in enumerate(_edge_cases(isa, 4, seed=len(isa) * 7 + 2 * trans_a + trans_b)):
        alpha, beta = (1.0, 0.0) if n % 2 == 0 else (1.5, -0.25)
        run_gemm_case(rng, M, N, K, trans_a, trans_b, alpha, beta)


@pytest.mark.parametrize("trans_a,trans_b", TRANS)
@pytest.mark.parametrize("narrow,beta", [(False, -0.25), (False, 1.5), (True, 0.0), (True, 1.5)])
def test_gemm_a_rows_bits_do_not_depend_on_the_row_count(isa, trans_a, trans_b, narrow, beta):
    """Row i of C gets the same bits whatever M is: however the rows fall
    into register tiles (mr-row panels, the tail kernel's shorter ones, a
    short last panel, the few-rows path) and mc blocks, each element is the
    same chain of multiply-adds in k order, and beta * c is added to it as
    the kernel stores a whole tile (an edge tile's copy too: with beta 1.5,
    whose products round, a copy that rounded twice where the FMA kernels'
    tiles round once gave rows in edge tiles other bits). Two kc blocks;
    narrow: fewer columns than the tile (with beta 0, a weight gradient, A
    transposed, of nr rows or more is computed as its transpose). (With B
    transposed the few-rows path takes dot products, summed in another
    order: its row counts are left out there.)"""
    b = BLOCKING[isa]
    mr, nr, kc, mc = b["mr"], b["nr"], b["kc"], b["mc"]
    first = b["small_m"] + 1 if trans_b else 1
    rows = sorted({m for m in list(range(1, 4 * mr + 5)) + [nr - 1, nr, mc - 1, mc, mc + 2,
                                                            mc + mr + 2, 2 * mc + 4]
                   if m >= first})
    M_all, N, K = rows[-1], nr * 5 // 8 if narrow else 2 * nr + 3, kc + 5
    alpha = 1.5
    rng = rng_for("row bits", isa, trans_a, trans_b, narrow, beta)
    A, B = operands(rng, M_all, N, K, trans_a, trans_b)
    C0 = randn(rng, M_all, N)
    whole = _core.gemm(A, B, C0.copy(), trans_a, trans_b, alpha, beta)
    for M in rows:
        part = np.ascontiguousarray(A[:, :M] if trans_a else A[:M])
        C = _core.gemm(part, B, C0[:M].copy(), trans_a, trans_b, alpha, beta)
        np.testing.assert_array_equal(C, whole[:M], err_msg=f"M={M}")
    ref, tol = gemm_reference(A, B, C0, trans_a, trans_b, alpha, beta)
    assert_gemm_close(whole, ref, tol, "all rows")


@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_cuts_the_shared_dimension_in_equal_blocks(isa, trans_a, always_paired):
    """K longer than kc is summed in ceil(K / kc) blocks of equal length
    (784 with kc 512: 392 + 392, not 512 + 272), each a fresh sum, added to
    C in turn, on every path (few rows, one image on a pair of threads, the
    blocked path). Seen in the bits: B's column is 2^24 in row 0 and 1 in
    every other row, A is ones, so in the first block each 1 is lost
    (2^24 + 1 rounds to 2^24) and in every later block it is counted: C is
    2^24 plus the rows past the first block."""
    kc = BLOCKING[isa]["kc"]
    for K in (784, kc + 2, 2 * kc + 100):
        blocks = -(-K // kc)
        first = -(-K // blocks)
        want = np.float32(2.0 ** 24)
        for start in range(first, K, first):  # each later block's sum, added to C
            want = np.float32(want + np.float32(min(first, K - start)))
        B = np.ones((K, 40), np.float32)
        B[0] = 2.0 ** 24
        for M, threads in ((1, 1), (1, 2), (3, 1), (40, 1), (40, 2)):
            _core.set_num_threads(threads)
            _core.set_pair_min_flops(1)  # one image: the pair's halves on two threads
            A = np.ones((K, M) if trans_a else (M, K), np.float32)
            C = _core.gemm(A, B, np.zeros((M, 40), np.float32), trans_a, False)
            np.testing.assert_array_equal(C, np.full((M, 40), want),
                                          err_msg=f"K={K} M={M} threads={threads}")


@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_few_rows_bits_across_column_blocks(isa, trans_a):
    """The few-rows path (at most small_m rows, B not transposed) goes over
    the columns in blocks of its own (AVX-512: 128, 64, 16, then a masked
    rest; AVX2: 64, 8, masked): with N = 2 x 128 + 64 + 16 + 7 every kind
    of block is there, and each of rows 1 .. small_m gets the bits the
    blocked path gives it in a larger M; alpha and beta. Two kc blocks (the
    AVX-512 path reads two blocks side by side), two whole ones, and three
    (two side by side, then one)."""
    b = BLOCKING[isa]
    kc = b["kc"]
    M_all, N = 2 * b["mr"] + 1, 2 * 128 + 64 + 16 + 7
    for K in (kc + 5, 2 * kc, 2 * kc + 37):
        rng = rng_for("few rows", isa, trans_a, K)
        A, B = operands(rng, M_all, N, K, trans_a, False)
        C0 = randn(rng, M_all, N)
        whole = _core.gemm(A, B, C0.copy(), trans_a, False, 1.5, -0.25)
        for M in range(1, b["small_m"] + 1):
            part = np.ascontiguousarray(A[:, :M] if trans_a else A[:M])
            C = _core.gemm(part, B, C0[:M].copy(), trans_a, False, 1.5, -0.25)
            np.testing.assert_array_equal(C, whole[:M], err_msg=f"K={K}, M={M}")
    ref, tol = gemm_reference(A, B, C0, trans_a, False, 1.5, -0.25)
    assert_gemm_close(whole, ref, tol, "all rows")
    ref, tol = gemm_reference(A, B, C0, trans_a, False, 1.5, -0.25)
    assert_gemm_close(whole, ref, tol, "all rows")


@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_narrow_columns_bits_of_the_tiles(isa, trans_a):
    """C of at most 16 columns with B not transposed (a classifier's
    logits, its weight gradient) goes through a kernel of its own where the
    ISA has one (AVX-512: one masked vector a row, 8 rows at a time, then 4,
    then 1). Each element must get the bits the tiles give it: the same
    columns taken from a wider call of fewer than nr columns (an edge tile,
    c = beta c + alpha sum rounded as the ISA's whole tiles round it: once
    with FMA), over two kc blocks, for every
    row count up to 3 groups of 8 and a remainder; C's padding untouched.
    (beta -0.3: beta c is rounded, where a power of two would be exact.)"""
    b = BLOCKING[isa]
    K, wide = b["kc"] + 5, min(b["nr"] - 1, 20)  # AVX-512: 20 of 32; AVX2: 15 of 16
    rng = rng_for("narrow", isa, trans_a)
    for M in list(range(b["small_m"] + 1, 30)) + [64]:
        A, B = operands(rng, M, wide, K, trans_a, False)
        C0 = randn(rng, M, wide)
        whole = _core.gemm(A, B, C0.copy(), trans_a, False, 1.5, -0.3)
        for N in (n for n in (1, 10, 15, 16) if n < wide):
            padded = np.full((M, N + 3), 7.0, F32)
            C = padded[:, :N]
            C[...] = C0[:, :N]
            _core.gemm(A, np.ascontiguousarray(B[:, :N]), C, trans_a, False, 1.5, -0.3)
            np.testing.assert_array_equal(C, whole[:, :N], err_msg=f"M={M} N={N}")
            assert (padded[:, N:] == 7.0).all(), f"M={M} N={N}: wrote past column N"
    ref, tol = gemm_reference(A, B, C0, trans_a, False, 1.5, -0.3)
    assert_gemm_close(whole, ref, tol, "the wider call")


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
def test_gemm_wider_than_nc(isa, trans_a, trans_b):
    """N past the nc = 2048 column block, and K past kc, in one call."""
    rng = rng_for("nc", isa, trans_a, trans_b)
    run_gemm_case(rng, 13, 2051, 260, trans_a, trans_b, 1.0, 0.0)
    run_gemm_case(rng, 13, 2049, 3, trans_a, trans_b, -1.0, 0.5)


@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_isas_agree_with_naive(trans_a, trans_b):
    """Every ISA and the naive loop give the same product to the bound."""
    rng = rng_for("agree", trans_a, trans_b)
    M, N, K = 131, 67, 301
    A, B = operands(rng, M, N, K, trans_a, trans_b)
    ref, tol = gemm_reference(A, B, None, trans_a, trans_b, 1.0, 0.0)
    prev = _core.get_isa()
    try:
        for name in ISAS:
            _core.set_isa(name)
            C = np.empty((M, N), F32)
            _core.gemm(A, B, C, trans_a, trans_b)
            assert_gemm_close(C, ref, tol, name)
    finally:
        _core.set_isa(prev)
    C = np.empty((M, N), F32)
    _core.gemm(A, B, C, trans_a, trans_b, naive=True)
    assert_gemm_close(C, ref, tol, "naive")


def test_gemm_exact_on_small_integers(isa):
    """Integer-valued operands with small sums are exact in float32: any
    indexing slip shows as an exact mismatch."""
    rng = rng_for("int", isa)
    for ta, tb in TRANS:
        for M, N, K in ((17, 35, 29), (BLOCKING[isa]["mc"] + 5, 70, 300)):
            A = rng.integers(-3, 4, (K, M) if ta else (M, K)).astype(F32)
            B = rng.integers(-3, 4, (N, K) if tb else (K, N)).astype(F32)
            C = np.empty((M, N), F32)
            _core.gemm(A, B, C, ta, tb)
            want = (A.T if ta else A).astype(np.int64) @ (B.T if tb else B).astype(np.int64)
            np.testing.assert_array_equal(C, want.astype(F32))


# --------------------------------------------------------------------------- GEMM: threads


@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_gemm_threads_bit_identical(isa, trans_a, trans_b):
    """1 and 2 OpenMP threads give bit-identical results (same summation order)."""
    rng = rng_for("threads", isa, trans_a, trans_b)
    for M, N, K, beta in ((150, 70, 300, 0.0), (40, 2051, 5, 1.0), (97, 100, 257, -0.5)):
        A, B = operands(rng, M, N, K, trans_a, trans_b)
        C0 = np.full((M, N), np.nan, F32) if beta == 0.0 else randn(rng, M, N)
        results = []
        for n in (1, 2) if M != 97 else (1, 2, 3):  # 3 threads on one shape: uneven split
            _core.set_num_threads(n)
            assert _core.get_num_threads() == n
            C = C0.copy()
            _core.gemm(A, B, C, trans_a, trans_b, 1.0, beta)
            results.append(C)
        for other in results[1:]:
            np.testing.assert_array_equal(results[0], other)
        ref, tol = gemm_reference(A, B, C0, trans_a, trans_b, 1.0, beta)
        assert_gemm_close(results[1], ref, tol, "2 threads")


def test_gemm_threads_block_edges(isa):
    """2 threads on shapes one past (or short of) the tile and cache-block
    edges: the same bits as 1 thread, and right."""
    b = BLOCKING[isa]
    mr, nr, kc, mc = b["mr"], b["nr"], b["kc"], b["mc"]
    rng = rng_for("thread_edges", isa)
    def past_blocks(first, n, k):
        """first, or first plus whole mc blocks (the tuner may have made mc
        small), until the GEMM is large enough for a second thread"""
        m = first
        while m * n * k < b["parallel_min"]:
            m += mc
        return m

    for M, N, K, (ta, tb) in ((past_blocks(mc + 1, 8 * nr + 1, kc + 1), 8 * nr + 1, kc + 1,
                               (False, False)),
                              (past_blocks(min(2 * mc - 1, 300), 4 * nr - 1, 2 * kc + 3),
                               4 * nr - 1, 2 * kc + 3, (True, False)),
                              (9 * mr + 1, 5 * nr + 2, 4 * kc - 1, (False, True))):
        assert M * N * K >= b["parallel_min"]  # a size where a second thread is used
        A, B = operands(rng, M, N, K, ta, tb)
        C0 = randn(rng, M, N)
        results = []
        for n in (1, 2):
            _core.set_num_threads(n)
            C = C0.copy()
            _core.gemm(A, B, C, ta, tb, 0.5, 0.5)
            results.append(C)
        np.testing.assert_array_equal(results[0], results[1])
        ref, tol = gemm_reference(A, B, C0, ta, tb, 0.5, 0.5)
        assert_gemm_close(results[1], ref, tol, f"2 threads M={M} N={N} K={K}")


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError):
        _core.set_num_threads(0)


def test_gemm_concurrent_python_threads(isa):
    """gemm releases the GIL and keeps a packing workspace per calling
    thread: concurrent calls of different sizes must not interfere."""
    rng = rng_for("concurrent", isa)
    jobs = []
    for i in range(8):
        M, N, K = 50 + 17 * i, 40 + 23 * i, 100 + 31 * i
        A, B = operands(rng, M, N, K, False, bool(i % 2))
        jobs.append((A, B, bool(i % 2)))
    expected = []
    for A, B, tb in jobs:
        C = np.empty((A.shape[0], B.shape[0] if tb else B.shape[1]), F32)
        expected.append(_core.gemm(A, B, C, False, tb).copy())

    barrier = threading.Barrier(4)

    def work(idx):
        barrier.wait()
        outs = []
        for _ in range(3):
            A, B, tb = jobs[idx]
            C = np.empty((A.shape[0], B.shape[0] if tb else B.shape[1]), F32)
            outs.append(_core.gemm(A, B, C, False, tb))
        return outs

    for start in (0, 4):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(work, range(start, start + 4)))
        for idx, outs in zip(range(start, start + 4), results):
            for C in outs:
                np.testing.assert_array_equal(C, expected[idx])


# --------------------------------------------------------------------------- GEMM: property


# Sizes from 1: empty operands are the subject of test_gemm_k_zero and
# test_gemm_empty_output.
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(M=st.integers(1, 70), N=st.integers(1, 70), K=st.integers(1, 70),
       trans_a=st.booleans(), trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, -1.0, 0.5, 2.0, 0.0]),
       beta=st.sampled_from([0.0, 1.0, -0.5]),
       isa_name=st.sampled_from(ISAS), naive=st.booleans(),
       pad=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_gemm_property(M, N, K, trans_a, trans_b, alpha, beta, isa_name, naive, pad, seed):
    rng = np.random.default_rng(seed)
    a_shape = (K, M) if trans_a else (M, K)
    b_shape = (N, K) if trans_b else (K, N)
    A = randn(rng, a_shape[0], a_shape[1] + pad)[:, :a_shape[1]]
    B = randn(rng, b_shape[0], b_shape[1] + pad)[:, :b_shape[1]]
    bigC = randn(rng, M, N + pad)
    C = bigC[:, :N]
    if beta == 0.0:
        C[...] = np.nan
    C0 = C.copy()
    ref, tol = gemm_reference(A, B, C0, trans_a, trans_b, alpha, beta)
    prev = _core.get_isa()
    _core.set_isa(isa_name)
    try:
        _core.gemm(A, B, C, trans_a, trans_b, alpha, beta, naive=naive)
    finally:
        _core.set_isa(prev)
    assert_gemm_close(C, ref, tol, "property")


# --------------------------------------------------------------------------- GEMM: bad arguments


def test_gemm_rejects_mismatched_shapes():
    A = np.ones((3, 4), F32)
    B = np.ones((5, 6), F32)
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((3, 6), F32))          # K 4 vs 5
    B = np.ones((4, 6), F32)
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((3, 5), F32))          # C has the wrong N
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((4, 6), F32))          # C has the wrong M
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((3, 6), F32), trans_a=True)  # op(A) is 4x3
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((3, 6), F32), trans_b=True)  # op(B) is 6x4
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.zeros((3, 6), F32), naive=True, trans_b=True)


def test_gemm_rejects_wrong_dtype_and_rank():
    A = np.ones((3, 4), F32)
    B = np.ones((4, 6), F32)
    C = np.zeros((3, 6), F32)
    for bad in (A.astype(F64), A.astype(np.float16), A.astype(np.int32), A.tolist(), A[0],
                A[None], None):
        with pytest.raises(TypeError):
            _core.gemm(bad, B, C)
    with pytest.raises(TypeError):
        _core.gemm(A, B.astype(F64), C)
    with pytest.raises(TypeError):
        _core.gemm(A, B, C.astype(F64))
    with pytest.raises(TypeError):
        _core.gemm(A, B, np.zeros(18, F32))
    np.testing.assert_array_equal(C, 0.0)


def test_gemm_rejects_non_contiguous_rows():
    A = np.ones((3, 8), F32)
    B = np.ones((4, 6), F32)
    C = np.zeros((3, 6), F32)
    with pytest.raises(ValueError):
        _core.gemm(A[:, ::2], B, C)                      # strided rows
    with pytest.raises(ValueError):
        _core.gemm(np.asfortranarray(np.ones((3, 4), F32)), B, C)
    with pytest.raises(ValueError):
        _core.gemm(np.ones((4, 3), F32).T, B, C)         # a transposed view
    with pytest.raises(ValueError):
        _core.gemm(np.ones((3, 4), F32), B, np.zeros((6, 3), F32).T)
    with pytest.raises(ValueError):
        _core.gemm(np.ones((3, 4), F32)[::-1], B, C)     # negative row stride
    with pytest.raises(ValueError):
        _core.gemm(np.broadcast_to(np.ones(4, F32), (3, 4)), B, C)  # zero row stride
    with pytest.raises(ValueError):
        _core.gemm(np.ones((3, 4), F32), B, np.zeros((3, 12), F32)[:, ::2])


def test_gemm_rejects_c_overlapping_an_operand():
    buf = np.ones((6, 6), F32)
    with pytest.raises(ValueError):
        _core.gemm(buf, buf[:, :6].copy(), buf)          # C is A
    with pytest.raises(ValueError):
        _core.gemm(buf.copy(), buf, buf)                 # C is B
    big = np.ones((6, 10), F32)
    with pytest.raises(ValueError):
        _core.gemm(big[:, :6], np.ones((6, 6), F32), big[:, 3:9])  # shared columns 3..5
    with pytest.raises(ValueError):
        _core.gemm(np.ones((6, 6), F32), big[1:, 2:8], big[:5, :6])  # C over B, shifted
    # read-only overlap is fine when C is separate
    out = _core.gemm(buf, buf, np.zeros((6, 6), F32))
    np.testing.assert_array_equal(out, 6.0)


def test_gemm_rejects_read_only_c():
    C = np.zeros((3, 6), F32)
    C.flags.writeable = False
    with pytest.raises(ValueError):
        _core.gemm(np.ones((3, 4), F32), np.ones((4, 6), F32), C)
    np.testing.assert_array_equal(C, 0.0)


def test_gemm_accepts_read_only_operands():
    A = np.ones((3, 4), F32)
    B = np.ones((4, 6), F32)
    A.flags.writeable = False
    B.flags.writeable = False
    C = _core.gemm(A, B, np.zeros((3, 6), F32))
    np.testing.assert_array_equal(C, 4.0)


def test_set_isa_rejects_unknown_names():
    prev = _core.get_isa()
    with pytest.raises(ValueError):
        _core.set_isa("sse9")
    assert _core.get_isa() == prev
    assert set(ISAS) <= set(_core.isa_names())
    assert "generic" in ISAS
    assert _core.best_isa() == ISAS[-1]


# --------------------------------------------------------------------------- bias


def test_bias_add():
    rng = rng_for("bias_add")
    for M, N in ((1, 1), (7, 33), (129, 17), (0, 5)):
        y = randn(rng, M, N)
        b = randn(rng, N)
        want = y.astype(F64) + b.astype(F64)
        out = _core.bias_add(y, b)
        assert out is y
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_bias_grad(beta):
    rng = rng_for("bias_grad", beta)
    for M, N in ((1, 1), (7, 33), (300, 17), (0, 4)):
        dy = randn(rng, M, N)
        db0 = np.full(N, np.nan, F32) if beta == 0.0 else randn(rng, N)
        db = db0.copy()
        want = dy.astype(F64).sum(axis=0)
        bound = np.abs(dy.astype(F64)).sum(axis=0)
        if beta != 0.0:
            want += beta * db0.astype(F64)
            bound += abs(beta) * np.abs(db0.astype(F64))
        out = _core.bias_grad(dy, db, beta)
        assert out is db
        assert np.isfinite(db).all()
        assert (np.abs(db - want) <= (M + 2) * EPS32 * bound + 1e-30).all()


def test_bias_default_beta_overwrites():
    dy = np.ones((4, 3), F32)
    db = np.full(3, np.nan, F32)
    _core.bias_grad(dy, db)
    np.testing.assert_array_equal(db, 4.0)


def test_bias_bad_arguments():
    y = np.zeros((3, 4), F32)
    with pytest.raises(ValueError):
        _core.bias_add(y, np.zeros(3, F32))
    with pytest.raises(TypeError):
        _core.bias_add(y, np.zeros(4, F64))
    with pytest.raises(TypeError):
        _core.bias_add(y.astype(F64), np.zeros(4, F32))
    with pytest.raises(TypeError):
        _core.bias_add(np.zeros((3, 8), F32)[:, ::2], np.zeros(4, F32))
    ro = np.zeros((3, 4), F32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        _core.bias_add(ro, np.zeros(4, F32))
    with pytest.raises(ValueError):
        _core.bias_grad(y, np.zeros(3, F32))
    with pytest.raises(TypeError):
        _core.bias_grad(y, np.zeros(4, F64))


# --------------------------------------------------------------------------- activations


def sigmoid64(x):
    x = np.asarray(x, F64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                    np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def softmax64(x):
    x = np.asarray(x, F64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def act_input(rng, shape=(37, 53)):
    x = randn(rng, *shape, scale=3.0)
    x.flat[::11] = 0.0  # exact zeros: ReLU's derivative is 0 there
    return x


FORWARD = {
    "relu": (lambda x, out: _core.relu_forward(x, out), lambda x: np.maximum(x, 0.0)),
    "leaky_relu": (lambda x, out: _core.leaky_relu_forward(x, out, 0.01),
                   lambda x: np.where(x > 0, x, 0.01 * x)),
    "leaky_relu_0.2": (lambda x, out: _core.leaky_relu_forward(x, out, 0.2),
                       lambda x: np.where(x > 0, x, 0.2 * x)),
    "sigmoid": (lambda x, out: _core.sigmoid_forward(x, out), sigmoid64),
    "tanh": (lambda x, out: _core.tanh_forward(x, out), np.tanh),
    "softmax": (lambda x, out: _core.softmax_forward(x, out), softmax64),
}


@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("inplace", [False, True])
def test_activation_forward(name, inplace):
    rng = rng_for("fwd", name, inplace)
    kernel, ref = FORWARD[name]
    for shape in ((37, 53), (1, 1), (3, 1), (1, 1000)):
        x = act_input(rng, shape)
        want = ref(x.astype(F64))
        x_before = x.copy()
        out = x if inplace else np.full_like(x, np.nan)
        ret = kernel(x, out)
        assert ret is out
        # softmax sums N float32 terms: relative error up to ~N u
        rtol = 2e-6 + (x.shape[-1] * EPS32 / 2 if name == "softmax" else 0.0)
        np.testing.assert_allclose(out, want, rtol=rtol, atol=1e-7)
        if not inplace:
            np.testing.assert_array_equal(x, x_before)


def test_activation_forward_other_shapes():
    """Element-wise kernels see any C-contiguous shape as a flat buffer."""
    rng = rng_for("shapes")
    for shape in ((5,), (2, 3, 4), (0,), (4, 0)):
        x = randn(rng, *shape)
        out = np.empty_like(x)
        _core.relu_forward(x, out)
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        _core.tanh_forward(x, out)
        np.testing.assert_allclose(out, np.tanh(x.astype(F64)), rtol=2e-6, atol=1e-7)


def test_relu_leaky_exact():
    """ReLU and LeakyReLU are exact in float32."""
    rng = rng_for("exact")
    x = act_input(rng)
    np.testing.assert_array_equal(_core.relu_forward(x, np.empty_like(x)), np.maximum(x, 0))
    np.testing.assert_array_equal(_core.leaky_relu_forward(x, np.empty_like(x), 0.01),
                                  np.where(x > 0, x, F32(0.01) * x))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax"])
@pytest.mark.parametrize("inplace", [False, True])
def test_activation_backward(name, inplace):
    """Backward with a random dy against the analytic derivative in float64."""
    rng = rng_for("bwd", name, inplace)
    x = act_input(rng)
    x64 = x.astype(F64)
    dy = randn(rng, *x.shape)
    dy64 = dy.astype(F64)
    out = dy.copy() if inplace else np.full_like(x, np.nan)
    dy_arg = out if inplace else dy
    if name == "relu":
        want = dy64 * (x64 > 0)
        ret = _core.relu_backward(dy_arg, x, out)
    elif name == "leaky_relu":
        want = np.where(x64 > 0, dy64, 0.05 * dy64)
        ret = _core.leaky_relu_backward(dy_arg, x, out, 0.05)
    elif name == "sigmoid":
        y = _core.sigmoid_forward(x, np.empty_like(x))
        s = sigmoid64(x64)
        want = dy64 * s * (1 - s)
        ret = _core.sigmoid_backward(dy_arg, y, out)
    elif name == "tanh":
        y = _core.tanh_forward(x, np.empty_like(x))
        t = np.tanh(x64)
        want = dy64 * (1 - t * t)
        ret = _core.tanh_backward(dy_arg, y, out)
    else:
        y = _core.softmax_forward(x, np.empty_like(x))
        s = softmax64(x64)
        # Jacobian of softmax: ds_j/dx_k = s_j (delta_jk - s_k)
        want = s * (dy64 - (dy64 * s).sum(axis=1, keepdims=True))
        ret = _core.softmax_backward(dy_arg, y, out)
    assert ret is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_softmax_backward_matches_full_jacobian():
    rng = rng_for("jac")
    x = randn(rng, 3, 6)
    dy = randn(rng, 3, 6)
    y = _core.softmax_forward(x, np.empty_like(x))
    dx = _core.softmax_backward(dy, y, np.empty_like(x))
    for r in range(3):
        s = softmax64(x[r].astype(F64))
        J = np.diag(s) - np.outer(s, s)
        np.testing.assert_allclose(dx[r], J.T @ dy[r].astype(F64), rtol=1e-5, atol=1e-6)


def test_sigmoid_and_tanh_saturate_finite():
    x = np.array([-1e4, -100.0, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0, 1e4,
                  np.finfo(F32).max, -np.finfo(F32).max], F32)
    y = _core.sigmoid_forward(x, np.empty_like(x))
    assert np.isfinite(y).all()
    assert ((y >= 0) & (y <= 1)).all()
    np.testing.assert_allclose(y, sigmoid64(x), rtol=1e-6, atol=1e-38)
    assert y[x == 100.0][0] == 1.0 and y[x == 1e4][0] == 1.0
    assert y[x == -1e4][0] == 0.0
    assert y[x == 0.0][0] == 0.5
    # backward from saturated outputs is finite (and ~0)
    dx = _core.sigmoid_backward(np.ones_like(x), y, np.empty_like(x))
    assert np.isfinite(dx).all() and (np.abs(dx[[0, 1, 7, 8]]) < 1e-30).all()
    t = _core.tanh_forward(x, np.empty_like(x))
    np.testing.assert_allclose(t, np.tanh(x.astype(F64)), rtol=1e-6, atol=0)
    # in place
    x2 = x.copy()
    _core.sigmoid_forward(x2, x2)
    np.testing.assert_array_equal(x2, y)


def test_softmax_huge_logits():
    x = np.array([[1e4, -1e4, 0.0, 1e4],
                  [-1e4, -1e4, -1e4, -1e4],
                  [3e38, 0.0, -3e38, 1.0],
                  [88.0, 89.0, 90.0, -1e4]], F32)
    y = _core.softmax_forward(x, np.empty_like(x))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, softmax64(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y[0], [0.5, 0, 0, 0.5], atol=1e-7)
    np.testing.assert_allclose(y[1], 0.25, atol=1e-7)
    _core.softmax_forward(x, x)  # in place
    np.testing.assert_array_equal(x, y)


def test_softmax_rows_are_independent():
    rng = rng_for("rows")
    x = randn(rng, 20, 9, scale=5.0)
    y = _core.softmax_forward(x, np.empty_like(x))
    for r in range(20):
        yr = _core.softmax_forward(x[r:r + 1].copy(), np.empty((1, 9), F32))
        np.testing.assert_array_equal(yr[0], y[r])


def test_activation_bad_arguments():
    x = np.zeros((3, 4), F32)
    with pytest.raises(TypeError):
        _core.relu_forward(x.astype(F64), np.empty_like(x))
    with pytest.raises(TypeError):
        _core.relu_forward(x, np.empty((3, 4), F64))
    with pytest.raises(TypeError):
        _core.sigmoid_forward(np.zeros((3, 8), F32)[:, ::2], np.empty_like(x))
    with pytest.raises(TypeError):
        _core.tanh_forward(x.tolist(), np.empty_like(x))
    with pytest.raises(ValueError):
        _core.relu_forward(x, np.empty((3, 5), F32))
    ro = np.zeros((3, 4), F32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        _core.relu_forward(x, ro)
    with pytest.raises(ValueError):
        _core.relu_backward(x, np.zeros((3, 5), F32), np.empty_like(x))
    with pytest.raises(ValueError):
        _core.leaky_relu_backward(x, np.zeros(11, F32), np.empty_like(x), 0.01)
    with pytest.raises(ValueError):
        _core.softmax_forward(np.zeros(4, F32), np.zeros(4, F32))          # 1-D
    with pytest.raises(ValueError):
        _core.softmax_forward(np.zeros((3, 0), F32), np.zeros((3, 0), F32))
    with pytest.raises(ValueError):
        _core.softmax_forward(x, np.zeros((4, 3), F32))
    with pytest.raises(ValueError):
        _core.softmax_backward(x, x, np.zeros((4, 3), F32))


# --------------------------------------------------------------------------- dropout, mul, all_finite


def _dropout(x, p, seed):
    out = np.full_like(x, np.nan)
    mask = np.full_like(x, np.nan)
    ret = _core.dropout_forward(x, out, mask, p, seed)
    assert ret is out
    return out, mask


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask(p):
    rng = rng_for("dropout", p)
    n = 1_000_003
    x = randn(rng, n)
    out, mask = _dropout(x, p, seed=12345)
    keep = F32(1.0) / (F32(1.0) - F32(p))
    assert np.isin(mask, [0.0, keep]).all(), np.unique(mask)[:10]
    frac = (mask != 0).mean()
    # binomial standard deviation sqrt(p (1 - p) / n) < 5e-4; allow 10 sigma
    assert abs(frac - (1 - p)) < 5e-3, frac
    np.testing.assert_array_equal(out, x * mask)
    if p == 0.0:
        np.testing.assert_array_equal(mask, 1.0)


def test_dropout_seeds():
    x = np.ones((64, 100), F32)
    _, m1 = _dropout(x, 0.5, 7)
    _, m2 = _dropout(x, 0.5, 7)
    _, m3 = _dropout(x, 0.5, 8)
    _, m4 = _dropout(x, 0.5, 2**64 - 1)
    np.testing.assert_array_equal(m1, m2)
    assert (m1 != m3).mean() > 0.3
    assert (m1 != m4).mean() > 0.3
    # counter-based: element i depends only on (seed, i)
    _, head = _dropout(np.ones(1000, F32), 0.5, 7)
    np.testing.assert_array_equal(head, m1.reshape(-1)[:1000])


def test_dropout_inplace_and_empty():
    rng = rng_for("dropout_inplace")
    x = randn(rng, 1000)
    x0 = x.copy()
    mask = np.empty_like(x)
    _core.dropout_forward(x, x, mask, 0.3, 1)
    np.testing.assert_array_equal(x, x0 * mask)
    e = np.zeros(0, F32)
    _core.dropout_forward(e, e.copy(), e.copy(), 0.3, 1)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_dropout_rejects_p(p):
    x = np.ones(10, F32)
    out = np.zeros(10, F32)
    with pytest.raises(ValueError):
        _core.dropout_forward(x, out, np.zeros(10, F32), p, 0)
    np.testing.assert_array_equal(out, 0.0)


def test_dropout_bad_arrays():
    x = np.ones(10, F32)
    with pytest.raises(ValueError):
        _core.dropout_forward(x, np.zeros(10, F32), np.zeros(9, F32), 0.5, 0)
    with pytest.raises(TypeError):
        _core.dropout_forward(x, np.zeros(10, F32), np.zeros(10, F64), 0.5, 0)


def test_mul():
    rng = rng_for("mul")
    x = randn(rng, 33, 7)
    y = randn(rng, 33, 7)
    z = _core.mul(x, y, np.empty_like(x))
    np.testing.assert_array_equal(z, x * y)  # one rounding: exact in float32
    np.testing.assert_allclose(z, x.astype(F64) * y.astype(F64), rtol=EPS32)
    x2 = x.copy()
    _core.mul(x2, y, x2)
    np.testing.assert_array_equal(x2, x * y)
    with pytest.raises(ValueError):
        _core.mul(x, y[:3], np.empty_like(x))


def test_all_finite(isa):
    """A bad value anywhere is found: each of the vector loop's lanes (64
    side by side with AVX-512, 32 with AVX2, 16 in the baseline loop) and
    the scalar rest after the last whole group of lanes, in each instruction
    set's loop."""
    for n in (1, 7, 16, 17, 1001):
        x = np.linspace(-3e38, 3e38, n).astype(F32)
        assert _core.all_finite(x) is True
        for bad in (np.nan, np.inf, -np.inf):
            for pos in {0, n // 2, n - 1}:
                y = x.copy()
                y[pos] = bad
                assert _core.all_finite(y) is False, (n, bad, pos)
    n = 3 * 64 + 9
    x = np.linspace(-3e38, 3e38, n).astype(F32)
    for pos in range(n):
        for bad in (np.nan, -np.inf):
            y = x.copy()
            y[pos] = bad
            assert _core.all_finite(y) is False, (bad, pos)
            assert _core.all_finite(y[pos + 1:]) is True, (bad, pos)
    assert _core.all_finite(np.zeros(0, F32)) is True
    assert _core.all_finite(np.full((3, 4), np.finfo(F32).max, F32)) is True
    assert _core.all_finite(np.full((3, 4), np.finfo(F32).tiny / 4, F32)) is True  # subnormal
    with pytest.raises(TypeError):
        _core.all_finite(np.zeros(3, F64))


FINITE_PIECE = 1 << 20  # sn_check.c: from 2 pieces, an array is read by the threads


@pytest.mark.parametrize("threads", [1, 2])
def test_all_finite_of_a_large_array_finds_each_bad_value(isa, threads):
    """The pieces the threads take: a bad value at either end of the first
    and of the last (short) piece, next to a boundary, or in the middle is
    found, on one thread and on two, with each instruction set's loop."""
    _core.set_num_threads(threads)
    n = 3 * FINITE_PIECE + 12345
    x = np.ones(n, F32)
    assert _core.all_finite(x) is True
    positions = (0, FINITE_PIECE - 1, FINITE_PIECE, 2 * FINITE_PIECE + 7, 3 * FINITE_PIECE,
                 n - 1)
    for pos in positions:
        for bad in (np.nan, -np.inf):
            x[pos] = bad
            assert _core.all_finite(x) is False, (pos, bad)
            assert _core.all_finite(x[pos:pos + 1]) is False
            x[pos] = 1.0
    assert _core.all_finite(x) is True
    x[n - 1] = np.inf
    assert _core.all_finite(x[:n - 1]) is True  # the length is respected


# --------------------------------------------------------------------------- losses


def lse64(z):
    z = np.asarray(z, F64)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def xent64(z, labels):
    z = np.asarray(z, F64)
    return float(np.mean(lse64(z) - z[np.arange(len(labels)), labels]))


def onehot(labels, C):
    T = np.zeros((len(labels), C), F32)
    T[np.arange(len(labels)), labels] = 1.0
    return T


def bce64(z, t):
    z = np.asarray(z, F64)
    t = np.asarray(t, F64)
    return float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))


@pytest.mark.parametrize("M,C", [(1, 1), (1, 2), (17, 10), (64, 3), (5, 1000)])
def test_xent_forward_backward(M, C):
    rng = rng_for("xent", M, C)
    z = randn(rng, M, C, scale=4.0)
    labels = rng.integers(0, C, M).astype(np.int64)
    probs = np.full_like(z, np.nan)
    loss = _core.xent_forward(z, labels, probs)
    assert isinstance(loss, float)
    assert loss == pytest.approx(xent64(z, labels), rel=1e-6, abs=1e-6)
    s = softmax64(z)
    np.testing.assert_allclose(probs, s, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    dz = np.full_like(z, np.nan)
    ret = _core.xent_backward(probs, labels, dz, 1.0 / M)
    assert ret is dz
    want = (s - onehot(labels, C)) / M
    np.testing.assert_allclose(dz, want, rtol=1e-5, atol=1e-6 / M)
    # gradient rows sum to 0
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-6)


def test_xent_huge_logits():
    z = np.array([[1e4, -1e4, 0.0],
                  [-1e4, 1e4, 1e4],
                  [-1e4, -1e4, -1e4],
                  [1e4, -1e4, -1e4]], F32)
    labels = np.array([1, 2, 0, 0], np.int64)
    probs = np.empty_like(z)
    loss = _core.xent_forward(z, labels, probs)
    assert np.isfinite(loss)
    assert loss == pytest.approx(xent64(z, labels), rel=1e-6, abs=1e-5)
    # row 0: label logit 2e4 below the max
    assert loss == pytest.approx((2e4 + np.log(2) + np.log(3) + 0.0) / 4, rel=1e-6)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, softmax64(z), atol=1e-7)
    dz = _core.xent_backward(probs, labels, np.empty_like(z), 0.25)
    np.testing.assert_allclose(dz, (softmax64(z) - onehot(labels, 3)) / 4, atol=1e-7)


def test_xent_labels_checked():
    z = np.zeros((3, 4), F32)
    probs = np.empty_like(z)
    for bad in ([0, 4, 1], [0, -1, 1], [2**40, 0, 0]):
        with pytest.raises(ValueError):
            _core.xent_forward(z, np.array(bad, np.int64), probs)
        with pytest.raises(ValueError):
            _core.xent_backward(probs, np.array(bad, np.int64), np.empty_like(z), 1.0)
    for dtype in (np.int32, np.float64, np.float32, np.uint64):
        with pytest.raises(TypeError):
            _core.xent_forward(z, np.array([0, 1, 2], dtype), probs)
        with pytest.raises(TypeError):
            _core.xent_backward(probs, np.array([0, 1, 2], dtype), np.empty_like(z), 1.0)
    with pytest.raises(TypeError):
        _core.xent_forward(z, [0, 1, 2], probs)
    with pytest.raises(ValueError):
        _core.xent_forward(z, np.array([0, 1], np.int64), probs)       # wrong length
    with pytest.raises(ValueError):
        _core.xent_forward(z, np.array([[0], [1], [2]], np.int64), probs)
    with pytest.raises(ValueError):
        _core.xent_forward(z, np.array([0, 1, 2], np.int64), np.empty((3, 5), F32))
    with pytest.raises(ValueError):
        _core.xent_forward(np.zeros((0, 4), F32), np.zeros(0, np.int64), np.empty((0, 4), F32))
    with pytest.raises(TypeError):
        _core.xent_forward(z.astype(F64), np.array([0, 1, 2], np.int64), probs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_xent_nonfinite_logits(bad):
    z = np.zeros((3, 4), F32)
    labels = np.array([0, 1, 2], np.int64)
    for pos in ((0, 0), (1, 2), (2, 3)):
        zb = z.copy()
        zb[pos] = bad
        if bad == -np.inf and zb[pos[0], labels[pos[0]]] != bad:
            # a -inf logit that is not the label's is a legitimate zero probability
            loss = _core.xent_forward(zb, labels, np.empty_like(z))
            assert np.isfinite(loss)
            continue
        with pytest.raises(FloatingPointError):
            _core.xent_forward(zb, labels, np.empty_like(z))
        with pytest.raises(FloatingPointError):
            _core.xent_soft_forward(zb, onehot(labels, 4), np.empty_like(z))


@pytest.mark.parametrize("M,C", [(1, 2), (17, 10), (8, 1)])
def test_xent_soft(M, C):
    rng = rng_for("soft", M, C)
    z = randn(rng, M, C, scale=3.0)
    T = rng.dirichlet(np.ones(C), M).astype(F32)
    probs = np.full_like(z, np.nan)
    loss = _core.xent_soft_forward(z, T, probs)
    z64 = z.astype(F64)
    want = float(np.mean((T.astype(F64) * (lse64(z64)[:, None] - z64)).sum(axis=1)))
    assert loss == pytest.approx(want, rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(probs, softmax64(z), rtol=1e-5, atol=1e-7)
    dz = np.full_like(z, np.nan)
    ret = _core.xent_soft_backward(probs, T, dz, 1.0 / M)
    assert ret is dz
    np.testing.assert_allclose(dz, (softmax64(z) - T) / M, rtol=1e-5, atol=1e-6 / M)
    # one-hot targets give the hard-label loss and gradient
    labels = rng.integers(0, C, M).astype(np.int64)
    p1, p2 = np.empty_like(z), np.empty_like(z)
    l1 = _core.xent_soft_forward(z, onehot(labels, C), p1)
    l2 = _core.xent_forward(z, labels, p2)
    assert l1 == pytest.approx(l2, rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(p1, p2)
    d1 = _core.xent_soft_backward(p1, onehot(labels, C), np.empty_like(z), 1.0 / M)
    d2 = _core.xent_backward(p2, labels, np.empty_like(z), 1.0 / M)
    np.testing.assert_allclose(d1, d2, rtol=1e-6, atol=1e-7)


def test_xent_soft_gradient_of_targets_that_are_not_distributions():
    """Multi-hot, unnormalised and all-zero target rows: the gradient is
    that of the loss reported, (S_i softmax - T) / M with S_i the row's sum
    (checked against central differences of the float64 loss), not
    (softmax - T) / M, which is right only for rows summing to 1 (and was
    used for all of them: a silent wrong gradient)."""
    rng = rng_for("soft-mass")
    M, C = 6, 4
    z = randn(rng, M, C, scale=2.0)
    T = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [0.3, 0.3, 0.3, 0.3], [0, 0, 0, 0],
                  [2, 0, 0, 0], [0.1, 0, 0.2, 0]], F32)
    probs = np.empty_like(z)
    _core.xent_soft_forward(z, T, probs)
    dz = _core.xent_soft_backward(probs, T, np.empty_like(z), 1.0 / M)

    def loss64(z64):
        return float(np.mean((T.astype(F64) * (lse64(z64)[:, None] - z64)).sum(axis=1)))

    z64, h = z.astype(F64), 1e-6
    numeric = np.zeros_like(z64)
    for i in range(M):
        for j in range(C):
            e = np.zeros_like(z64)
            e[i, j] = h
            numeric[i, j] = (loss64(z64 + e) - loss64(z64 - e)) / (2 * h)
    np.testing.assert_allclose(dz, numeric, rtol=1e-4, atol=1e-6)
    want = (T.sum(axis=1, keepdims=True) * softmax64(z) - T) / M
    np.testing.assert_allclose(dz, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(dz, (softmax64(z) - T) / M, atol=1e-3)  # the old formula differs


def test_xent_soft_bad_arguments():
    z = np.zeros((3, 4), F32)
    with pytest.raises(ValueError):
        _core.xent_soft_forward(z, np.zeros((3, 5), F32), np.empty_like(z))
    with pytest.raises(TypeError):
        _core.xent_soft_forward(z, np.zeros((3, 4), F64), np.empty_like(z))
    with pytest.raises(ValueError):
        _core.xent_soft_backward(z, np.zeros((3, 5), F32), np.empty_like(z), 1.0)
    with pytest.raises(ValueError, match="dz has shape"):
        _core.xent_soft_backward(z, np.zeros((3, 4), F32), np.empty((4, 3), F32), 1.0)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        _core.xent_soft_backward(z.reshape(-1), z.reshape(-1), z.reshape(-1), 1.0)


@pytest.mark.parametrize("shape", [(1,), (17, 3), (1000, 1)])
def test_mse(shape):
    rng = rng_for("mse", shape)
    p = randn(rng, *shape, scale=2.0)
    t = randn(rng, *shape)
    n = p.size
    loss = _core.mse_forward(p, t)
    want = float(np.mean((p.astype(F64) - t.astype(F64)) ** 2))
    assert loss == pytest.approx(want, rel=1e-10)
    dp = np.full_like(p, np.nan)
    ret = _core.mse_backward(p, t, dp, 2.0 / n)
    assert ret is dp
    np.testing.assert_allclose(dp, 2 * (p.astype(F64) - t.astype(F64)) / n, rtol=1e-6,
                               atol=1e-9)
    assert _core.mse_forward(p, p) == 0.0


def test_mse_bad_arguments():
    with pytest.raises(ValueError):
        _core.mse_forward(np.zeros(0, F32), np.zeros(0, F32))
    with pytest.raises(ValueError):
        _core.mse_forward(np.zeros(3, F32), np.zeros(4, F32))
    with pytest.raises(TypeError):
        _core.mse_forward(np.zeros(3, F64), np.zeros(3, F32))
    with pytest.raises(FloatingPointError):
        _core.mse_forward(np.array([1.0, np.inf], F32), np.zeros(2, F32))
    with pytest.raises(FloatingPointError):
        _core.mse_forward(np.array([1.0, 2.0], F32), np.array([np.nan, 0], F32))


@pytest.mark.parametrize("shape", [(1,), (33, 4), (500, 1)])
def test_bce_logits(shape):
    rng = rng_for("bce", shape)
    z = randn(rng, *shape, scale=4.0)
    z.flat[:1] = 100.0
    if z.size > 2:
        z.flat[1] = -100.0
        z.flat[2] = 0.0
    t = rng.uniform(0, 1, shape).astype(F32)
    if t.size > 3:
        t.flat[3:6] = [0.0, 1.0, 0.0][: t.size - 3]
    n = z.size
    loss = _core.bce_logits_forward(z, t)
    assert np.isfinite(loss)
    assert loss == pytest.approx(bce64(z, t), rel=1e-6, abs=1e-7)
    dz = np.full_like(z, np.nan)
    ret = _core.bce_logits_backward(z, t, dz, 1.0 / n)
    assert ret is dz
    want = (sigmoid64(z) - t.astype(F64)) / n
    np.testing.assert_allclose(dz, want, rtol=1e-5, atol=1e-7 / n)


def test_bce_saturated_logits():
    z = np.array([100.0, -100.0, 100.0, -100.0, 1e4, -1e4], F32)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], F32)
    loss = _core.bce_logits_forward(z, t)
    assert np.isfinite(loss)
    # right answers cost ~0, wrong ones |z|
    assert loss == pytest.approx((100.0 + 100.0) / 6, rel=1e-9)
    assert loss == pytest.approx(bce64(z, t), rel=1e-9)
    dz = _core.bce_logits_backward(z, t, np.empty_like(z), 1.0)
    assert np.isfinite(dz).all()
    np.testing.assert_allclose(dz, [0, 0, 1, -1, 0, 0], atol=1e-30)
    with pytest.raises(FloatingPointError):
        _core.bce_logits_forward(np.array([np.nan, 0], F32), np.zeros(2, F32))
    with pytest.raises(FloatingPointError):
        _core.bce_logits_forward(np.array([np.inf, 0], F32), np.zeros(2, F32))
    with pytest.raises(ValueError):
        _core.bce_logits_forward(np.zeros(0, F32), np.zeros(0, F32))
    with pytest.raises(ValueError):
        _core.bce_logits_backward(np.zeros(3, F32), np.zeros(2, F32), np.zeros(3, F32), 1.0)


# --------------------------------------------------------------------------- Python loss classes


def test_cross_entropy_class():
    rng = rng_for("CE")
    M, C = 32, 7
    z = randn(rng, M, C, scale=3.0)
    labels = rng.integers(0, C, M)
    ce = sn.CrossEntropy()
    loss = ce(z, labels)
    assert loss == pytest.approx(xent64(z, labels), rel=1e-6, abs=1e-6)
    dz = ce.backward()
    want = (softmax64(z) - onehot(labels, C)) / M
    np.testing.assert_allclose(dz, want, rtol=1e-5, atol=1e-7)
    dz = dz.copy()

    # one-hot targets (float or int) give the same loss and gradient
    for T in (onehot(labels, C), onehot(labels, C).astype(np.int64)):
        ce2 = sn.CrossEntropy()
        loss2 = ce2(z, T)
        assert loss2 == pytest.approx(loss, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(ce2.backward(), dz, rtol=1e-6, atol=1e-8)

    # labels as int32, (N, 1) and float64 whole numbers are converted
    for lab in (labels.astype(np.int32), labels.reshape(-1, 1), labels.astype(F64)):
        assert sn.CrossEntropy()(z, lab) == pytest.approx(loss, rel=1e-12)
    # float64 logits are converted too
    assert sn.CrossEntropy()(z.astype(F64), labels) == pytest.approx(loss, rel=1e-12)


def test_cross_entropy_class_soft_targets_and_errors():
    rng = rng_for("CEsoft")
    z = randn(rng, 5, 4)
    T = rng.dirichlet(np.ones(4), 5)
    ce = sn.CrossEntropy()
    loss = ce(z, T)
    z64 = z.astype(F64)
    want = float(np.mean((T.astype(F32).astype(F64) * (lse64(z64)[:, None] - z64)).sum(1)))
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(ce.backward(), (softmax64(z) - T) / 5, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        ce(z, [0, 1, 2, 3, 4])                 # label 4 of 4 classes
    with pytest.raises(ValueError):
        ce(z, [0, 1, -1, 3, 0])
    with pytest.raises(ValueError):
        ce(z, [0, 1, 2])                       # wrong count
    with pytest.raises(ValueError):
        ce(z, [0.5, 1, 2, 3, 0])               # not whole numbers
    zb = z.copy()
    zb[1, 1] = np.nan
    with pytest.raises(ValueError):            # Python layer checks before the kernel
        ce(zb, [0, 1, 2, 3, 0])
    with pytest.raises(RuntimeError):
        sn.CrossEntropy().backward()


def test_mse_class():
    rng = rng_for("MSEc")
    p = randn(rng, 16, 3)
    t = randn(rng, 16, 3)
    mse = sn.MSE()
    loss = mse(p, t)
    assert loss == pytest.approx(np.mean((p.astype(F64) - t.astype(F64)) ** 2), rel=1e-10)
    np.testing.assert_allclose(mse.backward(), 2 * (p.astype(F64) - t) / p.size, rtol=1e-6,
                               atol=1e-9)
    # (N,) targets for (N, 1) predictions
    p1 = randn(rng, 16, 1)
    t1 = randn(rng, 16)
    assert sn.MSE()(p1, t1) == pytest.approx(np.mean((p1[:, 0].astype(F64) - t1) ** 2),
                                             rel=1e-10)
    with pytest.raises(ValueError):
        sn.MSE()(p, t[:, :2])


def test_bce_class():
    rng = rng_for("BCEc")
    z = randn(rng, 40, 1, scale=3.0)
    z[0, 0], z[1, 0] = 100.0, -100.0
    t = (rng.uniform(size=40) > 0.5).astype(F32)
    bce = sn.BinaryCrossEntropy()
    loss = bce(z, t)
    assert np.isfinite(loss)
    assert loss == pytest.approx(bce64(z[:, 0], t), rel=1e-6, abs=1e-7)
    dz = bce.backward()
    assert dz.shape == z.shape
    np.testing.assert_allclose(dz[:, 0], (sigmoid64(z[:, 0]) - t) / 40, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError):
        bce(z, t * 2.0)                        # targets outside [0, 1]
