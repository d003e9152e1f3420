/* block_math_k.h — per-super-block math of the k-quants (Q2_K..Q6_K), written
 * once for the CPU dequantizers and the CUDA backend.
 *
 * The dequantizers produce exactly ggml's floats: each weight is
 * (d * sub-block scale) * q [- dmin * sub-block min], every product rounded
 * to float in that order (gguf-py's numpy code rounds the same way), so they
 * must be compiled without FMA contraction.
 */
#ifndef LAMINA_BLOCK_MATH_K_H
#define LAMINA_BLOCK_MATH_K_H

#include "blocks.h"

/* Q3_K's 16 six-bit scales, biased by 32, live in 12 bytes: the low nibbles
 * of sub-blocks 0..7 and 8..15 share bytes 0..7, the top 2 bits of sub-block
 * j sit at bits 2*(j/4) of byte 8 + j%4. Returns the signed scale (-32..31). */
LM_HD int lm_q3_K_scale(int j, const uint8_t *scales) {
    const int lo = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
    const int hi = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* all 16 signed Q3_K sub-block scales at once */
LM_HD void lm_q3_K_unpack_scales(const uint8_t *scales, int8_t *out) {
    for (int j = 0; j < QK_K / 16; ++j) out[j] = (int8_t)lm_q3_K_scale(j, scales);
}

/* Layout shared by Q2_K and Q3_K: 2-bit fields of qs, 32 bytes per 128
 * weights, shift 2*k selects weights 32k..32k+31 of that 128. */
LM_HD int lm_k_q2bits(const uint8_t *qs, int i) {
    return (qs[(i / 128) * 32 + i % 32] >> (2 * ((i % 128) / 32))) & 3;
}

/* mirrors ggml's dequantize_row_q2_K for one block */
LM_HD void lm_dequant_block_q2_K(const block_q2_K *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const float dmin = lm_half_to_f32(b->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float dl = d * (b->scales[j] & 0xF);
        const float ml = dmin * (b->scales[j] >> 4);
        for (int l = 0; l < 16; ++l) y[16 * j + l] = dl * lm_k_q2bits(b->qs, 16 * j + l) - ml;
    }
}

/* mirrors ggml's dequantize_row_q3_K for one block: a clear hmask bit means
 * the 2-bit value is offset by -4 */
LM_HD void lm_dequant_block_q3_K(const block_q3_K *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float dl = d * lm_q3_K_scale(j, b->scales);
        for (int l = 0; l < 16; ++l) {
            const int i = 16 * j + l;
            const int high = (b->hmask[i % 32] >> (i / 32)) & 1;
            y[i] = dl * (lm_k_q2bits(b->qs, i) - (high ? 0 : 4));
        }
    }
}

/* Q4_K/Q5_K: 8 sub-blocks of 32; sub-block j's 4 low bits are the low
 * (j even) or high (j odd) nibbles of qs[32*(j/2) ..]. */
LM_HD int lm_k_q4bits(const uint8_t *qs, int i) {
    const int j = i / 32;
    return (qs[32 * (j / 2) + i % 32] >> (4 * (j % 2))) & 0xF;
}

/* mirrors ggml's dequantize_row_q4_K for one block */
LM_HD void lm_dequant_block_q4_K(const block_q4_K *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const float dmin = lm_half_to_f32(b->dmin);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        lm_get_scale_min_k4(j, b->scales, &sc, &m);
        const float dl = d * sc;
        const float ml = dmin * m;
        for (int l = 0; l < 32; ++l) y[32 * j + l] = dl * lm_k_q4bits(b->qs, 32 * j + l) - ml;
    }
}

/* mirrors ggml's dequantize_row_q5_K for one block: bit j of qh[l] is the
 * fifth bit of weight l of sub-block j */
LM_HD void lm_dequant_block_q5_K(const block_q5_K *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const float dmin = lm_half_to_f32(b->dmin);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        lm_get_scale_min_k4(j, b->scales, &sc, &m);
        const float dl = d * sc;
        const float ml = dmin * m;
        for (int l = 0; l < 32; ++l) {
            const int q = lm_k_q4bits(b->qs, 32 * j + l) | (((b->qh[l] >> j) & 1) << 4);
            y[32 * j + l] = dl * q - ml;
        }
    }
}

/* Q6_K: per 128 weights, 64 bytes of ql (low nibbles for weights 0..63, high
 * nibbles for 64..127) and 32 bytes of qh (2 bits per 32-weight quarter).
 * Returns the signed level (-32..31). */
LM_HD int lm_q6_K_level(const uint8_t *ql, const uint8_t *qh, int i) {
    const int h = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
    const int lo = (ql[64 * h + 32 * (quarter % 2) + l] >> (4 * (quarter / 2))) & 0xF;
    const int hi = (qh[32 * h + l] >> (2 * quarter)) & 3;
    return (lo | (hi << 4)) - 32;
}

/* mirrors ggml's dequantize_row_q6_K for one block */
LM_HD void lm_dequant_block_q6_K(const block_q6_K *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float dl = d * b->scales[j];
        for (int l = 0; l < 16; ++l) y[16 * j + l] = dl * lm_q6_K_level(b->ql, b->qh, 16 * j + l);
    }
}

#endif
