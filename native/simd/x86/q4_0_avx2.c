/* q4_0_avx2.c — AVX2 dots of Q4_0 weights with Q8_0 activations
 * (legacy_i8_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_0.h"
#include "simd/x86/avx2.h"

/* the weights as unsigned bytes, nibble = q + 8 */
static inline __m256i lm_i8_ubytes(const block_q4_0 *x) { return lm_bytes_from_nibbles_32(x->qs); }

#define LM_I8_T q4_0
#define LM_I8_BIAS_SHIFT 3
#define LM_I8_MIN 0
#define LM_I8_SIGNED 0
#include "simd/x86/legacy_i8_avx2.h"
