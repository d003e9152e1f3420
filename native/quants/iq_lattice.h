/* iq_lattice.h — what the lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
 * IQ2_S, IQ3_XXS, IQ3_S; quants/iq1.h, iq2.h, iq3.h) share, C and CUDA
 * (LM_HD): reading their grids (quants/iq_grids.h) and signs, and how a row's
 * block terms become the dot.
 *
 * The dots split as ggml's *_generic ones: per 32-weight sub-block an exact
 * integer sum of grid values times signs times Q8_K values, multiplied by the
 * sub-block's odd integer scale 2s+1; the sum over the block (isum) times d
 * and y.d is the block's term. ggml folds a constant factor into each
 * dequantized scale (IQ2: (0.5+s)/4 = (2s+1)/8, IQ3_XXS: (2s+1)/4, IQ3_S:
 * 2s+1) and applies it once to the row's sum; so does lamina
 * (LM_IQ_DOT_FACTOR_<T>). IQ1's shift of +-1/8 per weight is kept in
 * integers too: isum = 8 * sum(scale * grid . q8) + sum(scale * sign * bsums),
 * with the factor 1/8. Every |isum| stays below 2^24, so the sums are exact
 * in any order and the SIMD kernels reproduce the scalar bits.
 */
#ifndef LAMINA_IQ_LATTICE_H
#define LAMINA_IQ_LATTICE_H

#include "quants/iq_grids.h"
#include "quants/kquant.h"

/* value j (0..7) of a 64-bit grid entry, value j (0..3) of a 32-bit one */
LM_HD int lm_iq_grid8(uint64_t g, int j) { return (int)((g >> (8 * j)) & 0xFF); }
LM_HD int lm_iq_grid4(uint32_t g, int j) { return (int)((g >> (8 * j)) & 0xFF); }

/* a grid value v with sign bit j of `signs` applied, as a float: ggml forms
 * db * v * (+-1.f), the sign flip exact */
LM_HD float lm_iq_signed(float db, int v, unsigned signs, int j) {
    const float w = db * (float)v;
    return (signs >> j) & 1 ? -w : w;
}

/* sum over 8 weights of grid value times sign times q8 (IQ2, 8 values per entry) */
LM_HD int32_t lm_iq_dot8(uint64_t grid, unsigned signs, const int8_t *q8) {
    int32_t s = 0;
    for (int j = 0; j < 8; j++) {
        const int p = lm_iq_grid8(grid, j) * q8[j];
        s += (signs >> j) & 1 ? -p : p;
    }
    return s;
}

/* the same over 4 weights of a 32-bit entry with sign bits `first`.. (IQ3) */
LM_HD int32_t lm_iq_dot4(uint32_t grid, unsigned signs, int first, const int8_t *q8) {
    int32_t s = 0;
    for (int j = 0; j < 4; j++) {
        const int p = lm_iq_grid4(grid, j) * q8[j];
        s += (signs >> (first + j)) & 1 ? -p : p;
    }
    return s;
}

/* a block's isum: the sum of its eight sub-block parts lm_<t>_part */
#define LM_IQ_KDOT_PARTS(t)                                                  \
    LM_HD int32_t lm_kdot_##t(const block_##t *x, const block_q8_K *y) {     \
        int32_t s = 0;                                                       \
        for (int ib = 0; ib < QK_K / 32; ib++) s += lm_##t##_part(x, y, ib); \
        return s;                                                            \
    }

/* Scalar reference dot of a lattice type (quants/iq*.c): lm_iq_<t>_d(x) is
 * the block's fp16 scale as a float, lm_kdot_<t>(x, y) its isum; the terms
 * d * y.d * isum are summed in the lanes of lm_kdot_sum_lanes and the sum
 * times the type's factor is the dot. */
#define LM_IQ_DOT_REF(t, factor)                                                     \
    void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *vx, const void *vy) { \
        const block_##t *x = vx;                                                     \
        const block_q8_K *y = vy;                                                    \
        float lanes[LM_KDOT_LANES] = { 0 };                                          \
        for (int64_t i = 0; i < n / QK_K; i++) {                                     \
            const float d = lm_iq_##t##_d(&x[i]) * y[i].d;                           \
            lanes[i % LM_KDOT_LANES] += d * lm_kdot_##t(&x[i], &y[i]);               \
        }                                                                            \
        *s = (factor) * lm_kdot_sum_lanes(lanes);                                    \
    }

/* ----------------------------------------------------- CUDA mat-vec */
/* part ib = 32-weight sub-block ib (8 lanes per block): the parts' isums add
 * exactly across the lanes, the block's term is d * y.d * isum * factor */
#define LMC_IQ_PARTS(t, part_fn, factor)                                                                      \
    LM_HD void lmc_ints_##t(const block_##t *x, const block_q8_K *y, int ib, int32_t *isum, int32_t *imin) {  \
        *isum = part_fn(x, y, ib);                                                                            \
        *imin = 0;                                                                                            \
    }                                                                                                         \
    LM_HD float lmc_term_##t(const block_##t *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) { \
        (void)part, (void)imin;                                                                               \
        return (lm_iq_##t##_d(x) * y->d) * (float)isum * (factor);                                            \
    }

#endif /* LAMINA_IQ_LATTICE_H */
