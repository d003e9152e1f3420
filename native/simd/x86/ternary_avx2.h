/* ternary_avx2.h — what the AVX2 dots of TQ1_0 and TQ2_0 (simd/x86/tq*_avx2.c)
 * share: given a block unpacked into eight runs of 32 levels (trit + 1, 0..2),
 * its integer dot with Q8_K blocks in the layout of kquant_avx2.h's drivers. */
#ifndef LAMINA_TERNARY_AVX2_H
#define LAMINA_TERNARY_AVX2_H

#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 int32 lanes totalling sum (level - 1) * q8 over
 * the block, run r covering weights 32r..32r+31. The levels are multiplied as
 * unsigned bytes and the -1 is taken from the bsums, as ggml's AVX2 kernels
 * do; eight maddubs results of at most 2 * 2 * 127 add up in int16 without
 * overflow before one widening. */
static inline void lm_ternary_dot_n(const __m256i level[8], const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p16[NCOL];
    for (int c = 0; c < ncol; c++) p16[c] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
#pragma GCC unroll 4
        for (int c = 0; c < ncol; c++) {
            const __m256i q8 = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 32 * r));
            p16[c] = _mm256_add_epi16(p16[c], _mm256_maddubs_epi16(level[r], q8));
        }
    }
    for (int c = 0; c < ncol; c++) {
        const __m256i offset = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y[c]->bsums), ones);
        sumi[c] = _mm256_sub_epi32(_mm256_madd_epi16(p16[c], ones), offset);
    }
}

#endif /* LAMINA_TERNARY_AVX2_H */
