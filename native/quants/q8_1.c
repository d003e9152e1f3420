/* q8_1.c — Q8_1 on the CPU: the activation format of Q4_1 and Q5_1 weights,
 * quantized from float rows and read back. */
#include "quants/q8_1.h"
#include "quants/kernels.h"
#include "quants/legacy_quantize.h"

/* Activations: ggml-cpu's x86 quantize_row_q8_1, per value as legacy.h says;
 * s is d times the sum of the rounded quants */
void lm_from_float_q8_1(const float *x, void *vy, int64_t k) {
    block_q8_1 *y = vy;
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        const float amax = block_amax(x), d = lm_q8_act_scale(amax), id = lm_q8_act_inv(amax);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = lm_q8_act_quant(x[j], id);
            sum += y[i].qs[j];
        }
        y[i].d = lm_f32_to_half(d);
        y[i].s = lm_q8_1_s(sum, d);
    }
}

LM_DEFINE_DEQUANTIZE_ROW(q8_1, block_q8_1, QK8_1)
