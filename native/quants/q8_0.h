/* q8_0.h — Q8_0 block math, C and CUDA (LM_HD): 32 int8 weights times d; Q8_0
 * is also the activation format of Q4_0, Q5_0, Q8_0 and IQ4_NL weights. */
#ifndef LAMINA_Q8_0_H
#define LAMINA_Q8_0_H

#include "quants/legacy.h"

/* value i of a block, as ggml's dequantize_row_q8_0 forms it */
LM_HD float lm_dequant1_q8_0(const block_q8_0 *b, int i) { return b->qs[i] * lm_half_to_f32(b->d); }

LM_HD int lm_idot_q8_0_q8_0(const block_q8_0 *x, const block_q8_0 *y) {
    int s = 0;
    for (int j = 0; j < QK8_0; j++) s += x->qs[j] * y->qs[j];
    return s;
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (q8_0.c) */
#define LMC_PARTS_Q8_0 1
#define LMC_INT_REDUCE_Q8_0 1
LMC_ONE_PART_INTS(q8_0, block_q8_0, block_q8_0, lm_idot_q8_0_q8_0)
LM_HD float lmc_term_q8_0(const block_q8_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return isum * (lm_half_to_f32(x->d) * lm_half_to_f32(y->d));
}

#endif /* LAMINA_Q8_0_H */
