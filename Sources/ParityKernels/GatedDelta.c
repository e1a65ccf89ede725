// The gated delta recurrence, elementwise across the value dimension (see ParityKernels.h).
// Loops run over dv innermost, so the compiler vectorises them without reassociating any sum:
// every sum over dk runs in order, one rounded multiply and one rounded add per step.

#include "ParityKernels.h"

#include <string.h>

#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

static inline __attribute__((always_inline))
void delta_body(float *restrict state, int dk, int dv, int steps,
                const float *q, const float *k, size_t qk_stride,
                const float *v, float *y, size_t vy_stride,
                const float *g, const float *beta, size_t gb_stride,
                const unsigned char *keep, float *restrict scratch) {
    float *restrict kv = scratch, *restrict delta = scratch + dv, *restrict out = scratch + 2 * dv;
    float *restrict saved = scratch + 3 * dv;
    for (int t = 0; t < steps; t++) {
        const float *qt = q + (size_t)t * qk_stride, *kt = k + (size_t)t * qk_stride;
        const float *vt = v + (size_t)t * vy_stride;
        float *yt = y + (size_t)t * vy_stride;
        const float decay = g[(size_t)t * gb_stride], b = beta[(size_t)t * gb_stride];
        const int keepStep = keep == 0 || keep[t] != 0;
        if (!keepStep) memcpy(saved, state, sizeof(float) * (size_t)dk * dv);
        for (int i = 0; i < dv; i++) kv[i] = 0;
        for (int j = 0; j < dk; j++) {
            float *restrict row = state + (size_t)j * dv;
            const float kj = kt[j];
            for (int i = 0; i < dv; i++) {
                const float s = row[i] * decay;
                row[i] = s;
                const float p = s * kj;
                kv[i] = kv[i] + p;
            }
        }
        for (int i = 0; i < dv; i++) { out[i] = 0; delta[i] = (vt[i] - kv[i]) * b; }
        for (int j = 0; j < dk; j++) {
            float *restrict row = state + (size_t)j * dv;
            const float kj = kt[j], qj = qt[j];
            for (int i = 0; i < dv; i++) {
                const float u = kj * delta[i];
                const float s = row[i] + u;
                row[i] = s;
                const float p = s * qj;
                out[i] = out[i] + p;
            }
        }
        memcpy(yt, out, sizeof(float) * (size_t)dv);
        if (!keepStep) memcpy(state, saved, sizeof(float) * (size_t)dk * dv);
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
