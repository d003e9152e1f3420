/* iq3.h — IQ3_XXS and IQ3_S block math, C and CUDA (LM_HD): groups of 4
 * weights as indices into 4-value grids (quants/iq_grids.h), a sign per
 * weight, 4-bit sub-block scales s; dotted with Q8_K. IQ3_XXS scales
 * sub-blocks by d * (2s+1) / 4, IQ3_S by d * (2s+1). Layouts in quants/blocks.h. */
#ifndef LAMINA_IQ3_H
#define LAMINA_IQ3_H

#include "quants/iq_lattice.h"

#define LM_IQ_DOT_FACTOR_IQ3_XXS 0.25f
#define LM_IQ_DOT_FACTOR_IQ3_S 1.0f

/* ------------------------------------------------------------- IQ3_XXS */
/* qs[8ib + k]: the grid index of weights 4k..4k+3 of sub-block ib; after the
 * QK_K/4 indices, one word per sub-block: four 7-bit ksigns indices (one per
 * 8 weights) under the 4-bit scale (bits 28..31) */
LM_HD uint32_t lm_iq3_xxs_word(const block_iq3_xxs *b, int ib) {
    const uint8_t *p = b->qs + QK_K / 4 + 4 * ib;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
LM_HD float lm_iq_iq3_xxs_d(const block_iq3_xxs *b) { return lm_half_to_f32(b->d); }

/* weight i, as ggml's dequantize_row_iq3_xxs: db = d * (0.5 + s) * 0.5 */
LM_HD float lm_dequant1_iq3_xxs(const block_iq3_xxs *b, int i) {
    const int ib = i / 32, k = (i % 32) / 4, j = i % 8;
    const uint32_t w = lm_iq3_xxs_word(b, ib);
    const float db = lm_half_to_f32(b->d) * (0.5f + (float)(w >> 28)) * 0.5f;
    const unsigned signs = lm_ksigns_iq2xs[(w >> (7 * (k / 2))) & 127];
    return lm_iq_signed(db, lm_iq_grid4(lm_iq3xxs_grid[b->qs[8 * ib + k]], i % 4), signs, j);
}

LM_HD int32_t lm_iq3_xxs_part(const block_iq3_xxs *x, const block_q8_K *y, int ib) {
    const uint32_t w = lm_iq3_xxs_word(x, ib);
    const int8_t *q8 = y->qs + 32 * ib;
    int32_t sum = 0;
    for (int l = 0; l < 4; l++) {
        const unsigned signs = lm_ksigns_iq2xs[(w >> (7 * l)) & 127];
        sum += lm_iq_dot4(lm_iq3xxs_grid[x->qs[8 * ib + 2 * l]], signs, 0, q8 + 8 * l) +
               lm_iq_dot4(lm_iq3xxs_grid[x->qs[8 * ib + 2 * l + 1]], signs, 4, q8 + 8 * l + 4);
    }
    return sum * (int32_t)(2 * (w >> 28) + 1);
}

/* --------------------------------------------------------------- IQ3_S */
/* index of weights 4k..4k+3 of sub-block ib: qs[8ib + k] | bit k of qh[ib]
 * << 8; the sign byte of each 8 weights is signs[4ib + k/2]; the scale of
 * sub-block ib is nibble ib%2 of scales[ib/2] */
LM_HD int lm_iq3_s_index(const block_iq3_s *b, int ib, int k) {
    return b->qs[8 * ib + k] | ((b->qh[ib] >> k) & 1) << 8;
}
LM_HD int lm_iq3_s_scale(const block_iq3_s *b, int ib) {
    return 2 * ((b->scales[ib / 2] >> (4 * (ib % 2))) & 0x0F) + 1;
}
LM_HD float lm_iq_iq3_s_d(const block_iq3_s *b) { return lm_half_to_f32(b->d); }

/* weight i, as ggml's dequantize_row_iq3_s: db = d * (1 + 2s) */
LM_HD float lm_dequant1_iq3_s(const block_iq3_s *b, int i) {
    const int ib = i / 32, k = (i % 32) / 4;
    const float db = lm_half_to_f32(b->d) * (float)lm_iq3_s_scale(b, ib);
    return lm_iq_signed(db, lm_iq_grid4(lm_iq3s_grid[lm_iq3_s_index(b, ib, k)], i % 4), b->signs[4 * ib + k / 2],
                        i % 8);
}

LM_HD int32_t lm_iq3_s_part(const block_iq3_s *x, const block_q8_K *y, int ib) {
    const int8_t *q8 = y->qs + 32 * ib;
    int32_t sum = 0;
    for (int k = 0; k < 8; k++)
        sum += lm_iq_dot4(lm_iq3s_grid[lm_iq3_s_index(x, ib, k)], x->signs[4 * ib + k / 2], 4 * (k % 2), q8 + 4 * k);
    return sum * lm_iq3_s_scale(x, ib);
}

/* ---------------------------------------------- block dots, CUDA parts */
LM_IQ_KDOT_PARTS(iq3_xxs)
LM_IQ_KDOT_PARTS(iq3_s)

#define LMC_PARTS_IQ3_XXS 8
#define LMC_INT_REDUCE_IQ3_XXS 1
#define LMC_PARTS_IQ3_S 8
#define LMC_INT_REDUCE_IQ3_S 1
LMC_IQ_PARTS(iq3_xxs, lm_iq3_xxs_part, LM_IQ_DOT_FACTOR_IQ3_XXS)
LMC_IQ_PARTS(iq3_s, lm_iq3_s_part, LM_IQ_DOT_FACTOR_IQ3_S)

#endif /* LAMINA_IQ3_H */
