/* GEMM driver: C = alpha * op(A) @ op(B) + beta * C, BLIS-style.
 *
 * Loop nest (outermost first), with what each level keeps in cache:
 *   jc: nc columns of C and op(B)
 *     pc: kc of the shared dimension; op(B)[pc.., jc..] packed once (L3)
 *       ic: mc rows of C; op(A)[ic.., pc..] packed once (L2)
 *         jr, ir: one nr-wide panel of B (L1) times one mr-tall panel of A,
 *                 the micro-kernel's register tile.
 * Transposition is absorbed by the packing routines, so the micro-kernel
 * sees one layout whatever trans_a and trans_b are.
 *
 * Threads (OpenMP) take strips of C, each computed by this loop nest on its
 * own (see sn_gemm_f32). Every element of C is summed in the same order
 * whatever the thread count, so results are identical run to run and across
 * counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_atomic.h"
#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#define SN_HAVE_SSE 1
#else
#define SN_HAVE_SSE 0
#endif
#include "sn_fpmode.h"
#include "sn_internal.h"


/* ---- packing workspaces ----
 * A fixed pool of slots, each a pair of buffers (panels of A, panels of B)
 * that grows and is never shrunk. One call of gemm_blocked takes a free
 * slot with a compare-and-swap on its flag and gives it back on return; if
 * every slot is busy, it allocates for that call alone and frees after.
 * So the memory kept is bounded by the number of calls that ever ran at
 * once, not by the number of threads that ever called: a buffer per thread
 * (thread-local) would be left behind by every thread that exits, the
 * short-lived threads of a Python thread pool included. A thread tries the
 * slot it had last time first, so its buffers stay in its own core's cache
 * in the steady state. */

typedef struct {
    void *raw;     /* what malloc returned */
    float *data;   /* 64-byte aligned */
    size_t cap;    /* floats available at data */
} sn_buffer;

#define SN_PACK_SLOTS 64

typedef union {
    struct {
        sn_atomic_int busy; /* 1 while a call owns the buffers */
        sn_buffer a, b;
    } s;
    char line[64]; /* one cache line per slot: no false sharing of the flags */
} sn_pack_slot;

static sn_pack_slot g_slots[SN_PACK_SLOTS];
static SN_THREAD_LOCAL int g_slot_hint; /* the slot this thread took last */

/* The index of a slot now owned by the caller, or -1 if all are busy. */
static int slot_take(void)
{
    const int hint = g_slot_hint;
    if (sn_atomic_cas(&g_slots[hint].s.busy, 0, 1)) return hint;
    for (int i = 0; i < SN_PACK_SLOTS; ++i)
        if (sn_atomic_load(&g_slots[i].s.busy) == 0 && sn_atomic_cas(&g_slots[i].s.busy, 0, 1)) {
            g_slot_hint = i;
            return i;
        }
    return -1;
}

static float *buffer_reserve(sn_buffer *buf, size_t n)
{
    if (buf->cap >= n) return buf->data;
    void *raw = malloc(n * sizeof(float) + 64);
    if (!raw) return NULL;
    free(buf->raw);
    buf->raw = raw;
    buf->data = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    buf->cap = n;
    return buf->data;
}

/* ---- packing ---- */

/* n lines of w floats, ld apart at src, one after another at dst. */
SN_ALWAYS_INLINE
static inline void copy_lines_of(float *dst, const float *src, int64_t ld, int64_t n, int w)
{
    for (int64_t k = 0; k < n; ++k) memcpy(dst + k * w, src + k * ld, (size_t)w * sizeof(float));
}

/* The same, with w known to the compiler for the kernels' tile sizes (4 is
 * the AVX2 tail kernel's): each line a few vector moves instead of a loop
 * of single floats (a 64 x 10 x 128 GEMM with A transposed spent 13 us,
 * more than half of it copying A's panels 6 floats at a time; AMD EPYC
 * Zen 3). */
static void copy_lines(float *dst, const float *src, int64_t ld, int64_t n, int w)
{
    switch (w) {
    case 4: copy_lines_of(dst, src, ld, n, 4); break;
    case 6: copy_lines_of(dst, src, ld, n, 6); break;
    case 8: copy_lines_of(dst, src, ld, n, 8); break;
    case 12: copy_lines_of(dst, src, ld, n, 12); break;
    case 16: copy_lines_of(dst, src, ld, n, 16); break;
    case 32: copy_lines_of(dst, src, ld, n, 32); break;
    default: copy_lines_of(dst, src, ld, n, w); break;
    }
}

/* The panel of op(A)[i0 : i0+rows, k0 : k0+kc] (rows <= mr) at dst, stored
 * k-major, mr values per k, rows past `rows` zero-filled. */
static void pack_a_panel(float *dst, const float *A, int64_t lda, int trans_a, int64_t i0,
                         int64_t k0, int64_t rows, int64_t kc, int mr)
{
    if (trans_a && rows == mr) {
        /* op(A)(i, k) = A[k, i]: each k gives mr consecutive values */
        copy_lines(dst, A + k0 * lda + i0, lda, kc, mr);
    } else if (trans_a) {
        for (int64_t k = 0; k < kc; ++k) {
            const float *src = A + (k0 + k) * lda + i0;
            float *d = dst + k * mr;
            int64_t i = 0;
            for (; i < rows; ++i) d[i] = src[i];
            for (; i < mr; ++i) d[i] = 0.0f;
        }
    } else {
        const float *src = A + i0 * lda + k0;
        int64_t k_done = 0;
#if SN_HAVE_SSE
        /* op(A)(i, k) = A[i, k]: four k of each row at once, the rows by
         * fours through a 4 x 4 transpose in registers, a last pair by
         * unpacking (every mr is even). A float at a time, 1024^3 spent 7%
         * of its time here, waiting on each row's loads in turn. */
        if (rows == mr && mr % 2 == 0)
            for (; k_done + 4 <= kc; k_done += 4) {
                float *d = dst + k_done * mr;
                int i = 0;
                for (; i + 4 <= mr; i += 4) {
                    const float *s = src + i * lda + k_done;
                    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lda);
                    __m128 r2 = _mm_loadu_ps(s + 2 * lda), r3 = _mm_loadu_ps(s + 3 * lda);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    _mm_storeu_ps(d + i, r0);
                    _mm_storeu_ps(d + mr + i, r1);
                    _mm_storeu_ps(d + 2 * mr + i, r2);
                    _mm_storeu_ps(d + 3 * mr + i, r3);
                }
                if (i < mr) { /* rows i, i + 1: (k, k + 1) then (k + 2, k + 3) */
                    const float *s = src + i * lda + k_done;
                    const __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lda);
                    const __m128 lo = _mm_unpacklo_ps(r0, r1), hi = _mm_unpackhi_ps(r0, r1);
                    _mm_storel_pi((__m64 *)(d + i), lo);
                    _mm_storeh_pi((__m64 *)(d + mr + i), lo);
                    _mm_storel_pi((__m64 *)(d + 2 * mr + i), hi);
                    _mm_storeh_pi((__m64 *)(d + 3 * mr + i), hi);
                }
            }
#endif
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t k = k_done; k < kc; ++k) dst[k * mr + i] = src[i * lda + k];
        for (int64_t i = rows; i < mr; ++i)
            for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = 0.0f;
    }
}

/* Panel p of op(B)[k0 : k0+kc, j0 : j0+nc]: columns p*nr ..., stored k-major,
 * nr values per k, columns past nc zero-filled. */
static void pack_b_panel(float *dst, const float *B, int64_t ldb, int trans_b, int64_t k0,
                         int64_t j0, int64_t kc, int64_t nc, int nr, int64_t p)
{
    const int64_t col0 = p * nr;
    const int64_t cols = nc - col0 < nr ? nc - col0 : nr;
    dst += p * kc * nr;
    if (trans_b) {
        /* op(B)(k, j) = B[j, k]: a transpose, by 4 x 4 blocks in registers
         * where SSE is there (every x86-64), the rest one value at a time */
        int64_t k_done = 0;
#if SN_HAVE_SSE
        if (cols == nr && nr % 4 == 0) {
            for (; k_done + 4 <= kc; k_done += 4)
                for (int64_t j = 0; j < nr; j += 4) {
                    const float *s = B + (j0 + col0 + j) * ldb + k0 + k_done;
                    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + ldb);
                    __m128 r2 = _mm_loadu_ps(s + 2 * ldb), r3 = _mm_loadu_ps(s + 3 * ldb);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    float *d = dst + k_done * nr + j;
                    _mm_storeu_ps(d, r0);
                    _mm_storeu_ps(d + nr, r1);
                    _mm_storeu_ps(d + 2 * nr, r2);
                    _mm_storeu_ps(d + 3 * nr, r3);
                }
        }
#endif
        for (int64_t j = 0; j < cols; ++j) {
            const float *src = B + (j0 + col0 + j) * ldb + k0;
            for (int64_t k = k_done; k < kc; ++k) dst[k * nr + j] = src[k];
        }
        for (int64_t j = cols; j < nr; ++j)
            for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = 0.0f;
    } else if (cols == nr) {
        copy_lines(dst, B + k0 * ldb + j0 + col0, ldb, kc, nr);
    } else {
        for (int64_t k = 0; k < kc; ++k) {
            const float *src = B + (k0 + k) * ldb + j0 + col0;
            float *d = dst + k * nr;
            int64_t j = 0;
            for (; j < cols; ++j) d[j] = src[j];
            for (; j < nr; ++j) d[j] = 0.0f;
        }
    }
}

/* ---- helpers ---- */

/* C = beta * C, for K == 0 or alpha == 0; beta == 0 writes zeros without reading. */
static void scale_c(float *C, int64_t ldc, int64_t M, int64_t N, float beta)
{
    for (int64_t i = 0; i < M; ++i) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else
            for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
}

static int check_args(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                      const float *A, int64_t lda, const float *B, int64_t ldb,
                      const float *C, int64_t ldc)
{
    if (M < 0 || N < 0 || K < 0) return SN_EINVAL;
    const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    if (lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1) ||
        ldc < (N > 1 ? N : 1))
        return SN_EINVAL;
    if (M > 0 && N > 0 && (!C || (K > 0 && (!A || !B)))) return SN_EINVAL;
    return SN_OK;
}

/* ---- the reference ---- */

int sn_gemm_naive_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                      float beta, float *C, int64_t ldc)
{
    int status = check_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (status != SN_OK) return status;
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double sum = 0.0;
            for (int64_t k = 0; k < K; ++k) {
                const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                sum += (double)a * b;
            }
            float *c = C + i * ldc + j;
            *c = (float)(alpha * sum + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
    return SN_OK;
}

/* ---- the fast path ---- */

static void apply_epilogue(const sn_epilogue *ep, float *c, int64_t ldc, int64_t i0,
                           int64_t j0, int64_t rows, int64_t cols)
{
    if (ep->kind == SN_EPI_BIAS_ACT)
        sn_act_rows_f32(c, ldc, rows, cols, ep->bias ? ep->bias + j0 : NULL, ep->act,
                        ep->act_param);
    else if (ep->kind == SN_EPI_DACT)
        sn_dact_rows_f32(c, ldc, rows, cols, ep->y + i0 * ep->ldy + j0,
                         ep->mask ? ep->mask + i0 * ep->ldy + j0 : NULL, ep->ldy, ep->act,
                         ep->act_param);
}

/* an epilogue that does nothing: none */
static const sn_epilogue *epilogue_or_null(const sn_epilogue *ep)
{
    return ep && ep->kind == SN_EPI_NONE ? NULL : ep;
}

/* Where the work of a claimed call (sn_gemm_claimed_f32) is not cut into
 * panels: 1 for the caller whose claim is the first, which computes the
 * whole product, 0 for the others and for a helper; 1 without claims.
 * Panel claims count from 0, far below this one's size. */
#define SN_CLAIM_WHOLE (1 << 24)
static int claims_whole(const sn_claims *claims)
{
    return !claims ||
           (!claims->helping && sn_atomic_fetch_sub(claims->next, -SN_CLAIM_WHOLE) == 0);
}

/* The next of n panels for this caller, n when none is left for it */
static int64_t claim_panel(const sn_claims *claims, int64_t n)
{
    if (!claims->helping) return sn_atomic_fetch_sub(claims->next, -1);
    for (;;) {
        const int taken = sn_atomic_load(claims->next);
        if (taken >= n - 1) return n;
        if (sn_atomic_cas(claims->next, taken, taken + 1)) return taken;
    }
}

/* Whether a panel read in place stays in L1 while the micro-kernel goes
 * over it again and again: `rows` rows of the matrix, ld floats apart,
 * `width` floats of each (a transposed A: kc rows of mr; a plain B: kc rows
 * of nr; a plain A through the row kernel: mr rows of kc). Its cache lines
 * fall in the sets of a 64-set L1 (4 KB a way, as on the x86-64 and arm64
 * cores this runs on) spaced by ld: a power of two piles them into a few
 * sets, which hold 8 or 12 lines each, and the panel evicts itself and the
 * other operand's panel. Packed, it is contiguous. So: in place if no set
 * gets more than `ways` of its lines (half the ways, the other half for
 * the other panel: sn_gemm_blocks.panel_ways). Measured on an AMD EPYC Zen
 * 3 (8 ways, 4 for a panel), one thread, against packing: 1024^3 with A
 * transposed (lda 1024) 1.34x faster packed, 784x128x128's A (lda 784)
 * 1.17x faster in place; 128x512x784's B (ldb 512) 1.13x faster packed; a
 * plain A of 2048^3 through the row kernel 1.06x faster packed. */
static int panel_fits_l1(int64_t ld, int64_t rows, int64_t width, int ways)
{
    enum { SETS = 64, LINE = 64 };
    const int64_t lines = (width * (int64_t)sizeof(float) + LINE - 1) / LINE;
    if (lines == 1) {
        /* rows ld * 4 bytes apart cycle through SETS * LINE / gcd(that, SETS * LINE)
         * sets (at most SETS): evenly, ceil(rows / sets) lines in each */
        int64_t g = SETS * LINE;
        for (int64_t r = ld * (int64_t)sizeof(float) % (SETS * LINE); r != 0;) {
            const int64_t t = g % r;
            g = r;
            r = t;
        }
        const int64_t sets = SETS * LINE / (g > LINE ? g : LINE);
        return (rows + sets - 1) / sets <= ways;
    }
    int count[SETS] = {0};
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t first = r * ld * (int64_t)sizeof(float) / LINE;
        for (int64_t l = 0; l < lines && l < SETS; ++l)
            if (++count[(first + l) % SETS] > ways) return 0;
    }
    return 1;
}

/* Which panels gemm_loops reads where they are, for a sub-problem of M
 * rows: a plain B when the M rows fit one mc block, a transposed A, or a
 * plain A through the row kernel (where there is one), each only if it
 * fits L1 (a plain B also if it would not fit there packed). */
typedef struct {
    int b, a_transposed, a_rows;
} in_place_panels;

/* The rows of one mc block: mc, or all M rows where A's main panels are
 * read in place through the row kernel (nothing of them packed) and
 * A's M x K, K shorter than the kc mc was sized for, takes no more bytes
 * than an mc x kc block. 128 rows of K 392 (the step's first product) were
 * 126 + 2 with mc 126, and the last 2 rows read all of a packed B again;
 * as one block, B's panels can be packed as they are used (gemm_loops). */
static int64_t block_rows(const sn_gemm_plan *plan, int a_rows, int64_t M, int64_t K)
{
    const int64_t mc = plan->blocks.mc, kc = plan->blocks.kc;
    if (M <= mc) return M;
    return a_rows && K < kc && M <= mc * kc / K ? M : mc;
}

static in_place_panels panels_in_place(const sn_gemm_plan *plan, int trans_a, int trans_b,
                                       int64_t lda, int64_t ldb, int64_t M, int64_t K)
{
    const sn_gemm_kernel_info *ki = plan->ki;
    const int64_t kc = K < plan->blocks.kc ? K : plan->blocks.kc;
    const int ways = plan->blocks.panel_ways;
    in_place_panels p;
    p.a_rows = !trans_a && ki->kernel_rows != NULL && panel_fits_l1(lda, ki->mr, kc, ways);
    /* a plain B whose panel would not stay in L1 even packed (more than
     * L1d: on a 48 KB L1d the AVX-512 tile's 32 columns by kc 385 or more)
     * is read in place too: packing would only add a pass over B (the
     * step's W_0, 392 x 512, written by the optimizer and read once by the
     * product). 1 thread: 128x512x392 1.04-1.07x, 128x128x392 1.06x
     * faster; C trainer steps 784-128-10 Adam 1.025x, SGD batch 32 1.123x,
     * 784-512-256-10 1.018x (AMD EPYC Zen 5; the AVX2 kernel's 16-column
     * panels, timed either way there: no difference) */
    const int packed_fits_l1 = kc * ki->nr * (int64_t)sizeof(float) <= plan->blocks.l1d;
    p.b = !trans_b && block_rows(plan, p.a_rows, M, K) == M &&
          (!packed_fits_l1 || panel_fits_l1(ldb, kc, ki->nr, ways));
    p.a_transposed = trans_a && panel_fits_l1(lda, kc, ki->mr, ways);
    return p;
}

/* How an mc block's rows are cut into register tiles: n_main panels of the
 * kernel's mr rows over the first main_rows rows (the last panel short if
 * main_rows is not a multiple of mr), then panels of the tail kernel's
 * mr_tail rows over the rest (the last one short likewise). A short panel
 * costs as much as a full one, so the cut that computes the fewest rows,
 * counting the short panels' padding, wins; ties keep mr-row panels only.
 * With mr 6 and mr_tail 4: 128 rows as 20 x 6 + 2 x 4 (128 rows computed)
 * instead of 22 x 6 (132); 400 as 66 x 6 + 4 (400, not 402); 101 as
 * 17 x 6 (102) as before. */
typedef struct {
    int64_t n_main, main_rows, n_tail;
} row_panels;

static row_panels row_panels_of(const sn_gemm_kernel_info *ki, int64_t mc)
{
    const int64_t mr = ki->mr, mt = ki->mr_tail, full = mc / mr, rest = mc % mr;
    row_panels best = {(mc + mr - 1) / mr, mc, 0};
    if (!ki->kernel_tail || rest == 0) return best;
    int64_t best_rows = best.n_main * mr;
    /* the rest in tail panels, or the rest and the last full panel */
    for (int64_t taken = 0; taken <= 1 && taken <= full; ++taken) {
        const int64_t tail = rest + taken * mr, n_tail = (tail + mt - 1) / mt;
        const int64_t rows = (full - taken) * mr + n_tail * mt;
        if (rows < best_rows) {
            best = (row_panels){full - taken, (full - taken) * mr, n_tail};
            best_rows = rows;
        }
    }
    return best;
}

/* Panel ir of an mc block cut as rp says: its first row, valid rows,
 * height (mr or mr_tail), where it sits in the packed buffer, and whether
 * it is one of the main kernel's. */
typedef struct {
    int64_t row0, rows, height, packed_at;
    int main;
} a_panel;

static a_panel a_panel_of(const row_panels *rp, const sn_gemm_kernel_info *ki, int64_t mc,
                          int64_t kc, int64_t ir)
{
    a_panel p;
    p.main = ir < rp->n_main;
    if (p.main) {
        p.row0 = ir * ki->mr;
        p.height = ki->mr;
        p.packed_at = ir * kc * ki->mr;
        p.rows = rp->main_rows - p.row0 < ki->mr ? rp->main_rows - p.row0 : ki->mr;
    } else {
        const int64_t q = ir - rp->n_main;
        p.row0 = rp->main_rows + q * ki->mr_tail;
        p.height = ki->mr_tail;
        p.packed_at = rp->n_main * kc * ki->mr + q * kc * ki->mr_tail;
        p.rows = mc - p.row0 < ki->mr_tail ? mc - p.row0 : ki->mr_tail;
    }
    return p;
}

/* An edge tile's valid part, v = alpha * acc computed aside, into C as the
 * kernel would have stored it: v, or beta * c + v rounded once where the
 * kernel fuses that (fmaf: a library call without FMA in the baseline
 * build, so only for a beta other than 1, where beta * c is exact), else
 * twice. Before 2026-11-28 it always rounded twice: with beta 1.5 a row's
 * bits depended on whether it fell in an edge tile. */
static void copy_edge(const float *tile, int64_t ld_tile, float *c, int64_t ldc, int64_t rows,
                      int64_t cols, float beta, int fused)
{
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            const float v = tile[i * ld_tile + j];
            float *cij = &c[i * ldc + j];
            *cij = beta == 0.0f              ? v
                   : beta == 1.0f            ? v + *cij
                   : fused                   ? fmaf(beta, *cij, v)
                                             : v + beta * *cij;
        }
}

/* the lines holding n floats from p, asked for into the cache */
static void prefetch_floats(const float *p, int64_t n)
{
    const uintptr_t end = (uintptr_t)(p + n);
    for (uintptr_t at = (uintptr_t)p & ~(uintptr_t)63; at < end; at += 64)
        SN_PREFETCH((const char *)at);
}

/* Share `share` of `shares` of the panel of op(B) at rows k0 .. k0 + kc,
 * columns j0 .. j0 + cols, asked for into the cache: a plain B's kc rows,
 * cols floats of each, or a transposed B's cols rows, kc floats of each. */
static void prefetch_b_share(const float *B, int64_t ldb, int trans_b, int64_t k0, int64_t j0,
                             int64_t kc, int64_t cols, int64_t share, int64_t shares)
{
    if (!trans_b)
        for (int64_t k = share * kc / shares; k < (share + 1) * kc / shares; ++k)
            prefetch_floats(B + (k0 + k) * ldb + j0, cols);
    else
        for (int64_t j = share * cols / shares; j < (share + 1) * cols / shares; ++j)
            prefetch_floats(B + (j0 + j) * ldb + k0, kc);
}

/* The blocked loop nest on one sub-problem, in the calling thread, packing
 * into pa (MC x kc) and pb (kc x NC), rounded up to whole panels. */
static void gemm_loops(const sn_gemm_plan *plan, int trans_a, int trans_b, int64_t M,
                       int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                       const sn_epilogue *ep, float *pa, float *pb, const sn_claims *claims)
{
    const sn_gemm_kernel_info *ki = plan->ki;
    const int nr = ki->nr;
    const int64_t KC = plan->blocks.kc;
    const int64_t NC = N < plan->blocks.nc ? N : plan->blocks.nc;
    float tile[SN_MAX_MR * SN_MAX_NR];
    /* Reading panels in place saves a copy when the whole of op(A) fits in
     * one mc block (small problems, where the copy is a large share). */
    const in_place_panels in_place = panels_in_place(plan, trans_a, trans_b, lda, ldb, M, K);
    const int direct_b = in_place.b, direct_a = in_place.a_transposed, rows_a = in_place.a_rows;
    const int64_t MC = block_rows(plan, rows_a, M, K);
    /* With one mc block each panel of B is used by one pass of tiles: it is
     * packed just before them, into one slot that stays in L1, while the
     * tiles ask for the next panel's lines (a share each), instead of a
     * pass over all of B first (its lines ld floats apart, a stride the
     * prefetchers do not follow across pages) whose packed copy was read
     * back from L2 or L3. The step's first product, 128 x 512 x 392 with
     * B's rows 512 floats apart, 1.04-1.06x; 784-512-256-10 training steps
     * 1.025-1.032x (AMD EPYC Zen 3, one thread). */
    const int b_as_used = !direct_b && MC == M;
    /* claimed panels: one block of rows, columns and the shared dimension,
     * so that a panel of C is made whole where it is claimed */
    if (claims && !(b_as_used && N <= NC && K <= KC)) {
        if (!claims_whole(claims)) return;
        claims = NULL;
    }
    /* The epilogue goes over each tile as it is made, while it is in L1;
     * but with a short K a tile takes less time to make than a call over
     * its 6 rows of 16, so over a small block (still in L1 or L2) it goes
     * once, after the block's last tile. 128 x 64 x 10 with the ReLU
     * derivative (784-128-10's last layer backward): 6.5 -> 4.6 us, 3.5
     * without the epilogue (AMD EPYC Zen 3). */
    const int epilogue_by_block =
        ep != NULL && !claims && K < SN_EPILOGUE_TILE_MIN_K &&
        MC * NC * (int64_t)sizeof(float) <= SN_EPILOGUE_BLOCK_MAX_BYTES;

    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = N - jc < NC ? N - jc : NC;
        const int64_t n_jr = (nc + nr - 1) / nr;
        for (int64_t pc = 0; pc < K; pc += KC) {
            const int64_t kc = K - pc < KC ? K - pc : KC;
            /* later kc blocks add to what the first one wrote */
            const float beta_k = pc == 0 ? beta : 1.0f;
            const int last_k = pc + kc == K && ep != NULL && !epilogue_by_block;
            /* B not transposed already has the panel layout, rows ldb apart:
             * read it in place, packing only a ragged last panel */
            for (int64_t p = direct_b ? n_jr - 1 : 0; p < n_jr && !b_as_used; ++p)
                if (!direct_b || nc - p * nr < nr)
                    pack_b_panel(pb, B, ldb, trans_b, pc, jc, kc, nc, nr, p);
            for (int64_t ic = 0; ic < M; ic += MC) {
                const int64_t mc = M - ic < MC ? M - ic : MC;
                const row_panels rp = row_panels_of(ki, mc);
                const int64_t n_ir = rp.n_main + rp.n_tail;
                /* likewise a transposed A (its rows are the panel's columns)
                 * or a plain one with the row kernel (mr-row panels only) */
                for (int64_t ir = 0; ir < n_ir; ++ir) {
                    const a_panel ap = a_panel_of(&rp, ki, mc, kc, ir);
                    if (!(direct_a || (rows_a && ap.main)) || ap.rows < ap.height)
                        pack_a_panel(pa + ap.packed_at, A, lda, trans_a, ic + ap.row0, pc,
                                     ap.rows, kc, ap.height);
                }
                for (int64_t jr_next = 0;;) {
                    const int64_t jr = claims ? claim_panel(claims, n_jr) : jr_next++;
                    if (jr >= n_jr) break;
                    const int64_t cols = nc - jr * nr < nr ? nc - jr * nr : nr;
                    const int b_in_place = direct_b && cols == nr;
                    /* pack_b_panel puts panel jr at dst + jr * kc * nr */
                    if (b_as_used) pack_b_panel(pb - jr * kc * nr, B, ldb, trans_b, pc, jc, kc, nc, nr, jr);
                    const float *bp = b_in_place ? B + pc * ldb + jc + jr * nr
                                      : b_as_used ? pb
                                                  : pb + jr * kc * nr;
                    const int64_t b_ks = b_in_place ? ldb : nr;
                    for (int64_t ir = 0; ir < n_ir; ++ir) {
                        if (b_as_used && jr + 1 < n_jr)
                            prefetch_b_share(B, ldb, trans_b, pc, jc + (jr + 1) * nr, kc,
                                             nc - (jr + 1) * nr < nr ? nc - (jr + 1) * nr : nr,
                                             ir, n_ir);
                        const a_panel pan = a_panel_of(&rp, ki, mc, kc, ir);
                        const int64_t rows = pan.rows;
                        const int full = rows == pan.height;
                        const int a_in_place = direct_a && full;
                        const int a_rows = rows_a && full && pan.main;
                        const float *ap = a_in_place ? A + pc * lda + ic + pan.row0
                                          : a_rows   ? A + (ic + pan.row0) * lda + pc
                                                     : pa + pan.packed_at;
                        const int64_t a_ks = a_in_place || a_rows ? lda : pan.height;
                        const sn_ukernel_fn kernel = !pan.main ? ki->kernel_tail
                                                     : a_rows  ? ki->kernel_rows
                                                               : ki->kernel;
                        float *c = C + (ic + pan.row0) * ldc + jc + jr * nr;
                        if (full && cols == nr) {
                            kernel(kc, ap, a_ks, bp, b_ks, c, ldc, alpha, beta_k);
                        } else {
                            /* edge tile: compute the full tile aside, keep the valid part */
                            kernel(kc, ap, a_ks, bp, b_ks, tile, nr, alpha, 0.0f);
                            copy_edge(tile, nr, c, ldc, rows, cols, beta_k, ki->fused_beta);
                        }
                        if (last_k)
                            apply_epilogue(ep, c, ldc, ic + pan.row0, jc + jr * nr, rows, cols);
                    }
                }
                if (epilogue_by_block && pc + kc == K)
                    apply_epilogue(ep, C + ic * ldc + jc, ldc, ic, jc, mc, nc);
            }
        }
    }
}

/* A weight gradient of a narrow layer, C = A^T op(B) with fewer columns
 * than the kernel's tile (a classifier's 10 classes), would be mostly
 * padding in every tile. Its transpose C^T = op(B)^T A has N rows (the
 * tail kernel takes what mr-row panels leave) and reads A plain: computed
 * instead, then copied into C. Each element is the same chain of
 * multiply-adds either way (a b and b a round alike), so the same bits.
 * Not with beta (C would be read transposed) or an epilogue. 64 x 10 x 128
 * with A transposed (784-128-10's last layer, half the inputs): 21 GFLOPS
 * as it is, 49 as 10 x 64 x 128 (AMD EPYC Zen 3, one thread). */
static int transposed_is_narrower(const sn_gemm_plan *plan, int trans_a, int64_t M, int64_t N,
                                  float beta, const sn_epilogue *ep)
{
    return trans_a && N < plan->ki->nr && M >= plan->ki->nr && beta == 0.0f && ep == NULL;
}

/* gemm_loops with packing buffers from the pool (or, all slots busy, this
 * call's own). Returns SN_ENOMEM if they cannot grow; C is then untouched
 * (but for panels that other threads of a claimed call made). */
static int gemm_blocked(const sn_gemm_plan *plan, int trans_a, int trans_b, int64_t M,
                        int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const sn_epilogue *ep, const sn_claims *claims)
{
    /* a few columns: the ISA's narrow kernel, no packing (same bits) */
    if (!trans_b && N <= SN_NARROW_N && plan->ki->narrow) {
        if (!claims_whole(claims)) return SN_OK;
        plan->ki->narrow(trans_a, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, plan->blocks.kc);
        if (ep) apply_epilogue(ep, C, ldc, 0, 0, M, N);
        return SN_OK;
    }
    const int transposed = transposed_is_narrower(plan, trans_a, M, N, beta, ep);
    /* the rows and columns gemm_loops computes; with C^T, also C^T itself
     * (N x M) after the packed B */
    const int64_t rows = transposed ? N : M, cols = transposed ? M : N;
    const int mr = plan->ki->mr, nr = plan->ki->nr;
    /* as gemm_loops cuts its rows: the A operand it gets is B when transposed */
    const int64_t MC = block_rows(plan,
                                  transposed ? panels_in_place(plan, !trans_b, 0, ldb, lda, N, K).a_rows
                                             : panels_in_place(plan, trans_a, trans_b, lda, ldb, M, K).a_rows,
                                  rows, K);
    const int64_t NC = cols < plan->blocks.nc ? cols : plan->blocks.nc;
    const int64_t kc_max = K < plan->blocks.kc ? K : plan->blocks.kc;
    const int64_t b_panels = ((NC + nr - 1) / nr) * nr * kc_max;
    const int slot = slot_take();
    sn_buffer own_a = {NULL, NULL, 0}, own_b = {NULL, NULL, 0};
    sn_buffer *buf_a = slot >= 0 ? &g_slots[slot].s.a : &own_a;
    sn_buffer *buf_b = slot >= 0 ? &g_slots[slot].s.b : &own_b;
    float *pa = buffer_reserve(buf_a, (size_t)(((MC + mr - 1) / mr) * mr * kc_max));
    float *pb = buffer_reserve(buf_b, (size_t)(b_panels + (transposed ? M * N : 0)));
    if (pa && pb && transposed && claims_whole(claims)) {
        /* C^T = op(B)^T A: op(B)^T is B read with the other transpose */
        float *T = pb + b_panels;
        gemm_loops(plan, !trans_b, 0, N, M, K, alpha, B, ldb, A, lda, 0.0f, T, M, NULL, pa, pb,
                   NULL);
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = T[j * M + i];
    } else if (pa && pb && !transposed) {
        gemm_loops(plan, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep, pa,
                   pb, claims);
    }
    if (slot >= 0) {
        sn_atomic_release(&g_slots[slot].s.busy);
    } else {
        free(own_a.raw);
        free(own_b.raw);
    }
    return pa && pb ? SN_OK : SN_ENOMEM;
}

int sn_gemm_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                float *C, int64_t ldc)
{
    return sn_gemm_epi_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                           NULL);
}

/* The epilogue's arrays, seen from row i0 and column j0 of C. */
static sn_epilogue epilogue_at(const sn_epilogue *ep, int64_t i0, int64_t j0)
{
    sn_epilogue sub = *ep;
    if (sub.bias) sub.bias += j0;
    if (sub.y) sub.y += i0 * sub.ldy + j0;
    if (sub.mask) sub.mask += i0 * sub.ldy + j0;
    return sub;
}

/* Columns j0 .. j0+len of a GEMM of few rows, with the epilogue. */
static void small_strip(const sn_gemm_plan *plan, int trans_a, int trans_b, int64_t M,
                        int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const sn_epilogue *ep, int64_t j0, int64_t len)
{
    (void)N;
    if (len <= 0) return;
    const unsigned fp = sn_fp_enter();
    plan->ki->small(trans_a, trans_b, M, len, K, alpha, A, lda, trans_b ? B + j0 * ldb : B + j0,
                    ldb, beta, C + j0, ldc, plan->blocks.kc);
    if (ep) {
        const sn_epilogue sub = epilogue_at(ep, 0, j0);
        apply_epilogue(&sub, C + j0, ldc, 0, 0, M, len);
    }
    sn_fp_leave(fp);
}

/* The active plan for a shared dimension of K, its kc blocks made equal:
 * as many as the derived kc needs, each K / blocks long (rounded up), so
 * that no block is a short rest (every path takes kc from here: the same
 * sums whatever the path). One image through 784-128-10 on two threads
 * (the helper takes the last block, gemm_small_pair): 1.80-1.82 us with
 * 512 + 272, 1.63-1.70 with 392 + 392; one thread 2.11-2.16 either way;
 * training steps 0.994x-1.014x (C trainer, AMD EPYC Zen 5). */
static sn_gemm_plan plan_of_k(sn_gemm_plan plan, int64_t K)
{
    const int64_t kc = plan.blocks.kc;
    if (K > kc) {
        const int64_t blocks = (K + kc - 1) / kc;
        plan.blocks.kc = (K + blocks - 1) / blocks;
    }
    return plan;
}

static sn_gemm_plan plan_for_k(int64_t K) { return plan_of_k(sn_active_gemm_plan(), K); }

/* The GEMM in the calling thread, arguments already checked, M, N > 0,
 * with the plan's kernel and blocks (kc made equal for K here); claims as
 * sn_gemm_claimed_f32, or NULL. */
static int gemm_serial_with(sn_gemm_plan base, int trans_a, int trans_b, int64_t M, int64_t N,
                            int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc,
                            const sn_epilogue *ep, const sn_claims *claims)
{
    ep = epilogue_or_null(ep);
    const sn_gemm_plan plan = plan_of_k(base, K);
    const unsigned fp = sn_fp_enter();
    int status = SN_OK;
    if (K == 0 || alpha == 0.0f) {
        if (claims_whole(claims)) {
            scale_c(C, ldc, M, N, beta);
            if (ep) apply_epilogue(ep, C, ldc, 0, 0, M, N);
        }
    } else if (M <= SN_SMALL_M) {
        if (claims_whole(claims))
            small_strip(&plan, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                        ep, 0, N);
    } else {
        status = gemm_blocked(&plan, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C,
                              ldc, ep, claims);
    }
    sn_fp_leave(fp);
    return status;
}

static int gemm_serial(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const sn_epilogue *ep)
{
    return gemm_serial_with(sn_active_gemm_plan(), trans_a, trans_b, M, N, K, alpha, A, lda, B,
                            ldb, beta, C, ldc, ep, NULL);
}

int sn_gemm_serial_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const sn_epilogue *ep)
{
    const int status = check_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (status != SN_OK || M == 0 || N == 0) return status;
    return gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}

int sn_gemm_claimed_f32(const sn_gemm_plan *plan, int trans_a, int trans_b, int64_t M,
                        int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const sn_epilogue *ep, const sn_claims *claims)
{
    const int status = check_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (status != SN_OK || M == 0 || N == 0) return status;
    return gemm_serial_with(*plan, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C,
                            ldc, ep, claims);
}

/* One GEMM cut into strips of C (sn_gemm_epi_f32), each computed whole by
 * one thread with its own packing, with no barrier inside. */
typedef struct {
    sn_gemm_plan plan;
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float *C;
    const sn_epilogue *ep;
    int small;         /* few rows: strips of columns, no packing */
    int by_rows;       /* else: strips of rows (1) or of columns (0) */
    int64_t per_strip; /* rows or columns per strip */
} gemm_strips;

static int strip_unit(const void *ctx, int64_t s)
{
    const gemm_strips *g = ctx;
    const int64_t start = s * g->per_strip, total = g->by_rows ? g->M : g->N;
    const int64_t len = total - start < g->per_strip ? total - start : g->per_strip;
    if (g->small) {
        small_strip(&g->plan, g->trans_a, g->trans_b, g->M, g->N, g->K, g->alpha, g->A,
                    g->lda, g->B, g->ldb, g->beta, g->C, g->ldc, g->ep, start, len);
        return SN_OK;
    }
    const sn_epilogue sub = g->ep ? epilogue_at(g->ep, g->by_rows ? start : 0,
                                                g->by_rows ? 0 : start)
                                  : (sn_epilogue){0};
    const sn_epilogue *sub_ep = g->ep ? &sub : NULL;
    if (g->by_rows) {
        /* rows start.. of op(A) and C */
        const float *As = g->trans_a ? g->A + start : g->A + start * g->lda;
        return gemm_blocked(&g->plan, g->trans_a, g->trans_b, len, g->N, g->K, g->alpha, As, g->lda,
                            g->B, g->ldb, g->beta, g->C + start * g->ldc, g->ldc, sub_ep, NULL);
    }
    /* columns start.. of op(B) and C */
    const float *Bs = g->trans_b ? g->B + start * g->ldb : g->B + start;
    return gemm_blocked(&g->plan, g->trans_a, g->trans_b, g->M, len, g->K, g->alpha, g->A, g->lda,
                        Bs, g->ldb, g->beta, g->C + start, g->ldc, sub_ep, NULL);
}

/* Few rows: one column strip per thread, the same thread's call after call
 * (static), so its part of B stays in its own core's L2. */
static int gemm_small_parallel(gemm_strips *g, int nthreads)
{
    g->small = 1;
    g->per_strip = ((g->N + nthreads - 1) / nthreads + 15) / 16 * 16;
    return sn_run_units(strip_unit, g, (g->N + g->per_strip - 1) / g->per_strip, nthreads,
                        SN_UNITS_STATIC);
}

/* The pair's split of the shared dimension (gemm_small_pair): the caller
 * sums the kc blocks before the last into C (with beta), as the few-rows
 * path does; the helper the last block into t (beta 0, ldc N). Then C += t
 * is that path's last step exactly (c = alpha * sum + 1 * c, one rounding,
 * as c + t rounds it). A flat value (sn_run_pair_copy: the helper reads a
 * copy sent with the offer), so it holds what each half needs, not the
 * caller's gemm_strips. */
typedef struct {
    sn_small_gemm_fn small;
    const float *A, *B;
    float *C, *t; /* t: M x N */
    int64_t M, N, K, lda, ldb, ldc, kc;
    int64_t k_last; /* where the last kc block starts */
    float alpha, beta;
    int trans_a;
} k_halves;

/* k_halves fits the offer's copy (else the helper would follow the pointer):
 * an array of negative size fails to compile */
typedef char k_halves_fits_the_copy[sizeof(k_halves) <= SN_PAIR_COPY_MAX ? 1 : -1];

static int k_half(const void *ctx, int64_t half)
{
    const k_halves *h = ctx;
    const unsigned fp = sn_fp_enter();
    if (half == 0) {
        h->small(h->trans_a, 0, h->M, h->N, h->k_last, h->alpha, h->A, h->lda, h->B, h->ldb,
                 h->beta, h->C, h->ldc, h->kc);
    } else {
        const float *A_last = h->trans_a ? h->A + h->k_last * h->lda : h->A + h->k_last;
        h->small(h->trans_a, 0, h->M, h->N, h->K - h->k_last, h->alpha, A_last, h->lda,
                 h->B + h->k_last * h->ldb, h->ldb, 0.0f, h->t, h->N, h->kc);
    }
    sn_fp_leave(fp);
    return SN_OK;
}

/* floats of the stack buffer the helper's block goes to: M x N of them (one
 * image through 784 -> 128 needs 128) */
#define SN_PAIR_K_BUFFER 1024

/* Few rows and a few microseconds of work: two halves, the second for the
 * helper thread if it is free (sn_run_pair), not the OpenMP team. Where
 * the shared dimension has two or more kc blocks, the last a quarter of it
 * or more, the helper takes that last block: each thread reads whole rows
 * of B, one after another. Else two column strips (the team's split on two
 * threads), each thread reading half of every row of B. 1 x 784 x 128 on
 * an AMD EPYC Zen 5: one core alone 1.98 us; the first 64 columns of rows
 * 128 floats apart 1.44 us, against 1.14 for rows 64 apart (the core's
 * prefetchers fetch the other half's lines too), so halves by columns took
 * 1.41 and 1.43 us; by blocks of 512 + 272 rows, 512 rows of B 1.43 us
 * (the caller) and 272 rows 0.82 us (the helper, begun ~0.1 us after the
 * offer). One image through 784-128-10 (sn_mlp_forward_f32): 2.16-2.30 us
 * alone, 1.96-2.0 with column halves, 1.79 with block halves of 512 + 272,
 * 1.63-1.70 since the blocks are equal (392 + 392, plan_for_k). Same bits
 * either way. */
static int gemm_small_pair(gemm_strips *g)
{
    g->small = 1;
    const int64_t kc = g->plan.blocks.kc;
    const int64_t k_last = (g->K - 1) / kc * kc;
    if (!g->trans_b && k_last > 0 && 4 * (g->K - k_last) >= g->K &&
        g->M * g->N <= SN_PAIR_K_BUFFER) {
        _Alignas(64) float t[SN_PAIR_K_BUFFER];
        const k_halves h = {g->plan.ki->small, g->A, g->B, g->C, t, g->M, g->N, g->K, g->lda,
                            g->ldb, g->ldc, kc, k_last, g->alpha, g->beta, g->trans_a};
        const int status = sn_run_pair_copy(k_half, &h, sizeof h);
        /* C += t, then the epilogue over the whole of C (in the library's
         * floating-point mode, as the serial path's last block). In locals:
         * built with -fno-strict-aliasing (setup.py), a store to C could
         * change g's fields, so reading them in the loop kept it scalar,
         * reloading them at each step (130 cycles became 300-1200 here, the
         * more the farther apart the two cores) */
        const unsigned fp = sn_fp_enter();
        { /* restrict: C is written through nothing else within this block */
            float *restrict C = g->C;
            const float *restrict helper_block = t;
            const int64_t M = g->M, N = g->N, ldc = g->ldc;
            for (int64_t i = 0; i < M; ++i)
                for (int64_t j = 0; j < N; ++j) C[i * ldc + j] += helper_block[i * N + j];
        }
        if (g->ep) apply_epilogue(g->ep, g->C, g->ldc, 0, 0, g->M, g->N);
        sn_fp_leave(fp);
        return status;
    }
    g->per_strip = ((g->N + 1) / 2 + 15) / 16 * 16;
    return sn_run_pair(strip_unit, g);
}

/* One strip of columns or rows per thread. Split where no operand is
 * copied twice: a plain B read in place (see panels_in_place) is shared by
 * row strips of at most mc rows; an A read in place by column strips.
 * Otherwise each strip packs all of the other operand: split so that the
 * smaller one is the one copied (row strips copy op(B), K x N; column
 * strips op(A), M x K). A strip's arithmetic does not depend on which
 * thread runs it, so results are identical whatever the thread count. */
static int gemm_blocked_parallel(gemm_strips *g, int nthreads)
{
    const sn_gemm_kernel_info *ki = g->plan.ki;
    const in_place_panels shared = panels_in_place(&g->plan, g->trans_a, g->trans_b, g->lda,
                                                   g->ldb, (g->M + nthreads - 1) / nthreads, g->K);
    g->by_rows = shared.b ? 1 : shared.a_transposed || shared.a_rows ? 0 : g->M > g->N;
    const int64_t unit = g->by_rows ? ki->mr : ki->nr, total = g->by_rows ? g->M : g->N;
    const int64_t units = (total + unit - 1) / unit;
    const int64_t strips = nthreads < units ? nthreads : units;
    g->per_strip = (units + strips - 1) / strips * unit;
    return sn_run_units(strip_unit, g, (total + g->per_strip - 1) / g->per_strip, nthreads, 0);
}

/* where a few rows' GEMM is cut in two: set once by the tuner, read by
 * every call (an int: at most SN_SMALL_PARALLEL_MIN_FLOPS) */
static sn_atomic_int pair_min_flops = SN_SMALL_PAIR_MIN_FLOPS;

int sn_set_pair_min_flops(int64_t flops)
{
    if (flops < 0 || flops > SN_SMALL_PARALLEL_MIN_FLOPS) return SN_EINVAL;
    sn_atomic_store(&pair_min_flops, flops == 0 ? SN_SMALL_PAIR_MIN_FLOPS : (int)flops);
    return SN_OK;
}

int64_t sn_get_pair_min_flops(void) { return sn_atomic_load(&pair_min_flops); }

/* a GEMM of a few rows worth two halves though not the team: one image
 * through a layer of 32 or more outputs */
static int pair_worth(int64_t M, int64_t N, int64_t K, float alpha)
{
    const double flops = (double)M * (double)N * (double)K;
    return M <= SN_SMALL_M && N >= 32 && K > 0 && alpha != 0.0f &&
           flops >= sn_atomic_load(&pair_min_flops) && flops < SN_SMALL_PARALLEL_MIN_FLOPS;
}

/* the threads a GEMM is worth: one for few multiply-adds (or none) */
static int gemm_threads(int64_t M, int64_t N, int64_t K, float alpha)
{
    const double flops = (double)M * (double)N * (double)K;
    const int small = M <= SN_SMALL_M;
    if (K == 0 || alpha == 0.0f || (small && N < 32) ||
        flops < (small ? SN_SMALL_PARALLEL_MIN_FLOPS : SN_GEMM_PARALLEL_MIN_FLOPS))
        return 1;
    return sn_parallel_threads();
}

int sn_gemm_epi_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                    float *C, int64_t ldc, const sn_epilogue *ep)
{
    const int status = check_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (status != SN_OK || M == 0 || N == 0) return status;
    const int nthreads = gemm_threads(M, N, K, alpha);
    const int pair = nthreads == 1 && pair_worth(M, N, K, alpha) && sn_parallel_threads() > 1;
    if (nthreads == 1 && !pair)
        return gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
    ep = epilogue_or_null(ep);
    gemm_strips g = {plan_for_k(K), trans_a, trans_b, M, N, K, alpha, beta, A, B,
                     lda, ldb, ldc, C, ep, 0, 0, 0};
    if (pair) {
        sn_pair_call call;
        const int status = sn_pair_begin(M, N, K, &call)
                               ? gemm_small_pair(&g)
                               : gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                                             beta, C, ldc, ep);
        sn_pair_end(&call);
        return status;
    }
    return M <= SN_SMALL_M ? gemm_small_parallel(&g, nthreads)
                           : gemm_blocked_parallel(&g, nthreads);
}
