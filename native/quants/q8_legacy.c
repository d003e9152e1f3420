/* q8_legacy.c — the 8-bit activation formats Q8_0 and Q8_1: what activations
 * are quantized to before a dot with a legacy or IQ4_NL weight row. */
#include <math.h>

#include "block_math_legacy.h"
#include "blocks.h"
#include "type_kernels.h"

/* largest |x| of one 32-value block, NaN-propagating like ggml's MAX(amax, fabsf(v)) */
static float block_amax(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    return amax;
}

/* mirrors ggml's quantize_row_q8_0_ref: Q8_0 weights (files), not activations */
void lm_quantize_row_q8_0_ref(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        const float d = block_amax(x) / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Activations (the dot partners of legacy and IQ4_NL weights): ggml-cpu's
 * x86 quantize_row_q8_0 / q8_1, per value as block_math_legacy.h says. Q8_1's
 * s is d times the sum of the rounded quants. */
void lm_quantize_row_q8_0_act(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        const float amax = block_amax(x), id = lm_q8_act_inv(amax);
        y[i].d = lm_f32_to_half(lm_q8_act_scale(amax));
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = lm_q8_act_quant(x[j], id);
    }
}

void lm_quantize_row_q8_1_act(const float *x, void *vy, int64_t k) {
    block_q8_1 *y = vy;
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        const float amax = block_amax(x), d = lm_q8_act_scale(amax), id = lm_q8_act_inv(amax);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = lm_q8_act_quant(x[j], id);
            sum += y[i].qs[j];
        }
        y[i].d = lm_f32_to_half(d);
        y[i].s = lm_f32_to_half(d * (float)sum);
    }
}

void lm_dequantize_row_q8_1(const void *vx, float *y, int64_t k) {
    const block_q8_1 *x = vx;
    for (int64_t i = 0; i < k / QK8_1; i++) lm_dequant_block_q8_1(&x[i], y + i * QK8_1);
}
