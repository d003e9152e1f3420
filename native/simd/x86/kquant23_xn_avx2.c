/* kquant23_xn_avx2.c — prefill's many-column kernels of Q2_K and Q3_K: one
 * weight row by up to LM_XN_MAX Q8_K columns interleaved eight to a vector
 * (kquant_xn_avx2.h), built as plain AVX2 and with the VNNI byte dot.
 *
 * Each column gets the integers of the scalar reference (quants/q2_K.h,
 * q3_K.h) exactly and its float term with the reference's roundings into
 * lane i % 8 of the block index, the lanes summed in order: the bits of
 * lm_vec_dot_<t>_ref and so of lm_vec_dot_<t>_avx2 (kquant_avx2.h).
 *
 * Q2_K's weights (0..3) are multiplied by their 4-bit sub-block scale while
 * unpacking (at most 45, still one unsigned byte), so a super-block is one
 * run of 64 byte dots per column group, with no scaling per sub-block; its
 * mins come from the bsums. Q3_K's signed scales cannot be folded into
 * unsigned bytes: its weights enter as q + 4 (0..7), each 16-weight
 * sub-block's dot is scaled in int32, and the 4 * scale * bsum the bias adds
 * is taken back out from the bsums (as Q6_K's 32). */
#include "quants/kernels.h"
#include "quants/q2_K.h"
#include "quants/q3_K.h"
#include "simd/x86/kquant_avx2.h"
#include "simd/x86/kquant_xn_avx2.h"

/* isum[g] += the dot of 4 * nquads weight bytes w with group g's columns'
 * bytes from the same place (the weights broadcast once for all the groups) */
static inline __attribute__((always_inline)) void xnk_run_dots(const uint8_t *w, int nquads, const __m256i *const *y,
                                                               int ngroups, __m256i *isum) {
    for (int q0 = 0; q0 < nquads; q0 += 8) {
        __m256i wq[8];
        for (int q = 0; q < 8; q++) {
            int32_t quad;
            memcpy(&quad, w + 4 * (q0 + q), 4);
            wq[q] = _mm256_set1_epi32(quad);
        }
        for (int g = 0; g < ngroups; g++) {
            __m256i even = isum[g], odd = _mm256_setzero_si256();
            for (int q = 0; q < 8; q += 2) {
                even = xnk_accumulate(even, wq[q], _mm256_loadu_si256(&y[g][q0 + q]));
                odd = xnk_accumulate(odd, wq[q + 1], _mm256_loadu_si256(&y[g][q0 + q + 1]));
            }
            isum[g] = _mm256_add_epi32(even, odd);
        }
    }
}

/* ------------------------------------------------------ Q2_K */
/* super-block x's 256 weights times their sub-block scales (0..45) as bytes
 * in element order, with its 16 mins: 32 weights 128h + 32k .. are bits 2k,
 * 2k+1 of qs[32h ..], sub-blocks 8h + 2k (the first 16) and 8h + 2k + 1.
 * A 16-bit multiply scales both bytes of a lane: their products stay below
 * 256, so none carries into its neighbour. */
static inline void q2_K_unpack_scaled(const block_q2_K *x, uint8_t *w, int *m) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i packed = _mm_loadu_si128((const __m128i *)x->scales);
    __m256i sc[2];
    lm_split_scales(_mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0xF))), &sc[0], &sc[1]);
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
        for (int k = 0; k < 4; k++) {
            const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i sck = _mm256_shuffle_epi8(sc[h], lm_pick16_pair(2 * k));
            _mm256_storeu_si256((__m256i *)(w + 128 * h + 32 * k), _mm256_mullo_epi16(q2, sck));
        }
    }
    for (int j = 0; j < QK_K / 16; j++) m[j] = x->scales[j] >> 4;
}

/* one row: per block isum = sum_j sc_j * dot_j, imin = sum_j m_j * bsum_j,
 * then (d*yd) * isum - (dmin*yd) * imin */
void LM_SIMD_FN(lm_vec_dot_xn_q2_K)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                                    size_t group_bytes) {
    const block_q2_K *x = vx;
    xnk_acc acc;
    xnk_acc_init(&acc, ncol);
    for (int64_t i = 0; i < n / QK_K; i++) {
        _Alignas(32) uint8_t w[QK_K];
        int m[QK_K / 16], m_even[8], m_odd[8];
        q2_K_unpack_scaled(&x[i], w, m);
        for (int p = 0; p < 8; p++) {
            m_even[p] = m[2 * p];
            m_odd[p] = m[2 * p + 1];
        }
        const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d)), xdmin = _mm256_set1_ps(lm_half_f32(x[i].dmin));
        const __m256i *y[XNK_GROUPS];
        __m256i isum[XNK_GROUPS];
        xnk_blocks(vy, group_bytes, acc.ngroups, i, y, isum);
        xnk_run_dots(w, QK_K / 4, y, acc.ngroups, isum);
        for (int g = 0; g < acc.ngroups; g++) {
            const __m256i imin = xnk_bsum_dot((const char *)y[g], m_even, m_odd);
            xnk_acc_add(&acc, g, i, xnk_term_mins(xd, xdmin, xnk_yd(y[g]), isum[g], imin));
        }
    }
    xnk_store(&acc, ncol, s, s_stride);
}

/* ------------------------------------------------------ Q3_K */
/* super-block x's 256 weights as unsigned bytes q + 4 (0..7) in element
 * order: the 2 low bits as Q2_K's, bit 4h + k of hmask[l] the third */
static inline void q3_K_unpack(const block_q3_K *x, uint8_t *w) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hbits = _mm256_loadu_si256((const __m256i *)x->hmask);
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
        for (int k = 0; k < 4; k++) {
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            _mm256_storeu_si256((__m256i *)(w + 128 * h + 32 * k), _mm256_or_si256(lo, move_bit(hbits, 4 * h + k, 2)));
        }
    }
}

/* one row: per block isum = sum_j sc_j * dot_j over the 16 sub-blocks, less
 * 4 * sum_j sc_j * bsum_j, then (d*yd) * isum */
void LM_SIMD_FN(lm_vec_dot_xn_q3_K)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                                    size_t group_bytes) {
    const block_q3_K *x = vx;
    xnk_acc acc;
    xnk_acc_init(&acc, ncol);
    for (int64_t i = 0; i < n / QK_K; i++) {
        _Alignas(32) uint8_t w[QK_K];
        q3_K_unpack(&x[i], w);
        uint32_t biased[4];
        lm_kdot_q3_K_scales(x[i].scales, biased);
        int sc[QK_K / 16], sc_even[8], sc_odd[8];
        for (int j = 0; j < QK_K / 16; j++) sc[j] = lm_kdot_byte(biased, j) - 32;
        for (int p = 0; p < 8; p++) {
            sc_even[p] = sc[2 * p];
            sc_odd[p] = sc[2 * p + 1];
        }
        const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d));
        const __m256i *y[XNK_GROUPS];
        __m256i isum[XNK_GROUPS];
        xnk_blocks(vy, group_bytes, acc.ngroups, i, y, isum);
        for (int g = 0; g < acc.ngroups; g++)
            isum[g] =
                _mm256_sub_epi32(isum[g], _mm256_slli_epi32(xnk_bsum_dot((const char *)y[g], sc_even, sc_odd), 2));
        for (int j = 0; j < QK_K / 16; j++) xnk_sub_dots(w, 16 * j, 16, sc[j], y, acc.ngroups, isum);
        for (int g = 0; g < acc.ngroups; g++) xnk_acc_add(&acc, g, i, xnk_term(xd, xnk_yd(y[g]), isum[g]));
    }
    xnk_store(&acc, ncol, s, s_stride);
}
