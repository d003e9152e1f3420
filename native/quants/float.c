/* float.c — F32, F16 and BF16 as weight types: conversions and the scalar dot
 * products (each float type is its own dot partner). */
#include <string.h>

#include "quants/float.h"
#include "quants/kernels.h"

/* ------------------------------------------------------------- row conversions */

void lm_from_float_f32(const float *x, void *y, int64_t k) { memcpy(y, x, (size_t)k * sizeof(float)); }

/* mirrors ggml_fp32_to_fp16_row (round to nearest even) */
void lm_from_float_f16(const float *x, void *vy, int64_t k) {
    lm_half *y = vy;
    for (int64_t i = 0; i < k; i++) y[i] = lm_f32_to_half(x[i]);
}

/* mirrors ggml_fp32_to_bf16_row_ref (round to nearest even, NaN kept quiet) */
void lm_from_float_bf16(const float *x, void *vy, int64_t k) {
    lm_bf16 *y = vy;
    for (int64_t i = 0; i < k; i++) y[i] = lm_f32_to_bf16(x[i]);
}

/* ------------------------------------------------- quantize (ggml_quantize_chunk) */
/* ggml ignores an importance matrix for the float types; so do we. */

#define LM_QUANTIZE_FLOAT(t, elem_t)                                                                              \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) { \
        lm_from_float_##t(src, dst, nrows * n_per_row);                                                           \
        return (size_t)(nrows * n_per_row) * sizeof(elem_t);                                                      \
    }

LM_QUANTIZE_FLOAT(f32, float)
LM_QUANTIZE_FLOAT(f16, lm_half)
LM_QUANTIZE_FLOAT(bf16, lm_bf16)

/* ------------------------------------------------------------------ to float */

void lm_dequantize_row_f32(const void *x, float *y, int64_t k) { memcpy(y, x, (size_t)k * sizeof(float)); }
LM_DEFINE_DEQUANTIZE_ROW(f16, lm_half, 1)
LM_DEFINE_DEQUANTIZE_ROW(bf16, lm_bf16, 1)

/* ------------------------------------------------------------ scalar dots */
/* ggml's scalar ggml_vec_dot_{f32,f16,bf16}: each product is rounded to float,
 * the running sum is kept in double (ggml_float) */

#define LM_VEC_DOT_FLOAT_REF(t, elem_t)                                                                         \
    void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *vx, const void *vy) {                            \
        const elem_t *x = vx, *y = vy;                                                                          \
        double sum = 0.0;                                                                                       \
        for (int64_t i = 0; i < n; i++) sum += (double)(lm_dequant1_##t(x + i, 0) * lm_dequant1_##t(y + i, 0)); \
        *s = (float)sum;                                                                                        \
    }

LM_VEC_DOT_FLOAT_REF(f32, float)
LM_VEC_DOT_FLOAT_REF(f16, lm_half)
LM_VEC_DOT_FLOAT_REF(bf16, lm_bf16)
