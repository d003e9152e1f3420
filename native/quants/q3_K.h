/* q3_K.h — Q3_K block math, C and CUDA (LM_HD): 256 weights in 16
 * sub-blocks of 16, 3-bit quants (the 2 low bits laid out as Q2_K's, the high
 * bit in hmask) and signed 6-bit sub-block scales against the f16 d. */
#ifndef LAMINA_Q3_K_H
#define LAMINA_Q3_K_H

#include "quants/q2_K.h"

/* Q3_K's 16 six-bit scales, biased by 32, live in 12 bytes: the low nibbles
 * of sub-blocks 0..7 and 8..15 share bytes 0..7, the top 2 bits of sub-block
 * j sit at bits 2*(j/4) of byte 8 + j%4. Returns the signed scale (-32..31). */
LM_HD int lm_q3_K_scale(int j, const uint8_t *scales) {
    const int lo = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
    const int hi = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* weight i of a block, as ggml's dequantize_row_q3_K forms it: a clear hmask
 * bit means the 2-bit value is offset by -4 */
LM_HD float lm_dequant1_q3_K(const block_q3_K *b, int i) {
    const float dl = lm_half_to_f32(b->d) * lm_q3_K_scale(i / 16, b->scales);
    const int high = (b->hmask[i % 32] >> (i / 32)) & 1;
    return dl * (lm_k_q2bits(b->qs, i) - (high ? 0 : 4));
}

/* The same scales unpacked word-parallel (kquant.h). Low nibbles: sub-blocks
 * 0..7 in the low halves of bytes 0..7, 8..15 in their high halves; top 2 bits
 * of sub-block j at bits 2*(j/4) of byte 8 + j%4. out: byte j of out = scale j + 32. */
LM_HD void lm_kdot_q3_K_scales(const uint8_t *packed, uint32_t out[4]) {
    uint32_t w[3];
    lm_kdot_load12(packed, w);
    out[0] = (w[0] & 0x0f0f0f0fu) | ((w[2] & 0x03030303u) << 4);
    out[1] = (w[1] & 0x0f0f0f0fu) | (((w[2] >> 2) & 0x03030303u) << 4);
    out[2] = ((w[0] >> 4) & 0x0f0f0f0fu) | (((w[2] >> 4) & 0x03030303u) << 4);
    out[3] = ((w[1] >> 4) & 0x0f0f0f0fu) | (((w[2] >> 6) & 0x03030303u) << 4);
}

/* Sub-block j of 16: the 2 low bits as in Q2_K; a clear bit (4*(j/8) + (j%8)/2)
 * of hmask[16*(j%2) + l] means the value is offset by -4 (range -4..3). */
LM_HD int32_t lm_kdot_q3_K_sub(const block_q3_K *x, const int8_t *q8, int j) {
    const uint8_t *q = x->qs + 32 * (j / 8) + 16 * (j % 2);
    const uint8_t *h = x->hmask + 16 * (j % 2);
    const int shift = 2 * ((j % 8) / 2);
    const uint8_t bit = (uint8_t)(1u << (4 * (j / 8) + (j % 8) / 2));
    int32_t sum = 0;
    for (int l = 0; l < 16; l++) sum += q8[l] * (((q[l] >> shift) & 3) - (h[l] & bit ? 0 : 4));
    return sum;
}

/* integer dot with a Q8_K block (kquant.h) */
LM_HD int32_t lm_kdot_q3_K(const block_q3_K *x, const block_q8_K *y) {
    uint32_t sc[4];
    lm_kdot_q3_K_scales(x->scales, sc);
    int32_t s = 0;
    for (int j = 0; j < QK_K / 16; j++) s += (lm_kdot_byte(sc, j) - 32) * lm_kdot_q3_K_sub(x, y->qs + 16 * j, j);
    return s;
}

/* CUDA mat-vec: a lane per sub-block */
#define LMC_PARTS_Q3_K 16
#define LMC_INT_REDUCE_Q3_K 1
LM_HD void lmc_ints_q3_K(const block_q3_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sc[4];
    lm_kdot_q3_K_scales(x->scales, sc);
    *isum = (lm_kdot_byte(sc, j) - 32) * lm_kdot_q3_K_sub(x, y->qs + 16 * j, j);
    *imin = 0;
}
LMC_KDOT_TERM(q3_K)

#endif /* LAMINA_Q3_K_H */
