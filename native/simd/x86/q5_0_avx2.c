/* q5_0_avx2.c — AVX2 dots of Q5_0 weights with Q8_0 activations
 * (legacy_i8_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q5_0.h"
#include "simd/x86/avx2.h"

/* the weights as unsigned bytes, q + 16 = nibble | high bit << 4 */
static inline __m256i lm_i8_ubytes(const block_q5_0 *x) {
    const __m256i hi = _mm256_and_si256(lm_bytes_from_bits_32(x->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(lm_bytes_from_nibbles_32(x->qs), hi);
}

#define LM_I8_T q5_0
#define LM_I8_BIAS_SHIFT 4
#define LM_I8_MIN 0
#define LM_I8_SIGNED 0
#include "simd/x86/legacy_i8_avx2.h"
