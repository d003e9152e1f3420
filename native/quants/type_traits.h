/* type_traits.h — one row per ggml type: sizes, the activation partner of its
 * dot product, and the functions that convert and multiply it (ggml's
 * type-traits idea: one table instead of switch statements everywhere). The
 * rows come from the list of types (quants/types.h, quants/type_traits.c). */
#ifndef LAMINA_TYPE_TRAITS_H
#define LAMINA_TYPE_TRAITS_H

#include <stddef.h>
#include <stdint.h>

#include "quants/blocks.h"

/* y[0..k) = values of the k weights in x (k a multiple of blck_size) */
typedef void (*lm_to_float_fn)(const void *x, float *y, int64_t k);
/* ggml_quantize_chunk semantics: nrows rows; imatrix may be NULL; returns bytes written */
typedef size_t (*lm_quantize_fn)(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
/* one row of activations into this type (used for the dot partners Q8_0/Q8_1/Q8_K/F16/BF16/F32) */
typedef void (*lm_from_float_fn)(const float *x, void *y, int64_t k);
/* *s = dot(x, y) over n values; x in this type, y in its vec_dot_type */
typedef void (*lm_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);
/* s[c * s_stride] = dot(x, the activations y_stride * c bytes after y) for
 * c = 0..ncol-1, 2 <= ncol <= 4 (s_stride counts floats): one weight row with
 * a few activation columns, each result bit-identical to the single-column
 * kernel of the same impl on that column (matmul.c: prefill, and decode of
 * several sequences) */
/* The few-column kernels of the 32-value formats (partners Q8_0, Q8_1) also
 * read each column's block scales as floats, which matmul.c stores after
 * the column's nb blocks, at this offset: d[nb], then s[nb] for Q8_1. One
 * half-to-float conversion per column and block per matmul instead of one
 * per weight row. */
static inline size_t lm_x4_scales_offset(int64_t nb, size_t block_bytes) {
    return ((size_t)nb * block_bytes + 3) & ~(size_t)3;
}
/* After them, for partner Q8_0, each block's sum of its 32 activation bytes
 * as int32 (sums[nb]): the kernels take the weights as unsigned bytes q + bias
 * and subtract bias * sum(y) from each block's total (simd/x86/legacy_i8_avx2.h) */
static inline size_t lm_x4_sums_offset(int64_t nb) {
    return lm_x4_scales_offset(nb, sizeof(block_q8_0)) + (size_t)nb * sizeof(float);
}
static inline int lm_x4_scale_count(int vec_dot_type) {
    return vec_dot_type == LM_TYPE_Q8_1 ? 2 : vec_dot_type == LM_TYPE_Q8_0 ? 1 : 0;
}

typedef void (*lm_vec_dot_x4_fn)(int64_t n, int ncol, float *s, size_t s_stride, const void *x, const void *y,
                                 size_t y_stride);

/* s[0], s[1] = dot(row x, y), dot(row x + x_stride bytes, y): two weight
 * rows, one column, each bit-identical to the single-row kernel; y is the
 * column as matmul.c lays it out for the few-column kernels (its blocks, then
 * their scales and sums: lm_x4_scales_offset), not a plain row */
typedef void (*lm_vec_dot_2r_fn)(int64_t n, float *s, const void *x, size_t x_stride, const void *y);

typedef struct {
    const char *name;
    int64_t blck_size;
    size_t type_size;
    int vec_dot_type;
    lm_to_float_fn to_float;
    lm_quantize_fn quantize;
    lm_from_float_fn from_float;
    lm_vec_dot_fn vec_dot_ref;    /* scalar reference: the oracle for SIMD paths */
    lm_vec_dot_fn vec_dot_avx2;   /* NULL when not built or not written */
    lm_vec_dot_x4_fn vec_dot_x4_avx2;   /* 2..4 columns of vec_dot_avx2; NULL when not built or not written */
} lm_type_traits;

/* NULL for ids outside the table */
const lm_type_traits *lm_get_type_traits(int type);
/* the dot kernel for impl (LM_IMPL_*), or NULL if that impl is unavailable */
lm_vec_dot_fn lm_select_vec_dot(const lm_type_traits *t, int impl);
/* the activation quantizer of t (a dot partner) for impl: the AVX2 one where
 * there is one and impl is not LM_IMPL_SCALAR, else t->from_float; the two
 * write the same bytes */
lm_from_float_fn lm_select_from_float(const lm_type_traits *t, int impl);
/* the few-column kernel matching lm_select_vec_dot(t, impl), or NULL when
 * there is none (then multiply one column at a time) */
lm_vec_dot_x4_fn lm_select_vec_dot_x4(const lm_type_traits *t, int impl);
/* the two-row kernel matching lm_select_vec_dot(t, impl), or NULL (the
 * 32-value formats have one) */
lm_vec_dot_2r_fn lm_select_vec_dot_2r(const lm_type_traits *t, int impl);
/* s[c * s_stride + r] for two rows (x, x + x_stride bytes) and two columns
 * (y, y + y_stride bytes), each bit-identical to the few-column kernel */
typedef void (*lm_vec_dot_2r2c_fn)(int64_t n, float *s, size_t s_stride, const void *x, size_t x_stride, const void *y,
                                   size_t y_stride);
/* One row by 1..LM_XN_MAX columns, each bit-identical to the few-column
 * kernel: prefill's kernel where a type has it (partners Q8_0, Q8_1, Q8_K), or NULL. Its
 * signature is the few-column kernel's, y and y_stride being the columns in
 * groups of LM_XN_LANES, group after group y_stride bytes apart: per block
 * of 32 values, 8 vectors whose lane c holds bytes 4k .. 4k+3 of column c's
 * Q8_0/Q8_1 block (k = 0..7), then the 8 columns' block scales as floats and
 * their block byte sums as int32 (Q8_1: their s as floats; lanes past the
 * last column 0). */
enum {
    LM_XN_MAX = 64,
    LM_XN_LANES = 8,
    LM_XN_SCALES_OFFSET = 8 * 32,
    LM_XN_SUMS_OFFSET = LM_XN_SCALES_OFFSET + LM_XN_LANES * 4,
    LM_XN_BLOCK_BYTES = LM_XN_SUMS_OFFSET + LM_XN_LANES * 4,
};
/* The k-quants' (partner Q8_K) the same way, per super-block of 256: 64
 * vectors whose lane c holds bytes 4k .. 4k+3 of column c's block, the 8
 * columns' d (float), then 8 vectors whose lane c holds column c's bsums
 * 2p and 2p+1 (int16 each), p = 0..7. */
enum {
    LM_XNK_SCALES_OFFSET = 64 * 32,
    LM_XNK_BSUMS_OFFSET = LM_XNK_SCALES_OFFSET + LM_XN_LANES * 4,
    LM_XNK_BLOCK_BYTES = LM_XNK_BSUMS_OFFSET + 8 * 32,
};
/* The float types' (F32, F16, BF16: lm_type_is_float) take their columns
 * plainly instead, as f32 values of the partner type, y_stride bytes apart. */
lm_vec_dot_x4_fn lm_select_vec_dot_xn(const lm_type_traits *t, int impl);
int lm_type_is_float(const lm_type_traits *t);
/* The float types' two-row companion of their many-column kernel: rows x
 * and x + x_stride bytes by 1..LM_XN_MAX columns (laid out as for dotn) into
 * s[c * s_stride + 0 / 1], each sum with dotn's bits; NULL for other types. */
typedef void (*lm_vec_dot_xn2r_fn)(int64_t n, int ncol, float *s, size_t s_stride, const void *x, size_t x_stride,
                                   const void *y, size_t y_stride);
lm_vec_dot_xn2r_fn lm_select_vec_dot_xn2r(const lm_type_traits *t, int impl);
/* x rounded to the float partner t (F16, BF16) and widened back to f32, in one
 * pass: the columns of the float many-column kernels; NULL where impl has no
 * such pass (then lm_from_float_<t> and to_float do it) */
typedef void (*lm_round_row_fn)(const float *x, float *y, int64_t n);
lm_round_row_fn lm_select_round_row(const lm_type_traits *t, int impl);
/* the two-by-two kernel matching lm_select_vec_dot_x4(t, impl), or NULL */
lm_vec_dot_2r2c_fn lm_select_vec_dot_2r2c(const lm_type_traits *t, int impl);

#endif
