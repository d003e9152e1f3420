/* float_avx2.c — AVX2/FMA/F16C dots of the float weight types F32, F16 and
 * BF16 with activations of the same type; tests compare each with its scalar
 * reference (quants/float.c) by NMSE. */
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

/* four independent 8-wide FMA chains hide the FMA latency; the tail that does
 * not fill 32 values is summed in scalar code */

static inline __m256 load_f16_8(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 load_bf16_8(const lm_bf16 *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

#define LM_FLOAT_DOT_AVX2(t, elem_t, load8, to_f32)                                                     \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                   \
        const elem_t *x = vx, *y = vy;                                                                  \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                       \
        int64_t i = 0;                                                                                  \
        for (; i + 32 <= n; i += 32) {                                                                  \
            acc0 = _mm256_fmadd_ps(load8(x + i), load8(y + i), acc0);                                   \
            acc1 = _mm256_fmadd_ps(load8(x + i + 8), load8(y + i + 8), acc1);                           \
            acc2 = _mm256_fmadd_ps(load8(x + i + 16), load8(y + i + 16), acc2);                         \
            acc3 = _mm256_fmadd_ps(load8(x + i + 24), load8(y + i + 24), acc3);                         \
        }                                                                                               \
        float sum = lm_hsum_f32_8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))); \
        for (; i < n; i++) sum += to_f32(x[i]) * to_f32(y[i]);                                          \
        *s = sum;                                                                                       \
    }

static inline __m256 load_f32_8(const float *p) { return _mm256_loadu_ps(p); }
static inline float f32_id(float v) { return v; }

LM_FLOAT_DOT_AVX2(f32, float, load_f32_8, f32_id)
LM_FLOAT_DOT_AVX2(f16, lm_half, load_f16_8, lm_half_f32)
LM_FLOAT_DOT_AVX2(bf16, lm_bf16, load_bf16_8, lm_bf16_to_f32)
