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

#include <string.h>

#include "simd/x86/avx2.h"

/* Blocks fetched ahead by the dots, one prefetch a block. In decode every weight is read
 * once and a row is a few hundred bytes, so the loads of the next row wait on
 * memory; fetching 16 blocks ahead took one column of a large Q4_0/Q4_1/Q8_0
 * matrix from 12-16 to 18-19 (Q4) and 27-34 to 38 (Q8_0) GB/s on 2 threads of a
 * KVM Xeon guest (`lamina bench-kernels`, 64 MiB matrices). A prefetch never
 * faults, so running past the row's end is harmless. The few-column kernel
 * prefetches too: decode of 4 sequences of Qwen2.5-0.5B 58 -> 73 t/s, at ~6%
 * of prefill (pp512 142 -> 134), where the rows are read again for each
 * group of columns; a prefetch a cache line (at each group of 8 blocks) kept
 * neither. */
#define LM_LEGACY_PREFETCH 16

/* unsigned bytes ax times signed bytes sy, summed in fours: 8 int32 lanes */
static inline __m256i lm_mul_sum_us8_i32(__m256i ax, __m256i sy) {
    return _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy));
}

/* the low fp16 of each of 8 dwords as floats (a block's d, its first field) */
static inline __m256 lm_half_low8(__m256i dwords) {
    const __m256i lo = _mm256_and_si256(dwords, _mm256_set1_epi32(0xFFFF));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, lo), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

/* d (low) and the second fp16 field (high: m of Q4_1/Q5_1, s of Q8_1) of 8 blocks */
static inline void lm_legacy_scales8(const void *first_d, int stride, __m256 *d, __m256 *second) {
    const __m256i dwords = lm_gather8(first_d, stride);
    *d = lm_half_low8(dwords);
    *second = lm_half_low8(_mm256_srli_epi32(dwords, 16));
}

/* The dots of the 32-weight formats, one column and two to four, in one body:
 * per block the integer sum of 32 products (weights unpacked by `bytes`, as
 * unsigned bytes times activation bytes: signed weights lend their sign to the
 * activations), then 8 blocks at a time the terms (dx * dy) * isum (and
 * mx * sy for the types with a min, Q8_1's s = dy * sum(qy)) into lane
 * i % 8, each product rounded once, then the lanes in order. The fp16 scales
 * of 8 blocks are converted with one instruction, where the old per-block
 * chain converted two halves and ran one FMA per block. One column reads the
 * activation scales from the Q8 blocks, several from the floats matmul stores
 * after each column (LM_X4_SCALES): the same values, so a column's result
 * does not depend on how columns are grouped. Float sums differ from the
 * scalar reference's order: tests compare by NMSE. */
#define LM_LEGACY_BODY(t, yb_t, bytes, SIGNED, MIN, YSCALES)                                                          \
    const block_##t *x = vx;                                                                                          \
    LM_X4_COLUMNS(yb_t, y, vy, y_stride, ncol);                                                                       \
    const int64_t nb = n / 32;                                                                                        \
    YSCALES##_DECL(t, yb_t);                                                                                          \
    __m256 acc[NCOL], accm[NCOL];                                                                                     \
    for (int c = 0; c < ncol; c++) acc[c] = accm[c] = _mm256_setzero_ps();                                            \
    int64_t i = 0;                                                                                                    \
    for (; i + 8 <= nb; i += 8) {                                                                                     \
        __m256i sumi[NCOL][8];                                                                                        \
        for (int b = 0; b < 8; b++) {                                                                                 \
            _mm_prefetch((const char *)&x[i + b + LM_LEGACY_PREFETCH], _MM_HINT_T0);                                  \
            const __m256i qx = bytes(&x[i + b]);                                                                      \
            const __m256i ax = SIGNED ? _mm256_sign_epi8(qx, qx) : qx;                                                \
            for (int c = 0; c < ncol; c++) {                                                                          \
                const __m256i qy = _mm256_loadu_si256((const __m256i *)y[c][i + b].qs);                               \
                sumi[c][b] = lm_mul_sum_us8_i32(ax, SIGNED ? _mm256_sign_epi8(qy, qx) : qy);                          \
            }                                                                                                         \
        }                                                                                                             \
        __m256 xd, xm;                                                                                                \
        lm_legacy_scales8(&x[i].d, (int)sizeof *x, &xd, &xm);                                                         \
        for (int c = 0; c < ncol; c++) {                                                                              \
            __m256 yd, ys;                                                                                            \
            YSCALES##_8(c, i, &yd, &ys, MIN);                                                                         \
            acc[c] =                                                                                                  \
                _mm256_add_ps(acc[c], _mm256_mul_ps(_mm256_mul_ps(xd, yd), _mm256_cvtepi32_ps(lm_totals8(sumi[c])))); \
            if (MIN) accm[c] = _mm256_add_ps(accm[c], _mm256_mul_ps(xm, ys));                                         \
        }                                                                                                             \
    }                                                                                                                 \
    float lanes[NCOL][8], lanesm[NCOL][8];                                                                            \
    for (int c = 0; c < ncol; c++) {                                                                                  \
        _mm256_storeu_ps(lanes[c], acc[c]);                                                                           \
        _mm256_storeu_ps(lanesm[c], accm[c]);                                                                         \
    }                                                                                                                 \
    for (; i < nb; i++) {                                                                                             \
        const __m256i qx = bytes(&x[i]);                                                                              \
        const __m256i ax = SIGNED ? _mm256_sign_epi8(qx, qx) : qx;                                                    \
        const float xd = lm_half_f32(x[i].d);                                                                         \
        for (int c = 0; c < ncol; c++) {                                                                              \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[c][i].qs);                                       \
            const int32_t isum = lm_hsum_i32_8(lm_mul_sum_us8_i32(ax, SIGNED ? _mm256_sign_epi8(qy, qx) : qy));       \
            float yd, ys;                                                                                             \
            YSCALES##_1(c, i, &yd, &ys, MIN);                                                                         \
            lanes[c][i % 8] += (xd * yd) * (float)isum;                                                               \
            if (MIN) lanesm[c][i % 8] += LM_LEGACY_XM(x, i, MIN) * ys;                                                \
        }                                                                                                             \
    }                                                                                                                 \
    for (int c = 0; c < ncol; c++) {                                                                                  \
        float sum = 0, summ = 0;                                                                                      \
        for (int l = 0; l < 8; l++) sum += lanes[c][l];                                                               \
        for (int l = 0; l < 8; l++) summ += lanesm[c][l];                                                             \
        s[c * s_stride] = sum + summ;                                                                                 \
    }

/* a block's min as a float, for the types that have one (MIN = 1) */
#define LM_LEGACY_XM(x, i, MIN) LM_LEGACY_XM_##MIN(x, i)
#define LM_LEGACY_XM_0(x, i) 0.0f
#define LM_LEGACY_XM_1(x, i) lm_half_f32((x)[i].m)

/* activation scales read from the Q8 blocks (one column) */
#define LM_YS_BLOCKS_DECL(t, yb_t) (void)0
#define LM_YS_BLOCKS_8(c, i, yd, ys, MIN) lm_legacy_scales8(&y[c][i].d, (int)sizeof y[c][i], yd, ys)
#define LM_YS_BLOCKS_1(c, i, yd, ys, MIN) \
    (*(yd) = lm_half_f32(y[c][i].d), *(ys) = MIN ? lm_legacy_second(&y[c][i]) : 0.0f)

/* ... or from the floats after each column (d[nb], then s[nb] for Q8_1) */
#define LM_YS_FLOATS_DECL(t, yb_t) LM_X4_SCALES(yf, y, nb, yb_t, ncol)
#define LM_YS_FLOATS_8(c, i, yd, ys, MIN) \
    (*(yd) = _mm256_loadu_ps(&yf[c][i]), *(ys) = MIN ? _mm256_loadu_ps(&yf[c][nb + i]) : _mm256_setzero_ps())
#define LM_YS_FLOATS_1(c, i, yd, ys, MIN) (*(yd) = yf[c][i], *(ys) = MIN ? yf[c][nb + i] : 0.0f)

/* Q8_1's s, the fp16 after d (read only for the types with a min) */
static inline float lm_legacy_second(const void *yblock) {
    lm_half h;
    memcpy(&h, (const char *)yblock + sizeof(lm_half), sizeof h);
    return lm_half_f32(h);
}

#define LM_DEFINE_LEGACY_DOTS(t, yb_t, bytes, SIGNED, MIN)                                                         \
    LM_X4_INLINE void x4_##t(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                             size_t y_stride) {                                                                    \
        LM_LEGACY_BODY(t, yb_t, bytes, SIGNED, MIN, LM_YS_FLOATS)                                                  \
    }                                                                                                              \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                              \
        const int ncol = 1;                                                                                        \
        const size_t s_stride = 0, y_stride = 0;                                                                   \
        LM_LEGACY_BODY(t, yb_t, bytes, SIGNED, MIN, LM_YS_BLOCKS)                                                  \
    }                                                                                                              \
    LM_DEFINE_X4(t, x4_##t)

#endif /* LAMINA_LEGACY_AVX2_H */
