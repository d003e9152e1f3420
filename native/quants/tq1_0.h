/* tq1_0.h — TQ1_0 block math, C and CUDA (LM_HD): 256 ternary weights
 * (BitNet b1.58) packed five to a byte, times the f16 d, dotted with Q8_K
 * activations.
 *
 * A byte holds up to five trits t0..t4 (each trit + 1, 0..2) as the base-3
 * number v = t0 t1 t2 t3 t4, stored as ceil(v * 256 / 243): a fixed-point
 * fraction v / 243 of 256. Multiplying the byte by 3^n (mod 256) shifts the
 * first n trits out of the fraction, and the top trit is then (q * 3) >> 8;
 * no division is needed to unpack. qs[0..31] hold weights 32n + m (trit n of
 * byte m), qs[32..47] weights 160 + 16n + m, qh[0..3] (four trits, the fifth
 * position zero) weights 240 + 4n + j. */
#ifndef LAMINA_TQ1_0_H
#define LAMINA_TQ1_0_H

#include "quants/kquant.h"

LM_HD int lm_pow3(int n) {
    int p = 1;
    for (int k = 0; k < n; k++) p *= 3;
    return p;
}

/* trit n of a packed byte plus one: 0, 1 or 2 */
LM_HD int lm_tq1_0_trit(uint8_t byte, int n) {
    const uint8_t q = (uint8_t)(byte * lm_pow3(n));
    return (q * 3) >> 8;
}

/* weight i of a block, as ggml's dequantize_row_tq1_0 forms it: (trit - 1) * d */
LM_HD float lm_dequant1_tq1_0(const block_tq1_0 *b, int i) {
    int t;
    if (i < 160)
        t = lm_tq1_0_trit(b->qs[i % 32], i / 32);
    else if (i < 240)
        t = lm_tq1_0_trit(b->qs[32 + (i - 160) % 16], (i - 160) / 16);
    else
        t = lm_tq1_0_trit(b->qh[(i - 240) % 4], (i - 240) / 4);
    return (float)(t - 1) * lm_half_to_f32(b->d);
}

/* Quarter p (0..3) of a block's dot with its Q8_K values, 64 weights: bytes
 * qs[8p .. 8p+7], qs[32+4p .. 32+4p+3] and qh[p] with all their trits. The
 * four quarters tile the block, so the CPU dot is their sum and a CUDA warp
 * gives each a lane. Exact. */
LM_HD int32_t lm_kdot_tq1_0_part(const block_tq1_0 *x, const int8_t *q8, int p) {
    int32_t sum = 0;
    for (int n = 0; n < 5; n++) {
        for (int m = 8 * p; m < 8 * p + 8; m++) sum += (lm_tq1_0_trit(x->qs[m], n) - 1) * q8[32 * n + m];
        for (int m = 4 * p; m < 4 * p + 4; m++) sum += (lm_tq1_0_trit(x->qs[32 + m], n) - 1) * q8[160 + 16 * n + m];
    }
    for (int n = 0; n < 4; n++) sum += (lm_tq1_0_trit(x->qh[p], n) - 1) * q8[240 + 4 * n + p];
    return sum;
}

/* integer dot with a Q8_K block (kquant.h): the block's term is d * isum */
LM_HD int32_t lm_kdot_tq1_0(const block_tq1_0 *x, const block_q8_K *y) {
    int32_t s = 0;
    for (int p = 0; p < 4; p++) s += lm_kdot_tq1_0_part(x, y->qs, p);
    return s;
}

/* CUDA mat-vec: a lane per quarter */
#define LMC_PARTS_TQ1_0 4
#define LMC_INT_REDUCE_TQ1_0 1
LM_HD void lmc_ints_tq1_0(const block_tq1_0 *x, const block_q8_K *y, int p, int32_t *isum, int32_t *imin) {
    *isum = lm_kdot_tq1_0_part(x, y->qs, p);
    *imin = 0;
}
LMC_KDOT_TERM(tq1_0)

#endif /* LAMINA_TQ1_0_H */
