/* forward_ops_avx2.c — AVX2/FMA/F16C versions of the attention inner loops
 * (q·k over a cached key row, out += p·v), one pair per KV-cache type. The
 * scalar references are in compute/forward_ops.c. */
#include <immintrin.h>

#include "blocks.h"
#include "compute/forward_ops.h"
#include "simd/avx2_util.h"

/* ---------------------------------------------------------------- f32 */

float lm_kv_dot_f32_avx2(const float *q, const void *k, int64_t n) {
    const float *kf = k;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kf + i), acc);
    float s = lm_hsum_f32_8(acc);
    for (; i < n; i++) s += q[i] * kf[i];
    return s;
}

void lm_kv_axpy_f32_avx2(float *out, float a, const void *v, int64_t n) {
    const float *vf = v;
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(vf + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] += a * vf[i];
}

/* ---------------------------------------------------------------- f16 */

static inline __m256 load_half8(const lm_half *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

float lm_kv_dot_f16_avx2(const float *q, const void *k, int64_t n) {
    const lm_half *kh = k;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_half8(kh + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load_half8(kh + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_half8(kh + i), acc0);
    float s = lm_hsum_f32_8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += q[i] * lm_half_to_f32(kh[i]);
    return s;
}

void lm_kv_axpy_f16_avx2(float *out, float a, const void *v, int64_t n) {
    const lm_half *vh = v;
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, load_half8(vh + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] += a * lm_half_to_f32(vh[i]);
}

/* --------------------------------------------------------------- q8_0 */

static inline __m256 load_i8x8_f32(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

float lm_kv_dot_q8_0_avx2(const float *q, const void *k, int64_t n) {
    const block_q8_0 *kb = k;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *qb = q + b * QK8_0;
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(qb), load_i8x8_f32(kb[b].qs));
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 8), load_i8x8_f32(kb[b].qs + 8), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16), load_i8x8_f32(kb[b].qs + 16), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 24), load_i8x8_f32(kb[b].qs + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(lm_half_to_f32(kb[b].d)), s, acc);
    }
    return lm_hsum_f32_8(acc);
}

void lm_kv_axpy_q8_0_avx2(float *out, float a, const void *v, int64_t n) {
    const block_q8_0 *vb = v;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const __m256 ad = _mm256_set1_ps(a * lm_half_to_f32(vb[b].d));
        float *ob = out + b * QK8_0;
        for (int j = 0; j < QK8_0; j += 8)
            _mm256_storeu_ps(ob + j, _mm256_fmadd_ps(ad, load_i8x8_f32(vb[b].qs + j), _mm256_loadu_ps(ob + j)));
    }
}
