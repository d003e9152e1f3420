/* matmul.c — weight matrix (any block type) times a batch of f32 activations.
 *
 * Phase 1 quantizes every activation column once into the type's dot partner
 * (Q8_0/Q8_1/Q8_K/F16...), as ggml does. Phase 2 splits weight rows across
 * threads and walks tiles of TILE_R rows x TILE_C columns, so in prefill a
 * weight row is loaded once per tile of columns instead of once per column.
 * Where the type has a few-column kernel (lm_select_vec_dot_x4), a row's
 * columns go through it up to 4 at a time (2 or 3 for what is left, so decode
 * of 2 or 3 sequences gains too), each weight block unpacked once per group;
 * it gives the single-column kernel's bits, so grouping never changes a
 * result. The 32-weight formats with integer blocks (Q4_0 .. Q8_0, IQ4_NL)
 * and Q2_K .. Q6_K, IQ4_XS in prefill (more than LM_PAIRED_COLS columns)
 * take the columns interleaved eight to a vector (dotn; simd/x86/
 * legacy_i8_avx2.h, kquant_xn_avx2.c, kquant23_xn_avx2.c, iq4_xs_xn_avx2.c): a weight row meets 32
 * columns per call, a block unpacked once for all of them, no reduction
 * across lanes (2048x2048 by 256 columns, 1 thread: Q4_0 86-89 -> 178-180
 * GFLOP/s, Q4_K 82-89 -> 151; SmolLM2 Q4_0 pp512 about 1.6x). The float
 * types F32/F16/BF16 have no few-column kernel: from two columns on (prefill,
 * speculative verification, decode of several sequences) their columns go
 * plainly as f32 values through dotn (simd/x86/float_xn_avx2.c), rows two
 * at a time by six columns (dotn2r: 8 loads for 12 FMAs; SmolLM2 f16 pp512
 * 215 -> 290-350 t/s on a 2-core Zen 3), each column with the one-column
 * dot's bits. */
#include <stdlib.h>
#include <string.h>

#include "compute/matmul.h"
#include "compute/threadpool.h"
#include "error.h"
#include "quants/type_traits.h"

enum { TILE_R = 16, TILE_C = 16 };
/* Up to this many columns (decode of a few sequences) go two rows by two
 * columns at a time where the type has that kernel (dot22): four accumulator
 * chains over two weight and two activation streams, where the four-column
 * kernel keeps eight streams and spills (SmolLM2 Q4_1 batched decode, 2
 * threads: B=4 170 -> 225 t/s, B=8 230 -> 270). */
enum { LM_PAIRED_COLS = 8 };

typedef struct {
    const lm_type_traits *wt, *at;   /* weight type, activation (partner) type */
    lm_vec_dot_fn dot;
    lm_vec_dot_x4_fn dot4;   /* 2..4 columns at once, bit-identical to dot; may be NULL */
    lm_vec_dot_2r_fn dot2r;  /* 2 rows of one column at once, bit-identical to dot; may be NULL */
    lm_vec_dot_2r2c_fn dot22;   /* 2 rows by 2 columns, bit-identical to dot4; may be NULL */
    lm_vec_dot_x4_fn dotn;      /* 1 row by up to LM_XN_MAX columns, bit-identical to dot4; may be NULL */
    lm_vec_dot_xn2r_fn
        dotn2r;  /* the float types' 2 rows by up to LM_XN_MAX columns, bit-identical to dotn; may be NULL */
    int use_dotn;               /* prefill through dotn: the columns interleaved at xg */
    int float_cols;             /* dotn of a float type: xg holds plain f32 columns, one per group */
    int xn_unit;                /* columns per group: LM_XN_LANES, or 1 for float_cols */
    char *xg;
    size_t group_bytes;         /* bytes from one group of columns at xg to the next */
    lm_from_float_fn from_float;   /* the partner's quantizer for impl (same bytes whichever) */
    lm_round_row_fn round_row;     /* a column to the partner's values in one pass (F16, BF16 on AVX2) */
    const char *w;
    size_t w_row_bytes;
    int64_t rows, n, ncols;
    const float *x;
    char *xq;
    size_t xq_row_bytes;
    int n_scales;             /* floats per block stored after a column's blocks for dot4 (type_traits.h) */
    float *y;
    int64_t ldy;
} matmul_job;

/* each block's sum of its activation bytes (type_traits.h, lm_x4_sums_offset) */
static void block_sums(const block_q8_0 *col, int64_t nb, int32_t *sums) {
    for (int64_t b = 0; b < nb; b++) {
        int32_t sum = 0;
        for (int j = 0; j < QK8_0; j++) sum += col[b].qs[j];
        sums[b] = sum;
    }
}

/* the columns c0 .. c0+8 (those below ncols; the rest 0) interleaved for
 * the many-column kernels (type_traits.h, LM_XN_BLOCK_BYTES) */
static void interleave_group(const matmul_job *job, int64_t c0, char *dst) {
    const int64_t nb = job->n / QK8_0;
    const int lanes = job->ncols - c0 < LM_XN_LANES ? (int)(job->ncols - c0) : LM_XN_LANES;
    const int q8_1 = job->at == lm_get_type_traits(LM_TYPE_Q8_1);
    memset(dst, 0, (size_t)nb * LM_XN_BLOCK_BYTES);
    for (int c = 0; c < lanes; c++) {
        const char *col = job->xq + (size_t)(c0 + c) * job->xq_row_bytes;
        for (int64_t b = 0; b < nb; b++) {
            char *blk = dst + (size_t)b * LM_XN_BLOCK_BYTES;
            const int8_t *qs;
            float d;
            if (q8_1) {   /* its s in the sums' place */
                const block_q8_1 *y = (const block_q8_1 *)col + b;
                qs = y->qs;
                d = lm_half_to_f32(y->d);
                const float s = lm_half_to_f32(y->s);
                memcpy(blk + LM_XN_SUMS_OFFSET + 4 * c, &s, 4);
            } else {
                const block_q8_0 *y = (const block_q8_0 *)col + b;
                qs = y->qs;
                d = lm_half_to_f32(y->d);
                int32_t isum = 0;
                for (int j = 0; j < QK8_0; j++) isum += qs[j];
                memcpy(blk + LM_XN_SUMS_OFFSET + 4 * c, &isum, 4);
            }
            for (int k = 0; k < 8; k++) memcpy(blk + 32 * k + 4 * c, qs + 4 * k, 4);
            memcpy(blk + LM_XN_SCALES_OFFSET + 4 * c, &d, 4);
        }
    }
}

/* the same for Q8_K columns (LM_XNK_BLOCK_BYTES) */
static void interleave_group_k(const matmul_job *job, int64_t c0, char *dst) {
    const int64_t nb = job->n / QK_K;
    const int lanes = job->ncols - c0 < LM_XN_LANES ? (int)(job->ncols - c0) : LM_XN_LANES;
    memset(dst, 0, (size_t)nb * LM_XNK_BLOCK_BYTES);
    for (int c = 0; c < lanes; c++) {
        const block_q8_K *col = (const block_q8_K *)(job->xq + (size_t)(c0 + c) * job->xq_row_bytes);
        for (int64_t b = 0; b < nb; b++) {
            char *blk = dst + (size_t)b * LM_XNK_BLOCK_BYTES;
            for (int k = 0; k < QK_K / 4; k++) memcpy(blk + 32 * k + 4 * c, col[b].qs + 4 * k, 4);
            memcpy(blk + LM_XNK_SCALES_OFFSET + 4 * c, &col[b].d, 4);
            for (int p = 0; p < 8; p++) memcpy(blk + LM_XNK_BSUMS_OFFSET + 32 * p + 4 * c, &col[b].bsums[2 * p], 4);
        }
    }
}

/* prefill through the many-column kernel: threads take whole groups of
 * eight columns, quantize them, and interleave them */
static void quantize_groups(matmul_job *job, int ith, int nth) {
    const int64_t ngroups = (job->ncols + LM_XN_LANES - 1) / LM_XN_LANES;
    int64_t g0, g1;
    lm_split_range(ngroups, ith, nth, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        const int64_t c0 = g * LM_XN_LANES, c1 = c0 + LM_XN_LANES < job->ncols ? c0 + LM_XN_LANES : job->ncols;
        for (int64_t c = c0; c < c1; c++)
            job->from_float(job->x + c * job->n, job->xq + (size_t)c * job->xq_row_bytes, job->n);
        if (job->at->blck_size == QK_K)
            interleave_group_k(job, c0, job->xg + (size_t)g * job->group_bytes);
        else
            interleave_group(job, c0, job->xg + (size_t)g * job->group_bytes);
    }
}

/* the float types' many-column kernels: each column rounded to the partner
 * type (the one-column dot's input) and widened back to f32 in one pass, once
 * for every weight row (F32 reads x itself) */
static void widen_columns(const matmul_job *job, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++)
        job->round_row(job->x + c * job->n, (float *)(job->xg + (size_t)c * job->group_bytes), job->n);
}

static void quantize_columns(void *p, int ith, int nth) {
    matmul_job *job = p;
    int64_t c0, c1;
    lm_split_range(job->ncols, ith, nth, &c0, &c1);
    if (job->float_cols) {
        if (job->xg != (const char *)job->x) widen_columns(job, c0, c1);
        return;
    }
    if (job->use_dotn) {
        quantize_groups(job, ith, nth);
        return;
    }
    const int64_t nb = job->n / job->at->blck_size;
    for (int64_t c = c0; c < c1; c++) {
        char *col = job->xq + (size_t)c * job->xq_row_bytes;
        job->from_float(job->x + c * job->n, col, job->n);
        if (!job->n_scales) continue;
        float *f = (float *)(col + lm_x4_scales_offset(nb, job->at->type_size));
        if (job->n_scales == 2)
            for (int64_t b = 0; b < nb; b++) {
                f[b] = lm_half_to_f32(((const block_q8_1 *)col)[b].d);
                f[nb + b] = lm_half_to_f32(((const block_q8_1 *)col)[b].s);
            }
        else {
            for (int64_t b = 0; b < nb; b++) f[b] = lm_half_to_f32(((const block_q8_0 *)col)[b].d);
            block_sums((const block_q8_0 *)col, nb, (int32_t *)(f + nb));
        }
    }
}

/* rows [r0, r1) by the ncol columns from c through pair, a kernel of two rows
 * by ncol columns (dot22: 2); an odd last row through dot4 */
static void rows_in_pairs(const matmul_job *job, lm_vec_dot_2r2c_fn pair, int ncol, int64_t r0, int64_t r1, int64_t c) {
    const char *xq = job->xq + (size_t)c * job->xq_row_bytes;
    float *y = &job->y[c * job->ldy];
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2)
        pair(job->n, &y[r], (size_t)job->ldy, job->w + (size_t)r * job->w_row_bytes, job->w_row_bytes, xq,
             job->xq_row_bytes);
    if (r < r1)
        job->dot4(job->n, ncol, &y[r], (size_t)job->ldy, job->w + (size_t)r * job->w_row_bytes, xq, job->xq_row_bytes);
}

/* prefill where the type has a many-column kernel: each weight row of a
 * tile of XN_TILE_R rows goes once through XN_TILE_C columns at a time */
enum { XN_TILE_R = 16, XN_TILE_C = 32 };
_Static_assert((int)XN_TILE_C <= (int)LM_XN_MAX && (int)XN_TILE_C % (int)LM_XN_LANES == 0,
               "whole groups, at most LM_XN_MAX columns");

/* The float types' columns are f32 values, 4 bytes each where a Q8 column
 * has about one: as many columns as fit this many bytes (L1 is 32-48 KiB)
 * meet each weight row of a tile, at least 4, so a tile's columns stay in L1
 * while its rows go by (SmolLM2's 576 values: 14 columns, 12 in whole blocks
 * of the two-row kernel; tiles of 16 KiB or all rows at once measured no
 * faster on Zen 3). */
enum { XN_FLOAT_TILE_BYTES = 32 * 1024 };

static int64_t column_tile(const matmul_job *job) {
    if (!job->float_cols) return XN_TILE_C;
    const int64_t fit = XN_FLOAT_TILE_BYTES / (int64_t)job->group_bytes;
    if (job->dotn2r)
        return fit < 6                   ? 6
               : fit > LM_XN_MAX / 6 * 6 ? LM_XN_MAX / 6 * 6
                                         : fit / 6 * 6;   /* whole blocks of the two-row kernel */
    return fit < 4 ? 4 : fit > LM_XN_MAX ? LM_XN_MAX : fit;
}

static void multiply_rows_xn(const matmul_job *job, int64_t r_begin, int64_t r_end) {
    const int64_t tile_c = column_tile(job);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += XN_TILE_R) {
        const int64_t r1 = r0 + XN_TILE_R < r_end ? r0 + XN_TILE_R : r_end;
        for (int64_t c0 = 0; c0 < job->ncols; c0 += tile_c) {
            const int ncol = (int)(job->ncols - c0 < tile_c ? job->ncols - c0 : tile_c);
            const char *xg = job->xg + (size_t)(c0 / job->xn_unit) * job->group_bytes;
            int64_t r = r0;
            if (job->dotn2r)
                for (; r + 2 <= r1; r += 2)
                    job->dotn2r(job->n, ncol, &job->y[c0 * job->ldy + r], (size_t)job->ldy,
                                job->w + (size_t)r * job->w_row_bytes, job->w_row_bytes, xg, job->group_bytes);
            for (; r < r1; r++)
                job->dotn(job->n, ncol, &job->y[c0 * job->ldy + r], (size_t)job->ldy,
                          job->w + (size_t)r * job->w_row_bytes, xg, job->group_bytes);
        }
    }
}

static void multiply_rows(void *p, int ith, int nth) {
    matmul_job *job = p;
    int64_t r_begin, r_end;
    lm_split_range(job->rows, ith, nth, &r_begin, &r_end);
    if (job->use_dotn) {
        multiply_rows_xn(job, r_begin, r_end);
        return;
    }
    for (int64_t r0 = r_begin; r0 < r_end; r0 += TILE_R) {
        const int64_t r1 = r0 + TILE_R < r_end ? r0 + TILE_R : r_end;
        for (int64_t c0 = 0; c0 < job->ncols; c0 += TILE_C) {
            const int64_t c1 = c0 + TILE_C < job->ncols ? c0 + TILE_C : job->ncols;
            int64_t c = c0;
            /* the rest in groups of 4 (the last of 2..4) with dot4, row by
             * row; a column left over (decode: the only one), or all of them
             * without dot4, two rows at a time where dot2r is */
            const int64_t c_single = job->dot4 ? c1 - ((c1 - c) % 4 == 1) : c;
            /* decode of a few sequences (at most LM_PAIRED_COLS columns, in
             * pairs): two rows by two columns at a time, where dot22 is */
            int64_t c_quads = c_single;
            if (job->dot22 && job->ncols <= LM_PAIRED_COLS && (c_single - c) % 2 == 0) {
                for (int64_t cp = c; cp < c_single; cp += 2) rows_in_pairs(job, job->dot22, 2, r0, r1, cp);
                c_quads = c;
            }
            for (int64_t r = r0; r < r1; r++) {
                const char *wrow = job->w + (size_t)r * job->w_row_bytes;
                for (int64_t cq = c; cq < c_quads;) {
                    const int k = c_quads - cq < 4 ? (int)(c_quads - cq) : 4;
                    job->dot4(job->n, k, &job->y[cq * job->ldy + r], (size_t)job->ldy, wrow,
                              job->xq + (size_t)cq * job->xq_row_bytes, job->xq_row_bytes);
                    cq += k;
                }
            }
            for (int64_t cs = c_single; cs < c1; cs++) {
                const char *xq = job->xq + (size_t)cs * job->xq_row_bytes;
                float *yc = &job->y[cs * job->ldy];
                int64_t r = r0;
                if (job->dot2r)
                    for (; r + 2 <= r1; r += 2)
                        job->dot2r(job->n, &yc[r], job->w + (size_t)r * job->w_row_bytes, job->w_row_bytes, xq);
                for (; r < r1; r++) job->dot(job->n, &yc[r], job->w + (size_t)r * job->w_row_bytes, xq);
            }
        }
    }
}

/* one column of activations: its blocks, then its block scales as floats
 * (Q8_1: d and s; Q8_0: d, then the block byte sums) */
static size_t column_bytes(const lm_type_traits *at, int64_t n, int n_scales) {
    const int64_t nb = n / at->blck_size;
    if (!n_scales) return (size_t)nb * at->type_size;
    return lm_x4_scales_offset(nb, at->type_size) + (size_t)nb * 4 * 2;
}

/* one group of eight interleaved columns for the many-column kernels
 * (partners Q8_0, Q8_1 and Q8_K), one f32 column for the float partners */
static size_t group_bytes(const lm_type_traits *at, int64_t n) {
    if (lm_type_is_float(at)) return (size_t)n * sizeof(float);
    if (at == lm_get_type_traits(LM_TYPE_Q8_0) || at == lm_get_type_traits(LM_TYPE_Q8_1))
        return (size_t)(n / QK8_0) * LM_XN_BLOCK_BYTES;
    if (at == lm_get_type_traits(LM_TYPE_Q8_K)) return (size_t)(n / QK_K) * LM_XNK_BLOCK_BYTES;
    return 0;
}

/* the quantized columns' bytes, rounded up so the interleaved (or f32) copy
 * after them starts on a cache line: an f16 column of odd n is 2n bytes, and
 * the float kernels' f32 columns must not start misaligned */
static size_t columns_bytes(size_t row_bytes, int64_t ncols) { return ((size_t)ncols * row_bytes + 63) & ~(size_t)63; }

static size_t groups_bytes(const lm_type_traits *at, int64_t n, int64_t ncols) {
    const int unit = lm_type_is_float(at) ? 1 : LM_XN_LANES;
    return (size_t)((ncols + unit - 1) / unit) * group_bytes(at, n);
}

static int plan(matmul_job *job, int impl, int type, int64_t rows, int64_t n, int64_t ncols) {
    const lm_type_traits *wt = lm_get_type_traits(type);
    if (!wt) return lm_set_error(LM_ERR_TYPE, "unknown ggml type id %d", type);
    const lm_type_traits *at = lm_get_type_traits(wt->vec_dot_type);
    if (rows < 0 || ncols < 0 || n <= 0 || n % wt->blck_size || n % at->blck_size)
        return lm_set_error(LM_ERR_SHAPE, "matmul %s: bad shape rows=%lld n=%lld ncols=%lld", wt->name, (long long)rows,
                            (long long)n, (long long)ncols);
    job->dot = lm_select_vec_dot(wt, impl);
    job->dot4 = lm_select_vec_dot_x4(wt, impl);
    job->dot2r = lm_select_vec_dot_2r(wt, impl);
    job->dot22 = lm_select_vec_dot_2r2c(wt, impl);
    job->dotn = lm_select_vec_dot_xn(wt, impl);
    job->from_float = lm_select_from_float(at, impl);
    if (!job->dot || !job->from_float)
        return lm_set_error(LM_ERR_IMPL, "matmul %s: no kernel for impl %d", wt->name, impl);
    job->wt = wt;
    job->at = at;
    job->w_row_bytes = (size_t)(n / wt->blck_size) * wt->type_size;
    job->n_scales = job->dot4 ? lm_x4_scale_count(wt->vec_dot_type) : 0;
    if (!job->n_scales) job->dot2r = NULL;   /* it reads the side data only dot4's layout has */
    job->xq_row_bytes = column_bytes(at, n, job->n_scales);
    /* prefill (more columns than the few-column paths take) through dotn;
     * the float types, which have no few-column kernel, from two columns on
     * (speculative verification, decode of several sequences) */
    job->group_bytes = group_bytes(at, n);
    job->round_row = lm_select_round_row(at, impl);
    job->float_cols = job->dotn != NULL && lm_type_is_float(at) && ncols >= 2 &&
                      (at == lm_get_type_traits(LM_TYPE_F32) || job->round_row != NULL);
    job->xn_unit = job->float_cols ? 1 : LM_XN_LANES;
    job->dotn2r = job->float_cols ? lm_select_vec_dot_xn2r(wt, impl) : NULL;
    job->use_dotn = job->float_cols || (job->dotn != NULL && job->group_bytes > 0 && ncols > LM_PAIRED_COLS);
    job->rows = rows;
    job->n = n;
    job->ncols = ncols;
    return LM_OK;
}

size_t lm_matmul_scratch_bytes(int type, int64_t n, int64_t ncols) {
    const lm_type_traits *wt = lm_get_type_traits(type);
    if (!wt) return 0;
    const lm_type_traits *at = lm_get_type_traits(wt->vec_dot_type);
    /* room for the scales and sums, and the interleaved copy, whatever impl runs */
    const int64_t cols = ncols > 0 ? ncols : 1;
    return columns_bytes(column_bytes(at, n, lm_x4_scale_count(wt->vec_dot_type)), cols) + groups_bytes(at, n, cols);
}

int lm_matmul_into(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n, const float *x,
                   int64_t ncols, float *y, int64_t ldy, void *scratch) {
    matmul_job job = { 0 };
    int rc = plan(&job, impl, type, rows, n, ncols);
    if (rc) return rc;
    if (ldy < rows) return lm_set_error(LM_ERR_SHAPE, "matmul: ldy=%lld < rows=%lld", (long long)ldy, (long long)rows);
    job.w = w;
    job.x = x;
    job.xq = scratch;
    job.xg = (char *)scratch + columns_bytes(job.xq_row_bytes, ncols);
    if (job.float_cols && type == LM_TYPE_F32) job.xg = (char *)x;   /* already the kernel's f32 columns */
    job.y = y;
    job.ldy = ldy;
    lm_threadpool_run(tp, quantize_columns, &job);
    lm_threadpool_run(tp, multiply_rows, &job);
    return LM_OK;
}

int lm_matmul(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n, const float *x,
              int64_t ncols, float *y) {
    matmul_job job = { 0 };
    int rc = plan(&job, impl, type, rows, n, ncols);
    if (rc) return rc;
    void *scratch = malloc(lm_matmul_scratch_bytes(type, n, ncols));
    if (!scratch) return lm_set_error(LM_ERR_NOMEM, "matmul: out of memory for activations");
    rc = lm_matmul_into(tp, impl, type, w, rows, n, x, ncols, y, rows, scratch);
    free(scratch);
    return rc;
}
