/* wtypes.cuh — compile-time traits of each weight type, so one kernel
 * template serves them all (the mat-vec and the dequantizer), and the
 * dispatch from a run-time type id to them; both come from the list of types
 * (quants/types.h). Every function forwards to the type's block math
 * (quants/<type>.h): no arithmetic lives here. */
#ifndef LAMINA_CUDA_WTYPES_CUH
#define LAMINA_CUDA_WTYPES_CUH

#include "common.cuh"
#include "quants/types.h"

/* the block struct of a type id and its values per block (the partner's
 * blocks in lmc_qt) */
template <int T> struct lmc_block;
#define LMC_BLOCK(ID, t, qk, block, ...)         \
    template <> struct lmc_block<LM_TYPE_##ID> { \
        typedef block type;                      \
        static constexpr int QK = qk;            \
    };
LM_BLOCK_TYPES(LMC_BLOCK)
#undef LMC_BLOCK

/* the quantized weight types: W blocks dotted with A blocks, QK weights per
 * block cut into PARTS lanes (quants/<type>.h, LMC_PARTS_<T>); a W block
 * meets A_PER_W partner blocks (1, but 2 for NVFP4's 64 weights with Q8_0) */
template <int T> struct lmc_qt;
#define LMC_QTYPE(ID, t, qk, block, PARTNER, KIND, ...)                                                            \
    LM_IF_KIND(                                                                                                    \
        KIND, QUANT, template <> struct lmc_qt<LM_TYPE_##ID> {                                                     \
            typedef block W;                                                                                       \
            typedef lmc_block<LM_TYPE_##PARTNER>::type A;                                                          \
            static constexpr int QK = qk, PARTS = LMC_PARTS_##ID, INT_REDUCE = LMC_INT_REDUCE_##ID;                \
            static constexpr int A_PER_W = qk / lmc_block<LM_TYPE_##PARTNER>::QK;                                  \
            static_assert(A_PER_W * lmc_block<LM_TYPE_##PARTNER>::QK == qk, #ID ": whole partner blocks");         \
            static __device__ __forceinline__ void ints(const W *x, const A *y, int p, int32_t *is, int32_t *im) { \
                lmc_ints_##t(x, y, p, is, im);                                                                     \
            }                                                                                                      \
            static __device__ __forceinline__ float term(const W *x, const A *y, int p, int32_t is, int32_t im) {  \
                return lmc_term_##t(x, y, p, is, im);                                                              \
            }                                                                                                      \
            static __device__ __forceinline__ float dequant1(const W *b, int i) { return lm_dequant1_##t(b, i); }  \
        };)
LM_BLOCK_TYPES(LMC_QTYPE)
#undef LMC_QTYPE

/* the float weight types, one value per "block" */
template <int T> struct lmc_ft;
#define LMC_FTYPE(ID, t, qk, block, PARTNER, KIND, ...)                                                              \
    LM_IF_KIND(                                                                                                      \
        KIND, FLOAT, template <> struct lmc_ft<LM_TYPE_##ID> {                                                       \
            typedef block W;                                                                                         \
            static __device__ __forceinline__ float get(const W *w, int64_t i) { return lm_dequant1_##t(w + i, 0); } \
        };)
LM_BLOCK_TYPES(LMC_FTYPE)
#undef LMC_FTYPE

/* ---------------------------------------------------------- dispatch */
/* LMC_FOR_QTYPE(type, CALL) runs CALL(ID) with ID the compile-time constant
 * of the run-time type id `type` when it is a quantized weight type (lmc_qt),
 * LMC_FOR_FTYPE when it is a float one (lmc_ft); no call for any other type. */
template <int T> struct lmc_id {
    static constexpr int value = T;
};

/* f(lmc_id<ID>()) for the run-time type id `type` when its KIND is K */
template <int K, typename F> static inline void lmc_with_kind(int type, F &&f) {
    switch (type) {
#define LMC_CASE(ID, t, qk, block, PARTNER, KIND, ...)                \
    case LM_TYPE_##ID:                                                \
        if constexpr (K == LM_KIND_##KIND) f(lmc_id<LM_TYPE_##ID>()); \
        break;
        LM_BLOCK_TYPES(LMC_CASE)
#undef LMC_CASE
    default: break;
    }
}

#define LMC_FOR_QTYPE(type, CALL) lmc_with_kind<LM_KIND_QUANT>(type, [&](auto id_) { CALL(decltype(id_)::value); })
#define LMC_FOR_FTYPE(type, CALL) lmc_with_kind<LM_KIND_FLOAT>(type, [&](auto id_) { CALL(decltype(id_)::value); })

static inline int lmc_is_float_type(int type) {
    const lmc_type_info *t = lmc_type(type);
    return t != NULL && t->kind == LM_KIND_FLOAT;
}

#endif /* LAMINA_CUDA_WTYPES_CUH */
