/* q4_1_avx2.c — AVX2 dots of Q4_1 weights with Q8_1 activations (legacy_avx2.h):
 * one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_1.h"
#include "simd/x86/legacy_avx2.h"

/* the weights as unsigned bytes: the nibbles */
static inline __m256i q4_1_bytes(const block_q4_1 *x) { return lm_bytes_from_nibbles_32(x->qs); }

LM_DEFINE_VEC_DOT_U8_MIN(q4_1, q4_1_bytes)
LM_DEFINE_VEC_DOT_2R_U8_MIN(q4_1, q4_1_bytes)

/* two to four columns (avx2.h) */
LM_DEFINE_VEC_DOT_X4_U8_MIN(q4_1, q4_1_bytes)

/* two rows by ncol (2 or 4) columns of x4_q4_1, each result with its bits
 * (legacy_avx2.h): a weight block unpacked once per ncol columns */
LM_X4_INLINE void q4_1_2rnc(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, size_t x_stride,
                            const void *vy, size_t y_stride) {
    const block_q4_1 *x[2] = { vx, (const block_q4_1 *)((const char *)vx + x_stride) };
    LM_X4_COLUMNS(block_q8_1, y, vy, y_stride, ncol);
    const int64_t nb = n / QK4_1;
    LM_X4_SCALES(yd, y, nb, block_q8_1, ncol);
    __m256 acc[2][NCOL];
    float summs[2][NCOL];
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < ncol; c++) {
            acc[r][c] = _mm256_setzero_ps();
            summs[r][c] = 0;
        }
    for (int64_t i = 0; i < nb; i++) {
        for (int r = 0; r < 2; r++) {
            const float xm = lm_half_f32(x[r][i].m);
            const __m256 xd = _mm256_set1_ps(lm_half_f32(x[r][i].d));
            const __m256i qx = q4_1_bytes(&x[r][i]);
            for (int c = 0; c < ncol; c++) {
                summs[r][c] += xm * yd[c][nb + i];
                const __m256 d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][i]));
                const __m256i qy = _mm256_loadu_si256((const __m256i *)y[c][i].qs);
                acc[r][c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(qx, qy), acc[r][c]);
            }
        }
    }
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < ncol; c++) s[c * s_stride + r] = lm_hsum_f32_8(acc[r][c]) + summs[r][c];
}

void LM_SIMD_FN(lm_vec_dot_2r2c_q4_1)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride,
                                      const void *vy, size_t y_stride) {
    q4_1_2rnc(n, 2, s, s_stride, vx, x_stride, vy, y_stride);
}

void LM_SIMD_FN(lm_vec_dot_2r4c_q4_1)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride,
                                      const void *vy, size_t y_stride) {
    q4_1_2rnc(n, 4, s, s_stride, vx, x_stride, vy, y_stride);
}
