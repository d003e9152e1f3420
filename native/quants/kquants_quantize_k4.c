/* kquants_quantize_k4.c — Q4_K and Q5_K quantizers (8 sub-blocks of 32 with
 * 6-bit scales and mins), byte-identical with ggml_quantize_chunk.
 *
 * Reference path (imatrix NULL, ggml's quantize_row_<t>_ref): per sub-block
 * make_qkx2_quants with weights av_x + |x|, then scales and mins rounded
 * linearly against their maxima. Importance path (ggml's
 * quantize_row_<t>_impl): make_qkx3_quants with weights qw*sqrt(sigma2 + x^2),
 * then the scales and mins fitted by make_qp_quants. Both requantize against
 * the rounded scales (shared below).
 */
#include <math.h>

#include "blocks.h"
#include "block_math_k.h"
#include "kquant_search.h"
#include "kquants_quantize.h"
#include "type_kernels.h"

#define LM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LM_MIN(a, b) ((a) < (b) ? (a) : (b))

/* Scales and mins into the 12-byte layout lm_get_scale_min_k4 reads. Written
 * in ggml's order over j (0..3 assign, 4..7 OR into those bytes) so that even
 * an out-of-range level (a wrapped negative one from make_qp_quants) lands in
 * the same bits. */
static void pack_scales_mins(uint8_t *scales, const uint8_t *ls, const uint8_t *lm) {
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
static void k4_scales_ref(uint8_t *y_scales, lm_half *y_d, lm_half *y_dmin, const float *scales,
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
static float k4_sigma2(const float *x) {
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    return 2 * sum_x2 / QK_K;
}

/* then weight qw*sqrt(sigma2 + x^2) per weight; returns the sub-block's sum */
static float k4_imatrix_weights(const float *x, const float *qw, float sigma2, float *weights) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrtf(sigma2 + x[l] * x[l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    return sumw;
}

/* levels of every sub-block whose scale survived rounding, against the
 * stored half-precision d/dmin; nmax 15 (Q4_K) or 31 (Q5_K) */
static void k4_requantize(const float *x, const uint8_t *y_scales, lm_half y_d, lm_half y_dmin, int nmax,
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

/* ================================================================= Q4_K */

static void q4_K_pack(const uint8_t *L, uint8_t *q) {
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

/* mirrors ggml's quantize_row_q4_K_ref (one block) */
static void q4_K_block_ref(const float *x, block_q4_K *y) {
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = lm_make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
    }
    k4_scales_ref(y->scales, &y->d, &y->dmin, scales, mins);
    k4_requantize(x, y->scales, y->d, y->dmin, 15, L);
    q4_K_pack(L, y->qs);
}

/* mirrors ggml's quantize_row_q4_K_impl with quant_weights (one block) */
static void q4_K_block_imatrix(const float *x, block_q4_K *y, const float *qw) {
    uint8_t L[QK_K], Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    const float sigma2 = k4_sigma2(x);
    for (int j = 0; j < QK_K / 32; ++j) {
        sw[j] = k4_imatrix_weights(x + 32 * j, qw + 32 * j, sigma2, weights);
        scales[j] = lm_make_qkx3_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    const float d_block = lm_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = lm_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    pack_scales_mins(y->scales, Ls, Lm);   /* no clamp to 63 here, unlike Q5_K's _impl */
    y->d = lm_f32_to_half(d_block);
    y->dmin = lm_f32_to_half(m_block);
    k4_requantize(x, y->scales, y->d, y->dmin, 15, L);
    q4_K_pack(L, y->qs);
}

/* ================================================================= Q5_K */

/* low nibbles as in Q4_K; the fifth bit of weight l of sub-block j goes to
 * bit j of qh[l] */
static void q5_K_pack(const uint8_t *L, uint8_t *qh, uint8_t *ql) {
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
            int l2 = L[n + j + 32];
            if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
    }
}

/* mirrors ggml's quantize_row_q5_K_ref (one block) */
static void q5_K_block_ref(const float *x, block_q5_K *y) {
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = lm_make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
    }
    k4_scales_ref(y->scales, &y->d, &y->dmin, scales, mins);
    k4_requantize(x, y->scales, y->d, y->dmin, 31, L);
    q5_K_pack(L, y->qh, y->qs);
}

/* mirrors ggml's quantize_row_q5_K_impl with quant_weights (one block) */
static void q5_K_block_imatrix(const float *x, block_q5_K *y, const float *qw) {
    uint8_t L[QK_K], Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    const float sigma2 = k4_sigma2(x);
    for (int j = 0; j < QK_K / 32; ++j) {
        sw[j] = k4_imatrix_weights(x + 32 * j, qw + 32 * j, sigma2, weights);
        scales[j] = lm_make_qkx3_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    const float d_block = lm_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = lm_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; ++j) {
        Ls[j] = LM_MIN(63, Ls[j]);
        Lm[j] = LM_MIN(63, Lm[j]);
    }
    pack_scales_mins(y->scales, Ls, Lm);
    y->d = lm_f32_to_half(d_block);
    y->dmin = lm_f32_to_half(m_block);
    k4_requantize(x, y->scales, y->d, y->dmin, 31, L);
    q5_K_pack(L, y->qh, y->qs);
}

LM_KQUANT_DEFINE_QUANTIZE(q4_K)
LM_KQUANT_DEFINE_QUANTIZE(q5_K)
