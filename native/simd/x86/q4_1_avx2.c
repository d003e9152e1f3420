/* q4_1_avx2.c — AVX2 dots of Q4_1 weights with Q8_1 activations
 * (legacy_i8_avx2.h): one activation column, two to four, and prefill's many. */
#include "quants/kernels.h"
#include "quants/q4_1.h"
#include "simd/x86/avx2.h"

/* the weights as unsigned bytes: the nibbles */
static inline __m256i lm_i8_ubytes(const block_q4_1 *x) { return lm_bytes_from_nibbles_32(x->qs); }

#define LM_I8_T q4_1
#define LM_I8_MIN 1
#define LM_I8_SIGNED 0
#include "simd/x86/legacy_i8_avx2.h"
