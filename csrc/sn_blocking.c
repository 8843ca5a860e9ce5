/* The GEMM's cache blocks, from the caches this CPU reports.
 *
 * Sizes come from CPUID (leaf 4 on Intel, 0x8000001D on AMD: the
 * deterministic cache parameters), else from sysconf (glibc reads them
 * from /sys), else fixed defaults (arm64 and unknown CPUs). From them, for
 * a kernel with an mr x nr register tile (BLIS's analytical model, Low et
 * al., "Analytical modeling is enough for high-performance BLIS", 2016):
 *   kc: a kc x nr panel of B fills L1d and half again. (BLIS's model gives
 *       it half; the whole, and so one pass over C where it took two,
 *       measured 1.03x to 1.08x faster on 128x512x400, 512^3, 128x512x784
 *       and 1000x128x784, 1.00x on 1024^3 and 2048^3, and a training step
 *       1.03x faster: AMD EPYC Zen 3, AVX2 (kc 512 against 256). The
 *       panel's lines that leave L1 come back from L2 at ~15 bytes a cycle,
 *       well within it. Half again: AVX-512 on a 48 KB L1d, kc 512 against
 *       384, 2048^3 on two threads 1.035x, 1536^3 1.012x, 1024^3 1.004x,
 *       784-128-10 and 784-512-256-10 training steps 1.012x and 1.013x:
 *       AMD EPYC Zen 5. Every other kernel there, and on Zen 3, was at
 *       SN_KC_MAX already);
 *   mc: an mc x kc block of A fills half of L2;
 *   nc: a kc x nc block of B fills half of this core's share of L3,
 *   each rounded down to a multiple of its tile and kept within bounds;
 *   panel_ways: half the ways of L1 counted as l1d / 4 KB (64 sets of
 *       64-byte lines, as on the x86-64 cores this runs on; an L1 with
 *       more sets, such as some arm64 cores' 64 KB 4-way with 256, holds
 *       at least as many lines per 4 KB of addresses): a panel read in
 *       place may put that many of its lines in one set, the other half
 *       kept for the other operand's panel (sn_gemm.c, panel_fits_l1).
 *       12-way 48 KB L1d (AMD Zen 5, Intel Golden Cove): 6, and a plain A
 *       of 12 rows of 392 floats, 800 apart (the step's batch, part of
 *       784 inputs), is read in place (at most 6 lines a set), no longer
 *       packed: C trainer steps 1.025x (784-128-10 Adam), 1.013x (SGD batch
 *       32), 1.009x (784-512-256-10), AMD EPYC Zen 5. 8-way 32 KB: 4, as
 *       before.
 * kc is the longest block of the shared dimension: a GEMM cuts its K into
 * as many as that needs, of equal length (sn_gemm.c, plan_for_k: 784 is
 * 392 + 392, not 512 + 272). It fixes the order the shared dimension is
 * summed in, so it is derived only (never timed: a timing race must not
 * change results); mc and nc
 * change only speed, and the tuner (scratchnet/_tuning.py) may set them. */
#include <stddef.h>

#include "scratchnet.h"
#include "sn_atomic.h"
#include "sn_internal.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#ifdef SN_X86_64
/* Walks the cache descriptors of `leaf` (4 or 0x8000001D, one layout):
 * EAX[4:0] type (0 none, 1 data, 3 unified), EAX[7:5] level, EAX[25:14]
 * threads sharing it - 1; size = ways x partitions x line x sets, each
 * stored minus one in EBX[31:22], EBX[21:12], EBX[11:0] and ECX. */
static int cpuid_caches(unsigned leaf, sn_cache_info *out)
{
    unsigned r[4];
    sn_cpuid(leaf & 0x80000000u, 0, r);
    if (r[0] < leaf) return 0; /* the leaf is not there */
    int found = 0;
    for (unsigned sub = 0; sub < 16; ++sub) {
        sn_cpuid(leaf, sub, r);
        const unsigned type = r[0] & 0x1F, level = (r[0] >> 5) & 0x7;
        if (type == 0) break;
        if (type == 2) continue; /* instruction cache */
        const int64_t size = (int64_t)((r[1] >> 22) + 1) * (((r[1] >> 12) & 0x3FF) + 1) *
                             ((r[1] & 0xFFF) + 1) * ((int64_t)r[2] + 1);
        const int sharing = (int)((r[0] >> 14) & 0xFFF) + 1;
        if (level == 1) out->l1d = size, found = 1;
        if (level == 2) out->l2 = size, out->l2_sharing = sharing, found = 1;
        if (level == 3) out->l3 = size, out->l3_sharing = sharing, found = 1;
    }
    return found;
}

static int vendor_is_amd(void)
{
    unsigned r[4];
    sn_cpuid(0, 0, r);
    /* "AuthenticAMD" in EBX, EDX, ECX; "HygonGenuine" is AMD's too */
    return (r[1] == 0x68747541u && r[3] == 0x69746E65u && r[2] == 0x444D4163u) ||
           (r[1] == 0x6F677948u && r[3] == 0x6E65476Eu && r[2] == 0x656E6975u);
}
#endif

/* the caches, found once: g_caches_state 0 (not yet), 1 (one thread is
 * writing g_caches), 2 (written and published). A caller that finds it not
 * yet published reads the caches itself (the same values). */
static sn_cache_info g_caches;
static sn_atomic_int g_caches_state = 0;

static void detect_caches(sn_cache_info *c)
{
    /* defaults: a common 32 KB L1d, 512 KB L2, 1 MB of L3 per core */
    *c = (sn_cache_info){.l1d = 32768, .l2 = 524288, .l3 = 0, .l2_sharing = 1,
                         .l3_sharing = 1, .source = "defaults"};
#ifdef SN_X86_64
    if (cpuid_caches(vendor_is_amd() ? 0x8000001Du : 4u, c)) {
        c->source = "cpuid";
        return;
    }
#endif
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l1 > 0 && l2 > 0) {
        c->l1d = l1, c->l2 = l2, c->source = "sysconf";
#ifdef _SC_LEVEL3_CACHE_SIZE
        const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (l3 > 0) c->l3 = l3;
#endif
    }
#endif
}

void sn_cache_sizes(sn_cache_info *out)
{
    if (sn_atomic_load_acquire(&g_caches_state) == 2) {
        *out = g_caches;
        return;
    }
    sn_cache_info c;
    detect_caches(&c);
    if (sn_atomic_cas(&g_caches_state, 0, 1)) {
        g_caches = c;
        sn_atomic_publish(&g_caches_state, 2);
    }
    *out = c;
}

/* ---- blocks ---- */

/* v rounded down to a multiple of step, within [lo, hi] (lo, hi multiples of step) */
static int64_t fit(int64_t v, int64_t step, int64_t lo, int64_t hi)
{
    v = v / step * step;
    return v < lo ? lo : v > hi ? hi : v;
}

#define SN_KC_MIN 64
#define SN_KC_MAX 512
#define SN_MC_MAX 1024
#define SN_NC_MAX 8192

static sn_gemm_blocks derived(const sn_gemm_kernel_info *ki)
{
    sn_cache_info c;
    sn_cache_sizes(&c);
    const int64_t f = (int64_t)sizeof(float);
    const int64_t kc = fit(c.l1d * 3 / 2 / (ki->nr * f), 16, SN_KC_MIN, SN_KC_MAX);
    const int64_t l2 = c.l2 / (c.l2_sharing > 2 ? c.l2_sharing / 2 : 1); /* per core (2 SMT) */
    const int64_t mc = fit(l2 / 2 / (kc * f), ki->mr, ki->mr, SN_MC_MAX / ki->mr * ki->mr);
    /* no L3 (or none reported): B's block sized as if L3 were 4x L2 */
    const int64_t l3 = c.l3 > 0 ? c.l3 / (c.l3_sharing > 2 ? c.l3_sharing / 2 : 1) : 4 * l2;
    const int64_t nc = fit(l3 / 2 / (kc * f), ki->nr, ki->nr, SN_NC_MAX / ki->nr * ki->nr);
    const int64_t ways = c.l1d / (64 * 64);
    const int panel_ways = ways < 4 ? 2 : ways > 32 ? 16 : (int)(ways / 2);
    return (sn_gemm_blocks){.kc = kc, .mc = mc, .nc = nc, .tuned = 0, .panel_ways = panel_ways,
                            .l1d = c.l1d};
}

/* The tuner's mc and nc per ISA, packed in one atomic int so that a reader
 * never sees one half of a change: mc / mr in bits 0-15, nc / nr in bits
 * 16-30; 0: not set (the derived ones apply). */
static sn_atomic_int g_tuned[3];

sn_gemm_plan sn_gemm_plan_for(int isa)
{
    const sn_gemm_kernel_info *ki = sn_gemm_kernel_for(isa);
    if (!ki) ki = sn_gemm_kernel_for(SN_ISA_GENERIC);
    sn_gemm_plan p = {ki, derived(ki)};
    const int packed = sn_atomic_load(&g_tuned[isa]);
    if (packed) {
        p.blocks.mc = (int64_t)(packed & 0xFFFF) * ki->mr;
        p.blocks.nc = (int64_t)(packed >> 16) * ki->nr;
        p.blocks.tuned = 1;
    }
    return p;
}

sn_gemm_plan sn_active_gemm_plan(void) { return sn_gemm_plan_for(sn_get_isa()); }

int sn_set_gemm_blocks(int isa, int64_t mc, int64_t nc)
{
    const sn_gemm_kernel_info *ki = sn_gemm_kernel_for(isa);
    if (!ki || !sn_isa_supported(isa)) return SN_EINVAL;
    if (mc == 0 && nc == 0) { /* back to the derived blocks */
        sn_atomic_store(&g_tuned[isa], 0);
        return SN_OK;
    }
    if (mc < ki->mr || mc > SN_MC_MAX || mc % ki->mr || nc < ki->nr || nc > SN_NC_MAX ||
        nc % ki->nr)
        return SN_EINVAL;
    sn_atomic_store(&g_tuned[isa], (int)(mc / ki->mr) | (int)(nc / ki->nr) << 16);
    return SN_OK;
}

int sn_gemm_blocking(int isa, int64_t out[10])
{
    if (!sn_gemm_kernel_for(isa)) return SN_EINVAL;
    const sn_gemm_plan p = sn_gemm_plan_for(isa);
    out[0] = p.ki->mr;
    out[1] = p.ki->nr;
    out[2] = p.blocks.kc;
    out[3] = p.blocks.mc;
    out[4] = p.blocks.nc;
    out[5] = SN_SMALL_M;
    out[6] = SN_GEMM_PARALLEL_MIN_FLOPS;
    out[7] = p.blocks.tuned;
    out[8] = p.ki->kernel_tail ? p.ki->mr_tail : 0;
    out[9] = SN_SMALL_PARALLEL_MIN_FLOPS;
    return SN_OK;
}

const char *sn_caches(int64_t out[5])
{
    sn_cache_info c;
    sn_cache_sizes(&c);
    out[0] = c.l1d;
    out[1] = c.l2;
    out[2] = c.l3;
    out[3] = c.l2_sharing;
    out[4] = c.l3_sharing;
    return c.source;
}
