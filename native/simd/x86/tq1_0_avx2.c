/* tq1_0_avx2.c — AVX2 dots of TQ1_0 weights with Q8_K activations (the
 * scheme of kquant_avx2.h, ternary_avx2.h): one activation column, and two
 * to four. Results are bit-identical to lm_vec_dot_tq1_0_ref.
 *
 * Unpacking (tq1_0.h): trit n of a byte is the top trit of q = byte * 3^n
 * (mod 256), i.e. (q * 3) >> 8, which is (q >= 86) + (q >= 171). Bytes wrap
 * mod 256 in epi8 additions, so q * 3 is two of them and no multiply is
 * needed; the comparisons are unsigned (max_epu8 then cmpeq). */
#include "quants/kernels.h"
#include "quants/tq1_0.h"
#include "simd/x86/ternary_avx2.h"

/* each byte times 3, mod 256 */
static inline __m256i times3(__m256i q) { return _mm256_add_epi8(q, _mm256_add_epi8(q, q)); }
static inline __m128i times3_128(__m128i q) { return _mm_add_epi8(q, _mm_add_epi8(q, q)); }

/* the top trit (0..2) of each byte q */
static inline __m256i top_trit(__m256i q) {
    const __m256i ge86 = _mm256_cmpeq_epi8(_mm256_max_epu8(q, _mm256_set1_epi8(86)), q);
    const __m256i ge171 = _mm256_cmpeq_epi8(_mm256_max_epu8(q, _mm256_set1_epi8((char)171)), q);
    return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge86, ge171));
}

/* The block as eight runs of 32 weights, each a vector whose top trits are
 * the run's levels: runs 0..4 are qs[0..31] times 3^n; runs 5..7 (weights
 * 160..255) put qs[32..47] times 1, 3 | 9, 27 | 81 in 128-bit halves, and
 * beside the last the qh bytes, each four times, times 1, 3, 9, 27 (weights
 * 240 + 4n + j). */
static inline void tq1_0_runs(const block_tq1_0 *x, __m256i run[8]) {
    run[0] = _mm256_loadu_si256((const __m256i *)x->qs);
    for (int n = 1; n < 5; n++) run[n] = times3(run[n - 1]);
    const __m128i s1 = _mm_loadu_si128((const __m128i *)(x->qs + 32));
    const __m128i s3 = times3_128(s1), s9 = times3_128(s3), s27 = times3_128(s9), s81 = times3_128(s27);
    int32_t qh;
    memcpy(&qh, x->qh, sizeof qh);
    const __m128i h1 = _mm_set1_epi32(qh);
    const __m128i h3 = times3_128(h1), h9 = times3_128(h3), h27 = times3_128(h9);
    const __m128i h = _mm_blend_epi32(_mm_blend_epi32(h1, h3, 0x2), _mm_blend_epi32(h9, h27, 0x8), 0xC);
    run[5] = _mm256_set_m128i(s3, s1);
    run[6] = _mm256_set_m128i(s27, s9);
    run[7] = _mm256_set_m128i(h, s81);
}

static inline void tq1_0_block_n(const block_tq1_0 *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    __m256i level[8];
    tq1_0_runs(x, level);
    for (int r = 0; r < 8; r++) level[r] = top_trit(level[r]);
    lm_ternary_dot_n(level, y, ncol, sumi);
}

static inline __m256i tq1_0_block(const block_tq1_0 *x, const block_q8_K *y) {
    __m256i sumi;
    tq1_0_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(tq1_0)

/* two to four columns (avx2.h) */
LM_DEFINE_X4_SCALES_ONLY(tq1_0)
