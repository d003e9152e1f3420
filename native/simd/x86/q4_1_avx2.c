/* q4_1_avx2.c — AVX2 dots of Q4_1 weights with Q8_1 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_1.h"
#include "simd/x86/legacy_avx2.h"

/* the weights as unsigned bytes: the nibbles */
static inline __m256i q4_1_bytes(const block_q4_1 *x) { return lm_bytes_from_nibbles_32(x->qs); }

LM_DEFINE_LEGACY_DOTS(q4_1, block_q8_1, q4_1_bytes, 0, 1)
