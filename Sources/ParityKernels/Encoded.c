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

static inline float affine_value(float s, float q, float b, int type) {
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
// (a value of 3, 5 or 6 bits may straddle two bytes; none reads past its own last byte).
static inline void affine_group(const unsigned char *row, size_t bit0, int bits, int count,
                                float s, float b, int type, float *out) {
    if (bits == 4 && (bit0 & 7) == 0 && (count & 1) == 0) {
        const unsigned char *p = row + (bit0 >> 3);
        for (int i = 0; i < count; i += 2) {
            out[i] = affine_value(s, (float)(p[i >> 1] & 15), b, type);
            out[i + 1] = affine_value(s, (float)(p[i >> 1] >> 4), b, type);
        }
        return;
    }
    if (bits == 8 && (bit0 & 7) == 0) {
        const unsigned char *p = row + (bit0 >> 3);
        for (int i = 0; i < count; i++) out[i] = affine_value(s, (float)p[i], b, type);
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

void pk_decode_row(const pk_encoded *m, int r, float *out) {
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
        const int groups = k / m->group;
        const size_t first = (size_t)r * groups;
        for (int g = 0; g < groups; g++) {
            const float s = load_scale(m->scales, m->scale_type, first + g);
            const float b = load_scale(m->biases, m->scale_type, first + g);
            affine_group(row, (size_t)g * m->group * m->bits, m->bits, m->group, s, b, m->scale_type,
                         out + (size_t)g * m->group);
        }
    }
    }
}

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

// Panels [first, last): decode each into `panel` ([K][64], zero-padded) and multiply.
static void encoded_panels(const encoded_job *j, int first, int last) {
    const int k = j->w->k;
    float *panel = malloc(sizeof(float) * ((size_t)k * PK_PANEL + (size_t)k));
    if (!panel) abort();
    float *row = panel + (size_t)k * PK_PANEL;
    for (int p = first; p < last; p++) {
        const int j0 = p * PK_PANEL, cols = j->n - j0 < PK_PANEL ? j->n - j0 : PK_PANEL;
        if (cols < PK_PANEL) memset(panel, 0, sizeof(float) * (size_t)k * PK_PANEL);
        for (int jj = 0; jj < cols; jj++) {
            pk_decode_row(j->w, j0 + jj, row);
            for (int q = 0; q < k; q++) panel[(size_t)q * PK_PANEL + jj] = row[q];
        }
        pk_gemm(j->a, panel, j->c + j0, j->ldc, j->m, cols, k, 0, 1);
    }
    free(panel);
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
