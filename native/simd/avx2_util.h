/* avx2_util.h — small AVX2 building blocks shared by the *_avx2.c kernels.
 * Only included by files compiled with -mavx2 -mfma -mf16c. */
#ifndef LAMINA_AVX2_UTIL_H
#define LAMINA_AVX2_UTIL_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "blocks.h"
#include "block_dot_k.h"

/* sum of the 8 floats of x */
static inline float lm_hsum_f32_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* sum of the 8 int32 of x */
static inline int lm_hsum_i32_8(__m256i x) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(r);
}

/* 32 bytes of 4-bit values (low nibbles of 16 bytes, then high nibbles) -> 32 bytes in 0..15,
 * in ggml's order: byte j < 16 is qs[j] & 15, byte j >= 16 is qs[j-16] >> 4 */
static inline __m256i lm_bytes_from_nibbles_32(const uint8_t *qs) {
    const __m128i tmp = _mm_loadu_si128((const __m128i *)qs);
    const __m256i bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes);
}

/* 32 bits -> 32 bytes, each 0xFF where the bit is set, else 0 */
static inline __m256i lm_bytes_from_bits_32(const uint8_t *bits) {
    uint32_t x32;
    memcpy(&x32, bits, sizeof(uint32_t));
    const __m256i shuf_mask = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf_mask);
    const __m256i bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* pairwise sums of int16 -> 8 floats */
static inline __m256 lm_sum_i16_pairs_f32(__m256i x) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), x));
}

/* unsigned bytes ax times signed bytes sy, summed in groups of 4 -> 8 floats */
static inline __m256 lm_mul_sum_us8_pairs_f32(__m256i ax, __m256i sy) {
    return lm_sum_i16_pairs_f32(_mm256_maddubs_epi16(ax, sy));
}

/* signed bytes x times signed bytes y, summed in groups of 4 -> 8 floats */
static inline __m256 lm_mul_sum_i8_pairs_f32(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);   /* |x| as unsigned */
    const __m256i sy = _mm256_sign_epi8(y, x);   /* y with x's sign */
    return lm_mul_sum_us8_pairs_f32(ax, sy);
}

static inline float lm_half_f32(lm_half h) { return _cvtsh_ss(h); }

/* ---------------------------------------------- legacy blocks as 32 bytes */
/* the weights of one block as the bytes the dots multiply: signed for Q4_0/Q5_0
 * (against Q8_0 through lm_mul_sum_i8_pairs_f32), unsigned for Q4_1 */
static inline __m256i lm_q4_0_bytes(const block_q4_0 *x) {
    return _mm256_sub_epi8(lm_bytes_from_nibbles_32(x->qs), _mm256_set1_epi8(8));
}

/* q5_0 value = (nibble | hbit << 4) - 16: with the bit set that is the nibble,
 * without it nibble - 16, i.e. the nibble with the top four bits of the byte set */
static inline __m256i lm_q5_0_bytes(const block_q5_0 *x) {
    const __m256i hi = _mm256_andnot_si256(lm_bytes_from_bits_32(x->qh), _mm256_set1_epi8((char)0xF0));
    return _mm256_or_si256(lm_bytes_from_nibbles_32(x->qs), hi);
}

/* ------------------------------------------- k-quant integer helpers */
/* Shared by kquants_avx2.c (one activation column) and matmul_x4_avx2.c (four):
 * the *_block_n functions unpack a weight super-block once and dot it with
 * ncol Q8_K blocks; all their sums are exact integers, so every column gets
 * the same bits whatever ncol is. */

/* shuffle_epi8 mask repeating int16 element e of each 128-bit half */
static inline __m256i lm_pick16(int e) { return _mm256_set1_epi16((short)(0x0100 + 0x0202 * e)); }

/* mask giving int16 element e to the low half and e + 1 to the high half */
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

/* lane b = total of the 8 lanes of v[b] */
static inline __m256i lm_totals8(const __m256i v[8]) {
    const __m256i t03 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i t47 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(t03, t47, 0x20), _mm256_permute2x128_si256(t03, t47, 0x31));
}

/* lane b = total of the 4 lanes of v[b] */
static inline __m256i lm_totals8_x4(const __m128i v[8]) {
    const __m128i t03 = _mm_hadd_epi32(_mm_hadd_epi32(v[0], v[1]), _mm_hadd_epi32(v[2], v[3]));
    const __m128i t47 = _mm_hadd_epi32(_mm_hadd_epi32(v[4], v[5]), _mm_hadd_epi32(v[6], v[7]));
    return _mm256_set_m128i(t47, t03);
}

/* ------------------------------------------- k-quant float helpers */
/* the dwords at `first` and every `stride` bytes after it, 8 of them */
static inline __m256i lm_gather8(const void *first, int stride) {
    const __m256i idx = _mm256_setr_epi32(0, stride, 2 * stride, 3 * stride, 4 * stride, 5 * stride, 6 * stride,
                                          7 * stride);
    return _mm256_i32gather_epi32((const int *)first, idx, 1);
}

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

/* ------------------------------------------------------ Q4_K super-block */
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

/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c], 4 lanes of
 * min_j * bsums_j in summ[c] */
static inline void lm_q4_K_block_n(const block_q4_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi,
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
            sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(_mm256_madd_epi16(sc_lo, plo),
                                                                 _mm256_madd_epi16(sc_hi, phi)));
        }
    }
}

/* ------------------------------------------------------ Q6_K super-block */
/* for each column c < ncol: 8 lanes of scale_j * dot_j in sumi[c]; the -32
 * is taken from bsums (as ggml's AVX branch does) instead of a second maddubs */
static inline void lm_q6_K_block_n(const block_q6_K *x, const block_q8_K *const *y, int ncol, __m256i *sumi) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C);
    const __m256i m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char)0xC0);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
    for (int c = 0; c < ncol; c++) {
        const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[c]->bsums));
        sumi[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 5));
    }
    __m256i sc[2];
    lm_split_scales(sc16, &sc[0], &sc[1]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        /* the four quarters of 32: top bits 2k..2k+1 of qh moved to bits 4..5 */
        const __m256i q6[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m03), 4)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m0c), 2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2)),
        };
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i sck = _mm256_shuffle_epi8(sc[h], lm_pick16_pair(2 * k));
#pragma GCC unroll 4
            for (int c = 0; c < ncol; c++) {
                const int8_t *q8 = y[c]->qs + 128 * h + 32 * k;
                const __m256i p = _mm256_maddubs_epi16(q6[k], _mm256_loadu_si256((const __m256i *)q8));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(sck, p));
            }
        }
    }
}

#endif
