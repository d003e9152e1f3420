/* kquants_quantize.c — Q2_K, Q3_K and Q6_K quantizers (16-weight sub-blocks),
 * byte-identical with ggml_quantize_chunk.
 *
 * Each type has two ways to choose the sub-block scales, as in ggml: the
 * reference one (imatrix NULL: ggml's quantize_row_<t>_ref) and the importance
 * weighted one (ggml's quantize_row_<t>_impl). Both then requantize every
 * weight against the scales as they were rounded into the block, which is
 * shared here. The scale searches live in kquant_search.c.
 */
#include <math.h>

#include "blocks.h"
#include "block_math_k.h"
#include "kquant_search.h"
#include "kquants_quantize.h"
#include "type_kernels.h"

#define LM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LM_MIN(a, b) ((a) < (b) ? (a) : (b))

/* 2-bit levels L[0..255] into qs: weight 32k+l of each 128 goes to bits 2k of
 * byte l (the layout lm_k_q2bits reads) */
static void pack_q2bits(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* ================================================================= Q2_K */

/* Requantize against the stored (half-rounded) d, dmin and 4-bit scales and
 * pack; sub-blocks whose scale rounded to zero keep the search's levels. */
static void q2_K_finish(const float *x, block_q2_K *y, uint8_t *L) {
    const float dall = lm_half_to_f32(y->d);
    const float mall = lm_half_to_f32(y->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * (y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = mall * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            const int l = lm_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)LM_MAX(0, LM_MIN(3, l));
        }
    }
    pack_q2bits(L, y->qs);
}

/* mirrors ggml's quantize_row_q2_K_ref (one block) */
static void q2_K_block_ref(const float *x, block_q2_K *y) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;

    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
        scales[j] = lm_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = (uint8_t)lm_nearest_int(iscale * scales[j]);
        y->d = lm_f32_to_half(max_scale / q4scale);
    } else {
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = 0;
        y->d = lm_f32_to_half(0.f);
    }
    if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] |= (uint8_t)(lm_nearest_int(iscale * mins[j]) << 4);
        y->dmin = lm_f32_to_half(max_min / q4scale);
    } else {
        y->dmin = lm_f32_to_half(0.f);
    }
    q2_K_finish(x, y, L);
}

/* mirrors ggml's quantize_row_q2_K_impl (one block); qw = this block's imatrix */
static void q2_K_block_imatrix(const float *x, block_q2_K *y, const float *qw) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];

    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        sw[j] = 0;
        for (int l = 0; l < 16; ++l) sw[j] += weight[l];
        scales[j] = lm_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    /* the 4-bit scales and mins are themselves fitted, weighted by sub-block importance */
    const float dm = lm_make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    const float mm = lm_make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    y->d = lm_f32_to_half(dm);
    y->dmin = lm_f32_to_half(mm);
    for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2_K_finish(x, y, L);
}

/* ================================================================= Q3_K */

/* store biased scale l (0..63) of sub-block j into Q3_K's 12-byte layout
 * (the one lm_q3_K_scale reads); the bytes must start zeroed */
static void q3_K_put_scale(uint8_t *scales, int j, int l) {
    if (j < 8) scales[j] = (uint8_t)(l & 0xF);
    else scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

/* requantize against the stored d and 6-bit scales, split off the high bit
 * into hmask (weight i -> bit i/32 of byte i%32) and pack the low 2 bits */
static void q3_K_finish(const float *x, block_q3_K *y, int8_t *L) {
    const float dall = lm_half_to_f32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * lm_q3_K_scale(j, y->scales);
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = lm_nearest_int(x[16 * j + ii] / d);
            l = LM_MAX(-4, LM_MIN(3, l));
            L[16 * j + ii] = (int8_t)(l + 4);
        }
    }
    memset(y->hmask, 0, QK_K / 8);
    uint8_t low[QK_K];
    for (int j = 0; j < QK_K; ++j) {
        low[j] = (uint8_t)L[j];
        if (L[j] > 3) {
            y->hmask[j % (QK_K / 8)] |= (uint8_t)(1u << (j / (QK_K / 8)));
            low[j] -= 4;
        }
    }
    pack_q2bits(low, y->qs);
}

/* mirrors ggml's quantize_row_q3_K_ref (one block) */
static void q3_K_block_ref(const float *x, block_q3_K *y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];

    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        scales[j] = lm_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
        const float scale = fabsf(scales[j]);
        if (scale > amax) { amax = scale; max_scale = scales[j]; }
    }
    memset(y->scales, 0, 12);
    if (max_scale) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            /* ggml narrows to int8 before clamping */
            int8_t l = (int8_t)lm_nearest_int(iscale * scales[j]);
            l = (int8_t)(LM_MAX(-32, LM_MIN(31, l)) + 32);
            q3_K_put_scale(y->scales, j, l);
        }
        y->d = lm_f32_to_half(1 / iscale);
    } else {
        y->d = lm_f32_to_half(0.f);
    }
    q3_K_finish(x, y, L);
}

/* mirrors ggml's quantize_row_q3_K_impl with quant_weights (one block) */
static void q3_K_block_imatrix(const float *x, block_q3_K *y, const float *qw) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];

    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = lm_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    memset(y->scales, 0, 12);
    /* nmax 32 gives levels 0..63 already biased by 32, as the format stores them */
    const float d_block = lm_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < QK_K / 16; ++j) q3_K_put_scale(y->scales, j, Ls[j]);
    y->d = lm_f32_to_half(d_block);
    q3_K_finish(x, y, L);
}

/* ================================================================= Q6_K */

/* mirrors ggml's quantize_row_q6_K_ref (qw NULL: weights x^2) and
 * quantize_row_q6_K_impl (qw = the block's imatrix, used as the weights
 * directly), which differ only in the weights of the sub-block search */
static void q6_K_block(const float *x, block_q6_K *y, const float *qw) {
    int8_t L[QK_K];
    float scales[QK_K / 16];

    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float scale = lm_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < LM_GROUP_MAX_EPS) {
        memset(y, 0, sizeof(*y));
        y->d = lm_f32_to_half(0.f);
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = lm_f32_to_half(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib] = (int8_t)LM_MIN(127, lm_nearest_int(iscale * scales[ib]));

    const float dall = lm_half_to_f32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * y->scales[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = lm_nearest_int(x[16 * j + ii] / d);
            l = LM_MAX(-32, LM_MIN(31, l));
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    /* the layout lm_q6_K_level reads: low nibbles in ql, high bit pairs in qh */
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0xF;
            const uint8_t q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF;
            const uint8_t q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

static void q6_K_block_ref(const float *x, block_q6_K *y) { q6_K_block(x, y, NULL); }

static void q6_K_block_imatrix(const float *x, block_q6_K *y, const float *qw) { q6_K_block(x, y, qw); }

LM_KQUANT_DEFINE_QUANTIZE(q2_K)
LM_KQUANT_DEFINE_QUANTIZE(q3_K)
LM_KQUANT_DEFINE_QUANTIZE(q6_K)
