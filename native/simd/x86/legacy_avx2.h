/* legacy_avx2.h — what the AVX2 dots of the 32-weight formats with a
 * minimum (simd/x86/q4_1_avx2.c, q5_1_avx2.c), and IQ4_NL's few-column
 * kernel, share: the kernels, given how a type unpacks a block into the 32
 * bytes the dot multiplies (Q4_0, Q5_0 and Q8_0: legacy_i8_avx2.h).
 *
 * Same integer math per block as the shared block math (quants/q*_0.h,
 * q*_1.h), with the float sums in a different order: tests compare each with
 * its scalar reference by NMSE. The kernels follow ggml's AVX2
 * ggml_vec_dot_<t>_q8_<p>. */
#ifndef LAMINA_LEGACY_AVX2_H
#define LAMINA_LEGACY_AVX2_H

#include "simd/x86/avx2.h"

/* Blocks fetched ahead by the one-column dots. In decode every weight is read
 * once and a row is a few hundred bytes, so the loads of the next row wait on
 * memory; fetching 16 blocks ahead took one column of a large Q4_0/Q4_1/Q8_0
 * matrix from 12-16 to 18-19 (Q4) and 27-34 to 38 (Q8_0) GB/s on 2 threads of a
 * KVM Xeon guest (`lamina bench-kernels`, 64 MiB matrices). A prefetch never
 * faults, so running past the row's end is harmless. */
#define LM_LEGACY_PREFETCH 16

/* unsigned weight bytes x Q8_1 (Q4_1, Q5_1): per block, 32 weights as bytes
 * times 32 activation bytes, summed into 8 int32 lanes as floats, scaled by
 * dx*dy and accumulated with one FMA; the min term m * dy * sum(qy) needs no
 * vector work: Q8_1 stores dy*sum(qy) */
#define LM_DEFINE_VEC_DOT_U8_MIN(t, bytes)                                                 \
    void LM_SIMD_FN(lm_vec_dot_##t)(int64_t n, float *s, const void *vx, const void *vy) { \
        const block_##t *x = vx;                                                           \
        const block_q8_1 *y = vy;                                                          \
        __m256 acc = _mm256_setzero_ps();                                                  \
        float summs = 0;                                                                   \
        for (int64_t i = 0; i < n / QK8_1; i++) {                                          \
            _mm_prefetch((const char *)&x[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);           \
            summs += lm_half_f32(x[i].m) * lm_half_f32(y[i].s);                            \
            const __m256 d = _mm256_set1_ps(lm_half_f32(x[i].d) * lm_half_f32(y[i].d));    \
            const __m256i qx = bytes(&x[i]);                                               \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);               \
            acc = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc);               \
        }                                                                                  \
        *s = lm_hsum_f32_8(acc) + summs;                                                   \
    }

/* Two weight rows with one activation column: rows x and x + x_stride bytes
 * to s[0] and s[1], each with the operations of the one-row kernel in the
 * same order (so the same bits), interleaved. One row's dot is a chain of
 * dependent FMAs (and for Q8_1 partners float adds into summs), one a block;
 * two independent chains and two weight streams keep the core busy while
 * either waits on its latency or on memory (decode: one column, every row). */
#define LM_DEFINE_VEC_DOT_2R_U8_MIN(t, bytes)                                                                  \
    void LM_SIMD_FN(lm_vec_dot_2r_##t)(int64_t n, float *s, const void *vx, size_t x_stride, const void *vy) { \
        const block_##t *x0 = vx, *x1 = (const block_##t *)((const char *)vx + x_stride);                      \
        const block_q8_1 *y = vy;                                                                              \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                         \
        float summs0 = 0, summs1 = 0;                                                                          \
        for (int64_t i = 0; i < n / QK8_1; i++) {                                                              \
            _mm_prefetch((const char *)&x0[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);                              \
            _mm_prefetch((const char *)&x1[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);                              \
            const float yd = lm_half_f32(y[i].d), ys = lm_half_f32(y[i].s);                                    \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);                                   \
            summs0 += lm_half_f32(x0[i].m) * ys;                                                               \
            summs1 += lm_half_f32(x1[i].m) * ys;                                                               \
            const __m256 d0 = _mm256_set1_ps(lm_half_f32(x0[i].d) * yd);                                       \
            const __m256 d1 = _mm256_set1_ps(lm_half_f32(x1[i].d) * yd);                                       \
            acc0 = _mm256_fmadd_ps(d0, lm_mul_sum_us8_pairs_f32(bytes(&x0[i]), qy), acc0);                     \
            acc1 = _mm256_fmadd_ps(d1, lm_mul_sum_us8_pairs_f32(bytes(&x1[i]), qy), acc1);                     \
        }                                                                                                      \
        s[0] = lm_hsum_f32_8(acc0) + summs0;                                                                   \
        s[1] = lm_hsum_f32_8(acc1) + summs1;                                                                   \
    }

/* two to four columns (avx2.h) of a signed-byte one-column kernel with Q8_0
 * partners (IQ4_NL's: per block acc += (dx * dy) * sum(qx * qy) with one FMA,
 * lm_mul_sum_i8_pairs_f32); |qx| is taken once per block, dy read as a float
 * (LM_X4_SCALES): the same product as the one-column kernel's. Q4_0, Q5_0 and
 * Q8_0 have kernels of their own (legacy_i8_avx2.h). */
#define LM_DEFINE_VEC_DOT_X4_I8(t, bytes)                                                                          \
    LM_X4_INLINE void x4_##t(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                             size_t y_stride) {                                                                    \
        const block_##t *x = vx;                                                                                   \
        LM_X4_COLUMNS(block_q8_0, y, vy, y_stride, ncol);                                                          \
        const int64_t nb = n / QK8_0;                                                                              \
        LM_X4_SCALES(yd, y, nb, block_q8_0, ncol);                                                                 \
        __m256 acc[NCOL];                                                                                          \
        for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();                                               \
        for (int64_t i = 0; i < nb; i++) {                                                                         \
            const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d));                                                 \
            const __m256i qx = bytes(&x[i]);                                                                       \
            const __m256i ax = _mm256_sign_epi8(qx, qx);                                                           \
            for (int c = 0; c < ncol; c++) {                                                                       \
                const __m256 d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i]));                                \
                const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[c][i].qs), qx);          \
                acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(ax, sy), acc[c]);                             \
            }                                                                                                      \
        }                                                                                                          \
        for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]);                                    \
    }                                                                                                              \
    LM_DEFINE_X4(t, x4_##t)

/* two to four columns (avx2.h) of LM_DEFINE_VEC_DOT_U8_MIN: the min term from
 * Q8_1's dy*sum(qy), both scales read as floats (LM_X4_SCALES); per column
 * the one-column kernel's products, FMA chain and float sum in its order */
#define LM_DEFINE_VEC_DOT_X4_U8_MIN(t, bytes)                                                                      \
    LM_X4_INLINE void x4_##t(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                             size_t y_stride) {                                                                    \
        const block_##t *x = vx;                                                                                   \
        LM_X4_COLUMNS(block_q8_1, y, vy, y_stride, ncol);                                                          \
        const int64_t nb = n / QK8_1;                                                                              \
        LM_X4_SCALES(yd, y, nb, block_q8_1, ncol);   /* d[nb], then s[nb] */                                       \
        __m256 acc[NCOL];                                                                                          \
        float summs[NCOL] = { 0 };                                                                                 \
        for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();                                               \
        for (int64_t i = 0; i < nb; i++) {                                                                         \
            const float xm = lm_half_f32(x[i].m);                                                                  \
            const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d));                                                 \
            const __m256i qx = bytes(&x[i]);                                                                       \
            for (int c = 0; c < ncol; c++) {                                                                       \
                summs[c] += xm * yd[c][nb + i];                                                                    \
                const __m256 d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i]));                                \
                const __m256i qy = _mm256_loadu_si256((const __m256i *)y[c][i].qs);                                \
                acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc[c]);                             \
            }                                                                                                      \
        }                                                                                                          \
        for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]) + summs[c];                         \
    }                                                                                                              \
    LM_DEFINE_X4(t, x4_##t)

#endif /* LAMINA_LEGACY_AVX2_H */
