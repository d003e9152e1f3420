/* iq4_avx2.c — AVX2 dots of IQ4_NL weights with Q8_0 activations and of
 * IQ4_XS weights with Q8_K activations. The nibbles index the 16 levels with
 * one byte shuffle per half. IQ4_XS, unlike its scalar reference (one float
 * term per 32-weight sub-block, as in ggml's generic kernel), applies the
 * sub-block scales in int32 and meets the float scale d4*d8 once per
 * super-block, as ggml's AVX2 kernel does. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

/* IQ4_NL: the nibbles index the 16 levels with one byte shuffle per half */
void lm_vec_dot_iq4_nl_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        const __m256 d = _mm256_set1_ps(lm_half_f32(y[i].d) * lm_half_f32(x[i].d));
        const __m128i q4 = _mm_loadu_si128((const __m128i *)x[i].qs);
        const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(q4, low4));
        const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
        const __m256i qx = _mm256_set_m128i(hi, lo);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

/* IQ4_XS */
void lm_vec_dot_iq4_xs_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        /* |level| <= 127, |q8| <= 127, |scale| <= 32: a lane of the int32 sum
         * stays below 8 * 2 * 2*127*127 * 32 < 2^24, exact in float too */
        __m256i sumi = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const __m128i q4 = _mm_loadu_si128((const __m128i *)(x[i].qs + 16 * ib));
            const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(q4, low4));
            const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
            const __m256i qx = _mm256_set_m128i(hi, lo);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(y[i].qs + 32 * ib));
            const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
            const __m256i scale = _mm256_set1_epi16((short)lm_iq4_xs_scale(&x[i], ib));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, scale));
        }
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[i].d) * y[i].d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = lm_hsum_f32_8(acc);
}
