/* q6_K.h — Q6_K block math, C and CUDA (LM_HD): 256 weights in 16
 * sub-blocks of 16, 6-bit quants (4 low bits in ql, 2 high bits in qh) and
 * int8 sub-block scales against the f16 d. */
#ifndef LAMINA_Q6_K_H
#define LAMINA_Q6_K_H

#include "quants/kquant.h"

/* Q6_K: per 128 weights, 64 bytes of ql (low nibbles for weights 0..63, high
 * nibbles for 64..127) and 32 bytes of qh (2 bits per 32-weight quarter).
 * Returns the signed level (-32..31). */
LM_HD int lm_q6_K_level(const uint8_t *ql, const uint8_t *qh, int i) {
    const int h = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
    const int lo = (ql[64 * h + 32 * (quarter % 2) + l] >> (4 * (quarter / 2))) & 0xF;
    const int hi = (qh[32 * h + l] >> (2 * quarter)) & 3;
    return (lo | (hi << 4)) - 32;
}

/* weight i of a block, as ggml's dequantize_row_q6_K forms it */
LM_HD float lm_dequant1_q6_K(const block_q6_K *b, int i) {
    const float dl = lm_half_to_f32(b->d) * b->scales[i / 16];
    return dl * lm_q6_K_level(b->ql, b->qh, i);
}

/* Sub-block j of 16, in 128-weight half c = j/8 and quarter k = (j%8)/2: low
 * 4 bits are the low (k < 2) or high (k >= 2) nibbles of
 * ql[64c + 32*(k%2) + 16*(j%2) ..], top 2 bits at bits 2k of
 * qh[32c + 16*(j%2) ..]; the value is that 6-bit number minus 32. */
LM_HD int32_t lm_kdot_q6_K_sub(const block_q6_K *x, const int8_t *q8, int j) {
    const int c = j / 8, k = (j % 8) / 2, half = 16 * (j % 2);
    const uint8_t *ql = x->ql + 64 * c + 32 * (k % 2) + half;
    const uint8_t *qh = x->qh + 32 * c + half;
    const int lshift = 4 * (k / 2), hshift = 2 * k;
    int32_t sum = 0;
    for (int l = 0; l < 16; l++) sum += q8[l] * ((((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4)) - 32);
    return sum;
}

/* integer dot with a Q8_K block (kquant.h) */
LM_HD int32_t lm_kdot_q6_K(const block_q6_K *x, const block_q8_K *y) {
    int32_t s = 0;
    for (int j = 0; j < QK_K / 16; j++) s += x->scales[j] * lm_kdot_q6_K_sub(x, y->qs + 16 * j, j);
    return s;
}

/* CUDA mat-vec: a lane per sub-block */
#define LMC_PARTS_Q6_K 16
#define LMC_INT_REDUCE_Q6_K 1
LM_HD void lmc_ints_q6_K(const block_q6_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    *isum = x->scales[j] * lm_kdot_q6_K_sub(x, y->qs + 16 * j, j);
    *imin = 0;
}
LMC_KDOT_TERM(q6_K)

#endif /* LAMINA_Q6_K_H */
