/* mxfp4_avx2.c — the dots of MXFP4 weights with Q8_0 activations
 * (legacy_i8_avx2.h, like IQ4_NL: a block is 32 signed bytes, here the
 * doubled E2M1 values -12..12, times a scale, here 2^(e-128) from the E8M0
 * exponent byte): one and two rows, two to four columns, two by two, and
 * prefill's many columns, in every build with the same bits. The 4-bit
 * codes pick the 16 values with one byte shuffle. */
#include "quants/kernels.h"
#include "quants/mxfp4.h"
#include "simd/x86/avx2.h"

#if defined(LM_VNNI)
#define LM_I8_SIGNED 0 /* the values + 128 as unsigned bytes (116..140; vpdpbusd does not saturate) */
#else
#define LM_I8_SIGNED 1 /* the signed values, as IQ4_NL's (one build's sign trick for all 4-bit tables) */
#endif
static inline __m256i lm_i8_ubytes(const block_mxfp4 *x) {
    return lm_lut16_bytes_32(x->qs, lm_kvalues_mxfp4, LM_I8_SIGNED ? 0 : 0x80);
}

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
