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

lm_vec_dot_fn lm_select_vec_dot(const lm_type_traits *t, int impl) {
    switch (impl) {
    case LM_IMPL_SCALAR: return t->vec_dot_ref;
    case LM_IMPL_AVX2: return lm_cpu_features_avx2() ? t->vec_dot_avx2 : NULL;
    case LM_IMPL_AUTO:
        if (lm_cpu_features_avx2() && t->vec_dot_avx2) return t->vec_dot_avx2;
        return t->vec_dot_ref;
    default: return NULL;
    }
}

lm_from_float_fn lm_select_from_float(const lm_type_traits *t, int impl) {
#if defined(LM_BUILD_AVX2)
    if (impl != LM_IMPL_SCALAR && lm_cpu_features_avx2()) {
        if (t == &k_traits[LM_TYPE_Q8_0]) return lm_from_float_q8_0_avx2;
        if (t == &k_traits[LM_TYPE_Q8_1]) return lm_from_float_q8_1_avx2;
    }
#endif
    return t->from_float;
}

lm_vec_dot_x4_fn lm_select_vec_dot_x4(const lm_type_traits *t, int impl) {
    if (impl != LM_IMPL_AVX2 && impl != LM_IMPL_AUTO) return NULL;
    /* only alongside the single-column AVX2 kernel, whose bits it reproduces */
    if (!t->vec_dot_avx2 || lm_select_vec_dot(t, impl) != t->vec_dot_avx2) return NULL;
    return t->vec_dot_x4_avx2;
}

lm_vec_dot_2r_fn lm_select_vec_dot_2r(const lm_type_traits *t, int impl) {
    if (impl != LM_IMPL_AVX2 && impl != LM_IMPL_AUTO) return NULL;
    if (!t->vec_dot_avx2 || lm_select_vec_dot(t, impl) != t->vec_dot_avx2) return NULL;
#if defined(LM_BUILD_AVX2)
    if (t == &k_traits[LM_TYPE_Q4_0]) return lm_vec_dot_2r_q4_0_avx2;
    if (t == &k_traits[LM_TYPE_Q4_1]) return lm_vec_dot_2r_q4_1_avx2;
    if (t == &k_traits[LM_TYPE_Q5_0]) return lm_vec_dot_2r_q5_0_avx2;
    if (t == &k_traits[LM_TYPE_Q5_1]) return lm_vec_dot_2r_q5_1_avx2;
    if (t == &k_traits[LM_TYPE_Q8_0]) return lm_vec_dot_2r_q8_0_avx2;
#endif
    return NULL;
}

lm_vec_dot_2r2c_fn lm_select_vec_dot_2r2c(const lm_type_traits *t, int impl) {
    if (!lm_select_vec_dot_x4(t, impl)) return NULL;
#if defined(LM_BUILD_AVX2)
    if (t == &k_traits[LM_TYPE_Q4_0]) return lm_vec_dot_2r2c_q4_0_avx2;
    if (t == &k_traits[LM_TYPE_Q4_1]) return lm_vec_dot_2r2c_q4_1_avx2;
    if (t == &k_traits[LM_TYPE_Q5_0]) return lm_vec_dot_2r2c_q5_0_avx2;
    if (t == &k_traits[LM_TYPE_Q8_0]) return lm_vec_dot_2r2c_q8_0_avx2;
#endif
    return NULL;
}
