/* q8_K.c — Q8_K on the CPU: the activation format of the k-quant and IQ4_XS
 * dots, quantized from float rows and read back. */
#include <math.h>
#include <string.h>

#include "quants/kernels.h"
#include "quants/q8_K.h"

/* mirrors ggml's quantize_row_q8_K_ref */
void lm_from_float_q8_K(const float *x, void *vy, int64_t k) {
    block_q8_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        /* max: the signed value of the first largest |x| (ties keep the
         * first, so the scale's sign is ggml's) */
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            /* ggml leaves bsums untouched here; zero them so the output
             * never depends on what the buffer held */
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = lm_q8_K_iscale(max);
        for (int j = 0; j < QK_K; j++) y[i].qs[j] = lm_q8_K_quant(x[j], iscale);
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = lm_q8_K_d(iscale);
    }
}

LM_DEFINE_DEQUANTIZE_ROW(q8_K, block_q8_K, QK_K)
