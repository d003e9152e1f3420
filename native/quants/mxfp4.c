/* mxfp4.c — MXFP4 on the CPU: the quantizer (byte-identical with ggml's
 * quantize_row_mxfp4_ref, which ggml_quantize_chunk calls; there is no
 * importance-weighted variant), rows to float, and the scalar reference dot. */
#include <math.h>

#include "quants/kernels.h"
#include "quants/mxfp4.h"

/* The shared exponent: E8M0 of amax / 4, rounded down, so the largest value
 * lands on the doubled levels 8 or 12 (4 or 6 in E2M1). ggml converts the
 * float expression straight to uint8_t, which C leaves undefined below 0
 * (amax < 2^-125) and for amax = inf; its x86 builds convert through int32
 * (out of range: INT32_MIN) and keep the low byte, and so does this, on
 * every platform. */
static uint8_t mxfp4_exponent(float amax) {
    if (!(amax > 0.0f)) return 0;
    const float e = floorf(log2f(amax)) - 2 + 127;
    const int32_t i = isfinite(e) ? (int32_t)e : INT32_MIN;
    return (uint8_t)(i & 0xFF);
}

/* mirrors ggml's best_index_mxfp4 (NVFP4's quantizer uses it too): the level
 * nearest x at scale d, the first of equally near ones (so +0, never -0) */
int lm_e2m1_best_index(float x, float d) {
    int best = 0;
    float best_err = fabsf(lm_kvalues_mxfp4[0] * d - x);
    for (int i = 1; i < 16; i++) {
        const float err = fabsf(lm_kvalues_mxfp4[i] * d - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return best;
}

/* mirrors ggml's quantize_row_mxfp4_ref (one block) */
static void quantize_block_mxfp4(const float *x, block_mxfp4 *y) {
    float amax = 0.0f;
    for (int j = 0; j < QK_MXFP4; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]);
    y->e = mxfp4_exponent(amax);
    const float d = lm_e8m0_to_f32_half(y->e);
    for (int j = 0; j < QK_MXFP4 / 2; j++)
        y->qs[j] = (uint8_t)(lm_e2m1_best_index(x[j], d) | (lm_e2m1_best_index(x[j + QK_MXFP4 / 2], d) << 4));
}

size_t lm_quantize_mxfp4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    (void)imatrix; /* ggml's quantize_mxfp4 ignores it too */
    block_mxfp4 *y = dst;
    const int64_t nb = nrows * (n_per_row / QK_MXFP4);
    for (int64_t i = 0; i < nb; i++) quantize_block_mxfp4(src + QK_MXFP4 * i, &y[i]);
    return (size_t)nb * sizeof(block_mxfp4);
}

LM_DEFINE_DEQUANTIZE_ROW(mxfp4, block_mxfp4, QK_MXFP4)

/* mirrors ggml_vec_dot_mxfp4_q8_0_generic: blocks summed in order */
void lm_vec_dot_mxfp4_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_mxfp4 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_MXFP4; i++)
        sum += lm_mxfp4_q8_0_scale(&x[i], &y[i]) * lm_idot_mxfp4_q8_0(&x[i], &y[i]);
    *s = sum;
}
