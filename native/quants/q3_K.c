/* q3_K.c — Q3_K on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk: the reference path without an imatrix, ggml's
 * quantize_row_q3_K_impl with one), rows to float, and the scalar reference
 * dot (kquant.h). */
#include "quants/q3_K.h"
#include "quants/kernels.h"
#include "quants/kquant_quantize.h"

/* store biased scale l (0..63) of sub-block j into Q3_K's 12-byte layout
 * (the one lm_q3_K_scale reads); the bytes must start zeroed */
static void q3_K_put_scale(uint8_t *scales, int j, int l) {
    if (j < 8)
        scales[j] = (uint8_t)(l & 0xF);
    else
        scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
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
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
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

LM_KQUANT_DEFINE_QUANTIZE(q3_K)

LM_DEFINE_DEQUANTIZE_ROW(q3_K, block_q3_K, QK_K)

LM_KDOT_REF(q3_K)
