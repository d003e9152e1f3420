/* q8_1.h — Q8_1, the activation format of Q4_1 and Q5_1 weights, C and CUDA
 * (LM_HD): Q8_0's 32 int8 values plus s = d * sum(qs), which lets the dot
 * with a weight block fold in its min term. */
#ifndef LAMINA_Q8_1_H
#define LAMINA_Q8_1_H

#include "quants/legacy.h"

/* the s field (d * sum of quants) is redundant for the values themselves */
LM_HD float lm_dequant1_q8_1(const block_q8_1 *b, int i) { return b->qs[i] * lm_half_to_f32(b->d); }

/* s: d times the sum of the rounded quants */
LM_HD lm_half lm_q8_1_s(int sum, float d) { return lm_f32_to_half(sum * d); }

#endif /* LAMINA_Q8_1_H */
