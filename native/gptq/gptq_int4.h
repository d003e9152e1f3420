/* gptq_int4.h — what the GPTQ driver (gptq_int4.c) shares with its SIMD
 * kernels (simd/x86/gptq_int4_avx2.c). */
#ifndef LAMINA_GPTQ_INT4_H
#define LAMINA_GPTQ_INT4_H

#include <stdint.h>

#include "include/lamina_gptq.h"

/* effective inputs per group: the whole row for group_size -1 / 0 */
static inline int64_t lm_gptq_group_size(const lm_gptq_matrix *w) {
    return w->group_size > 0 ? w->group_size : w->n_in;
}

/* One matmul, with the activations prepared once for the SIMD kernels.
 *
 * SIMD kernels turn nibble j of a word into a float with one AND, leaving it
 * multiplied by 16^j; xs carries the matching 16^-j (exact: powers of two).
 * Nibble 7 is shifted down instead (its mask would set the sign bit), so xs
 * leaves input 8r+7 unscaled.
 *
 * Two layouts of the groups:
 *  - runs (n_runs > 0): every 32-bit word holds inputs of one group, so the
 *    input rows split into runs of word rows [r0, r1) of one group g. A run's
 *    dot products are summed unscaled and scaled once: ordinary files,
 *    g_idx NULL or i / group_size, any group_size that is a multiple of 8.
 *  - general (n_runs == 0): act-order g_idx, where neighbouring inputs belong
 *    to different groups; each weight is scaled as it is unpacked.
 * Either way the zero point enters once per run/group as zero * sum(x). */
typedef struct {
    const lm_gptq_matrix *w;
    int64_t o0, o1;           /* requested outputs */
    const float *x;           /* [ncols][n_in] */
    int64_t ncols;
    float *y;                 /* y[c * ldy + (o - o0)] */
    int64_t ldy;
    int use_simd;

    /* filled by the driver for the SIMD path */
    const float *xs;          /* [ncols][n_in] x, input 8r+j times 16^-j (j < 7) */
    const float *xsum;        /* [ncols][n_sums] sum of x over each run (runs) or group (general) */
    int64_t n_sums;
    const int32_t *runs;      /* [n_runs][3]: group, first word row, end word row */
    int32_t n_runs;
    const int32_t *g_idx;     /* [n_in] group of every input (general layout) */
} lm_gptq_job;

/* Scalar reference: outputs [ob, oe) (any alignment), dequantizing each weight
 * exactly as the formula reads; y points at output ob of column 0. */
void lm_gptq_rows_ref(const lm_gptq_matrix *w, int64_t ob, int64_t oe, const float *x, int64_t ncols, float *y,
                      int64_t ldy);

/* AVX2: outputs [ob, oe), both multiples of 8, into job->y */
void lm_gptq_rows_avx2(const lm_gptq_job *job, int64_t ob, int64_t oe);

#endif
