/* q2_K_avx2.c — AVX2 dot of Q2_K weights with Q8_K activations (the scheme
 * of kquant_avx2.h). */
#include "quants/kernels.h"
#include "quants/q2_K.h"
#include "simd/x86/kquant_avx2.h"

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
