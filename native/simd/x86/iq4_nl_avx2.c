/* iq4_nl_avx2.c — the dots of IQ4_NL weights with Q8_0 activations
 * (legacy_i8_avx2.h, like Q8_0: a block is 32 signed bytes times an fp16
 * scale): one and two rows, two to four columns, two by two, and prefill's
 * many columns, in every build with the same bits. The 4-bit indices pick
 * the 16 non-uniform levels with one byte shuffle. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

/* the block's 32 indices (low nibbles, then high nibbles) through the 16
 * bytes of table, in both halves */
static inline __m256i iq4_nl_lookup(const block_iq4_nl *x, __m128i table) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), lm_bytes_from_nibbles_32(x->qs));
}

#if defined(LM_VNNI)
/* the levels as unsigned bytes, level + 128 (1..241; vpdpbusd does not saturate) */
static inline __m256i lm_i8_ubytes(const block_iq4_nl *x) {
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    return iq4_nl_lookup(x, _mm_xor_si128(levels, _mm_set1_epi8((char)0x80)));
}
#define LM_I8_SIGNED 0
#else
/* the signed levels: level + 128 would overflow vpmaddubsw's int16 pair sums */
static inline __m256i lm_i8_ubytes(const block_iq4_nl *x) {
    return iq4_nl_lookup(x, _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl));
}
#define LM_I8_SIGNED 1
#endif

#define LM_I8_T iq4_nl
#define LM_I8_BIAS_SHIFT 7
#define LM_I8_MIN 0
#include "simd/x86/legacy_i8_avx2.h"
