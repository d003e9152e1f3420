/* forward_ops_avx2.c — AVX2/FMA/F16C versions of the attention inner loops
 * (scores of one query over cached key rows, the p-weighted sum of value
 * rows), one pair per KV-cache type. The scalar references are in
 * model/forward_ops.c. */
#include <immintrin.h>

#include "model/forward_ops.h"
#include "quants/blocks.h"
#include "simd/x86/avx2.h"

#define ROW(base, j, stride) ((const char *)(base) + (size_t)(j) * (stride))

/* Both loops keep their running sums in registers: scores walks one key row
 * at a time with four accumulators; mix walks the head in 32-wide strips,
 * loads the strip of `out` into four registers and adds every row's strip
 * into them, so `out` is read and written once instead of once per row (and
 * a call per run of rows continues exactly where the last one stopped). */

static inline __m256 load_half8(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 load_i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* ----------------------------------------------------------- f32, f16 */
/* One definition for both float caches: T is the element type, LOAD8 turns 8
 * of them into a vector and TO_F32 one of them into a float. */
#define LM_LOAD_F32_8(p) _mm256_loadu_ps(p)
#define LM_F32_TO_F32(v) (v)

#define LM_DEFINE_KV_FLOAT(name, T, LOAD8, TO_F32)                                                                     \
    static inline float dot_##name(const float *q, const T *k, int64_t hd) {                                           \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(); \
        int64_t i = 0;                                                                                                 \
        for (; i + 32 <= hd; i += 32) {                                                                                \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), LOAD8(k + i), a0);                                            \
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), LOAD8(k + i + 8), a1);                                    \
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 16), LOAD8(k + i + 16), a2);                                  \
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 24), LOAD8(k + i + 24), a3);                                  \
        }                                                                                                              \
        for (; i + 8 <= hd; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), LOAD8(k + i), a0);                    \
        float d = lm_hsum_f32_8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));                          \
        for (; i < hd; i++) d += q[i] * TO_F32(k[i]);                                                                  \
        return d;                                                                                                      \
    }                                                                                                                  \
                                                                                                                       \
    void lm_kv_scores_##name##_avx2(float *s, const float *q, const void *k, size_t stride, int64_t n, int64_t hd,     \
                                    float scale) {                                                                     \
        for (int64_t j = 0; j < n; j++) s[j] = scale * dot_##name(q, (const T *)ROW(k, j, stride), hd);                \
    }                                                                                                                  \
                                                                                                                       \
    void lm_kv_mix_##name##_avx2(float *out, const float *p, const void *v, size_t stride, int64_t n, int64_t hd) {    \
        int64_t c = 0;                                                                                                 \
        for (; c + 32 <= hd; c += 32) {                                                                                \
            __m256 a0 = _mm256_loadu_ps(out + c), a1 = _mm256_loadu_ps(out + c + 8),                                   \
                   a2 = _mm256_loadu_ps(out + c + 16), a3 = _mm256_loadu_ps(out + c + 24);                             \
            for (int64_t j = 0; j < n; j++) {                                                                          \
                const T *vj = (const T *)ROW(v, j, stride) + c;                                                        \
                const __m256 pj = _mm256_set1_ps(p[j]);                                                                \
                a0 = _mm256_fmadd_ps(pj, LOAD8(vj), a0);                                                               \
                a1 = _mm256_fmadd_ps(pj, LOAD8(vj + 8), a1);                                                           \
                a2 = _mm256_fmadd_ps(pj, LOAD8(vj + 16), a2);                                                          \
                a3 = _mm256_fmadd_ps(pj, LOAD8(vj + 24), a3);                                                          \
            }                                                                                                          \
            _mm256_storeu_ps(out + c, a0);                                                                             \
            _mm256_storeu_ps(out + c + 8, a1);                                                                         \
            _mm256_storeu_ps(out + c + 16, a2);                                                                        \
            _mm256_storeu_ps(out + c + 24, a3);                                                                        \
        }                                                                                                              \
        for (; c < hd; c++) {                                                                                          \
            float acc = out[c];                                                                                        \
            for (int64_t j = 0; j < n; j++) acc += p[j] * TO_F32(((const T *)ROW(v, j, stride))[c]);                   \
            out[c] = acc;                                                                                              \
        }                                                                                                              \
    }

LM_DEFINE_KV_FLOAT(f32, float, LM_LOAD_F32_8, LM_F32_TO_F32)
LM_DEFINE_KV_FLOAT(f16, lm_half, load_half8, lm_half_to_f32)

/* --------------------------------------------------------------- q8_0 */

void lm_kv_scores_q8_0_avx2(float *s, const float *q, const void *k, size_t stride, int64_t n, int64_t hd,
                            float scale) {
    for (int64_t j = 0; j < n; j++) {
        const block_q8_0 *kb = (const block_q8_0 *)ROW(k, j, stride);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < hd / QK8_0; b++) {
            const float *qb = q + b * QK8_0;
            __m256 d = _mm256_mul_ps(_mm256_loadu_ps(qb), load_i8x8(kb[b].qs));
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 8), load_i8x8(kb[b].qs + 8), d);
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16), load_i8x8(kb[b].qs + 16), d);
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 24), load_i8x8(kb[b].qs + 24), d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(lm_half_to_f32(kb[b].d)), d, acc);
        }
        s[j] = scale * lm_hsum_f32_8(acc);
    }
}

void lm_kv_mix_q8_0_avx2(float *out, const float *p, const void *v, size_t stride, int64_t n, int64_t hd) {
    for (int64_t b = 0; b < hd / QK8_0; b++) {
        float *ob = out + b * QK8_0;
        __m256 a0 = _mm256_loadu_ps(ob), a1 = _mm256_loadu_ps(ob + 8), a2 = _mm256_loadu_ps(ob + 16),
               a3 = _mm256_loadu_ps(ob + 24);
        for (int64_t j = 0; j < n; j++) {
            const block_q8_0 *vb = (const block_q8_0 *)ROW(v, j, stride) + b;
            const __m256 pd = _mm256_set1_ps(p[j] * lm_half_to_f32(vb->d));
            a0 = _mm256_fmadd_ps(pd, load_i8x8(vb->qs), a0);
            a1 = _mm256_fmadd_ps(pd, load_i8x8(vb->qs + 8), a1);
            a2 = _mm256_fmadd_ps(pd, load_i8x8(vb->qs + 16), a2);
            a3 = _mm256_fmadd_ps(pd, load_i8x8(vb->qs + 24), a3);
        }
        _mm256_storeu_ps(ob, a0);
        _mm256_storeu_ps(ob + 8, a1);
        _mm256_storeu_ps(ob + 16, a2);
        _mm256_storeu_ps(ob + 24, a3);
    }
}
