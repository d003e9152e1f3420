/* legacy.h — what the 32-weight formats (Q4_0 .. Q8_1, IQ4_NL) share, C and
 * CUDA (LM_HD): the order of the packed nibbles, the fifth bits of Q5_0/Q5_1,
 * and how activations are rounded into Q8_0/Q8_1. */
#ifndef LAMINA_LEGACY_H
#define LAMINA_LEGACY_H

#include "quants/blocks.h"

/* Byte j of a 32-weight legacy block holds weight j (low nibble) and j+16. */
LM_HD int lm_nibble32(const uint8_t *qs, int i) { return i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4; }

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
 * Q8_0 weights, quantize_row_q8_0_ref in q8_0.c) takes x * (1/d), half away from
 * zero: the two differ on about one value in 10^5, and each such tie flip in
 * a 30-layer model moves the logits as much as a different engine would. */
LM_HD float lm_q8_act_scale(float amax) { return amax / 127.f; }
LM_HD float lm_q8_act_inv(float amax) { return amax != 0.0f ? 127.f / amax : 0.0f; }
LM_HD int8_t lm_q8_act_quant(float x, float id) { return (int8_t)lm_nearest_int(x * id); }

/* ----------------------------------------------------- CUDA mat-vec */
/* The formats of 32 weights take one lane of the warp per block
 * (LMC_PARTS_<T> 1): the part's integers are the whole block's idot. */
#define LMC_ONE_PART_INTS(t, block, partner_block, idot)                                                      \
    LM_HD void lmc_ints_##t(const block *x, const partner_block *y, int part, int32_t *isum, int32_t *imin) { \
        (void)part;                                                                                           \
        *isum = idot(x, y);                                                                                   \
        *imin = 0;                                                                                            \
    }

#endif /* LAMINA_LEGACY_H */
