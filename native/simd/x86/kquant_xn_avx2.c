/* kquant_xn_avx2.c — prefill's many-column kernels of Q4_K, Q5_K and Q6_K:
 * one weight row by up to LM_XN_MAX Q8_K columns that matmul.c interleaved
 * eight to a vector (type_traits.h, LM_XNK_*). Built like the 32-weight
 * formats' files: plain AVX2, and with the VNNI byte dot (LM_SIMD_FN).
 *
 * A lane is a column. A super-block's weights are unpacked once into 256
 * unsigned bytes; 4 of them, broadcast to every lane, meet 4 bytes of each of
 * 8 columns in one vpdpbusd, so a sub-block's dot lands in each column's lane
 * with no reduction across lanes, and is scaled there in int32 (exact, as in
 * the other kernels). The mins (Q4_K, Q5_K) and Q6_K's -32 come from the
 * columns' bsums, as in kquant_avx2.h. The float part is the one-column
 * kernel's, term by term: d * isum [- dmin * imin] with the reference's
 * roundings into lane i % 8 of the block index, those lanes summed in order
 * (lm_kdot_sum_lanes), so every column has the bits of lm_vec_dot_<t>_avx2. */
#include "simd/x86/kquant_xn_avx2.h"
#include "quants/kernels.h"
#include "quants/kquant.h"
#include "quants/q4_K.h"
#include "quants/q5_K.h"
#include "quants/q6_K.h"

/* ------------------------------------------------------ Q4_K and Q5_K */
/* super-block x's 256 weights as unsigned bytes in element order, with its
 * 8 sub-block scales and mins */
static inline void q4_K_unpack(const block_q4_K *x, uint8_t *w, int *sc, int *m) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        _mm256_storeu_si256((__m256i *)(w + 64 * j), _mm256_and_si256(bits, m4));
        _mm256_storeu_si256((__m256i *)(w + 64 * j + 32), _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4));
    }
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    for (int j = 0; j < 8; j++) {
        sc[j] = lm_kdot_byte(sm, j);
        m[j] = lm_kdot_byte(sm, 8 + j);
    }
}

/* the same for Q5_K: the fifth bit of element 64j + l is bit 2j of qh[l],
 * of element 64j + 32 + l bit 2j + 1 */
static inline void q5_K_unpack(const block_q5_K *x, uint8_t *w, int *sc, int *m) {
    const __m256i m4 = _mm256_set1_epi8(0xF), bit4 = _mm256_set1_epi8(0x10);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)x->qh);
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * j));
        const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * j), 4), bit4);
        const __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * j + 1), 4), bit4);
        _mm256_storeu_si256((__m256i *)(w + 64 * j), _mm256_or_si256(_mm256_and_si256(bits, m4), h0));
        _mm256_storeu_si256((__m256i *)(w + 64 * j + 32),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1));
    }
    uint32_t sm[4];
    lm_kdot_q4_K_scales(x->scales, sm);
    for (int j = 0; j < 8; j++) {
        sc[j] = lm_kdot_byte(sm, j);
        m[j] = lm_kdot_byte(sm, 8 + j);
    }
}

/* one row of a type with mins: per block, isum = sum_j sc_j * dot_j and imin
 * = sum_j m_j * (bsums 2j + 2j+1), then (d*yd) * isum - (dmin*yd) * imin */
#define XNK_DEFINE_MINS(t)                                                                                             \
    void LM_SIMD_FN(lm_vec_dot_xn_##t)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy, \
                                       size_t group_bytes) {                                                           \
        const block_##t *x = vx;                                                                                       \
        xnk_acc acc;                                                                                                   \
        xnk_acc_init(&acc, ncol);                                                                                      \
        for (int64_t i = 0; i < n / QK_K; i++) {                                                                       \
            _Alignas(32) uint8_t w[QK_K];                                                                              \
            int sc[8], m[8];                                                                                           \
            t##_unpack(&x[i], w, sc, m);                                                                               \
            const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d)), xdmin = _mm256_set1_ps(lm_half_f32(x[i].dmin));     \
            const __m256i *y[XNK_GROUPS];                                                                              \
            __m256i isum[XNK_GROUPS];                                                                                  \
            xnk_blocks(vy, group_bytes, acc.ngroups, i, y, isum);                                                      \
            for (int j = 0; j < 8; j++) xnk_sub_dots(w, 32 * j, 32, sc[j], y, acc.ngroups, isum);                      \
            for (int g = 0; g < acc.ngroups; g++) {                                                                    \
                const __m256i imin = xnk_bsum_dot((const char *)y[g], m, m);                                           \
                xnk_acc_add(&acc, g, i, xnk_term_mins(xd, xdmin, xnk_yd(y[g]), isum[g], imin));                        \
            }                                                                                                          \
        }                                                                                                              \
        xnk_store(&acc, ncol, s, s_stride);                                                                            \
    }

XNK_DEFINE_MINS(q4_K)
XNK_DEFINE_MINS(q5_K)

/* ------------------------------------------------------ Q6_K */
/* super-block x's 256 weights as unsigned bytes q + 32 (0..63) in element
 * order: quarter k of half h (elements 128h + 32k ..) takes the low or high
 * nibbles of ql and bits 2k, 2k+1 of qh */
static inline void q6_K_unpack(const block_q6_K *x, uint8_t *w) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(0x3);
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        const __m256i lo[4] = { _mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4) };
        for (int k = 0; k < 4; k++) {
            const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3), 4);
            _mm256_storeu_si256((__m256i *)(w + 128 * h + 32 * k), _mm256_or_si256(lo[k], hi));
        }
    }
}

/* one row: per block, isum = sum_j sc_j * dot_j over the 16 sub-blocks of
 * 16, less 32 * sum_j sc_j * bsum_j, then (d*yd) * isum */
void LM_SIMD_FN(lm_vec_dot_xn_q6_K)(int64_t n, int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                                    size_t group_bytes) {
    const block_q6_K *x = vx;
    xnk_acc acc;
    xnk_acc_init(&acc, ncol);
    for (int64_t i = 0; i < n / QK_K; i++) {
        _Alignas(32) uint8_t w[QK_K];
        q6_K_unpack(&x[i], w);
        int sc_even[8], sc_odd[8];
        for (int p = 0; p < 8; p++) {
            sc_even[p] = x[i].scales[2 * p];
            sc_odd[p] = x[i].scales[2 * p + 1];
        }
        const __m256 xd = _mm256_set1_ps(lm_half_f32(x[i].d));
        const __m256i *y[XNK_GROUPS];
        __m256i isum[XNK_GROUPS];
        xnk_blocks(vy, group_bytes, acc.ngroups, i, y, isum);
        for (int g = 0; g < acc.ngroups; g++)
            isum[g] =
                _mm256_sub_epi32(isum[g], _mm256_slli_epi32(xnk_bsum_dot((const char *)y[g], sc_even, sc_odd), 5));
        for (int j = 0; j < 16; j++) xnk_sub_dots(w, 16 * j, 16, x[i].scales[j], y, acc.ngroups, isum);
        for (int g = 0; g < acc.ngroups; g++) xnk_acc_add(&acc, g, i, xnk_term(xd, xnk_yd(y[g]), isum[g]));
    }
    xnk_store(&acc, ncol, s, s_stride);
}
