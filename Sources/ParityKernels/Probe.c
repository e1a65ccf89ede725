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
