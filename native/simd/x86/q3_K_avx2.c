/* q3_K_avx2.c — AVX2 dots of Q3_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q3_K.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c]. The
 * weights enter as q + 4 in 0..7 (low bits | high bit << 2); the
 * 4 * scale_j * bsums_j that adds is subtracted up front. */
static inline void q3_K_block_n(const block_q3_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i m3 = _mm256_set1_epi8(3);
    uint32_t biased[4];
    lm_kdot_q3_K_scales(x->scales, biased);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(lm_words128(biased), _mm_set1_epi8(32)));
    for (int c = 0; c < ncol; c++) {
        const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[c]->bsums));
        sumi[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 2));
    }
    __m256i sc[2];
    lm_split_scales(sc16, &sc[0], &sc[1]);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->hmask);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i q3 = _mm256_or_si256(lo, move_bit(hbits, 4 * h + k, 2));
            const __m256i sck = _mm256_shuffle_epi8(sc[h], lm_pick16_pair(2 * k));
#pragma GCC unroll 4
            for (int c = 0; c < ncol; c++) {
                const int8_t *q8 = y[c]->qs + 128 * h + 32 * k;
                const __m256i p = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)q8));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(sck, p));
            }
        }
    }
}

static inline __m256i q3_K_block(const block_q3_K *x, const block_q8_K *y) {
    __m256i sumi;
    q3_K_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(q3_K)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_SCALES_ONLY(q3_K)
