/* legacy_i8_avx2.h — the AVX2 (and VNNI) dots of the 32-weight formats
 * whose weights are integers times a block scale: Q4_0, Q5_0, Q8_0 (partner
 * Q8_0) and, with a block minimum, Q4_1, Q5_1 (partner Q8_1). Written once
 * for all their kernels; the including file (simd/x86/<t>_avx2.c) defines
 *   LM_I8_T            the type's name (q4_0)
 *   LM_I8_MIN          1 for the formats with a minimum m (value d * q + m), else 0
 *   LM_I8_BIAS_SHIFT   log2 of the bias of its unsigned weight bytes (8: 3, 16: 4, 128: 7;
 *                      the min formats' bytes are their unsigned q: none)
 *   LM_I8_SIGNED       1 where the unsigned bytes would saturate vpmaddubsw
 *                      (Q8_0 without VNNI: the sign trick instead), else 0
 *   lm_i8_ubytes(x)    block x's 32 weights as bytes: q + bias (signed q where LM_I8_SIGNED)
 * and, where the block scale is not an fp16 field d (MXFP4's E8M0 exponent e),
 *   LM_I8_SCALE(x)     block x's scale as a float
 *   lm_i8_scales(x, m) the scales of m <= 8 blocks from x, as floats (0 past m)
 * and gets lm_vec_dot_<t>, lm_vec_dot_2r_<t>, lm_vec_dot_x4_<t>,
 * lm_vec_dot_2r2c_<t> and lm_vec_dot_xn_<t> for the build at hand (LM_SIMD_FN).
 *
 * What every kernel computes (its bits; ggml's order differs, so tests
 * compare with the scalar reference by NMSE): block i's exact integer dot
 * isum_i = sum(q * y) first, then acc[i % 8] = fma(dx_i * dy_i, isum_i,
 * acc[i % 8]) (the min formats then also acc[i % 8] = fma(m_i, s_i,
 * acc[i % 8]), s being Q8_1's dy * sum(y)), and the 8 accumulators summed as
 * lm_hsum_f32_8 sums lanes.
 * Eight consecutive blocks are one vector: lane b holds block i0 + b, so the
 * float work of a block (convert, scale, FMA) is an eighth of an instruction,
 * where the per-block-lanes kernels spent four to six per block and column.
 * The integer lanes of each block are reduced across blocks at once
 * (lm_totals8). Every kernel, whatever its rows and columns, and every build
 * gives the same bits, so grouping never changes a result.
 *
 * The unsigned form q + bias makes one vpdpbusd (or vpmaddubsw + vpmaddwd)
 * per block and column; the bias comes back out of the block total as
 * bias * sum(y), from the column's block sums. */
#ifndef LAMINA_LEGACY_I8_AVX2_H
#define LAMINA_LEGACY_I8_AVX2_H

#include "simd/x86/avx2.h"
#include "simd/x86/legacy_avx2.h"   /* LM_LEGACY_PREFETCH */

#define LM_I8_CAT_(a, b) a##b
#define LM_I8_CAT(a, b) LM_I8_CAT_(a, b)
#define LM_I8_BLOCK LM_I8_CAT(block_, LM_I8_T)
#define LM_I8_FN_(name) LM_SIMD_FN(name)
#define LM_I8_FN(prefix) LM_I8_FN_(LM_I8_CAT(prefix, LM_I8_T))

enum { LM_I8_GROUP = 8 };   /* blocks per vector of block totals */

#if LM_I8_MIN
#define LM_I8_PARTNER block_q8_1
#else
#define LM_I8_PARTNER block_q8_0
#endif

/* lanes b < m all ones */
static inline __m256i lm_i8_mask(int m) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* the f16 scales at the start of m <= 8 blocks `stride` bytes apart, as floats (0 past m) */
static inline __m256 lm_i8_block_scales(const void *first, size_t stride, int m) {
    const uint8_t *p = first;
    lm_half h[LM_I8_GROUP] = { 0 };
    for (int b = 0; b < m; b++) memcpy(&h[b], p + (size_t)b * stride, sizeof(lm_half));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

#ifndef LM_I8_SCALE
#define LM_I8_SCALE(x) lm_half_f32((x)->d)
static inline __m256 lm_i8_scales(const LM_I8_BLOCK *x, int m) { return lm_i8_block_scales(&x->d, sizeof *x, m); }
#endif

/* 8 floats (or ints) from p, 0 past m */
static inline __m256 lm_i8_load_ps(const float *p, int m) {
    return m == LM_I8_GROUP ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lm_i8_mask(m));
}
static inline __m256i lm_i8_load_epi32(const int32_t *p, int m) {
    return m == LM_I8_GROUP ? _mm256_loadu_si256((const __m256i *)p)
                            : _mm256_maskload_epi32((const int *)p, lm_i8_mask(m));
}

/* the 8 int32 lanes of weight bytes w times the activation block y's bytes */
static inline __m256i lm_i8_lanes(__m256i w, const LM_I8_PARTNER *y) {
    const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
#if LM_I8_SIGNED
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(qy, w)),
                             _mm256_set1_epi16(1));
#elif defined(LM_VNNI)
    return LM_DPBUSD(_mm256_setzero_si256(), w, qy);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, qy), _mm256_set1_epi16(1));
#endif
}

/* the sums of the activation bytes of m <= 8 blocks (the bias term; what
 * matmul.c stores per column, computed here for the one-column kernels) */
static inline __m256i lm_i8_block_sums(const block_q8_0 *y, int m) {
    __m256i v[LM_I8_GROUP];
    for (int b = 0; b < LM_I8_GROUP; b++) {
        if (b >= m) {
            v[b] = _mm256_setzero_si256();
            continue;
        }
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[b].qs);
#if defined(LM_VNNI)
        v[b] = LM_DPBUSD(_mm256_setzero_si256(), _mm256_set1_epi8(1), qy);
#else
        v[b] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qy), _mm256_set1_epi16(1));
#endif
    }
    return lm_totals8(v);
}

/* One activation column's group of blocks: its activation blocks, their
 * scales, and their byte sums (Q8_0) or s = d * sum (Q8_1), 0 past the
 * group's m blocks. */
typedef struct {
    const LM_I8_PARTNER *y;   /* the group's first block */
    __m256 d;
    __m256i sums;
    __m256 s;
} lm_i8_column;

/* one weight row's m <= 8 blocks from x, unpacked once for all the columns */
typedef struct {
    __m256i w[LM_I8_GROUP];   /* the blocks' bytes (0 past m) */
    __m256 d;                 /* their scales */
    __m256 m;                 /* their minimums (the min formats) */
} lm_i8_weights;

LM_X4_INLINE void lm_i8_unpack(const LM_I8_BLOCK *x, int m, lm_i8_weights *wt) {
    for (int b = 0; b < LM_I8_GROUP; b++) wt->w[b] = b < m ? lm_i8_ubytes(&x[b]) : _mm256_setzero_si256();
    wt->d = lm_i8_scales(x, m);
#if LM_I8_MIN
    wt->m = lm_i8_block_scales(&x[0].m, sizeof(LM_I8_BLOCK), m);
#endif
}

/* acc lane b += (dx * dy) * isum of block b, for unpacked weights and one column */
LM_X4_INLINE __m256 lm_i8_term(const lm_i8_weights *wt, int m, const lm_i8_column *col, __m256 acc) {
    __m256i v[LM_I8_GROUP];
    for (int b = 0; b < LM_I8_GROUP; b++) v[b] = b < m ? lm_i8_lanes(wt->w[b], &col->y[b]) : _mm256_setzero_si256();
    __m256i isum = lm_totals8(v);
#if LM_I8_MIN
    acc = _mm256_fmadd_ps(_mm256_mul_ps(wt->d, col->d), _mm256_cvtepi32_ps(isum), acc);
    return _mm256_fmadd_ps(wt->m, col->s, acc);
#else
#if !LM_I8_SIGNED
    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(col->sums, LM_I8_BIAS_SHIFT));
#endif
    return _mm256_fmadd_ps(_mm256_mul_ps(wt->d, col->d), _mm256_cvtepi32_ps(isum), acc);
#endif
}

/* one weight row's m <= 8 blocks from x with ncol columns (always inlined
 * with m and ncol constants, so the full groups unroll) */
LM_X4_INLINE void lm_i8_group(const LM_I8_BLOCK *x, int m, int ncol, const lm_i8_column *col, __m256 *acc) {
    lm_i8_weights wt;
    lm_i8_unpack(x, m, &wt);
    for (int c = 0; c < ncol; c++) acc[c] = lm_i8_term(&wt, m, &col[c], acc[c]);
}

/* the group of m blocks from block i of a plain activation row (scales and
 * sums read from the blocks) */
static inline lm_i8_column lm_i8_plain_column(const LM_I8_PARTNER *y, int64_t i, int m) {
    lm_i8_column c = { &y[i], lm_i8_block_scales(&y[i].d, sizeof(LM_I8_PARTNER), m), _mm256_setzero_si256(),
                       _mm256_setzero_ps() };
#if LM_I8_MIN
    c.s = lm_i8_block_scales(&y[i].s, sizeof(LM_I8_PARTNER), m);
#elif !LM_I8_SIGNED
    c.sums = lm_i8_block_sums(&y[i], m);
#endif
    return c;
}

/* rows x[0..nrow) with one plain Q8_0 column: the one-row kernel */
LM_X4_INLINE void lm_i8_rows(int64_t n, const int nrow, float *s, const LM_I8_BLOCK *const *x, const LM_I8_PARTNER *y) {
    const int64_t nb = n / QK8_0;
    __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
    int64_t i = 0;
    for (; i + LM_I8_GROUP <= nb; i += LM_I8_GROUP) {
        /* decode reads every weight once: fetch ahead (legacy_avx2.h's reasons; a prefetch never faults) */
        for (int r = 0; r < nrow; r++)
            for (int b = 0; b < LM_I8_GROUP; b++)
                _mm_prefetch((const char *)&x[r][i + LM_LEGACY_PREFETCH + b], _MM_HINT_T0);
        const lm_i8_column col = lm_i8_plain_column(y, i, LM_I8_GROUP);
        for (int r = 0; r < nrow; r++) lm_i8_group(&x[r][i], LM_I8_GROUP, 1, &col, &acc[r]);
    }
    if (i < nb) {
        const int m = (int)(nb - i);
        const lm_i8_column col = lm_i8_plain_column(y, i, m);
        for (int r = 0; r < nrow; r++) lm_i8_group(&x[r][i], m, 1, &col, &acc[r]);
    }
    for (int r = 0; r < nrow; r++) s[r] = lm_hsum_f32_8(acc[r]);
}

void LM_I8_FN(lm_vec_dot_)(int64_t n, float *s, const void *vx, const void *vy) {
    const LM_I8_BLOCK *x[1] = { vx };
    lm_i8_rows(n, 1, s, x, vy);
}

/* the group of m blocks from block i of a column laid out by matmul.c:
 * scales d (and Q8_1's s after them) as floats, Q8_0's byte sums as int32 */
static inline lm_i8_column lm_i8_side_column(const LM_I8_PARTNER *y, const float *d, const int32_t *sums, int64_t nb,
                                             int64_t i, int m) {
    lm_i8_column c = { &y[i], lm_i8_load_ps(&d[i], m), _mm256_setzero_si256(), _mm256_setzero_ps() };
#if LM_I8_MIN
    (void)sums;
    c.s = lm_i8_load_ps(&d[nb + i], m);
#else
    (void)nb;
    c.sums = lm_i8_load_epi32(&sums[i], m);
#endif
    return c;
}

/* rows x[0..nrow) by ncol columns from matmul.c, whose columns carry their
 * block scales as floats and their block byte sums as int32 (Q8_0) or their
 * s as floats (Q8_1) after the blocks (type_traits.h, lm_x4_scales_offset,
 * lm_x4_sums_offset) */
LM_X4_INLINE void lm_i8_tile(int64_t n, const int nrow, const int ncol, float *s, size_t s_stride,
                             const LM_I8_BLOCK *const *x, const void *vy, size_t y_stride) {
    LM_X4_COLUMNS(LM_I8_PARTNER, y, vy, y_stride, ncol);
    const int64_t nb = n / QK8_0;
    LM_X4_SCALES(yd, y, nb, LM_I8_PARTNER, ncol);   /* Q8_1: d[nb], then s[nb] */
    const int32_t *ys[NCOL] = { NULL };
#if !LM_I8_MIN
    for (int c = 0; c < ncol; c++) ys[c] = (const int32_t *)((const char *)y[c] + lm_x4_sums_offset(nb));
#endif
    __m256 acc[2][NCOL];
    for (int r = 0; r < nrow; r++)
        for (int c = 0; c < ncol; c++) acc[r][c] = _mm256_setzero_ps();
    lm_i8_column col[NCOL];
    int64_t i = 0;
    for (; i + LM_I8_GROUP <= nb; i += LM_I8_GROUP) {
        if (ncol == 1)   /* decode: every weight is read once, fetch ahead (as lm_i8_rows) */
            for (int r = 0; r < nrow; r++)
                for (int b = 0; b < LM_I8_GROUP; b++)
                    _mm_prefetch((const char *)&x[r][i + LM_LEGACY_PREFETCH + b], _MM_HINT_T0);
        for (int c = 0; c < ncol; c++) col[c] = lm_i8_side_column(y[c], yd[c], ys[c], nb, i, LM_I8_GROUP);
        for (int r = 0; r < nrow; r++) lm_i8_group(&x[r][i], LM_I8_GROUP, ncol, col, acc[r]);
    }
    if (i < nb) {
        const int m = (int)(nb - i);
        for (int c = 0; c < ncol; c++) col[c] = lm_i8_side_column(y[c], yd[c], ys[c], nb, i, m);
        for (int r = 0; r < nrow; r++) lm_i8_group(&x[r][i], m, ncol, col, acc[r]);
    }
    for (int c = 0; c < ncol; c++)
        for (int r = 0; r < nrow; r++) s[c * s_stride + r] = lm_hsum_f32_8(acc[r][c]);
}

/* one row by two to four columns (avx2.h's few-column kernels) */
LM_X4_INLINE void lm_i8_x4(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                           size_t y_stride) {
    const LM_I8_BLOCK *x[1] = { vx };
    lm_i8_tile(n, 1, ncol, s, s_stride, x, vy, y_stride);
}
#define LM_I8_DEFINE_X4(t, body) LM_DEFINE_X4(t, body)
LM_I8_DEFINE_X4(LM_I8_T, lm_i8_x4)

/* two rows by decode's one column, from matmul.c with its side data: the
 * block byte sums were computed once per column there, so Q4_0 and Q5_0 decode
 * does not recompute them for every pair of rows, and the scales come as floats */
void LM_I8_FN(lm_vec_dot_2r_)(int64_t n, float *s, const void *vx, size_t x_stride, const void *vy) {
    const LM_I8_BLOCK *x[2] = { vx, (const LM_I8_BLOCK *)((const char *)vx + x_stride) };
    lm_i8_tile(n, 2, 1, s, 1, x, vy, 0);
}

void LM_I8_FN(lm_vec_dot_2r2c_)(int64_t n, float *s, size_t s_stride, const void *vx, size_t x_stride, const void *vy,
                                size_t y_stride) {
    const LM_I8_BLOCK *x[2] = { vx, (const LM_I8_BLOCK *)((const char *)vx + x_stride) };
    lm_i8_tile(n, 2, 2, s, s_stride, x, vy, y_stride);
}

/* acc's int32 lanes += weight bytes w (the same 4 in every lane) times the
 * activation bytes y (lane c: column c's) */
static inline __m256i lm_i8_accumulate(__m256i acc, __m256i w, __m256i y) {
#if LM_I8_SIGNED
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w)),
                                                   _mm256_set1_epi16(1)));
#elif defined(LM_VNNI)
    return LM_DPBUSD(acc, w, y);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, y), _mm256_set1_epi16(1)));
#endif
}

/* One weight row by 1..LM_XN_MAX columns, the columns interleaved in groups
 * of eight by matmul.c (type_traits.h, LM_XN_BLOCK_BYTES): prefill's kernel.
 * A lane is a column: the 4 weights k of a block, broadcast to every lane,
 * meet 4 bytes of each of 8 columns in one vpdpbusd, so after the block's 8
 * steps each lane holds its column's block total: no reduction across lanes
 * (llama.cpp gets the same from weights repacked 8 rows to a vector; here the
 * activations, quantized per matmul anyway, are the ones laid out for it).
 * Per column the arithmetic and order above: acc[i % 8] per block i, summed
 * as lm_hsum_f32_8 sums its lanes. */
void LM_I8_FN(lm_vec_dot_xn_)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                              size_t group_bytes) {
    const LM_I8_BLOCK *x = vx;
    const int64_t nb = n / QK8_0;
    const int ngroups = (ncol + LM_XN_LANES - 1) / LM_XN_LANES;
    __m256 acc[LM_XN_MAX / LM_XN_LANES][LM_I8_GROUP];   /* [column group][block phase] */
    for (int g = 0; g < ngroups; g++)
        for (int ph = 0; ph < LM_I8_GROUP; ph++) acc[g][ph] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        /* the block's bytes, 4 by 4 in every lane (broadcast from memory: loads, no shuffles) */
        _Alignas(32) int32_t quads[8];
        _mm256_store_si256((__m256i *)quads, lm_i8_ubytes(&x[i]));
        __m256i w[8];
        for (int k = 0; k < 8; k++) w[k] = _mm256_set1_epi32(quads[k]);
        const __m256 xd = _mm256_set1_ps(LM_I8_SCALE(&x[i]));
#if LM_I8_MIN
        const __m256 xm = _mm256_set1_ps(lm_half_f32(x[i].m));
#endif
        const int ph = (int)(i % LM_I8_GROUP);
        for (int g = 0; g < ngroups; g++) {
            const char *blk = (const char *)vy + (size_t)g * group_bytes + (size_t)i * LM_XN_BLOCK_BYTES;
            const __m256i *y = (const __m256i *)blk;
            /* two chains of four: half the latency of one chain of eight */
            __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
            for (int k = 0; k < 8; k += 2) {
                even = lm_i8_accumulate(even, w[k], _mm256_loadu_si256(&y[k]));
                odd = lm_i8_accumulate(odd, w[k + 1], _mm256_loadu_si256(&y[k + 1]));
            }
            __m256i isum = _mm256_add_epi32(even, odd);
#if !LM_I8_SIGNED && !LM_I8_MIN
            const __m256i sums = _mm256_loadu_si256((const __m256i *)(blk + LM_XN_SUMS_OFFSET));
            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sums, LM_I8_BIAS_SHIFT));
#endif
            const __m256 d = _mm256_mul_ps(xd, _mm256_loadu_ps((const float *)(blk + LM_XN_SCALES_OFFSET)));
            acc[g][ph] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc[g][ph]);
#if LM_I8_MIN
            /* Q8_1's s = dy * sum(y) in the sums' place (type_traits.h) */
            acc[g][ph] = _mm256_fmadd_ps(xm, _mm256_loadu_ps((const float *)(blk + LM_XN_SUMS_OFFSET)), acc[g][ph]);
#endif
        }
    }
    for (int g = 0; g < ngroups; g++) {
        const __m256 *a = acc[g];
        /* lm_hsum_f32_8's tree, lane-wise: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) */
        const __m256 t0 = _mm256_add_ps(a[0], a[4]), t1 = _mm256_add_ps(a[1], a[5]);
        const __m256 t2 = _mm256_add_ps(a[2], a[6]), t3 = _mm256_add_ps(a[3], a[7]);
        _Alignas(32) float out[LM_XN_LANES];
        _mm256_store_ps(out, _mm256_add_ps(_mm256_add_ps(t0, t2), _mm256_add_ps(t1, t3)));
        const int lanes = ncol - g * LM_XN_LANES < LM_XN_LANES ? ncol - g * LM_XN_LANES : LM_XN_LANES;
        for (int c = 0; c < lanes; c++) s[(size_t)(g * LM_XN_LANES + c) * s_stride] = out[c];
    }
}

#endif /* LAMINA_LEGACY_I8_AVX2_H */
