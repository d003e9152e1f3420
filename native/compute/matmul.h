/* matmul.h — the matmul entry points for code inside the core (the forward
 * pass), which owns its scratch memory and its output layout. */
#ifndef LAMINA_MATMUL_H
#define LAMINA_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "include/lamina.h"

/* bytes of scratch lm_matmul_into needs for ncols activation rows of length n */
size_t lm_matmul_scratch_bytes(int type, int64_t n, int64_t ncols);

/* y[c * ldy + r] = sum_k w[r, k] * x[c, k]   (ldy >= rows lets several
 * matmuls write side by side into one wider buffer) */
int lm_matmul_into(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n, const float *x,
                   int64_t ncols, float *y, int64_t ldy, void *scratch);

#endif
