/* forward_ops_avx2.c — AVX2/FMA/F16C versions of the attention inner loops
 * (scores of a group's queries over cached key rows, the p-weighted sums of
 * value rows), one pair per KV-cache type. The scalar references are in
 * model/forward_ops.c. */
#include <immintrin.h>

#include "model/forward_ops.h"
#include "quants/blocks.h"
#include "simd/x86/avx2.h"
#include "simd/x86/expf_avx2.h"

#define ROW(base, j, stride) ((const char *)(base) + (size_t)(j) * (stride))

/* Both loops keep their running sums in registers: scores walks one key row
 * at a time with four accumulators per head; mix walks the head in 32-wide
 * strips, loads the strip of `out` into four registers per head and adds
 * every row's strip into them, so `out` is read and written once instead of
 * once per row (and a call per run of rows continues exactly where the last
 * one stopped). Up to HEADS heads of a group go together: each cached row is
 * loaded and converted once for all of them (their 12 accumulators and the
 * converted values fit the 16 registers; mix converts a strip in halves to
 * make room). Every accumulator sees the same operations in the same order
 * as for its head alone, so a head's bits do not depend on its company. */
enum { HEADS = 3 };

#define LM_ALWAYS_INLINE static inline __attribute__((always_inline))

static inline __m256 load_half8(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 load_i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* kernel(args, m) over the heads HEADS at a time, m a constant in each call
 * so the inlined kernel keeps its accumulators in registers; the kernel's
 * head offset is h0 */
#define LM_BY_HEADS(nh, kernel, ...)                         \
    for (int h0 = 0; h0 < (nh); h0 += HEADS) {               \
        const int m = (nh) - h0 < HEADS ? (nh) - h0 : HEADS; \
        if (m == 1)                                          \
            kernel(h0, 1, __VA_ARGS__);                      \
        else if (m == 2)                                     \
            kernel(h0, 2, __VA_ARGS__);                      \
        else                                                 \
            kernel(h0, 3, __VA_ARGS__);                      \
    }

/* The scores of eight keys at once: S[k] holds key k's eight lane sums,
 * and the result its eight totals in key order, each added in the order
 * lm_hsum_f32_8 adds one vector's lanes, ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)),
 * so a key's score has the same bits here as alone (keys of a run's tail).
 * One transposition for eight keys instead of a reduction chain each. */
static inline __m256 hsum8_keys(const __m256 S[8]) {
    __m256 u[4];   /* u[i]: key i's l0+l4 .. l3+l7, then key i + 4's */
    for (int i = 0; i < 4; i++)
        u[i] =
            _mm256_add_ps(_mm256_permute2f128_ps(S[i], S[i + 4], 0x31), _mm256_permute2f128_ps(S[i], S[i + 4], 0x20));
    /* x01: keys 0 and 1 (4 and 5 above): their (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    const __m256 x01 = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 x23 = _mm256_add_ps(_mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* ----------------------------------------------------------- f32, f16 */
/* One definition for both float caches: T is the element type, LOAD8 turns 8
 * of them into a vector and TO_F32 one of them into a float. */
#define LM_LOAD_F32_8(p) _mm256_loadu_ps(p)
#define LM_F32_TO_F32(v) (v)

#define LM_DEFINE_KV_FLOAT(name, T, LOAD8, TO_F32)                                                                      \
    /* lanes[h]: head h's eight lane sums of q . kj over the 8-wide part of                                           \
     * the row (returned: where it ends); the one order both paths below use */ \
    LM_ALWAYS_INLINE int64_t key_lanes_##name(const int nh, __m256 lanes[HEADS], const T *kj, const float *q,           \
                                              size_t q_stride, int64_t hd) {                                            \
        __m256 a[HEADS][4];                                                                                             \
        for (int h = 0; h < nh; h++) a[h][0] = a[h][1] = a[h][2] = a[h][3] = _mm256_setzero_ps();                       \
        int64_t i = 0;                                                                                                  \
        for (; i + 32 <= hd; i += 32) {                                                                                 \
            const __m256 k0 = LOAD8(kj + i), k1 = LOAD8(kj + i + 8), k2 = LOAD8(kj + i + 16), k3 = LOAD8(kj + i + 24);  \
            for (int h = 0; h < nh; h++) {                                                                              \
                const float *qh = q + h * q_stride + i;                                                                 \
                a[h][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qh), k0, a[h][0]);                                            \
                a[h][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8), k1, a[h][1]);                                        \
                a[h][2] = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 16), k2, a[h][2]);                                       \
                a[h][3] = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 24), k3, a[h][3]);                                       \
            }                                                                                                           \
        }                                                                                                               \
        for (; i + 8 <= hd; i += 8) {                                                                                   \
            const __m256 k0 = LOAD8(kj + i);                                                                            \
            for (int h = 0; h < nh; h++)                                                                                \
                a[h][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * q_stride + i), k0, a[h][0]);                          \
        }                                                                                                               \
        for (int h = 0; h < nh; h++)                                                                                    \
            lanes[h] = _mm256_add_ps(_mm256_add_ps(a[h][0], a[h][1]), _mm256_add_ps(a[h][2], a[h][3]));                 \
        return i;                                                                                                       \
    }                                                                                                                   \
                                                                                                                        \
    LM_ALWAYS_INLINE void scores_##name(int h0, const int nh, float *s, size_t s_stride, const float *q,                \
                                        size_t q_stride, const void *k, size_t stride, int64_t n, int64_t hd,           \
                                        float scale) {                                                                  \
        s += h0 * s_stride;                                                                                             \
        q += h0 * q_stride;                                                                                             \
        int64_t j = 0;                                                                                                  \
        if (hd % 8 == 0)                                                                                                \
            for (; j + 8 <= n; j += 8) {                                                                                \
                __m256 S[HEADS][8], lanes[HEADS];                                                                       \
                for (int key = 0; key < 8; key++) {                                                                     \
                    key_lanes_##name(nh, lanes, (const T *)ROW(k, j + key, stride), q, q_stride, hd);                   \
                    for (int h = 0; h < nh; h++) S[h][key] = lanes[h];                                                  \
                }                                                                                                       \
                const __m256 vscale = _mm256_set1_ps(scale);                                                            \
                for (int h = 0; h < nh; h++)                                                                            \
                    _mm256_storeu_ps(s + h * s_stride + j, _mm256_mul_ps(vscale, hsum8_keys(S[h])));                    \
            }                                                                                                           \
        for (; j < n; j++) {                                                                                            \
            const T *kj = (const T *)ROW(k, j, stride);                                                                 \
            __m256 lanes[HEADS];                                                                                        \
            const int64_t i = key_lanes_##name(nh, lanes, kj, q, q_stride, hd);                                         \
            for (int h = 0; h < nh; h++) {                                                                              \
                const float *qh = q + h * q_stride;                                                                     \
                float d = lm_hsum_f32_8(lanes[h]);                                                                      \
                for (int64_t r = i; r < hd; r++) d += qh[r] * TO_F32(kj[r]);                                            \
                s[h * s_stride + j] = scale * d;                                                                        \
            }                                                                                                           \
        }                                                                                                               \
    }                                                                                                                   \
    void lm_kv_scores_##name##_avx2(                                                                                    \
        float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k, size_t stride, int64_t n,    \
        int64_t hd, float scale){ LM_BY_HEADS(nh, scores_##name, s, s_stride, q, q_stride, k, stride, n, hd, scale) }   \
                                                                                                                        \
    LM_ALWAYS_INLINE void mix_##name(int h0, const int nh, float *out, size_t out_stride, const float *p,               \
                                     size_t p_stride, const void *v, size_t stride, int64_t n, int64_t hd) {            \
        out += h0 * out_stride;                                                                                         \
        p += h0 * p_stride;                                                                                             \
        int64_t c = 0;                                                                                                  \
        for (; c + 32 <= hd; c += 32) {                                                                                 \
            __m256 a[HEADS][4];                                                                                         \
            for (int h = 0; h < nh; h++)                                                                                \
                for (int x = 0; x < 4; x++) a[h][x] = _mm256_loadu_ps(out + h * out_stride + c + 8 * x);                \
            for (int64_t j = 0; j < n; j++) {                                                                           \
                const T *vj = (const T *)ROW(v, j, stride) + c;                                                         \
                for (int x = 0; x < 4; x += 2) {                                                                        \
                    const __m256 v0 = LOAD8(vj + 8 * x), v1 = LOAD8(vj + 8 * x + 8);                                    \
                    for (int h = 0; h < nh; h++) {                                                                      \
                        const __m256 pj = _mm256_set1_ps(p[h * p_stride + j]);                                          \
                        a[h][x] = _mm256_fmadd_ps(pj, v0, a[h][x]);                                                     \
                        a[h][x + 1] = _mm256_fmadd_ps(pj, v1, a[h][x + 1]);                                             \
                    }                                                                                                   \
                }                                                                                                       \
            }                                                                                                           \
            for (int h = 0; h < nh; h++)                                                                                \
                for (int x = 0; x < 4; x++) _mm256_storeu_ps(out + h * out_stride + c + 8 * x, a[h][x]);                \
        }                                                                                                               \
        for (; c < hd; c++) {                                                                                           \
            for (int h = 0; h < nh; h++) {                                                                              \
                float acc = out[h * out_stride + c];                                                                    \
                for (int64_t j = 0; j < n; j++)                                                                         \
                    acc += p[h * p_stride + j] * TO_F32(((const T *)ROW(v, j, stride))[c]);                             \
                out[h * out_stride + c] = acc;                                                                          \
            }                                                                                                           \
        }                                                                                                               \
    }                                                                                                                   \
                                                                                                                        \
    void lm_kv_mix_##name##_avx2(float *out, size_t out_stride, const float *p, size_t p_stride, int nh,                \
                                 const void *v, size_t stride, int64_t n, int64_t hd) {                                 \
        LM_BY_HEADS(nh, mix_##name, out, out_stride, p, p_stride, v, stride, n, hd)                                     \
    }

LM_DEFINE_KV_FLOAT(f32, float, LM_LOAD_F32_8, LM_F32_TO_F32)
LM_DEFINE_KV_FLOAT(f16, lm_half, load_half8, lm_half_to_f32)

/* --------------------------------------------------------------- q8_0 */

/* acc[h]: head h's eight lane sums of q . key row kb, both paths' order */
LM_ALWAYS_INLINE void key_lanes_q8_0(const int nh, __m256 acc[HEADS], const block_q8_0 *kb, const float *q,
                                     size_t q_stride, int64_t hd) {
    for (int h = 0; h < nh; h++) acc[h] = _mm256_setzero_ps();
    for (int64_t b = 0; b < hd / QK8_0; b++) {
        const __m256 k0 = load_i8x8(kb[b].qs), k1 = load_i8x8(kb[b].qs + 8), k2 = load_i8x8(kb[b].qs + 16),
                     k3 = load_i8x8(kb[b].qs + 24);
        const __m256 kd = _mm256_set1_ps(lm_half_to_f32(kb[b].d));
        for (int h = 0; h < nh; h++) {
            const float *qb = q + h * q_stride + b * QK8_0;
            __m256 d = _mm256_mul_ps(_mm256_loadu_ps(qb), k0);
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 8), k1, d);
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16), k2, d);
            d = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 24), k3, d);
            acc[h] = _mm256_fmadd_ps(kd, d, acc[h]);
        }
    }
}

LM_ALWAYS_INLINE void scores_q8_0(int h0, const int nh, float *s, size_t s_stride, const float *q, size_t q_stride,
                                  const void *k, size_t stride, int64_t n, int64_t hd, float scale) {
    s += h0 * s_stride;
    q += h0 * q_stride;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 S[HEADS][8], lanes[HEADS];
        for (int key = 0; key < 8; key++) {
            key_lanes_q8_0(nh, lanes, (const block_q8_0 *)ROW(k, j + key, stride), q, q_stride, hd);
            for (int h = 0; h < nh; h++) S[h][key] = lanes[h];
        }
        const __m256 vscale = _mm256_set1_ps(scale);
        for (int h = 0; h < nh; h++) _mm256_storeu_ps(s + h * s_stride + j, _mm256_mul_ps(vscale, hsum8_keys(S[h])));
    }
    for (; j < n; j++) {
        __m256 lanes[HEADS];
        key_lanes_q8_0(nh, lanes, (const block_q8_0 *)ROW(k, j, stride), q, q_stride, hd);
        for (int h = 0; h < nh; h++) s[h * s_stride + j] = scale * lm_hsum_f32_8(lanes[h]);
    }
}

void lm_kv_scores_q8_0_avx2(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k,
                            size_t stride, int64_t n, int64_t hd, float scale){
    LM_BY_HEADS(nh, scores_q8_0, s, s_stride, q, q_stride, k, stride, n, hd, scale)
}

LM_ALWAYS_INLINE void mix_q8_0(int h0, const int nh, float *out, size_t out_stride, const float *p, size_t p_stride,
                               const void *v, size_t stride, int64_t n, int64_t hd) {
    out += h0 * out_stride;
    p += h0 * p_stride;
    for (int64_t b = 0; b < hd / QK8_0; b++) {
        __m256 a[HEADS][4];
        for (int h = 0; h < nh; h++)
            for (int x = 0; x < 4; x++) a[h][x] = _mm256_loadu_ps(out + h * out_stride + b * QK8_0 + 8 * x);
        for (int64_t j = 0; j < n; j++) {
            const block_q8_0 *vb = (const block_q8_0 *)ROW(v, j, stride) + b;
            const float vd = lm_half_to_f32(vb->d);
            for (int x = 0; x < 4; x += 2) {
                const __m256 v0 = load_i8x8(vb->qs + 8 * x), v1 = load_i8x8(vb->qs + 8 * x + 8);
                for (int h = 0; h < nh; h++) {
                    const __m256 pd = _mm256_set1_ps(p[h * p_stride + j] * vd);
                    a[h][x] = _mm256_fmadd_ps(pd, v0, a[h][x]);
                    a[h][x + 1] = _mm256_fmadd_ps(pd, v1, a[h][x + 1]);
                }
            }
        }
        for (int h = 0; h < nh; h++)
            for (int x = 0; x < 4; x++) _mm256_storeu_ps(out + h * out_stride + b * QK8_0 + 8 * x, a[h][x]);
    }
}

void lm_kv_mix_q8_0_avx2(float *out, size_t out_stride, const float *p, size_t p_stride, int nh, const void *v,
                         size_t stride, int64_t n, int64_t hd) {
    LM_BY_HEADS(nh, mix_q8_0, out, out_stride, p, p_stride, v, stride, n, hd)
}

/* ------------------------------------------------------------ softmax */

/* lm_softmax (forward_ops.c) with its bits: the maximum is the same in any
 * order (max_ps keeps the running value over a NaN, as the scalar compare
 * does), the exponentials are libm's (expf_avx2.h), and the sum runs in
 * double in the scalar loop's eight partial sums, one per lane. */
void lm_softmax_avx2(float *x, int64_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + i), mv);
    float lanes[8], max = -INFINITY;
    _mm256_storeu_ps(lanes, mv);
    for (int k = 0; k < 8; k++) max = lanes[k] > max ? lanes[k] : max;
    for (; i < n; i++) max = x[i] > max ? x[i] : max;

    const __m256 vmax = _mm256_set1_ps(max);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();   /* the partial sums of values i % 8 = 0..3, 4..7 */
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = lm_expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double part[8];
    _mm256_storeu_pd(part, lo);
    _mm256_storeu_pd(part + 4, hi);
    double sum = lm_softmax_parts_sum(part);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++) x[i] *= inv;
}

/* ------------------------------------------------------- activations */

/* lm_silu_mul (forward_ops.c) with its bits: libm's expf (expf_avx2.h), then
 * the same IEEE add, divide and multiply lane by lane */
void lm_silu_mul_avx2(float *x, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = lm_expf8(_mm256_xor_ps(v, neg));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    lm_silu_mul(x + i, up + i, n - i);
}

/* lm_gelu_tanh_mul with its bits: u and the sigmoid in the scalar's order of
 * operations (no FMA: the build keeps -ffp-contract=off) */
void lm_gelu_tanh_mul_avx2(float *x, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), m2 = _mm256_set1_ps(-2.0f);
    const __m256 c = _mm256_set1_ps(LM_GELU_SQRT_2_OVER_PI), a = _mm256_set1_ps(LM_GELU_COEF_A);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 t = _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(a, v), v));
        const __m256 u = _mm256_mul_ps(_mm256_mul_ps(c, v), t);
        const __m256 e = lm_expf8(_mm256_mul_ps(m2, u));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    lm_gelu_tanh_mul(x + i, up + i, n - i);
}
