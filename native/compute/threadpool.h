/* threadpool.h — persistent workers for the data-parallel loops of the core. */
#ifndef LAMINA_THREADPOOL_H
#define LAMINA_THREADPOOL_H

#include "include/lamina.h"

/* fn(ctx, ith, nth) runs once on each of the nth threads; thread 0 is the caller */
typedef void (*lm_task_fn)(void *ctx, int ith, int nth);

/* Runs fn on every thread of tp (or inline when tp is NULL or has one thread)
 * and returns when all have finished. Not reentrant: one job at a time. */
void lm_threadpool_run(lm_threadpool *tp, lm_task_fn fn, void *ctx);

/* [begin, end) of n items for thread ith of nth, contiguous and balanced */
static inline void lm_split_range(int64_t n, int ith, int nth, int64_t *begin, int64_t *end) {
    const int64_t per = n / nth, extra = n % nth;
    *begin = ith * per + (ith < extra ? ith : extra);
    *end = *begin + per + (ith < extra ? 1 : 0);
}

#endif
