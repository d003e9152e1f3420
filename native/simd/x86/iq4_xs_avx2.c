/* iq4_xs_avx2.c — AVX2 dots of IQ4_XS weights with Q8_K activations: one
 * activation column, and two to four (IQ4_NL's: iq4_nl_avx2.c). The nibbles
 * index the 16 levels with one byte shuffle per half. IQ4_XS, unlike its scalar reference (one float term per 32-weight
 * sub-block, as in ggml's generic kernel), applies the sub-block scales in
 * int32 and meets the float scale d4*d8 once per super-block, as ggml's AVX2
 * kernel does. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

/* 16 packed bytes (low nibbles, then high nibbles) -> their 32 levels as signed bytes */
static inline __m256i iq4_levels_32(const uint8_t *qs) {
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i q4 = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(q4, low4));
    const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
    return _mm256_set_m128i(hi, lo);
}

/* IQ4_XS: for each column c < ncol, 8 int32 lanes of the super-block's
 * scale_j * dot_j in sumi[c]. |level| <= 127, |q8| <= 128, |scale| <= 32: a
 * lane stays below 8 * 2 * 2*127*128 * 32 < 2^24, exact in float too. */
static inline void iq4_xs_block_n(const block_iq4_xs *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    for (int c = 0; c < ncol; c++) sumi[c] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const __m256i qx = iq4_levels_32(x->qs + 16 * ib);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        const __m256i scale = _mm256_set1_epi16((short)lm_iq4_xs_scale(x, ib));
#pragma GCC unroll 4
        for (int c = 0; c < ncol; c++) {
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 32 * ib));
            const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx));
            sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(p16, scale));
        }
    }
}

void lm_vec_dot_iq4_xs_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const block_q8_K *yi = &y[i];
        __m256i sumi;
        iq4_xs_block_n(&x[i], &yi, 1, &sumi);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[i].d) * y[i].d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

/* two to four columns (avx2.h) of lm_vec_dot_iq4_xs_avx2, per column its
 * float operations in its order */
LM_X4_INLINE void x4_iq4_xs(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                            size_t y_stride) {
    const block_iq4_xs *x = vx;
    LM_X4_COLUMNS(block_q8_K, y, vy, y_stride, ncol);
    __m256 acc[NCOL];
    for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const block_q8_K *yb[NCOL];
        for (int c = 0; c < ncol; c++) yb[c] = &y[c][i];
        __m256i sumi[NCOL];
        iq4_xs_block_n(&x[i], yb, ncol, sumi);
        const float xd = _cvtsh_ss(x[i].d);
        for (int c = 0; c < ncol; c++)
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(xd * y[c][i].d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
    }
    for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]);
}

LM_DEFINE_X4(iq4_xs, x4_iq4_xs)
