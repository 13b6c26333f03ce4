/* This machine's f32 FMA peak: each thread runs 12 independent chains of 8-lane fused
 * multiply-adds (AVX2+FMA) in registers, no memory traffic; prints GFLOP/s over all threads.
 * The ceiling that any f32 GEMM, ours or PyTorch's, runs under (benches/README.md).
 *   gcc -O2 -mavx2 -mfma -pthread -o /tmp/fma_peak benches/fma_peak.c && /tmp/fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
static const long ITERS = 400000000;
static volatile float sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *unused) {
    (void)unused;
    __m256 acc[CHAINS];
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < ITERS; n++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
    }
    float s = 0, lanes[8];
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        s += lanes[0];
    }
    sink = s;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "usage: %s [THREADS 1..256]\n", argv[0]);
        return 2;
    }
    pthread_t t[256];
    double t0 = now();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, run, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double dt = now() - t0, flops = (double)ITERS * CHAINS * 16 * threads;
    printf("threads %d: %.1f GFLOP/s f32 FMA peak (%.2f s)\n", threads, flops / dt / 1e9, dt);
    return 0;
}
