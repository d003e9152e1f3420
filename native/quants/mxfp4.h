/* mxfp4.h — MXFP4 block math, C and CUDA (LM_HD): 32 E2M1 (4-bit float)
 * values sharing one E8M0 scale, dotted with Q8_0 activations.
 *
 * As in ggml, the 16 E2M1 values are kept doubled so they are integers
 * (0, 0.5, 1, 1.5, 2, 3, 4, 6 -> 0, 1, 2, 3, 4, 6, 8, 12, sign in bit 3) and
 * the scale is halved to match: 2^(e - 128) instead of the format's
 * 2^(e - 127). The integer dot with int8 activations is then exact. */
#ifndef LAMINA_MXFP4_H
#define LAMINA_MXFP4_H

#include "quants/legacy.h"

/* the doubled E2M1 values (ggml's kvalues_mxfp4) */
#define LM_KVALUES_MXFP4 { 0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12 }
#if defined(__CUDACC__)
/* a __constant__ table cannot be read by the host half of an LM_HD function
 * (see iq4.h): one copy per compilation pass */
__device__ __constant__ static const int8_t lm_kvalues_mxfp4_dev[16] = LM_KVALUES_MXFP4;
static const int8_t lm_kvalues_mxfp4_host[16] = LM_KVALUES_MXFP4;
#if defined(__CUDA_ARCH__)
#define lm_kvalues_mxfp4 lm_kvalues_mxfp4_dev
#else
#define lm_kvalues_mxfp4 lm_kvalues_mxfp4_host
#endif
#else
static const int8_t lm_kvalues_mxfp4[16] = LM_KVALUES_MXFP4;
#endif

#if !defined(__CUDACC__)
/* the quantizers' nearest doubled E2M1 level to x at scale d (mxfp4.c),
 * shared by MXFP4 and NVFP4 as ggml's best_index_mxfp4 is */
int lm_e2m1_best_index(float x, float d);
#endif

/* 2^(e - 128), ggml's ggml_e8m0_to_fp32_half: e = 0 and 1 give the
 * subnormals 2^-128 and 2^-127; e = 255 (E8M0's NaN) gives 2^127, as in ggml */
LM_HD float lm_e8m0_to_f32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    return lm_bits_to_f32(bits);
}

/* weight i of a block, as ggml's dequantize_row_mxfp4 forms it; the packed
 * nibbles are in the order of the 32-weight legacy blocks (legacy.h) */
LM_HD float lm_dequant1_mxfp4(const block_mxfp4 *b, int i) {
    return (float)lm_kvalues_mxfp4[lm_nibble32(b->qs, i)] * lm_e8m0_to_f32_half(b->e);
}

/* sum of doubled values times activations over one block, exact */
LM_HD int lm_idot_mxfp4_q8_0(const block_mxfp4 *x, const block_q8_0 *y) {
    int s = 0;
    for (int j = 0; j < QK_MXFP4 / 2; j++)
        s += lm_kvalues_mxfp4[x->qs[j] & 0x0F] * y->qs[j] + lm_kvalues_mxfp4[x->qs[j] >> 4] * y->qs[j + QK_MXFP4 / 2];
    return s;
}

/* the block's float scale, as ggml_vec_dot_mxfp4_q8_0_generic forms it */
LM_HD float lm_mxfp4_q8_0_scale(const block_mxfp4 *x, const block_q8_0 *y) {
    return lm_half_to_f32(y->d) * lm_e8m0_to_f32_half(x->e);
}

/* CUDA mat-vec: one lane per block, the term of the scalar reference (mxfp4.c) */
#define LMC_PARTS_MXFP4 1
#define LMC_INT_REDUCE_MXFP4 1
LMC_ONE_PART_INTS(mxfp4, block_mxfp4, block_q8_0, lm_idot_mxfp4_q8_0)
LM_HD float lmc_term_mxfp4(const block_mxfp4 *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return lm_mxfp4_q8_0_scale(x, y) * isum;
}

#endif /* LAMINA_MXFP4_H */
