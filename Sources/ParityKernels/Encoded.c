// Weights decoded where they are used: a checkpoint's bf16 or affine-quantized matrices stay
// in their stored form (memory-mapped), and each product decodes one 64-row panel at a time into
// a buffer the in-order kernel reads. The decoded values are those of a dense copy, bit for bit,
// and the kernel sums every element in the same order, so the product has the dense product's bits
// while the model takes its stored size in memory instead of four bytes per parameter.

#include "ParityKernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// mx.dequantize rounds s·q and then the sum separately: never contract them into one FMA.
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

static inline float widen_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Nearest bfloat16, ties to even (the inputs are finite: checked at load).
static inline float round_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float widen_f16(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

static inline float round_f16(float x) { return (float)(_Float16)x; }

static inline uint16_t load16(const unsigned char *p, size_t i) {
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

static inline float load_scale(const void *base, int type, size_t i) {
    switch (type) {
    case PK_SCALE_BF16: return widen_bf16(load16(base, i));
    case PK_SCALE_F16: return widen_f16(load16(base, i));
    default: { float f; memcpy(&f, (const unsigned char *)base + 4 * i, 4); return f; }
    }
}

size_t pk_encoded_row_bytes(const pk_encoded *m) {
    switch (m->encoding) {
    case PK_ENC_BF16: case PK_ENC_F16: return (size_t)m->k * 2;
    case PK_ENC_AFFINE: return (size_t)m->k * (size_t)m->bits / 8;
    default: return (size_t)m->k * 4;
    }
}

static inline __attribute__((always_inline)) float affine_value(float s, float q, float b, int type) {
    if (type == PK_SCALE_F32) {
        const float product = s * q;
        return product + b;
    }
    if (type == PK_SCALE_BF16) {
        const float product = round_bf16(s * q);
        return round_bf16(product + b);
    }
    const float product = round_f16(s * q);
    return round_f16(product + b);
}

// One affine group: `count` values starting at bit `bit0` of the row's little-endian bit stream
// (a value of 3, 5 or 6 bits may straddle two bytes; none reads past its own last byte). 4 and 8
// bits go a 32-bit word at a time with constant shifts, which the compiler turns into vectors.
static inline __attribute__((always_inline))
void affine_group(const unsigned char *row, size_t bit0, int bits, int count, float s, float b, const int type, float *out) {
    if ((bits == 4 || bits == 8) && (bit0 & 31) == 0 && (count & 7) == 0) {
        const unsigned char *p = row + (bit0 >> 3);
        const int per_word = 32 / bits;
        for (int w = 0; w < count / per_word; w++) {
            uint32_t word;
            memcpy(&word, p + 4 * w, 4);
            float *o = out + w * per_word;
            if (bits == 4) {
                for (int t = 0; t < 8; t++) o[t] = affine_value(s, (float)((word >> (4 * t)) & 15u), b, type);
            } else {
                for (int t = 0; t < 4; t++) o[t] = affine_value(s, (float)((word >> (8 * t)) & 255u), b, type);
            }
        }
        return;
    }
    const unsigned mask = (1u << bits) - 1;
    for (int i = 0; i < count; i++) {
        const size_t bit = bit0 + (size_t)i * bits;
        unsigned v = row[bit >> 3];
        if ((int)(bit & 7) + bits > 8) v |= (unsigned)row[(bit >> 3) + 1] << 8;
        out[i] = affine_value(s, (float)((v >> (bit & 7)) & mask), b, type);
    }
}

// The scale type as a constant in each copy, so the per-value branch disappears.
static inline __attribute__((always_inline))
void affine_row(const pk_encoded *m, const unsigned char *row, size_t first, const int type, float *out) {
    const int groups = m->k / m->group;
    for (int g = 0; g < groups; g++) {
        const float s = load_scale(m->scales, type, first + g);
        const float b = load_scale(m->biases, type, first + g);
        affine_group(row, (size_t)g * m->group * m->bits, m->bits, m->group, s, b, type, out + (size_t)g * m->group);
    }
}

static inline __attribute__((always_inline))
void decode_row_body(const pk_encoded *m, int r, float *out) {
    const unsigned char *row = (const unsigned char *)m->values + (size_t)r * pk_encoded_row_bytes(m);
    const int k = m->k;
    switch (m->encoding) {
    case PK_ENC_F32:
        memcpy(out, row, (size_t)k * 4);
        return;
    case PK_ENC_BF16:
        for (int i = 0; i < k; i++) out[i] = widen_bf16(load16(row, i));
        return;
    case PK_ENC_F16:
        for (int i = 0; i < k; i++) out[i] = widen_f16(load16(row, i));
        return;
    default: {
        const size_t first = (size_t)r * (size_t)(k / m->group);
        switch (m->scale_type) {
        case PK_SCALE_BF16: affine_row(m, row, first, PK_SCALE_BF16, out); return;
        case PK_SCALE_F16: affine_row(m, row, first, PK_SCALE_F16, out); return;
        default: affine_row(m, row, first, PK_SCALE_F32, out); return;
        }
    }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c")))
static void decode_row_avx2(const pk_encoded *m, int r, float *out) { decode_row_body(m, r, out); }
#endif
static void decode_row_base(const pk_encoded *m, int r, float *out) { decode_row_body(m, r, out); }

typedef void (*decode_fn)(const pk_encoded *, int, float *);
static decode_fn decode_selected = 0;

static decode_fn decoder(void) {
    if (!decode_selected) {
        decode_fn chosen = decode_row_base;
#if defined(__x86_64__)
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) chosen = decode_row_avx2;
#endif
        decode_selected = chosen;   // the same value from every thread that races here
    }
    return decode_selected;
}

void pk_decode_row(const pk_encoded *m, int r, float *out) { decoder()(m, r, out); }

static int finite_run(const void *base, int type, size_t count, size_t first) {
    for (size_t i = 0; i < count; i++)
        if (!isfinite(load_scale(base, type, first + i))) return 0;
    return 1;
}

long pk_first_nonfinite_row(const pk_encoded *m, int rows) {
    for (int r = 0; r < rows; r++) {
        int ok;
        switch (m->encoding) {
        case PK_ENC_AFFINE: {
            const size_t groups = (size_t)(m->k / m->group);
            ok = finite_run(m->scales, m->scale_type, groups, (size_t)r * groups)
                && finite_run(m->biases, m->scale_type, groups, (size_t)r * groups);
            break;
        }
        case PK_ENC_BF16: ok = finite_run(m->values, PK_SCALE_BF16, (size_t)m->k, (size_t)r * m->k); break;
        case PK_ENC_F16: ok = finite_run(m->values, PK_SCALE_F16, (size_t)m->k, (size_t)r * m->k); break;
        default: ok = finite_run(m->values, PK_SCALE_F32, (size_t)m->k, (size_t)r * m->k); break;
        }
        if (!ok) return r;
    }
    return -1;
}

typedef struct {
    const float *a;
    const pk_encoded *w;
    float *c;
    int ldc, m, n, panels, tasks;
} encoded_job;

enum { BLOCK_ROWS = 8 };

typedef float v8 __attribute__((vector_size(32), aligned(4)));

// Columns q0 … q0+7 of eight decoded rows (`rows`, row-major, stride k) into the panel at
// column jb: an 8×8 transpose in registers, one 32-byte store per panel row.
static inline __attribute__((always_inline))
void transpose8(const float *rows, int k, int q0, float *panel, int jb) {
    v8 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) memcpy(&r[i], rows + (size_t)i * k + q0, sizeof(v8));
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int c = 0; c < 4; c++) {
        const v8 low = __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        const v8 high = __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(panel + (size_t)(q0 + c) * PK_PANEL + jb, &low, sizeof(v8));
        memcpy(panel + (size_t)(q0 + c + 4) * PK_PANEL + jb, &high, sizeof(v8));
    }
}

// Panels [first, last): decode each into `panel` ([K][64], zero-padded) and multiply. Rows are
// decoded eight at a time into row-major scratch (contiguous writes), then moved into the
// panel's columns by 8×8 transposes.
static inline __attribute__((always_inline))
void encoded_panels_body(const encoded_job *j, int first, int last, decode_fn decode) {
    const int k = j->w->k;
    float *panel = malloc(sizeof(float) * ((size_t)k * PK_PANEL + (size_t)BLOCK_ROWS * k));
    if (!panel) abort();
    float *rows = panel + (size_t)k * PK_PANEL;
    for (int p = first; p < last; p++) {
        const int j0 = p * PK_PANEL, cols = j->n - j0 < PK_PANEL ? j->n - j0 : PK_PANEL;
        if (cols < PK_PANEL) memset(panel, 0, sizeof(float) * (size_t)k * PK_PANEL);
        for (int jb = 0; jb < cols; jb += BLOCK_ROWS) {
            const int count = cols - jb < BLOCK_ROWS ? cols - jb : BLOCK_ROWS;
            for (int r = 0; r < count; r++) decode(j->w, j0 + jb + r, rows + (size_t)r * k);
            int q = 0;
            if (count == BLOCK_ROWS)
                for (; q + 8 <= k; q += 8) transpose8(rows, k, q, panel, jb);
            for (; q < k; q++)
                for (int r = 0; r < count; r++) panel[(size_t)q * PK_PANEL + jb + r] = rows[(size_t)r * k + q];
        }
        pk_gemm(j->a, panel, j->c + j0, j->ldc, j->m, cols, k, 0, 1);
    }
    free(panel);
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c")))
static void encoded_panels_avx2(const encoded_job *j, int first, int last) { encoded_panels_body(j, first, last, decoder()); }
#endif
static void encoded_panels_base(const encoded_job *j, int first, int last) { encoded_panels_body(j, first, last, decoder()); }

static void encoded_panels(const encoded_job *j, int first, int last) {
#if defined(__x86_64__)
    if (decoder() == decode_row_avx2) { encoded_panels_avx2(j, first, last); return; }
#endif
    encoded_panels_base(j, first, last);
}

static void encoded_task(void *ctx, int task) {
    const encoded_job *j = ctx;
    const int first = (int)((long)j->panels * task / j->tasks);
    const int last = (int)((long)j->panels * (task + 1) / j->tasks);
    if (last > first) encoded_panels(j, first, last);
}

void pk_gemm_encoded(const float *packed_a, const pk_encoded *w, float *c, int ldc, int m, int n, int parallel) {
    const int panels = (n + PK_PANEL - 1) / PK_PANEL;
    int tasks = parallel ? pk_pool_threads() * 4 : 1;
    if (tasks > panels) tasks = panels;
    encoded_job job = { packed_a, w, c, ldc, m, n, panels, tasks };
    if (tasks <= 1) encoded_panels(&job, 0, panels);
    else pk_parallel(tasks, encoded_task, &job);
}
