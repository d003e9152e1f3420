/* kquant.h — what the k-quants (Q2_K .. Q6_K, dotted with Q8_K) share, C and
 * CUDA (LM_HD): unpacking the 12-byte scale fields, and how a row's block
 * terms are summed.
 *
 * Each type splits its dot the way ggml's *_generic dots do: integer sums per
 * sub-block, multiplied by the sub-block's integer scale and summed (isum);
 * types with mins (Q2_K, Q4_K, Q5_K) also return imin = sum of min_j times the
 * Q8_K bsums under sub-block j, so the mins never touch the quants. The caller
 * turns them into the block's float term d * isum - dmin * imin, with d and
 * dmin the fp16 scales times y.d, and sums the terms as lm_kdot_sum_lanes says.
 *
 * Sub-block j of a type is a contiguous run of 16 (Q2_K, Q3_K, Q6_K) or 32
 * (Q4_K, Q5_K) weights; the *_sub functions take the q8 values of that run.
 * All integer sums are exact: |isum| <= 2^27 for every type.
 *
 * The dequantizers produce exactly ggml's floats: each weight is
 * (d * sub-block scale) * q [- dmin * sub-block min], every product rounded
 * to float in that order (gguf-py's numpy code rounds the same way), so they
 * must be compiled without FMA contraction.
 */
#ifndef LAMINA_KQUANT_H
#define LAMINA_KQUANT_H

#include "quants/blocks.h"

/* ------------------------------------------------------- scale unpacking */
/* Word-parallel unpacking of the 12-byte scale fields, as ggml does with its
 * kmask constants. Byte k of a word is always bits 8k..8k+7 (the words are
 * assembled from bytes, so this holds on any endianness); "byte j of out" below
 * means byte j % 4 of word j / 4, which is also byte j in memory on the
 * little-endian machines whose SIMD code loads out as a vector. */
LM_HD void lm_kdot_load12(const uint8_t *packed, uint32_t w[3]) {
    for (int k = 0; k < 3; k++)
        w[k] = (uint32_t)packed[4 * k] | (uint32_t)packed[4 * k + 1] << 8 | (uint32_t)packed[4 * k + 2] << 16 |
               (uint32_t)packed[4 * k + 3] << 24;
}

LM_HD int lm_kdot_byte(const uint32_t *w, int j) { return (int)((w[j / 4] >> (8 * (j % 4))) & 0xFF); }

/* ------------------------------------------------------ float summation */
/* A row's per-block float terms are summed in LM_KDOT_LANES partial sums by
 * block index (block i into lane i % LM_KDOT_LANES), then the lanes in order.
 * ggml's generic dots also keep 8 float lanes; this split lets a SIMD kernel
 * add 8 blocks' terms with one vector add and round exactly like the scalar
 * reference. */
#define LM_KDOT_LANES 8

LM_HD float lm_kdot_sum_lanes(const float *lanes) {
    float sum = 0;
    for (int l = 0; l < LM_KDOT_LANES; l++) sum += lanes[l];
    return sum;
}

/* The scalar reference dots (quants/q*_K.c, mirroring ggml's
 * ggml_vec_dot_<t>_q8_K_generic): one term per block, summed in the lanes.
 * Types with mins: lm_kdot_<t>(x, y, &isum, &imin); the others return isum. */
#define LM_KDOT_REF_MINS(t)                                                          \
    void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *vx, const void *vy) { \
        const block_##t *x = vx;                                                     \
        const block_q8_K *y = vy;                                                    \
        float lanes[LM_KDOT_LANES] = { 0 };                                          \
        for (int64_t i = 0; i < n / QK_K; i++) {                                     \
            int32_t isum, imin;                                                      \
            lm_kdot_##t(&x[i], &y[i], &isum, &imin);                                 \
            const float d = lm_half_to_f32(x[i].d) * y[i].d;                         \
            const float dmin = lm_half_to_f32(x[i].dmin) * y[i].d;                   \
            lanes[i % LM_KDOT_LANES] += d * isum - dmin * imin;                      \
        }                                                                            \
        *s = lm_kdot_sum_lanes(lanes);                                               \
    }
#define LM_KDOT_REF(t)                                                               \
    void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *vx, const void *vy) { \
        const block_##t *x = vx;                                                     \
        const block_q8_K *y = vy;                                                    \
        float lanes[LM_KDOT_LANES] = { 0 };                                          \
        for (int64_t i = 0; i < n / QK_K; i++) {                                     \
            const float d = lm_half_to_f32(x[i].d) * y[i].d;                         \
            lanes[i % LM_KDOT_LANES] += d * lm_kdot_##t(&x[i], &y[i]);               \
        }                                                                            \
        *s = lm_kdot_sum_lanes(lanes);                                               \
    }

/* ----------------------------------------------------- CUDA mat-vec */
/* part j = sub-block j (LMC_PARTS_<T> = 16 or 8 lanes per block); the parts'
 * isum/imin, summed exactly across the lanes, are lm_kdot_<t>'s, and the
 * term is the reference's expression above */
#define LMC_KDOT_TERM_MINS(t)                                                                                 \
    LM_HD float lmc_term_##t(const block_##t *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) { \
        (void)part;                                                                                           \
        const float d = lm_half_to_f32(x->d) * y->d;                                                          \
        const float dmin = lm_half_to_f32(x->dmin) * y->d;                                                    \
        return d * isum - dmin * imin;                                                                        \
    }
#define LMC_KDOT_TERM(t)                                                                                      \
    LM_HD float lmc_term_##t(const block_##t *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) { \
        (void)part, (void)imin;                                                                               \
        const float d = lm_half_to_f32(x->d) * y->d;                                                          \
        return d * isum;                                                                                      \
    }

#endif /* LAMINA_KQUANT_H */
