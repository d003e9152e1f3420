/* q5_K.h — Q5_K block math, C and CUDA (LM_HD): Q4_K's layout (q4_K.h) plus a
 * fifth bit per weight in qh: bit j of qh[l] belongs to weight l of
 * sub-block j. */
#ifndef LAMINA_Q5_K_H
#define LAMINA_Q5_K_H

#include "quants/q4_K.h"

/* weight i of a block, as ggml's dequantize_row_q5_K forms it */
LM_HD float lm_dequant1_q5_K(const block_q5_K *b, int i) {
    const int j = i / 32;
    uint8_t sc, m;
    lm_get_scale_min_k4(j, b->scales, &sc, &m);
    const float dl = lm_half_to_f32(b->d) * sc;
    const float ml = lm_half_to_f32(b->dmin) * m;
    const int q = lm_k_q4bits(b->qs, i) | (((b->qh[i % 32] >> j) & 1) << 4);
    return dl * q - ml;
}

/* Sub-block j: the Q4_K nibble plus 16 where bit j of qh[l] is set */
LM_HD int32_t lm_kdot_q5_K_sub(const block_q5_K *x, const int8_t *q8, int j) {
    const uint8_t *q = x->qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    int32_t sum = 0;
    for (int l = 0; l < 32; l++) sum += q8[l] * (((q[l] >> shift) & 0xF) | (((x->qh[l] >> j) & 1) << 4));
    return sum;
}

/* integer dot with a Q8_K block (kquant.h), mins as in Q4_K */
LM_HD void lm_kdot_q5_K(const block_q5_K *x, const block_q8_K *y, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    int32_t s = 0, m = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        s += lm_kdot_byte(sm, j) * lm_kdot_q5_K_sub(x, y->qs + 32 * j, j);
        m += lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    *isum = s;
    *imin = m;
}

/* CUDA mat-vec: a lane per sub-block */
#define LMC_PARTS_Q5_K 8
#define LMC_INT_REDUCE_Q5_K 1
LM_HD void lmc_ints_q5_K(const block_q5_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    *isum = lm_kdot_byte(sm, j) * lm_kdot_q5_K_sub(x, y->qs + 32 * j, j);
    *imin = lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
}
LMC_KDOT_TERM_MINS(q5_K)

#endif /* LAMINA_Q5_K_H */
