/* q2_K.h — Q2_K block math, C and CUDA (LM_HD): 256 weights in 16
 * sub-blocks of 16, 2-bit quants, a 4-bit scale and a 4-bit min per
 * sub-block (scales[j] = scale | min << 4) against the f16 d and dmin. */
#ifndef LAMINA_Q2_K_H
#define LAMINA_Q2_K_H

#include "quants/kquant.h"

/* Layout shared by Q2_K and Q3_K: 2-bit fields of qs, 32 bytes per 128
 * weights, shift 2*k selects weights 32k..32k+31 of that 128. */
LM_HD int lm_k_q2bits(const uint8_t *qs, int i) { return (qs[(i / 128) * 32 + i % 32] >> (2 * ((i % 128) / 32))) & 3; }

/* weight i of a block, as ggml's dequantize_row_q2_K forms it */
LM_HD float lm_dequant1_q2_K(const block_q2_K *b, int i) {
    const int j = i / 16;
    const float dl = lm_half_to_f32(b->d) * (b->scales[j] & 0xF);
    const float ml = lm_half_to_f32(b->dmin) * (b->scales[j] >> 4);
    return dl * lm_k_q2bits(b->qs, i) - ml;
}

/* Sub-block j of 16: 2-bit fields at bits 2*((j%8)/2) of qs[32*(j/8) + 16*(j%2) ..] */
LM_HD int32_t lm_kdot_q2_K_sub(const uint8_t *qs, const int8_t *q8, int j) {
    const uint8_t *q = qs + 32 * (j / 8) + 16 * (j % 2);
    const int shift = 2 * ((j % 8) / 2);
    int32_t sum = 0;
    for (int l = 0; l < 16; l++) sum += q8[l] * ((q[l] >> shift) & 3);
    return sum;
}

/* integer dot with a Q8_K block (kquant.h): scale j = low nibble of
 * scales[j], min j = high nibble */
LM_HD void lm_kdot_q2_K(const block_q2_K *x, const block_q8_K *y, int32_t *isum, int32_t *imin) {
    int32_t s = 0, m = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        s += (x->scales[j] & 0xF) * lm_kdot_q2_K_sub(x->qs, y->qs + 16 * j, j);
        m += (x->scales[j] >> 4) * y->bsums[j];
    }
    *isum = s;
    *imin = m;
}

/* CUDA mat-vec: a lane per sub-block */
#define LMC_PARTS_Q2_K 16
#define LMC_INT_REDUCE_Q2_K 1
LM_HD void lmc_ints_q2_K(const block_q2_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    *isum = (x->scales[j] & 0xF) * lm_kdot_q2_K_sub(x->qs, y->qs + 16 * j, j);
    *imin = (x->scales[j] >> 4) * y->bsums[j];
}
LMC_KDOT_TERM_MINS(q2_K)

#endif /* LAMINA_Q2_K_H */
