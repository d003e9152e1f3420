/* q5_1.c — Q5_1 on the CPU: the quantizer (byte-identical with
 * ggml_quantize_chunk), rows to float, and the scalar reference dot. */
#include "quants/q5_1.h"
#include "quants/kernels.h"
#include "quants/legacy_quantize.h"

/* mirrors ggml's quantize_row_q5_1_ref (which, unlike q4_1, does not clamp) */
static void quantize_row_q5_1_ref(const float *x, block_q5_1 *y, int64_t k) {
    uint8_t q[QK5_1];
    for (int64_t i = 0; i < k / QK5_1; i++, x += QK5_1) {
        float min, max;
        block_min_max(x, QK5_1, &min, &max);
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        y[i].m = lm_f32_to_half(min);
        for (int j = 0; j < QK5_1; j++) q[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

LM_QUANTIZE_LEGACY(q5_1, QK5_1, quantize_row_qx_1_weighted, 1)

LM_DEFINE_DEQUANTIZE_ROW(q5_1, block_q5_1, QK5_1)

/* x Q8_1, with the min term from s as in q4_1.c */
void lm_vec_dot_q5_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_1; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q5_1_q8_1(&x[i], &y[i]) +
               lm_half_to_f32(x[i].m) * lm_half_to_f32(y[i].s);
    *s = sum;
}
