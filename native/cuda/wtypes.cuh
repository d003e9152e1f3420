/* wtypes.cuh — compile-time traits of each quantized weight type, so one
 * kernel template serves them all (the mat-vec and the dequantizer). Every
 * function forwards to mmvq_math.h: no arithmetic lives here. */
#ifndef LAMINA_CUDA_WTYPES_CUH
#define LAMINA_CUDA_WTYPES_CUH

#include "common.cuh"
#include "mmvq_math.h"

template <int T> struct lmc_qt;

#define LMC_QTYPE(ID, t, block_t, act_t, qk, parts, int_reduce)                                          \
    template <> struct lmc_qt<ID> {                                                                      \
        typedef block_t W;                                                                                \
        typedef act_t A;                                                                                  \
        static constexpr int QK = qk, PARTS = parts, INT_REDUCE = int_reduce;                            \
        static __device__ __forceinline__ void ints(const W *x, const A *y, int p, int32_t *is, int32_t *im) { \
            lmc_ints_##t(x, y, p, is, im);                                                                \
        }                                                                                                 \
        static __device__ __forceinline__ float term(const W *x, const A *y, int p, int32_t is, int32_t im) { \
            return lmc_term_##t(x, y, p, is, im);                                                         \
        }                                                                                                 \
        static __device__ __forceinline__ float dequant1(const W *b, int i) { return lmc_dequant1_##t(b, i); } \
    };

LMC_QTYPE(LM_TYPE_Q4_0, q4_0, block_q4_0, block_q8_0, QK4_0, LMC_PARTS_Q4_0, 1)
LMC_QTYPE(LM_TYPE_Q4_1, q4_1, block_q4_1, block_q8_1, QK4_1, LMC_PARTS_Q4_1, 1)
LMC_QTYPE(LM_TYPE_Q5_0, q5_0, block_q5_0, block_q8_0, QK5_0, LMC_PARTS_Q5_0, 1)
LMC_QTYPE(LM_TYPE_Q5_1, q5_1, block_q5_1, block_q8_1, QK5_1, LMC_PARTS_Q5_1, 1)
LMC_QTYPE(LM_TYPE_Q8_0, q8_0, block_q8_0, block_q8_0, QK8_0, LMC_PARTS_Q8_0, 1)
LMC_QTYPE(LM_TYPE_IQ4_NL, iq4_nl, block_iq4_nl, block_q8_0, QK4_NL, LMC_PARTS_IQ4_NL, 1)
LMC_QTYPE(LM_TYPE_Q2_K, q2_K, block_q2_K, block_q8_K, QK_K, LMC_PARTS_Q2_K, 1)
LMC_QTYPE(LM_TYPE_Q3_K, q3_K, block_q3_K, block_q8_K, QK_K, LMC_PARTS_Q3_K, 1)
LMC_QTYPE(LM_TYPE_Q4_K, q4_K, block_q4_K, block_q8_K, QK_K, LMC_PARTS_Q4_K, 1)
LMC_QTYPE(LM_TYPE_Q5_K, q5_K, block_q5_K, block_q8_K, QK_K, LMC_PARTS_Q5_K, 1)
LMC_QTYPE(LM_TYPE_Q6_K, q6_K, block_q6_K, block_q8_K, QK_K, LMC_PARTS_Q6_K, 1)
LMC_QTYPE(LM_TYPE_IQ4_XS, iq4_xs, block_iq4_xs, block_q8_K, QK_K, LMC_PARTS_IQ4_XS, LMC_INT_REDUCE_IQ4_XS)

#undef LMC_QTYPE

/* the float weight types, one value per "block" */
template <int T> struct lmc_ft;
template <> struct lmc_ft<LM_TYPE_F32> {
    typedef float W;
    static __device__ __forceinline__ float get(const W *w, int64_t i) { return w[i]; }
};
template <> struct lmc_ft<LM_TYPE_F16> {
    typedef lm_half W;
    static __device__ __forceinline__ float get(const W *w, int64_t i) { return lm_half_to_f32(w[i]); }
};
template <> struct lmc_ft<LM_TYPE_BF16> {
    typedef lm_bf16 W;
    static __device__ __forceinline__ float get(const W *w, int64_t i) { return lm_bf16_to_f32(w[i]); }
};

/* CALL(ID) with ID the compile-time constant of a run-time type id; no
 * call for a type outside the family */
#define LMC_FOR_QTYPE(type, CALL)                          \
    switch (type) {                                        \
    case LM_TYPE_Q4_0: CALL(LM_TYPE_Q4_0); break;          \
    case LM_TYPE_Q4_1: CALL(LM_TYPE_Q4_1); break;          \
    case LM_TYPE_Q5_0: CALL(LM_TYPE_Q5_0); break;          \
    case LM_TYPE_Q5_1: CALL(LM_TYPE_Q5_1); break;          \
    case LM_TYPE_Q8_0: CALL(LM_TYPE_Q8_0); break;          \
    case LM_TYPE_IQ4_NL: CALL(LM_TYPE_IQ4_NL); break;      \
    case LM_TYPE_Q2_K: CALL(LM_TYPE_Q2_K); break;          \
    case LM_TYPE_Q3_K: CALL(LM_TYPE_Q3_K); break;          \
    case LM_TYPE_Q4_K: CALL(LM_TYPE_Q4_K); break;          \
    case LM_TYPE_Q5_K: CALL(LM_TYPE_Q5_K); break;          \
    case LM_TYPE_Q6_K: CALL(LM_TYPE_Q6_K); break;          \
    case LM_TYPE_IQ4_XS: CALL(LM_TYPE_IQ4_XS); break;      \
    default: break;                                        \
    }

#define LMC_FOR_FTYPE(type, CALL)                          \
    switch (type) {                                        \
    case LM_TYPE_F32: CALL(LM_TYPE_F32); break;            \
    case LM_TYPE_F16: CALL(LM_TYPE_F16); break;            \
    case LM_TYPE_BF16: CALL(LM_TYPE_BF16); break;          \
    default: break;                                        \
    }

static inline int lmc_is_float_type(int type) {
    return type == LM_TYPE_F32 || type == LM_TYPE_F16 || type == LM_TYPE_BF16;
}

#endif /* LAMINA_CUDA_WTYPES_CUH */
