/* avx2.h — small AVX2 building blocks shared by the AVX2 kernels of simd/x86/.
 * Only included by files compiled with -mavx2 -mfma -mf16c.
 *
 * The 32-weight formats' files are compiled three times: as they are
 * (functions named *_avx2), with -mavxvnni -DLM_VNNI=1 (*_avxvnni) and with
 * -mavx512vnni -mavx512vl -DLM_VNNI=512 (*_avx512vnni), where the byte
 * products below take vpdpbusd (VEX or EVEX encoded) instead of vpmaddubsw +
 * vpmaddwd. LM_SIMD_FN names a kernel for the build at hand. */
#ifndef LAMINA_AVX2_H
#define LAMINA_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quants/blocks.h"
#include "quants/type_traits.h"

#if defined(LM_VNNI) && LM_VNNI == 512
#define LM_SIMD_FN(name) name##_avx512vnni
#define LM_DPBUSD(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#elif defined(LM_VNNI)
#define LM_SIMD_FN(name) name##_avxvnni
#define LM_DPBUSD(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#else
#define LM_SIMD_FN(name) name##_avx2
#endif

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
    /* the 16 bytes in both halves (a load, no shuffle), the upper half shifted */
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i bytes = _mm256_blend_epi32(both, _mm256_srli_epi16(both, 4), 0xF0);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes);
}

/* a 4-bit block's 32 codes (as lm_bytes_from_nibbles_32 orders them) through
 * a 16-entry table of signed bytes, each XORed with flip (0x80: the value +
 * 128 as an unsigned byte, for vpdpbusd; 0: the signed value) */
static inline __m256i lm_lut16_bytes_32(const uint8_t *qs, const int8_t *table, int flip) {
    const __m128i t = _mm_xor_si128(_mm_loadu_si128((const __m128i *)table), _mm_set1_epi8((char)flip));
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), lm_bytes_from_nibbles_32(qs));
}

/* 32 bits -> 32 bytes, each 0xFF where the bit is set, else 0 */
static inline __m256i lm_bytes_from_bits_32(const uint8_t *bits) {
    uint32_t x32;
    memcpy(&x32, bits, sizeof(uint32_t));
    const __m256i shuf_mask =
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf_mask);
    const __m256i bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* pairwise sums of int16 -> 8 floats */
static inline __m256 lm_sum_i16_pairs_f32(__m256i x) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), x));
}

/* unsigned bytes ax times signed bytes sy, summed in groups of 4 -> 8 floats.
 * vpmaddubsw saturates its int16 pair sums, vpdpbusd does not: the two agree
 * (same bits) because every caller's pair sum fits: ax <= 128 (|q| of a
 * weight byte, or a 4/5-bit value), |sy| <= 127 (the activation quantizers
 * write -127..127), 2 * 128 * 127 < 32767. */
static inline __m256 lm_mul_sum_us8_pairs_f32(__m256i ax, __m256i sy) {
#if defined(LM_VNNI)
    return _mm256_cvtepi32_ps(LM_DPBUSD(_mm256_setzero_si256(), ax, sy));
#else
    return lm_sum_i16_pairs_f32(_mm256_maddubs_epi16(ax, sy));
#endif
}

/* signed bytes x times signed bytes y, summed in groups of 4 -> 8 floats */
static inline __m256 lm_mul_sum_i8_pairs_f32(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);   /* |x| as unsigned */
    const __m256i sy = _mm256_sign_epi8(y, x);   /* y with x's sign */
    return lm_mul_sum_us8_pairs_f32(ax, sy);
}

static inline float lm_half_f32(lm_half h) { return _cvtsh_ss(h); }

/* lanes 2k and 2k+1: the sums of lanes 2k, 2k+1 of a and of b. Blends run on
 * any vector port, shuffles only on port 5 (Intel): one shuffle per pair of
 * vectors where vphaddd takes two */
static inline __m256i lm_pair_sums(__m256i a, __m256i b) {
    const __m256i even_a = _mm256_blend_epi32(a, b, 0xAA), even_b = _mm256_blend_epi32(b, a, 0xAA);
    return _mm256_add_epi32(even_a, _mm256_shuffle_epi32(even_b, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* lanes 4h + k: the sum of lanes 4h .. 4h+3 of v[k] (v: four lm_pair_sums outputs' sources
 * combined as (v0,v1), (v2,v3)) */
static inline __m256i lm_quad_sums(__m256i ab, __m256i cd) {
    const __m256i lo = _mm256_blend_epi32(ab, cd, 0xCC), hi = _mm256_blend_epi32(cd, ab, 0xCC);
    return _mm256_add_epi32(lo, _mm256_shuffle_epi32(hi, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* lane b = total of the 8 lanes of v[b] (exact int32: whatever the order,
 * the same bits) */
static inline __m256i lm_totals8(const __m256i v[8]) {
    const __m256i q0 = lm_quad_sums(lm_pair_sums(v[0], v[1]), lm_pair_sums(v[2], v[3]));
    const __m256i q1 = lm_quad_sums(lm_pair_sums(v[4], v[5]), lm_pair_sums(v[6], v[7]));
    /* lanes 0-3: q0's halves added, lanes 4-7: q1's */
    return _mm256_add_epi32(_mm256_blend_epi32(q0, q1, 0xF0), _mm256_permute2x128_si256(q0, q1, 0x21));
}

/* the dwords at `first` and every `stride` bytes after it, 8 of them */
static inline __m256i lm_gather8(const void *first, int stride) {
    const __m256i idx =
        _mm256_setr_epi32(0, stride, 2 * stride, 3 * stride, 4 * stride, 5 * stride, 6 * stride, 7 * stride);
    return _mm256_i32gather_epi32((const int *)first, idx, 1);
}

/* ------------------------------------------------- four-column kernels */
/* lm_vec_dot_x4_<t>_avx2(n, ncol, s, s_stride, x, y, y_stride) sets
 * s[c * s_stride] = dot(x, y + c * y_stride) for c = 0..ncol-1, 2 <= ncol <= 4.
 * Each weight block is unpacked once and multiplied with the columns'
 * blocks, which is where prefill, and decode of several sequences, spend
 * their time (compute/matmul.c calls these while 2 or more columns remain).
 *
 * Every column is computed with the per-block arithmetic and the accumulation
 * order of the single-column kernel lm_vec_dot_<t>_avx2 beside it in
 * simd/x86/<t>_avx2.c (the k-quant blocks are the very same *_block_n
 * functions, the legacy blocks the same byte unpacking and FMA chain), just
 * with one accumulator per column, so each result is bit-identical to that
 * kernel's: matmul output does not depend on how columns are grouped. */
enum { NCOL = 4 };

/* the columns' rows of activation blocks */
#define LM_X4_COLUMNS(block_t, y, vy, y_stride, ncol) \
    const block_t *y[NCOL];                           \
    for (int c = 0; c < (ncol); c++) y[c] = (const block_t *)((const char *)(vy) + (size_t)c * (y_stride))

/* the columns' block scales as floats (type_traits.h, lm_x4_scales_offset),
 * n_scales floats per block: d[nb], then s[nb] */
#define LM_X4_SCALES(ys, y, nb, block_t, ncol) \
    const float *ys[NCOL];                     \
    for (int c = 0; c < (ncol); c++)           \
    ys[c] = (const float *)((const char *)y[c] + lm_x4_scales_offset(nb, sizeof(block_t)))

/* The exported kernel over a body written for `ncol` columns: each case
 * passes a constant, so the always-inline body is unrolled into a kernel of
 * its own for 2, 3 and 4 columns. */
#define LM_X4_INLINE static inline __attribute__((always_inline))
#define LM_DEFINE_X4(t, body)                                                                                          \
    void LM_SIMD_FN(lm_vec_dot_x4_##t)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                                       size_t y_stride) {                                                              \
        switch (ncol) {                                                                                                \
        case 2: body(n, 2, s, s_stride, vx, vy, y_stride); break;                                                      \
        case 3: body(n, 3, s, s_stride, vx, vy, y_stride); break;                                                      \
        default: body(n, NCOL, s, s_stride, vx, vy, y_stride); break;                                                  \
        }                                                                                                              \
    }

#endif /* LAMINA_AVX2_H */
