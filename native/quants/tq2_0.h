/* tq2_0.h — TQ2_0 block math, C and CUDA (LM_HD): 256 ternary weights
 * (BitNet b1.58) stored as trit + 1 in 2-bit fields, times the f16 d, dotted
 * with Q8_K activations. */
#ifndef LAMINA_TQ2_0_H
#define LAMINA_TQ2_0_H

#include "quants/kquant.h"
#include "quants/q2_K.h"

/* The 2-bit fields are laid out as Q2_K's (lm_k_q2bits): byte l of each
 * 32-byte half holds weights l, l+32, l+64, l+96 of that half's 128. */

/* weight i of a block, as ggml's dequantize_row_tq2_0 forms it: (q - 1) * d */
LM_HD float lm_dequant1_tq2_0(const block_tq2_0 *b, int i) {
    return (float)(lm_k_q2bits(b->qs, i) - 1) * lm_half_to_f32(b->d);
}

/* Weights 32j..32j+31 (j = 0..7) against their 32 Q8_K values: the 2-bit
 * fields at bits 2*(j%4) of qs[32*(j/4) ..], each minus 1. Exact. */
LM_HD int32_t lm_kdot_tq2_0_part(const block_tq2_0 *x, const int8_t *q8, int j) {
    const uint8_t *q = x->qs + 32 * (j / 4);
    const int shift = 2 * (j % 4);
    int32_t sum = 0;
    for (int m = 0; m < 32; m++) sum += (((q[m] >> shift) & 3) - 1) * q8[m];
    return sum;
}

/* integer dot with a Q8_K block (kquant.h): no sub-block scales, so the
 * block's term is d * isum */
LM_HD int32_t lm_kdot_tq2_0(const block_tq2_0 *x, const block_q8_K *y) {
    int32_t s = 0;
    for (int j = 0; j < QK_K / 32; j++) s += lm_kdot_tq2_0_part(x, y->qs + 32 * j, j);
    return s;
}

/* CUDA mat-vec: a lane per 32 weights */
#define LMC_PARTS_TQ2_0 8
#define LMC_INT_REDUCE_TQ2_0 1
LM_HD void lmc_ints_tq2_0(const block_tq2_0 *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    *isum = lm_kdot_tq2_0_part(x, y->qs + 32 * j, j);
    *imin = 0;
}
LMC_KDOT_TERM(tq2_0)

#endif /* LAMINA_TQ2_0_H */
