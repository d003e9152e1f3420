/* iq1.h — IQ1_S and IQ1_M block math, C and CUDA (LM_HD): groups of 8
 * weights as 11-bit indices into iq1s_grid (values -1, 0, 1), every weight of
 * a group shifted by +-1/8, 3-bit sub-block scales s giving d * (2s+1);
 * dotted with Q8_K. Layouts in quants/blocks.h.
 *
 * The dots keep ggml's sum(scale * (level + shift) * q8) in integers as
 * sum(scale * (8 * level + sign) * q8), sign = +-1 the shift's, with the
 * factor 1/8 applied to the row (quants/iq_lattice.h). ggml's generic dots
 * take the shift's sum(q8) from the Q8_K bsums; reading it from the q8 values
 * is the same integer for any Q8_K block lm_from_float_q8_K writes, and is
 * what the SIMD kernels do (one signed weight 8 * level + sign per byte). */
#ifndef LAMINA_IQ1_H
#define LAMINA_IQ1_H

#include "quants/iq_lattice.h"

#define LM_IQ1_DELTA 0.125f
#define LM_IQ_DOT_FACTOR_IQ1 0.125f

/* value j of grid entry k as a signed level */
LM_HD int lm_iq1_level(int k, int j) { return (int8_t)lm_iq_grid8(lm_iq1s_grid[k], j); }

/* sum over the 8 weights of grid entry k of (8 * level + sign) * q8 */
LM_HD int32_t lm_iq1_dot8(int k, int sign, const int8_t *q8) {
    int32_t s = 0;
    for (int j = 0; j < 8; j++) s += (8 * lm_iq1_level(k, j) + sign) * q8[j];
    return s;
}

/* --------------------------------------------------------------- IQ1_S */
/* qh[ib]: the top 3 bits of group l's index at bits 3l, the scale at 12..14,
 * the shift's sign (set: -1/8) at bit 15 */
LM_HD int lm_iq1_s_index(const block_iq1_s *b, int ib, int l) {
    return b->qs[4 * ib + l] | ((b->qh[ib] >> (3 * l)) & 7) << 8;
}
LM_HD int lm_iq1_s_sign(const block_iq1_s *b, int ib) { return b->qh[ib] & 0x8000 ? -1 : 1; }
LM_HD int lm_iq1_s_scale(const block_iq1_s *b, int ib) { return 2 * ((b->qh[ib] >> 12) & 7) + 1; }
LM_HD float lm_iq_iq1_s_d(const block_iq1_s *b) { return lm_half_to_f32(b->d); }

/* weight i, as ggml's dequantize_row_iq1_s: dl * (level + delta), dl = d * (2s+1) */
LM_HD float lm_dequant1_iq1_s(const block_iq1_s *b, int i) {
    const int ib = i / 32, l = (i % 32) / 8;
    const float dl = lm_half_to_f32(b->d) * (float)lm_iq1_s_scale(b, ib);
    const float delta = (float)lm_iq1_s_sign(b, ib) * LM_IQ1_DELTA;
    return dl * ((float)lm_iq1_level(lm_iq1_s_index(b, ib, l), i % 8) + delta);
}

/* sub-block ib: scale * sum((8 * level + sign) * q8) */
LM_HD int32_t lm_iq1_s_part(const block_iq1_s *x, const block_q8_K *y, int ib) {
    int32_t sum = 0;
    for (int l = 0; l < 4; l++)
        sum += lm_iq1_dot8(lm_iq1_s_index(x, ib, l), lm_iq1_s_sign(x, ib), y->qs + 32 * ib + 8 * l);
    return lm_iq1_s_scale(x, ib) * sum;
}

/* --------------------------------------------------------------- IQ1_M */
/* group l of sub-block ib: nibble l%2 of qh[2ib + l/2] holds the index's top
 * 3 bits and the shift's sign (bit 3); the 3-bit scale of weights 16h..16h+15
 * is at bit 6(ib%2) + 3h of the ib/2-th 16-bit word of scales, whose top
 * nibbles form the fp16 d */
LM_HD int lm_iq1_m_word(const block_iq1_m *b, int k) { return b->scales[2 * k] | b->scales[2 * k + 1] << 8; }
LM_HD float lm_iq_iq1_m_d(const block_iq1_m *b) {
    const int bits = (lm_iq1_m_word(b, 0) >> 12) | ((lm_iq1_m_word(b, 1) >> 8) & 0x00F0) |
                     ((lm_iq1_m_word(b, 2) >> 4) & 0x0F00) | (lm_iq1_m_word(b, 3) & 0xF000);
    return lm_half_to_f32((lm_half)bits);
}
LM_HD int lm_iq1_m_nibble(const block_iq1_m *b, int ib, int l) { return (b->qh[2 * ib + l / 2] >> (4 * (l % 2))) & 15; }
LM_HD int lm_iq1_m_index(const block_iq1_m *b, int ib, int l) {
    return b->qs[4 * ib + l] | (lm_iq1_m_nibble(b, ib, l) & 7) << 8;
}
LM_HD int lm_iq1_m_scale(const block_iq1_m *b, int ib, int h) {
    return 2 * ((lm_iq1_m_word(b, ib / 2) >> (6 * (ib % 2) + 3 * h)) & 7) + 1;
}
LM_HD int lm_iq1_m_sign(const block_iq1_m *b, int ib, int l) { return lm_iq1_m_nibble(b, ib, l) & 8 ? -1 : 1; }

LM_HD float lm_dequant1_iq1_m(const block_iq1_m *b, int i) {
    const int ib = i / 32, l = (i % 32) / 8;
    const float dl = lm_iq_iq1_m_d(b) * (float)lm_iq1_m_scale(b, ib, l / 2);
    const float delta = (float)lm_iq1_m_sign(b, ib, l) * LM_IQ1_DELTA;
    return dl * ((float)lm_iq1_level(lm_iq1_m_index(b, ib, l), i % 8) + delta);
}

/* sub-block ib: per 16-weight half, its scale * sum((8 * level + sign) * q8) */
LM_HD int32_t lm_iq1_m_part(const block_iq1_m *x, const block_q8_K *y, int ib) {
    int32_t half[2] = { 0, 0 };
    for (int l = 0; l < 4; l++)
        half[l / 2] += lm_iq1_dot8(lm_iq1_m_index(x, ib, l), lm_iq1_m_sign(x, ib, l), y->qs + 32 * ib + 8 * l);
    return half[0] * lm_iq1_m_scale(x, ib, 0) + half[1] * lm_iq1_m_scale(x, ib, 1);
}

/* ---------------------------------------------- block dots, CUDA parts */
LM_IQ_KDOT_PARTS(iq1_s)
LM_IQ_KDOT_PARTS(iq1_m)

#define LMC_PARTS_IQ1_S 8
#define LMC_INT_REDUCE_IQ1_S 1
#define LMC_PARTS_IQ1_M 8
#define LMC_INT_REDUCE_IQ1_M 1
LMC_IQ_PARTS(iq1_s, lm_iq1_s_part, LM_IQ_DOT_FACTOR_IQ1)
LMC_IQ_PARTS(iq1_m, lm_iq1_m_part, LM_IQ_DOT_FACTOR_IQ1)

#endif /* LAMINA_IQ1_H */
