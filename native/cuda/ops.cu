/* ops.cu — the row-wise steps of a decoder layer on the GPU: RMSNorm,
 * softmax, gated activations, residual add, scales, biases, RoPE.
 *
 * Each mirrors its scalar reference in native/model/forward_ops.c (sums in
 * double where that sums in double, the same expressions per element); only
 * the order of the parallel sums differs. */
#include "common.cuh"

enum { ROW_THREADS = 256, EW_THREADS = 256 };

/* ------------------------------------------------------------ RMSNorm */

/* one thread block per row */
__global__ void __launch_bounds__(ROW_THREADS)
    rms_norm_kernel(float *out, const float *x, const float *w, int64_t n, float eps, float add_one) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *yr = out + (int64_t)blockIdx.x * n;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = lmc_block_sum(ss, sh);
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    /* in place is safe: every thread rewrites only values it read itself,
     * and all reads for the sum happened before the block-wide reduction */
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * scale * (w[i] + add_one);
}

LMC_API int lmc_rms_norm(float *out, const float *x, const float *w, int64_t rows, int64_t n, float eps,
                         float add_one) {
    const char *fn = "lmc_rms_norm";
    if (rows < 0 || n <= 0) return lmc_fail(LMC_ERR_SHAPE, "%s: rows=%lld n=%lld", fn, (long long)rows, (long long)n);
    if (rows > 0x7fffffff) return lmc_fail(LMC_ERR_SHAPE, "%s: rows=%lld exceeds the grid", fn, (long long)rows);
    if (rows == 0) return LMC_OK;
    if (!out || !x || !w) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    rms_norm_kernel<<<(unsigned)rows, ROW_THREADS>>>(out, x, w, n, eps, add_one);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

/* ------------------------------------------------------------ softmax */

__global__ void __launch_bounds__(ROW_THREADS) softmax_kernel(float *x, int64_t n) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    float *xr = x + (int64_t)blockIdx.x * n;
    float max = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) max = fmaxf(max, xr[i]);
    max = lmc_block_max(max, shf);
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(xr[i] - max);
        xr[i] = e;
        sum += e;
    }
    sum = lmc_block_sum(sum, shd);
    const float inv = (float)(1.0 / sum);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] *= inv;
}

LMC_API int lmc_softmax(float *x, int64_t rows, int64_t n) {
    const char *fn = "lmc_softmax";
    if (rows < 0 || n <= 0 || rows > 0x7fffffff)
        return lmc_fail(LMC_ERR_SHAPE, "%s: rows=%lld n=%lld", fn, (long long)rows, (long long)n);
    if (rows == 0) return LMC_OK;
    if (!x) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    softmax_kernel<<<(unsigned)rows, ROW_THREADS>>>(x, n);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

/* -------------------------------------------------------- elementwise */

#define LMC_EW_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__global__ void silu_mul_kernel(float *x, const float *up, int64_t n) {
    LMC_EW_LOOP(i, n) x[i] = x[i] / (1.0f + expf(-x[i])) * up[i];
}

__global__ void gelu_tanh_mul_kernel(float *x, const float *up, int64_t n) {
    const float sqrt_2_over_pi = 0.79788456080286535588f;
    LMC_EW_LOOP(i, n) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(sqrt_2_over_pi * v * (1.0f + 0.044715f * v * v))) * up[i];
    }
}

__global__ void add_kernel(float *x, const float *y, int64_t n) { LMC_EW_LOOP(i, n) x[i] += y[i]; }

__global__ void scale_kernel(float *x, float s, int64_t n) { LMC_EW_LOOP(i, n) x[i] *= s; }

__global__ void add_bias_kernel(float *x, const float *b, int64_t rows, int64_t n) {
    LMC_EW_LOOP(i, rows * n) x[i] += b[i % n];
}

static int check_n(int64_t n, const char *fn) {
    if (n < 0) return lmc_fail(LMC_ERR_SHAPE, "%s: n=%lld is negative", fn, (long long)n);
    return LMC_OK;
}

LMC_API int lmc_act_mul(float *x, const float *up, int64_t n, int act) {
    const char *fn = "lmc_act_mul";
    int rc = check_n(n, fn);
    if (rc) return rc;
    if (act != LMC_ACT_SILU && act != LMC_ACT_GELU_TANH)
        return lmc_fail(LMC_ERR_ARG, "%s: unknown activation %d", fn, act);
    if (n == 0) return LMC_OK;
    if (!x || !up) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    if (act == LMC_ACT_SILU)
        silu_mul_kernel<<<lmc_grid(n, EW_THREADS), EW_THREADS>>>(x, up, n);
    else
        gelu_tanh_mul_kernel<<<lmc_grid(n, EW_THREADS), EW_THREADS>>>(x, up, n);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_add(float *x, const float *y, int64_t n) {
    const char *fn = "lmc_add";
    int rc = check_n(n, fn);
    if (rc) return rc;
    if (n == 0) return LMC_OK;
    if (!x || !y) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    add_kernel<<<lmc_grid(n, EW_THREADS), EW_THREADS>>>(x, y, n);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_scale(float *x, float s, int64_t n) {
    const char *fn = "lmc_scale";
    int rc = check_n(n, fn);
    if (rc) return rc;
    if (n == 0) return LMC_OK;
    if (!x) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    scale_kernel<<<lmc_grid(n, EW_THREADS), EW_THREADS>>>(x, s, n);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_add_bias(float *x, const float *b, int64_t rows, int64_t n) {
    const char *fn = "lmc_add_bias";
    if (rows < 0 || n <= 0) return lmc_fail(LMC_ERR_SHAPE, "%s: rows=%lld n=%lld", fn, (long long)rows, (long long)n);
    if (rows == 0) return LMC_OK;
    if (!x || !b) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    add_bias_kernel<<<lmc_grid(rows * n, EW_THREADS), EW_THREADS>>>(x, b, rows, n);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

/* --------------------------------------------------------------- RoPE */

/* cs [n_tokens][n_rot]: a thread per (token, pair); the first position is
 * lmc_pos(pos0_dev, pos0) */
__global__ void rope_cs_kernel(float *cs, const double *inv_freq, int half, const int32_t *pos0_dev, int32_t pos0,
                               int64_t total) {
    const int64_t p0 = lmc_pos(pos0_dev, pos0);
    LMC_EW_LOOP(k, total) {
        const int64_t t = k / half;
        const int i = (int)(k % half);
        const double theta = (double)(p0 + t) * inv_freq[i];
        cs[2 * k] = (float)cos(theta);
        cs[2 * k + 1] = (float)sin(theta);
    }
}

/* both entry points: the shapes are checked here, the position (when by
 * value) by the caller; the grid depends on the shapes only */
static int rope_cs(float *cs, const double *inv_freq, int32_t n_rot, const int32_t *pos0_dev, int32_t pos0,
                   int32_t n_tokens, const char *fn) {
    if (n_rot <= 0 || n_rot % 2 || n_tokens < 0)
        return lmc_fail(LMC_ERR_SHAPE, "%s: n_rot=%d must be positive and even, n_tokens=%d >= 0", fn, n_rot, n_tokens);
    if (n_tokens == 0) return LMC_OK;
    if (!cs || !inv_freq) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    const int64_t total = (int64_t)n_tokens * (n_rot / 2);
    rope_cs_kernel<<<lmc_grid(total, EW_THREADS), EW_THREADS>>>(cs, inv_freq, n_rot / 2, pos0_dev, pos0, total);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

LMC_API int lmc_rope_cs(float *cs, const double *inv_freq, int32_t n_rot, int32_t pos0, int32_t n_tokens) {
    const char *fn = "lmc_rope_cs";
    if (pos0 < 0) return lmc_fail(LMC_ERR_SHAPE, "%s: pos0=%d must be >= 0", fn, pos0);
    return rope_cs(cs, inv_freq, n_rot, NULL, pos0, n_tokens, fn);
}

LMC_API int lmc_rope_cs_dev(float *cs, const double *inv_freq, int32_t n_rot, const int32_t *pos0_dev,
                            int32_t n_tokens) {
    const char *fn = "lmc_rope_cs_dev";
    /* checked even when n_tokens is 0: a caller that passes NULL has a bug
     * whatever the size */
    if (!pos0_dev) return lmc_fail(LMC_ERR_ARG, "%s: NULL pos0_dev", fn);
    return rope_cs(cs, inv_freq, n_rot, pos0_dev, 0, n_tokens, fn);
}

/* a thread per (row, head, pair), the arithmetic of lm_rope_head */
__global__ void rope_kernel(float *x, int64_t rows, int n_heads, int head_dim, int n_rot, const float *cs, int neox) {
    const int half = n_rot / 2;
    const int64_t total = rows * n_heads * half;
    LMC_EW_LOOP(k, total) {
        const int i = (int)(k % half);
        const int64_t rh = k / half, r = rh / n_heads;
        float *xh = x + rh * head_dim;
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        const float c = cs[r * n_rot + 2 * i], s = cs[r * n_rot + 2 * i + 1];
        const float x0 = xh[a], x1 = xh[b];
        xh[a] = x0 * c - x1 * s;
        xh[b] = x0 * s + x1 * c;
    }
}

LMC_API int lmc_rope(float *x, int64_t rows, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float *cs,
                     int layout) {
    const char *fn = "lmc_rope";
    if (rows < 0 || n_heads <= 0 || head_dim <= 0 || n_rot <= 0 || n_rot % 2 || n_rot > head_dim)
        return lmc_fail(LMC_ERR_SHAPE, "%s: rows=%lld n_heads=%d head_dim=%d n_rot=%d (n_rot even, <= head_dim)", fn,
                        (long long)rows, n_heads, head_dim, n_rot);
    if (layout != LMC_ROPE_NORMAL && layout != LMC_ROPE_NEOX)
        return lmc_fail(LMC_ERR_ARG, "%s: unknown layout %d", fn, layout);
    if (rows == 0) return LMC_OK;
    if (!x || !cs) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    const int64_t total = rows * n_heads * (n_rot / 2);
    rope_kernel<<<lmc_grid(total, EW_THREADS), EW_THREADS>>>(x, rows, n_heads, head_dim, n_rot, cs,
                                                             layout == LMC_ROPE_NEOX);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}
