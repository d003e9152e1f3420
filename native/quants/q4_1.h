/* q4_1.h — Q4_1 block math, C and CUDA (LM_HD): 32 weights of 4 bits, each
 * q * d + m, dotted with Q8_1 activations. */
#ifndef LAMINA_Q4_1_H
#define LAMINA_Q4_1_H

#include "quants/legacy.h"

/* weight i of a block, as ggml's dequantize_row_q4_1 forms it */
LM_HD float lm_dequant1_q4_1(const block_q4_1 *b, int i) {
    return lm_nibble32(b->qs, i) * lm_half_to_f32(b->d) + lm_half_to_f32(b->m);
}

/* unsigned quants: the min term m * sum(a) comes from the Q8_1 block's s */
LM_HD int lm_idot_q4_1_q8_1(const block_q4_1 *x, const block_q8_1 *y) {
    int s = 0;
    for (int j = 0; j < QK4_1 / 2; j++) s += (x->qs[j] & 0x0F) * y->qs[j] + (x->qs[j] >> 4) * y->qs[j + QK4_1 / 2];
    return s;
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (q4_1.c) */
#define LMC_PARTS_Q4_1 1
#define LMC_INT_REDUCE_Q4_1 1
LMC_ONE_PART_INTS(q4_1, block_q4_1, block_q8_1, lm_idot_q4_1_q8_1)
LM_HD float lmc_term_q4_1(const block_q4_1 *x, const block_q8_1 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(x->d) * lm_half_to_f32(y->d)) * isum + lm_half_to_f32(x->m) * lm_half_to_f32(y->s);
}

#endif /* LAMINA_Q4_1_H */
