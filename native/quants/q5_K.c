/* q5_K.c — Q5_K on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk; the scheme of Q4_K, see q4_K.c, with 5-bit levels),
 * rows to float, and the scalar reference dot (kquant.h). */
#include "quants/q5_K.h"
#include "quants/kernels.h"
#include "quants/kquant_quantize.h"

/* low nibbles as in Q4_K; the fifth bit of weight l of sub-block j goes to
 * bit j of qh[l] */
static void q5_K_pack(const uint8_t *L, uint8_t *qh, uint8_t *ql) {
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
    }
}

/* mirrors ggml's quantize_row_q5_K_ref (one block) */
static void q5_K_block_ref(const float *x, block_q5_K *y) {
    uint8_t L[QK_K];
    float mins[QK_K / 32], scales[QK_K / 32];
    k4_search_ref(x, 31, -0.5f, 15, L, scales, mins);
    k4_scales_ref(y->scales, &y->d, &y->dmin, scales, mins);
    k4_requantize(x, y->scales, y->d, y->dmin, 31, L);
    q5_K_pack(L, y->qh, y->qs);
}

/* mirrors ggml's quantize_row_q5_K_impl with quant_weights (one block) */
static void q5_K_block_imatrix(const float *x, block_q5_K *y, const float *qw) {
    uint8_t L[QK_K], Ls[QK_K / 32], Lm[QK_K / 32];
    float d_block, m_block;
    k4_search_imatrix(x, qw, 31, L, Ls, Lm, &d_block, &m_block);
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

LM_KQUANT_DEFINE_QUANTIZE(q5_K)

LM_DEFINE_DEQUANTIZE_ROW(q5_K, block_q5_K, QK_K)

LM_KDOT_REF_MINS(q5_K)
