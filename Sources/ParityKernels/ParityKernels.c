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
        if (transposed) {
            // w is [N, K]: column j of B is row j of w.
            if (cols < PK_PANEL) memset(dst, 0, sizeof(float) * (size_t)k * PK_PANEL);
            for (int j = 0; j < cols; j++) {
                const float *row = w + (size_t)(j0 + j) * ld;
                for (int q = 0; q < k; q++) dst[(size_t)q * PK_PANEL + j] = row[q];
            }
        } else {
            for (int q = 0; q < k; q++) {
                float *d = dst + (size_t)q * PK_PANEL;
                memcpy(d, w + (size_t)q * ld + j0, sizeof(float) * (size_t)cols);
                if (cols < PK_PANEL) memset(d + cols, 0, sizeof(float) * (size_t)(PK_PANEL - cols));
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
        const v16 *b = (const v16 *)(bp + (size_t)q * PK_PANEL);
        const v16 b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
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
    gemm_body(a, b, c, ldc, m, n, k, first, count, 0);
}

__attribute__((target("avx2,fma")))
static void gemm_avx2_fma(const float *a, const float *b, float *c, int ldc, int m, int n, int k,
                          int first, int count) {
    gemm_body(a, b, c, ldc, m, n, k, first, count, 1);
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
