/* q6_K.c — Q6_K on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot
 * (kquant.h). */
#include "quants/q6_K.h"
#include "quants/kernels.h"
#include "quants/kquant_quantize.h"

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

LM_KQUANT_DEFINE_QUANTIZE(q6_K)

LM_DEFINE_DEQUANTIZE_ROW(q6_K, block_q6_K, QK_K)

LM_KDOT_REF(q6_K)
