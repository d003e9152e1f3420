/* legacy_dequant_dot.c — Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: rows to float, and the
 * scalar reference dots against their activation formats (Q8_0 or Q8_1).
 * The block math lives in block_math_legacy.h; the scalar dots combine it in
 * the order of ggml's ggml_vec_dot_<t>_q8_<p>_generic. */
#include "block_math_legacy.h"
#include "blocks.h"
#include "type_kernels.h"

#define LM_DEQUANT_ROW(t, qk)                                                   \
    void lm_dequantize_row_##t(const void *vx, float *y, int64_t k) {          \
        const block_##t *x = vx;                                                \
        for (int64_t i = 0; i < k / (qk); i++) lm_dequant_block_##t(&x[i], y + i * (qk)); \
    }

LM_DEQUANT_ROW(q4_0, QK4_0)
LM_DEQUANT_ROW(q4_1, QK4_1)
LM_DEQUANT_ROW(q5_0, QK5_0)
LM_DEQUANT_ROW(q5_1, QK5_1)
LM_DEQUANT_ROW(q8_0, QK8_0)

/* symmetric formats x Q8_0: sum of idot * (dx * dy) */
void lm_vec_dot_q4_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_0; i++)
        sum += lm_idot_q4_0_q8_0(&x[i], &y[i]) * lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d);
    *s = sum;
}

void lm_vec_dot_q5_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_0; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q5_0_q8_0(&x[i], &y[i]);
    *s = sum;
}

void lm_vec_dot_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++)
        sum += lm_idot_q8_0_q8_0(&x[i], &y[i]) * (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d));
    *s = sum;
}

/* formats with a min x Q8_1: d*q + m against a, summed, is
 * dx*dy*idot + m * (dy * sum(qa)), and Q8_1 stores dy * sum(qa) as s */
void lm_vec_dot_q4_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_1; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q4_1_q8_1(&x[i], &y[i]) +
               lm_half_to_f32(x[i].m) * lm_half_to_f32(y[i].s);
    *s = sum;
}

void lm_vec_dot_q5_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_1; i++)
        sum += (lm_half_to_f32(x[i].d) * lm_half_to_f32(y[i].d)) * lm_idot_q5_1_q8_1(&x[i], &y[i]) +
               lm_half_to_f32(x[i].m) * lm_half_to_f32(y[i].s);
    *s = sum;
}
