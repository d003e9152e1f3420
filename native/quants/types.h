/* types.h — the block types lamina implements, one line each.
 *
 * Everything per type that is not kernel code comes from LM_BLOCK_TYPES: the
 * kernel declarations (quants/kernels.h), the CPU traits table
 * (quants/type_traits.c), and the CUDA type table, kernel traits and
 * dispatch (cuda/wtypes.cuh, cuda/runtime.cu). A type's code, for type <t>:
 *
 *   quants/<t>.h             its block math, C and CUDA (LM_HD): one weight
 *                            dequantized (lm_dequant1_<t>), the integer dot of a
 *                            block with its partner's, and how a CUDA warp
 *                            splits that dot (LMC_PARTS_<T>, lmc_ints_<t>,
 *                            lmc_term_<t>: cuda/matmul.cu's mmvq_kernel)
 *   quants/<t>.c             CPU: quantizer, row dequantizer, scalar reference dot
 *   simd/x86/<t>_avx2.c      AVX2 dot (and the two-to-four-column one where X4 is 1)
 *
 * F32, F16 and BF16 share quants/float.{h,c} and simd/x86/float_avx2.c, IQ4_NL
 * and IQ4_XS quants/iq4.{h,c} and simd/x86/iq4_{nl,xs}_avx2.c; the lattice i-quants
 * are grouped by family the same way (iq1, iq2, iq3) over one table header,
 * quants/iq_grids.h.
 *
 * X(ID, t, qk, block, PARTNER, KIND, FROM_F32, X4, QUANTIZE):
 *   ID        the ggml type id is LM_TYPE_<ID> (quants/blocks.h)
 *   t         the name in function names and in lm_type_name
 *   qk        values per block
 *   block     the block struct (quants/blocks.h); its size is the block's bytes
 *   PARTNER   the type its dot reads activations in (LM_TYPE_<PARTNER>)
 *   KIND      FLOAT  a float weight type: conversions, scalar and AVX2 dots,
 *                    CUDA mat-vec over the values (cuda/matmul.cu)
 *             QUANT  a quantized weight type: lm_dequantize_row_<t>,
 *                    lm_vec_dot_<t>_ref and _avx2, CUDA mat-vec and dequantizer
 *                    (and lm_quantize_<t> where QUANTIZE is 1)
 *             ACT    an activation format only: lm_dequantize_row_<t>
 *   FROM_F32  1 where activations are quantized into it (lm_from_float_<t>)
 *   X4        1 where lm_vec_dot_x4_<t>_avx2 exists (two to four activation columns)
 *   QUANTIZE  1 where lm_quantize_<t> exists. The lattice i-quants' quantizers
 *             (IQ1_S .. IQ3_S) are quants/iq1_quantize.c, iq2_quantize.c and
 *             iq3_quantize.c over the lattices of quants/iq_neighbours.h; IQ1_S,
 *             IQ2_XXS and IQ2_XS need an importance matrix (lm_type_needs_imatrix).
 */
#ifndef LAMINA_TYPES_H
#define LAMINA_TYPES_H

#include "quants/blocks.h"

// clang-format off: a table, one type per line, its columns aligned
#define LM_BLOCK_TYPES(X)                                                               \
    /* ID      t        qk        block          PARTNER KIND   FROM_F32 X4 QUANTIZE */ \
    X(F32,     f32,     1,        float,         F32,    FLOAT, 1,       0, 1)          \
    X(F16,     f16,     1,        lm_half,       F16,    FLOAT, 1,       0, 1)          \
    X(BF16,    bf16,    1,        lm_bf16,       BF16,   FLOAT, 1,       0, 1)          \
    X(Q4_0,    q4_0,    QK4_0,    block_q4_0,    Q8_0,   QUANT, 0,       1, 1)          \
    X(Q4_1,    q4_1,    QK4_1,    block_q4_1,    Q8_1,   QUANT, 0,       1, 1)          \
    X(Q5_0,    q5_0,    QK5_0,    block_q5_0,    Q8_0,   QUANT, 0,       1, 1)          \
    X(Q5_1,    q5_1,    QK5_1,    block_q5_1,    Q8_1,   QUANT, 0,       1, 1)          \
    X(Q8_0,    q8_0,    QK8_0,    block_q8_0,    Q8_0,   QUANT, 1,       1, 1)          \
    X(Q8_1,    q8_1,    QK8_1,    block_q8_1,    Q8_1,   ACT,   1,       0, 0)          \
    X(Q2_K,    q2_K,    QK_K,     block_q2_K,    Q8_K,   QUANT, 0,       1, 1)          \
    X(Q3_K,    q3_K,    QK_K,     block_q3_K,    Q8_K,   QUANT, 0,       1, 1)          \
    X(Q4_K,    q4_K,    QK_K,     block_q4_K,    Q8_K,   QUANT, 0,       1, 1)          \
    X(Q5_K,    q5_K,    QK_K,     block_q5_K,    Q8_K,   QUANT, 0,       1, 1)          \
    X(Q6_K,    q6_K,    QK_K,     block_q6_K,    Q8_K,   QUANT, 0,       1, 1)          \
    X(Q8_K,    q8_K,    QK_K,     block_q8_K,    Q8_K,   ACT,   1,       0, 0)          \
    X(IQ2_XXS, iq2_xxs, QK_K,     block_iq2_xxs, Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ2_XS,  iq2_xs,  QK_K,     block_iq2_xs,  Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ2_S,   iq2_s,   QK_K,     block_iq2_s,   Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ3_XXS, iq3_xxs, QK_K,     block_iq3_xxs, Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ3_S,   iq3_s,   QK_K,     block_iq3_s,   Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ1_S,   iq1_s,   QK_K,     block_iq1_s,   Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ1_M,   iq1_m,   QK_K,     block_iq1_m,   Q8_K,   QUANT, 0,       1, 1)          \
    X(IQ4_NL,  iq4_nl,  QK4_NL,   block_iq4_nl,  Q8_0,   QUANT, 0,       1, 1)          \
    X(IQ4_XS,  iq4_xs,  QK_K,     block_iq4_xs,  Q8_K,   QUANT, 0,       1, 1)          \
    X(TQ1_0,   tq1_0,   QK_K,     block_tq1_0,   Q8_K,   QUANT, 0,       1, 1)          \
    X(TQ2_0,   tq2_0,   QK_K,     block_tq2_0,   Q8_K,   QUANT, 0,       1, 1)          \
    X(MXFP4,   mxfp4,   QK_MXFP4, block_mxfp4,   Q8_0,   QUANT, 0,       1, 1)          \
    X(NVFP4,   nvfp4,   QK_NVFP4, block_nvfp4,   Q8_0,   QUANT, 0,       1, 1)
// clang-format on

/* a type's KIND as a value (cuda/runtime.cu's table) */
enum { LM_KIND_FLOAT, LM_KIND_QUANT, LM_KIND_ACT };

/* Selecting by column inside an X: LM_IF(FLAG, tokens...) keeps the tokens
 * where FLAG is 1, LM_IF_WEIGHT(KIND, ...) where KIND is FLOAT or QUANT,
 * LM_IF_KIND(KIND, K, ...) where KIND is K. */
#define LM_IF(flag, ...) LM_IF_##flag(__VA_ARGS__)
#define LM_IF_0(...)
#define LM_IF_1(...) __VA_ARGS__
#define LM_IF_WEIGHT(kind, ...) LM_IF_WEIGHT_##kind(__VA_ARGS__)
#define LM_IF_WEIGHT_FLOAT(...) __VA_ARGS__
#define LM_IF_WEIGHT_QUANT(...) __VA_ARGS__
#define LM_IF_WEIGHT_ACT(...)
#define LM_IF_KIND(kind, k, ...) LM_IF_KIND_##kind##_##k(__VA_ARGS__)
#define LM_IF_KIND_FLOAT_FLOAT(...) __VA_ARGS__
#define LM_IF_KIND_FLOAT_QUANT(...)
#define LM_IF_KIND_FLOAT_ACT(...)
#define LM_IF_KIND_QUANT_FLOAT(...)
#define LM_IF_KIND_QUANT_QUANT(...) __VA_ARGS__
#define LM_IF_KIND_QUANT_ACT(...)
#define LM_IF_KIND_ACT_FLOAT(...)
#define LM_IF_KIND_ACT_QUANT(...)
#define LM_IF_KIND_ACT_ACT(...) __VA_ARGS__

/* the block math of every type (quants/<type>.h) */
#include "quants/float.h"
#include "quants/iq1.h"
#include "quants/iq2.h"
#include "quants/iq3.h"
#include "quants/iq4.h"
#include "quants/mxfp4.h"
#include "quants/nvfp4.h"
#include "quants/q2_K.h"
#include "quants/q3_K.h"
#include "quants/q4_0.h"
#include "quants/q4_1.h"
#include "quants/q4_K.h"
#include "quants/q5_0.h"
#include "quants/q5_1.h"
#include "quants/q5_K.h"
#include "quants/q6_K.h"
#include "quants/q8_0.h"
#include "quants/q8_1.h"
#include "quants/q8_K.h"
#include "quants/tq1_0.h"
#include "quants/tq2_0.h"

#endif /* LAMINA_TYPES_H */
