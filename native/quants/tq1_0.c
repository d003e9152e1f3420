/* tq1_0.c — TQ1_0 on the CPU: the quantizer (byte-identical with ggml's
 * quantize_row_tq1_0_ref, which ggml_quantize_chunk calls; there is no
 * importance-weighted variant), rows to float, and the scalar reference dot
 * (kquant.h). */
#include "quants/tq1_0.h"
#include "quants/kernels.h"
#include "quants/ternary_quantize.h"

/* n levels (0..2) at x[0], x[stride], ... as one byte (tq1_0.h): the base-3
 * number with the first level most significant, padded with zero trits to
 * five, then scaled by 256/243 rounding up. The uint8_t arithmetic wraps
 * where ggml's does (only for levels outside 0..2, from non-finite input). */
static uint8_t pack_trits(const float *x, int stride, int n, float id) {
    uint8_t q = 0;
    for (int k = 0; k < n; k++) q = (uint8_t)(q * 3 + ternary_level(x[stride * k], id));
    for (int k = n; k < 5; k++) q = (uint8_t)(q * 3);
    return (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
}

/* mirrors ggml's quantize_row_tq1_0_ref (one block): d = max |x|; weights
 * 0..159 five to a byte across qs[0..31], 160..239 across qs[32..47], and
 * 240..255 four to a byte across qh */
static void quantize_block_tq1_0(const float *x, block_tq1_0 *y) {
    float id;
    y->d = lm_f32_to_half(ternary_scale(x, &id));
    for (int m = 0; m < 32; m++) y->qs[m] = pack_trits(x + m, 32, 5, id);
    for (int m = 0; m < 16; m++) y->qs[32 + m] = pack_trits(x + 160 + m, 16, 5, id);
    for (int j = 0; j < 4; j++) y->qh[j] = pack_trits(x + 240 + j, 4, 4, id);
}

size_t lm_quantize_tq1_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    (void)imatrix; /* ggml's quantize_tq1_0 ignores it too */
    block_tq1_0 *y = dst;
    const int64_t nb = nrows * (n_per_row / QK_K);
    for (int64_t i = 0; i < nb; i++) quantize_block_tq1_0(src + QK_K * i, &y[i]);
    return (size_t)nb * sizeof(block_tq1_0);
}

LM_DEFINE_DEQUANTIZE_ROW(tq1_0, block_tq1_0, QK_K)

/* mirrors ggml_vec_dot_tq1_0_q8_K_generic: one term d * isum per block,
 * summed in lanes (kquant.h) */
LM_KDOT_REF(tq1_0)
