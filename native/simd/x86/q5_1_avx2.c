/* q5_1_avx2.c — AVX2 dots of Q5_1 weights with Q8_1 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q5_1.h"
#include "simd/x86/legacy_avx2.h"

/* the weights as unsigned bytes: nibble | hbit << 4 */
static inline __m256i q5_1_bytes(const block_q5_1 *x) {
    const __m256i hi = _mm256_and_si256(lm_bytes_from_bits_32(x->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(lm_bytes_from_nibbles_32(x->qs), hi);
}

LM_DEFINE_VEC_DOT_U8_MIN(q5_1, q5_1_bytes)
LM_DEFINE_VEC_DOT_2R_U8_MIN(q5_1, q5_1_bytes)
LM_DEFINE_VEC_DOT_X4_U8_MIN(q5_1, q5_1_bytes)
