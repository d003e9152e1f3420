/* kernels.h — the per-type CPU entry points the traits table points at,
 * declared from the list of types (quants/types.h).
 *
 * For each type <t>, as its KIND and flags say:
 *   lm_dequantize_row_<t>(x, y, k)         k values of x to float (every type)
 *   lm_quantize_<t>(src, dst, nrows, n, im) ggml_quantize_chunk semantics (QUANTIZE)
 *   lm_vec_dot_<t>_ref(n, s, x, y)          scalar reference dot with the partner (weights)
 *   lm_vec_dot_<t>_avx2(n, s, x, y)         x86 AVX2/FMA/F16C, built on x86-64 only (weights)
 *   lm_from_float_<t>(x, y, k)              one row of activations into <t> (FROM_F32)
 *   lm_vec_dot_x4_<t>_avx2(...)             two to four activation columns at once (X4)
 */
#ifndef LAMINA_KERNELS_H
#define LAMINA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quants/types.h"

#define LM_DECLARE_KERNELS(ID, t, qk, block, PARTNER, KIND, FROM_F32, X4, QUANTIZE)                        \
    void lm_dequantize_row_##t(const void *x, float *y, int64_t k);                                        \
    LM_IF(QUANTIZE, size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row,  \
                                           const float *imatrix);)                                         \
    LM_IF_WEIGHT(KIND, void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *x, const void *y);       \
                 void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *x, const void *y);)           \
    LM_IF(FROM_F32, void lm_from_float_##t(const float *x, void *y, int64_t k);)                           \
    LM_IF(X4, void lm_vec_dot_x4_##t##_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, \
                                            const void *y, size_t y_stride);)

LM_BLOCK_TYPES(LM_DECLARE_KERNELS)

#undef LM_DECLARE_KERNELS

/* and the float weight types' (float_xn_avx2.c): one row by 1..LM_XN_MAX
 * columns of f32 values, y_stride bytes apart, each column with the bits of
 * lm_vec_dot_<t>_avx2 on that column in the partner type */
void lm_vec_dot_xn_f32_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y,
                            size_t y_stride);
void lm_vec_dot_xn_f16_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y,
                            size_t y_stride);
void lm_vec_dot_xn_bf16_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y,
                             size_t y_stride);
/* y = x rounded to f16 / bf16 and widened back (float_avx2.c): the columns of
 * those many-column kernels, as lm_from_float_<t> then lm_dequantize_row_<t> */
void lm_round_row_f16_avx2(const float *x, float *y, int64_t n);
void lm_round_row_bf16_avx2(const float *x, float *y, int64_t n);
/* and two rows (x, x + x_stride bytes) by 1..LM_XN_MAX such columns into
 * s[c * s_stride + 0 / 1], each sum with the same bits */
void lm_vec_dot_xn2r_f32_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, size_t x_stride,
                              const void *y, size_t y_stride);
void lm_vec_dot_xn2r_f16_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, size_t x_stride,
                              const void *y, size_t y_stride);
void lm_vec_dot_xn2r_bf16_avx2(int64_t n, int ncol, float *s, size_t s_stride, const void *x, size_t x_stride,
                               const void *y, size_t y_stride);

/* The 32-weight formats of simd/x86/legacy_i8_avx2.h (IQ4_NL's and MXFP4's
 * too, their 4-bit indices looked up): LM_I8_TYPES(X) lists them. Per ISA
 * (avx2; avxvnni and avx512vnni, the VNNI byte dot, simd/x86/avx2.h LM_VNNI):
 * the one-row dot, the two-row dot (rows x and x + x_stride bytes with one
 * activation column), the two-to-four-column and two-rows-by-two-columns
 * dots, and one row by up to LM_XN_MAX columns (prefill), every result with
 * the bits of the one-row dot; lm_select_* picks them where the CPU runs them
 * (simd/cpu_features.h). The k-quants and IQ4_XS have the many-column one
 * (kquant_xn_avx2.c, kquant23_xn_avx2.c, iq4_xs_xn_avx2.c). */
#define LM_I8_TYPES(X) X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(q8_0) X(iq4_nl) X(mxfp4)
#define LM_XNK_TYPES(X) X(q2_K) X(q3_K) X(q4_K) X(q5_K) X(q6_K) X(iq4_xs)

#define LM_DECLARE_VNNI_ROWS(t, isa)                                                \
    void lm_vec_dot_##t##_##isa(int64_t n, float *s, const void *x, const void *y); \
    void lm_vec_dot_2r_##t##_##isa(int64_t n, float *s, const void *x, size_t x_stride, const void *y);
#define LM_DECLARE_VNNI_X4(t, isa)                                                                               \
    void lm_vec_dot_x4_##t##_##isa(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y, \
                                   size_t y_stride);
#define LM_DECLARE_VNNI_PAIRS(t, isa)                                                                      \
    LM_DECLARE_VNNI_X4(t, isa)                                                                             \
    void lm_vec_dot_2r2c_##t##_##isa(int64_t n, float *s, size_t s_stride, const void *x, size_t x_stride, \
                                     const void *y, size_t y_stride);
#define LM_DECLARE_VNNI_XN(t, isa)                                                                               \
    void lm_vec_dot_xn_##t##_##isa(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y, \
                                   size_t y_stride);
/* the ISA comes from LM_DECLARE_ISA, expanded one level down (## would not expand it) */
#define LM_DECLARE_I8_(t, isa) LM_DECLARE_VNNI_ROWS(t, isa) LM_DECLARE_VNNI_PAIRS(t, isa) LM_DECLARE_VNNI_XN(t, isa)
#define LM_DECLARE_I8(t) LM_DECLARE_I8_(t, LM_DECLARE_ISA)
#define LM_DECLARE_XNK_(t, isa) LM_DECLARE_VNNI_XN(t, isa)
#define LM_DECLARE_XNK(t) LM_DECLARE_XNK_(t, LM_DECLARE_ISA)
#define LM_DECLARE_VNNI LM_I8_TYPES(LM_DECLARE_I8) LM_XNK_TYPES(LM_DECLARE_XNK)

#define LM_DECLARE_ISA avx2
LM_DECLARE_VNNI
#undef LM_DECLARE_ISA
#define LM_DECLARE_ISA avxvnni
LM_DECLARE_VNNI
#undef LM_DECLARE_ISA
#define LM_DECLARE_ISA avx512vnni
LM_DECLARE_VNNI
#undef LM_DECLARE_ISA
#undef LM_DECLARE_I8_
#undef LM_DECLARE_I8
#undef LM_DECLARE_XNK_
#undef LM_DECLARE_XNK
#undef LM_DECLARE_VNNI
#undef LM_DECLARE_VNNI_ROWS
#undef LM_DECLARE_VNNI_X4
#undef LM_DECLARE_VNNI_XN
#undef LM_DECLARE_VNNI_PAIRS

/* AVX2 activation quantizers (simd/x86/act_quant_avx2.c), bit-identical with
 * lm_from_float_q8_0 / lm_from_float_q8_1; lm_select_from_float picks them */
void lm_from_float_q8_0_avx2(const float *x, void *y, int64_t k);
void lm_from_float_q8_1_avx2(const float *x, void *y, int64_t k);
void lm_from_float_q8_K_avx2(const float *x, void *y, int64_t k);

/* lm_dequantize_row_<t> of a type whose block math has lm_dequant1_<t>:
 * value j of each block in turn (k a multiple of qk, checked by the caller).
 * Each block is read through a local copy, which the stores to y cannot
 * alias, so what lm_dequant1_<t> computes once per block (its scales) is
 * computed once per block here too. */
#define LM_DEFINE_DEQUANTIZE_ROW(t, block, qk)                                       \
    void lm_dequantize_row_##t(const void *vx, float *y, int64_t k) {                \
        const block *x = vx;                                                         \
        for (int64_t i = 0; i < k / (qk); i++) {                                     \
            block b;                                                                 \
            memcpy(&b, &x[i], sizeof b);                                             \
            for (int j = 0; j < (qk); j++) y[i * (qk) + j] = lm_dequant1_##t(&b, j); \
        }                                                                            \
    }

#endif /* LAMINA_KERNELS_H */
