/* q5_0_avx2.c — AVX2 dots of Q5_0 weights with Q8_0 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q5_0.h"
#include "simd/x86/legacy_avx2.h"

/* q5_0 value = (nibble | hbit << 4) - 16: with the bit set that is the nibble,
 * without it nibble - 16, i.e. the nibble with the top four bits of the byte set */
static inline __m256i q5_0_bytes(const block_q5_0 *x) {
    const __m256i hi = _mm256_andnot_si256(lm_bytes_from_bits_32(x->qh), _mm256_set1_epi8((char)0xF0));
    return _mm256_or_si256(lm_bytes_from_nibbles_32(x->qs), hi);
}

/* the weights as unsigned bytes, q + 16 = nibble | high bit << 4 (the VNNI two-row by four-column kernel) */
static inline __m256i q5_0_ubytes(const block_q5_0 *x) {
    const __m256i hi = _mm256_and_si256(lm_bytes_from_bits_32(x->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(lm_bytes_from_nibbles_32(x->qs), hi);
}

LM_DEFINE_VEC_DOT_I8(q5_0, q5_0_bytes)
LM_DEFINE_VEC_DOT_2R_I8(q5_0, q5_0_bytes)
LM_DEFINE_VEC_DOT_X4_I8(q5_0, q5_0_bytes)
LM_DEFINE_VEC_DOT_2R2C_I8(q5_0, q5_0_bytes)
LM_DEFINE_VEC_DOT_2R4C_I8(q5_0, q5_0_bytes, q5_0_ubytes)
