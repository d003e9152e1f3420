/* quantize.cu — activations into the dot partners (Q8_0, Q8_1, Q8_K) and
 * weights back to floats, on the GPU.
 *
 * The quantizers mirror ggml-cpu's x86 quantize_row_q8_{0,1,K} (native/quants/
 * q8_0.c, q8_1.c, q8_K.c): the per-value arithmetic comes from the shared
 * headers (quants/legacy.h, q8_1.h, q8_K.h), and the reductions (max |x|,
 * integer sums) are exact in any order, so the bytes equal the CPU's. The
 * dequantizer reads each weight with the type's lm_dequant1_<t>
 * (quants/<type>.h), the function the CPU rows read it with. (NaN inputs are the exception: fmaxf drops NaNs where the
 * CPU's comparison chain may keep one; NaN activations are garbage anyway.) */
#include <cuda_fp16.h>

#include "common.cuh"
#include "wtypes.cuh"

enum { QTHREADS = 256, QWARPS = QTHREADS / 32 };

/* ------------------------------------------------------ Q8_0 / Q8_1 */

/* one warp per 32-value block; lane j quantizes value j */
__global__ void quantize_q8_0_kernel(const float *src, char *dst, int64_t nblk, int64_t per_row, size_t row_bytes,
                                     const int32_t *row0_dev, int32_t row0_val) {
    const int lane = threadIdx.x % 32;
    const int64_t stride = (int64_t)gridDim.x * QWARPS;
    const int64_t row0 = lmc_pos(row0_dev, row0_val);
    for (int64_t b = (int64_t)blockIdx.x * QWARPS + threadIdx.x / 32; b < nblk; b += stride) {
        const float v = src[b * QK8_0 + lane];
        const float amax = lmc_warp_max(fabsf(v)), d = lm_q8_act_scale(amax);
        block_q8_0 *out = (block_q8_0 *)(dst + (row0 + b / per_row) * (int64_t)row_bytes) + b % per_row;
        out->qs[lane] = lm_q8_act_quant(v, lm_q8_act_inv(amax));
        if (lane == 0) out->d = lm_f32_to_half(d);
    }
}

int lmc_launch_quantize_q8_0(const float *src, void *dst, int64_t nblk, int64_t per_row, size_t dst_row_bytes,
                             const int32_t *row0_dev, int32_t row0_val, const char *fn) {
    if (nblk <= 0) return LMC_OK;
    quantize_q8_0_kernel<<<lmc_grid(nblk, QWARPS), QTHREADS>>>(src, (char *)dst, nblk, per_row, dst_row_bytes, row0_dev,
                                                               row0_val);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

/* Q8_1 adds s = d * sum(quants) */
__global__ void quantize_q8_1_kernel(const float *src, block_q8_1 *dst, int64_t nblk) {
    const int lane = threadIdx.x % 32;
    const int64_t stride = (int64_t)gridDim.x * QWARPS;
    for (int64_t b = (int64_t)blockIdx.x * QWARPS + threadIdx.x / 32; b < nblk; b += stride) {
        const float v = src[b * QK8_1 + lane];
        const float amax = lmc_warp_max(fabsf(v)), d = lm_q8_act_scale(amax);
        const int8_t q = lm_q8_act_quant(v, lm_q8_act_inv(amax));
        const int sum = lmc_warp_sum((int)q);
        dst[b].qs[lane] = q;
        if (lane == 0) {
            dst[b].d = lm_f32_to_half(d);
            dst[b].s = lm_q8_1_s(sum, d);
        }
    }
}

/* -------------------------------------------------------------- Q8_K */

/* one warp per 256-value block; lane l owns values 8l..8l+7, so lanes 2g
 * and 2g+1 together hold the 16-run of bsums[g] */
__global__ void quantize_q8_K_kernel(const float *src, block_q8_K *dst, int64_t nblk) {
    const int lane = threadIdx.x % 32;
    const int64_t stride = (int64_t)gridDim.x * QWARPS;
    for (int64_t b = (int64_t)blockIdx.x * QWARPS + threadIdx.x / 32; b < nblk; b += stride) {
        const float *x = src + b * QK_K + 8 * lane;
        float v[8];
        /* the first largest |x| and its signed value: ties go to the lower index */
        float amax = 0.0f, max = 0.0f;
        int idx = QK_K;
        for (int k = 0; k < 8; k++) {
            v[k] = x[k];
            const float ax = fabsf(v[k]);
            if (ax > amax) {
                amax = ax;
                max = v[k];
                idx = 8 * lane + k;
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            const float oa = __shfl_xor_sync(0xffffffffu, amax, off);
            const float om = __shfl_xor_sync(0xffffffffu, max, off);
            const int oi = __shfl_xor_sync(0xffffffffu, idx, off);
            if (oa > amax || (oa == amax && oi < idx)) {
                amax = oa;
                max = om;
                idx = oi;
            }
        }
        block_q8_K *out = dst + b;
        if (!amax) {
            /* as the CPU: an all-zero block is all zero bytes, bsums included */
            for (int k = 0; k < 8; k++) out->qs[8 * lane + k] = 0;
            if (lane < QK_K / 16) out->bsums[lane] = 0;
            if (lane == 0) out->d = 0.0f;
            continue;
        }
        const float iscale = lm_q8_K_iscale(max);
        int sum = 0;
        for (int k = 0; k < 8; k++) {
            const int8_t q = lm_q8_K_quant(v[k], iscale);
            out->qs[8 * lane + k] = q;
            sum += q;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        if (lane % 2 == 0) out->bsums[lane / 2] = (int16_t)sum;
        if (lane == 0) out->d = lm_q8_K_d(iscale);
    }
}

/* x [ncols][n] -> partner rows [ncols][row_bytes(partner, n)]; n is a
 * multiple of the partner's block, so the blocks of all rows are one run */
static int quantize_rows(int partner, const float *x, int64_t n, int64_t ncols, void *out, const char *fn) {
    const lmc_type_info *at = lmc_type(partner);
    const int64_t nblk = n / at->blck * ncols;
    if (nblk <= 0) return LMC_OK;
    switch (partner) {
    case LM_TYPE_Q8_0: return lmc_launch_quantize_q8_0(x, out, nblk, nblk, 0, NULL, 0, fn);
    case LM_TYPE_Q8_1: quantize_q8_1_kernel<<<lmc_grid(nblk, QWARPS), QTHREADS>>>(x, (block_q8_1 *)out, nblk); break;
    case LM_TYPE_Q8_K: quantize_q8_K_kernel<<<lmc_grid(nblk, QWARPS), QTHREADS>>>(x, (block_q8_K *)out, nblk); break;
    default: return lmc_fail(LMC_ERR_TYPE, "%s: no GPU quantizer for activation type %d", fn, partner);
    }
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

/* --------------------------------------------------------- dequantize */

template <typename O> __device__ __forceinline__ O lmc_out(float v);
template <> __device__ __forceinline__ float lmc_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half lmc_out<__half>(float v) { return __float2half_rn(v); }

template <int T, typename O> __global__ void dequant_q_kernel(const void *w, int64_t count, O *dst) {
    typedef lmc_qt<T> tr;
    const typename tr::W *blocks = (const typename tr::W *)w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = lmc_out<O>(tr::dequant1(&blocks[i / tr::QK], (int)(i % tr::QK)));
}

template <int T, typename O> __global__ void dequant_f_kernel(const void *w, int64_t count, O *dst) {
    typedef lmc_ft<T> tr;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = lmc_out<O>(tr::get((const typename tr::W *)w, i));
}

template <typename O> static int launch_dequant(int type, const void *w, int64_t count, O *dst, const char *fn) {
    const unsigned grid = lmc_grid(count, 256);
    int known = 0;
#define LMC_DQ(ID) (dequant_q_kernel<ID, O><<<grid, 256>>>(w, count, dst), known = 1)
#define LMC_DF(ID) (dequant_f_kernel<ID, O><<<grid, 256>>>(w, count, dst), known = 1)
    LMC_FOR_QTYPE(type, LMC_DQ);
    LMC_FOR_FTYPE(type, LMC_DF);
#undef LMC_DQ
#undef LMC_DF
    if (!known) return lmc_fail(LMC_ERR_TYPE, "%s: type %d cannot be dequantized on the GPU", fn, type);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}

int lmc_launch_dequant(int type, const void *w, int64_t count, void *dst, int out_f16, const char *fn) {
    if (count <= 0) return LMC_OK;
    return out_f16 ? launch_dequant(type, w, count, (__half *)dst, fn)
                   : launch_dequant(type, w, count, (float *)dst, fn);
}

/* ------------------------------------------------- float conversions */

__global__ void to_half_kernel(const float *x, lm_half *y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = lm_f32_to_half(x[i]);
}

__global__ void to_bf16_kernel(const float *x, lm_bf16 *y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = lm_f32_to_bf16(x[i]);
}

/* ------------------------------------------------------------ C ABI */

LMC_API int lmc_quantize_activations(int weight_type, const float *x, int64_t n, int64_t ncols, void *out) {
    const char *fn = "lmc_quantize_activations";
    if (!lmc_type_supported(weight_type))
        return lmc_fail(LMC_ERR_TYPE, "%s: unsupported weight type %d", fn, weight_type);
    const lmc_type_info *at = lmc_type(lmc_type(weight_type)->partner);
    if (n <= 0 || ncols < 0 || n % at->blck)
        return lmc_fail(LMC_ERR_SHAPE, "%s: n=%lld must be a positive multiple of %lld and ncols=%lld >= 0", fn,
                        (long long)n, (long long)at->blck, (long long)ncols);
    if (ncols == 0) return LMC_OK;
    if (!x || !out) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    if (lmc_is_float_type(weight_type)) {
        /* the float types are their own partners: a conversion, rounded by
         * the shared lm_f32_to_half / lm_f32_to_bf16 as the CPU rounds */
        const int64_t count = n * ncols;
        switch (weight_type) {
        case LM_TYPE_F32:
            LMC_CUDA(fn, cudaMemcpyAsync(out, x, (size_t)count * sizeof(float), cudaMemcpyDeviceToDevice, LMC_STREAM));
            return LMC_OK;
        case LM_TYPE_F16: to_half_kernel<<<lmc_grid(count, 256), 256>>>(x, (lm_half *)out, count); break;
        default: to_bf16_kernel<<<lmc_grid(count, 256), 256>>>(x, (lm_bf16 *)out, count); break;
        }
        LMC_LAUNCHED(fn);
        return LMC_OK;
    }
    return quantize_rows(lmc_type(weight_type)->partner, x, n, ncols, out, fn);
}

/* the activation quantizer the mat-vec path uses (matmul.cu) */
int lmc_quantize_partner(int weight_type, const float *x, int64_t n, int64_t ncols, void *out, const char *fn) {
    return quantize_rows(lmc_type(weight_type)->partner, x, n, ncols, out, fn);
}

LMC_API int lmc_dequantize(int type, const void *src, int64_t n_total, float *dst) {
    const char *fn = "lmc_dequantize";
    const lmc_type_info *t = lmc_type(type);
    if (!t || t->kind == LM_KIND_ACT) return lmc_fail(LMC_ERR_TYPE, "%s: unsupported type %d", fn, type);
    if (n_total < 0 || n_total % t->blck)
        return lmc_fail(LMC_ERR_SHAPE, "%s: n_total=%lld is not a non-negative multiple of %lld", fn,
                        (long long)n_total, (long long)t->blck);
    if (n_total == 0) return LMC_OK;
    if (!src || !dst) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    return lmc_launch_dequant(type, src, n_total, dst, 0, fn);
}
