/* act_quant_avx2.c — AVX2 activation quantizers: float rows into Q8_0 and
 * Q8_1, the dot partners of the 32-weight formats, and Q8_K, the k-quants'. They run once per column
 * of every matmul, so in decode of several sequences they are a few percent
 * of a step.
 *
 * Bit-identical with the scalar lm_from_float_q8_0/_q8_1 (quants/q8_0.c,
 * q8_1.c; the oracle for both is ggml-cpu's x86 quantize_row_q8_{0,1}) for
 * finite inputs: amax is a max, which is exact in any order; d and 127/amax
 * come from the same scalar helpers (legacy.h); x * id is one IEEE product
 * per lane; round-half-to-even (_mm256_round_ps) is what lm_nearest_int does
 * in the int8 range. */
#include <string.h>

#include "quants/kernels.h"
#include "quants/q8_0.h"
#include "quants/q8_1.h"
#include "quants/q8_K.h"
#include "simd/x86/avx2.h"

/* the 32 values of one block, as four vectors, and their largest |x| */
static inline float block_amax_avx2(const float *x, __m256 v[4]) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_loadu_ps(x + 8 * j);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 r = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    r = _mm_max_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* the 32 values times id, rounded half to even: 32 int8 in order, and their
 * sum through *sum (Q8_1's s) */
static inline void block_quants_avx2(const __m256 v[4], float id, int8_t qs[32], int *sum) {
    const __m256 mul = _mm256_set1_ps(id);
    __m256i q[4];
    for (int j = 0; j < 4; j++)
        q[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], mul), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC));
    if (sum) *sum = lm_hsum_i32_8(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    /* packs work per 128-bit lane: the permute puts the 8 groups of 4 back in order */
    const __m256i q01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i q23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i bytes = _mm256_packs_epi16(q01, q23);
    _mm256_storeu_si256((__m256i *)qs, _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

void lm_from_float_q8_0_avx2(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        __m256 v[4];
        const float amax = block_amax_avx2(x, v);
        y[i].d = lm_f32_to_half(lm_q8_act_scale(amax));
        block_quants_avx2(v, lm_q8_act_inv(amax), y[i].qs, NULL);
    }
}

void lm_from_float_q8_1_avx2(const float *x, void *vy, int64_t k) {
    block_q8_1 *y = vy;
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        __m256 v[4];
        const float amax = block_amax_avx2(x, v), d = lm_q8_act_scale(amax);
        int sum;
        block_quants_avx2(v, lm_q8_act_inv(amax), y[i].qs, &sum);
        y[i].d = lm_f32_to_half(d);
        y[i].s = lm_q8_1_s(sum, d);
    }
}

/* lm_from_float_q8_K (quants/q8_K.c) with its bits for finite inputs: the
 * first largest |x| found by comparing against the maximum (exact in any
 * order), the same scalar iscale and d, one IEEE product per lane rounded half
 * to even (lm_nearest_int in this range), capped at 127, and bsums as exact
 * integer sums. A NaN never becomes the maximum, as in the scalar compare. */
void lm_from_float_q8_K_avx2(const float *x, void *vy, int64_t k) {
    block_q8_K *y = vy;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
        __m128 r = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        r = _mm_max_ps(r, _mm_movehl_ps(r, r));
        r = _mm_max_ss(r, _mm_movehdup_ps(r));
        const float amax = _mm_cvtss_f32(r);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const __m256 vamax = _mm256_set1_ps(amax);
        float max = amax;
        for (int j = 0; j < QK_K; j += 8) {
            const int hit =
                _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), vamax, _CMP_EQ_OQ));
            if (hit) {
                max = x[j + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = lm_q8_K_iscale(max);
        const __m256 mul = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        int32_t sums[QK_K / 16];
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int h = 0; h < 4; h++) {
                const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * h), mul);
                q[h] = _mm256_min_epi32(
                    _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), cap);
            }
            sums[j / 16] = lm_hsum_i32_8(_mm256_add_epi32(q[0], q[1]));
            sums[j / 16 + 1] = lm_hsum_i32_8(_mm256_add_epi32(q[2], q[3]));
            const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j),
                                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        }
        for (int j = 0; j < QK_K / 16; j++) y[i].bsums[j] = (int16_t)sums[j];
        y[i].d = lm_q8_K_d(iscale);
    }
}
