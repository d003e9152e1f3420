/* q4_K_avx2.c — AVX2 dots of Q4_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_K.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c], 4 lanes of
 * min_j * bsums_j in summ[c] */
static inline void q4_K_block_n(const block_q4_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi,
                                __m128i *summ) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256i sc;
    __m128i mins;
    lm_q4_K_scales_mins(x->scales, &sc, &mins);
    for (int c = 0; c < ncol; c++) {
        summ[c] = lm_q4_K_summ(mins, y[c]);
        sumi[c] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        const __m256i lo = _mm256_and_si256(bits, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        lm_k4_pair_dots(lo, hi, sc, j, y, ncol, sumi);
    }
}

static inline __m256i q4_K_block(const block_q4_K *x, const block_q8_K *y, __m128i *summ) {
    __m256i sumi;
    q4_K_block_n(x, &y, 1, &sumi, summ);
    return sumi;
}

LM_DEFINE_VEC_DOT_K4(q4_K)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_K4(q4_K)
