/* q8_0.c — Q8_0 on the CPU: as weights, the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float and the scalar reference dot; as
 * activations (the dot partner of Q4_0, Q5_0, Q8_0 and IQ4_NL weights), the
 * row quantizer. */
#include <math.h>

#include "quants/kernels.h"
#include "quants/legacy_quantize.h"
#include "quants/q8_0.h"

/* mirrors ggml's quantize_row_q8_0_ref: Q8_0 weights (files), not activations */
static void quantize_row_q8_0_ref(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        const float d = block_amax(x) / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ggml's quantize_q8_0 ignores the importance matrix */
size_t lm_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    quantize_row_q8_0_ref(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row / QK8_0) * sizeof(block_q8_0);
}

/* Activations: ggml-cpu's x86 quantize_row_q8_0, per value as legacy.h says */
void lm_from_float_q8_0(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        const float amax = block_amax(x), id = lm_q8_act_inv(amax);
        y[i].d = lm_f32_to_half(lm_q8_act_scale(amax));
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = lm_q8_act_quant(x[j], id);
    }
}

LM_DEFINE_DEQUANTIZE_ROW(q8_0, block_q8_0, QK8_0)

/* x Q8_0: sum of idot * (dx * dy) */
void lm_vec_dot_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++)
        sum += lm_idot_q8_0_q8_0(&x[i], &y[i]) * (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d));
    *s = sum;
}
