/* q2_K.c — Q2_K on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk: the reference path without an imatrix, ggml's
 * quantize_row_q2_K_impl with one), rows to float, and the scalar reference
 * dot (kquant.h). */
#include "quants/q2_K.h"
#include "quants/kernels.h"
#include "quants/kquant_quantize.h"

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

LM_KQUANT_DEFINE_QUANTIZE(q2_K)

LM_DEFINE_DEQUANTIZE_ROW(q2_K, block_q2_K, QK_K)

LM_KDOT_REF_MINS(q2_K)
