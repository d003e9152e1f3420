/* iq_lattice.c — the lattice i-quants on the CPU: rows to float and the scalar
 * reference dots (quants/iq1.h, iq2.h, iq3.h; ggml's dequantize_row_<t> and
 * ggml_vec_dot_<t>_q8_K_generic). The quantizers are quants/iq1_quantize.c,
 * iq2_quantize.c and iq3_quantize.c. */
#include "quants/kernels.h"

LM_DEFINE_DEQUANTIZE_ROW(iq2_xxs, block_iq2_xxs, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq2_xs, block_iq2_xs, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq2_s, block_iq2_s, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq3_xxs, block_iq3_xxs, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq3_s, block_iq3_s, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq1_s, block_iq1_s, QK_K)
LM_DEFINE_DEQUANTIZE_ROW(iq1_m, block_iq1_m, QK_K)

LM_IQ_DOT_REF(iq2_xxs, LM_IQ_DOT_FACTOR_IQ2)
LM_IQ_DOT_REF(iq2_xs, LM_IQ_DOT_FACTOR_IQ2)
LM_IQ_DOT_REF(iq2_s, LM_IQ_DOT_FACTOR_IQ2)
LM_IQ_DOT_REF(iq3_xxs, LM_IQ_DOT_FACTOR_IQ3_XXS)
LM_IQ_DOT_REF(iq3_s, LM_IQ_DOT_FACTOR_IQ3_S)
LM_IQ_DOT_REF(iq1_s, LM_IQ_DOT_FACTOR_IQ1)
LM_IQ_DOT_REF(iq1_m, LM_IQ_DOT_FACTOR_IQ1)
