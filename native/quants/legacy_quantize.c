/* legacy_quantize.c — float rows -> Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, byte-identical
 * with ggml_quantize_chunk: the *_ref quantizers without an importance matrix,
 * ggml's weighted quantize_row_<t>_impl with one.
 *
 * Bit-exactness depends on doing every float operation in ggml's order and
 * precision (this file is built with -ffp-contract=off): keep the expression
 * shapes below as they are. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "block_math_legacy.h"
#include "blocks.h"
#include "kquant_search.h"
#include "type_kernels.h"


static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* the value of largest magnitude in a block (first one wins a tie) */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void block_min_max(const float *x, int n, float *min, float *max) {
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

/* 32 five-bit quants -> 16 low-nibble bytes and the 32-bit mask of 5th bits */
static void pack_q5(const uint8_t *q, uint8_t qs[16], uint8_t qh_out[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= ((q[j] & 0x10u) >> 4) << j;
        qh |= ((q[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    memcpy(qh_out, &qh, sizeof qh);
}

static void pack_q4(const uint8_t *q, uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = q[j] | (q[j + 16] << 4);
}

/* ------------------------------------------------- reference quantizers */

/* mirrors ggml's quantize_row_q4_0_ref: d = -max/8 maps the extreme value to
 * level 0, the rest round half up with 8.5 then clamp at 15 */
static void quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t k) {
    uint8_t q[QK4_0];
    for (int64_t i = 0; i < k / QK4_0; i++, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK4_0; j++) q[j] = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
        pack_q4(q, y[i].qs);
    }
}

/* mirrors ggml's quantize_row_q4_1_ref */
static void quantize_row_q4_1_ref(const float *x, block_q4_1 *y, int64_t k) {
    uint8_t q[QK4_1];
    for (int64_t i = 0; i < k / QK4_1; i++, x += QK4_1) {
        float min, max;
        block_min_max(x, QK4_1, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        y[i].m = lm_f32_to_half(min);
        for (int j = 0; j < QK4_1; j++) q[j] = (uint8_t)imin(15, (int8_t)((x[j] - min) * id + 0.5f));
        pack_q4(q, y[i].qs);
    }
}

/* mirrors ggml's quantize_row_q5_0_ref */
static void quantize_row_q5_0_ref(const float *x, block_q5_0 *y, int64_t k) {
    uint8_t q[QK5_0];
    for (int64_t i = 0; i < k / QK5_0; i++, x += QK5_0) {
        const float d = signed_absmax(x, QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_half(d);
        for (int j = 0; j < QK5_0; j++) q[j] = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

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

/* ggml's per-weight importance: imatrix times sqrt(sigma2 + x^2), where sigma2
 * is the mean square of the whole row */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static void block_weights(const float *xb, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < 32; j++) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* mirrors ggml's quantize_row_q4_0_impl / quantize_row_q5_0_impl (one row) */
static void quantize_row_qx_0_weighted(const float *x, void *vy, int64_t n, const float *imatrix, int five_bit) {
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
static void quantize_row_qx_1_weighted(const float *x, void *vy, int64_t n, const float *imatrix, int five_bit) {
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

/* ------------------------------------------ ggml_quantize_chunk entry points */
/* without an imatrix ggml quantizes all rows as one long row with the *_ref
 * quantizer; with one, row by row, since the weights depend on the row's sigma2 */

#define LM_QUANTIZE_LEGACY(t, qk, weighted_row, five_bit)                                          \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row,          \
                           const float *imatrix) {                                                 \
        const size_t row_bytes = (size_t)(n_per_row / (qk)) * sizeof(block_##t);                   \
        if (!imatrix) {                                                                            \
            quantize_row_##t##_ref(src, dst, nrows * n_per_row);                                   \
        } else {                                                                                   \
            for (int64_t r = 0; r < nrows; r++)                                                    \
                weighted_row(src + r * n_per_row, (char *)dst + (size_t)r * row_bytes, n_per_row,  \
                             imatrix, five_bit);                                                   \
        }                                                                                          \
        return (size_t)nrows * row_bytes;                                                          \
    }

LM_QUANTIZE_LEGACY(q4_0, QK4_0, quantize_row_qx_0_weighted, 0)
LM_QUANTIZE_LEGACY(q5_0, QK5_0, quantize_row_qx_0_weighted, 1)
LM_QUANTIZE_LEGACY(q4_1, QK4_1, quantize_row_qx_1_weighted, 0)
LM_QUANTIZE_LEGACY(q5_1, QK5_1, quantize_row_qx_1_weighted, 1)

/* ggml's quantize_q8_0 ignores the importance matrix */
size_t lm_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    lm_quantize_row_q8_0_ref(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row / QK8_0) * sizeof(block_q8_0);
}
