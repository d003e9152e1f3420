/* q5_1.h — Q5_1 block math, C and CUDA (LM_HD): 32 weights of 5 bits, each
 * q * d + m, dotted with Q8_1 activations. */
#ifndef LAMINA_Q5_1_H
#define LAMINA_Q5_1_H

#include "quants/legacy.h"

/* weight i of a block, as ggml's dequantize_row_q5_1 forms it */
LM_HD float lm_dequant1_q5_1(const block_q5_1 *b, int i) {
    return (lm_nibble32(b->qs, i) | lm_q5_high_bit(lm_q5_load_qh(b->qh), i)) * lm_half_to_f32(b->d) +
           lm_half_to_f32(b->m);
}

LM_HD int lm_idot_q5_1_q8_1(const block_q5_1 *x, const block_q8_1 *y) {
    const uint32_t qh = lm_q5_load_qh(x->qh);
    int s = 0;
    for (int j = 0; j < QK5_1 / 2; j++) {
        const int q0 = (x->qs[j] & 0x0F) | lm_q5_high_bit(qh, j);
        const int q1 = (x->qs[j] >> 4) | lm_q5_high_bit(qh, j + 16);
        s += q0 * y->qs[j] + q1 * y->qs[j + QK5_1 / 2];
    }
    return s;
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (q5_1.c) */
#define LMC_PARTS_Q5_1 1
#define LMC_INT_REDUCE_Q5_1 1
LMC_ONE_PART_INTS(q5_1, block_q5_1, block_q8_1, lm_idot_q5_1_q8_1)
LM_HD float lmc_term_q5_1(const block_q5_1 *x, const block_q8_1 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum + lm_half_to_f32(x->m) * lm_half_to_f32(y->s);
}

#endif /* LAMINA_Q5_1_H */
