/* q5_0.h — Q5_0 block math, C and CUDA (LM_HD): 32 weights of 5 bits (a
 * nibble in qs, the fifth bit in qh), each (q - 16) * d, dotted with Q8_0. */
#ifndef LAMINA_Q5_0_H
#define LAMINA_Q5_0_H

#include "quants/legacy.h"

/* weight i of a block, as ggml's dequantize_row_q5_0 forms it */
LM_HD float lm_dequant1_q5_0(const block_q5_0 *b, int i) {
    return ((lm_nibble32(b->qs, i) | lm_q5_high_bit(lm_q5_load_qh(b->qh), i)) - 16) * lm_half_to_f32(b->d);
}

LM_HD int lm_idot_q5_0_q8_0(const block_q5_0 *x, const block_q8_0 *y) {
    const uint32_t qh = lm_q5_load_qh(x->qh);
    int s = 0;
    for (int j = 0; j < QK5_0 / 2; j++) {
        const int q0 = ((x->qs[j] & 0x0F) | lm_q5_high_bit(qh, j)) - 16;
        const int q1 = ((x->qs[j] >> 4) | lm_q5_high_bit(qh, j + 16)) - 16;
        s += q0 * y->qs[j] + q1 * y->qs[j + QK5_0 / 2];
    }
    return s;
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (q5_0.c) */
#define LMC_PARTS_Q5_0 1
#define LMC_INT_REDUCE_Q5_0 1
LMC_ONE_PART_INTS(q5_0, block_q5_0, block_q8_0, lm_idot_q5_0_q8_0)
LM_HD float lmc_term_q5_0(const block_q5_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum;
}

#endif /* LAMINA_Q5_0_H */
