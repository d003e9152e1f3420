/* q4_K_avx2.c — AVX2 dots of Q4_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h): one activation column, and two to four. */
#include "quants/kernels.h"
#include "quants/q4_K.h"
#include "simd/x86/kquant_avx2.h"

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c], 4 lanes of
 * min_j * bsums_j in summ[c] */
static inline void q4_K_block_n(const block_q4_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi,
                                __m128i *summ) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256i sc;
    __m128i mins;
    lm_q4_K_scales_mins(x->scales, &sc, &mins);
    for (int c = 0; c < ncol; c++) {
        summ[c] = lm_q4_K_summ(mins, y[c]);
        sumi[c] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        const __m256i lo = _mm256_and_si256(bits, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        const __m256i sc_lo = _mm256_shuffle_epi8(sc, lm_pick16(2 * j));
        const __m256i sc_hi = _mm256_shuffle_epi8(sc, lm_pick16(2 * j + 1));
#pragma GCC unroll 4
        for (int c = 0; c < ncol; c++) {
            const int8_t *q8 = y[c]->qs + 64 * j;
            const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
            const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            sumi[c] = _mm256_add_epi32(sumi[c],
                                       _mm256_add_epi32(_mm256_madd_epi16(sc_lo, plo), _mm256_madd_epi16(sc_hi, phi)));
        }
    }
}

static inline __m256i q4_K_block(const block_q4_K *x, const block_q8_K *y, __m128i *summ) {
    __m256i sumi;
    q4_K_block_n(x, &y, 1, &sumi, summ);
    return sumi;
}

LM_DEFINE_VEC_DOT_K4(q4_K)

/* two to four columns (avx2.h): LM_DEFINE_VEC_DOT_K4 per column */
LM_X4_INLINE void x4_q4_K(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                          size_t y_stride) {
    const block_q4_K *x = vx;
    LM_X4_COLUMNS(block_q8_K, y, vy, y_stride, ncol);
    const int64_t nb = n / QK_K;
    __m256 acc[NCOL];
    for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i sumi[NCOL][8];
        __m128i summ[NCOL][8];
        for (int b = 0; b < 8; b++) {
            const block_q8_K *yb[NCOL];
            for (int c = 0; c < ncol; c++) yb[c] = &y[c][i + b];
            __m256i bsumi[NCOL];
            __m128i bsumm[NCOL];
            q4_K_block_n(&x[i + b], yb, ncol, bsumi, bsumm);
            for (int c = 0; c < ncol; c++) {
                sumi[c][b] = bsumi[c];
                summ[c][b] = bsumm[c];
            }
        }
        __m256 xd, xdmin;
        lm_half_pairs8(lm_gather8(&x[i].d, (int)sizeof *x), &xd, &xdmin);
        for (int c = 0; c < ncol; c++) {
            const __m256 yd = lm_y_scales8(&y[c][i]);
            const __m256 t =
                lm_terms8(lm_totals8(sumi[c]), lm_totals8_x4(summ[c]), _mm256_mul_ps(xd, yd), _mm256_mul_ps(xdmin, yd));
            acc[c] = _mm256_add_ps(acc[c], t);
        }
    }
    float lanes[NCOL][LM_KDOT_LANES];
    for (int c = 0; c < ncol; c++) _mm256_storeu_ps(lanes[c], acc[c]);
    for (; i < nb; i++) {
        const block_q8_K *yb[NCOL];
        for (int c = 0; c < ncol; c++) yb[c] = &y[c][i];
        __m256i bsumi[NCOL];
        __m128i bsumm[NCOL];
        q4_K_block_n(&x[i], yb, ncol, bsumi, bsumm);
        for (int c = 0; c < ncol; c++)
            lanes[c][i % LM_KDOT_LANES] += lm_block_term(bsumi[c], bsumm[c], &x[i].d, y[c][i].d);
    }
    for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_kdot_sum_lanes(lanes[c]);
}

LM_DEFINE_X4(q4_K, x4_q4_K)
