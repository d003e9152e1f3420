/* q8_K.h — Q8_K, the activation format every k-quant and IQ4_XS dot consumes,
 * C and CUDA (LM_HD): 256 int8 values with one float scale, plus the sums of
 * each run of 16 (bsums) so a dot can fold a weight block's min/offset term
 * in without touching qs. */
#ifndef LAMINA_Q8_K_H
#define LAMINA_Q8_K_H

#include "quants/blocks.h"

/* value i of a block, as ggml's dequantize_row_q8_K forms it */
LM_HD float lm_dequant1_q8_K(const block_q8_K *b, int i) { return b->d * b->qs[i]; }

/* The pieces of ggml's quantize_row_q8_K_ref that are not reductions (the
 * reductions, max |x| and sums, are exact in any order). max is the signed
 * value of the first largest |x| (nonzero). -127, not -128: every q lies in
 * [-127, 127], so SIMD dots may negate q8 values (sign_epi8) without overflow. */
LM_HD float lm_q8_K_iscale(float max) { return -127.f / max; }
LM_HD int8_t lm_q8_K_quant(float x, float iscale) {
    const int v = lm_nearest_int(iscale * x);
    return (int8_t)(v < 127 ? v : 127);
}
LM_HD float lm_q8_K_d(float iscale) { return 1 / iscale; }

#endif /* LAMINA_Q8_K_H */
