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

/* y = x rounded to f16 (bf16) and widened back: the values the one-column
 * dot sees after lm_from_float_<t>, for the many-column kernels, which take
 * f32 columns. F16C rounds to nearest even as lm_f32_to_half does; bf16 as
 * lm_f32_to_bf16 (a NaN stays a quiet NaN). */
void lm_round_row_f16_avx2(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = lm_half_to_f32(lm_f32_to_half(x[i]));
}

void lm_round_row_bf16_avx2(const float *x, float *y, int64_t n) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u), half_ulp = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x00400000);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        const __m256i rounded = _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(half_ulp, odd)), high);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        const __m256i quieted = _mm256_or_si256(_mm256_and_si256(u, high), quiet);
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_blendv_epi8(rounded, quieted, nan));
    }
    for (; i < n; i++) y[i] = lm_bf16_to_f32(lm_f32_to_bf16(x[i]));
}
