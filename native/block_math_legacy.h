/* block_math_legacy.h — per-block math of the legacy (Q4_0 .. Q8_1) and the
 * non-linear 4-bit (IQ4_NL, IQ4_XS) formats, written once for the scalar C
 * reference and, later, the CUDA backend (LM_HD).
 *
 * Two kinds of helpers per type:
 *   lm_dequant_block_<t>  one block -> its float values, with the arithmetic of
 *                         ggml's dequantize_row_<t> (and so of gguf-py's numpy
 *                         dequantizers: int -> float, times d, plus m);
 *   lm_idot_<t>_<partner> the integer dot of one weight block with one
 *                         activation block; callers apply the float scales in
 *                         ggml's order (see legacy_dequant_dot.c).
 */
#ifndef LAMINA_BLOCK_MATH_LEGACY_H
#define LAMINA_BLOCK_MATH_LEGACY_H

#include "blocks.h"

/* the 5th bit of quant j (0..31) of a Q5 block, already shifted to 0x10 */
LM_HD int lm_q5_high_bit(uint32_t qh, int j) { return (int)((qh >> j) << 4) & 0x10; }

LM_HD uint32_t lm_q5_load_qh(const uint8_t qh[4]) {
    uint32_t v;
    memcpy(&v, qh, sizeof v);
    return v;
}

/* ------------------------------------------------ activation quantizer */
/* Q8_0/Q8_1 activations the way ggml-cpu quantizes them on x86 (its AVX/AVX2
 * quantize_row_q8_{0,1}, what llama.cpp runs there): d = amax/127 stored as
 * f16, quants x * (127/amax) rounded half to even. ggml's _ref quantizer (for
 * Q8_0 weights, lm_quantize_row_q8_0_ref) takes x * (1/d), half away from
 * zero: the two differ on about one value in 10^5, and each such tie flip in
 * a 30-layer model moves the logits as much as a different engine would. */
LM_HD float lm_q8_act_scale(float amax) { return amax / 127.f; }
LM_HD float lm_q8_act_inv(float amax) { return amax != 0.0f ? 127.f / amax : 0.0f; }
LM_HD int8_t lm_q8_act_quant(float x, float id) { return (int8_t)lm_nearest_int(x * id); }

/* ------------------------------------------------------------ dequantize */
/* Byte j of qs holds quant j in its low nibble and quant j+16 in its high one. */

LM_HD void lm_dequant_block_q4_0(const block_q4_0 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int j = 0; j < QK4_0 / 2; j++) {
        y[j] = ((b->qs[j] & 0x0F) - 8) * d;
        y[j + QK4_0 / 2] = ((b->qs[j] >> 4) - 8) * d;
    }
}

LM_HD void lm_dequant_block_q4_1(const block_q4_1 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const float m = lm_half_to_f32(b->m);
    for (int j = 0; j < QK4_1 / 2; j++) {
        y[j] = (b->qs[j] & 0x0F) * d + m;
        y[j + QK4_1 / 2] = (b->qs[j] >> 4) * d + m;
    }
}

LM_HD void lm_dequant_block_q5_0(const block_q5_0 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const uint32_t qh = lm_q5_load_qh(b->qh);
    for (int j = 0; j < QK5_0 / 2; j++) {
        y[j] = (((b->qs[j] & 0x0F) | lm_q5_high_bit(qh, j)) - 16) * d;
        y[j + QK5_0 / 2] = (((b->qs[j] >> 4) | lm_q5_high_bit(qh, j + 16)) - 16) * d;
    }
}

LM_HD void lm_dequant_block_q5_1(const block_q5_1 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    const float m = lm_half_to_f32(b->m);
    const uint32_t qh = lm_q5_load_qh(b->qh);
    for (int j = 0; j < QK5_1 / 2; j++) {
        y[j] = ((b->qs[j] & 0x0F) | lm_q5_high_bit(qh, j)) * d + m;
        y[j + QK5_1 / 2] = ((b->qs[j] >> 4) | lm_q5_high_bit(qh, j + 16)) * d + m;
    }
}

LM_HD void lm_dequant_block_q8_0(const block_q8_0 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int j = 0; j < QK8_0; j++) y[j] = b->qs[j] * d;
}

/* the s field (d * sum of quants) is redundant for the values themselves */
LM_HD void lm_dequant_block_q8_1(const block_q8_1 *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int j = 0; j < QK8_1; j++) y[j] = b->qs[j] * d;
}

/* 16 packed nibbles -> 32 IQ4 levels: low nibbles first, then high nibbles */
LM_HD void lm_dequant_iq4_32(const uint8_t *qs, float d, float *y) {
    for (int j = 0; j < 16; j++) {
        y[j] = d * lm_kvalues_iq4nl[qs[j] & 0x0F];
        y[j + 16] = d * lm_kvalues_iq4nl[qs[j] >> 4];
    }
}

LM_HD void lm_dequant_block_iq4_nl(const block_iq4_nl *b, float *y) {
    lm_dequant_iq4_32(b->qs, lm_half_to_f32(b->d), y);
}

/* signed 6-bit scale of sub-block ib (0..7) of an IQ4_XS super-block:
 * low nibble in scales_l, top two bits in scales_h, stored with a +32 bias */
LM_HD int lm_iq4_xs_scale(const block_iq4_xs *b, int ib) {
    const int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
    const int hi = (b->scales_h >> (2 * ib)) & 0x03;
    return (lo | (hi << 4)) - 32;
}

LM_HD void lm_dequant_block_iq4_xs(const block_iq4_xs *b, float *y) {
    const float d = lm_half_to_f32(b->d);
    for (int ib = 0; ib < QK_K / 32; ib++)
        lm_dequant_iq4_32(b->qs + 16 * ib, d * lm_iq4_xs_scale(b, ib), y + 32 * ib);
}

/* ----------------------------------------------------------- integer dots */
/* Each returns sum_j q_j * a_j over one block in exact int arithmetic, so the
 * order of the additions does not matter. */

LM_HD int lm_idot_q4_0_q8_0(const block_q4_0 *x, const block_q8_0 *y) {
    int s = 0;
    for (int j = 0; j < QK4_0 / 2; j++)
        s += ((x->qs[j] & 0x0F) - 8) * y->qs[j] + ((x->qs[j] >> 4) - 8) * y->qs[j + QK4_0 / 2];
    return s;
}

/* unsigned quants: the min term m * sum(a) comes from the Q8_1 block's s */
LM_HD int lm_idot_q4_1_q8_1(const block_q4_1 *x, const block_q8_1 *y) {
    int s = 0;
    for (int j = 0; j < QK4_1 / 2; j++)
        s += (x->qs[j] & 0x0F) * y->qs[j] + (x->qs[j] >> 4) * y->qs[j + QK4_1 / 2];
    return s;
}

LM_HD int lm_idot_q5_0_q8_0(const block_q5_0 *x, const block_q8_0 *y) {
    const uint32_t qh = lm_q5_load_qh(x->qh);
    int s = 0;
    for (int j = 0; j < QK5_0 / 2; j++) {
        const int q0 = ((x->qs[j] & 0x0F) | lm_q5_high_bit(qh, j)) - 16;
        const int q1 = ((x->qs[j] >> 4) | lm_q5_high_bit(qh, j + 16)) - 16;
        s += q0 * y->qs[j] + q1 * y->qs[j + QK5_0 / 2];
    }
    return s;
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

LM_HD int lm_idot_q8_0_q8_0(const block_q8_0 *x, const block_q8_0 *y) {
    int s = 0;
    for (int j = 0; j < QK8_0; j++) s += x->qs[j] * y->qs[j];
    return s;
}

/* 32 IQ4 levels (16 packed bytes) against 32 int8 activations */
LM_HD int lm_idot_iq4_32(const uint8_t *qs, const int8_t *a) {
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += lm_kvalues_iq4nl[qs[j] & 0x0F] * a[j] + lm_kvalues_iq4nl[qs[j] >> 4] * a[j + 16];
    return s;
}

LM_HD int lm_idot_iq4_nl_q8_0(const block_iq4_nl *x, const block_q8_0 *y) {
    return lm_idot_iq4_32(x->qs, y->qs);
}

/* sub-block ib (32 weights) of an IQ4_XS super-block against the matching
 * 32 activations of its Q8_K block; the sub-block scale is applied by the caller */
LM_HD int lm_idot_iq4_xs_sub_q8_K(const block_iq4_xs *x, const block_q8_K *y, int ib) {
    return lm_idot_iq4_32(x->qs + 16 * ib, y->qs + 32 * ib);
}

#endif /* LAMINA_BLOCK_MATH_LEGACY_H */
