/* legacy_avx2.c — AVX2/FMA/F16C dots for the float types (F32, F16, BF16),
 * the legacy formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and IQ4_NL.
 * Same integer math per block as block_math_legacy.h, with the float sums in a
 * different order: tests compare each with its scalar reference by NMSE.
 * The quantized kernels follow ggml's AVX2 ggml_vec_dot_<t>_q8_<p>. */
#include <immintrin.h>

#include "avx2_util.h"
#include "blocks.h"
#include "type_kernels.h"

static inline float h2f(lm_half h) { return _cvtsh_ss(h); }

/* ------------------------------------------------------------- float types */
/* four independent 8-wide FMA chains hide the FMA latency; the tail that does
 * not fill 32 values is summed in scalar code */

static inline __m256 load_f16_8(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 load_bf16_8(const lm_bf16 *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

#define LM_FLOAT_DOT_AVX2(t, elem_t, load8, to_f32)                                                  \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                \
        const elem_t *x = vx, *y = vy;                                                               \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                    \
        int64_t i = 0;                                                                               \
        for (; i + 32 <= n; i += 32) {                                                               \
            acc0 = _mm256_fmadd_ps(load8(x + i), load8(y + i), acc0);                                \
            acc1 = _mm256_fmadd_ps(load8(x + i + 8), load8(y + i + 8), acc1);                        \
            acc2 = _mm256_fmadd_ps(load8(x + i + 16), load8(y + i + 16), acc2);                      \
            acc3 = _mm256_fmadd_ps(load8(x + i + 24), load8(y + i + 24), acc3);                      \
        }                                                                                            \
        float sum = lm_hsum_f32_8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))); \
        for (; i < n; i++) sum += to_f32(x[i]) * to_f32(y[i]);                                       \
        *s = sum;                                                                                    \
    }

static inline __m256 load_f32_8(const float *p) { return _mm256_loadu_ps(p); }
static inline float f32_id(float v) { return v; }

LM_FLOAT_DOT_AVX2(f32, float, load_f32_8, f32_id)
LM_FLOAT_DOT_AVX2(f16, lm_half, load_f16_8, h2f)
LM_FLOAT_DOT_AVX2(bf16, lm_bf16, load_bf16_8, lm_bf16_to_f32)

/* ---------------------------------------------------- quantized x Q8_0/Q8_1 */
/* per block: 32 weights as bytes, times 32 activation bytes, summed into 8
 * int32 lanes as floats, scaled by dx*dy and accumulated with one FMA */

void lm_vec_dot_q4_0_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        const __m256i qx = lm_q4_0_bytes(&x[i]);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

/* the min term m * dy * sum(qy) needs no vector work: Q8_1 stores dy*sum(qy) */
void lm_vec_dot_q4_1_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        summs += h2f(x[i].m) * h2f(y[i].s);
        const __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        const __m256i qx = lm_bytes_from_nibbles_32(x[i].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc) + summs;
}

/* the bytes: see lm_q5_0_bytes */
void lm_vec_dot_q5_0_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK5_0; i++) {
        const __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        const __m256i qx = lm_q5_0_bytes(&x[i]);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

void lm_vec_dot_q5_1_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        summs += h2f(x[i].m) * h2f(y[i].s);
        const __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        const __m256i hi = _mm256_and_si256(lm_bytes_from_bits_32(x[i].qh), _mm256_set1_epi8(0x10));
        const __m256i qx = _mm256_or_si256(lm_bytes_from_nibbles_32(x[i].qs), hi);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc) + summs;
}

void lm_vec_dot_q8_0_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}

/* IQ4_NL: the nibbles index the 16 levels with one byte shuffle per half */
void lm_vec_dot_iq4_nl_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    const __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        const __m256 d = _mm256_set1_ps(h2f(y[i].d) * h2f(x[i].d));
        const __m128i q4 = _mm_loadu_si128((const __m128i *)x[i].qs);
        const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(q4, low4));
        const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
        const __m256i qx = _mm256_set_m128i(hi, lo);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
    }
    *s = lm_hsum_f32_8(acc);
}
