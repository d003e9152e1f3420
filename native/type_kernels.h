/* type_kernels.h — the per-type entry points the traits table points at.
 *
 * Naming: lm_quantize_<t> (ggml_quantize_chunk semantics), lm_dequantize_row_<t>,
 * lm_quantize_row_<t>_ref (ggml's reference row quantizer), lm_vec_dot_<t>_ref
 * (scalar) and lm_vec_dot_<t>_avx2 (x86 AVX2/FMA/F16C, only built on x86-64).
 */
#ifndef LAMINA_TYPE_KERNELS_H
#define LAMINA_TYPE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define LM_DECLARE_WEIGHT_TYPE(t)                                                                  \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row,          \
                           const float *imatrix);                                                  \
    void lm_dequantize_row_##t(const void *x, float *y, int64_t k);                                \
    void lm_vec_dot_##t##_ref(int64_t n, float *s, const void *x, const void *y);                  \
    void lm_vec_dot_##t##_avx2(int64_t n, float *s, const void *x, const void *y);

LM_DECLARE_WEIGHT_TYPE(f32)
LM_DECLARE_WEIGHT_TYPE(f16)
LM_DECLARE_WEIGHT_TYPE(bf16)
LM_DECLARE_WEIGHT_TYPE(q4_0)
LM_DECLARE_WEIGHT_TYPE(q4_1)
LM_DECLARE_WEIGHT_TYPE(q5_0)
LM_DECLARE_WEIGHT_TYPE(q5_1)
LM_DECLARE_WEIGHT_TYPE(q8_0)
LM_DECLARE_WEIGHT_TYPE(q2_K)
LM_DECLARE_WEIGHT_TYPE(q3_K)
LM_DECLARE_WEIGHT_TYPE(q4_K)
LM_DECLARE_WEIGHT_TYPE(q5_K)
LM_DECLARE_WEIGHT_TYPE(q6_K)
LM_DECLARE_WEIGHT_TYPE(iq4_nl)
LM_DECLARE_WEIGHT_TYPE(iq4_xs)

/* activation formats: reference row quantizers (bit-exact with ggml's *_ref) */
void lm_quantize_row_q8_0_ref(const float *x, void *y, int64_t k);
void lm_quantize_row_q8_0_act(const float *x, void *y, int64_t k);
void lm_quantize_row_q8_1_act(const float *x, void *y, int64_t k);
void lm_quantize_row_q8_K_ref(const float *x, void *y, int64_t k);
void lm_dequantize_row_q8_1(const void *x, float *y, int64_t k);
void lm_dequantize_row_q8_K(const void *x, float *y, int64_t k);
/* plain conversions used as from_float for the float dot partners */
void lm_f32_to_f16_row(const float *x, void *y, int64_t k);
void lm_f32_to_bf16_row(const float *x, void *y, int64_t k);
void lm_f32_copy_row(const float *x, void *y, int64_t k);

#endif
