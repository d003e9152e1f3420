/* legacy_quantize.h — what the quantizers of the 32-weight formats (q4_0.c ..
 * q8_1.c) share: block statistics, packing, ggml's importance-weighted row
 * quantizers, and the ggml_quantize_chunk entry point.
 *
 * Bit-exactness depends on doing every float operation in ggml's order and
 * precision (built with -ffp-contract=off): keep the expression shapes below
 * as they are. */
#ifndef LAMINA_LEGACY_QUANTIZE_H
#define LAMINA_LEGACY_QUANTIZE_H

#include <float.h>
#include <math.h>
#include <string.h>

#include "quants/kquant_search.h"
#include "quants/legacy.h"

static inline int imin(int a, int b) { return a < b ? a : b; }

/* the value of largest magnitude in a block (first one wins a tie) */
static inline float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static inline void block_min_max(const float *x, int n, float *min, float *max) {
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

/* largest |x| of one 32-value block, NaN-propagating like ggml's MAX(amax, fabsf(v)) */
static inline float block_amax(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    return amax;
}

/* 32 five-bit quants -> 16 low-nibble bytes and the 32-bit mask of 5th bits */
static inline void pack_q5(const uint8_t *q, uint8_t qs[16], uint8_t qh_out[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= ((q[j] & 0x10u) >> 4) << j;
        qh |= ((q[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    memcpy(qh_out, &qh, sizeof qh);
}

static inline void pack_q4(const uint8_t *q, uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = q[j] | (q[j + 16] << 4);
}

/* ggml's per-weight importance: imatrix times sqrt(sigma2 + x^2), where sigma2
 * is the mean square of the whole row */
static inline float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static inline void block_weights(const float *xb, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < 32; j++) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* mirrors ggml's quantize_row_q4_0_impl / quantize_row_q5_0_impl (one row) */
static inline void quantize_row_qx_0_weighted(const float *x, void *vy, int64_t n, const float *imatrix, int five_bit) {
    float w[32];
    uint8_t L[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ib++) {
        const float *xb = x + 32 * ib;
        block_weights(xb, imatrix + 32 * ib, sigma2, w);
        const float d = lm_make_qx_quants(32, five_bit ? 16 : 8, xb, (int8_t *)L, 1, w);
        if (five_bit) {
            block_q5_0 *y = (block_q5_0 *)vy + ib;
            y->d = lm_f32_to_half(d);
            pack_q5(L, y->qs, y->qh);
        } else {
            block_q4_0 *y = (block_q4_0 *)vy + ib;
            y->d = lm_f32_to_half(d);
            pack_q4(L, y->qs);
        }
    }
}

/* mirrors ggml's quantize_row_q4_1_impl / quantize_row_q5_1_impl (one row) */
static inline void quantize_row_qx_1_weighted(const float *x, void *vy, int64_t n, const float *imatrix, int five_bit) {
    float w[32];
    uint8_t L[32], Laux[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ib++) {
        const float *xb = x + 32 * ib;
        block_weights(xb, imatrix + 32 * ib, sigma2, w);
        float neg_min;
        const float d = lm_make_qkx3_quants(32, five_bit ? 31 : 15, xb, w, L, &neg_min, Laux, -0.9f, 0.05f, 36, false);
        if (five_bit) {
            block_q5_1 *y = (block_q5_1 *)vy + ib;
            y->d = lm_f32_to_half(d);
            y->m = lm_f32_to_half(-neg_min);
            pack_q5(L, y->qs, y->qh);
        } else {
            block_q4_1 *y = (block_q4_1 *)vy + ib;
            y->d = lm_f32_to_half(d);
            y->m = lm_f32_to_half(-neg_min);
            pack_q4(L, y->qs);
        }
    }
}

/* ggml_quantize_chunk: without an imatrix ggml quantizes all rows as one long
 * row with the *_ref quantizer; with one, row by row, since the weights
 * depend on the row's sigma2 */
#define LM_QUANTIZE_LEGACY(t, qk, weighted_row, five_bit)                                                             \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {     \
        const size_t row_bytes = (size_t)(n_per_row / (qk)) * sizeof(block_##t);                                      \
        if (!imatrix) {                                                                                               \
            quantize_row_##t##_ref(src, dst, nrows * n_per_row);                                                      \
        } else {                                                                                                      \
            for (int64_t r = 0; r < nrows; r++)                                                                       \
                weighted_row(src + r * n_per_row, (char *)dst + (size_t)r * row_bytes, n_per_row, imatrix, five_bit); \
        }                                                                                                             \
        return (size_t)nrows * row_bytes;                                                                             \
    }

#endif /* LAMINA_LEGACY_QUANTIZE_H */
