// The gated delta recurrence, elementwise across the value dimension (see ParityKernels.h).
// Loops run over dv innermost, so the compiler vectorises them without reassociating any sum:
// every sum over dk runs in order, one rounded multiply and one rounded add per step.

#include "ParityKernels.h"

#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

// The state rows (one per value index i) never interact: row i's sums read only row i, k, q,
// v[i] and the step's g and β. So the state is processed in blocks of 16 rows, each copied into
// a [dk][16] block in L1 (elementwise across the 16 rows, every sum over dk in order), stepped
// through every token, and copied back: no transposition of the whole state, one pass over it.
enum { ROWS = 16 };
typedef float v16 __attribute__((vector_size(64)));                 // aligned: the block
typedef float v16u __attribute__((vector_size(64), aligned(4)));    // unaligned: v, y

// Transposes a 16×16 block held in 16 vectors: four stages, each swapping bit s of the row index
// with bit s of the column index (element (r, c) ends at (c, r)). Moves values, computes nothing.
static inline __attribute__((always_inline)) void transpose16(v16 m[16]) {
    for (int i = 0; i < 16; i++) if (!(i & 1)) {
        const v16 a = m[i], b = m[i + 1];
        m[i] = __builtin_shufflevector(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        m[i + 1] = __builtin_shufflevector(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    }
    for (int i = 0; i < 16; i++) if (!(i & 2)) {
        const v16 a = m[i], b = m[i + 2];
        m[i] = __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        m[i + 2] = __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
    for (int i = 0; i < 16; i++) if (!(i & 4)) {
        const v16 a = m[i], b = m[i + 4];
        m[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        m[i + 4] = __builtin_shufflevector(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
    for (int i = 0; i < 16; i++) if (!(i & 8)) {
        const v16 a = m[i], b = m[i + 8];
        m[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        m[i + 8] = __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
}

// Rows i0 … i0+15 of the state `[dv][dk]` into the block `[dk][16]`, and back.
static inline __attribute__((always_inline))
void load_rows(const float *state, int dk, int i0, float *restrict block) {
    for (int j0 = 0; j0 < dk; j0 += 16) {
        v16 m[16];
        for (int r = 0; r < 16; r++) m[r] = *(const v16u *)(state + (size_t)(i0 + r) * dk + j0);
        transpose16(m);
        for (int c = 0; c < 16; c++) *(v16 *)(block + (size_t)(j0 + c) * ROWS) = m[c];
    }
}

static inline __attribute__((always_inline))
void store_rows(float *state, int dk, int i0, const float *restrict block) {
    for (int j0 = 0; j0 < dk; j0 += 16) {
        v16 m[16];
        for (int c = 0; c < 16; c++) m[c] = *(const v16 *)(block + (size_t)(j0 + c) * ROWS);
        transpose16(m);
        for (int r = 0; r < 16; r++) *(v16u *)(state + (size_t)(i0 + r) * dk + j0) = m[r];
    }
}

static inline __attribute__((always_inline))
void delta_body(float *restrict state, int dk, int dv, int steps,
                const float *q, const float *k, size_t qk_stride,
                const float *v, float *y, size_t vy_stride,
                const float *g, const float *beta, size_t gb_stride,
                const unsigned char *keep, float *restrict scratch) {
    float *restrict block = scratch, *restrict saved = scratch + (size_t)dk * ROWS;
    for (int i0 = 0; i0 < dv; i0 += ROWS) {
        const int rows = dv - i0 < ROWS ? dv - i0 : ROWS;
        const int whole = rows == ROWS && dk % 16 == 0;   // in-register transposes
        if (whole) load_rows(state, dk, i0, block);
        else for (int r = 0; r < ROWS; r++) {
            const float *src = state + (size_t)(i0 + r) * dk;
            if (r < rows) for (int j = 0; j < dk; j++) block[(size_t)j * ROWS + r] = src[j];
            else for (int j = 0; j < dk; j++) block[(size_t)j * ROWS + r] = 0;
        }
        for (int t = 0; t < steps; t++) {
            const float *qt = q + (size_t)t * qk_stride, *kt = k + (size_t)t * qk_stride;
            const float *vt = v + (size_t)t * vy_stride + i0;
            float *yt = y + (size_t)t * vy_stride + i0;
            const float decay = g[(size_t)t * gb_stride], b = beta[(size_t)t * gb_stride];
            const int keepStep = keep == 0 || keep[t] != 0;
            if (!keepStep) memcpy(saved, block, sizeof(float) * (size_t)dk * ROWS);
            // One vector holds the 16 rows: every lane runs its own row's sums, in order over j.
            v16 kv = (v16){0}, out = (v16){0};
            for (int j = 0; j < dk; j++) {
                v16 *row = (v16 *)(block + (size_t)j * ROWS);
                const v16 s = *row * decay;
                *row = s;
                const v16 p = s * kt[j];
                kv = kv + p;
            }
            v16 value = (v16){0};
            if (rows == ROWS) value = *(const v16u *)vt;
            else for (int r = 0; r < rows; r++) value[r] = vt[r];
            const v16 delta = (value - kv) * b;
            for (int j = 0; j < dk; j++) {
                v16 *row = (v16 *)(block + (size_t)j * ROWS);
                const v16 u = kt[j] * delta;
                const v16 s = *row + u;
                *row = s;
                const v16 p = s * qt[j];
                out = out + p;
            }
            float lanes[ROWS];
            *(v16u *)lanes = out;
            memcpy(yt, lanes, sizeof(float) * (size_t)rows);
            if (!keepStep) memcpy(block, saved, sizeof(float) * (size_t)dk * ROWS);
        }
        if (whole) store_rows(state, dk, i0, block);
        else for (int r = 0; r < rows; r++) {
            float *dst = state + (size_t)(i0 + r) * dk;
            for (int j = 0; j < dk; j++) dst[j] = block[(size_t)j * ROWS + r];
        }
    }
}

typedef void (*delta_fn)(float *, int, int, int, const float *, const float *, size_t,
                         const float *, float *, size_t, const float *, const float *, size_t,
                         const unsigned char *, float *);

#define DELTA_ARGS float *state, int dk, int dv, int steps, const float *q, const float *k, \
    size_t qk_stride, const float *v, float *y, size_t vy_stride, const float *g, \
    const float *beta, size_t gb_stride, const unsigned char *keep, float *scratch
#define DELTA_CALL state, dk, dv, steps, q, k, qk_stride, v, y, vy_stride, g, beta, gb_stride, keep, scratch

static void delta_generic(DELTA_ARGS) { delta_body(DELTA_CALL); }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
__attribute__((target("avx512f"))) static void delta_avx512(DELTA_ARGS) { delta_body(DELTA_CALL); }
__attribute__((target("avx2"))) static void delta_avx2(DELTA_ARGS) { delta_body(DELTA_CALL); }
#endif

void pk_gated_delta(DELTA_ARGS) {
    const char *name = pk_kernel_name();
    delta_fn f = delta_generic;
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (strcmp(name, "avx512f") == 0) f = delta_avx512;
    else if (strcmp(name, "avx2") == 0) f = delta_avx2;
#endif
    f(DELTA_CALL);
}

size_t pk_gated_delta_scratch(int dk) { return (size_t)2 * (size_t)dk * ROWS; }

typedef struct {
    float *state, *y;
    const float *q, *k, *v, *g, *beta;
    const unsigned char *keep;
    int steps, hk, dk, hv, dv;
} heads_job;

static void heads_task(void *ctx, int flat) {
    const heads_job *j = ctx;
    const int b = flat / j->hv, h = flat % j->hv, kh = h / (j->hv / j->hk);
    const size_t S = (size_t)j->steps;
    float *scratch = aligned_alloc(64, sizeof(float) * pk_gated_delta_scratch(j->dk));
    if (!scratch) abort();
    pk_gated_delta(j->state + (size_t)flat * j->dv * j->dk, j->dk, j->dv, j->steps,
                   j->q + (b * S * j->hk + kh) * j->dk, j->k + (b * S * j->hk + kh) * j->dk, (size_t)j->hk * j->dk,
                   j->v + (b * S * j->hv + h) * j->dv, j->y + (b * S * j->hv + h) * j->dv, (size_t)j->hv * j->dv,
                   j->g + b * S * j->hv + h, j->beta + b * S * j->hv + h, (size_t)j->hv,
                   j->keep ? j->keep + b * S : 0, scratch);
    free(scratch);
}

void pk_gated_delta_heads(float *state, int batch, int steps, int hk, int dk, int hv, int dv,
                          const float *q, const float *k, const float *v, float *y,
                          const float *g, const float *beta, const unsigned char *keep, int parallel) {
    heads_job job = { state, y, q, k, v, g, beta, keep, steps, hk, dk, hv, dv };
    const int heads = batch * hv;
    if (parallel) pk_parallel(heads, heads_task, &job);
    else for (int i = 0; i < heads; i++) heads_task(&job, i);
}
