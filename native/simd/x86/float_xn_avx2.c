/* float_xn_avx2.c — the many-column kernels of the float weight types F32,
 * F16 and BF16: one weight row by 1..LM_XN_MAX activation columns that
 * matmul.c hands over as f32 (the partner's values, exactly: an F16 column
 * is rounded to f16 and widened back, a BF16 one to bf16), y_stride bytes
 * apart. Prefill and speculative verification: a weight row is converted
 * once per eight columns instead of once per column, and the columns' values
 * are converted once per matmul instead of once per weight row.
 *
 * Every column keeps the bits of lm_vec_dot_<t>_avx2 (float_avx2.c): its
 * four accumulator chains, chain j taking values i + 8j .. i + 8j + 7 of each
 * 32-value step i by one FMA, added (0 + 1) + (2 + 3), summed across lanes by
 * lm_hsum_f32_8, then the scalar tail. Here a chain runs over the columns of
 * a block at a time, the weight vector loaded once for all of them, in
 * chunks of the row small enough that a block's columns stay in L1 across
 * the four chains; a chain's running sums wait in memory between chunks,
 * which keeps their bits. Nothing but the order of independent chains
 * changes, so speculative decoding at temperature 0 reproduces plain
 * decoding token for token. */
#include "quants/kernels.h"
#include "simd/x86/avx2.h"

enum {
    XF_BLOCK = 8,      /* columns whose chains run together: 8 sums, the weight vector, a column's vector */
    XF_CHUNK = 512,    /* values of a chunk: 8 f32 columns of it are 16 KiB */
};

static inline __m256 xf_load_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 xf_load_f16(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 xf_load_bf16(const lm_bf16 *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline float xf_f32(float v) { return v; }

/* chain j of columns y[0..C) over the 32-value steps in [i0, i1):
 * acc[c][j] += x[i + 8j ..] * y[c][i + 8j ..], one FMA per step, in step
 * order (C a constant at each call, so the sums stay in registers) */
#define LM_XF_CHAINS(t, elem_t, load8)                                                                             \
    static inline __attribute__((always_inline)) void xf_chains_##t(const elem_t *x, const float *const *y, int C, \
                                                                    int64_t i0, int64_t i1, __m256 acc[][4]) {     \
        for (int j = 0; j < 4; j++) {                                                                              \
            __m256 a[XF_BLOCK];                                                                                    \
            for (int c = 0; c < C; c++) a[c] = acc[c][j];                                                          \
            for (int64_t i = i0 + 8 * j; i < i1; i += 32) {                                                        \
                const __m256 w = load8(x + i);                                                                     \
                for (int c = 0; c < C; c++) a[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(y[c] + i), a[c]);            \
            }                                                                                                      \
            for (int c = 0; c < C; c++) acc[c][j] = a[c];                                                          \
        }                                                                                                          \
    }

LM_XF_CHAINS(f32, float, xf_load_f32)
LM_XF_CHAINS(f16, lm_half, xf_load_f16)
LM_XF_CHAINS(bf16, lm_bf16, xf_load_bf16)

/* C columns from column 0 of y: the chains chunk by chunk, then each
 * column's sum as the one-column kernel forms it, its tail in scalar code */
#define LM_XF_BLOCK(t, elem_t, to_f32)                                                                                \
    static inline __attribute__((always_inline)) void xf_block_##t(int64_t n, int C, float *s, size_t s_stride,       \
                                                                   const elem_t *x, const char *y, size_t y_stride) { \
        const float *col[XF_BLOCK];                                                                                   \
        __m256 acc[XF_BLOCK][4];                                                                                      \
        for (int c = 0; c < C; c++) {                                                                                 \
            col[c] = (const float *)(y + (size_t)c * y_stride);                                                       \
            for (int j = 0; j < 4; j++) acc[c][j] = _mm256_setzero_ps();                                              \
        }                                                                                                             \
        const int64_t n32 = n / 32 * 32;                                                                              \
        for (int64_t i0 = 0; i0 < n32; i0 += XF_CHUNK) {                                                              \
            const int64_t i1 = i0 + XF_CHUNK < n32 ? i0 + XF_CHUNK : n32;                                             \
            xf_chains_##t(x, col, C, i0, i1, acc);                                                                    \
        }                                                                                                             \
        for (int c = 0; c < C; c++) {                                                                                 \
            float sum = lm_hsum_f32_8(                                                                                \
                _mm256_add_ps(_mm256_add_ps(acc[c][0], acc[c][1]), _mm256_add_ps(acc[c][2], acc[c][3])));             \
            for (int64_t i = n32; i < n; i++) sum += to_f32(x[i]) * col[c][i];                                        \
            s[(size_t)c * s_stride] = sum;                                                                            \
        }                                                                                                             \
    }

LM_XF_BLOCK(f32, float, xf_f32)
LM_XF_BLOCK(f16, lm_half, lm_half_f32)
LM_XF_BLOCK(bf16, lm_bf16, lm_bf16_to_f32)

/* blocks of eight columns, the rest in blocks of 4, 2 and 1 (each column's
 * bits are its own whatever block it is in) */
#define LM_XF_XN(t, elem_t)                                                                                       \
    void lm_vec_dot_xn_##t##_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                                  size_t y_stride) {                                                              \
        const elem_t *x = vx;                                                                                     \
        const char *y = vy;                                                                                       \
        int c = 0;                                                                                                \
        for (; c + 8 <= ncol; c += 8)                                                                             \
            xf_block_##t(n, 8, s + (size_t)c * s_stride, s_stride, x, y + (size_t)c * y_stride, y_stride);        \
        if (ncol - c >= 4) {                                                                                      \
            xf_block_##t(n, 4, s + (size_t)c * s_stride, s_stride, x, y + (size_t)c * y_stride, y_stride);        \
            c += 4;                                                                                               \
        }                                                                                                         \
        if (ncol - c >= 2) {                                                                                      \
            xf_block_##t(n, 2, s + (size_t)c * s_stride, s_stride, x, y + (size_t)c * y_stride, y_stride);        \
            c += 2;                                                                                               \
        }                                                                                                         \
        if (ncol - c >= 1)                                                                                        \
            xf_block_##t(n, 1, s + (size_t)c * s_stride, s_stride, x, y + (size_t)c * y_stride, y_stride);        \
    }

LM_XF_XN(f32, float)
LM_XF_XN(f16, lm_half)
LM_XF_XN(bf16, lm_bf16)
