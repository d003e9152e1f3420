/* iq4.c — the non-linear 4-bit formats IQ4_NL (32-weight blocks) and
 * IQ4_XS (256-weight super-blocks with 6-bit sub-block scales): quantize
 * (byte-identical with ggml's quantize_iq4_nl / quantize_iq4_xs, which
 * ggml_quantize_chunk calls with or without an importance matrix), rows to
 * float, and the scalar reference dots. */
#include <math.h>

#include "quants/iq4.h"
#include "quants/kernels.h"

#define GROUP_MAX_EPS 1e-15f
/* ggml_quantize_chunk's IQ4 quantizers try this many scales on each side */
#define IQ4_NTRY 7

/* mirrors ggml's best_index_int8(16, kvalues_iq4nl, x): the level x rounds to.
 * Comparing 2x against the sum of neighbouring levels keeps the midpoint test
 * exact; a branch-free binary search over the 16 sorted levels. */
static inline int best_index_iq4(float x) {
    const float x2 = x + x;
    int idx = 0;
    for (int step = 8; step > 0; step >>= 1) {
        const int j = idx + step;
        idx = (x2 >= (float)(lm_kvalues_iq4nl[j - 1] + lm_kvalues_iq4nl[j])) ? j : idx;
    }
    return idx;
}

/* weighted least-squares scale of one 32-weight block: start from d = -max/-127
 * (so the extreme weight lands on level 0 or 15), then try 2*IQ4_NTRY+1 other
 * scales, keeping the one maximizing (sum w q x)^2 / sum w q^2. The levels
 * themselves are chosen afterwards, for the scale as stored. */
static float iq4_block_scale(const float *xb, const float *w) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        const float ax = fabsf(xb[j]);
        if (ax > amax) {
            amax = ax;
            max = xb[j];
        }
    }
    if (amax < GROUP_MAX_EPS) return 0;
    float d = -max / lm_kvalues_iq4nl[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        const float q = lm_kvalues_iq4nl[best_index_iq4(id * xb[j])];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry++) {
        id = (itry + lm_kvalues_iq4nl[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            const float q = lm_kvalues_iq4nl[best_index_iq4(id * xb[j])];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* importance of each weight: imatrix * sqrt(sigma2 + x^2), or x^2 without one */
static void iq4_weights(const float *xb, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < 32; j++) w[j] = qw ? qw[j] * sqrtf(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

static float iq4_sigma2(const float *x, int n) {
    float sigma2 = 0;
    for (int j = 0; j < n; j++) sigma2 += x[j] * x[j];
    return sigma2 * (2.f / n);
}

static void pack_iq4(const uint8_t *L, uint8_t *qs, int n) {
    for (int i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++) qs[16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4);
}

/* mirrors ggml's quantize_row_iq4_nl_impl(QK4_NL, 32, 16, ..., ntry = 7) */
static void quantize_block_iq4_nl(const float *x, block_iq4_nl *y, const float *qw) {
    float w[32];
    uint8_t L[32];
    iq4_weights(x, qw, iq4_sigma2(x, QK4_NL), w);
    const float d = iq4_block_scale(x, w);
    y->d = lm_f32_to_half(d);
    const float id = d ? 1 / d : 0;
    for (int j = 0; j < QK4_NL; j++) L[j] = (uint8_t)best_index_iq4(id * x[j]);
    pack_iq4(L, y->qs, QK4_NL);
}

/* mirrors ggml's quantize_row_iq4_nl_impl(QK_K, 32, 16, ..., ntry = 7): eight
 * block scales quantized to 6 bits against d = -max_scale/32, then every
 * block's levels chosen again for its quantized scale */
static void quantize_block_iq4_xs(const float *x, block_iq4_xs *y, const float *qw) {
    float w[32], scales[QK_K / 32];
    uint8_t L[32];
    const float sigma2 = iq4_sigma2(x, QK_K);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        iq4_weights(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, w);
        scales[ib] = iq4_block_scale(x + 32 * ib, w);
        if (fabsf(scales[ib]) > amax_scale) {
            amax_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    const float d = -max_scale / 32;
    y->d = lm_f32_to_half(d);
    y->scales_h = 0;
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        int l = lm_nearest_int(id * scales[ib]);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        const float dl = d * l;
        const float idl = dl ? 1 / dl : 0.f;
        for (int j = 0; j < 32; j++) L[j] = (uint8_t)best_index_iq4(idl * x[32 * ib + j]);
        pack_iq4(L, y->qs + 16 * ib, 32);
        l += 32;
        if (ib % 2 == 0)
            y->scales_l[ib / 2] = (uint8_t)(l & 0x0F);
        else
            y->scales_l[ib / 2] |= (uint8_t)((l & 0x0F) << 4);
        y->scales_h |= (uint16_t)((l >> 4) << (2 * ib));
    }
}

size_t lm_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    block_iq4_nl *y = dst;
    const int64_t nb = n_per_row / QK4_NL;
    for (int64_t r = 0; r < nrows; r++, src += n_per_row, y += nb)
        for (int64_t ib = 0; ib < nb; ib++)
            quantize_block_iq4_nl(src + QK4_NL * ib, &y[ib], imatrix ? imatrix + QK4_NL * ib : NULL);
    return (size_t)(nrows * nb) * sizeof(block_iq4_nl);
}

size_t lm_quantize_iq4_xs(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    block_iq4_xs *y = dst;
    const int64_t nb = n_per_row / QK_K;
    for (int64_t r = 0; r < nrows; r++, src += n_per_row, y += nb)
        for (int64_t ib = 0; ib < nb; ib++)
            quantize_block_iq4_xs(src + QK_K * ib, &y[ib], imatrix ? imatrix + QK_K * ib : NULL);
    return (size_t)(nrows * nb) * sizeof(block_iq4_xs);
}

/* ------------------------------------------------------------------ to float */

LM_DEFINE_DEQUANTIZE_ROW(iq4_nl, block_iq4_nl, QK4_NL)
LM_DEFINE_DEQUANTIZE_ROW(iq4_xs, block_iq4_xs, QK_K)

/* ------------------------------------------------------------ scalar dots */

/* mirrors ggml_vec_dot_iq4_nl_q8_0_generic */
void lm_vec_dot_iq4_nl_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_NL; i++)
        sum += (lm_half_to_f32(y[i].d) * lm_half_to_f32(x[i].d)) * lm_idot_iq4_nl_q8_0(&x[i], &y[i]);
    *s = sum;
}

/* mirrors ggml_vec_dot_iq4_xs_q8_K_generic: one float term per 32-weight sub-block */
void lm_vec_dot_iq4_xs_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d4d8 = lm_half_to_f32(x[i].d) * y[i].d;
        for (int ib = 0; ib < QK_K / 32; ib++)
            sum += (d4d8 * lm_iq4_xs_scale(&x[i], ib)) * lm_idot_iq4_xs_sub_q8_K(&x[i], &y[i], ib);
    }
    *s = sum;
}
