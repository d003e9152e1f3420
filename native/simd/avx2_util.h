/* avx2_util.h — small AVX2 building blocks shared by the *_avx2.c kernels.
 * Only included by files compiled with -mavx2 -mfma -mf16c. */
#ifndef LAMINA_AVX2_UTIL_H
#define LAMINA_AVX2_UTIL_H

#include <immintrin.h>
#include <stdint.h>

#include "blocks.h"

/* sum of the 8 floats of x */
static inline float lm_hsum_f32_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* sum of the 8 int32 of x */
static inline int lm_hsum_i32_8(__m256i x) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(r);
}

/* 32 bytes of 4-bit values (low nibbles of 16 bytes, then high nibbles) -> 32 bytes in 0..15,
 * in ggml's order: byte j < 16 is qs[j] & 15, byte j >= 16 is qs[j-16] >> 4 */
static inline __m256i lm_bytes_from_nibbles_32(const uint8_t *qs) {
    const __m128i tmp = _mm_loadu_si128((const __m128i *)qs);
    const __m256i bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes);
}

/* 32 bits -> 32 bytes, each 0xFF where the bit is set, else 0 */
static inline __m256i lm_bytes_from_bits_32(const uint8_t *bits) {
    uint32_t x32;
    memcpy(&x32, bits, sizeof(uint32_t));
    const __m256i shuf_mask = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf_mask);
    const __m256i bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* pairwise sums of int16 -> 8 floats */
static inline __m256 lm_sum_i16_pairs_f32(__m256i x) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), x));
}

/* unsigned bytes ax times signed bytes sy, summed in groups of 4 -> 8 floats */
static inline __m256 lm_mul_sum_us8_pairs_f32(__m256i ax, __m256i sy) {
    return lm_sum_i16_pairs_f32(_mm256_maddubs_epi16(ax, sy));
}

/* signed bytes x times signed bytes y, summed in groups of 4 -> 8 floats */
static inline __m256 lm_mul_sum_i8_pairs_f32(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);   /* |x| as unsigned */
    const __m256i sy = _mm256_sign_epi8(y, x);   /* y with x's sign */
    return lm_mul_sum_us8_pairs_f32(ax, sy);
}

#endif
