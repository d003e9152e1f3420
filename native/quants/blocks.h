/* blocks.h — GGUF/ggml block layouts, shared by the C core and the CUDA backend.
 *
 * Every struct here is the exact on-disk layout of one block of a ggml type;
 * a static assert pins each size so a padding surprise can never corrupt a file.
 * Also here: the half/bfloat conversions and ggml's rounding, which every
 * format needs. They are LM_HD (host + device) so CUDA compiles the same
 * arithmetic the CPU tests check. The math of each type is in quants/<type>.h,
 * the list of types in quants/types.h.
 */
#ifndef LAMINA_BLOCKS_H
#define LAMINA_BLOCKS_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define LM_HD __host__ __device__ static inline
#else
#define LM_HD static inline
#endif

#if defined(__cplusplus)
#define LM_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define LM_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

typedef uint16_t lm_half;   /* IEEE binary16 bits */
typedef uint16_t lm_bf16;   /* bfloat16 bits */

/* ggml type ids (GGUF). Never invent one: files must load in llama.cpp. */
enum {
    LM_TYPE_F32 = 0,
    LM_TYPE_F16 = 1,
    LM_TYPE_Q4_0 = 2,
    LM_TYPE_Q4_1 = 3,
    LM_TYPE_Q5_0 = 6,
    LM_TYPE_Q5_1 = 7,
    LM_TYPE_Q8_0 = 8,
    LM_TYPE_Q8_1 = 9,
    LM_TYPE_Q2_K = 10,
    LM_TYPE_Q3_K = 11,
    LM_TYPE_Q4_K = 12,
    LM_TYPE_Q5_K = 13,
    LM_TYPE_Q6_K = 14,
    LM_TYPE_Q8_K = 15,
    LM_TYPE_IQ2_XXS = 16,
    LM_TYPE_IQ2_XS = 17,
    LM_TYPE_IQ3_XXS = 18,
    LM_TYPE_IQ1_S = 19,
    LM_TYPE_IQ4_NL = 20,
    LM_TYPE_IQ3_S = 21,
    LM_TYPE_IQ2_S = 22,
    LM_TYPE_IQ4_XS = 23,
    LM_TYPE_I32 = 26,
    LM_TYPE_IQ1_M = 29,
    LM_TYPE_BF16 = 30,
    LM_TYPE_TQ1_0 = 34,
    LM_TYPE_TQ2_0 = 35,
    LM_TYPE_MXFP4 = 39,
    LM_TYPE_NVFP4 = 40,
    LM_TYPE_COUNT = 43
};

/* ---------------------------------------------------------------- legacy */
#define QK4_0 32
typedef struct {
    lm_half d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
LM_STATIC_ASSERT(sizeof(block_q4_0) == 2 + QK4_0 / 2, "block_q4_0 size");

#define QK4_1 32
typedef struct {
    lm_half d;
    lm_half m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
LM_STATIC_ASSERT(sizeof(block_q4_1) == 4 + QK4_1 / 2, "block_q4_1 size");

#define QK5_0 32
typedef struct {
    lm_half d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
LM_STATIC_ASSERT(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "block_q5_0 size");

#define QK5_1 32
typedef struct {
    lm_half d;
    lm_half m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
LM_STATIC_ASSERT(sizeof(block_q5_1) == 4 + 4 + QK5_1 / 2, "block_q5_1 size");

#define QK8_0 32
typedef struct {
    lm_half d;
    int8_t qs[QK8_0];
} block_q8_0;
LM_STATIC_ASSERT(sizeof(block_q8_0) == 2 + QK8_0, "block_q8_0 size");

#define QK8_1 32
/* s = d * sum(qs): lets the dot with a q4_1/q5_1 block fold in the min term */
typedef struct {
    lm_half d;
    lm_half s;
    int8_t qs[QK8_1];
} block_q8_1;
LM_STATIC_ASSERT(sizeof(block_q8_1) == 4 + QK8_1, "block_q8_1 size");

/* -------------------------------------------------------------- k-quants */
/* 256-weight super-blocks; sub-block scales are quantized against d/dmin */
#define QK_K 256
#define K_SCALE_SIZE 12

/* 16 sub-blocks of 16: 4-bit scale | 4-bit min per sub-block, 2-bit quants */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    lm_half d;
    lm_half dmin;
} block_q2_K;
LM_STATIC_ASSERT(sizeof(block_q2_K) == 2 * 2 + QK_K / 16 + QK_K / 4, "block_q2_K size");

/* 16 sub-blocks of 16: 6-bit scales packed in 12 bytes, 2 low bits + 1 high bit */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    lm_half d;
} block_q3_K;
LM_STATIC_ASSERT(sizeof(block_q3_K) == 2 + QK_K / 4 + QK_K / 8 + 12, "block_q3_K size");

/* 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes, 4-bit quants */
typedef struct {
    lm_half d;
    lm_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
LM_STATIC_ASSERT(sizeof(block_q4_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "block_q4_K size");

typedef struct {
    lm_half d;
    lm_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
LM_STATIC_ASSERT(sizeof(block_q5_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8, "block_q5_K size");

/* 16 sub-blocks of 16: int8 scales, 4 low bits + 2 high bits */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    lm_half d;
} block_q6_K;
LM_STATIC_ASSERT(sizeof(block_q6_K) == 2 + QK_K / 16 + 3 * QK_K / 4, "block_q6_K size");

/* activation partner of the k-quants; bsums = sums of 16-groups for the min terms */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
LM_STATIC_ASSERT(sizeof(block_q8_K) == 4 + QK_K + QK_K / 16 * 2, "block_q8_K size");

/* ------------------------------------------------------ non-linear 4-bit */
#define QK4_NL 32
typedef struct {
    lm_half d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;
LM_STATIC_ASSERT(sizeof(block_iq4_nl) == 2 + QK4_NL / 2, "block_iq4_nl size");

/* 8 sub-blocks of 32 with 6-bit scales split into low nibbles and high bit pairs */
typedef struct {
    lm_half d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
LM_STATIC_ASSERT(sizeof(block_iq4_xs) == 2 + 2 + QK_K / 64 + QK_K / 2, "block_iq4_xs size");

/* ----------------------------------------- lattice i-quants (IQ1..IQ3) */
/* 256-weight super-blocks dotted with Q8_K. Each group of 8 (IQ3: 4)
 * weights is an index into a grid of magnitude patterns (quants/iq_grids.h),
 * with the signs stored apart; sub-blocks of 32 weights carry 3- or 4-bit
 * scales. The math is in quants/iq2.h, iq3.h, iq1.h. */

/* IQ2_XXS, 2.0625 bits/weight: per 32 weights two 32-bit words, the first
 * four 8-bit iq2xxs_grid indices, the second four 7-bit ksigns indices and a
 * 4-bit scale in the top bits */
typedef struct {
    lm_half d;
    uint16_t qs[QK_K / 8];
} block_iq2_xxs;
LM_STATIC_ASSERT(sizeof(block_iq2_xxs) == 2 + QK_K / 4, "block_iq2_xxs size");

/* IQ2_XS, 2.3125 bits/weight: per 8 weights a 9-bit iq2xs_grid index and a
 * 7-bit ksigns index; two 4-bit scales per 32 weights (one per 16) */
typedef struct {
    lm_half d;
    uint16_t qs[QK_K / 8];
    uint8_t scales[QK_K / 32];
} block_iq2_xs;
LM_STATIC_ASSERT(sizeof(block_iq2_xs) == 2 + QK_K / 4 + QK_K / 32, "block_iq2_xs size");

/* IQ2_S, 2.5625 bits/weight: qs holds the low 8 bits of the 10-bit
 * iq2s_grid indices (first QK_K/8 bytes) then one explicit sign byte per 8
 * weights; qh the top 2 bits of each index, 4 per byte; scales as IQ2_XS */
typedef struct {
    lm_half d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t scales[QK_K / 32];
} block_iq2_s;
LM_STATIC_ASSERT(sizeof(block_iq2_s) == 2 + QK_K / 4 + QK_K / 16, "block_iq2_s size");

/* IQ3_XXS, 3.0625 bits/weight: QK_K/4 8-bit iq3xxs_grid indices (4 weights
 * each), then per 32 weights a 32-bit word of four 7-bit ksigns indices and a
 * 4-bit scale */
typedef struct {
    lm_half d;
    uint8_t qs[3 * QK_K / 8];
} block_iq3_xxs;
LM_STATIC_ASSERT(sizeof(block_iq3_xxs) == 2 + 3 * (QK_K / 8), "block_iq3_xxs size");

/* IQ3_S, 3.4375 bits/weight: 9-bit iq3s_grid indices (low 8 bits in qs, the
 * 9th in qh, 8 per byte), explicit sign bytes, a 4-bit scale per 32 weights */
#define IQ3S_N_SCALE (QK_K / 64)
typedef struct {
    lm_half d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[IQ3S_N_SCALE];
} block_iq3_s;
LM_STATIC_ASSERT(sizeof(block_iq3_s) == 2 + 13 * (QK_K / 32) + IQ3S_N_SCALE, "block_iq3_s size");

/* IQ1_S, 1.5625 bits/weight: 11-bit iq1s_grid indices (low 8 bits in qs);
 * per 32 weights a 16-bit qh with the four top-3-bit fields, a 3-bit scale
 * and the sign of the +-1/8 shift every weight of the 32 gets */
typedef struct {
    lm_half d;
    uint8_t qs[QK_K / 8];
    uint16_t qh[QK_K / 32];
} block_iq1_s;
LM_STATIC_ASSERT(sizeof(block_iq1_s) == 2 + QK_K / 8 + QK_K / 16, "block_iq1_s size");

/* IQ1_M, 1.75 bits/weight: 11-bit iq1s_grid indices (qs + a 3-bit field and
 * a shift sign per 8 weights in qh nibbles), 3-bit scales per 16 weights;
 * no d field: the f16 super-block scale is the top nibbles of the four
 * 16-bit words of scales */
typedef struct {
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32];
} block_iq1_m;
LM_STATIC_ASSERT(sizeof(block_iq1_m) == QK_K / 8 + QK_K / 16 + QK_K / 32, "block_iq1_m size");

/* ------------------------------------------------ ternary (BitNet b1.58) */
/* 256 weights in {-1, 0, 1} times one f16 scale, dotted with Q8_K. TQ1_0
 * packs five trits per byte (base 3, scaled to 0..255) in qs and four per
 * byte in qh: 1.6875 bits per weight. */
typedef struct {
    uint8_t qs[(QK_K - 4 * QK_K / 64) / 5];
    uint8_t qh[QK_K / 64];
    lm_half d;
} block_tq1_0;
LM_STATIC_ASSERT(sizeof(block_tq1_0) == 2 + (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64, "block_tq1_0 size");

/* TQ2_0: four 2-bit fields per byte holding trit + 1 (0..2), 2.0625 bits per weight */
typedef struct {
    uint8_t qs[QK_K / 4];
    lm_half d;
} block_tq2_0;
LM_STATIC_ASSERT(sizeof(block_tq2_0) == 2 + QK_K / 4, "block_tq2_0 size");

/* ------------------------------------------------------------------ MXFP4 */
/* OCP microscaling FP4: 32 E2M1 values sharing one E8M0 (power of two)
 * scale byte, dotted with Q8_0 */
#define QK_MXFP4 32
typedef struct {
    uint8_t e;
    uint8_t qs[QK_MXFP4 / 2];
} block_mxfp4;
LM_STATIC_ASSERT(sizeof(block_mxfp4) == 1 + QK_MXFP4 / 2, "block_mxfp4 size");

/* ------------------------------------------------------------------ NVFP4 */
/* NVIDIA's FP4: 64 E2M1 values in four sub-blocks of 16, each with its own
 * UE4M3 (unsigned 4-bit exponent, 3-bit mantissa) scale byte; dotted with
 * two Q8_0 blocks. Sub-block s packs its 16 values in qs[8s .. 8s+7]: byte j
 * holds value j (low nibble) and value j+8 (high nibble). */
#define QK_NVFP4 64
#define QK_NVFP4_SUB 16
typedef struct {
    uint8_t d[QK_NVFP4 / QK_NVFP4_SUB];
    uint8_t qs[QK_NVFP4 / 2];
} block_nvfp4;
LM_STATIC_ASSERT(sizeof(block_nvfp4) == QK_NVFP4 / QK_NVFP4_SUB + QK_NVFP4 / 2, "block_nvfp4 size");

/* --------------------------------------------------- half / bf16 (scalar) */
LM_HD float lm_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
LM_HD uint32_t lm_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Exact binary16 -> binary32, subnormals included (same values as F16C). */
LM_HD float lm_half_to_f32(lm_half h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    /* normals: shift exponent/mantissa into place and rescale by 2^-112 */
    const float exp_scale = lm_bits_to_f32(0x7800000u);
    const float normalized = lm_bits_to_f32((two_w >> 4) + (0xE0u << 23)) * exp_scale;
    /* subnormals: build 0.5 + m/2^24 in float and subtract the 0.5 */
    const float denormalized = lm_bits_to_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t denorm_cutoff = 1u << 27;
    const uint32_t r = sign | (two_w < denorm_cutoff ? lm_f32_to_bits(denormalized) : lm_f32_to_bits(normalized));
    return lm_bits_to_f32(r);
}

/* binary32 -> binary16 with round-to-nearest-even, the rounding F16C and
 * ggml's scalar fallback both use, so quantized scales are bit-identical. */
LM_HD lm_half lm_f32_to_half(float f) {
    const float scale_to_inf = lm_bits_to_f32(0x77800000u);
    const float scale_to_zero = lm_bits_to_f32(0x08800000u);
    float absf = lm_bits_to_f32(lm_f32_to_bits(f) & 0x7fffffffu);
    float base = (absf * scale_to_inf) * scale_to_zero;
    const uint32_t w = lm_f32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xff000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = lm_bits_to_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = lm_f32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
    const uint32_t mantissa_bits = bits & 0x00000fffu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (lm_half)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

LM_HD float lm_bf16_to_f32(lm_bf16 h) { return lm_bits_to_f32((uint32_t)h << 16); }

/* round-to-nearest-even; NaN stays a quiet NaN (ggml_compute_fp32_to_bf16) */
LM_HD lm_bf16 lm_f32_to_bf16(float f) {
    const uint32_t u = lm_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (lm_bf16)((u >> 16) | 64);
    return (lm_bf16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

/* round to nearest by the 1.5*2^23 trick (ggml's nearest_int): ties go to
 * even, and only |x| <= 2^22 gives a meaningful result, as in ggml */
LM_HD int lm_nearest_int(float x) {
    const float v = x + 12582912.f;
    int i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#endif /* LAMINA_BLOCKS_H */
