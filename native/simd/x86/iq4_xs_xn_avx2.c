/* iq4_xs_xn_avx2.c — prefill's many-column kernel of IQ4_XS: one weight row
 * by up to LM_XN_MAX Q8_K columns interleaved eight to a vector
 * (kquant_xn_avx2.h), built as plain AVX2 and with the VNNI byte dot. Every
 * column gets the exact super-block total isum and the float order of
 * lm_vec_dot_iq4_xs_avx2 (iq4_xs_avx2.c): (d * yd) * isum into lane i % 8,
 * the lanes summed in order, so its bits.
 *
 * The levels are signed. With VNNI they enter as level + 128 (1..241:
 * vpdpbusd does not saturate) and the 128 * scale * (sum of the sub-block's
 * activations) that adds comes back out from the bsums; plain AVX2 takes
 * |level| against the activation with the level's sign, since level + 128
 * would overflow vpmaddubsw's int16 pair sums. */
#include "quants/iq4.h"
#include "quants/kernels.h"
#include "simd/x86/kquant_xn_avx2.h"

#if defined(LM_VNNI)
#define IQ4_XS_BIASED 1
#else
#define IQ4_XS_BIASED 0
#endif

/* super-block x's 256 weights in element order: the levels as signed bytes,
 * or level + 128 where IQ4_XS_BIASED; and its 8 sub-block scales */
static inline void iq4_xs_unpack(const block_iq4_xs *x, uint8_t *w, int *sc) {
    __m128i levels = _mm_loadu_si128((const __m128i *)lm_kvalues_iq4nl);
    if (IQ4_XS_BIASED) levels = _mm_xor_si128(levels, _mm_set1_epi8((char)0x80));
    const __m256i table = _mm256_broadcastsi128_si256(levels);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const __m256i idx = lm_bytes_from_nibbles_32(x->qs + 16 * ib);
        _mm256_storeu_si256((__m256i *)(w + 32 * ib), _mm256_shuffle_epi8(table, idx));
        sc[ib] = lm_iq4_xs_scale(x, ib);
    }
}

/* isum[g] += scale * (the dot of sub-block ib's 32 weights with group g's
 * columns), the weights broadcast once for all the groups */
static inline __attribute__((always_inline)) void iq4_xs_sub_dots(const uint8_t *w, int ib, int scale,
                                                                  const __m256i *const *y, int ngroups, __m256i *isum) {
    __m256i wq[8];
#if !IQ4_XS_BIASED
    __m256i aq[8];
#endif
    for (int q = 0; q < 8; q++) {
        int32_t quad;
        memcpy(&quad, w + 32 * ib + 4 * q, 4);
        wq[q] = _mm256_set1_epi32(quad);
#if !IQ4_XS_BIASED
        aq[q] = _mm256_sign_epi8(wq[q], wq[q]);
#endif
    }
    const __m256i sc = _mm256_set1_epi32(scale);
    for (int g = 0; g < ngroups; g++) {
        const __m256i *yq = y[g] + 8 * ib;
        __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
        for (int q = 0; q < 8; q += 2) {
            const __m256i y0 = _mm256_loadu_si256(&yq[q]), y1 = _mm256_loadu_si256(&yq[q + 1]);
#if IQ4_XS_BIASED
            even = xnk_accumulate(even, wq[q], y0);
            odd = xnk_accumulate(odd, wq[q + 1], y1);
#else
            even = xnk_accumulate(even, aq[q], _mm256_sign_epi8(y0, wq[q]));
            odd = xnk_accumulate(odd, aq[q + 1], _mm256_sign_epi8(y1, wq[q + 1]));
#endif
        }
        isum[g] = _mm256_add_epi32(isum[g], _mm256_mullo_epi32(_mm256_add_epi32(even, odd), sc));
    }
}

void LM_SIMD_FN(lm_vec_dot_xn_iq4_xs)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                                      size_t group_bytes) {
    const block_iq4_xs *x = vx;
    xnk_acc acc;
    xnk_acc_init(&acc, ncol);
    for (int64_t i = 0; i < n / QK_K; i++) {
        _Alignas(32) uint8_t w[QK_K];
        int sc[QK_K / 32];
        iq4_xs_unpack(&x[i], w, sc);
        const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d));
        const __m256i *y[XNK_GROUPS];
        __m256i isum[XNK_GROUPS];
        xnk_blocks(vy, group_bytes, acc.ngroups, i, y, isum);
#if IQ4_XS_BIASED
        /* sub-block ib covers bsums 2ib and 2ib + 1 */
        for (int g = 0; g < acc.ngroups; g++)
            isum[g] = _mm256_sub_epi32(isum[g], _mm256_slli_epi32(xnk_bsum_dot((const char *)y[g], sc, sc), 7));
#endif
        for (int ib = 0; ib < QK_K / 32; ib++) iq4_xs_sub_dots(w, ib, sc[ib], y, acc.ngroups, isum);
        for (int g = 0; g < acc.ngroups; g++) xnk_acc_add(&acc, g, i, xnk_term(xd, xnk_yd(y[g]), isum[g]));
    }
    xnk_store(&acc, ncol, s, s_stride);
}
