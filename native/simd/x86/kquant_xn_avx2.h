/* kquant_xn_avx2.h — what the many-column kernels of the Q8_K formats
 * (kquant_xn_avx2.c: Q4_K, Q5_K, Q6_K; kquant23_xn_avx2.c: Q2_K, Q3_K;
 * iq4_xs_avx2.c: IQ4_XS) share: one weight row by up to LM_XN_MAX Q8_K
 * columns that matmul.c interleaved eight to a vector (type_traits.h,
 * LM_XNK_*). A lane is a column: 4 weight bytes broadcast to every lane meet
 * 4 bytes of each of 8 columns in one vpdpbusd (or vpmaddubsw + vpmaddwd),
 * so a sub-block's dot lands in each column's lane with no reduction across
 * lanes. Only included by files compiled with -mavx2 (and LM_VNNI builds). */
#ifndef LAMINA_KQUANT_XN_AVX2_H
#define LAMINA_KQUANT_XN_AVX2_H

#include "quants/kquant.h"
#include "simd/x86/avx2.h"

/* acc's int32 lanes += weight bytes w (the same 4 in every lane) times the
 * activation bytes y; w <= 128 and |y| <= 127 (Q8_K), so vpmaddubsw's pair
 * sums (at most 2 * 128 * 127 < 2^15) cannot saturate */
static inline __m256i xnk_accumulate(__m256i acc, __m256i w, __m256i y) {
#if defined(LM_VNNI)
    return LM_DPBUSD(acc, w, y);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, y), _mm256_set1_epi16(1)));
#endif
}

/* isum[g] += scale * (the dot of `len` (16 or 32) weights from w[first] with
 * the columns' bytes from quad first / 4 of group g's super-block y[g]): the
 * weights are broadcast once for all the groups */
static inline __attribute__((always_inline)) void xnk_sub_dots(const uint8_t *w, int first, int len, int scale,
                                                               const __m256i *const *y, int ngroups, __m256i *isum) {
    __m256i wq[8];
    for (int q = 0; q < len / 4; q++) {
        int32_t quad;
        memcpy(&quad, w + first + 4 * q, 4);
        wq[q] = _mm256_set1_epi32(quad);
    }
    const __m256i sc = _mm256_set1_epi32(scale);
    for (int g = 0; g < ngroups; g++) {
        const __m256i *yq = y[g] + first / 4;
        __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
        for (int q = 0; q < len / 4; q += 2) {
            even = xnk_accumulate(even, wq[q], _mm256_loadu_si256(&yq[q]));
            odd = xnk_accumulate(odd, wq[q + 1], _mm256_loadu_si256(&yq[q + 1]));
        }
        isum[g] = _mm256_add_epi32(isum[g], _mm256_mullo_epi32(_mm256_add_epi32(even, odd), sc));
    }
}

/* lanes: sum over the 8 pairs p of the columns' bsums 2p, 2p+1 times the
 * int16 pair (lo[p], hi[p]) */
static inline __m256i xnk_bsum_dot(const char *blk, const int *lo, const int *hi) {
    const __m256i *pairs = (const __m256i *)(blk + LM_XNK_BSUMS_OFFSET);
    __m256i sum = _mm256_setzero_si256();
    for (int p = 0; p < 8; p++) {
        const __m256i f = _mm256_set1_epi32((int)(((uint32_t)hi[p] << 16) | ((uint32_t)lo[p] & 0xFFFF)));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_loadu_si256(&pairs[p]), f));
    }
    return sum;
}

#define XNK_GROUPS (LM_XN_MAX / LM_XN_LANES) /* column groups of 8 at the most */

/* one weight row's float sums: super-block i's term goes to lane i % LM_KDOT_LANES
 * of its column group, as the one-column kernels spread theirs */
typedef struct {
    __m256 lane[XNK_GROUPS][LM_KDOT_LANES];
    int ngroups;
} xnk_acc;

static inline void xnk_acc_init(xnk_acc *acc, int ncol) {
    acc->ngroups = (ncol + LM_XN_LANES - 1) / LM_XN_LANES;
    for (int g = 0; g < acc->ngroups; g++)
        for (int l = 0; l < LM_KDOT_LANES; l++) acc->lane[g][l] = _mm256_setzero_ps();
}

static inline void xnk_acc_add(xnk_acc *acc, int g, int64_t i, __m256 term) {
    acc->lane[g][i % LM_KDOT_LANES] = _mm256_add_ps(acc->lane[g][i % LM_KDOT_LANES], term);
}

/* a super-block's term without mins, (d*yd) * isum, per column */
static inline __m256 xnk_term(__m256 xd, __m256 yd, __m256i isum) {
    return _mm256_mul_ps(_mm256_mul_ps(xd, yd), _mm256_cvtepi32_ps(isum));
}

/* with mins: (d*yd) * isum - (dmin*yd) * imin */
static inline __m256 xnk_term_mins(__m256 xd, __m256 xdmin, __m256 yd, __m256i isum, __m256i imin) {
    return _mm256_sub_ps(xnk_term(xd, yd, isum), _mm256_mul_ps(_mm256_mul_ps(xdmin, yd), _mm256_cvtepi32_ps(imin)));
}

/* the lanes' terms summed as lm_kdot_sum_lanes sums its lanes, lane-wise;
 * columns past ncol dropped */
static void xnk_store(const xnk_acc *acc, int ncol, float *s, size_t s_stride) {
    for (int g = 0; g * LM_XN_LANES < ncol; g++) {
        __m256 sum = _mm256_setzero_ps();
        for (int l = 0; l < LM_KDOT_LANES; l++) sum = _mm256_add_ps(sum, acc->lane[g][l]);
        _Alignas(32) float out[LM_XN_LANES];
        _mm256_store_ps(out, sum);
        const int lanes = ncol - g * LM_XN_LANES < LM_XN_LANES ? ncol - g * LM_XN_LANES : LM_XN_LANES;
        for (int c = 0; c < lanes; c++) s[(size_t)(g * LM_XN_LANES + c) * s_stride] = out[c];
    }
}

/* the group g's (8 columns') interleaved super-block i */
static inline const __m256i *xnk_block(const void *vy, size_t group_bytes, int g, int64_t i) {
    return (const __m256i *)((const char *)vy + (size_t)g * group_bytes + (size_t)i * LM_XNK_BLOCK_BYTES);
}

/* y[g]: every group's super-block i; isum[g] zeroed */
static inline void xnk_blocks(const void *vy, size_t group_bytes, int ngroups, int64_t i, const __m256i **y,
                              __m256i *isum) {
    for (int g = 0; g < ngroups; g++) {
        y[g] = xnk_block(vy, group_bytes, g, i);
        isum[g] = _mm256_setzero_si256();
    }
}

/* the 8 columns' Q8_K d of an interleaved super-block */
static inline __m256 xnk_yd(const __m256i *blk) {
    return _mm256_loadu_ps((const float *)((const char *)blk + LM_XNK_SCALES_OFFSET));
}

#endif /* LAMINA_KQUANT_XN_AVX2_H */
