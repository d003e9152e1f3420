/* iq_lattice_avx2.c — AVX2 dots of the lattice i-quants (IQ1_S, IQ1_M,
 * IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) with Q8_K activations: one column,
 * and two to four. Results are bit-identical to lm_vec_dot_<t>_ref.
 *
 * Each 32-weight sub-block is unpacked into three vectors (<t>_sub):
 *   g   the unsigned magnitude of each weight (grid values gathered with
 *       scalar loads of the table entries, as ggml's AVX2 kernels do),
 *   s   a byte whose sign is the weight's (+-1 from the sign bits; for IQ1
 *       the signed weight 8 * level +- 1 itself, never 0),
 *   sc  the sub-block's scale as int16, low 128 bits for weights 0..15 and
 *       high for 16..31 (after a maddubs, int16 lanes 0..7 and 8..15).
 * Per column: maddubs(g, sign(q8, s)) is g * |q8| with the weight's sign in
 * int16 pairs (at most 2 * 62 * 127, no saturation), madd with sc widens them
 * to int32. All sums are exact integers, so each column's block total is the
 * scalar lm_kdot_<t>'s and the float part repeats the reference's roundings:
 * d = d_x * y.d, term d * isum into lane i % 8, the lanes' sum times the
 * type's factor (quants/iq_lattice.h). */
#include "quants/kernels.h"
#include "simd/x86/avx2.h"
#include "simd/x86/kquant_avx2.h"

/* 32 sign bits (bit k for weight k) -> bytes -1 where set, +1 where clear */
static inline __m256i iq_sign_bytes(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
    return _mm256_or_si256(set, _mm256_set1_epi8(1));
}

/* int16 scales: a for weights 0..15, b for 16..31 */
static inline __m256i iq_scales16(int a, int b) {
    return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

static inline __m256i iq_grid4x64(uint64_t g0, uint64_t g1, uint64_t g2, uint64_t g3) {
    return _mm256_set_epi64x((long long)g3, (long long)g2, (long long)g1, (long long)g0);
}

/* ---------------------------------------------------------- unpacking */

static inline void iq2_xxs_sub(const block_iq2_xxs *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    const uint32_t idx = lm_iq2_xxs_word(x, ib, 0), ss = lm_iq2_xxs_word(x, ib, 1);
    *g = iq_grid4x64(lm_iq2xxs_grid[idx & 0xFF], lm_iq2xxs_grid[(idx >> 8) & 0xFF], lm_iq2xxs_grid[(idx >> 16) & 0xFF],
                     lm_iq2xxs_grid[idx >> 24]);
    uint32_t bits = 0;
    for (int l = 0; l < 4; l++) bits |= (uint32_t)lm_ksigns_iq2xs[(ss >> (7 * l)) & 127] << (8 * l);
    *s = iq_sign_bytes(bits);
    const int ls = (int)(2 * (ss >> 28) + 1);
    *sc = iq_scales16(ls, ls);
}

static inline void iq2_xs_sub(const block_iq2_xs *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    const uint16_t *q = x->qs + 4 * ib;
    *g = iq_grid4x64(lm_iq2xs_grid[q[0] & 511], lm_iq2xs_grid[q[1] & 511], lm_iq2xs_grid[q[2] & 511],
                     lm_iq2xs_grid[q[3] & 511]);
    uint32_t bits = 0;
    for (int l = 0; l < 4; l++) bits |= (uint32_t)lm_ksigns_iq2xs[q[l] >> 9] << (8 * l);
    *s = iq_sign_bytes(bits);
    *sc = iq_scales16(2 * (x->scales[ib] & 0x0F) + 1, 2 * (x->scales[ib] >> 4) + 1);
}

static inline void iq2_s_sub(const block_iq2_s *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    *g = iq_grid4x64(lm_iq2s_grid[lm_iq2_s_index(x, ib, 0)], lm_iq2s_grid[lm_iq2_s_index(x, ib, 1)],
                     lm_iq2s_grid[lm_iq2_s_index(x, ib, 2)], lm_iq2s_grid[lm_iq2_s_index(x, ib, 3)]);
    uint32_t bits;
    memcpy(&bits, x->qs + QK_K / 8 + 4 * ib, 4);
    *s = iq_sign_bytes(bits);
    *sc = iq_scales16(2 * (x->scales[ib] & 0x0F) + 1, 2 * (x->scales[ib] >> 4) + 1);
}

static inline void iq3_xxs_sub(const block_iq3_xxs *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    const uint8_t *q = x->qs + 8 * ib;
    *g = _mm256_setr_epi32((int)lm_iq3xxs_grid[q[0]], (int)lm_iq3xxs_grid[q[1]], (int)lm_iq3xxs_grid[q[2]],
                           (int)lm_iq3xxs_grid[q[3]], (int)lm_iq3xxs_grid[q[4]], (int)lm_iq3xxs_grid[q[5]],
                           (int)lm_iq3xxs_grid[q[6]], (int)lm_iq3xxs_grid[q[7]]);
    const uint32_t w = lm_iq3_xxs_word(x, ib);
    uint32_t bits = 0;
    for (int l = 0; l < 4; l++) bits |= (uint32_t)lm_ksigns_iq2xs[(w >> (7 * l)) & 127] << (8 * l);
    *s = iq_sign_bytes(bits);
    const int ls = (int)(2 * (w >> 28) + 1);
    *sc = iq_scales16(ls, ls);
}

static inline void iq3_s_sub(const block_iq3_s *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    int idx[8];
    for (int k = 0; k < 8; k++) idx[k] = lm_iq3_s_index(x, ib, k);
    *g = _mm256_setr_epi32((int)lm_iq3s_grid[idx[0]], (int)lm_iq3s_grid[idx[1]], (int)lm_iq3s_grid[idx[2]],
                           (int)lm_iq3s_grid[idx[3]], (int)lm_iq3s_grid[idx[4]], (int)lm_iq3s_grid[idx[5]],
                           (int)lm_iq3s_grid[idx[6]], (int)lm_iq3s_grid[idx[7]]);
    uint32_t bits;
    memcpy(&bits, x->signs + 4 * ib, 4);
    *s = iq_sign_bytes(bits);
    const int ls = lm_iq3_s_scale(x, ib);
    *sc = iq_scales16(ls, ls);
}

/* IQ1: the signed weights 8 * level + sign, levels -1/0/1 from iq1s_grid
 * (8 * level as sign(8, level)), sign +-1 broadcast over each group of 8 */
/* 8 bytes of +1 or -1 */
static inline long long iq1_bytes(int sign) { return sign < 0 ? -1LL : 0x0101010101010101LL; }

static inline void iq1_weights(uint64_t g0, uint64_t g1, uint64_t g2, uint64_t g3, const int sign[4], __m256i *g,
                               __m256i *s) {
    const __m256i level = iq_grid4x64(g0, g1, g2, g3);
    const __m256i shift =
        _mm256_setr_epi64x(iq1_bytes(sign[0]), iq1_bytes(sign[1]), iq1_bytes(sign[2]), iq1_bytes(sign[3]));
    *s = _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), level), shift);
    *g = _mm256_abs_epi8(*s);
}

static inline void iq1_s_sub(const block_iq1_s *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    const int sg = lm_iq1_s_sign(x, ib);
    const int sign[4] = { sg, sg, sg, sg };
    iq1_weights(lm_iq1s_grid[lm_iq1_s_index(x, ib, 0)], lm_iq1s_grid[lm_iq1_s_index(x, ib, 1)],
                lm_iq1s_grid[lm_iq1_s_index(x, ib, 2)], lm_iq1s_grid[lm_iq1_s_index(x, ib, 3)], sign, g, s);
    const int ls = lm_iq1_s_scale(x, ib);
    *sc = iq_scales16(ls, ls);
}

static inline void iq1_m_sub(const block_iq1_m *x, int ib, __m256i *g, __m256i *s, __m256i *sc) {
    const int sign[4] = { lm_iq1_m_sign(x, ib, 0), lm_iq1_m_sign(x, ib, 1), lm_iq1_m_sign(x, ib, 2),
                          lm_iq1_m_sign(x, ib, 3) };
    iq1_weights(lm_iq1s_grid[lm_iq1_m_index(x, ib, 0)], lm_iq1s_grid[lm_iq1_m_index(x, ib, 1)],
                lm_iq1s_grid[lm_iq1_m_index(x, ib, 2)], lm_iq1s_grid[lm_iq1_m_index(x, ib, 3)], sign, g, s);
    *sc = iq_scales16(lm_iq1_m_scale(x, ib, 0), lm_iq1_m_scale(x, ib, 1));
}

/* ------------------------------------------------------------ drivers */

/* for each column c < ncol: 8 int32 lanes totalling lm_kdot_<t>(x, y[c]) */
#define IQ_BLOCK_N(t)                                                                                         \
    static inline void t##_block_n(const block_##t *x, const block_q8_K *const *y, int ncol, __m256i *sumi) { \
        for (int c = 0; c < ncol; c++) sumi[c] = _mm256_setzero_si256();                                      \
        for (int ib = 0; ib < QK_K / 32; ib++) {                                                              \
            __m256i g, s, sc;                                                                                 \
            t##_sub(x, ib, &g, &s, &sc);                                                                      \
            for (int c = 0; c < ncol; c++) {                                                                  \
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 32 * ib));                 \
                const __m256i p16 = _mm256_maddubs_epi16(g, _mm256_sign_epi8(q8, s));                         \
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(p16, sc));                              \
            }                                                                                                 \
        }                                                                                                     \
    }

/* the d of 8 consecutive blocks, and of one (IQ1_M assembles its own) */
#define IQ_D8(t, x) iq_d8_##t(x)
#define IQ_D1(t, x) lm_iq_##t##_d(x)

/* one column and two to four, the k-quants' driver (kquant_avx2.h) with the
 * type's constant factor applied once to the sum */
#define IQ_DEFINE_DOTS(t, factor)                                                     \
    IQ_BLOCK_N(t)                                                                     \
    static inline __m256 iq_d8_##t(const block_##t *x) {                              \
        float d8[8];                                                                  \
        for (int b = 0; b < 8; b++) d8[b] = lm_iq_##t##_d(&x[b]);                     \
        return _mm256_loadu_ps(d8);                                                   \
    }                                                                                 \
    LM_DEFINE_X4_DRIVER(t, iq_dot_##t, IQ_D8, IQ_D1, factor)                          \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *vx, const void *vy) { \
        iq_dot_##t(n, 1, s, 0, vx, vy, 0);                                            \
    }                                                                                 \
    LM_DEFINE_X4(t, iq_dot_##t)

IQ_DEFINE_DOTS(iq2_xxs, LM_IQ_DOT_FACTOR_IQ2)
IQ_DEFINE_DOTS(iq2_xs, LM_IQ_DOT_FACTOR_IQ2)
IQ_DEFINE_DOTS(iq2_s, LM_IQ_DOT_FACTOR_IQ2)
IQ_DEFINE_DOTS(iq3_xxs, LM_IQ_DOT_FACTOR_IQ3_XXS)
IQ_DEFINE_DOTS(iq3_s, LM_IQ_DOT_FACTOR_IQ3_S)
IQ_DEFINE_DOTS(iq1_s, LM_IQ_DOT_FACTOR_IQ1)
IQ_DEFINE_DOTS(iq1_m, LM_IQ_DOT_FACTOR_IQ1)
