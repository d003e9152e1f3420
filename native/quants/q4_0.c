/* q4_0.c — Q4_0 on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot. */
#include "quants/q4_0.h"
#include "quants/kernels.h"
#include "quants/legacy_quantize.h"

/* mirrors ggml's quantize_row_q4_0_ref: d = -max/8 maps the extreme value to
 * level 0, the rest round half up with 8.5 then clamp at 15 */
static void quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t k) {
    uint8_t q[QK4_0];
    for (int64_t i = 0; i < k / QK4_0; i++, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK4_0; j++) q[j] = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
        pack_q4(q, y[i].qs);
    }
}

LM_QUANTIZE_LEGACY(q4_0, QK4_0, quantize_row_qx_0_weighted, 0)

LM_DEFINE_DEQUANTIZE_ROW(q4_0, block_q4_0, QK4_0)

/* x Q8_0: sum of idot * dx * dy */
void lm_vec_dot_q4_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_0; i++)
        sum += lm_idot_q4_0_q8_0(&x[i], &y[i]) * lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d);
    *s = sum;
}
