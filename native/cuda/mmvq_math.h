/* mmvq_math.h — how the CUDA backend splits the per-block math of
 * block_math_legacy.h / block_dot_k.h / block_math_k.h across the lanes of a
 * warp. Plain C + LM_HD: nvcc compiles it into the kernels, and the CPU tests
 * (tests/native/test_block_math_shared.py) compile the very same functions for the
 * host and check them against the scalar reference dots and dequantizers.
 *
 * Mat-vec (ggml's mmvq idea): a weight block is cut into LMC_PARTS_<T> parts,
 * one per lane. lmc_ints_<t> gives a part's integer sums, always through the
 * shared per-sub-block functions. For the k-quants the parts' integers are
 * added across lanes (exactly: they are integers) into the block's isum/imin,
 * which lm_kdot_<t> also returns, and lmc_term_<t> turns those into the float
 * term with the CPU reference's expression. IQ4_XS has one float term per
 * 32-weight sub-block in the reference, so there each part is its own term
 * (LMC_INT_REDUCE_IQ4_XS = 0).
 *
 * Dequantization for the prefill path (tiles of weights to f16): one weight
 * at a time, lmc_dequant1_<t>(block, i), built from the same helpers with the
 * arithmetic of lm_dequant_block_<t>, so every value is bit-identical to the
 * CPU dequantizer (compile without FMA contraction: -ffp-contract=off, nvcc
 * -fmad=false).
 */
#ifndef LAMINA_CUDA_MMVQ_MATH_H
#define LAMINA_CUDA_MMVQ_MATH_H

#include <math.h>

#include "block_dot_k.h"
#include "block_math_k.h"
#include "block_math_legacy.h"
#include "blocks.h"

/* lanes per weight block */
#define LMC_PARTS_Q4_0 1
#define LMC_PARTS_Q4_1 1
#define LMC_PARTS_Q5_0 1
#define LMC_PARTS_Q5_1 1
#define LMC_PARTS_Q8_0 1
#define LMC_PARTS_IQ4_NL 1
#define LMC_PARTS_Q2_K 16
#define LMC_PARTS_Q3_K 16
#define LMC_PARTS_Q4_K 8
#define LMC_PARTS_Q5_K 8
#define LMC_PARTS_Q6_K 16
#define LMC_PARTS_IQ4_XS 8

/* 1: parts' integers are summed before the float term; 0: a term per part */
#define LMC_INT_REDUCE_IQ4_XS 0

/* ------------------------------------------------------ legacy, IQ4_NL */
/* one part per block: the integer dot is the shared lm_idot_*, the term is
 * the expression of the scalar reference (legacy_dequant_dot.c, iq4_quants.c) */

LM_HD void lmc_ints_q4_0(const block_q4_0 *x, const block_q8_0 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_q4_0_q8_0(x, y);
    *imin = 0;
}
LM_HD float lmc_term_q4_0(const block_q4_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return isum * lm_half_to_f32(x->d) * lm_half_to_f32(y->d);
}

LM_HD void lmc_ints_q4_1(const block_q4_1 *x, const block_q8_1 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_q4_1_q8_1(x, y);
    *imin = 0;
}
LM_HD float lmc_term_q4_1(const block_q4_1 *x, const block_q8_1 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum + lm_half_to_f32(x->m) * lm_half_to_f32(y->s);
}

LM_HD void lmc_ints_q5_0(const block_q5_0 *x, const block_q8_0 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_q5_0_q8_0(x, y);
    *imin = 0;
}
LM_HD float lmc_term_q5_0(const block_q5_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum;
}

LM_HD void lmc_ints_q5_1(const block_q5_1 *x, const block_q8_1 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_q5_1_q8_1(x, y);
    *imin = 0;
}
LM_HD float lmc_term_q5_1(const block_q5_1 *x, const block_q8_1 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum + lm_half_to_f32(x->m) * lm_half_to_f32(y->s);
}

LM_HD void lmc_ints_q8_0(const block_q8_0 *x, const block_q8_0 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_q8_0_q8_0(x, y);
    *imin = 0;
}
LM_HD float lmc_term_q8_0(const block_q8_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return isum * (lm_half_to_f32(x->d) * lm_half_to_f32(y->d));
}

LM_HD void lmc_ints_iq4_nl(const block_iq4_nl *x, const block_q8_0 *y, int part, int32_t *isum, int32_t *imin) {
    (void)part;
    *isum = lm_idot_iq4_nl_q8_0(x, y);
    *imin = 0;
}
LM_HD float lmc_term_iq4_nl(const block_iq4_nl *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(y->d) * lm_half_to_f32(x->d)) * isum;
}

/* ------------------------------------------------------------- k-quants */
/* part j = sub-block j; isum/imin summed over j equal lm_kdot_<t>'s */

LM_HD void lmc_ints_q2_K(const block_q2_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    *isum = (x->scales[j] & 0xF) * lm_kdot_q2_K_sub(x->qs, y->qs + 16 * j, j);
    *imin = (x->scales[j] >> 4) * y->bsums[j];
}
LM_HD float lmc_term_q2_K(const block_q2_K *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) {
    (void)part;
    const float d = lm_half_to_f32(x->d) * y->d;
    const float dmin = lm_half_to_f32(x->dmin) * y->d;
    return d * isum - dmin * imin;
}

LM_HD void lmc_ints_q3_K(const block_q3_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sc[4];
    lm_kdot_q3_K_scales(x->scales, sc);
    *isum = (lm_kdot_byte(sc, j) - 32) * lm_kdot_q3_K_sub(x, y->qs + 16 * j, j);
    *imin = 0;
}
LM_HD float lmc_term_q3_K(const block_q3_K *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    const float d = lm_half_to_f32(x->d) * y->d;
    return d * isum;
}

LM_HD void lmc_ints_q4_K(const block_q4_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    *isum = lm_kdot_byte(sm, j) * lm_kdot_q4_K_sub(x->qs, y->qs + 32 * j, j);
    *imin = lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
}
LM_HD float lmc_term_q4_K(const block_q4_K *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) {
    (void)part;
    const float d = lm_half_to_f32(x->d) * y->d;
    const float dmin = lm_half_to_f32(x->dmin) * y->d;
    return d * isum - dmin * imin;
}

LM_HD void lmc_ints_q5_K(const block_q5_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    *isum = lm_kdot_byte(sm, j) * lm_kdot_q5_K_sub(x, y->qs + 32 * j, j);
    *imin = lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
}
LM_HD float lmc_term_q5_K(const block_q5_K *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) {
    (void)part;
    const float d = lm_half_to_f32(x->d) * y->d;
    const float dmin = lm_half_to_f32(x->dmin) * y->d;
    return d * isum - dmin * imin;
}

LM_HD void lmc_ints_q6_K(const block_q6_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    *isum = x->scales[j] * lm_kdot_q6_K_sub(x, y->qs + 16 * j, j);
    *imin = 0;
}
LM_HD float lmc_term_q6_K(const block_q6_K *x, const block_q8_K *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    const float d = lm_half_to_f32(x->d) * y->d;
    return d * isum;
}

/* IQ4_XS: part ib = 32-weight sub-block ib, a float term of its own, as in
 * the reference's (d4d8 * scale) * idot */
LM_HD void lmc_ints_iq4_xs(const block_iq4_xs *x, const block_q8_K *y, int ib, int32_t *isum, int32_t *imin) {
    *isum = lm_idot_iq4_xs_sub_q8_K(x, y, ib);
    *imin = 0;
}
LM_HD float lmc_term_iq4_xs(const block_iq4_xs *x, const block_q8_K *y, int ib, int32_t isum, int32_t imin) {
    (void)imin;
    const float d4d8 = lm_half_to_f32(x->d) * y->d;
    return (d4d8 * lm_iq4_xs_scale(x, ib)) * isum;
}

/* ------------------------------------------------- one weight at a time */
/* Byte j of a 32-weight legacy block holds weight j (low nibble) and j+16. */
LM_HD int lmc_nibble32(const uint8_t *qs, int i) { return i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4; }

LM_HD float lmc_dequant1_q4_0(const block_q4_0 *b, int i) { return (lmc_nibble32(b->qs, i) - 8) * lm_half_to_f32(b->d); }
LM_HD float lmc_dequant1_q4_1(const block_q4_1 *b, int i) {
    return lmc_nibble32(b->qs, i) * lm_half_to_f32(b->d) + lm_half_to_f32(b->m);
}
LM_HD float lmc_dequant1_q5_0(const block_q5_0 *b, int i) {
    return ((lmc_nibble32(b->qs, i) | lm_q5_high_bit(lm_q5_load_qh(b->qh), i)) - 16) * lm_half_to_f32(b->d);
}
LM_HD float lmc_dequant1_q5_1(const block_q5_1 *b, int i) {
    return (lmc_nibble32(b->qs, i) | lm_q5_high_bit(lm_q5_load_qh(b->qh), i)) * lm_half_to_f32(b->d) +
           lm_half_to_f32(b->m);
}
LM_HD float lmc_dequant1_q8_0(const block_q8_0 *b, int i) { return b->qs[i] * lm_half_to_f32(b->d); }
LM_HD float lmc_dequant1_iq4_nl(const block_iq4_nl *b, int i) {
    return lm_half_to_f32(b->d) * lm_kvalues_iq4nl[lmc_nibble32(b->qs, i)];
}
LM_HD float lmc_dequant1_iq4_xs(const block_iq4_xs *b, int i) {
    const int ib = i / 32;
    const float d = lm_half_to_f32(b->d) * lm_iq4_xs_scale(b, ib);
    return d * lm_kvalues_iq4nl[lmc_nibble32(b->qs + 16 * ib, i % 32)];
}

LM_HD float lmc_dequant1_q2_K(const block_q2_K *b, int i) {
    const int j = i / 16;
    const float dl = lm_half_to_f32(b->d) * (b->scales[j] & 0xF);
    const float ml = lm_half_to_f32(b->dmin) * (b->scales[j] >> 4);
    return dl * lm_k_q2bits(b->qs, i) - ml;
}
LM_HD float lmc_dequant1_q3_K(const block_q3_K *b, int i) {
    const float dl = lm_half_to_f32(b->d) * lm_q3_K_scale(i / 16, b->scales);
    const int high = (b->hmask[i % 32] >> (i / 32)) & 1;
    return dl * (lm_k_q2bits(b->qs, i) - (high ? 0 : 4));
}
LM_HD float lmc_dequant1_q4_K(const block_q4_K *b, int i) {
    uint8_t sc, m;
    lm_get_scale_min_k4(i / 32, b->scales, &sc, &m);
    const float dl = lm_half_to_f32(b->d) * sc;
    const float ml = lm_half_to_f32(b->dmin) * m;
    return dl * lm_k_q4bits(b->qs, i) - ml;
}
LM_HD float lmc_dequant1_q5_K(const block_q5_K *b, int i) {
    const int j = i / 32;
    uint8_t sc, m;
    lm_get_scale_min_k4(j, b->scales, &sc, &m);
    const float dl = lm_half_to_f32(b->d) * sc;
    const float ml = lm_half_to_f32(b->dmin) * m;
    const int q = lm_k_q4bits(b->qs, i) | (((b->qh[i % 32] >> j) & 1) << 4);
    return dl * q - ml;
}
LM_HD float lmc_dequant1_q6_K(const block_q6_K *b, int i) {
    const float dl = lm_half_to_f32(b->d) * b->scales[i / 16];
    return dl * lm_q6_K_level(b->ql, b->qh, i);
}

/* ------------------------------------------------ activation quantizers */
/* The pieces of ggml-cpu's quantize_row_q8_{0,1,K} that are not reductions
 * (the reductions, max |x| and sums, are exact in any order). Q8_0/Q8_1:
 * lm_q8_act_* of block_math_legacy.h, shared with the CPU. */

/* Q8_1's s: d times the sum of the rounded quants */
LM_HD lm_half lmc_q8_1_s(int sum, float d) { return lm_f32_to_half(sum * d); }

/* Q8_K: max is the signed value of the first largest |x| (nonzero) */
LM_HD float lmc_q8_K_iscale(float max) { return -127.f / max; }
LM_HD int8_t lmc_q8_K_quant(float x, float iscale) {
    const int v = lm_nearest_int(iscale * x);
    return (int8_t)(v < 127 ? v : 127);
}
LM_HD float lmc_q8_K_d(float iscale) { return 1 / iscale; }

#endif /* LAMINA_CUDA_MMVQ_MATH_H */
