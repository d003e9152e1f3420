/* forward_ops.c — scalar row kernels of the forward pass (the reference the
 * AVX2 attention loops are tested against). */
#include "model/forward_ops.h"

#include <math.h>

#include "include/lamina.h"
#include "quants/blocks.h"

/* ------------------------------------------------------------ norms */

void lm_rms_norm(float *out, const float *x, const float *w, int64_t n, float eps, float add_one) {
    double ss = 0.0;   /* double, as ggml's rms_norm: n is small, accuracy is free */
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * (w[i] + add_one);
}

/* ------------------------------------------------------- activations */

void lm_silu_mul(float *x, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i])) * up[i];
}

/* gelu with tanh written as v * sigmoid(2u) (= 0.5 v (1 + tanh u)): one expf,
 * like silu, so the AVX2 twin computes it with libm's bits (expf_avx2.h) where
 * a vector tanhf would not match */
void lm_gelu_tanh_mul(float *x, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const float u = LM_GELU_SQRT_2_OVER_PI * v * (1.0f + LM_GELU_COEF_A * v * v);
        x[i] = v / (1.0f + expf(-2.0f * u)) * up[i];
    }
}

void lm_swiglu_oai_mul(float *x, const float *up, int64_t n) {
    const float alpha = 1.702f, limit = 7.0f;   /* llama.cpp's fixed gpt-oss constants */
    for (int64_t i = 0; i < n; i++) {
        const float g = x[i] < limit ? x[i] : limit;
        const float u = up[i] < -limit ? -limit : (up[i] > limit ? limit : up[i]);
        x[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
    }
}

void lm_softcap(float *x, int64_t n, float cap) {
    const float inv = 1.0f / cap;   /* as ggml: scale, tanh, scale back */
    for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

/* The denominator in double: eight partial sums, value i into sum i % 8
 * (one chain of dependent adds per lane of the AVX2 twin, not one for the
 * whole row), added pairwise, then the last n % 8 values in order. */
double lm_softmax_parts_sum(const double part[8]) {
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

void lm_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double part[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            x[i + k] = expf(x[i + k] - max);
            part[k] += x[i + k];
        }
    double sum = lm_softmax_parts_sum(part);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) x[i] *= inv;
}

void lm_softmax_sink(float *x, int64_t n, float sink) {
    float max = sink;   /* the sink joins the max and the denominator, not the output */
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = (double)expf(sink - max);
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* -------------------------------------------------------------- rope */

void lm_rope_head(float *x, const float *cs, int n_rot, int neox) {
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/* ------------------------------------------- attention inner loops */

#define ROW(base, j, stride) ((const char *)(base) + (size_t)(j) * (stride))

static void kv_scores_f32(float *s, const float *q, const void *k, size_t stride, int64_t n, int64_t hd, float scale) {
    for (int64_t j = 0; j < n; j++) {
        const float *kj = (const float *)ROW(k, j, stride);
        float d = 0.0f;
        for (int64_t i = 0; i < hd; i++) d += q[i] * kj[i];
        s[j] = scale * d;
    }
}

static void kv_mix_f32(float *out, const float *p, const void *v, size_t stride, int64_t n, int64_t hd) {
    for (int64_t j = 0; j < n; j++) {
        const float *vj = (const float *)ROW(v, j, stride);
        for (int64_t i = 0; i < hd; i++) out[i] += p[j] * vj[i];
    }
}

static void kv_scores_f16(float *s, const float *q, const void *k, size_t stride, int64_t n, int64_t hd, float scale) {
    for (int64_t j = 0; j < n; j++) {
        const lm_half *kj = (const lm_half *)ROW(k, j, stride);
        float d = 0.0f;
        for (int64_t i = 0; i < hd; i++) d += q[i] * lm_half_to_f32(kj[i]);
        s[j] = scale * d;
    }
}

static void kv_mix_f16(float *out, const float *p, const void *v, size_t stride, int64_t n, int64_t hd) {
    for (int64_t j = 0; j < n; j++) {
        const lm_half *vj = (const lm_half *)ROW(v, j, stride);
        for (int64_t i = 0; i < hd; i++) out[i] += p[j] * lm_half_to_f32(vj[i]);
    }
}

static void kv_scores_q8_0(float *s, const float *q, const void *k, size_t stride, int64_t n, int64_t hd, float scale) {
    for (int64_t j = 0; j < n; j++) {
        const block_q8_0 *kb = (const block_q8_0 *)ROW(k, j, stride);
        float d = 0.0f;
        for (int64_t b = 0; b < hd / QK8_0; b++) {
            float sb = 0.0f;
            for (int i = 0; i < QK8_0; i++) sb += q[b * QK8_0 + i] * (float)kb[b].qs[i];
            d += sb * lm_half_to_f32(kb[b].d);
        }
        s[j] = scale * d;
    }
}

static void kv_mix_q8_0(float *out, const float *p, const void *v, size_t stride, int64_t n, int64_t hd) {
    for (int64_t j = 0; j < n; j++) {
        const block_q8_0 *vb = (const block_q8_0 *)ROW(v, j, stride);
        for (int64_t b = 0; b < hd / QK8_0; b++) {
            const float pd = p[j] * lm_half_to_f32(vb[b].d);
            for (int i = 0; i < QK8_0; i++) out[b * QK8_0 + i] += pd * (float)vb[b].qs[i];
        }
    }
}

/* the heads of a group one after the other (the reference shares nothing) */
#define LM_KV_PER_HEAD(t)                                                                                              \
    static void kv_scores_heads_##t(float *s, size_t s_stride, const float *q, size_t q_stride, int nh, const void *k, \
                                    size_t stride, int64_t n, int64_t hd, float scale) {                               \
        for (int h = 0; h < nh; h++) kv_scores_##t(s + h * s_stride, q + h * q_stride, k, stride, n, hd, scale);       \
    }                                                                                                                  \
    static void kv_mix_heads_##t(float *out, size_t out_stride, const float *p, size_t p_stride, int nh,               \
                                 const void *v, size_t stride, int64_t n, int64_t hd) {                                \
        for (int h = 0; h < nh; h++) kv_mix_##t(out + h * out_stride, p + h * p_stride, v, stride, n, hd);             \
    }

LM_KV_PER_HEAD(f32)
LM_KV_PER_HEAD(f16)
LM_KV_PER_HEAD(q8_0)

void lm_act_kernels_for(int avx2, lm_act_kernels *out) {
    *out = (lm_act_kernels){ lm_silu_mul, lm_gelu_tanh_mul, lm_swiglu_oai_mul };
#if defined(LM_BUILD_AVX2)
    if (avx2) *out = (lm_act_kernels){ lm_silu_mul_avx2, lm_gelu_tanh_mul_avx2, lm_swiglu_oai_mul };
#else
    (void)avx2;
#endif
}

int lm_kv_kernels_for(int kv_type, int avx2, lm_kv_kernels *out) {
    switch (kv_type) {
    case LM_TYPE_F32: *out = (lm_kv_kernels){ kv_scores_heads_f32, kv_mix_heads_f32, lm_softmax }; break;
    case LM_TYPE_F16: *out = (lm_kv_kernels){ kv_scores_heads_f16, kv_mix_heads_f16, lm_softmax }; break;
    case LM_TYPE_Q8_0: *out = (lm_kv_kernels){ kv_scores_heads_q8_0, kv_mix_heads_q8_0, lm_softmax }; break;
    default: return 0;
    }
#if defined(LM_BUILD_AVX2)
    if (avx2) {
        switch (kv_type) {
        case LM_TYPE_F32: *out = (lm_kv_kernels){ lm_kv_scores_f32_avx2, lm_kv_mix_f32_avx2, lm_softmax_avx2 }; break;
        case LM_TYPE_F16: *out = (lm_kv_kernels){ lm_kv_scores_f16_avx2, lm_kv_mix_f16_avx2, lm_softmax_avx2 }; break;
        case LM_TYPE_Q8_0:
            *out = (lm_kv_kernels){ lm_kv_scores_q8_0_avx2, lm_kv_mix_q8_0_avx2, lm_softmax_avx2 };
            break;
        }
    }
#else
    (void)avx2;
#endif
    return 1;
}
