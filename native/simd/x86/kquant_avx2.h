/* kquant_avx2.h — what the AVX2 dots of the k-quants (simd/x86/q*_K_avx2.c)
 * share.
 *
 * The integer scheme is ggml's (arch/x86/quants.c): weights are unpacked to
 * unsigned bytes so _mm256_maddubs_epi16(weights, q8) yields int16 pair sums
 * that can never saturate, and _mm256_madd_epi16 with the sub-block scales
 * widens them to int32. Everything constant per sub-block is taken from the
 * Q8_K bsums instead of the quants: the mins of Q2_K/Q4_K/Q5_K as in ggml,
 * and here also the -4 of Q3_K and the -32 of Q6_K, which saves ggml's second
 * maddubs per 32 weights for those two types.
 *
 * The float part differs from ggml: a block's int32 lanes are summed in
 * integers (exact) first, eight blocks at a time with one hadd tree, and the
 * eight block terms d * isum - dmin * imin are formed and added with the
 * scalar reference's roundings into the lanes of lm_kdot_sum_lanes. Results
 * are therefore bit-identical to lm_vec_dot_*_ref. ggml instead converts each
 * block's lanes to float, rounding parts that only cancel in the total (the
 * biased Q3_K/Q6_K sums against their offsets, scale against min terms); on
 * inputs with outliers its SIMD and scalar dots differ by ~1e-9 in NMSE.
 *
 * Scale broadcasts: after a maddubs over 32 weights, int16 lanes 0..7 hold
 * weights 0..15 and lanes 8..15 weights 16..31, i.e. the two 128-bit halves.
 * For 16-weight sub-blocks (Q2_K, Q3_K, Q6_K) each half takes its own scale;
 * for 32-weight sub-blocks (Q4_K, Q5_K) both take the same.
 */
#ifndef LAMINA_KQUANT_AVX2_H
#define LAMINA_KQUANT_AVX2_H

#include "quants/kquant.h"
#include "quants/q4_K.h"
#include "simd/x86/avx2.h"

/* ------------------------------------------- k-quant integer helpers */

/* shuffle_epi8 mask repeating int16 element e of each 128-bit half */
static inline __m256i lm_pick16(int e) { return _mm256_set1_epi16((short)(0x0100 + 0x0202 * e)); }

/* mask giving int16 element e to the low half and e + 1 to the high half */
/* Q4_K and Q5_K: for each column c < ncol, sumi[c] += scale(2j) * (lo . q8
 * bytes 64j..64j+31) + scale(2j+1) * (hi . the next 32), the weights of
 * sub-blocks 2j and 2j+1 as unsigned bytes and sc their scales as int16 */
static inline __attribute__((always_inline)) void lm_k4_pair_dots(__m256i lo, __m256i hi, __m256i sc, int j,
                                                                  const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i sc_lo = _mm256_shuffle_epi8(sc, lm_pick16(2 * j));
    const __m256i sc_hi = _mm256_shuffle_epi8(sc, lm_pick16(2 * j + 1));
#pragma GCC unroll 4
    for (int c = 0; c < ncol; c++) {
        const int8_t *q8 = y[c]->qs + 64 * j;
        const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
        const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
        sumi[c] =
            _mm256_add_epi32(sumi[c], _mm256_add_epi32(_mm256_madd_epi16(sc_lo, plo), _mm256_madd_epi16(sc_hi, phi)));
    }
}

static inline __m256i lm_pick16_pair(int e) {
    return _mm256_set_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * (e + 1))),
                            _mm_set1_epi16((short)(0x0100 + 0x0202 * e)));
}

/* 16 int16 scales (low half 0..7, high half 8..15) -> both halves 0..7, both 8..15 */
static inline void lm_split_scales(__m256i sc16, __m256i *lo, __m256i *hi) {
    *lo = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc16));
    *hi = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc16, 1));
}

/* four words just computed in registers: built with inserts, since a 16-byte
 * load of them from memory would stall on store forwarding */
static inline __m128i lm_words128(const uint32_t w[4]) {
    return _mm_set_epi32((int)w[3], (int)w[2], (int)w[1], (int)w[0]);
}

static inline __m128i lm_add_halves(__m256i v) {
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

/* lane b = total of the 4 lanes of v[b] */
static inline __m256i lm_totals8_x4(const __m128i v[8]) {
    const __m128i t03 = _mm_hadd_epi32(_mm_hadd_epi32(v[0], v[1]), _mm_hadd_epi32(v[2], v[3]));
    const __m128i t47 = _mm_hadd_epi32(_mm_hadd_epi32(v[4], v[5]), _mm_hadd_epi32(v[6], v[7]));
    return _mm256_set_m128i(t47, t03);
}

/* ------------------------------------------- k-quant float helpers */
/* y.d of 8 consecutive Q8_K blocks */
static inline __m256 lm_y_scales8(const block_q8_K *y) {
    return _mm256_castsi256_ps(lm_gather8(&y->d, (int)sizeof(block_q8_K)));
}

/* fp16 pairs (d in the low, dmin in the high half of each dword) -> d, dmin */
static inline void lm_half_pairs8(__m256i dwords, __m256 *d, __m256 *dmin) {
    const __m256i lo = _mm256_and_si256(dwords, _mm256_set1_epi32(0xFFFF));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, _mm256_srli_epi32(dwords, 16)), 0xD8);
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
    *dmin = _mm256_cvtph_ps(_mm256_extracti128_si256(packed, 1));
}

/* fp16 d in the high half of each dword -> d */
static inline __m256 lm_half_high8(__m256i dwords) {
    const __m256i hi = _mm256_srli_epi32(dwords, 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(hi, hi), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

/* d * isum - dmin * imin for 8 blocks (d, dmin already times y.d), each
 * product and the difference rounded once, as in the scalar reference */
static inline __m256 lm_terms8(__m256i isum, __m256i imin, __m256 d, __m256 dmin) {
    return _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(imin)));
}

/* one block's d * isum - dmin * imin (a row's last n/256 % 8 blocks), from its
 * lanes and its adjacent fp16 d, dmin */
static inline float lm_block_term(__m256i sumi, __m128i summ, const lm_half *d_dmin, float yd) {
    const __m128i pairs = _mm_hadd_epi32(lm_add_halves(sumi), summ);
    const __m128i totals = _mm_hadd_epi32(pairs, pairs);   /* isum, imin, isum, imin */
    uint32_t bits;
    memcpy(&bits, d_dmin, sizeof bits);
    const __m128 scales = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)bits)), _mm_set1_ps(yd));
    const __m128 terms = _mm_mul_ps(scales, _mm_cvtepi32_ps(totals));
    return _mm_cvtss_f32(_mm_sub_ss(terms, _mm_movehdup_ps(terms)));
}

/* bit `from` of every byte moved to bit `to` (others cleared); 16-bit shifts
 * are safe because the bit never crosses its byte for |from - to| <= 7 */
static inline __m256i move_bit(__m256i v, int from, int to) {
    const __m256i mask = _mm256_set1_epi8((char)(1 << to));
    return from >= to ? _mm256_and_si256(_mm256_srli_epi16(v, from - to), mask)
                      : _mm256_and_si256(_mm256_slli_epi16(v, to - from), mask);
}

/* fp16 pairs (d in the low, dmin in the high half of each dword) -> d * yd, dmin * yd */
static inline void scales8(__m256i dwords, __m256 yd, __m256 *d, __m256 *dmin) {
    lm_half_pairs8(dwords, d, dmin);
    *d = _mm256_mul_ps(*d, yd);
    *dmin = _mm256_mul_ps(*dmin, yd);
}

/* ------------------------------------------------------ Q4_K, Q5_K scales */
/* the scales (int16, both halves 0..7) and the mins (int16 0..7) of a block */
static inline void lm_q4_K_scales_mins(const uint8_t *packed, __m256i *sc, __m128i *mins) {
    uint32_t sm[4];
    lm_kdot_q4_K_scales(packed, sm);
    const __m256i sm16 = _mm256_cvtepu8_epi16(lm_words128(sm));
    *mins = _mm256_extracti128_si256(sm16, 1);
    *sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16));
}

/* 4 lanes of min_j times the bsums under 32-weight sub-block j */
static inline __m128i lm_q4_K_summ(__m128i mins, const block_q8_K *y) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
    const __m128i bsums32 = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
    return _mm_madd_epi16(mins, bsums32);
}

/* ------------------------------------------------------ drivers */
/* The *_block functions of each type unpack a weight super-block and dot it
 * with Q8_K blocks (the four-column kernels call the same *_block_n with four
 * columns); all their sums are exact integers, so every column gets the same
 * bits whatever the number of columns. */

/* The driver Q3_K and Q6_K share (scales only, the offsets come from bsums
 * inside the block functions): 8 super-blocks at a time with exact integer
 * totals, then d; like ggml's ggml_vec_dot_q3_K_q8_K / ggml_vec_dot_q6_K_q8_K
 * (AVX2 branch). d is the last field of both blocks: its dword is gathered
 * from 2 bytes earlier so the load stays inside the block. */
#define LM_DEFINE_VEC_DOT_SCALES_ONLY(t)                                                                       \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                          \
        const block_##t *x = vx;                                                                               \
        const block_q8_K *y = vy;                                                                              \
        const int64_t nb = n / QK_K;                                                                           \
        __m256 acc = _mm256_setzero_ps();                                                                      \
        int64_t i = 0;                                                                                         \
        for (; i + 8 <= nb; i += 8) {                                                                          \
            __m256i sumi[8];                                                                                   \
            for (int b = 0; b < 8; b++) sumi[b] = t##_block(&x[i + b], &y[i + b]);                             \
            const __m256i d_dwords = lm_gather8((const char *)&x[i].d - 2, (int)sizeof *x);                    \
            const __m256 d = _mm256_mul_ps(lm_half_high8(d_dwords), lm_y_scales8(&y[i]));                      \
            acc = _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lm_totals8(sumi))));                  \
        }                                                                                                      \
        float lanes[LM_KDOT_LANES];                                                                            \
        _mm256_storeu_ps(lanes, acc);                                                                          \
        for (; i < nb; i++)                                                                                    \
            lanes[i % LM_KDOT_LANES] += lm_half_f32(x[i].d) * y[i].d * lm_hsum_i32_8(t##_block(&x[i], &y[i])); \
        *s = lm_kdot_sum_lanes(lanes);                                                                         \
    }

/* The 2..4-column driver (avx2.h) over <t>_block_n(x, y[ncol], ncol,
 * sumi[ncol]), each weight block unpacked once: 8 blocks at a time, d * isum
 * per block into lane i % 8 with the reference's roundings, then the lanes'
 * sum times factor. XD8(t, x) gives the d of 8 consecutive blocks as a
 * __m256, XD1(t, x) one block's as a float (a type whose d is not an fp16
 * field brings its own). */
#define LM_DEFINE_X4_DRIVER(t, name, XD8, XD1, factor)                                                              \
    LM_X4_INLINE void name(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,    \
                           size_t y_stride) {                                                                       \
        const block_##t *x = vx;                                                                                    \
        LM_X4_COLUMNS(block_q8_K, y, vy, y_stride, ncol);                                                           \
        const int64_t nb = n / QK_K;                                                                                \
        __m256 acc[NCOL];                                                                                           \
        for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();                                                \
        int64_t i = 0;                                                                                              \
        for (; i + 8 <= nb; i += 8) {                                                                               \
            __m256i sumi[NCOL][8];                                                                                  \
            for (int b = 0; b < 8; b++) {                                                                           \
                const block_q8_K *yb[NCOL];                                                                         \
                for (int c = 0; c < ncol; c++) yb[c] = &y[c][i + b];                                                \
                __m256i bsumi[NCOL];                                                                                \
                t##_block_n(&x[i + b], yb, ncol, bsumi);                                                            \
                for (int c = 0; c < ncol; c++) sumi[c][b] = bsumi[c];                                               \
            }                                                                                                       \
            const __m256 xd = XD8(t, &x[i]);                                                                        \
            for (int c = 0; c < ncol; c++) {                                                                        \
                const __m256 d = _mm256_mul_ps(xd, lm_y_scales8(&y[c][i]));                                         \
                acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(d, _mm256_cvtepi32_ps(lm_totals8(sumi[c]))));          \
            }                                                                                                       \
        }                                                                                                           \
        float lanes[NCOL][LM_KDOT_LANES];                                                                           \
        for (int c = 0; c < ncol; c++) _mm256_storeu_ps(lanes[c], acc[c]);                                          \
        for (; i < nb; i++) {                                                                                       \
            const block_q8_K *yb[NCOL];                                                                             \
            for (int c = 0; c < ncol; c++) yb[c] = &y[c][i];                                                        \
            __m256i bsumi[NCOL];                                                                                    \
            t##_block_n(&x[i], yb, ncol, bsumi);                                                                    \
            const float xd = XD1(t, &x[i]);                                                                         \
            for (int c = 0; c < ncol; c++) lanes[c][i % LM_KDOT_LANES] += xd * y[c][i].d * lm_hsum_i32_8(bsumi[c]); \
        }                                                                                                           \
        for (int c = 0; c < ncol; c++) s[c * s_stride] = (factor) * lm_kdot_sum_lanes(lanes[c]);                    \
    }

/* d is the block's last field: its dword is gathered from 2 bytes earlier */
#define LM_X4_HALF_D8(t, x) lm_half_high8(lm_gather8((const char *)&(x)->d - 2, (int)sizeof *(x)))
#define LM_X4_HALF_D1(t, x) lm_half_f32((x)->d)

/* the two to four columns of LM_DEFINE_VEC_DOT_SCALES_ONLY */
#define LM_DEFINE_X4_SCALES_ONLY(t)                                    \
    LM_DEFINE_X4_DRIVER(t, x4_##t, LM_X4_HALF_D8, LM_X4_HALF_D1, 1.0f) \
    LM_DEFINE_X4(t, x4_##t)

/* The driver Q2_K, Q4_K and Q5_K share (d and dmin adjacent fp16 fields):
 * 8 super-blocks at a time with exact integer totals, then the scale terms;
 * like ggml's ggml_vec_dot_q{2,4,5}_K_q8_K (AVX2 branch) */
#define LM_DEFINE_VEC_DOT_K4(t)                                                                  \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {            \
        const block_##t *x = vx;                                                                 \
        const block_q8_K *y = vy;                                                                \
        const int64_t nb = n / QK_K;                                                             \
        __m256 acc = _mm256_setzero_ps();                                                        \
        int64_t i = 0;                                                                           \
        for (; i + 8 <= nb; i += 8) {                                                            \
            __m256i sumi[8];                                                                     \
            __m128i summ[8];                                                                     \
            for (int b = 0; b < 8; b++) sumi[b] = t##_block(&x[i + b], &y[i + b], &summ[b]);     \
            __m256 d, dmin;                                                                      \
            scales8(lm_gather8(&x[i].d, (int)sizeof *x), lm_y_scales8(&y[i]), &d, &dmin);        \
            acc = _mm256_add_ps(acc, lm_terms8(lm_totals8(sumi), lm_totals8_x4(summ), d, dmin)); \
        }                                                                                        \
        float lanes[LM_KDOT_LANES];                                                              \
        _mm256_storeu_ps(lanes, acc);                                                            \
        for (; i < nb; i++) {                                                                    \
            __m128i summ;                                                                        \
            const __m256i sumi = t##_block(&x[i], &y[i], &summ);                                 \
            lanes[i % LM_KDOT_LANES] += lm_block_term(sumi, summ, &x[i].d, y[i].d);              \
        }                                                                                        \
        *s = lm_kdot_sum_lanes(lanes);                                                           \
    }

/* The 2..4-column driver (avx2.h) of LM_DEFINE_VEC_DOT_K4 over
 * <t>_block_n(x, y[ncol], ncol, sumi[ncol], summ[ncol]), each weight block
 * unpacked once: per column the single-column driver's float operations in
 * its order. */
#define LM_DEFINE_X4_K4(t)                                                                                         \
    LM_X4_INLINE void x4_##t(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                             size_t y_stride) {                                                                    \
        const block_##t *x = vx;                                                                                   \
        LM_X4_COLUMNS(block_q8_K, y, vy, y_stride, ncol);                                                          \
        const int64_t nb = n / QK_K;                                                                               \
        __m256 acc[NCOL];                                                                                          \
        for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();                                               \
        int64_t i = 0;                                                                                             \
        for (; i + 8 <= nb; i += 8) {                                                                              \
            __m256i sumi[NCOL][8];                                                                                 \
            __m128i summ[NCOL][8];                                                                                 \
            for (int b = 0; b < 8; b++) {                                                                          \
                const block_q8_K *yb[NCOL];                                                                        \
                for (int c = 0; c < ncol; c++) yb[c] = &y[c][i + b];                                               \
                __m256i bsumi[NCOL];                                                                               \
                __m128i bsumm[NCOL];                                                                               \
                t##_block_n(&x[i + b], yb, ncol, bsumi, bsumm);                                                    \
                for (int c = 0; c < ncol; c++) {                                                                   \
                    sumi[c][b] = bsumi[c];                                                                         \
                    summ[c][b] = bsumm[c];                                                                         \
                }                                                                                                  \
            }                                                                                                      \
            __m256 xd, xdmin;                                                                                      \
            lm_half_pairs8(lm_gather8(&x[i].d, (int)sizeof *x), &xd, &xdmin);                                      \
            for (int c = 0; c < ncol; c++) {                                                                       \
                const __m256 yd = lm_y_scales8(&y[c][i]);                                                          \
                const __m256 term = lm_terms8(lm_totals8(sumi[c]), lm_totals8_x4(summ[c]), _mm256_mul_ps(xd, yd),  \
                                              _mm256_mul_ps(xdmin, yd));                                           \
                acc[c] = _mm256_add_ps(acc[c], term);                                                              \
            }                                                                                                      \
        }                                                                                                          \
        float lanes[NCOL][LM_KDOT_LANES];                                                                          \
        for (int c = 0; c < ncol; c++) _mm256_storeu_ps(lanes[c], acc[c]);                                         \
        for (; i < nb; i++) {                                                                                      \
            const block_q8_K *yb[NCOL];                                                                            \
            for (int c = 0; c < ncol; c++) yb[c] = &y[c][i];                                                       \
            __m256i bsumi[NCOL];                                                                                   \
            __m128i bsumm[NCOL];                                                                                   \
            t##_block_n(&x[i], yb, ncol, bsumi, bsumm);                                                            \
            for (int c = 0; c < ncol; c++)                                                                         \
                lanes[c][i % LM_KDOT_LANES] += lm_block_term(bsumi[c], bsumm[c], &x[i].d, y[c][i].d);              \
        }                                                                                                          \
        for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_kdot_sum_lanes(lanes[c]);                              \
    }                                                                                                              \
    LM_DEFINE_X4(t, x4_##t)

#endif /* LAMINA_KQUANT_AVX2_H */
