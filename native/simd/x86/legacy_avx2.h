/* legacy_avx2.h — what the AVX2 dots of the 32-weight formats
 * (simd/x86/q4_0_avx2.c .. q8_0_avx2.c) share: the kernels, given how a type
 * unpacks a block into the 32 bytes the dot multiplies.
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

/* signed weight bytes x Q8_0 (Q4_0, Q5_0, Q8_0): per block, 32 weights as
 * bytes times 32 activation bytes, summed into 8 int32 lanes as floats,
 * scaled by dx*dy and accumulated with one FMA */
#define LM_DEFINE_VEC_DOT_I8(t, bytes)                                                     \
    void LM_SIMD_FN(lm_vec_dot_##t)(int64_t n, float *s, const void *vx, const void *vy) { \
        const block_##t *x = vx;                                                           \
        const block_q8_0 *y = vy;                                                          \
        __m256 acc = _mm256_setzero_ps();                                                  \
        for (int64_t i = 0; i < n / QK8_0; i++) {                                          \
            _mm_prefetch((const char *)&x[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);           \
            const __m256 d = _mm256_set1_ps(lm_half_f32(x[i].d) * lm_half_f32(y[i].d));    \
            const __m256i qx = bytes(&x[i]);                                               \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);               \
            acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);                \
        }                                                                                  \
        *s = lm_hsum_f32_8(acc);                                                           \
    }

/* unsigned weight bytes x Q8_1 (Q4_1, Q5_1): as above with unsigned bytes; the
 * min term m * dy * sum(qy) needs no vector work: Q8_1 stores dy*sum(qy) */
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
#define LM_DEFINE_VEC_DOT_2R_I8(t, bytes)                                                                      \
    void LM_SIMD_FN(lm_vec_dot_2r_##t)(int64_t n, float *s, const void *vx, size_t x_stride, const void *vy) { \
        const block_##t *x0 = vx, *x1 = (const block_##t *)((const char *)vx + x_stride);                      \
        const block_q8_0 *y = vy;                                                                              \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                         \
        for (int64_t i = 0; i < n / QK8_0; i++) {                                                              \
            _mm_prefetch((const char *)&x0[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);                              \
            _mm_prefetch((const char *)&x1[i + LM_LEGACY_PREFETCH], _MM_HINT_T0);                              \
            const float yd = lm_half_f32(y[i].d);                                                              \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);                                   \
            const __m256 d0 = _mm256_set1_ps(lm_half_f32(x0[i].d) * yd);                                       \
            const __m256 d1 = _mm256_set1_ps(lm_half_f32(x1[i].d) * yd);                                       \
            acc0 = _mm256_fmadd_ps(d0, lm_mul_sum_i8_pairs_f32(bytes(&x0[i]), qy), acc0);                      \
            acc1 = _mm256_fmadd_ps(d1, lm_mul_sum_i8_pairs_f32(bytes(&x1[i]), qy), acc1);                      \
        }                                                                                                      \
        s[0] = lm_hsum_f32_8(acc0);                                                                            \
        s[1] = lm_hsum_f32_8(acc1);                                                                            \
    }

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

/* Two rows by two columns (decode of two sequences): s[c * s_stride + r] for
 * rows r = 0, 1 (x, x + x_stride bytes) and columns c = 0, 1, each with the
 * operations of the few-column kernel below in the same order (its bits):
 * four independent chains instead of two. */
#define LM_DEFINE_VEC_DOT_2R2C_I8(t, bytes)                                                                     \
    void LM_SIMD_FN(lm_vec_dot_2r2c_##t)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride, \
                                         const void *vy, size_t y_stride) {                                     \
        const block_##t *x0 = vx, *x1 = (const block_##t *)((const char *)vx + x_stride);                       \
        LM_X4_COLUMNS(block_q8_0, y, vy, y_stride, 2);                                                          \
        const int64_t nb = n / QK8_0;                                                                           \
        LM_X4_SCALES(yd, y, nb, block_q8_0, 2);                                                                 \
        __m256 acc00 = _mm256_setzero_ps(), acc01 = _mm256_setzero_ps();                                        \
        __m256 acc10 = _mm256_setzero_ps(), acc11 = _mm256_setzero_ps();                                        \
        for (int64_t i = 0; i < nb; i++) {                                                                      \
            const __m256i qy0 = _mm256_loadu_si256((const __m256i *)y[0][i].qs);                                \
            const __m256i qy1 = _mm256_loadu_si256((const __m256i *)y[1][i].qs);                                \
            const __m256 yd0 = _mm256_broadcast_ss(&yd[0][i]), yd1 = _mm256_broadcast_ss(&yd[1][i]);            \
            LM_2R2C_I8_ROW(bytes(&x0[i]), lm_half_f32(x0[i].d), acc00, acc01);                                  \
            LM_2R2C_I8_ROW(bytes(&x1[i]), lm_half_f32(x1[i].d), acc10, acc11);                                  \
        }                                                                                                       \
        s[0] = lm_hsum_f32_8(acc00);                                                                            \
        s[1] = lm_hsum_f32_8(acc10);                                                                            \
        s[s_stride] = lm_hsum_f32_8(acc01);                                                                     \
        s[s_stride + 1] = lm_hsum_f32_8(acc11);                                                                 \
    }

/* one weight row's block (bytes qx_, scale xd_) into the accumulators of
 * columns 0 and 1 (qy0/yd0, qy1/yd1 of the enclosing loop) */
#define LM_2R2C_I8_ROW(qx_, xd_, acc_c0, acc_c1)                                                                      \
    do {                                                                                                              \
        const __m256i qx = (qx_);                                                                                     \
        const __m256 xd = _mm256_set1_ps(xd_);                                                                        \
        const __m256i ax = _mm256_sign_epi8(qx, qx);                                                                  \
        acc_c0 =                                                                                                      \
            _mm256_fmadd_ps(_mm256_mul_ps(xd, yd0), lm_mul_sum_us8_pairs_f32(ax, _mm256_sign_epi8(qy0, qx)), acc_c0); \
        acc_c1 =                                                                                                      \
            _mm256_fmadd_ps(_mm256_mul_ps(xd, yd1), lm_mul_sum_us8_pairs_f32(ax, _mm256_sign_epi8(qy1, qx)), acc_c1); \
    } while (0)

/* Two rows by four columns (decode of four or more sequences, and prefill):
 * s[c * s_stride + r], each with the few-column kernel's operations in the
 * same order (its bits). A weight block is unpacked once for four columns,
 * an activation block read once per two rows; the eight chains stay in
 * registers (the columns' blocks and scales are loaded where used).
 *
 * The VNNI builds take the weights as unsigned bytes q + bias (ubytes) and
 * start each vpdpbusd from the column's -bias * sum(y) lanes (type_traits.h,
 * lm_x4_bias_offset): the same int32 lane sums as the sign trick's, one
 * instruction per row and column instead of three. */
#if defined(LM_VNNI)
#define LM_DEFINE_VEC_DOT_2R4C_I8(t, bytes, ubytes)                                                             \
    void LM_SIMD_FN(lm_vec_dot_2r4c_##t)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride, \
                                         const void *vy, size_t y_stride) {                                     \
        LM_2R4C_PROLOGUE(t);                                                                                    \
        const int32_t *bias[4];                                                                                 \
        for (int c = 0; c < 4; c++)                                                                             \
            bias[c] = (const int32_t *)((const char *)y[c] + lm_x4_bias_offset(nb, sizeof(block_q8_0), 1));     \
        for (int64_t i = 0; i < nb; i++) {                                                                      \
            LM_2R4C_ROW(LM_U8_COLUMN_TERM, ubytes(&x0[i]), lm_half_f32(x0[i].d), a00, a01, a02, a03);           \
            LM_2R4C_ROW(LM_U8_COLUMN_TERM, ubytes(&x1[i]), lm_half_f32(x1[i].d), a10, a11, a12, a13);           \
        }                                                                                                       \
        LM_2R4C_EPILOGUE();                                                                                     \
    }
#else
#define LM_DEFINE_VEC_DOT_2R4C_I8(t, bytes, ubytes)                                                             \
    void LM_SIMD_FN(lm_vec_dot_2r4c_##t)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride, \
                                         const void *vy, size_t y_stride) {                                     \
        LM_2R4C_PROLOGUE(t);                                                                                    \
        for (int64_t i = 0; i < nb; i++) {                                                                      \
            LM_2R4C_ROW(LM_I8_COLUMN_TERM, bytes(&x0[i]), lm_half_f32(x0[i].d), a00, a01, a02, a03);            \
            LM_2R4C_ROW(LM_I8_COLUMN_TERM, bytes(&x1[i]), lm_half_f32(x1[i].d), a10, a11, a12, a13);            \
        }                                                                                                       \
        LM_2R4C_EPILOGUE();                                                                                     \
    }
#endif

#define LM_2R4C_PROLOGUE(t)                                                           \
    const block_##t *x0 = vx, *x1 = (const block_##t *)((const char *)vx + x_stride); \
    LM_X4_COLUMNS(block_q8_0, y, vy, y_stride, 4);                                    \
    const int64_t nb = n / QK8_0;                                                     \
    LM_X4_SCALES(yd, y, nb, block_q8_0, 4);                                           \
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;                \
    __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00

#define LM_2R4C_EPILOGUE()                                                       \
    const __m256 acc[2][4] = { { a00, a01, a02, a03 }, { a10, a11, a12, a13 } }; \
    for (int c = 0; c < 4; c++)                                                  \
        for (int r = 0; r < 2; r++) s[c * s_stride + r] = lm_hsum_f32_8(acc[r][c])

/* one weight row's block (bytes qx_, scale xd_) into the accumulators of
 * columns 0..3 (y, yd and i of the enclosing loop), by term */
#define LM_2R4C_ROW(term, qx_, xd_, acc0, acc1, acc2, acc3) \
    do {                                                    \
        const __m256i qx = (qx_);                           \
        const __m256 xd = _mm256_set1_ps(xd_);              \
        const __m256i ax = _mm256_sign_epi8(qx, qx);        \
        (void)ax;                                           \
        term(acc0, 0);                                      \
        term(acc1, 1);                                      \
        term(acc2, 2);                                      \
        term(acc3, 3);                                      \
    } while (0)

#if defined(LM_VNNI)
/* the same for unsigned weight bytes qx = q + bias: the lanes start at the
 * column's -bias * sum(y) */
#define LM_U8_COLUMN_TERM(acc, c)                                                                                \
    acc = _mm256_fmadd_ps(_mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i])),                                     \
                          _mm256_cvtepi32_ps(LM_DPBUSD(_mm256_loadu_si256((const __m256i *)&bias[c][8 * i]), qx, \
                                                       _mm256_loadu_si256((const __m256i *)y[c][i].qs))),        \
                          acc)
#endif

/* acc += (xd * dy) * sum(|qx| * (qy with qx's sign)) for column c's block i */
#define LM_I8_COLUMN_TERM(acc, c)                          \
    acc = _mm256_fmadd_ps(                                 \
        _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i])), \
        lm_mul_sum_us8_pairs_f32(ax, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[c][i].qs), qx)), acc)

/* two to four columns (avx2.h) of LM_DEFINE_VEC_DOT_I8: per block acc +=
 * (dx * dy) * sum(qx * qy) with one FMA; |qx| is taken once per block, dy
 * read as a float (LM_X4_SCALES): the same product as the one-column kernel's */
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
