/* kquant_quantize.h — what the k-quant quantizers (quants/q*_K.c) share:
 * the row driver, the 2-bit packing of Q2_K and Q3_K, and the scale packing
 * and requantization of Q4_K and Q5_K. The scale searches are in
 * kquant_search.c.
 *
 * The row driver has ggml_quantize_chunk semantics: without an imatrix every
 * block goes through the reference quantizer (ggml quantizes all rows as one
 * long row, which is the same thing block by block); with one, block i of
 * every row is weighted by imatrix[256*i .. 256*i+255]. A file defines
 * <t>_block_ref(x, y) and <t>_block_imatrix(x, y, qw), then expands
 * LM_KQUANT_DEFINE_QUANTIZE(<t>). The two ways to choose the sub-block scales
 * are ggml's: the reference one (ggml's quantize_row_<t>_ref) and the
 * importance-weighted one (quantize_row_<t>_impl); both then requantize every
 * weight against the scales as they were rounded into the block.
 *
 * Bit-exact with ggml only in ggml's order and precision of every float
 * operation (built with -ffp-contract=off).
 */
#ifndef LAMINA_KQUANT_QUANTIZE_H
#define LAMINA_KQUANT_QUANTIZE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "quants/kquant_search.h"
#include "quants/q4_K.h"

#define LM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LM_MIN(a, b) ((a) < (b) ? (a) : (b))

#define LM_KQUANT_DEFINE_QUANTIZE(t)                                                                              \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) { \
        block_##t *y = (block_##t *)dst;                                                                          \
        const int64_t nb = n_per_row / QK_K;                                                                      \
        for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {                                                   \
            for (int64_t i = 0; i < nb; ++i, ++y) {                                                               \
                if (imatrix)                                                                                      \
                    t##_block_imatrix(src + QK_K * i, y, imatrix + QK_K * i);                                     \
                else                                                                                              \
                    t##_block_ref(src + QK_K * i, y);                                                             \
            }                                                                                                     \
        }                                                                                                         \
        return (size_t)(nrows * nb) * sizeof(block_##t);                                                          \
    }

/* ------------------------------------------------------- Q2_K, Q3_K */

/* 2-bit levels L[0..255] into qs: weight 32k+l of each 128 goes to bits 2k of
 * byte l (the layout lm_k_q2bits reads) */
static inline void pack_q2bits(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* ------------------------------------------------------- Q4_K, Q5_K */

/* Scales and mins into the 12-byte layout lm_get_scale_min_k4 reads. Written
 * in ggml's order over j (0..3 assign, 4..7 OR into those bytes) so that even
 * an out-of-range level (a wrapped negative one from make_qp_quants) lands in
 * the same bits. */
static inline void pack_scales_mins(uint8_t *scales, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            scales[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* reference-path scales: rounded against max_scale/63 and max_min/63 */
static inline void k4_scales_ref(uint8_t *y_scales, lm_half *y_d, lm_half *y_dmin, const float *scales,
                                 const float *mins) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[QK_K / 32], lm[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        /* narrowed to uint8 before the clamp, as in ggml */
        ls[j] = LM_MIN(63, (uint8_t)lm_nearest_int(inv_scale * scales[j]));
        lm[j] = LM_MIN(63, (uint8_t)lm_nearest_int(inv_min * mins[j]));
    }
    pack_scales_mins(y_scales, ls, lm);
    *y_d = lm_f32_to_half(max_scale / 63.f);
    *y_dmin = lm_f32_to_half(max_min / 63.f);
}

/* ggml's _impl weighting: sigma2 = 2*mean(x^2) over the whole super-block, */
static inline float k4_sigma2(const float *x) {
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    return 2 * sum_x2 / QK_K;
}

/* then weight qw*sqrt(sigma2 + x^2) per weight; returns the sub-block's sum */
static inline float k4_imatrix_weights(const float *x, const float *qw, float sigma2, float *weights) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrtf(sigma2 + x[l] * x[l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    return sumw;
}

/* levels of every sub-block whose scale survived rounding, against the
 * stored half-precision d/dmin; nmax 15 (Q4_K) or 31 (Q5_K) */
static inline void k4_requantize(const float *x, const uint8_t *y_scales, lm_half y_d, lm_half y_dmin, int nmax,
                                 uint8_t *L) {
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        lm_get_scale_min_k4(j, y_scales, &sc, &m);
        const float d = lm_half_to_f32(y_d) * sc;
        if (!d) continue;
        const float dm = lm_half_to_f32(y_dmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            const int l = lm_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)LM_MAX(0, LM_MIN(nmax, l));
        }
    }
}

/* ggml's reference sub-block search (quantize_row_q4_K_ref / _q5_K_ref):
 * make_qkx2_quants on each sub-block of 32, weighted by av_x + |x|, with
 * levels 0..nmax and nstep + 1 candidate scales from rmin */
static inline void k4_search_ref(const float *x, int nmax, float rmin, int nstep, uint8_t *L, float *scales,
                                 float *mins) {
    uint8_t Laux[32];
    float weights[32];
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] =
            lm_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    }
}

/* ggml's importance-weighted search (quantize_row_q4_K_impl / _q5_K_impl):
 * make_qkx3_quants on each sub-block with weights qw*sqrt(sigma2 + x^2), then
 * the sub-block scales and mins fitted by make_qp_quants to 6-bit levels Ls,
 * Lm against *d_block, *m_block */
static inline void k4_search_imatrix(const float *x, const float *qw, int nmax, uint8_t *L, uint8_t *Ls, uint8_t *Lm,
                                     float *d_block, float *m_block) {
    uint8_t Laux[32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    const float sigma2 = k4_sigma2(x);
    for (int j = 0; j < QK_K / 32; ++j) {
        sw[j] = k4_imatrix_weights(x + 32 * j, qw + 32 * j, sigma2, weights);
        scales[j] =
            lm_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    *d_block = lm_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    *m_block = lm_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
}

#endif /* LAMINA_KQUANT_QUANTIZE_H */
