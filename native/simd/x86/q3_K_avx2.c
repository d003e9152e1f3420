/* q3_K_avx2.c — AVX2 dot of Q3_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h). */
#include "quants/kernels.h"
#include "quants/q3_K.h"
#include "simd/x86/kquant_avx2.h"

/* 8 lanes of scale_j * dot_j. The weights enter as q + 4 in 0..7 (low bits |
 * high bit << 2); the 4 * scale_j * bsums_j that adds is subtracted up front. */
static inline __m256i q3_K_block(const block_q3_K *x, const block_q8_K *y) {
    const __m256i m3 = _mm256_set1_epi8(3);
    uint32_t biased[4];
    lm_kdot_q3_K_scales(x->scales, biased);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(lm_words128(biased), _mm_set1_epi8(32)));
    const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y->bsums));
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 2));

    __m256i sc[2];
    lm_split_scales(sc16, &sc[0], &sc[1]);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->hmask);
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        const int8_t *q8 = y->qs + 128 * c;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i q3 = _mm256_or_si256(lo, move_bit(hbits, 4 * c + k, 2));
            __m256i p = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(q8 + 32 * k)));
            p = _mm256_madd_epi16(_mm256_shuffle_epi8(sc[c], lm_pick16_pair(2 * k)), p);
            sumi = _mm256_add_epi32(sumi, p);
        }
    }
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(q3_K)
