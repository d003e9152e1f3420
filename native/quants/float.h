/* float.h — F32, F16 and BF16 weights, one value per "block": reading value
 * i, for the CPU rows (float.c) and the CUDA mat-vec and dequantizer. */
#ifndef LAMINA_FLOAT_H
#define LAMINA_FLOAT_H

#include "quants/blocks.h"

LM_HD float lm_dequant1_f32(const float *b, int i) { return b[i]; }
LM_HD float lm_dequant1_f16(const lm_half *b, int i) { return lm_half_to_f32(b[i]); }
LM_HD float lm_dequant1_bf16(const lm_bf16 *b, int i) { return lm_bf16_to_f32(b[i]); }

#endif /* LAMINA_FLOAT_H */
