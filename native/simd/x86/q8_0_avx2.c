/* q8_0_avx2.c — AVX2 dots of Q8_0 weights with Q8_0 activations
 * (legacy_i8_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q8_0.h"
#include "simd/x86/avx2.h"

#if defined(LM_VNNI)
/* the weights as unsigned bytes, q + 128 (vpdpbusd does not saturate) */
static inline __m256i lm_i8_ubytes(const block_q8_0 *x) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x->qs), _mm256_set1_epi8((char)0x80));
}
#define LM_I8_SIGNED 0
#else
/* the signed bytes: q + 128 would overflow vpmaddubsw's int16 pair sums */
static inline __m256i lm_i8_ubytes(const block_q8_0 *x) { return _mm256_loadu_si256((const __m256i *)x->qs); }
#define LM_I8_SIGNED 1
#endif

#define LM_I8_T q8_0
#define LM_I8_BIAS_SHIFT 7
#define LM_I8_MIN 0
#include "simd/x86/legacy_i8_avx2.h"
