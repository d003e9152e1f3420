/* iq4_nl_avx2.c — the dots of IQ4_NL weights with Q8_0 activations
 * (legacy_i8_avx2.h, like Q8_0: a block is 32 signed bytes times an fp16
 * scale): one and two rows, two to four columns, two by two, and prefill's
 * many columns, in every build with the same bits. The 4-bit indices pick
 * the 16 non-uniform levels with one byte shuffle. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

#if defined(LM_VNNI)
#define LM_I8_SIGNED 0 /* the levels + 128 as unsigned bytes (1..241; vpdpbusd does not saturate) */
#else
#define LM_I8_SIGNED 1 /* the signed levels: level + 128 would overflow vpmaddubsw's int16 pair sums */
#endif
static inline __m256i lm_i8_ubytes(const block_iq4_nl *x) {
    return lm_lut16_bytes_32(x->qs, lm_kvalues_iq4nl, LM_I8_SIGNED ? 0 : 0x80);
}

#define LM_I8_T iq4_nl
#define LM_I8_BIAS_SHIFT 7
#define LM_I8_MIN 0
#include "simd/x86/legacy_i8_avx2.h"
