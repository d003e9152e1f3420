/* q4_1.c — Q4_1 on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot. */
#include "quants/q4_1.h"
#include "quants/kernels.h"
#include "quants/legacy_quantize.h"

/* mirrors ggml's quantize_row_q4_1_ref */
static void quantize_row_q4_1_ref(const float *x, block_q4_1 *y, int64_t k) {
    uint8_t q[QK4_1];
    for (int64_t i = 0; i < k / QK4_1; i++, x += QK4_1) {
        float min, max;
        block_min_max(x, QK4_1, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        y[i].m = lm_f32_to_half(min);
        for (int j = 0; j < QK4_1; j++) q[j] = (uint8_t)imin(15, (int8_t)((x[j] - min) * id + 0.5f));
        pack_q4(q, y[i].qs);
    }
}

LM_QUANTIZE_LEGACY(q4_1, QK4_1, quantize_row_qx_1_weighted, 0)

LM_DEFINE_DEQUANTIZE_ROW(q4_1, block_q4_1, QK4_1)

/* x Q8_1: d*q + m against a, summed, is dx*dy*idot + m * (dy * sum(qa)),
 * and Q8_1 stores dy * sum(qa) as s */
void lm_vec_dot_q4_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_1; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q4_1_q8_1(&x[i], &y[i]) +
               lm_half_to_f32(x[i].m) * lm_half_to_f32(y[i].s);
    *s = sum;
}
