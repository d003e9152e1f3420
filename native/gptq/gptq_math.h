/* gptq_math.h — the arithmetic of one GPTQ INT4 weight, written once for the
 * CPU and the CUDA backend (LM_HD), so both read the packing the same way.
 *
 * Packing (native/include/lamina_gptq.h, runtime/gptq/pack.py):
 *   qweight int32 [n_in/8][n_out]      nibble j of qweight[r][o]: level of input 8r+j, output o
 *   qzeros  int32 [n_groups][n_out/8]  nibble j of qzeros[g][c]: zero of output 8c+j ("v2", as is)
 *   scales  f16   [n_groups][n_out]
 *   g_idx   int32 [n_in] or NULL       group of input i, else i / group_size
 *
 *   W[o][i] = scales[g][o] * (level[o][i] - zero[g][o])
 *
 * The weight is formed as the CPU reference (gptq_int4.c) and numpy
 * (GPTQPacked.dequantize) form it: level and zero to float, subtract, then
 * one rounded product with the f16 scale widened to float. */
#ifndef LAMINA_GPTQ_MATH_H
#define LAMINA_GPTQ_MATH_H

#include "quants/blocks.h"

#define LM_GPTQ_PER_WORD 8   /* 4-bit values per 32-bit word */

/* nibble j (0..7) of a packed word */
LM_HD int lm_gptq_nibble(uint32_t word, int j) { return (int)((word >> (4 * j)) & 15u); }

/* inputs per group: the whole row when group_size is -1 or 0 */
LM_HD int64_t lm_gptq_eff_group_size(int32_t group_size, int32_t n_in) { return group_size > 0 ? group_size : n_in; }

/* group of input i */
LM_HD int64_t lm_gptq_group_of(const int32_t *g_idx, int64_t group_size, int64_t i) {
    return g_idx ? (int64_t)g_idx[i] : i / group_size;
}

/* zero point of output o in group g */
LM_HD int lm_gptq_zero(const int32_t *qzeros, int64_t n_out, int64_t g, int64_t o) {
    return lm_gptq_nibble((uint32_t)qzeros[g * (n_out / LM_GPTQ_PER_WORD) + o / LM_GPTQ_PER_WORD],
                          (int)(o % LM_GPTQ_PER_WORD));
}

/* one weight from its level, the float scale and the zero point */
LM_HD float lm_gptq_weight(float scale, int level, int zero) { return scale * ((float)level - (float)zero); }

/* W[o][i], straight from the four packed arrays */
LM_HD float lm_gptq_dequant_one(const int32_t *qweight, const uint16_t *scales, const int32_t *qzeros,
                                const int32_t *g_idx, int64_t n_out, int64_t group_size, int64_t o, int64_t i) {
    const int64_t g = lm_gptq_group_of(g_idx, group_size, i);
    const uint32_t word = (uint32_t)qweight[(i / LM_GPTQ_PER_WORD) * n_out + o];
    return lm_gptq_weight(lm_half_to_f32(scales[g * n_out + o]), lm_gptq_nibble(word, (int)(i % LM_GPTQ_PER_WORD)),
                          lm_gptq_zero(qzeros, n_out, g, o));
}

#endif /* LAMINA_GPTQ_MATH_H */
