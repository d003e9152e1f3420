/* q8_k.c — Q8_K, the activation format every k-quant dot consumes: 256 int8
 * values with one float scale, plus the sums of each run of 16 (bsums) so a
 * dot can fold a weight block's min/offset term in without touching qs. */
#include <math.h>
#include <string.h>

#include "blocks.h"
#include "type_kernels.h"

/* mirrors ggml's quantize_row_q8_K_ref */
void lm_quantize_row_q8_K_ref(const float *x, void *vy, int64_t k) {
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
        /* -127, not -128: every q lies in [-127, 127], so SIMD dots may
         * negate q8 values (sign_epi8) without overflow */
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = lm_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* mirrors ggml's dequantize_row_q8_K */
void lm_dequantize_row_q8_K(const void *vx, float *y, int64_t k) {
    const block_q8_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++, y += QK_K)
        for (int j = 0; j < QK_K; j++) y[j] = x[i].d * x[i].qs[j];
}
