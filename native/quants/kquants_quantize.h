/* kquants_quantize.h — the row driver shared by kquants_quantize.c and
 * kquants_quantize_k4.c.
 *
 * ggml_quantize_chunk semantics: without an imatrix every block goes through
 * the reference quantizer (ggml quantizes all rows as one long row, which is
 * the same thing block by block); with one, block i of every row is weighted
 * by imatrix[256*i .. 256*i+255]. A file defines <t>_block_ref(x, y) and
 * <t>_block_imatrix(x, y, qw), then expands LM_KQUANT_DEFINE_QUANTIZE(<t>).
 */
#ifndef LAMINA_KQUANTS_QUANTIZE_H
#define LAMINA_KQUANTS_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"

#define LM_KQUANT_DEFINE_QUANTIZE(t)                                                                   \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row,              \
                           const float *imatrix) {                                                     \
        block_##t *y = (block_##t *)dst;                                                               \
        const int64_t nb = n_per_row / QK_K;                                                           \
        for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {                                        \
            for (int64_t i = 0; i < nb; ++i, ++y) {                                                    \
                if (imatrix) t##_block_imatrix(src + QK_K * i, y, imatrix + QK_K * i);                 \
                else t##_block_ref(src + QK_K * i, y);                                                 \
            }                                                                                          \
        }                                                                                              \
        return (size_t)(nrows * nb) * sizeof(block_##t);                                               \
    }

#endif
