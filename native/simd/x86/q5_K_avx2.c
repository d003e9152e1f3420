/* q5_K_avx2.c — AVX2 dot of Q5_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h; Q4_K's scales, see q4_K_avx2.c). */
#include "quants/kernels.h"
#include "quants/q5_K.h"
#include "simd/x86/kquant_avx2.h"

/* the shared prologue: returns the scales (int16, both halves 0..7) and in
 * *summ 4 lanes of min_j times the bsums under sub-block j */
static inline __m256i q4_K_scales_and_mins(const uint8_t *packed, const block_q8_K *y, __m128i *summ) {
    __m256i sc;
    __m128i mins;
    lm_q4_K_scales_mins(packed, &sc, &mins);
    *summ = lm_q4_K_summ(mins, y);
    return sc;
}

/* Q4_K plus bit j of qh as bit 4 of sub-block j's weights */
static inline __m256i q5_K_block(const block_q5_K *x, const block_q8_K *y, __m128i *summ) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i sc = q4_K_scales_and_mins(x->scales, y, summ);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->qh);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        const int8_t *q8 = y->qs + 64 * j;
        const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), move_bit(hbits, 2 * j, 4));
        const __m256i hi =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), move_bit(hbits, 2 * j + 1, 4));
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
        plo = _mm256_madd_epi16(_mm256_shuffle_epi8(sc, lm_pick16(2 * j)), plo);
        phi = _mm256_madd_epi16(_mm256_shuffle_epi8(sc, lm_pick16(2 * j + 1)), phi);
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
    }
    return sumi;
}

LM_DEFINE_VEC_DOT_K4(q5_K)
