/* attention.cu — the KV cache and attention over it, on the GPU, with the
 * CPU's cache layout (forward.c): one layer is [n_ctx][kv_row_bytes], a row
 * holds the n_head_kv heads of one position in the cache type.
 *
 * A thread block per (token, head) walks the keys lo..pos in chunks of
 * AT_THREADS with an online softmax (running max and sum, the output rescaled
 * when the max grows), so no score buffer of n_ctx floats is needed and
 * prefill and decode are the same kernel. One score is computed as the CPU's
 * kv_scores_<t> computes it; the softmax and the weighted sum differ from the
 * CPU's only in rounding. */
#include "common.cuh"

enum { AT_THREADS = 128, AT_MAX_HD = 512, AT_PER_THREAD = AT_MAX_HD / AT_THREADS };

/* the cache types: a score q . k and one value's share p * v[i] */
template <int KV> struct kv_t;

template <> struct kv_t<LM_TYPE_F32> {
    static __device__ __forceinline__ float dot(const float *q, const char *row, int hd) {
        const float *k = (const float *)row;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += q[i] * k[i];
        return d;
    }
    static __device__ __forceinline__ float mix(const char *row, int i, float p) { return p * ((const float *)row)[i]; }
};

template <> struct kv_t<LM_TYPE_F16> {
    static __device__ __forceinline__ float dot(const float *q, const char *row, int hd) {
        const lm_half *k = (const lm_half *)row;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += q[i] * lm_half_to_f32(k[i]);
        return d;
    }
    static __device__ __forceinline__ float mix(const char *row, int i, float p) {
        return p * lm_half_to_f32(((const lm_half *)row)[i]);
    }
};

template <> struct kv_t<LM_TYPE_Q8_0> {
    static __device__ __forceinline__ float dot(const float *q, const char *row, int hd) {
        const block_q8_0 *kb = (const block_q8_0 *)row;
        float d = 0.0f;
        for (int b = 0; b < hd / QK8_0; b++) {
            float sb = 0.0f;
            for (int i = 0; i < QK8_0; i++) sb += q[b * QK8_0 + i] * (float)kb[b].qs[i];
            d += sb * lm_half_to_f32(kb[b].d);
        }
        return d;
    }
    static __device__ __forceinline__ float mix(const char *row, int i, float p) {
        const block_q8_0 *vb = (const block_q8_0 *)row + i / QK8_0;
        return (p * lm_half_to_f32(vb->d)) * (float)vb->qs[i % QK8_0];
    }
};

template <int KV>
__global__ void __launch_bounds__(AT_THREADS)
    attention_kernel(float *out, const float *q, const char *k_cache, const char *v_cache, size_t row_bytes,
                     size_t head_bytes, const int32_t *pos0_dev, int32_t pos0, int n_head, int group, int hd,
                     float scale, int32_t window) {
    __shared__ float q_sh[AT_MAX_HD];
    __shared__ float p_sh[AT_THREADS];
    __shared__ float red_f[32];
    __shared__ double red_d[32];
    const int tid = threadIdx.x;
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y;
    const int64_t q_dim = (int64_t)n_head * hd;
    for (int i = tid; i < hd; i += AT_THREADS) q_sh[i] = q[t * q_dim + (int64_t)h * hd + i];
    /* the keys walked depend on the position, the grid does not: a graph
     * captured once replays at any position written to *pos0_dev */
    const int32_t pos = lmc_pos(pos0_dev, pos0) + (int32_t)t;
    const int32_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    const char *kb = k_cache + (size_t)(h / group) * head_bytes;
    const char *vb = v_cache + (size_t)(h / group) * head_bytes;
    float m = -INFINITY;   /* running max of the scores */
    double l = 0.0;        /* running sum of exp(score - m) */
    float acc[AT_PER_THREAD];
#pragma unroll
    for (int k = 0; k < AT_PER_THREAD; k++) acc[k] = 0.0f;
    __syncthreads();
    for (int32_t j0 = lo; j0 <= pos; j0 += AT_THREADS) {
        const int32_t j = j0 + tid;
        const float s = j <= pos ? scale * kv_t<KV>::dot(q_sh, kb + (size_t)j * row_bytes, hd) : -INFINITY;
        const float m_new = fmaxf(m, lmc_block_max(s, red_f));
        const float alpha = m == -INFINITY ? 0.0f : expf(m - m_new);
        const float p = j <= pos ? expf(s - m_new) : 0.0f;
        p_sh[tid] = p;
        l = l * alpha + lmc_block_sum((double)p, red_d);   /* its barriers also publish p_sh */
        const int nk = pos - j0 + 1 < AT_THREADS ? pos - j0 + 1 : AT_THREADS;
#pragma unroll
        for (int k = 0; k < AT_PER_THREAD; k++) {
            const int i = tid + k * AT_THREADS;
            if (i < hd) {
                float a = acc[k] * alpha;
                for (int jj = 0; jj < nk; jj++) a += kv_t<KV>::mix(vb + (size_t)(j0 + jj) * row_bytes, i, p_sh[jj]);
                acc[k] = a;
            }
        }
        m = m_new;
        __syncthreads();   /* p_sh is rewritten by the next chunk */
    }
    const float inv = (float)(1.0 / l);
#pragma unroll
    for (int k = 0; k < AT_PER_THREAD; k++) {
        const int i = tid + k * AT_THREADS;
        if (i < hd) out[t * q_dim + (int64_t)h * hd + i] = acc[k] * inv;
    }
}

/* bytes of one head of hd values in the cache type, 0 if unsupported */
static size_t head_bytes_of(int kv_type, int64_t hd) {
    switch (kv_type) {
    case LM_TYPE_F32: return (size_t)hd * 4;
    case LM_TYPE_F16: return (size_t)hd * 2;
    case LM_TYPE_Q8_0: return hd % QK8_0 ? 0 : (size_t)(hd / QK8_0) * sizeof(block_q8_0);
    default: return 0;
    }
}

/* ------------------------------------------------------------ store */

/* row r of src goes to row lmc_pos(pos0_dev, pos0) + r of the cache */
__global__ void kv_store_f32_kernel(char *cache, size_t row_bytes, const int32_t *pos0_dev, int32_t pos0,
                                    const float *src, int64_t n_tokens, int kv_dim) {
    const int64_t p0 = lmc_pos(pos0_dev, pos0);
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n_tokens * kv_dim;
         k += (int64_t)gridDim.x * blockDim.x)
        ((float *)(cache + (p0 + k / kv_dim) * (int64_t)row_bytes))[k % kv_dim] = src[k];
}

/* lm_f32_to_half: the rounding of the CPU's lm_f32_to_f16_row */
__global__ void kv_store_f16_kernel(char *cache, size_t row_bytes, const int32_t *pos0_dev, int32_t pos0,
                                    const float *src, int64_t n_tokens, int kv_dim) {
    const int64_t p0 = lmc_pos(pos0_dev, pos0);
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n_tokens * kv_dim;
         k += (int64_t)gridDim.x * blockDim.x)
        ((lm_half *)(cache + (p0 + k / kv_dim) * (int64_t)row_bytes))[k % kv_dim] = lm_f32_to_half(src[k]);
}

/* both entry points: everything but the position is checked here (the
 * by-value one checks pos0 itself; a position in device memory is the
 * caller's to validate before it writes it) */
static int kv_store(int kv_type, void *cache, size_t kv_row_bytes, const int32_t *pos0_dev, int32_t pos0,
                    const float *src, int32_t n_tokens, int32_t kv_dim, const char *fn) {
    if (kv_type != LM_TYPE_F32 && kv_type != LM_TYPE_F16 && kv_type != LM_TYPE_Q8_0)
        return lmc_fail(LMC_ERR_TYPE, "%s: KV cache type %d is not F32, F16 or Q8_0", fn, kv_type);
    const size_t need = head_bytes_of(kv_type, kv_dim);
    if (kv_dim <= 0 || need == 0 || n_tokens < 0)
        return lmc_fail(LMC_ERR_SHAPE, "%s: kv_dim=%d (a multiple of 32 for Q8_0), n_tokens=%d", fn, kv_dim, n_tokens);
    if (kv_row_bytes < need)
        return lmc_fail(LMC_ERR_SHAPE, "%s: kv_row_bytes=%zu < %zu bytes of %d values", fn, kv_row_bytes, need, kv_dim);
    if (n_tokens == 0) return LMC_OK;
    if (!cache || !src) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    char *dst = (char *)cache;
    const int64_t total = (int64_t)n_tokens * kv_dim;
    const unsigned grid = lmc_grid(total, 256);
    switch (kv_type) {
    case LM_TYPE_F32:
        kv_store_f32_kernel<<<grid, 256>>>(dst, kv_row_bytes, pos0_dev, pos0, src, n_tokens, kv_dim);
        break;
    case LM_TYPE_F16:
        kv_store_f16_kernel<<<grid, 256>>>(dst, kv_row_bytes, pos0_dev, pos0, src, n_tokens, kv_dim);
        break;
    default: return lmc_launch_quantize_q8_0(src, dst, total / QK8_0, kv_dim / QK8_0, kv_row_bytes, pos0_dev, pos0, fn);
    }
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_kv_store(int kv_type, void *cache, size_t kv_row_bytes, int32_t pos0, const float *src,
                         int32_t n_tokens, int32_t kv_dim) {
    const char *fn = "lmc_kv_store";
    if (pos0 < 0) return lmc_fail(LMC_ERR_SHAPE, "%s: pos0=%d must be >= 0", fn, pos0);
    return kv_store(kv_type, cache, kv_row_bytes, NULL, pos0, src, n_tokens, kv_dim, fn);
}

LMC_API int lmc_kv_store_dev(int kv_type, void *cache, size_t kv_row_bytes, const int32_t *pos0_dev, const float *src,
                             int32_t n_tokens, int32_t kv_dim) {
    const char *fn = "lmc_kv_store_dev";
    if (!pos0_dev) return lmc_fail(LMC_ERR_ARG, "%s: NULL pos0_dev", fn);
    return kv_store(kv_type, cache, kv_row_bytes, pos0_dev, 0, src, n_tokens, kv_dim, fn);
}

/* -------------------------------------------------------- attention */

/* both entry points, as kv_store: the grid is (token, head) whatever the
 * position, so a capture replays at any position */
static int attention(float *out, const float *q, const void *k_cache, const void *v_cache, int kv_type,
                     size_t kv_row_bytes, int32_t n_tokens, const int32_t *pos0_dev, int32_t pos0, int32_t n_head,
                     int32_t n_head_kv, int32_t head_dim, float scale, int32_t window, const char *fn) {
    if (kv_type != LM_TYPE_F32 && kv_type != LM_TYPE_F16 && kv_type != LM_TYPE_Q8_0)
        return lmc_fail(LMC_ERR_TYPE, "%s: KV cache type %d is not F32, F16 or Q8_0", fn, kv_type);
    const size_t hb = head_bytes_of(kv_type, head_dim);
    if (head_dim <= 0 || head_dim > AT_MAX_HD || hb == 0)
        return lmc_fail(LMC_ERR_SHAPE, "%s: head_dim=%d must be in 1..%d (a multiple of 32 for Q8_0)", fn, head_dim,
                        (int)AT_MAX_HD);
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv || n_head > 65535)
        return lmc_fail(LMC_ERR_SHAPE, "%s: n_head=%d must be a positive multiple of n_head_kv=%d (and <= 65535)", fn,
                        n_head, n_head_kv);
    if (n_tokens < 0 || window < 0)
        return lmc_fail(LMC_ERR_SHAPE, "%s: n_tokens=%d and window=%d must be >= 0", fn, n_tokens, window);
    if (kv_row_bytes < (size_t)n_head_kv * hb)
        return lmc_fail(LMC_ERR_SHAPE, "%s: kv_row_bytes=%zu < %d heads of %zu bytes", fn, kv_row_bytes, n_head_kv, hb);
    if (n_tokens == 0) return LMC_OK;
    if (!out || !q || !k_cache || !v_cache) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    const dim3 grid((unsigned)n_tokens, (unsigned)n_head);
    const int group = n_head / n_head_kv;
    const char *kc = (const char *)k_cache, *vc = (const char *)v_cache;
    switch (kv_type) {
    case LM_TYPE_F32:
        attention_kernel<LM_TYPE_F32><<<grid, AT_THREADS>>>(out, q, kc, vc, kv_row_bytes, hb, pos0_dev, pos0, n_head,
                                                            group, head_dim, scale, window);
        break;
    case LM_TYPE_F16:
        attention_kernel<LM_TYPE_F16><<<grid, AT_THREADS>>>(out, q, kc, vc, kv_row_bytes, hb, pos0_dev, pos0, n_head,
                                                            group, head_dim, scale, window);
        break;
    default:
        attention_kernel<LM_TYPE_Q8_0><<<grid, AT_THREADS>>>(out, q, kc, vc, kv_row_bytes, hb, pos0_dev, pos0, n_head,
                                                             group, head_dim, scale, window);
        break;
    }
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_attention(float *out, const float *q, const void *k_cache, const void *v_cache, int kv_type,
                          size_t kv_row_bytes, int32_t n_tokens, int32_t pos0, int32_t n_head, int32_t n_head_kv,
                          int32_t head_dim, float scale, int32_t window) {
    const char *fn = "lmc_attention";
    if (pos0 < 0) return lmc_fail(LMC_ERR_SHAPE, "%s: pos0=%d must be >= 0", fn, pos0);
    return attention(out, q, k_cache, v_cache, kv_type, kv_row_bytes, n_tokens, NULL, pos0, n_head, n_head_kv, head_dim,
                     scale, window, fn);
}

LMC_API int lmc_attention_dev(float *out, const float *q, const void *k_cache, const void *v_cache, int kv_type,
                              size_t kv_row_bytes, int32_t n_tokens, const int32_t *pos0_dev, int32_t n_head,
                              int32_t n_head_kv, int32_t head_dim, float scale, int32_t window) {
    const char *fn = "lmc_attention_dev";
    if (!pos0_dev) return lmc_fail(LMC_ERR_ARG, "%s: NULL pos0_dev", fn);
    return attention(out, q, k_cache, v_cache, kv_type, kv_row_bytes, n_tokens, pos0_dev, 0, n_head, n_head_kv,
                     head_dim, scale, window, fn);
}
