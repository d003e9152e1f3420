/* q4_K.h — Q4_K block math, C and CUDA (LM_HD): 256 weights in 8 sub-blocks
 * of 32, 4-bit quants, a 6-bit scale and a 6-bit min per sub-block (packed in
 * 12 bytes) against the f16 d and dmin. Q5_K (q5_K.h) shares its scales and
 * nibbles. */
#ifndef LAMINA_Q4_K_H
#define LAMINA_Q4_K_H

#include "quants/kquant.h"

/* The 12-byte scales field of Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins.
 * Sub-blocks 0..3 keep their 6 bits in bytes 0..7; 4..7 keep the low nibble in
 * bytes 8..11 and their top 2 bits in the spare top bits of bytes 0..7. */
LM_HD void lm_get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

/* Q4_K/Q5_K: 8 sub-blocks of 32; sub-block j's 4 low bits are the low
 * (j even) or high (j odd) nibbles of qs[32*(j/2) ..]. */
LM_HD int lm_k_q4bits(const uint8_t *qs, int i) {
    const int j = i / 32;
    return (qs[32 * (j / 2) + i % 32] >> (4 * (j % 2))) & 0xF;
}

/* weight i of a block, as ggml's dequantize_row_q4_K forms it */
LM_HD float lm_dequant1_q4_K(const block_q4_K *b, int i) {
    uint8_t sc, m;
    lm_get_scale_min_k4(i / 32, b->scales, &sc, &m);
    const float dl = lm_half_to_f32(b->d) * sc;
    const float ml = lm_half_to_f32(b->dmin) * m;
    return dl * lm_k_q4bits(b->qs, i) - ml;
}

/* The scales and mins unpacked word-parallel (kquant.h; the values of
 * lm_get_scale_min_k4). out bytes 0..7 = scales, 8..15 = mins: the order the
 * SIMD dots load. */
LM_HD void lm_kdot_q4_K_scales(const uint8_t *packed, uint32_t out[4]) {
    uint32_t w[3];
    lm_kdot_load12(packed, w);
    out[0] = w[0] & 0x3f3f3f3fu;
    out[1] = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
    out[2] = w[1] & 0x3f3f3f3fu;
    out[3] = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
}

/* Sub-block j of 32: low (j even) or high (j odd) nibbles of qs[32*(j/2) ..] */
LM_HD int32_t lm_kdot_q4_K_sub(const uint8_t *qs, const int8_t *q8, int j) {
    const uint8_t *q = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    int32_t sum = 0;
    for (int l = 0; l < 32; l++) sum += q8[l] * ((q[l] >> shift) & 0xF);
    return sum;
}

/* integer dot with a Q8_K block (kquant.h): the mins pair up with the two
 * 16-runs of bsums under each 32-weight sub-block */
LM_HD void lm_kdot_q4_K(const block_q4_K *x, const block_q8_K *y, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    int32_t s = 0, m = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        s += lm_kdot_byte(sm, j) * lm_kdot_q4_K_sub(x->qs, y->qs + 32 * j, j);
        m += lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    *isum = s;
    *imin = m;
}

/* CUDA mat-vec: a lane per sub-block */
#define LMC_PARTS_Q4_K 8
#define LMC_INT_REDUCE_Q4_K 1
LM_HD void lmc_ints_q4_K(const block_q4_K *x, const block_q8_K *y, int j, int32_t *isum, int32_t *imin) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    *isum = lm_kdot_byte(sm, j) * lm_kdot_q4_K_sub(x->qs, y->qs + 32 * j, j);
    *imin = lm_kdot_byte(sm, 8 + j) * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
}
LMC_KDOT_TERM_MINS(q4_K)

#endif /* LAMINA_Q4_K_H */
