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
#include "type_kernels.h"

#define GROUP_MAX_EPS 1e-15f

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

/* ------------------------------------- importance-weighted scale search */

static inline float weighted_sums_qx(int n, int nmax, float iscale, const float *x, const float *w,
                                     float *suml2) {
    float sumlx = 0;
    *suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imax(-nmax, imin(nmax - 1, lm_nearest_int(iscale * x[i])));
        sumlx += w[i] * x[i] * l;
        *suml2 += w[i] * l * l;
    }
    return sumlx;
}

static inline void assign_qx(int n, int nmax, float iscale, const float *x, uint8_t *L) {
    for (int i = 0; i < n; i++) L[i] = (uint8_t)(nmax + imax(-nmax, imin(nmax - 1, lm_nearest_int(iscale * x[i]))));
}

/* mirrors ggml's make_qx_quants(n, nmax, x, L, rmse_type = 1, qw): symmetric
 * levels -nmax..nmax-1 (stored +nmax); try 19 scales around -nmax/max and keep
 * the one maximizing (sum w x l)^2 / sum w l^2 */
static float make_qx_quants_weighted(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float suml2;
    float sumlx = weighted_sums_qx(n, nmax, iscale, x, w, &suml2);
    assign_qx(n, nmax, iscale, x, L);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = weighted_sums_qx(n, nmax, iscale, x, w, &suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            assign_qx(n, nmax, iscale, x, L);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* mirrors ggml's make_qkx3_quants(n, nmax, x, weights, L, &min, Laux, rmin,
 * rdelta, nstep, use_mad = false): levels 0..nmax with an offset min <= 0,
 * weighted least squares for (scale, min) at each of nstep+1 trial scales.
 * Returns the scale; *neg_min = -min. */
static float make_qkx3_quants_weighted(int n, int nmax, const float *x, const float *w, uint8_t *L,
                                       float *neg_min, float rmin, float rdelta, int nstep) {
    uint8_t Laux[32];
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)imax(0, imin(nmax, lm_nearest_int(iscale * (x[i] - min))));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_err += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            /* min may have moved next to max, so v can be huge, inf or NaN */
            const float v = iscale * (x[i] - min);
            const float vc = v < nmax ? v : nmax;
            const int l = v > 0 ? lm_nearest_int(vc) : 0;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                err += w[i] * diff;
            }
            if (err < best_err) {
                memcpy(L, Laux, (size_t)n);
                best_err = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
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
        const float d = make_qx_quants_weighted(32, five_bit ? 16 : 8, xb, L, w);
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
    uint8_t L[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ib++) {
        const float *xb = x + 32 * ib;
        block_weights(xb, imatrix + 32 * ib, sigma2, w);
        float neg_min;
        const float d = make_qkx3_quants_weighted(32, five_bit ? 31 : 15, xb, w, L, &neg_min, -0.9f, 0.05f, 36);
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
