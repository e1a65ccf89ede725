// Weights decoded where they are used: a checkpoint's bf16 or affine-quantized matrices stay
// in their stored form (memory-mapped), and each product decodes one 64-row panel at a time into
// a buffer the in-order kernel reads. The decoded values are those of a dense copy, bit for bit,
// and the kernel sums every element in the same order, so the product has the dense product's bits
// while the model takes its stored size in memory instead of four bytes per parameter.
// A decode step (M ≤ PK_FUSED_MAX_M) skips the panel: values are decoded and summed in registers.

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

// In place: r[c] becomes column c of the 8×8 matrix whose rows were r[0 … 7] (moves only).
static inline __attribute__((always_inline)) void transpose_regs(v8 r[8]) {
    v8 t[8], u[8];
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
        r[c] = __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[c + 4] = __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

// Columns q0 … q0+7 of eight decoded rows (`rows`, row-major, stride k) into the panel at
// column jb (a multiple of 8, so the eight sit in one strip): an 8×8 transpose in registers,
// one 32-byte store per panel row.
static inline __attribute__((always_inline))
void transpose8(const float *rows, int k, int q0, float *panel, int jb) {
    v8 r[8];
    for (int i = 0; i < 8; i++) memcpy(&r[i], rows + (size_t)i * k + q0, sizeof(v8));
    transpose_regs(r);
    for (int c = 0; c < 8; c++) memcpy(panel + pk_packed_b_index(k, q0 + c, jb), &r[c], sizeof(v8));
}

// Panels [first, last): decode each into `panel` (four [K][16] strips, zero-padded) and multiply. Rows are
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
                for (int r = 0; r < count; r++) panel[pk_packed_b_index(k, q, jb + r)] = rows[(size_t)r * k + q];
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

// ---------------------------------------------------------------------------------------------
// Few rows of A (a decode step): no panel. Vector lanes are 8 rows of W, each lane walks its
// own row's k in order, and every step is acc = acc + w·x rounded twice: the panel kernel's sum
// for every element. 4- and 8-bit words of 8 rows are transposed 8×8 before they are decoded,
// one transpose per 64 words instead of one per 64 values; FUSED_NB groups of 8 rows run side
// by side because each lane's sum is a chain whose add latency would otherwise set the pace.

// Two groups of 8 rows keep every value in registers (16 ymm); four spilled and ran slower.
enum { FUSED_NB = 2, FUSED_ROWS = 8 * FUSED_NB };

// The eight-lane helpers below are always inlined: no vector crosses a call, whatever the ABI.
#pragma clang diagnostic ignored "-Wpsabi"

static int fused_max_m = PK_FUSED_MAX_M;

int pk_set_encoded_fused_rows(int m) {
    const int previous = fused_max_m;
    fused_max_m = m < 0 ? 0 : m > PK_FUSED_MAX_M ? PK_FUSED_MAX_M : m;
    return previous;
}

typedef uint32_t u8v __attribute__((vector_size(32), aligned(4)));
typedef int32_t i8v __attribute__((vector_size(32), aligned(4)));
typedef _Float16 h8v __attribute__((vector_size(16), aligned(2)));

// round_bf16 and round_f16 on eight lanes.
static inline __attribute__((always_inline)) v8 round_bf16_v(v8 x) {
    u8v bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static inline __attribute__((always_inline)) v8 round_f16_v(v8 x) {
    return __builtin_convertvector(__builtin_convertvector(x, h8v), v8);
}

// affine_value on eight lanes, the same two roundings.
static inline __attribute__((always_inline)) v8 affine_v(v8 s, v8 q, v8 b, const int type) {
    if (type == PK_SCALE_F32) {
        const v8 product = s * q;
        return product + b;
    }
    if (type == PK_SCALE_BF16) {
        const v8 product = round_bf16_v(s * q);
        return round_bf16_v(product + b);
    }
    const v8 product = round_f16_v(s * q);
    return round_f16_v(product + b);
}

static inline __attribute__((always_inline)) uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Lanes past N hold a copy of row N-1; only lanes < N are stored.
static inline __attribute__((always_inline)) void store_lanes(float *c, v8 acc, int j0, int n) {
    if (j0 + 8 <= n) { memcpy(c + j0, &acc, sizeof acc); return; }
    float t[8];
    memcpy(t, &acc, sizeof t);
    for (int r = 0; j0 + r < n; r++) c[j0 + r] = t[r];
}

// Rows [j0, j0 + FUSED_ROWS) of a 4- or 8-bit W whose groups hold whole 32-bit words.
static inline __attribute__((always_inline))
void fused_words(const pk_encoded *w, const float *a, float *c, int ldc, const int mr, int j0, int n,
                 const int bits, const int type) {
    const int k = w->k, per_word = 32 / bits, words = k / per_word, per_group = w->group / per_word;
    const size_t row_bytes = (size_t)k * bits / 8, groups = (size_t)(k / w->group);
    const uint32_t mask = (1u << bits) - 1;
    const unsigned char *row[FUSED_NB][8];
    size_t first[FUSED_NB][8];
    for (int nb = 0; nb < FUSED_NB; nb++)
        for (int r = 0; r < 8; r++) {
            const int jr = j0 + 8 * nb + r < n ? j0 + 8 * nb + r : n - 1;
            row[nb][r] = (const unsigned char *)w->values + (size_t)jr * row_bytes;
            first[nb][r] = (size_t)jr * groups;
        }
    v8 acc[PK_FUSED_MAX_M][FUSED_NB];
    for (int i = 0; i < mr; i++)
        for (int nb = 0; nb < FUSED_NB; nb++) acc[i][nb] = (v8){0};
    v8 s[FUSED_NB], b[FUSED_NB];
    int next_group = 0;
    // The next block's values, its share each step: 32 row streams at a 32-byte step defeat
    // the hardware prefetcher. Prefetches change no value.
    const char *next = j0 + FUSED_ROWS < n ? (const char *)w->values + (size_t)(j0 + FUSED_ROWS) * row_bytes : 0;
    const int lines = (int)(FUSED_ROWS * row_bytes / 64), steps = (words + 7) / 8, share = (lines + steps - 1) / steps;
    for (int w0 = 0; w0 < words; w0 += 8) {
        const int count = words - w0 < 8 ? words - w0 : 8;
        if (next)
            for (int l = (w0 / 8) * share; l < (w0 / 8 + 1) * share && l < lines; l++) __builtin_prefetch(next + (size_t)l * 64, 0, 3);
        u8v tw[FUSED_NB][8];
        for (int nb = 0; nb < FUSED_NB; nb++) {
            if (count == 8) {
                v8 r[8];
                for (int i = 0; i < 8; i++) memcpy(&r[i], row[nb][i] + 4 * (size_t)w0, sizeof(v8));
                transpose_regs(r);
                memcpy(tw[nb], r, sizeof r);
            } else {
                for (int i = 0; i < count; i++) {
                    const size_t at = 4 * (size_t)(w0 + i);
                    tw[nb][i] = (u8v){ load32(row[nb][0] + at), load32(row[nb][1] + at), load32(row[nb][2] + at),
                                       load32(row[nb][3] + at), load32(row[nb][4] + at), load32(row[nb][5] + at),
                                       load32(row[nb][6] + at), load32(row[nb][7] + at) };
                }
            }
        }
        for (int i = 0; i < count; i++) {
            const int word = w0 + i;
            if (word == next_group) {
                const size_t g = (size_t)(word / per_group);
                for (int nb = 0; nb < FUSED_NB; nb++) {
                    const size_t *f = first[nb];
                    s[nb] = (v8){ load_scale(w->scales, type, f[0] + g), load_scale(w->scales, type, f[1] + g),
                                  load_scale(w->scales, type, f[2] + g), load_scale(w->scales, type, f[3] + g),
                                  load_scale(w->scales, type, f[4] + g), load_scale(w->scales, type, f[5] + g),
                                  load_scale(w->scales, type, f[6] + g), load_scale(w->scales, type, f[7] + g) };
                    b[nb] = (v8){ load_scale(w->biases, type, f[0] + g), load_scale(w->biases, type, f[1] + g),
                                  load_scale(w->biases, type, f[2] + g), load_scale(w->biases, type, f[3] + g),
                                  load_scale(w->biases, type, f[4] + g), load_scale(w->biases, type, f[5] + g),
                                  load_scale(w->biases, type, f[6] + g), load_scale(w->biases, type, f[7] + g) };
                }
                next_group += per_group;
            }
            const float *x = a + (size_t)word * per_word * PK_TILE_ROWS;
#pragma clang loop unroll(full)
            for (int t = 0; t < 32 / bits; t++) {
                for (int nb = 0; nb < FUSED_NB; nb++) {
                    const u8v q = (tw[nb][i] >> (uint32_t)(bits * t)) & mask;
                    const v8 v = affine_v(s[nb], __builtin_convertvector((i8v)q, v8), b[nb], type);
                    for (int m = 0; m < mr; m++) {
                        const v8 p = v * x[t * PK_TILE_ROWS + m];
                        acc[m][nb] = acc[m][nb] + p;
                    }
                }
            }
        }
    }
    for (int i = 0; i < mr; i++)
        for (int nb = 0; nb < FUSED_NB; nb++) store_lanes(c + (size_t)i * ldc, acc[i][nb], j0 + 8 * nb, n);
}

// Any other encoding: 8 rows decoded into `rows` (row-major, 8 × K), then each 8 × 8 block
// transposed in registers and summed as above.
static inline __attribute__((always_inline))
void fused_rows(const pk_encoded *w, const float *a, float *c, int ldc, const int mr, int j0, int n,
                float *rows, decode_fn decode) {
    const int k = w->k;
    for (int r = 0; r < 8; r++) decode(w, j0 + r < n ? j0 + r : n - 1, rows + (size_t)r * k);
    v8 acc[PK_FUSED_MAX_M];
    for (int i = 0; i < mr; i++) acc[i] = (v8){0};
    int q = 0;
    for (; q + 8 <= k; q += 8) {
        v8 r[8];
        for (int i = 0; i < 8; i++) memcpy(&r[i], rows + (size_t)i * k + q, sizeof(v8));
        transpose_regs(r);
        for (int col = 0; col < 8; col++)
            for (int i = 0; i < mr; i++) {
                const v8 p = r[col] * a[(size_t)(q + col) * PK_TILE_ROWS + i];
                acc[i] = acc[i] + p;
            }
    }
    for (; q < k; q++) {
        v8 v;
        for (int r = 0; r < 8; r++) v[r] = rows[(size_t)r * k + q];
        for (int i = 0; i < mr; i++) {
            const v8 p = v * a[(size_t)q * PK_TILE_ROWS + i];
            acc[i] = acc[i] + p;
        }
    }
    for (int i = 0; i < mr; i++) store_lanes(c + (size_t)i * ldc, acc[i], j0, n);
}

static int word_path(const pk_encoded *w) {
    return w->encoding == PK_ENC_AFFINE && (w->bits == 4 || w->bits == 8) && (w->group * w->bits) % 32 == 0;
}

typedef struct {
    const float *a;
    const pk_encoded *w;
    float *c;
    int ldc, m, n, blocks, tasks;
} fused_job;

#define FUSED_WORDS_M(bits, type)                                                        \
    switch (j->m) {                                                                      \
    case 1: fused_words(j->w, j->a, j->c, j->ldc, 1, j0, j->n, bits, type); break;       \
    case 2: fused_words(j->w, j->a, j->c, j->ldc, 2, j0, j->n, bits, type); break;       \
    case 3: fused_words(j->w, j->a, j->c, j->ldc, 3, j0, j->n, bits, type); break;       \
    default: fused_words(j->w, j->a, j->c, j->ldc, 4, j0, j->n, bits, type); break;      \
    }

#define FUSED_WORDS(bits)                                                                \
    switch (j->w->scale_type) {                                                          \
    case PK_SCALE_BF16: FUSED_WORDS_M(bits, PK_SCALE_BF16) break;                        \
    case PK_SCALE_F16: FUSED_WORDS_M(bits, PK_SCALE_F16) break;                          \
    default: FUSED_WORDS_M(bits, PK_SCALE_F32) break;                                    \
    }

_Static_assert(PK_FUSED_MAX_M == 4, "FUSED_WORDS_M and fused_blocks_body name every row count");

// Blocks [first, last) of FUSED_ROWS rows.
static inline __attribute__((always_inline))
void fused_blocks_body(const fused_job *j, int first, int last, decode_fn decode) {
    if (word_path(j->w)) {
        for (int blk = first; blk < last; blk++) {
            const int j0 = blk * FUSED_ROWS;
            if (j->w->bits == 4) { FUSED_WORDS(4) } else { FUSED_WORDS(8) }
        }
        return;
    }
    float *rows = malloc(sizeof(float) * 8 * (size_t)j->w->k);
    if (!rows) abort();
    for (int blk = first; blk < last; blk++)
        for (int j0 = blk * FUSED_ROWS; j0 < j->n && j0 < (blk + 1) * FUSED_ROWS; j0 += 8)
            switch (j->m) {
            case 1: fused_rows(j->w, j->a, j->c, j->ldc, 1, j0, j->n, rows, decode); break;
            case 2: fused_rows(j->w, j->a, j->c, j->ldc, 2, j0, j->n, rows, decode); break;
            case 3: fused_rows(j->w, j->a, j->c, j->ldc, 3, j0, j->n, rows, decode); break;
            default: fused_rows(j->w, j->a, j->c, j->ldc, 4, j0, j->n, rows, decode); break;
            }
    free(rows);
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c")))
static void fused_blocks_avx2(const fused_job *j, int first, int last) { fused_blocks_body(j, first, last, decoder()); }
#endif
static void fused_blocks_base(const fused_job *j, int first, int last) { fused_blocks_body(j, first, last, decoder()); }

static void fused_blocks(const fused_job *j, int first, int last) {
#if defined(__x86_64__)
    if (decoder() == decode_row_avx2) { fused_blocks_avx2(j, first, last); return; }
#endif
    fused_blocks_base(j, first, last);
}

static void fused_task(void *ctx, int task) {
    const fused_job *j = ctx;
    const int first = (int)((long)j->blocks * task / j->tasks);
    const int last = (int)((long)j->blocks * (task + 1) / j->tasks);
    if (last > first) fused_blocks(j, first, last);
}

void pk_gemm_encoded(const float *packed_a, const pk_encoded *w, float *c, int ldc, int m, int n, int parallel) {
    if (m <= fused_max_m) {
        const int blocks = (n + FUSED_ROWS - 1) / FUSED_ROWS;
        int tasks = parallel ? pk_pool_threads() * 4 : 1;
        if (tasks > blocks) tasks = blocks;
        fused_job job = { packed_a, w, c, ldc, m, n, blocks, tasks };
        if (tasks <= 1) fused_blocks(&job, 0, blocks);
        else pk_parallel(tasks, fused_task, &job);
        return;
    }
    const int panels = (n + PK_PANEL - 1) / PK_PANEL;
    int tasks = parallel ? pk_pool_threads() * 4 : 1;
    if (tasks > panels) tasks = panels;
    encoded_job job = { packed_a, w, c, ldc, m, n, panels, tasks };
    if (tasks <= 1) encoded_panels(&job, 0, panels);
    else pk_parallel(tasks, encoded_task, &job);
}
