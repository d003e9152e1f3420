/* q2_K_avx2.c — AVX2 dots of Q2_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h): one activation column, and two to four, with the drivers
 * of Q4_K and Q5_K (their d and dmin are adjacent fp16 fields too). */
#include "quants/kernels.h"
#include "quants/q2_K.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c], 4 lanes of
 * min_j * bsums_j in summ[c] (the 16 sub-blocks' products folded to 4 lanes:
 * int32 sums, so the grouping never changes the total) */
static inline void q2_K_block_n(const block_q2_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi,
                                __m128i *summ) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0xF);
    const __m128i packed = _mm_loadu_si128((const __m128i *)x->scales);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
    for (int c = 0; c < ncol; c++) {
        summ[c] = lm_add_halves(_mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)y[c]->bsums)));
        sumi[c] = _mm256_setzero_si256();
    }
    __m256i sc[2];
    lm_split_scales(_mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)), &sc[0], &sc[1]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i sck = _mm256_shuffle_epi8(sc[h], lm_pick16_pair(2 * k));
#pragma GCC unroll 4
            for (int c = 0; c < ncol; c++) {
                const int8_t *q8 = y[c]->qs + 128 * h + 32 * k;
                const __m256i p = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)q8));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(sck, p));
            }
        }
    }
}

static inline __m256i q2_K_block(const block_q2_K *x, const block_q8_K *y, __m128i *summ) {
    __m256i sumi;
    q2_K_block_n(x, &y, 1, &sumi, summ);
    return sumi;
}

LM_DEFINE_VEC_DOT_K4(q2_K)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_K4(q2_K)
