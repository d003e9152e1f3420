/* kquants_avx2.c — AVX2 dots of the k-quants with Q8_K activations.
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
#include <stddef.h>

#include "simd/avx2_util.h"

#include "block_dot_k.h"
#include "type_kernels.h"

/* ------------------------------------------------------ integer helpers */
/* (the helpers shared with matmul_x4_avx2.c are in avx2_util.h) */

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

/* ----------------------------------------------------------------- Q2_K */
/* 8 lanes of scale_j * dot_j, and in *summ 8 lanes of min_j * bsums_j */
static inline __m256i q2_K_block(const block_q2_K *x, const block_q8_K *y, __m256i *summ) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0xF);
    const __m128i packed = _mm_loadu_si128((const __m128i *)x->scales);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
    *summ = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)y->bsums));

    __m256i sc[2];
    lm_split_scales(_mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)), &sc[0], &sc[1]);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        const int8_t *q8 = y->qs + 128 * c;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            __m256i p = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(q8 + 32 * k)));
            p = _mm256_madd_epi16(_mm256_shuffle_epi8(sc[c], lm_pick16_pair(2 * k)), p);
            sumi = _mm256_add_epi32(sumi, p);
        }
    }
    return sumi;
}

/* like ggml's ggml_vec_dot_q2_K_q8_K (AVX2 branch) */
void lm_vec_dot_q2_K_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i sumi[8], summ[8];
        for (int b = 0; b < 8; b++) sumi[b] = q2_K_block(&x[i + b], &y[i + b], &summ[b]);
        __m256 d, dmin;
        scales8(lm_gather8(&x[i].d, (int)sizeof *x), lm_y_scales8(&y[i]), &d, &dmin);
        acc = _mm256_add_ps(acc, lm_terms8(lm_totals8(sumi), lm_totals8(summ), d, dmin));
    }
    float lanes[LM_KDOT_LANES];
    _mm256_storeu_ps(lanes, acc);
    for (; i < nb; i++) {
        __m256i summ;
        const __m256i sumi = q2_K_block(&x[i], &y[i], &summ);
        lanes[i % LM_KDOT_LANES] += lm_block_term(sumi, lm_add_halves(summ), &x[i].d, y[i].d);
    }
    *s = lm_kdot_sum_lanes(lanes);
}

/* ----------------------------------------------------------------- Q3_K */
/* 8 lanes of scale_j * dot_j. The weights enter as q + 4 in 0..7 (low bits |
 * high bit << 2); the 4 * scale_j * bsums_j that adds is subtracted up front. */
static inline __m256i q3_K_block(const block_q3_K *x, const block_q8_K *y) {
    const __m256i m3 = _mm256_set1_epi8(3);
    uint32_t biased[4];
    lm_kdot_q3_K_scales(x->scales, biased);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(lm_words128(biased), _mm_set1_epi8(32)));
    const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y->bsums));
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 2));

    __m256i sc[2];
    lm_split_scales(sc16, &sc[0], &sc[1]);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->hmask);
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        const int8_t *q8 = y->qs + 128 * c;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i q3 = _mm256_or_si256(lo, move_bit(hbits, 4 * c + k, 2));
            __m256i p = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(q8 + 32 * k)));
            p = _mm256_madd_epi16(_mm256_shuffle_epi8(sc[c], lm_pick16_pair(2 * k)), p);
            sumi = _mm256_add_epi32(sumi, p);
        }
    }
    return sumi;
}

/* The driver Q3_K and Q6_K share (scales only, the offsets come from bsums
 * inside the block functions): 8 super-blocks at a time with exact integer
 * totals, then d; like ggml's ggml_vec_dot_q3_K_q8_K / ggml_vec_dot_q6_K_q8_K
 * (AVX2 branch). d is the last field of both blocks: its dword is gathered
 * from 2 bytes earlier so the load stays inside the block. */
#define LM_DEFINE_VEC_DOT_SCALES_ONLY(t)                                                               \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                  \
        const block_##t *x = vx;                                                                       \
        const block_q8_K *y = vy;                                                                      \
        const int64_t nb = n / QK_K;                                                                   \
        __m256 acc = _mm256_setzero_ps();                                                              \
        int64_t i = 0;                                                                                 \
        for (; i + 8 <= nb; i += 8) {                                                                  \
            __m256i sumi[8];                                                                           \
            for (int b = 0; b < 8; b++) sumi[b] = t##_block(&x[i + b], &y[i + b]);                     \
            const __m256i d_dwords = lm_gather8((const char *)&x[i].d - 2, (int)sizeof *x);            \
            const __m256 d = _mm256_mul_ps(lm_half_high8(d_dwords), lm_y_scales8(&y[i]));              \
            acc = _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lm_totals8(sumi))));          \
        }                                                                                              \
        float lanes[LM_KDOT_LANES];                                                                    \
        _mm256_storeu_ps(lanes, acc);                                                                  \
        for (; i < nb; i++)                                                                            \
            lanes[i % LM_KDOT_LANES] += lm_half_f32(x[i].d) * y[i].d * lm_hsum_i32_8(t##_block(&x[i], &y[i])); \
        *s = lm_kdot_sum_lanes(lanes);                                                                 \
    }

LM_DEFINE_VEC_DOT_SCALES_ONLY(q3_K)

/* ------------------------------------------------------------ Q4_K/Q5_K */
/* The driver Q4_K and Q5_K share (their blocks differ only in the 5th bit):
 * 8 super-blocks at a time with exact integer totals, then the scale terms;
 * like ggml's ggml_vec_dot_q4_K_q8_K / ggml_vec_dot_q5_K_q8_K (AVX2 branch) */
#define LM_DEFINE_VEC_DOT_K4(t)                                                                        \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) {                  \
        const block_##t *x = vx;                                                                       \
        const block_q8_K *y = vy;                                                                      \
        const int64_t nb = n / QK_K;                                                                   \
        __m256 acc = _mm256_setzero_ps();                                                              \
        int64_t i = 0;                                                                                 \
        for (; i + 8 <= nb; i += 8) {                                                                  \
            __m256i sumi[8];                                                                           \
            __m128i summ[8];                                                                           \
            for (int b = 0; b < 8; b++) sumi[b] = t##_block(&x[i + b], &y[i + b], &summ[b]);           \
            __m256 d, dmin;                                                                            \
            scales8(lm_gather8(&x[i].d, (int)sizeof *x), lm_y_scales8(&y[i]), &d, &dmin);              \
            acc = _mm256_add_ps(acc, lm_terms8(lm_totals8(sumi), lm_totals8_x4(summ), d, dmin));       \
        }                                                                                              \
        float lanes[LM_KDOT_LANES];                                                                    \
        _mm256_storeu_ps(lanes, acc);                                                                  \
        for (; i < nb; i++) {                                                                          \
            __m128i summ;                                                                              \
            const __m256i sumi = t##_block(&x[i], &y[i], &summ);                                       \
            lanes[i % LM_KDOT_LANES] += lm_block_term(sumi, summ, &x[i].d, y[i].d);                    \
        }                                                                                              \
        *s = lm_kdot_sum_lanes(lanes);                                                                 \
    }

/* the shared prologue: returns the scales (int16, both halves 0..7) and in
 * *summ 4 lanes of min_j times the bsums under sub-block j */
static inline __m256i q4_K_scales_and_mins(const uint8_t *packed, const block_q8_K *y, __m128i *summ) {
    __m256i sc;
    __m128i mins;
    lm_q4_K_scales_mins(packed, &sc, &mins);
    *summ = lm_q4_K_summ(mins, y);
    return sc;
}

static inline __m256i q4_K_block(const block_q4_K *x, const block_q8_K *y, __m128i *summ) {
    __m256i sumi;
    lm_q4_K_block_n(x, &y, 1, &sumi, summ);
    return sumi;
}

/* Q4_K plus bit j of qh as bit 4 of sub-block j's weights */
static inline __m256i q5_K_block(const block_q5_K *x, const block_q8_K *y, __m128i *summ) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i sc = q4_K_scales_and_mins(x->scales, y, summ);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->qh);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        const int8_t *q8 = y->qs + 64 * j;
        const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), move_bit(hbits, 2 * j, 4));
        const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                                           move_bit(hbits, 2 * j + 1, 4));
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
        plo = _mm256_madd_epi16(_mm256_shuffle_epi8(sc, lm_pick16(2 * j)), plo);
        phi = _mm256_madd_epi16(_mm256_shuffle_epi8(sc, lm_pick16(2 * j + 1)), phi);
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
    }
    return sumi;
}

LM_DEFINE_VEC_DOT_K4(q4_K)
LM_DEFINE_VEC_DOT_K4(q5_K)

/* ----------------------------------------------------------------- Q6_K */
static inline __m256i q6_K_block(const block_q6_K *x, const block_q8_K *y) {
    __m256i sumi;
    lm_q6_K_block_n(x, &y, 1, &sumi);
    return sumi;
}

LM_DEFINE_VEC_DOT_SCALES_ONLY(q6_K)
