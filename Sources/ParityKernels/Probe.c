// Measurements for the bench's bounds; no product calls these.

#include "ParityKernels.h"

#include <time.h>

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

double pk_probe_clock_hz(void) {
#if defined(__x86_64__)
    // A chain of dependent integer adds retires one add per cycle: adds per second = clock.
    double best = 0;
    for (int run = 0; run < 3; run++) {
        const unsigned long adds = 200000000UL;
        unsigned long x = 0;
        const double start = seconds_now();
        for (unsigned long i = 0; i < adds; i += 8)
            __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                             "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
        const double hz = (double)adds / (seconds_now() - start);
        if (hz > best) best = hz;
    }
    return best;
#else
    return 0;
#endif
}

#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
typedef float probe_v8 __attribute__((vector_size(32)));
typedef unsigned probe_u8v __attribute__((vector_size(32)));
typedef int probe_i8v __attribute__((vector_size(32)));
#pragma clang diagnostic ignored "-Wpsabi"

// The exact q4 sum at M = 1 with nothing else: transposed words, scales, biases and x all in L1,
// four independent chains. Each 8 weights: nibble out (one mask, its scale pre-divided by 16^j,
// or the shift for the top nibble), convert, ·s, +β, ·x, +acc: six instructions, the fewest
// the reference's rounding allows (s·q, +β, ·x and +acc each round).
__attribute__((target("avx2"), noinline))
static float q4_floor_loop(const probe_u8v *words, const probe_v8 *scaled, const probe_v8 *bias, const float *x, long blocks) {
    probe_v8 acc[4] = {{0}};
    for (long it = 0; it < blocks; it++) {
        const probe_u8v *w = words + (it & 7) * 4;
        const float *xs = x + (it & 7) * 8;
#pragma clang loop unroll(full)
        for (int t = 0; t < 8; t++) {
            const float s = xs[t];
            const probe_v8 xv = {s, s, s, s, s, s, s, s};
#pragma clang loop unroll(full)
            for (int nb = 0; nb < 4; nb++) {
                const probe_u8v q = t < 7 ? w[nb] & (15u << (4 * t)) : w[nb] >> 28;
                probe_v8 v = __builtin_convertvector((probe_i8v)q, probe_v8) * scaled[nb * 8 + t];
                v = v + bias[nb];
                const probe_v8 p = v * xv;
                acc[nb] = acc[nb] + p;
            }
        }
    }
    const probe_v8 sum = acc[0] + acc[1] + acc[2] + acc[3];
    return sum[0];
}
#endif

double pk_probe_q4_floor_cycles_per_8(double clock_hz) {
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("avx2") || clock_hz <= 0) return 0;
    static probe_u8v words[32];
    static probe_v8 scaled[32], bias[4];
    static float x[64];
    for (int i = 0; i < 32; i++)
        for (int l = 0; l < 8; l++) words[i][l] = 0x9E3779B9u * (unsigned)(i * 8 + l + 1);
    for (int i = 0; i < 32; i++) scaled[i] = (probe_v8){0.01f, 0.01f, 0.01f, 0.01f, 0.01f, 0.01f, 0.01f, 0.01f};
    for (int i = 0; i < 4; i++) bias[i] = (probe_v8){-0.07f, -0.07f, -0.07f, -0.07f, -0.07f, -0.07f, -0.07f, -0.07f};
    for (int i = 0; i < 64; i++) x[i] = 0.5f - (float)(i % 7) * 0.1f;
    double best = 1e30;
    volatile float sink = 0;
    for (int run = 0; run < 3; run++) {
        const long blocks = 4000000;   // 32 vectors of 8 weights each
        const double start = seconds_now();
        sink = q4_floor_loop(words, scaled, bias, x, blocks);
        const double cycles = (seconds_now() - start) * clock_hz / ((double)blocks * 32);
        if (cycles < best) best = cycles;
    }
    (void)sink;
    return best;
#else
    (void)clock_hz;
    return 0;
#endif
}
