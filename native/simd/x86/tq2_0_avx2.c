/* tq2_0_avx2.c — AVX2 dots of TQ2_0 weights with Q8_K activations (the
 * scheme of kquant_avx2.h): one activation column, and two to four. Results
 * are bit-identical to lm_vec_dot_tq2_0_ref. */
#include "quants/kernels.h"
#include "quants/tq2_0.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 int32 lanes totalling sum (q - 1) * q8. The
 * 2-bit fields q (0..2) are multiplied as unsigned bytes and the -1 is taken
 * from the bsums, as ggml's AVX2 kernel does. Eight maddubs results of at
 * most 2 * 2 * 127 add up in int16 without overflow before one widening. */
static inline void tq2_0_block_n(const block_tq2_0 *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p16[NCOL];
    for (int c = 0; c < ncol; c++) p16[c] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i qs = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m3);
#pragma GCC unroll 4
            for (int c = 0; c < ncol; c++) {
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 128 * h + 32 * k));
                p16[c] = _mm256_add_epi16(p16[c], _mm256_maddubs_epi16(q2, q8));
            }
        }
    }
    for (int c = 0; c < ncol; c++) {
        const __m256i offset = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y[c]->bsums), ones);
        sumi[c] = _mm256_sub_epi32(_mm256_madd_epi16(p16[c], ones), offset);
    }
}

static inline __m256i tq2_0_block(const block_tq2_0 *x, const block_q8_K *y) {
    __m256i sumi;
    tq2_0_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(tq2_0)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_SCALES_ONLY(tq2_0)
