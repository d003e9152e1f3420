/* legacy_avx2.h — IQ4_NL's few-column kernel, given how it unpacks a block
 * into the 32 bytes the dot multiplies, and the prefetch distance of the
 * one-column dots (Q4_0 .. Q8_0 themselves: legacy_i8_avx2.h).
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

#endif /* LAMINA_LEGACY_AVX2_H */
