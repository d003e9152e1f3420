/* forward_ops.h — the small row kernels of the decoder forward pass: norms,
 * activations, softmax, RoPE, and the two attention inner loops (a query's
 * scores over cached key rows, the weighted sum of value rows) for each
 * KV-cache type.
 *
 * Scalar references live in forward_ops.c; the AVX2 versions of the hot
 * attention loops live in simd/x86/forward_ops_avx2.c and are picked at run time. */
#ifndef LAMINA_FORWARD_OPS_H
#define LAMINA_FORWARD_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "include/lamina.h"

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * (w[i] + add_one); sums in double */
void lm_rms_norm(float *out, const float *x, const float *w, int64_t n, float eps, float add_one);

/* x[i] = silu(x[i]) * up[i]  or  gelu_tanh(x[i]) * up[i] */
void lm_silu_mul(float *x, const float *up, int64_t n);
void lm_gelu_tanh_mul(float *x, const float *up, int64_t n);
#define LM_GELU_SQRT_2_OVER_PI 0.79788456080286535588f
#define LM_GELU_COEF_A 0.044715f

/* x[i] = cap * tanh(x[i] / cap) in place (gemma2's soft-capping) */
void lm_softcap(float *x, int64_t n, float cap);

/* x[0..n) = softmax(x[0..n)) in place */
void lm_softmax(float *x, int64_t n);
/* the softmax denominator from its eight partial sums (both kernels' order) */
double lm_softmax_parts_sum(const double part[8]);
/* the same with one more logit, sink, in the max and the sum only (gpt-oss) */
void lm_softmax_sink(float *x, int64_t n, float sink);
/* x = swiglu_oai(x, up) (LM_ACT_SWIGLU_OAI) */
void lm_swiglu_oai_mul(float *x, const float *up, int64_t n);

/* Rotate the first n_rot dims of one head vector by the angles whose
 * (cos, sin) pairs are cs[0..n_rot/2). neox = 0: pairs (2i, 2i+1) (llama
 * GGUFs, whose q/k rows the converter permuted); neox = 1: pairs (i, i+n_rot/2). */
void lm_rope_head(float *x, const float *cs, int n_rot, int neox);

/* The attention inner loops over nh heads of one KV group (1 <= nh <=
 * LM_KV_MAX_HEADS) and n cached rows, row j at byte offset j * stride from k
 * or v, in the cache type:
 *   scores: s[h * s_stride + j] = scale * (q_h . k_j), q_h = q + h * q_stride
 *   mix   : out_h += sum_j p_h[j] * v_j, out_h = out + h * out_stride and
 *           p_h = p + h * p_stride, adding the rows in order to each value of
 *           out_h as it was (so n rows in one call, or in runs one after the
 *           other, give the same bits: a sequence's cache can be read block by
 *           block)
 * Each head's result has the bits of a call for that head alone (nh = 1): the
 * heads of a group only share the reads and conversions of the cached rows.
 * hd is a multiple of 32 for Q8_0. */
enum { LM_KV_MAX_HEADS = 4 };
typedef void (*lm_kv_scores_fn)(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k,
                                size_t stride, int64_t n, int64_t hd, float scale);
typedef void (*lm_kv_mix_fn)(float *out, size_t out_stride, const float *p, size_t p_stride, int nh, const void *v,
                             size_t stride, int64_t n, int64_t hd);

typedef struct {
    lm_kv_scores_fn scores;
    lm_kv_mix_fn mix;
    void (*softmax)(float *x, int64_t n); /* lm_softmax, or its AVX2 twin with the same bits */
} lm_kv_kernels;

/* the kernels for a cache of ggml type kv_type (F32, F16 or Q8_0), AVX2 when
 * avx2 != 0 and the build has it; returns 0 when the type has none */
int lm_kv_kernels_for(int kv_type, int avx2, lm_kv_kernels *out);

/* x = act(x) * up over n floats: the scalar references, or their AVX2 twins
 * with the same bits (simd/x86/forward_ops_avx2.c) */
typedef void (*lm_act_mul_fn)(float *x, const float *up, int64_t n);
typedef struct {
    lm_act_mul_fn silu_mul;
    lm_act_mul_fn gelu_tanh_mul;
    lm_act_mul_fn swiglu_oai_mul; /* scalar only: gpt-oss */
} lm_act_kernels;
void lm_act_kernels_for(int avx2, lm_act_kernels *out);
/* the kernel of an lm_activation (lamina.h) */
static inline lm_act_mul_fn lm_act_for(const lm_act_kernels *k, int activation) {
    return activation == LM_ACT_SWIGLU_OAI  ? k->swiglu_oai_mul
           : activation == LM_ACT_GELU_TANH ? k->gelu_tanh_mul
                                            : k->silu_mul;
}

#if defined(LM_BUILD_AVX2)
void lm_silu_mul_avx2(float *x, const float *up, int64_t n);
void lm_gelu_tanh_mul_avx2(float *x, const float *up, int64_t n);
void lm_softmax_avx2(float *x, int64_t n);
void lm_kv_scores_f32_avx2(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k,
                           size_t stride, int64_t n, int64_t hd, float scale);
void lm_kv_mix_f32_avx2(float *out, size_t out_stride, const float *p, size_t p_stride, int nh, const void *v,
                        size_t stride, int64_t n, int64_t hd);
void lm_kv_scores_f16_avx2(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k,
                           size_t stride, int64_t n, int64_t hd, float scale);
void lm_kv_mix_f16_avx2(float *out, size_t out_stride, const float *p, size_t p_stride, int nh, const void *v,
                        size_t stride, int64_t n, int64_t hd);
void lm_kv_scores_q8_0_avx2(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k,
                            size_t stride, int64_t n, int64_t hd, float scale);
void lm_kv_mix_q8_0_avx2(float *out, size_t out_stride, const float *p, size_t p_stride, int nh, const void *v,
                         size_t stride, int64_t n, int64_t hd);
#endif

#endif
