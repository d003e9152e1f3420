/* kquants_dequant.c — Q2_K..Q6_K rows to float, bit-identical with ggml's
 * dequantize_row_<t> and gguf-py's numpy dequantizers (the per-block math is
 * in block_math_k.h). k is a multiple of QK_K, checked by the caller. */
#include "blocks.h"
#include "block_math_k.h"
#include "type_kernels.h"

#define LM_DEFINE_DEQUANTIZE_K(t)                                                                      \
    void lm_dequantize_row_##t(const void *x, float *y, int64_t k) {                                   \
        const block_##t *b = (const block_##t *)x;                                                     \
        for (int64_t i = 0; i < k / QK_K; ++i) lm_dequant_block_##t(b + i, y + QK_K * i);              \
    }

LM_DEFINE_DEQUANTIZE_K(q2_K)
LM_DEFINE_DEQUANTIZE_K(q3_K)
LM_DEFINE_DEQUANTIZE_K(q4_K)
LM_DEFINE_DEQUANTIZE_K(q5_K)
LM_DEFINE_DEQUANTIZE_K(q6_K)
