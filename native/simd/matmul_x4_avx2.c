/* matmul_x4_avx2.c — dots of one weight row with four activation columns.
 *
 * lm_vec_dot_x4_<t>_avx2(n, s, s_stride, x, y, y_stride) sets
 * s[c * s_stride] = dot(x, y + c * y_stride) for c = 0..3. Each weight block is
 * unpacked once and multiplied with the four columns' blocks, which is where
 * prefill spends its time (matmul.c calls these while 4 columns remain).
 *
 * Every column is computed with the per-block arithmetic and the accumulation
 * order of the single-column kernel lm_vec_dot_<t>_avx2 (the k-quant blocks are
 * the very same lm_*_block_n functions of avx2_util.h, the legacy blocks the
 * same byte unpacking and FMA chain), just with four accumulators, so each
 * result is bit-identical to that kernel's: matmul output does not depend on
 * how columns are grouped.
 */
#include <stddef.h>

#include "avx2_util.h"
#include "type_traits.h"

enum { NCOL = 4 };

/* the four columns' rows of activation blocks */
#define LM_X4_COLUMNS(block_t, y, vy, y_stride)                                                        \
    const block_t *y[NCOL];                                                                            \
    for (int c = 0; c < NCOL; c++) y[c] = (const block_t *)((const char *)(vy) + (size_t)c * (y_stride))

/* ------------------------------------------------------------ k-quants */
/* as LM_DEFINE_VEC_DOT_K4 in kquants_avx2.c, per column */
void lm_vec_dot_x4_q4_K_avx2(int64_t n, float *s, size_t s_stride, const void *vx, const void *vy,
                             size_t y_stride) {
    const block_q4_K *x = vx;
    LM_X4_COLUMNS(block_q8_K, y, vy, y_stride);
    const int64_t nb = n / QK_K;
    __m256 acc[NCOL];
    for (int c = 0; c < NCOL; c++) acc[c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i sumi[NCOL][8];
        __m128i summ[NCOL][8];
        for (int b = 0; b < 8; b++) {
            const block_q8_K *yb[NCOL] = { &y[0][i + b], &y[1][i + b], &y[2][i + b], &y[3][i + b] };
            __m256i bsumi[NCOL];
            __m128i bsumm[NCOL];
            lm_q4_K_block_n(&x[i + b], yb, NCOL, bsumi, bsumm);
            for (int c = 0; c < NCOL; c++) {
                sumi[c][b] = bsumi[c];
                summ[c][b] = bsumm[c];
            }
        }
        __m256 xd, xdmin;
        lm_half_pairs8(lm_gather8(&x[i].d, (int)sizeof *x), &xd, &xdmin);
        for (int c = 0; c < NCOL; c++) {
            const __m256 yd = lm_y_scales8(&y[c][i]);
            const __m256 t = lm_terms8(lm_totals8(sumi[c]), lm_totals8_x4(summ[c]), _mm256_mul_ps(xd, yd),
                                       _mm256_mul_ps(xdmin, yd));
            acc[c] = _mm256_add_ps(acc[c], t);
        }
    }
    float lanes[NCOL][LM_KDOT_LANES];
    for (int c = 0; c < NCOL; c++) _mm256_storeu_ps(lanes[c], acc[c]);
    for (; i < nb; i++) {
        const block_q8_K *yb[NCOL] = { &y[0][i], &y[1][i], &y[2][i], &y[3][i] };
        __m256i bsumi[NCOL];
        __m128i bsumm[NCOL];
        lm_q4_K_block_n(&x[i], yb, NCOL, bsumi, bsumm);
        for (int c = 0; c < NCOL; c++)
            lanes[c][i % LM_KDOT_LANES] += lm_block_term(bsumi[c], bsumm[c], &x[i].d, y[c][i].d);
    }
    for (int c = 0; c < NCOL; c++) s[c * s_stride] = lm_kdot_sum_lanes(lanes[c]);
}

/* as LM_DEFINE_VEC_DOT_SCALES_ONLY in kquants_avx2.c, per column */
void lm_vec_dot_x4_q6_K_avx2(int64_t n, float *s, size_t s_stride, const void *vx, const void *vy,
                             size_t y_stride) {
    const block_q6_K *x = vx;
    LM_X4_COLUMNS(block_q8_K, y, vy, y_stride);
    const int64_t nb = n / QK_K;
    __m256 acc[NCOL];
    for (int c = 0; c < NCOL; c++) acc[c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i sumi[NCOL][8];
        for (int b = 0; b < 8; b++) {
            const block_q8_K *yb[NCOL] = { &y[0][i + b], &y[1][i + b], &y[2][i + b], &y[3][i + b] };
            __m256i bsumi[NCOL];
            lm_q6_K_block_n(&x[i + b], yb, NCOL, bsumi);
            for (int c = 0; c < NCOL; c++) sumi[c][b] = bsumi[c];
        }
        /* d is the block's last field: its dword is gathered from 2 bytes earlier */
        const __m256 xd = lm_half_high8(lm_gather8((const char *)&x[i].d - 2, (int)sizeof *x));
        for (int c = 0; c < NCOL; c++) {
            const __m256 d = _mm256_mul_ps(xd, lm_y_scales8(&y[c][i]));
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(d, _mm256_cvtepi32_ps(lm_totals8(sumi[c]))));
        }
    }
    float lanes[NCOL][LM_KDOT_LANES];
    for (int c = 0; c < NCOL; c++) _mm256_storeu_ps(lanes[c], acc[c]);
    for (; i < nb; i++) {
        const block_q8_K *yb[NCOL] = { &y[0][i], &y[1][i], &y[2][i], &y[3][i] };
        __m256i bsumi[NCOL];
        lm_q6_K_block_n(&x[i], yb, NCOL, bsumi);
        const float xd = lm_half_f32(x[i].d);
        for (int c = 0; c < NCOL; c++) lanes[c][i % LM_KDOT_LANES] += xd * y[c][i].d * lm_hsum_i32_8(bsumi[c]);
    }
    for (int c = 0; c < NCOL; c++) s[c * s_stride] = lm_kdot_sum_lanes(lanes[c]);
}

/* ------------------------------------------------- legacy x Q8_0 / Q8_1 */
/* signed weight bytes x Q8_0, as lm_vec_dot_{q4_0,q5_0,q8_0}_avx2: per block
 * acc += (dx * dy) * sum(qx * qy) with one FMA; |qx| is taken once per block */
#define LM_DEFINE_VEC_DOT_X4_I8(t, bytes)                                                              \
    void lm_vec_dot_x4_##t##_avx2(int64_t n, float *s, size_t s_stride, const void *vx, const void *vy,  \
                                  size_t y_stride) {                                                   \
        const block_##t *x = vx;                                                                       \
        LM_X4_COLUMNS(block_q8_0, y, vy, y_stride);                                                    \
        __m256 acc[NCOL];                                                                              \
        for (int c = 0; c < NCOL; c++) acc[c] = _mm256_setzero_ps();                                   \
        for (int64_t i = 0; i < n / QK8_0; i++) {                                                      \
            const float xd = lm_half_f32(x[i].d);                                                      \
            const __m256i qx = bytes(&x[i]);                                                           \
            const __m256i ax = _mm256_sign_epi8(qx, qx);                                               \
            for (int c = 0; c < NCOL; c++) {                                                           \
                const __m256 d = _mm256_set1_ps(xd * lm_half_f32(y[c][i].d));                          \
                const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[c][i].qs), qx); \
                acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(ax, sy), acc[c]);                 \
            }                                                                                          \
        }                                                                                              \
        for (int c = 0; c < NCOL; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]);                        \
    }

static inline __m256i q8_0_bytes(const block_q8_0 *x) { return _mm256_loadu_si256((const __m256i *)x->qs); }

LM_DEFINE_VEC_DOT_X4_I8(q4_0, lm_q4_0_bytes)
LM_DEFINE_VEC_DOT_X4_I8(q5_0, lm_q5_0_bytes)
LM_DEFINE_VEC_DOT_X4_I8(q8_0, q8_0_bytes)

/* Q4_1 x Q8_1, as lm_vec_dot_q4_1_avx2: the min term from Q8_1's dy*sum(qy) */
void lm_vec_dot_x4_q4_1_avx2(int64_t n, float *s, size_t s_stride, const void *vx, const void *vy,
                             size_t y_stride) {
    const block_q4_1 *x = vx;
    LM_X4_COLUMNS(block_q8_1, y, vy, y_stride);
    __m256 acc[NCOL];
    float summs[NCOL] = { 0 };
    for (int c = 0; c < NCOL; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_1; i++) {
        const float xd = lm_half_f32(x[i].d), xm = lm_half_f32(x[i].m);
        const __m256i qx = lm_bytes_from_nibbles_32(x[i].qs);
        for (int c = 0; c < NCOL; c++) {
            summs[c] += xm * lm_half_f32(y[c][i].s);
            const __m256 d = _mm256_set1_ps(xd * lm_half_f32(y[c][i].d));
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[c][i].qs);
            acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc[c]);
        }
    }
    for (int c = 0; c < NCOL; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]) + summs[c];
}
