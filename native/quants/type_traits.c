/* type_traits.c — the table of ggml types lamina implements, one row per line
 * of the list of types (quants/types.h). */
#include "quants/type_traits.h"

#include "include/lamina.h"
#include "quants/kernels.h"
#include "simd/cpu_features.h"

#if defined(LM_BUILD_AVX2)
#define LM_AVX2(fn) fn
#else
#define LM_AVX2(fn) NULL
#endif

/* fn where the row's flag (or, for the weights' functions, its KIND) says the
 * type has it, else NULL */
#define LM_FN(flag, fn) LM_FN_##flag(fn)
#define LM_FN_0(fn) NULL
#define LM_FN_1(fn) fn
#define LM_WEIGHT_FN(kind, fn) LM_WEIGHT_FN_##kind(fn)
#define LM_WEIGHT_FN_FLOAT(fn) fn
#define LM_WEIGHT_FN_QUANT(fn) fn
#define LM_WEIGHT_FN_ACT(fn) NULL

#define LM_TRAITS_ROW(ID, t, qk, block, PARTNER, KIND, FROM_F32, X4, QUANTIZE) \
    [LM_TYPE_##ID] = {                                                         \
        .name = #t,                                                            \
        .blck_size = qk,                                                       \
        .type_size = sizeof(block),                                            \
        .vec_dot_type = LM_TYPE_##PARTNER,                                     \
        .to_float = lm_dequantize_row_##t,                                     \
        .quantize = LM_FN(QUANTIZE, lm_quantize_##t),                          \
        .from_float = LM_FN(FROM_F32, lm_from_float_##t),                      \
        .vec_dot_ref = LM_WEIGHT_FN(KIND, lm_vec_dot_##t##_ref),               \
        .vec_dot_avx2 = LM_WEIGHT_FN(KIND, LM_AVX2(lm_vec_dot_##t##_avx2)),    \
        .vec_dot_x4_avx2 = LM_FN(X4, LM_AVX2(lm_vec_dot_x4_##t##_avx2)),       \
    },

static const lm_type_traits k_traits[LM_TYPE_COUNT] = { LM_BLOCK_TYPES(LM_TRAITS_ROW) };

const lm_type_traits *lm_get_type_traits(int type) {
    if (type < 0 || type >= LM_TYPE_COUNT || k_traits[type].name == NULL) return NULL;
    return &k_traits[type];
}

int lm_type_is_float(const lm_type_traits *t) {
    return t == &k_traits[LM_TYPE_F32] || t == &k_traits[LM_TYPE_F16] || t == &k_traits[LM_TYPE_BF16];
}

/* The SIMD kernels of one type for one instruction set: the single-column
 * dot and its companions, each of which reproduces the dot's bits. */
typedef struct {
    lm_vec_dot_fn dot;
    lm_vec_dot_x4_fn x4;
    lm_vec_dot_2r_fn dot2r;
    lm_vec_dot_2r2c_fn dot22;
    lm_vec_dot_x4_fn xn;        /* one row by up to LM_XN_MAX columns */
    lm_vec_dot_xn2r_fn xn2r;    /* two rows by xn's columns (the float types) */
} simd_kernels;

static simd_kernels avx2_kernels(const lm_type_traits *t) {
    simd_kernels k = { t->vec_dot_avx2, t->vec_dot_x4_avx2, NULL, NULL, NULL, NULL };
#if defined(LM_BUILD_AVX2)
#define LM_AVX2_PAIRS(ID, t_)                  \
    if (t == &k_traits[LM_TYPE_##ID]) {        \
        k.dot2r = lm_vec_dot_2r_##t_##_avx2;   \
        k.dot22 = lm_vec_dot_2r2c_##t_##_avx2; \
        k.xn = lm_vec_dot_xn_##t_##_avx2;      \
    }
    LM_AVX2_PAIRS(Q4_0, q4_0)
    LM_AVX2_PAIRS(Q4_1, q4_1)
    LM_AVX2_PAIRS(Q5_0, q5_0)
    LM_AVX2_PAIRS(Q5_1, q5_1)
    LM_AVX2_PAIRS(Q8_0, q8_0)
    LM_AVX2_PAIRS(IQ4_NL, iq4_nl)
    LM_AVX2_PAIRS(MXFP4, mxfp4)
    if (t == &k_traits[LM_TYPE_Q2_K]) k.xn = lm_vec_dot_xn_q2_K_avx2;
    if (t == &k_traits[LM_TYPE_Q3_K]) k.xn = lm_vec_dot_xn_q3_K_avx2;
    if (t == &k_traits[LM_TYPE_Q4_K]) k.xn = lm_vec_dot_xn_q4_K_avx2;
    if (t == &k_traits[LM_TYPE_Q5_K]) k.xn = lm_vec_dot_xn_q5_K_avx2;
    if (t == &k_traits[LM_TYPE_Q6_K]) k.xn = lm_vec_dot_xn_q6_K_avx2;
    if (t == &k_traits[LM_TYPE_IQ4_XS]) k.xn = lm_vec_dot_xn_iq4_xs_avx2;
#define LM_AVX2_FLOAT(ID, t_)                 \
    if (t == &k_traits[LM_TYPE_##ID]) {       \
        k.xn = lm_vec_dot_xn_##t_##_avx2;     \
        k.xn2r = lm_vec_dot_xn2r_##t_##_avx2; \
    }
    LM_AVX2_FLOAT(F32, f32)
    LM_AVX2_FLOAT(F16, f16)
    LM_AVX2_FLOAT(BF16, bf16)
#undef LM_AVX2_FLOAT
#undef LM_AVX2_PAIRS
#endif
    return k;
}

/* the VNNI builds of the 32-weight formats' kernels (isa avxvnni or
 * avx512vnni); all NULL for the other types */
#define LM_VNNI_ROW(ID, t_, x4_, dot22_, xn_, isa) \
    if (t == &k_traits[LM_TYPE_##ID])              \
        return (simd_kernels){ lm_vec_dot_##t_##_##isa, x4_, lm_vec_dot_2r_##t_##_##isa, dot22_, xn_, NULL };
#define LM_VNNI_TABLE(isa)                                                                                            \
    LM_VNNI_ROW(Q4_0, q4_0, lm_vec_dot_x4_q4_0_##isa, lm_vec_dot_2r2c_q4_0_##isa, lm_vec_dot_xn_q4_0_##isa, isa)      \
    LM_VNNI_ROW(Q4_1, q4_1, lm_vec_dot_x4_q4_1_##isa, lm_vec_dot_2r2c_q4_1_##isa, lm_vec_dot_xn_q4_1_##isa, isa)      \
    LM_VNNI_ROW(Q5_0, q5_0, lm_vec_dot_x4_q5_0_##isa, lm_vec_dot_2r2c_q5_0_##isa, lm_vec_dot_xn_q5_0_##isa, isa)      \
    LM_VNNI_ROW(Q5_1, q5_1, lm_vec_dot_x4_q5_1_##isa, lm_vec_dot_2r2c_q5_1_##isa, lm_vec_dot_xn_q5_1_##isa, isa)      \
    LM_VNNI_ROW(Q8_0, q8_0, lm_vec_dot_x4_q8_0_##isa, lm_vec_dot_2r2c_q8_0_##isa, lm_vec_dot_xn_q8_0_##isa, isa)      \
    LM_VNNI_ROW(IQ4_NL, iq4_nl, lm_vec_dot_x4_iq4_nl_##isa, lm_vec_dot_2r2c_iq4_nl_##isa, lm_vec_dot_xn_iq4_nl_##isa, \
                isa)                                                                                                  \
    LM_VNNI_ROW(MXFP4, mxfp4, lm_vec_dot_x4_mxfp4_##isa, lm_vec_dot_2r2c_mxfp4_##isa, lm_vec_dot_xn_mxfp4_##isa, isa)

/* the k-quants and IQ4_XS: their AVX2 kernels, with the VNNI build of the many-column one */
#define LM_VNNI_XNK(ID, t_, isa)           \
    if (t == &k_traits[LM_TYPE_##ID]) {    \
        simd_kernels k = avx2_kernels(t);  \
        k.xn = lm_vec_dot_xn_##t_##_##isa; \
        return k;                          \
    }
#define LM_VNNI_KQUANTS(isa)     \
    LM_VNNI_XNK(Q2_K, q2_K, isa) \
    LM_VNNI_XNK(Q3_K, q3_K, isa) \
    LM_VNNI_XNK(Q4_K, q4_K, isa) \
    LM_VNNI_XNK(Q5_K, q5_K, isa) \
    LM_VNNI_XNK(Q6_K, q6_K, isa) \
    LM_VNNI_XNK(IQ4_XS, iq4_xs, isa)

static simd_kernels vnni_kernels(const lm_type_traits *t) {
    const simd_kernels none = { NULL, NULL, NULL, NULL, NULL, NULL };
    switch (lm_cpu_features_vnni()) {
#if defined(LM_BUILD_AVXVNNI)
    case LM_VNNI_AVX: LM_VNNI_TABLE(avxvnni) LM_VNNI_KQUANTS(avxvnni) return none;
#endif
#if defined(LM_BUILD_AVX512VNNI)
    case LM_VNNI_AVX512: LM_VNNI_TABLE(avx512vnni) LM_VNNI_KQUANTS(avx512vnni) return none;
#endif
    default: return none;
    }
}
#undef LM_VNNI_TABLE
#undef LM_VNNI_ROW
#undef LM_VNNI_KQUANTS
#undef LM_VNNI_XNK

/* impl's SIMD kernels for t (all NULL: none, the scalar reference runs or
 * impl is unavailable). AUTO and VNNI take the VNNI build where the type has
 * one and the CPU runs it, else the AVX2 one; AVX2 always AVX2. */
static simd_kernels select_kernels(const lm_type_traits *t, int impl) {
    const simd_kernels none = { NULL, NULL, NULL, NULL, NULL, NULL };
    if (impl == LM_IMPL_SCALAR || !lm_cpu_features_avx2()) return none;
    if (impl == LM_IMPL_AUTO || impl == LM_IMPL_VNNI) {
        if (impl == LM_IMPL_VNNI && !lm_cpu_features_vnni()) return none;
        const simd_kernels k = vnni_kernels(t);
        return k.dot ? k : avx2_kernels(t);
    }
    if (impl == LM_IMPL_AVX2) return avx2_kernels(t);
    return none;
}

lm_vec_dot_fn lm_select_vec_dot(const lm_type_traits *t, int impl) {
    if (impl == LM_IMPL_SCALAR) return t->vec_dot_ref;
    const lm_vec_dot_fn dot = select_kernels(t, impl).dot;
    if (impl == LM_IMPL_AUTO && !dot) return t->vec_dot_ref;
    return dot;
}

lm_from_float_fn lm_select_from_float(const lm_type_traits *t, int impl) {
#if defined(LM_BUILD_AVX2)
    if (impl != LM_IMPL_SCALAR && lm_cpu_features_avx2()) {
        if (t == &k_traits[LM_TYPE_Q8_0]) return lm_from_float_q8_0_avx2;
        if (t == &k_traits[LM_TYPE_Q8_1]) return lm_from_float_q8_1_avx2;
        if (t == &k_traits[LM_TYPE_Q8_K]) return lm_from_float_q8_K_avx2;
    }
#endif
    return t->from_float;
}

lm_round_row_fn lm_select_round_row(const lm_type_traits *t, int impl) {
#if defined(LM_BUILD_AVX2)
    if (impl != LM_IMPL_SCALAR && lm_cpu_features_avx2()) {
        if (t == &k_traits[LM_TYPE_F16]) return lm_round_row_f16_avx2;
        if (t == &k_traits[LM_TYPE_BF16]) return lm_round_row_bf16_avx2;
    }
#else
    (void)t;
    (void)impl;
#endif
    return NULL;
}

/* the companions only alongside the single-column kernel whose bits they reproduce */
lm_vec_dot_x4_fn lm_select_vec_dot_x4(const lm_type_traits *t, int impl) {
    const simd_kernels k = select_kernels(t, impl);
    return k.dot ? k.x4 : NULL;
}

/* the float types' has no few-column kernel beside it: it reproduces the dot */
lm_vec_dot_x4_fn lm_select_vec_dot_xn(const lm_type_traits *t, int impl) {
    const simd_kernels k = select_kernels(t, impl);
    return k.dot && (k.x4 || lm_type_is_float(t)) ? k.xn : NULL;
}

/* beside the one-row kernel whose bits it reproduces: the float types' AVX2 one (they have no VNNI build) */
lm_vec_dot_xn2r_fn lm_select_vec_dot_xn2r(const lm_type_traits *t, int impl) {
    const simd_kernels k = select_kernels(t, impl);
    return k.dot && k.xn ? k.xn2r : NULL;
}

lm_vec_dot_2r_fn lm_select_vec_dot_2r(const lm_type_traits *t, int impl) {
    const simd_kernels k = select_kernels(t, impl);
    return k.dot ? k.dot2r : NULL;
}

lm_vec_dot_2r2c_fn lm_select_vec_dot_2r2c(const lm_type_traits *t, int impl) {
    const simd_kernels k = select_kernels(t, impl);
    return k.dot && k.x4 ? k.dot22 : NULL;
}
