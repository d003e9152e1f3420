/* q4_0.h — Q4_0 block math, C and CUDA (LM_HD): 32 weights of 4 bits, each
 * (q - 8) * d, dotted with Q8_0 activations. */
#ifndef LAMINA_Q4_0_H
#define LAMINA_Q4_0_H

#include "quants/legacy.h"

/* weight i of a block, as ggml's dequantize_row_q4_0 (and gguf-py's numpy
 * dequantizer) forms it: int -> float, times d */
LM_HD float lm_dequant1_q4_0(const block_q4_0 *b, int i) { return (lm_nibble32(b->qs, i) - 8) * lm_half_to_f32(b->d); }

/* sum_j q_j * a_j over one block in exact int arithmetic, so the order of the
 * additions does not matter; the caller applies the float scales */
LM_HD int lm_idot_q4_0_q8_0(const block_q4_0 *x, const block_q8_0 *y) {
    int s = 0;
    for (int j = 0; j < QK4_0 / 2; j++)
        s += ((x->qs[j] & 0x0F) - 8) * y->qs[j] + ((x->qs[j] >> 4) - 8) * y->qs[j + QK4_0 / 2];
    return s;
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (q4_0.c) */
#define LMC_PARTS_Q4_0 1
#define LMC_INT_REDUCE_Q4_0 1
LMC_ONE_PART_INTS(q4_0, block_q4_0, block_q8_0, lm_idot_q4_0_q8_0)
LM_HD float lmc_term_q4_0(const block_q4_0 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return isum * lm_half_to_f32(x->d) * lm_half_to_f32(y->d);
}

#endif /* LAMINA_Q4_0_H */
