/* type_traits.c — the table of ggml types lamina implements. */
#include "type_traits.h"

#include <stdarg.h>
#include <stdio.h>

#include "include/lamina.h"
#include "type_kernels.h"

#if defined(LM_BUILD_AVX2)
#define LM_AVX2(fn) fn
#else
#define LM_AVX2(fn) NULL
#endif

#define LM_WEIGHT_ROW_(id, t, blck, block_t, partner, from, x4)                                      \
    [id] = { #t, blck, sizeof(block_t), partner, lm_dequantize_row_##t, lm_quantize_##t, from,        \
             lm_vec_dot_##t##_ref, LM_AVX2(lm_vec_dot_##t##_avx2), x4 }
#define LM_WEIGHT_ROW(id, t, blck, block_t, partner, from)                                           \
    LM_WEIGHT_ROW_(id, t, blck, block_t, partner, from, NULL)
/* a type with a four-column AVX2 dot (native/simd/matmul_x4_avx2.c) */
#define LM_WEIGHT_ROW_X4(id, t, blck, block_t, partner, from)                                        \
    LM_WEIGHT_ROW_(id, t, blck, block_t, partner, from, LM_AVX2(lm_vec_dot_x4_##t##_avx2))

static const lm_type_traits k_traits[LM_TYPE_COUNT] = {
    LM_WEIGHT_ROW(LM_TYPE_F32, f32, 1, float, LM_TYPE_F32, lm_f32_copy_row),
    LM_WEIGHT_ROW(LM_TYPE_F16, f16, 1, lm_half, LM_TYPE_F16, lm_f32_to_f16_row),
    LM_WEIGHT_ROW(LM_TYPE_BF16, bf16, 1, lm_bf16, LM_TYPE_BF16, lm_f32_to_bf16_row),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q4_0, q4_0, QK4_0, block_q4_0, LM_TYPE_Q8_0, NULL),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q4_1, q4_1, QK4_1, block_q4_1, LM_TYPE_Q8_1, NULL),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q5_0, q5_0, QK5_0, block_q5_0, LM_TYPE_Q8_0, NULL),
    LM_WEIGHT_ROW(LM_TYPE_Q5_1, q5_1, QK5_1, block_q5_1, LM_TYPE_Q8_1, NULL),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q8_0, q8_0, QK8_0, block_q8_0, LM_TYPE_Q8_0, lm_quantize_row_q8_0_act),
    LM_WEIGHT_ROW(LM_TYPE_Q2_K, q2_K, QK_K, block_q2_K, LM_TYPE_Q8_K, NULL),
    LM_WEIGHT_ROW(LM_TYPE_Q3_K, q3_K, QK_K, block_q3_K, LM_TYPE_Q8_K, NULL),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q4_K, q4_K, QK_K, block_q4_K, LM_TYPE_Q8_K, NULL),
    LM_WEIGHT_ROW(LM_TYPE_Q5_K, q5_K, QK_K, block_q5_K, LM_TYPE_Q8_K, NULL),
    LM_WEIGHT_ROW_X4(LM_TYPE_Q6_K, q6_K, QK_K, block_q6_K, LM_TYPE_Q8_K, NULL),
    LM_WEIGHT_ROW(LM_TYPE_IQ4_NL, iq4_nl, QK4_NL, block_iq4_nl, LM_TYPE_Q8_0, NULL),
    LM_WEIGHT_ROW(LM_TYPE_IQ4_XS, iq4_xs, QK_K, block_iq4_xs, LM_TYPE_Q8_K, NULL),
    /* activation-only formats: quantize/dequantize, no weight dot of their own */
    [LM_TYPE_Q8_1] = { "q8_1", QK8_1, sizeof(block_q8_1), LM_TYPE_Q8_1, lm_dequantize_row_q8_1, NULL,
                       lm_quantize_row_q8_1_act, NULL, NULL, NULL },
    [LM_TYPE_Q8_K] = { "q8_K", QK_K, sizeof(block_q8_K), LM_TYPE_Q8_K, lm_dequantize_row_q8_K, NULL,
                       lm_quantize_row_q8_K_ref, NULL, NULL, NULL },
};

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

lm_vec_dot_x4_fn lm_select_vec_dot_x4(const lm_type_traits *t, int impl) {
    if (impl != LM_IMPL_AVX2 && impl != LM_IMPL_AUTO) return NULL;
    /* only alongside the single-column AVX2 kernel, whose bits it reproduces */
    if (!t->vec_dot_avx2 || lm_select_vec_dot(t, impl) != t->vec_dot_avx2) return NULL;
    return t->vec_dot_x4_avx2;
}

static _Thread_local char t_error[256];

int lm_set_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_error, sizeof t_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *lm_last_error(void) { return t_error; }
