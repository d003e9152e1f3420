/* q5_0.c — Q5_0 on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot. */
#include "quants/q5_0.h"
#include "quants/kernels.h"
#include "quants/legacy_quantize.h"

/* mirrors ggml's quantize_row_q5_0_ref */
static void quantize_row_q5_0_ref(const float *x, block_q5_0 *y, int64_t k) {
    uint8_t q[QK5_0];
    for (int64_t i = 0; i < k / QK5_0; i++, x += QK5_0) {
        const float d = signed_absmax(x, QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK5_0; j++) q[j] = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

LM_QUANTIZE_LEGACY(q5_0, QK5_0, quantize_row_qx_0_weighted, 1)

LM_DEFINE_DEQUANTIZE_ROW(q5_0, block_q5_0, QK5_0)

/* x Q8_0: sum of (dx * dy) * idot */
void lm_vec_dot_q5_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_0; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q5_0_q8_0(&x[i], &y[i]);
    *s = sum;
}
