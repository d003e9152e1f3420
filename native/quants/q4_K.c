/* q4_K.c — Q4_K on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot
 * (kquant.h).
 *
 * Reference path (imatrix NULL, ggml's quantize_row_q4_K_ref): per sub-block
 * make_qkx2_quants with weights av_x + |x|, then scales and mins rounded
 * linearly against their maxima. Importance path (ggml's
 * quantize_row_q4_K_impl): make_qkx3_quants with weights qw*sqrt(sigma2 + x^2),
 * then the scales and mins fitted by make_qp_quants. Both requantize against
 * the rounded scales (kquant_quantize.h, shared with Q5_K). */
#include "quants/q4_K.h"
#include "quants/kernels.h"
#include "quants/kquant_quantize.h"

static void q4_K_pack(const uint8_t *L, uint8_t *q) {
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

/* mirrors ggml's quantize_row_q4_K_ref (one block) */
static void q4_K_block_ref(const float *x, block_q4_K *y) {
    uint8_t L[QK_K];
    float mins[QK_K / 32], scales[QK_K / 32];
    k4_search_ref(x, 15, -1.f, 20, L, scales, mins);
    k4_scales_ref(y->scales, &y->d, &y->dmin, scales, mins);
    k4_requantize(x, y->scales, y->d, y->dmin, 15, L);
    q4_K_pack(L, y->qs);
}

/* mirrors ggml's quantize_row_q4_K_impl with quant_weights (one block) */
static void q4_K_block_imatrix(const float *x, block_q4_K *y, const float *qw) {
    uint8_t L[QK_K], Ls[QK_K / 32], Lm[QK_K / 32];
    float d_block, m_block;
    k4_search_imatrix(x, qw, 15, L, Ls, Lm, &d_block, &m_block);
    pack_scales_mins(y->scales, Ls, Lm);   /* no clamp to 63 here, unlike Q5_K's _impl */
    y->d = lm_f32_to_half(d_block);
    y->dmin = lm_f32_to_half(m_block);
    k4_requantize(x, y->scales, y->d, y->dmin, 15, L);
    q4_K_pack(L, y->qs);
}

LM_KQUANT_DEFINE_QUANTIZE(q4_K)

LM_DEFINE_DEQUANTIZE_ROW(q4_K, block_q4_K, QK_K)

LM_KDOT_REF_MINS(q4_K)
