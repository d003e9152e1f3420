/* iq2.h — IQ2_XXS, IQ2_XS and IQ2_S block math, C and CUDA (LM_HD): groups of
 * 8 weights as indices into 8-value grids of the magnitudes 8, 25, 43
 * (quants/iq_grids.h), a sign per weight, 4-bit sub-block scales s giving
 * d * (2s+1) / 8; dotted with Q8_K. Layouts in quants/blocks.h. */
#ifndef LAMINA_IQ2_H
#define LAMINA_IQ2_H

#include "quants/iq_lattice.h"

#define LM_IQ_DOT_FACTOR_IQ2 0.125f

/* ------------------------------------------------------------- IQ2_XXS */
/* sub-block ib's two words: grid indices (byte l for group l), and the four
 * 7-bit ksigns indices (bits 7l..) under the 4-bit scale (bits 28..31) */
LM_HD uint32_t lm_iq2_xxs_word(const block_iq2_xxs *b, int ib, int k) {
    return (uint32_t)b->qs[4 * ib + 2 * k] | (uint32_t)b->qs[4 * ib + 2 * k + 1] << 16;
}
LM_HD float lm_iq_iq2_xxs_d(const block_iq2_xxs *b) { return lm_half_to_f32(b->d); }

/* weight i, as ggml's dequantize_row_iq2_xxs: db = d * (0.5 + s) * 0.25 */
LM_HD float lm_dequant1_iq2_xxs(const block_iq2_xxs *b, int i) {
    const int ib = i / 32, l = (i % 32) / 8;
    const uint32_t idx = lm_iq2_xxs_word(b, ib, 0), ss = lm_iq2_xxs_word(b, ib, 1);
    const float db = lm_half_to_f32(b->d) * (0.5f + (float)(ss >> 28)) * 0.25f;
    const uint64_t grid = lm_iq2xxs_grid[(idx >> (8 * l)) & 0xFF];
    return lm_iq_signed(db, lm_iq_grid8(grid, i % 8), lm_ksigns_iq2xs[(ss >> (7 * l)) & 127], i % 8);
}

/* sub-block ib against its 32 Q8_K values, times its scale 2s+1 */
LM_HD int32_t lm_iq2_xxs_part(const block_iq2_xxs *x, const block_q8_K *y, int ib) {
    const uint32_t idx = lm_iq2_xxs_word(x, ib, 0), ss = lm_iq2_xxs_word(x, ib, 1);
    int32_t sum = 0;
    for (int l = 0; l < 4; l++)
        sum += lm_iq_dot8(lm_iq2xxs_grid[(idx >> (8 * l)) & 0xFF], lm_ksigns_iq2xs[(ss >> (7 * l)) & 127],
                          y->qs + 32 * ib + 8 * l);
    return sum * (int32_t)(2 * (ss >> 28) + 1);
}

/* -------------------------------------------------------------- IQ2_XS */
/* qs[4ib + l]: 9-bit iq2xs_grid index, 7-bit ksigns index above it;
 * scales[ib]: the 4-bit scale of weights 0..15 (low) and 16..31 (high) */
LM_HD float lm_iq_iq2_xs_d(const block_iq2_xs *b) { return lm_half_to_f32(b->d); }

LM_HD float lm_dequant1_iq2_xs(const block_iq2_xs *b, int i) {
    const int ib = i / 32, l = (i % 32) / 8;
    const int s = (b->scales[ib] >> (4 * (l / 2))) & 0x0F;
    const float db = lm_half_to_f32(b->d) * (0.5f + (float)s) * 0.25f;
    const uint16_t q = b->qs[4 * ib + l];
    return lm_iq_signed(db, lm_iq_grid8(lm_iq2xs_grid[q & 511], i % 8), lm_ksigns_iq2xs[q >> 9], i % 8);
}

LM_HD int32_t lm_iq2_xs_part(const block_iq2_xs *x, const block_q8_K *y, int ib) {
    int32_t sum[2] = { 0, 0 };
    for (int l = 0; l < 4; l++) {
        const uint16_t q = x->qs[4 * ib + l];
        sum[l / 2] += lm_iq_dot8(lm_iq2xs_grid[q & 511], lm_ksigns_iq2xs[q >> 9], y->qs + 32 * ib + 8 * l);
    }
    return sum[0] * (2 * (x->scales[ib] & 0x0F) + 1) + sum[1] * (2 * (x->scales[ib] >> 4) + 1);
}

/* --------------------------------------------------------------- IQ2_S */
/* group l of sub-block ib: index qs[4ib + l] | 2 bits of qh[ib] << 8, its
 * sign byte qs[QK_K/8 + 4ib + l]; scales as IQ2_XS */
LM_HD int lm_iq2_s_index(const block_iq2_s *b, int ib, int l) {
    return b->qs[4 * ib + l] | ((b->qh[ib] >> (2 * l)) & 3) << 8;
}
LM_HD float lm_iq_iq2_s_d(const block_iq2_s *b) { return lm_half_to_f32(b->d); }

LM_HD float lm_dequant1_iq2_s(const block_iq2_s *b, int i) {
    const int ib = i / 32, l = (i % 32) / 8;
    const int s = (b->scales[ib] >> (4 * (l / 2))) & 0x0F;
    const float db = lm_half_to_f32(b->d) * (0.5f + (float)s) * 0.25f;
    const uint64_t grid = lm_iq2s_grid[lm_iq2_s_index(b, ib, l)];
    return lm_iq_signed(db, lm_iq_grid8(grid, i % 8), b->qs[QK_K / 8 + 4 * ib + l], i % 8);
}

LM_HD int32_t lm_iq2_s_part(const block_iq2_s *x, const block_q8_K *y, int ib) {
    int32_t sum[2] = { 0, 0 };
    for (int l = 0; l < 4; l++)
        sum[l / 2] +=
            lm_iq_dot8(lm_iq2s_grid[lm_iq2_s_index(x, ib, l)], x->qs[QK_K / 8 + 4 * ib + l], y->qs + 32 * ib + 8 * l);
    return sum[0] * (2 * (x->scales[ib] & 0x0F) + 1) + sum[1] * (2 * (x->scales[ib] >> 4) + 1);
}

/* ---------------------------------------------- block dots, CUDA parts */
LM_IQ_KDOT_PARTS(iq2_xxs)
LM_IQ_KDOT_PARTS(iq2_xs)
LM_IQ_KDOT_PARTS(iq2_s)

#define LMC_PARTS_IQ2_XXS 8
#define LMC_INT_REDUCE_IQ2_XXS 1
#define LMC_PARTS_IQ2_XS 8
#define LMC_INT_REDUCE_IQ2_XS 1
#define LMC_PARTS_IQ2_S 8
#define LMC_INT_REDUCE_IQ2_S 1
LMC_IQ_PARTS(iq2_xxs, lm_iq2_xxs_part, LM_IQ_DOT_FACTOR_IQ2)
LMC_IQ_PARTS(iq2_xs, lm_iq2_xs_part, LM_IQ_DOT_FACTOR_IQ2)
LMC_IQ_PARTS(iq2_s, lm_iq2_s_part, LM_IQ_DOT_FACTOR_IQ2)

#endif /* LAMINA_IQ2_H */
