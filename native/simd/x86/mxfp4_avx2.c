/* mxfp4_avx2.c — the dots of MXFP4 weights with Q8_0 activations
 * (legacy_i8_avx2.h, like IQ4_NL: a block is 32 signed bytes, here the
 * doubled E2M1 values -12..12, times a scale, here 2^(e-128) from the E8M0
 * exponent byte): one and two rows, two to four columns, two by two, and
 * prefill's many columns, in every build with the same bits. The 4-bit
 * codes pick the 16 values with one byte shuffle. */
#include "quants/kernels.h"
#include "quants/mxfp4.h"
#include "simd/x86/avx2.h"

/* the block's 32 codes (low nibbles, then high nibbles) through the 16 bytes
 * of table, in both halves */
static inline __m256i mxfp4_lookup(const block_mxfp4 *x, __m128i table) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), lm_bytes_from_nibbles_32(x->qs));
}

#if defined(LM_VNNI)
/* the values as unsigned bytes, value + 128 (116..140; vpdpbusd does not saturate) */
static inline __m256i lm_i8_ubytes(const block_mxfp4 *x) {
    const __m128i values = _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4);
    return mxfp4_lookup(x, _mm_xor_si128(values, _mm_set1_epi8((char)0x80)));
}
#define LM_I8_SIGNED 0
#else
/* the signed values, as IQ4_NL's (one build's sign trick for all 4-bit tables) */
static inline __m256i lm_i8_ubytes(const block_mxfp4 *x) {
    return mxfp4_lookup(x, _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4));
}
#define LM_I8_SIGNED 1
#endif

/* the scale is the exponent byte's power of two (mxfp4.h), not an fp16 field */
#define LM_I8_SCALE(x) lm_e8m0_to_f32_half((x)->e)
static inline __m256 lm_i8_scales(const block_mxfp4 *x, int m) {
    _Alignas(32) float d[8] = { 0 };
    for (int b = 0; b < m; b++) d[b] = lm_e8m0_to_f32_half(x[b].e);
    return _mm256_load_ps(d);
}

#define LM_I8_T mxfp4
#define LM_I8_BIAS_SHIFT 7
#define LM_I8_MIN 0
#include "simd/x86/legacy_i8_avx2.h"
