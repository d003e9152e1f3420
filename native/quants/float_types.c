/* float_types.c — F32, F16 and BF16 as weight types: conversions and the
 * scalar dot products (each float type is its own dot partner). */
#include <string.h>

#include "blocks.h"
#include "type_kernels.h"

/* ------------------------------------------------------------- row conversions */

void lm_f32_copy_row(const float *x, void *y, int64_t k) { memcpy(y, x, (size_t)k * sizeof(float)); }

/* mirrors ggml_fp32_to_fp16_row (round to nearest even) */
void lm_f32_to_f16_row(const float *x, void *vy, int64_t k) {
    lm_half *y = vy;
    for (int64_t i = 0; i < k; i++) y[i] = lm_f32_to_half(x[i]);
}

/* mirrors ggml_fp32_to_bf16_row_ref (round to nearest even, NaN kept quiet) */
void lm_f32_to_bf16_row(const float *x, void *vy, int64_t k) {
    lm_bf16 *y = vy;
    for (int64_t i = 0; i < k; i++) y[i] = lm_f32_to_bf16(x[i]);
}

/* ------------------------------------------------- quantize (ggml_quantize_chunk) */
/* ggml ignores an importance matrix for the float types; so do we. */

size_t lm_quantize_f32(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    lm_f32_copy_row(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row) * sizeof(float);
}

size_t lm_quantize_f16(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    lm_f32_to_f16_row(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row) * sizeof(lm_half);
}

size_t lm_quantize_bf16(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    lm_f32_to_bf16_row(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row) * sizeof(lm_bf16);
}

/* ------------------------------------------------------------------ to float */

void lm_dequantize_row_f32(const void *x, float *y, int64_t k) { memcpy(y, x, (size_t)k * sizeof(float)); }

void lm_dequantize_row_f16(const void *vx, float *y, int64_t k) {
    const lm_half *x = vx;
    for (int64_t i = 0; i < k; i++) y[i] = lm_half_to_f32(x[i]);
}

void lm_dequantize_row_bf16(const void *vx, float *y, int64_t k) {
    const lm_bf16 *x = vx;
    for (int64_t i = 0; i < k; i++) y[i] = lm_bf16_to_f32(x[i]);
}

/* ------------------------------------------------------------ scalar dots */
/* ggml's scalar ggml_vec_dot_{f32,f16,bf16}: each product is rounded to float,
 * the running sum is kept in double (ggml_float) */

void lm_vec_dot_f32_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

void lm_vec_dot_f16_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const lm_half *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(lm_half_to_f32(x[i]) * lm_half_to_f32(y[i]));
    *s = (float)sum;
}

void lm_vec_dot_bf16_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const lm_bf16 *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(lm_bf16_to_f32(x[i]) * lm_bf16_to_f32(y[i]));
    *s = (float)sum;
}
