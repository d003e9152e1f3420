/* q4_0_avx2.c — AVX2 dots of Q4_0 weights with Q8_0 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_0.h"
#include "simd/x86/legacy_avx2.h"

/* the weights as signed bytes: nibble - 8 */
static inline __m256i q4_0_bytes(const block_q4_0 *x) {
    return _mm256_sub_epi8(lm_bytes_from_nibbles_32(x->qs), _mm256_set1_epi8(8));
}

/* the weights as unsigned bytes, nibble = q + 8 (the VNNI two-row by four-column kernel) */
static inline __m256i q4_0_ubytes(const block_q4_0 *x) { return lm_bytes_from_nibbles_32(x->qs); }

LM_DEFINE_VEC_DOT_I8(q4_0, q4_0_bytes)
LM_DEFINE_VEC_DOT_2R_I8(q4_0, q4_0_bytes)
LM_DEFINE_VEC_DOT_X4_I8(q4_0, q4_0_bytes)
LM_DEFINE_VEC_DOT_2R2C_I8(q4_0, q4_0_bytes)
LM_DEFINE_VEC_DOT_2R4C_I8(q4_0, q4_0_bytes, q4_0_ubytes)
