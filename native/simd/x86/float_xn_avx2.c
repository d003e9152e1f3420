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
    XF_BLOCK = 8,      /* one row: columns whose chains run together (8 sums, the weight vector, a column's vector) */
    XF_BLOCK_2R = 6,   /* two rows: 12 sums, two weight vectors, a column's vector */
    XF_SUMS = 12,      /* the most sums a block keeps: XF_BLOCK and 2 x XF_BLOCK_2R */
    XF_CHUNK = 512,    /* values of a chunk: 8 f32 columns of it are 16 KiB */
};

static inline __m256 xf_load_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 xf_load_f16(const lm_half *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 xf_load_bf16(const lm_bf16 *p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline float xf_f32(float v) { return v; }

/* chain j of rows x[0..R) by columns y[0..C) over the 32-value steps in
 * [i0, i1): acc[r * C + c][j] += x[r][i + 8j ..] * y[c][i + 8j ..], one FMA
 * per step, in step order (R and C constants at each call, so the sums stay
 * in registers; a column's vector is loaded once for both rows, a row's once
 * for all columns) */
#define LM_XF_CHAINS(t, elem_t, load8)                                                                           \
    static inline __attribute__((always_inline)) void xf_chains_##t(                                             \
        const elem_t *const *x, int R, const float *const *y, int C, int64_t i0, int64_t i1, __m256 acc[][4]) {  \
        for (int j = 0; j < 4; j++) {                                                                            \
            __m256 a[XF_SUMS];                                                                                   \
            for (int k = 0; k < R * C; k++) a[k] = acc[k][j];                                                    \
            for (int64_t i = i0 + 8 * j; i < i1; i += 32) {                                                      \
                __m256 w[2];                                                                                     \
                for (int r = 0; r < R; r++) w[r] = load8(x[r] + i);                                              \
                for (int c = 0; c < C; c++) {                                                                    \
                    __m256 v = _mm256_loadu_ps(y[c] + i);                                                        \
                    if (R > 1) __asm__("" : "+x"(v)); /* one load for both rows, not one folded into each FMA */ \
                    for (int r = 0; r < R; r++) a[r * C + c] = _mm256_fmadd_ps(w[r], v, a[r * C + c]);           \
                }                                                                                                \
            }                                                                                                    \
            for (int k = 0; k < R * C; k++) acc[k][j] = a[k];                                                    \
        }                                                                                                        \
    }

LM_XF_CHAINS(f32, float, xf_load_f32)
LM_XF_CHAINS(f16, lm_half, xf_load_f16)
LM_XF_CHAINS(bf16, lm_bf16, xf_load_bf16)

/* R rows (x, x + x_stride bytes) by C columns from column 0 of y into
 * s[c * s_stride + r]: the chains chunk by chunk, then each sum as the
 * one-column kernel forms it, its tail in scalar code */
#define LM_XF_BLOCK(t, elem_t, to_f32)                                                                                 \
    static inline __attribute__((always_inline)) void xf_block_##t(int64_t n, int R, int C, float *s, size_t s_stride, \
                                                                   const elem_t *x0, size_t x_stride, const char *y,   \
                                                                   size_t y_stride) {                                  \
        const elem_t *x[2] = { x0, (const elem_t *)((const char *)x0 + x_stride) };                                    \
        const float *col[XF_BLOCK];                                                                                    \
        __m256 acc[XF_SUMS][4];                                                                                        \
        for (int c = 0; c < C; c++) col[c] = (const float *)(y + (size_t)c * y_stride);                                \
        for (int k = 0; k < R * C; k++)                                                                                \
            for (int j = 0; j < 4; j++) acc[k][j] = _mm256_setzero_ps();                                               \
        const int64_t n32 = n / 32 * 32;                                                                               \
        for (int64_t i0 = 0; i0 < n32; i0 += XF_CHUNK) {                                                               \
            const int64_t i1 = i0 + XF_CHUNK < n32 ? i0 + XF_CHUNK : n32;                                              \
            xf_chains_##t(x, R, col, C, i0, i1, acc);                                                                  \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) {                                                                              \
                __m256 *a = acc[r * C + c];                                                                            \
                float sum = lm_hsum_f32_8(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));        \
                for (int64_t i = n32; i < n; i++) sum += to_f32(x[r][i]) * col[c][i];                                  \
                s[(size_t)c * s_stride + (size_t)r] = sum;                                                             \
            }                                                                                                          \
    }

LM_XF_BLOCK(f32, float, xf_f32)
LM_XF_BLOCK(f16, lm_half, lm_half_f32)
LM_XF_BLOCK(bf16, lm_bf16, lm_bf16_to_f32)

/* R rows by ncol columns: blocks of `wide` columns, the rest in blocks of 4,
 * 2 and 1 (each sum's bits are its own whatever block it is in) */
#define XF_COLUMNS(t, R, wide)                                                                                  \
    do {                                                                                                        \
        int c = 0;                                                                                              \
        for (; c + (wide) <= ncol; c += (wide))                                                                 \
            xf_block_##t(n, R, wide, s + (size_t)c * s_stride, s_stride, x, x_stride, y + (size_t)c * y_stride, \
                         y_stride);                                                                             \
        if (ncol - c >= 4) {                                                                                    \
            xf_block_##t(n, R, 4, s + (size_t)c * s_stride, s_stride, x, x_stride, y + (size_t)c * y_stride,    \
                         y_stride);                                                                             \
            c += 4;                                                                                             \
        }                                                                                                       \
        if (ncol - c >= 2) {                                                                                    \
            xf_block_##t(n, R, 2, s + (size_t)c * s_stride, s_stride, x, x_stride, y + (size_t)c * y_stride,    \
                         y_stride);                                                                             \
            c += 2;                                                                                             \
        }                                                                                                       \
        if (ncol - c >= 1)                                                                                      \
            xf_block_##t(n, R, 1, s + (size_t)c * s_stride, s_stride, x, x_stride, y + (size_t)c * y_stride,    \
                         y_stride);                                                                             \
    } while (0)

/* one row (the dotn kernel), and two rows (x, x + x_stride bytes) into
 * s[c * s_stride + 0 / 1]: per step of two rows by six columns, 8 loads feed
 * 12 FMAs where one row by eight columns has 9 loads for 8 (prefill of
 * SmolLM2 f16: see matmul.c) */
#define LM_XF_XN(t, elem_t)                                                                                          \
    void lm_vec_dot_xn_##t##_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,    \
                                  size_t y_stride) {                                                                 \
        const elem_t *x = vx;                                                                                        \
        const char *y = vy;                                                                                          \
        const size_t x_stride = 0;                                                                                   \
        XF_COLUMNS(t, 1, XF_BLOCK);                                                                                  \
    }                                                                                                                \
    void lm_vec_dot_xn2r_##t##_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, size_t x_stride, \
                                    const void *vy, size_t y_stride) {                                               \
        const elem_t *x = vx;                                                                                        \
        const char *y = vy;                                                                                          \
        XF_COLUMNS(t, 2, XF_BLOCK_2R);                                                                               \
    }

LM_XF_XN(f32, float)
LM_XF_XN(f16, lm_half)
LM_XF_XN(bf16, lm_bf16)
