/* tq2_0.c — TQ2_0 on the CPU: the quantizer (byte-identical with ggml's
 * quantize_row_tq2_0_ref, which ggml_quantize_chunk calls; there is no
 * importance-weighted variant), rows to float, and the scalar reference dot
 * (kquant.h). */
#include "quants/tq2_0.h"
#include "quants/kernels.h"
#include "quants/ternary_quantize.h"

/* mirrors ggml's quantize_row_tq2_0_ref (one block): d = max |x|, each
 * weight rounded to -1, 0 or 1 and stored + 1 in the layout lm_k_q2bits reads */
static void quantize_block_tq2_0(const float *x, block_tq2_0 *y) {
    float id;
    y->d = lm_f32_to_half(ternary_scale(x, &id));
    for (int h = 0; h < 2; h++, x += 128) {
        for (int m = 0; m < 32; m++) {
            uint8_t q = 0;
            /* & 3: a level outside 0..2 (non-finite input) keeps ggml's bits */
            for (int k = 0; k < 4; k++) q += (uint8_t)((ternary_level(x[m + 32 * k], id) & 3) << (2 * k));
            y->qs[32 * h + m] = q;
        }
    }
}

size_t lm_quantize_tq2_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    (void)imatrix; /* ggml's quantize_tq2_0 ignores it too */
    block_tq2_0 *y = dst;
    const int64_t nb = nrows * (n_per_row / QK_K);
    for (int64_t i = 0; i < nb; i++) quantize_block_tq2_0(src + QK_K * i, &y[i]);
    return (size_t)nb * sizeof(block_tq2_0);
}

LM_DEFINE_DEQUANTIZE_ROW(tq2_0, block_tq2_0, QK_K)

/* mirrors ggml_vec_dot_tq2_0_q8_K_generic: one term d * isum per block,
 * summed in lanes (kquant.h) */
LM_KDOT_REF(tq2_0)
