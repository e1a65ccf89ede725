// In-order float32 GEMM: register-tiled, vectorised across output columns, never fused.
// See include/ParityKernels.h for the contract. One source, compiled three times (AVX-512F,
// AVX2 and the build's baseline) through target attributes and chosen at run time.

#include "ParityKernels.h"

#include <stdlib.h>
#include <string.h>

// A fused multiply-add rounds once where the reference BLAS rounds twice: forbid contraction.
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4)));

enum { LANES = 16, VECTORS = PK_PANEL / LANES };

size_t pk_packed_b_count(int n, int k) {
    return (size_t)((n + PK_PANEL - 1) / PK_PANEL) * (size_t)k * PK_PANEL;
}

size_t pk_packed_a_count(int m, int k) {
    return (size_t)((m + PK_TILE_ROWS - 1) / PK_TILE_ROWS) * (size_t)k * PK_TILE_ROWS;
}

void pk_pack_b(const float *w, int n, int k, int ld, int transposed, float *packed) {
    int panels = (n + PK_PANEL - 1) / PK_PANEL;
    for (int p = 0; p < panels; p++) {
        float *dst = packed + (size_t)p * k * PK_PANEL;
        int j0 = p * PK_PANEL, cols = n - j0 < PK_PANEL ? n - j0 : PK_PANEL;
        if (cols < PK_PANEL) memset(dst, 0, sizeof(float) * (size_t)k * PK_PANEL);
        for (int s = 0; s * PK_STRIP < cols; s++) {
            float *strip = dst + (size_t)s * k * PK_STRIP;
            const int c0 = s * PK_STRIP, width = cols - c0 < PK_STRIP ? cols - c0 : PK_STRIP;
            if (transposed) {
                // w is [N, K]: column j of B is row j of w.
                for (int j = 0; j < width; j++) {
                    const float *row = w + (size_t)(j0 + c0 + j) * ld;
                    for (int q = 0; q < k; q++) strip[(size_t)q * PK_STRIP + j] = row[q];
                }
            } else {
                for (int q = 0; q < k; q++) memcpy(strip + (size_t)q * PK_STRIP, w + (size_t)q * ld + j0 + c0, sizeof(float) * (size_t)width);
            }
        }
    }
}

void pk_pack_a(const float *a, int m, int k, int lda, float *packed) {
    int tiles = (m + PK_TILE_ROWS - 1) / PK_TILE_ROWS;
    for (int t = 0; t < tiles; t++) {
        float *dst = packed + (size_t)t * k * PK_TILE_ROWS;
        int r0 = t * PK_TILE_ROWS, rows = m - r0 < PK_TILE_ROWS ? m - r0 : PK_TILE_ROWS;
        for (int q = 0; q < k; q++) {
            for (int i = 0; i < rows; i++) dst[(size_t)q * PK_TILE_ROWS + i] = a[(size_t)(r0 + i) * lda + q];
            for (int i = rows; i < PK_TILE_ROWS; i++) dst[(size_t)q * PK_TILE_ROWS + i] = 0;
        }
    }
}

// One register tile: `mr` rows × 64 columns, every element summed over k in order.
// While a tile runs, it asks for its share of the next panel of B (`pf_lines` cache lines from
// `pf`, `pf_step` per k step) to be brought into L2, so the next panel's first tile does not
// wait on memory. Prefetches change no value.
// `fused` (a constant in every instantiation) selects the benchmark-only FMA form: each step is
// one fused multiply-add, still in order over k (see pk_set_fused); otherwise never fused.
static inline __attribute__((always_inline))
void tile(const int mr, int k, const float *restrict at, const float *restrict bp,
          float *restrict c, int ldc, int cols, const char *pf, int pf_lines, int pf_step, const int fused) {
    v16 acc[PK_TILE_ROWS][VECTORS];
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < VECTORS; v++) acc[i][v] = (v16){0};
    for (int q = 0; q < k; q++) {
        if (q * pf_step < pf_lines)
            for (int l = 0; l < pf_step; l++) __builtin_prefetch(pf + (size_t)(q * pf_step + l) * 64, 0, 2);
        // One 16-column row of each of the panel's four strips.
        const float *b = bp + (size_t)q * PK_STRIP;
        const size_t strip = (size_t)k * PK_STRIP;
        const v16 b0 = *(const v16 *)b, b1 = *(const v16 *)(b + strip), b2 = *(const v16 *)(b + 2 * strip),
                  b3 = *(const v16 *)(b + 3 * strip);
        const float *ar = at + (size_t)q * PK_TILE_ROWS;
        for (int i = 0; i < mr; i++) {
            const float s = ar[i];
            if (fused) {
                const v16 sv = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
                acc[i][0] = __builtin_elementwise_fma(b0, sv, acc[i][0]);
                acc[i][1] = __builtin_elementwise_fma(b1, sv, acc[i][1]);
                acc[i][2] = __builtin_elementwise_fma(b2, sv, acc[i][2]);
                acc[i][3] = __builtin_elementwise_fma(b3, sv, acc[i][3]);
                continue;
            }
            const v16 p0 = b0 * s, p1 = b1 * s, p2 = b2 * s, p3 = b3 * s;
            acc[i][0] = acc[i][0] + p0;
            acc[i][1] = acc[i][1] + p1;
            acc[i][2] = acc[i][2] + p2;
            acc[i][3] = acc[i][3] + p3;
        }
    }
    if (cols == PK_PANEL) {
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < VECTORS; v++) *(v16 *)(c + (size_t)i * ldc + v * LANES) = acc[i][v];
    } else {
        float row[PK_PANEL];
        for (int i = 0; i < mr; i++) {
            for (int v = 0; v < VECTORS; v++) *(v16 *)(row + v * LANES) = acc[i][v];
            memcpy(c + (size_t)i * ldc, row, sizeof(float) * (size_t)cols);
        }
    }
}

// AVX2 has 16 vector registers, and a 6 × 64 tile would keep its 48 accumulators on the stack.
// There a row tile walks the panel strip by strip: 6 × 16 is 12 accumulators, 2 vectors of B,
// a broadcast and a product, and B comes as one contiguous stream (a panel row's 256 bytes at
// a 256-byte stride ran at 70 % of that). Each element's sum is the same chain over k, in the
// same order, whatever the walk: the bits are those of the wide tile.
typedef float v8 __attribute__((vector_size(32), aligned(4)));

// One k step of a pass: nv vectors of B (two per strip), times mr broadcasts of A.
static inline __attribute__((always_inline))
void strip_step(const int mr, const int nv, v8 acc[PK_TILE_ROWS][8], const float *const sp[4], const float *ar,
                size_t q, const int fused) {
    v8 bv[8];
    for (int v = 0; v < nv; v++) memcpy(&bv[v], sp[v / 2] + q * PK_STRIP + 8 * (v % 2), sizeof(v8));
    for (int i = 0; i < mr; i++) {
        const float s = ar[q * PK_TILE_ROWS + i];
        const v8 sv = {s, s, s, s, s, s, s, s};
        for (int v = 0; v < nv; v++) {
            if (fused) { acc[i][v] = __builtin_elementwise_fma(bv[v], sv, acc[i][v]); continue; }
            const v8 p = bv[v] * sv;
            acc[i][v] = acc[i][v] + p;
        }
    }
}

// Columns c0 … c0 + 8·nv (c0 a multiple of 16) of one row tile over k rows [0, k) of a k block.
// `bp` is the block's first row in the panel's first strip, `strip_floats` the distance between
// strips. `resume`: the sums carry on from the values in C (the previous k block's, stored as
// float32, so the chain over k is unbroken) instead of starting at 0.
static inline __attribute__((always_inline))
void strip(const int mr, const int nv, int k, const float *restrict at, const float *restrict bp, size_t strip_floats,
           int c0, float *restrict c, int ldc, int cols, int resume, const int fused) {
    const float *sp[4];
    for (int t = 0; t < (nv + 1) / 2; t++) sp[t] = bp + (size_t)(c0 / PK_STRIP + t) * strip_floats;
    v8 acc[PK_TILE_ROWS][8];
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < nv; v++) {
            const int col = c0 + 8 * v;
            acc[i][v] = (v8){0};
            if (!resume) continue;
            if (col + 8 <= cols) { memcpy(&acc[i][v], c + (size_t)i * ldc + col, sizeof(v8)); continue; }
            for (int l = 0; col + l < cols; l++) acc[i][v][l] = c[(size_t)i * ldc + col + l];
        }
    // A bare loop: its own instructions share the 6 dispatch slots a cycle with the step's 32.
    // No software prefetch: a strip is one contiguous stream, which the hardware prefetcher
    // follows (prefetching the next panel here cost 10-25 %).
    for (size_t q = 0; q < (size_t)k; q++) strip_step(mr, nv, acc, sp, at, q, fused);
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < nv; v++) {
            const int col = c0 + 8 * v;
            if (col + 8 <= cols) { memcpy(c + (size_t)i * ldc + col, &acc[i][v], sizeof(v8)); continue; }
            for (int l = 0; col + l < cols; l++) c[(size_t)i * ldc + col + l] = acc[i][v][l];
        }
}

// One row tile of the panel in passes that fit 16 registers: one strip, or two or four side by
// side for the one- and two-row tiles.
static inline __attribute__((always_inline))
void narrow_tile(const int mr, int k, const float *restrict at, const float *restrict bp, size_t strip_floats,
                 float *restrict c, int ldc, int cols, int resume, const int fused) {
    const int nv = mr == 1 ? 8 : mr == 2 ? 4 : 2, width = 8 * nv;
    for (int c0 = 0; c0 < PK_PANEL && c0 < cols; c0 += width)
        strip(mr, nv, k, at, bp, strip_floats, c0, c, ldc, cols, resume, fused);
}

// The narrow kernel walks a panel in k blocks of NARROW_KC rows: 128 KB of B, which stays in
// L2 while every row tile passes over it (a whole panel is 917 KB at K = 3584). Between blocks
// a tile's sums wait in C.
enum { NARROW_KC = 512 };

static inline __attribute__((always_inline))
void narrow_body(const float *packed_a, const float *packed_b, float *c, int ldc,
                 int m, int n, int k, int first_panel, int panel_count, const int fused) {
    const size_t strip_floats = (size_t)k * PK_STRIP;
    for (int p = first_panel; p < first_panel + panel_count; p++) {
        const float *panel = packed_b + (size_t)p * k * PK_PANEL;
        const int j0 = p * PK_PANEL, cols = n - j0 < PK_PANEL ? n - j0 : PK_PANEL;
        for (int k0 = 0; k0 < k; k0 += NARROW_KC) {
            const int kc = k - k0 < NARROW_KC ? k - k0 : NARROW_KC, resume = k0 > 0;
            const float *bp = panel + (size_t)k0 * PK_STRIP;
            for (int r0 = 0; r0 < m; r0 += PK_TILE_ROWS) {
                const float *at = packed_a + ((size_t)(r0 / PK_TILE_ROWS) * k + k0) * PK_TILE_ROWS;
                float *ct = c + (size_t)r0 * ldc + j0;
                switch (m - r0 < PK_TILE_ROWS ? m - r0 : PK_TILE_ROWS) {
                case 6: narrow_tile(6, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                case 5: narrow_tile(5, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                case 4: narrow_tile(4, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                case 3: narrow_tile(3, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                case 2: narrow_tile(2, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                default: narrow_tile(1, kc, at, bp, strip_floats, ct, ldc, cols, resume, fused); break;
                }
            }
        }
    }
}

// Panels outer (one panel of B stays in L2 while every row tile passes over it), row tiles inner;
// the row tiles of one panel share the prefetch of the next panel between them.
static inline __attribute__((always_inline))
void gemm_body(const float *packed_a, const float *packed_b, float *c, int ldc,
               int m, int n, int k, int first_panel, int panel_count, const int fused) {
    const int tiles = (m + PK_TILE_ROWS - 1) / PK_TILE_ROWS;
    const int panel_lines = k * PK_PANEL * (int)sizeof(float) / 64;
    const int share = (panel_lines + tiles - 1) / tiles;          // lines each tile prefetches
    const int step = (share + k - 1) / k;                         // lines per k step
    for (int p = first_panel; p < first_panel + panel_count; p++) {
        const float *bp = packed_b + (size_t)p * k * PK_PANEL;
        const char *next = p + 1 < first_panel + panel_count ? (const char *)(bp + (size_t)k * PK_PANEL) : 0;
        int j0 = p * PK_PANEL, cols = n - j0 < PK_PANEL ? n - j0 : PK_PANEL;
        for (int r0 = 0, t = 0; r0 < m; r0 += PK_TILE_ROWS, t++) {
            const float *at = packed_a + (size_t)(r0 / PK_TILE_ROWS) * k * PK_TILE_ROWS;
            float *ct = c + (size_t)r0 * ldc + j0;
            const int first_line = t * share;
            const int lines = next == 0 || first_line >= panel_lines ? 0
                : (panel_lines - first_line < share ? panel_lines - first_line : share);
            const char *pf = next ? next + (size_t)first_line * 64 : 0;
            switch (m - r0 < PK_TILE_ROWS ? m - r0 : PK_TILE_ROWS) {
            case 6: tile(6, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            case 5: tile(5, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            case 4: tile(4, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            case 3: tile(3, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            case 2: tile(2, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            default: tile(1, k, at, bp, ct, ldc, cols, pf, lines, step, fused); break;
            }
        }
    }
}

typedef void (*gemm_fn)(const float *, const float *, float *, int, int, int, int, int, int);

static void gemm_generic(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                         int first, int count) {
    gemm_body(a, b, c, ldc, m, n, k, first, count, 0);
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define PK_HAVE_X86 1
__attribute__((target("avx512f")))
static void gemm_avx512(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                        int first, int count) {
    gemm_body(a, b, c, ldc, m, n, k, first, count, 0);
}

__attribute__((target("avx512f,fma")))
static void gemm_avx512_fma(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                            int first, int count) {
    gemm_body(a, b, c, ldc, m, n, k, first, count, 1);
}

__attribute__((target("avx2")))
static void gemm_avx2(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                      int first, int count) {
    narrow_body(a, b, c, ldc, m, n, k, first, count, 0);
}

__attribute__((target("avx2,fma")))
static void gemm_avx2_fma(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                          int first, int count) {
    narrow_body(a, b, c, ldc, m, n, k, first, count, 1);
}
#endif

static gemm_fn selected = 0;
static const char *selected_name = "generic";

int pk_select_kernel(const char *name) {
    if (strcmp(name, "generic") == 0) { selected = gemm_generic; selected_name = "generic"; return 1; }
#ifdef PK_HAVE_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx512f") == 0 && __builtin_cpu_supports("avx512f")) {
        selected = gemm_avx512; selected_name = "avx512f"; return 1;
    }
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) {
        selected = gemm_avx2; selected_name = "avx2"; return 1;
    }
#endif
    return 0;
}

static void select_default(void) {
    const char *forced = getenv("QWEN_PARITY_KERNEL");
    if (forced && pk_select_kernel(forced)) return;
    if (pk_select_kernel("avx512f")) return;
    if (pk_select_kernel("avx2")) return;
    pk_select_kernel("generic");
}

static gemm_fn fused_kernel = 0;

int pk_set_fused(int on) {
    if (!selected) select_default();
    if (!on) { fused_kernel = 0; return 1; }
#ifdef PK_HAVE_X86
    if (__builtin_cpu_supports("fma")) {
        if (selected == gemm_avx512) { fused_kernel = gemm_avx512_fma; return 1; }
        if (selected == gemm_avx2) { fused_kernel = gemm_avx2_fma; return 1; }
    }
#endif
    return 0;
}

int pk_fused(void) { return fused_kernel != 0; }

const char *pk_kernel_name(void) {
    if (!selected) select_default();
    return selected_name;
}

void pk_gemm(const float *packed_a, const float *packed_b, float *c, int ldc,
             int m, int n, int k, int first_panel, int panel_count) {
    if (!selected) select_default();
    (fused_kernel ? fused_kernel : selected)(packed_a, packed_b, c, ldc, m, n, k, first_panel, panel_count);
}

typedef struct {
    const float *a, *b;
    float *c;
    int ldc, m, n, k, panels, tasks;
} gemm_job;

static void gemm_task(void *ctx, int task) {
    const gemm_job *j = ctx;
    const int first = (int)((long)j->panels * task / j->tasks);
    const int last = (int)((long)j->panels * (task + 1) / j->tasks);
    if (last > first) pk_gemm(j->a, j->b, j->c, j->ldc, j->m, j->n, j->k, first, last - first);
}

void pk_gemm_parallel(const float *packed_a, const float *packed_b, float *c, int ldc,
                      int m, int n, int k, int tasks_per_thread) {
    const int panels = (n + PK_PANEL - 1) / PK_PANEL;
    int tasks = pk_pool_threads() * (tasks_per_thread > 0 ? tasks_per_thread : 1);
    if (tasks > panels) tasks = panels;
    if (!selected) select_default();
    gemm_job job = { packed_a, packed_b, c, ldc, m, n, k, panels, tasks };
    pk_parallel(tasks, gemm_task, &job);
}
