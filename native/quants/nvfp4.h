/* nvfp4.h — NVFP4 block math, C and CUDA (LM_HD): 64 E2M1 (4-bit float)
 * values in four sub-blocks of 16, each sub-block with a UE4M3 scale,
 * dotted with two Q8_0 blocks (sub-blocks 0, 1 with the first, 2, 3 with the
 * second), as ggml_vec_dot_nvfp4_q8_0 does.
 *
 * The E2M1 values are MXFP4's doubled integers (mxfp4.h), so the scale is
 * halved to match, as in ggml's ggml_ue4m3_to_fp32; the integer dot of a
 * sub-block with int8 activations is then exact. */
#ifndef LAMINA_NVFP4_H
#define LAMINA_NVFP4_H

#include "quants/mxfp4.h"

/* half the value of a UE4M3 scale byte, exactly ggml's ggml_ue4m3_to_fp32:
 * bias 7, subnormals m * 2^-9 at exponent 0, 0x7F (E4M3's NaN) read as 0,
 * bit 7 ignored. Every value is a float exactly: (8 + m) * 2^(e - 11), or
 * m * 2^-10 for the subnormals. */
LM_HD float lm_ue4m3_to_f32_half(uint8_t u) {
    const uint32_t e = (u >> 3) & 0xF, m = u & 0x7;
    if (u == 0x7F) return 0.0f;
    if (e == 0) return (float)m * (1.0f / 1024.0f);
    return lm_bits_to_f32(((e + 119u) << 23) | (m << 20));
}

/* weight i of a block, as ggml's dequantize_row_nvfp4 forms it */
LM_HD float lm_dequant1_nvfp4(const block_nvfp4 *b, int i) {
    const int s = i / QK_NVFP4_SUB, j = i % QK_NVFP4_SUB;
    const uint8_t q = b->qs[s * (QK_NVFP4_SUB / 2) + j % (QK_NVFP4_SUB / 2)];
    const int nib = j < QK_NVFP4_SUB / 2 ? q & 0x0F : q >> 4;
    return (float)lm_kvalues_mxfp4[nib] * lm_ue4m3_to_f32_half(b->d[s]);
}

/* sub-block s (16 weights) times its 16 activations, exact; y is the pair of
 * Q8_0 blocks of this NVFP4 block */
LM_HD int lm_idot_nvfp4_sub_q8_0(const block_nvfp4 *x, const block_q8_0 *y, int s) {
    const uint8_t *q = x->qs + s * (QK_NVFP4_SUB / 2);
    const int8_t *a = y[s / 2].qs + (s % 2) * QK_NVFP4_SUB;
    int sum = 0;
    for (int j = 0; j < QK_NVFP4_SUB / 2; j++)
        sum += lm_kvalues_mxfp4[q[j] & 0x0F] * a[j] + lm_kvalues_mxfp4[q[j] >> 4] * a[j + QK_NVFP4_SUB / 2];
    return sum;
}

/* sub-block s's float scale, as ggml_vec_dot_nvfp4_q8_0_generic forms it (dy * d) */
LM_HD float lm_nvfp4_q8_0_scale(const block_nvfp4 *x, const block_q8_0 *y, int s) {
    return lm_half_to_f32(y[s / 2].d) * lm_ue4m3_to_f32_half(x->d[s]);
}

/* CUDA mat-vec: part s = sub-block s, a float term of its own (no integer
 * reduction across lanes), the reference's (dy * d) * idot. The kernel hands
 * every part the block's pair of Q8_0 blocks (QK / the partner's QK = 2). */
#define LMC_PARTS_NVFP4 4
#define LMC_INT_REDUCE_NVFP4 0
LM_HD void lmc_ints_nvfp4(const block_nvfp4 *x, const block_q8_0 *y, int s, int32_t *isum, int32_t *imin) {
    *isum = lm_idot_nvfp4_sub_q8_0(x, y, s);
    *imin = 0;
}
LM_HD float lmc_term_nvfp4(const block_nvfp4 *x, const block_q8_0 *y, int s, int32_t isum, int32_t imin) {
    (void)imin;
    return lm_nvfp4_q8_0_scale(x, y, s) * isum;
}

#endif /* LAMINA_NVFP4_H */
