/* nvfp4_avx2.c — AVX2 dots of NVFP4 weights with Q8_0 activations: one
 * activation column, and two to four. Half an NVFP4 block (two sub-blocks of
 * 16) meets one Q8_0 block: its 16 bytes of nibbles index the doubled E2M1
 * values with one byte shuffle per nibble half (as MXFP4's do), the halves
 * interleaved into the Q8_0 order. The pair sums of the integer products
 * land in 8 float lanes, four per sub-block, so one FMA with the lanes'
 * scales (each sub-block's UE4M3 scale times dy) takes both sub-blocks.
 * Float sums in another order than the scalar reference's: tests compare by
 * NMSE. The few-column kernel is the one-column kernel's FMA chain per column
 * (the same bits). */
#include "quants/kernels.h"
#include "quants/nvfp4.h"
#include "simd/x86/avx2.h"

/* sub-blocks 2h and 2h+1 as 32 signed bytes (doubled values, -12..12), in
 * the order of their activations in Q8_0 block h: byte j of a sub-block's 8
 * holds its value j (low nibble) and j+8 (high) */
static inline __m256i nvfp4_half_bytes(const uint8_t *qs, __m128i values) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i q4 = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_shuffle_epi8(values, _mm_and_si128(q4, low4));
    const __m128i hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(q4, 4), low4));
    return _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
}

/* the four sub-block scales of a block, lm_ue4m3_to_f32_half's values (all
 * exact): (8 + m) * 2^(e - 11) built as float bits, m * 2^-10 for e = 0,
 * 0 for 0x7F */
static inline __m128 nvfp4_scales(const block_nvfp4 *x) {
    uint32_t w;
    memcpy(&w, x->d, sizeof w);
    const __m128i u = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)w));
    const __m128i e = _mm_and_si128(_mm_srli_epi32(u, 3), _mm_set1_epi32(0xF));
    const __m128i m = _mm_and_si128(u, _mm_set1_epi32(0x7));
    const __m128i normal =
        _mm_or_si128(_mm_slli_epi32(_mm_add_epi32(e, _mm_set1_epi32(119)), 23), _mm_slli_epi32(m, 20));
    const __m128 sub = _mm_mul_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(1.0f / 1024.0f));
    const __m128 is_sub = _mm_castsi128_ps(_mm_cmpeq_epi32(e, _mm_setzero_si128()));
    const __m128 v = _mm_blendv_ps(_mm_castsi128_ps(normal), sub, is_sub);
    return _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(u, _mm_set1_epi32(0x7F))), v);
}

/* the scales of sub-blocks 2h and 2h+1, four lanes each */
static inline __m256 nvfp4_half_scales(__m128 scales, int h) {
    const __m256i idx = h ? _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3) : _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(scales), idx);
}

void lm_vec_dot_nvfp4_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_nvfp4 *x = vx;
    const block_q8_0 *y = vy;
    const __m128i values = _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_NVFP4; i++) {
        const __m128 xs = nvfp4_scales(&x[i]);
        for (int h = 0; h < 2; h++) {
            const block_q8_0 *yb = &y[2 * i + h];
            const __m256 d = _mm256_mul_ps(nvfp4_half_scales(xs, h), _mm256_set1_ps(lm_half_f32(yb->d)));
            const __m256i qx = nvfp4_half_bytes(x[i].qs + 16 * h, values);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)yb->qs);
            acc = _mm256_fmadd_ps(d, lm_mul_sum_i8_pairs_f32(qx, qy), acc);
        }
    }
    *s = lm_hsum_f32_8(acc);
}

/* two to four columns (avx2.h): per column the one-column kernel's FMA
 * chain, dy read as a float (LM_X4_SCALES), the weights unpacked once */
LM_X4_INLINE void x4_nvfp4(int64_t n, const int ncol, float *s, size_t s_stride, const void *vx, const void *vy,
                           size_t y_stride) {
    const block_nvfp4 *x = vx;
    LM_X4_COLUMNS(block_q8_0, y, vy, y_stride, ncol);
    const int64_t nb = n / QK_NVFP4;
    LM_X4_SCALES(yd, y, 2 * nb, block_q8_0, ncol);
    const __m128i values = _mm_loadu_si128((const __m128i *)lm_kvalues_mxfp4);
    __m256 acc[NCOL];
    for (int c = 0; c < ncol; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m128 xs = nvfp4_scales(&x[i]);
        for (int h = 0; h < 2; h++) {
            const __m256 xd = nvfp4_half_scales(xs, h);
            const __m256i qx = nvfp4_half_bytes(x[i].qs + 16 * h, values);
            const __m256i ax = _mm256_sign_epi8(qx, qx);
            for (int c = 0; c < ncol; c++) {
                const __m256 d = _mm256_mul_ps(xd, _mm256_broadcast_ss(&yd[c][2 * i + h]));
                const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[c][2 * i + h].qs), qx);
                acc[c] = _mm256_fmadd_ps(d, lm_mul_sum_us8_pairs_f32(ax, sy), acc[c]);
            }
        }
    }
    for (int c = 0; c < ncol; c++) s[c * s_stride] = lm_hsum_f32_8(acc[c]);
}

LM_DEFINE_X4(nvfp4, x4_nvfp4)
