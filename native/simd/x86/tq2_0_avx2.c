/* tq2_0_avx2.c — AVX2 dots of TQ2_0 weights with Q8_K activations (the
 * scheme of kquant_avx2.h, ternary_avx2.h): one activation column, and two
 * to four. Results are bit-identical to lm_vec_dot_tq2_0_ref. */
#include "quants/kernels.h"
#include "quants/tq2_0.h"
#include "simd/x86/ternary_avx2.h"

/* the 2-bit fields of run 4h + k: bits 2k of the 32 bytes of half h */
static inline void tq2_0_block_n(const block_tq2_0 *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i level[8];
    for (int h = 0; h < 2; h++) {
        const __m256i qs = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
        for (int k = 0; k < 4; k++) level[4 * h + k] = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m3);
    }
    lm_ternary_dot_n(level, y, ncol, sumi);
}

static inline __m256i tq2_0_block(const block_tq2_0 *x, const block_q8_K *y) {
    __m256i sumi;
    tq2_0_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(tq2_0)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_SCALES_ONLY(tq2_0)
