/* membench.c — how fast this machine streams memory into the cores, the
 * yardstick for memory-bound kernels (mat-vec, decode). */
#define _POSIX_C_SOURCE 199309L   /* clock_gettime under -std=c11 */
#include <stdint.h>
#include <time.h>

#include "compute/threadpool.h"

typedef struct {
    const uint64_t *buf;
    size_t words;
    uint64_t sink[64];   /* per-thread results, so the loads cannot be dropped */
} read_job;

static void read_share(void *p, int ith, int nth) {
    read_job *job = p;
    int64_t begin, end;
    lm_split_range((int64_t)(job->words / 8), ith, nth, &begin, &end);
    /* 8 independent accumulators keep enough loads in flight */
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (int64_t i = begin; i < end; i++) {
        const uint64_t *w = job->buf + i * 8;
        a0 ^= w[0];
        a1 ^= w[1];
        a2 ^= w[2];
        a3 ^= w[3];
        a4 ^= w[4];
        a5 ^= w[5];
        a6 ^= w[6];
        a7 ^= w[7];
    }
    job->sink[ith % 64] = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double lm_memory_read_gbps(lm_threadpool *tp, const void *buf, size_t bytes, int reps) {
    if (!buf || bytes < 64 || reps < 1) return 0.0;
    read_job job = { .buf = buf, .words = bytes / 8 };
    lm_threadpool_run(tp, read_share, &job);   /* warm-up: page faults, TLB */
    const double t0 = now_seconds();
    for (int r = 0; r < reps; r++) lm_threadpool_run(tp, read_share, &job);
    const double dt = now_seconds() - t0;
    return dt > 0 ? (double)(bytes / 64 * 64) * reps / dt / 1e9 : 0.0;
}
