/* iq4_xs_avx2.c — AVX2 dots of IQ4_XS weights with Q8_K activations: one
 * activation column, and two to four (IQ4_NL's: iq4_nl_avx2.c; the many
 * columns of prefill: iq4_xs_xn_avx2.c). The nibbles index the 16 levels
 * with one byte shuffle per half.
 *
 * The SIMD kernels' order (the bits of all of them): the sub-block scales
 * applied in int32, the super-block's exact total isum, then the k-quants'
 * float order (kquant.h): (d * y.d) * isum into lane i % 8 of the block
 * index, the lanes summed in order. The scalar reference keeps ggml's
 * generic order (one float term per 32-weight sub-block, one running sum),
 * which no tiled kernel can follow; tests compare the two by NMSE. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/kquant_avx2.h"

/* 16 packed bytes (low nibbles, then high nibbles) -> their 32 levels as signed bytes */
static inline __m256i iq4_levels_32(const uint8_t *qs) {
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i q4 = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(q4, low4));
    const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
    return _mm256_set_m128i(hi, lo);
}

/* IQ4_XS: for each column c < ncol, 8 int32 lanes of the super-block's
 * scale_j * dot_j in sumi[c], totalling its exact isum (|isum| < 8 * 32 *
 * 127 * 127 * 32 < 2^31) */
static inline void iq4_xs_block_n(const block_iq4_xs *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    for (int c = 0; c < ncol; c++) sumi[c] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const __m256i qx = iq4_levels_32(x->qs + 16 * ib);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        const __m256i scale = _mm256_set1_epi16((short)lm_iq4_xs_scale(x, ib));
#pragma GCC unroll 4
        for (int c = 0; c < ncol; c++) {
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 32 * ib));
            const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx));
            sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(p16, scale));
        }
    }
}

/* the fp16 d (the block's first field) of 8 consecutive blocks */
static inline __m256 iq4_xs_d8(const block_iq4_xs *x) {
    const __m256i lo = _mm256_and_si256(lm_gather8(&x->d, (int)sizeof *x), _mm256_set1_epi32(0xFFFF));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, lo), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}
#define IQ4_XS_D8(t, x) iq4_xs_d8(x)
#define IQ4_XS_D1(t, x) lm_half_f32((x)->d)

/* one column and two to four: the k-quants' driver (kquant_avx2.h) */
LM_DEFINE_X4_DRIVER(iq4_xs, iq4_xs_dot, IQ4_XS_D8, IQ4_XS_D1, 1.0f)

void lm_vec_dot_iq4_xs_avx2(int64_t n, float *s, const void *vx, const void *vy) { iq4_xs_dot(n, 1, s, 0, vx, vy, 0); }

LM_DEFINE_X4(iq4_xs, iq4_xs_dot)
