/* q8_0_avx2.c — AVX2 dots of Q8_0 weights with Q8_0 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q8_0.h"
#include "simd/x86/legacy_avx2.h"

static inline __m256i q8_0_bytes(const block_q8_0 *x) { return _mm256_loadu_si256((const __m256i *)x->qs); }

/* the weights as unsigned bytes, q + 128 (the VNNI two-row by four-column kernel) */
static inline __m256i q8_0_ubytes(const block_q8_0 *x) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x->qs), _mm256_set1_epi8((char)0x80));
}

LM_DEFINE_VEC_DOT_I8(q8_0, q8_0_bytes)
LM_DEFINE_VEC_DOT_2R_I8(q8_0, q8_0_bytes)
LM_DEFINE_VEC_DOT_X4_I8(q8_0, q8_0_bytes)
LM_DEFINE_VEC_DOT_2R2C_I8(q8_0, q8_0_bytes)
LM_DEFINE_VEC_DOT_2R4C_I8(q8_0, q8_0_bytes, q8_0_ubytes)
