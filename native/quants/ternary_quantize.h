/* ternary_quantize.h — what the TQ1_0 and TQ2_0 quantizers (tq1_0.c,
 * tq2_0.c) share: ggml's absmax scale and rounding of a weight to a trit.
 *
 * Bit-exact with ggml only in ggml's order and precision of every float
 * operation (built with -ffp-contract=off). */
#ifndef LAMINA_TERNARY_QUANTIZE_H
#define LAMINA_TERNARY_QUANTIZE_H

#include <math.h>

#include "quants/blocks.h"

/* d = max |x| of a 256-weight block, NaN-propagating like ggml's
 * MAX(amax, fabsf(v)); *id = 1/d, or 0 for an all-zero block */
static inline float ternary_scale(const float *x, float *id) {
    float amax = 0.0f;
    for (int j = 0; j < QK_K; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    *id = amax ? 1.0f / amax : 0.0f;
    return amax;
}

/* x / d rounded half away from zero (lroundf, as ggml) plus one: 0, 1 or 2
 * for |x| <= d. Through long and back to int like ggml's
 * `int xi = lroundf(x * id) + 1`, so even a non-finite x packs the same bits. */
static inline int ternary_level(float x, float id) { return (int)(lroundf(x * id) + 1); }

#endif /* LAMINA_TERNARY_QUANTIZE_H */
