/* q6_K_avx2.c — AVX2 dots of Q6_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q6_K.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c]; the -32
 * is taken from bsums (as ggml's AVX branch does) instead of a second maddubs */
static inline void q6_K_block_n(const block_q6_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C);
    const __m256i m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char)0xC0);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
    for (int c = 0; c < ncol; c++) {
        const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[c]->bsums));
        sumi[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 5));
    }
    __m256i sc[2];
    lm_split_scales(sc16, &sc[0], &sc[1]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        /* the four quarters of 32: top bits 2k..2k+1 of qh moved to bits 4..5 */
        const __m256i q6[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m03), 4)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m0c), 2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2)),
        };
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i sck = _mm256_shuffle_epi8(sc[h], lm_pick16_pair(2 * k));
#pragma GCC unroll 4
            for (int c = 0; c < ncol; c++) {
                const int8_t *q8 = y[c]->qs + 128 * h + 32 * k;
                const __m256i p = _mm256_maddubs_epi16(q6[k], _mm256_loadu_si256((const __m256i *)q8));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(sck, p));
            }
        }
    }
}

static inline __m256i q6_K_block(const block_q6_K *x, const block_q8_K *y) {
    __m256i sumi;
    q6_K_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(q6_K)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_SCALES_ONLY(q6_K)
