/* mxfp4_avx2.c — AVX2 dots of MXFP4 weights with Q8_0 activations: one
 * activation column, and two to four. The nibbles index the 16 doubled E2M1
 * values with one byte shuffle per half (as IQ4_NL's do its levels); then
 * the legacy kernels' per-block FMA (legacy_avx2.h), the scale being
 * 2^(e-128) * dy instead of dx * dy. Float sums in another order than the
 * scalar reference's: tests compare by NMSE. */
#include "quants/kernels.h"
#include "quants/mxfp4.h"
#include "simd/x86/avx2.h"

/* the 32 weights of a block as signed bytes (doubled values, -12..12) */
static inline __m256i mxfp4_bytes(const block_mxfp4 *x, __m128i values) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i q4 = _mm_loadu_si128((const __m128i *)x->qs);
    const __m128i lo = _mm_shuffle_epi8(values, _mm_and_si128(q4, low4));
    const __m128i hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
    return _mm256_set_m128i(hi, lo);
}

void lm_vec_dot_mxfp4_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_mxfp4 *x = vx;
    const block_q8_0 *y = vy;
    const __m128i values = _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_MXFP4; i++) {
        const __m256 d = _mm256_set1_ps(lm_e8m0_to_f32_half(x[i].e) * lm_half_f32(y[i].d));
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(mxfp4_bytes(&x[i], values), qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

/* two to four columns (avx2.h): per column the one-column kernel's FMA
 * chain, dy read as a float (LM_X4_SCALES), |qx| taken once per block */
LM_X4_INLINE void x4_mxfp4(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                           size_t y_stride) {
    const block_mxfp4 *x = vx;
    LM_X4_COLUMNS(block_q8_0, y, vy, y_stride, ncol);
    const int64_t nb = n / QK_MXFP4;
    LM_X4_SCALES(yd, y, nb, block_q8_0, ncol);
    const __m128i values = _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4);
    __m256 acc[NCOL];
    for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256 xd = _mm256_set1_ps(lm_e8m0_to_f32_half(x[i].e));
        const __m256i qx = mxfp4_bytes(&x[i], values);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        for (int c = 0; c < ncol; c++) {
            const __m256 d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i]));
            const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[c][i].qs), qx);
            acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(ax, sy), acc[c]);
        }
    }
    for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]);
}

LM_DEFINE_X4(mxfp4, x4_mxfp4)
