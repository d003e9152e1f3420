/* iq4.h — IQ4_NL and IQ4_XS block math, C and CUDA (LM_HD): 4-bit indices
 * into 16 non-uniform levels, in 32-weight blocks with an f16 scale (IQ4_NL,
 * dotted with Q8_0) or 256-weight super-blocks with 6-bit sub-block scales
 * (IQ4_XS, dotted with Q8_K). */
#ifndef LAMINA_IQ4_H
#define LAMINA_IQ4_H

#include "quants/legacy.h"

/* the 16 non-uniform levels of IQ4_NL / IQ4_XS (ggml's kvalues_iq4nl) */
#define LM_KVALUES_IQ4NL { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 }
#if defined(__CUDACC__)
/* a __constant__ table cannot be read by the host half of an LM_HD function,
 * so CUDA keeps two copies and each compilation pass reads its own */
__device__ __constant__ static const int8_t lm_kvalues_iq4nl_dev[16] = LM_KVALUES_IQ4NL;
static const int8_t lm_kvalues_iq4nl_host[16] = LM_KVALUES_IQ4NL;
#if defined(__CUDA_ARCH__)
#define lm_kvalues_iq4nl lm_kvalues_iq4nl_dev
#else
#define lm_kvalues_iq4nl lm_kvalues_iq4nl_host
#endif
#else
static const int8_t lm_kvalues_iq4nl[16] = LM_KVALUES_IQ4NL;
#endif

/* signed 6-bit scale of sub-block ib (0..7) of an IQ4_XS super-block:
 * low nibble in scales_l, top two bits in scales_h, stored with a +32 bias */
LM_HD int lm_iq4_xs_scale(const block_iq4_xs *b, int ib) {
    const int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
    const int hi = (b->scales_h >> (2 * ib)) & 0x03;
    return (lo | (hi << 4)) - 32;
}

/* weight i of a block, as ggml's dequantize_row_iq4_nl / _iq4_xs form it:
 * the level times the (sub-)block scale; the 16 packed bytes of each 32
 * weights hold them low nibbles first, then high nibbles */
LM_HD float lm_dequant1_iq4_nl(const block_iq4_nl *b, int i) {
    return lm_half_to_f32(b->d) * lm_kvalues_iq4nl[lm_nibble32(b->qs, i)];
}
LM_HD float lm_dequant1_iq4_xs(const block_iq4_xs *b, int i) {
    const int ib = i / 32;
    const float d = lm_half_to_f32(b->d) * lm_iq4_xs_scale(b, ib);
    return d * lm_kvalues_iq4nl[lm_nibble32(b->qs + 16 * ib, i % 32)];
}

/* ----------------------------------------------------------- integer dots */
/* exact int sums, so the order of the additions does not matter */

/* 32 IQ4 levels (16 packed bytes) against 32 int8 activations */
LM_HD int lm_idot_iq4_32(const uint8_t *qs, const int8_t *a) {
    int s = 0;
    for (int j = 0; j < 16; j++) s += lm_kvalues_iq4nl[qs[j] & 0x0F] * a[j] + lm_kvalues_iq4nl[qs[j] >> 4] * a[j + 16];
    return s;
}

LM_HD int lm_idot_iq4_nl_q8_0(const block_iq4_nl *x, const block_q8_0 *y) { return lm_idot_iq4_32(x->qs, y->qs); }

/* sub-block ib (32 weights) of an IQ4_XS super-block against the matching
 * 32 activations of its Q8_K block; the sub-block scale is applied by the caller */
LM_HD int lm_idot_iq4_xs_sub_q8_K(const block_iq4_xs *x, const block_q8_K *y, int ib) {
    return lm_idot_iq4_32(x->qs + 16 * ib, y->qs + 32 * ib);
}

/* ----------------------------------------------------- CUDA mat-vec */
/* IQ4_NL: one lane per block, the term of the scalar reference (iq4.c) */
#define LMC_PARTS_IQ4_NL 1
#define LMC_INT_REDUCE_IQ4_NL 1
LMC_ONE_PART_INTS(iq4_nl, block_iq4_nl, block_q8_0, lm_idot_iq4_nl_q8_0)
LM_HD float lmc_term_iq4_nl(const block_iq4_nl *x, const block_q8_0 *y, int part, int32_t isum, int32_t imin) {
    (void)part, (void)imin;
    return (lm_half_to_f32(y->d) * lm_half_to_f32(x->d)) * isum;
}

/* IQ4_XS: part ib = 32-weight sub-block ib, a float term of its own (no
 * integer reduction across lanes), as in the reference's (d4d8 * scale) * idot */
#define LMC_PARTS_IQ4_XS 8
#define LMC_INT_REDUCE_IQ4_XS 0
LM_HD void lmc_ints_iq4_xs(const block_iq4_xs *x, const block_q8_K *y, int ib, int32_t *isum, int32_t *imin) {
    *isum = lm_idot_iq4_xs_sub_q8_K(x, y, ib);
    *imin = 0;
}
LM_HD float lmc_term_iq4_xs(const block_iq4_xs *x, const block_q8_K *y, int ib, int32_t isum, int32_t imin) {
    (void)imin;
    const float d4d8 = lm_half_to_f32(x->d) * y->d;
    return (d4d8 * lm_iq4_xs_scale(x, ib)) * isum;
}

#endif /* LAMINA_IQ4_H */
