// mlx's CPU elementwise maths, vectorised: the same operations in the same order as
// ParityTensor/MLXMath.swift (FMAs exactly where mlx has them, every other product and sum
// rounded on its own), so the bits match the Swift scalar code and mlx.

#include "ParityKernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

static inline __attribute__((always_inline)) float mlx_exp(float input) {
    // Clamp first so the integer conversion below is always defined; the selects at the end
    // restore NaN, +inf above 88 and 0 below −88 exactly as MLXMath.exp returns them.
    const float clamped = input > 88.0f ? 88.0f : (input < -88.0f ? -88.0f : (input == input ? input : 0.0f));
    const float x = clamped * 1.442695f;
    const float whole = floorf(x + 0.5f);
    const float fraction = x - whole;
    float p = 1.535336188319500e-4f;
    p = fmaf(p, fraction, 1.339887440266574e-3f);
    p = fmaf(p, fraction, 9.618437357674640e-3f);
    p = fmaf(p, fraction, 5.550332471162809e-2f);
    p = fmaf(p, fraction, 2.402264791363012e-1f);
    p = fmaf(p, fraction, 6.931472028550421e-1f);
    p = fmaf(p, fraction, 1.0f);
    const uint32_t bits = (uint32_t)((int32_t)whole + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float r = scale * p;
    r = input > 88.0f ? INFINITY : r;
    r = input < -88.0f ? 0.0f : r;
    return input == input ? r : input;
}

static inline __attribute__((always_inline)) float mlx_silu(float x) {
    const float y = 1.0f / (1.0f + mlx_exp(fabsf(x)));
    const float s = x < 0 ? y : 1.0f - y;
    return x * s;
}

static inline __attribute__((always_inline))
void silu_mul_body(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = mlx_silu(a[i]) * b[i];
}

static inline __attribute__((always_inline))
void conv_silu_body(const float *in, const float *w_t, float *out, int steps, int channels, int kernel) {
    for (int t = 0; t < steps; t++) {
        float *o = out + (size_t)t * channels;
        for (int c = 0; c < channels; c++) o[c] = 0;
        for (int j = 0; j < kernel; j++) {
            const float *x = in + (size_t)(t + j) * channels, *w = w_t + (size_t)j * channels;
            for (int c = 0; c < channels; c++) { const float p = x[c] * w[c]; o[c] = o[c] + p; }
        }
        for (int c = 0; c < channels; c++) o[c] = mlx_silu(o[c]);
    }
}

static void silu_mul_generic(const float *a, const float *b, float *out, size_t n) { silu_mul_body(a, b, out, n); }
static void conv_silu_generic(const float *in, const float *w, float *out, int s, int c, int k) { conv_silu_body(in, w, out, s, c, k); }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define PK_X86 1
__attribute__((target("avx512f,fma")))
static void silu_mul_avx512(const float *a, const float *b, float *out, size_t n) { silu_mul_body(a, b, out, n); }
__attribute__((target("avx512f,fma")))
static void conv_silu_avx512(const float *in, const float *w, float *out, int s, int c, int k) { conv_silu_body(in, w, out, s, c, k); }
__attribute__((target("avx2,fma")))
static void silu_mul_avx2(const float *a, const float *b, float *out, size_t n) { silu_mul_body(a, b, out, n); }
__attribute__((target("avx2,fma")))
static void conv_silu_avx2(const float *in, const float *w, float *out, int s, int c, int k) { conv_silu_body(in, w, out, s, c, k); }
#endif

void pk_silu_mul(const float *a, const float *b, float *out, size_t n) {
#ifdef PK_X86
    const char *name = pk_kernel_name();
    if (strcmp(name, "avx512f") == 0) { silu_mul_avx512(a, b, out, n); return; }
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("fma")) { silu_mul_avx2(a, b, out, n); return; }
#endif
    silu_mul_generic(a, b, out, n);
}

void pk_conv_silu(const float *in, const float *w_t, float *out, int steps, int channels, int kernel) {
#ifdef PK_X86
    const char *name = pk_kernel_name();
    if (strcmp(name, "avx512f") == 0) { conv_silu_avx512(in, w_t, out, steps, channels, kernel); return; }
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("fma")) { conv_silu_avx2(in, w_t, out, steps, channels, kernel); return; }
#endif
    conv_silu_generic(in, w_t, out, steps, channels, kernel);
}
