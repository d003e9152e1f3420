/* block_dot_k.h — integer dot of one k-quant super-block with one Q8_K block,
 * written once for the scalar reference and the CUDA backend.
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
 */
#ifndef LAMINA_BLOCK_DOT_K_H
#define LAMINA_BLOCK_DOT_K_H

#include "blocks.h"

/* ------------------------------------------------------- scale unpacking */
/* Word-parallel unpacking of the 12-byte scale fields, as ggml does with its
 * kmask constants. Byte k of a word is always bits 8k..8k+7 (the words are
 * assembled from bytes, so this holds on any endianness); "byte j of out" below
 * means byte j % 4 of word j / 4, which is also byte j in memory on the
 * little-endian machines whose SIMD code loads out as a vector. */
LM_HD void lm_kdot_load12(const uint8_t *packed, uint32_t w[3]) {
    for (int k = 0; k < 3; k++)
        w[k] = (uint32_t)packed[4 * k] | (uint32_t)packed[4 * k + 1] << 8 |
               (uint32_t)packed[4 * k + 2] << 16 | (uint32_t)packed[4 * k + 3] << 24;
}

/* Q3_K: 16 six-bit scales biased by 32. Low nibbles: sub-blocks 0..7 in the
 * low halves of bytes 0..7, 8..15 in their high halves; top 2 bits of
 * sub-block j at bits 2*(j/4) of byte 8 + j%4. out: byte j of out = scale j + 32. */
LM_HD void lm_kdot_q3_K_scales(const uint8_t *packed, uint32_t out[4]) {
    uint32_t w[3];
    lm_kdot_load12(packed, w);
    out[0] = (w[0] & 0x0f0f0f0fu) | ((w[2] & 0x03030303u) << 4);
    out[1] = (w[1] & 0x0f0f0f0fu) | (((w[2] >> 2) & 0x03030303u) << 4);
    out[2] = ((w[0] >> 4) & 0x0f0f0f0fu) | (((w[2] >> 4) & 0x03030303u) << 4);
    out[3] = ((w[1] >> 4) & 0x0f0f0f0fu) | (((w[2] >> 6) & 0x03030303u) << 4);
}

/* Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins (see lm_get_scale_min_k4).
 * out bytes 0..7 = scales, 8..15 = mins: the order the SIMD dots load. */
LM_HD void lm_kdot_q4_K_scales(const uint8_t *packed, uint32_t out[4]) {
    uint32_t w[3];
    lm_kdot_load12(packed, w);
    out[0] = w[0] & 0x3f3f3f3fu;
    out[1] = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
    out[2] = w[1] & 0x3f3f3f3fu;
    out[3] = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
}

LM_HD int lm_kdot_byte(const uint32_t *w, int j) { return (int)((w[j / 4] >> (8 * (j % 4))) & 0xFF); }

/* --------------------------------------------------------------- Q2_K */
/* Sub-block j of 16: 2-bit fields at bits 2*((j%8)/2) of qs[32*(j/8) + 16*(j%2) ..] */
LM_HD int32_t lm_kdot_q2_K_sub(const uint8_t *qs, const int8_t *q8, int j) {
    const uint8_t *q = qs + 32 * (j / 8) + 16 * (j % 2);
    const int shift = 2 * ((j % 8) / 2);
    int32_t sum = 0;
    for (int l = 0; l < 16; l++) sum += q8[l] * ((q[l] >> shift) & 3);
    return sum;
}

/* scale j = low nibble of scales[j], min j = high nibble */
LM_HD void lm_kdot_q2_K(const block_q2_K *x, const block_q8_K *y, int32_t *isum, int32_t *imin) {
    int32_t s = 0, m = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        s += (x->scales[j] & 0xF) * lm_kdot_q2_K_sub(x->qs, y->qs + 16 * j, j);
        m += (x->scales[j] >> 4) * y->bsums[j];
    }
    *isum = s;
    *imin = m;
}

/* --------------------------------------------------------------- Q3_K */
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

LM_HD int32_t lm_kdot_q3_K(const block_q3_K *x, const block_q8_K *y) {
    uint32_t sc[4];
    lm_kdot_q3_K_scales(x->scales, sc);
    int32_t s = 0;
    for (int j = 0; j < QK_K / 16; j++) s += (lm_kdot_byte(sc, j) - 32) * lm_kdot_q3_K_sub(x, y->qs + 16 * j, j);
    return s;
}

/* ------------------------------------------------------------ Q4_K/Q5_K */
/* Sub-block j of 32: low (j even) or high (j odd) nibbles of qs[32*(j/2) ..] */
LM_HD int32_t lm_kdot_q4_K_sub(const uint8_t *qs, const int8_t *q8, int j) {
    const uint8_t *q = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    int32_t sum = 0;
    for (int l = 0; l < 32; l++) sum += q8[l] * ((q[l] >> shift) & 0xF);
    return sum;
}

/* mins pair up with the two 16-runs of bsums under each 32-weight sub-block */
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

/* Q5_K sub-block j: the Q4_K nibble plus 16 where bit j of qh[l] is set */
LM_HD int32_t lm_kdot_q5_K_sub(const block_q5_K *x, const int8_t *q8, int j) {
    const uint8_t *q = x->qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    int32_t sum = 0;
    for (int l = 0; l < 32; l++) sum += q8[l] * (((q[l] >> shift) & 0xF) | (((x->qh[l] >> j) & 1) << 4));
    return sum;
}

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

/* --------------------------------------------------------------- Q6_K */
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
    for (int l = 0; l < 16; l++)
        sum += q8[l] * ((((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4)) - 32);
    return sum;
}

LM_HD int32_t lm_kdot_q6_K(const block_q6_K *x, const block_q8_K *y) {
    int32_t s = 0;
    for (int j = 0; j < QK_K / 16; j++) s += x->scales[j] * lm_kdot_q6_K_sub(x, y->qs + 16 * j, j);
    return s;
}

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

#endif /* LAMINA_BLOCK_DOT_K_H */
