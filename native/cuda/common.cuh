/* common.cuh — what every translation unit of liblamina_cuda shares: error
 * reporting, launch checks, the host-side type table and warp reductions. */
#ifndef LAMINA_CUDA_COMMON_CUH
#define LAMINA_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

/* All work goes to the calling thread's per-thread default stream, the one
 * lmc_graph_begin captures (lamina_cuda.h, Conventions): nvcc
 * --default-stream=per-thread (CMakeLists.txt) makes launches without a
 * stream and the stream-less runtime calls (cudaMemcpy) use it. */
#ifndef CUDA_API_PER_THREAD_DEFAULT_STREAM
#error "liblamina_cuda must be compiled with nvcc --default-stream=per-thread"
#endif
#define LMC_STREAM cudaStreamPerThread

#include "lamina_cuda.h"
#include "quants/types.h"

#define LMC_API extern "C" __attribute__((visibility("default")))

/* records the message for lmc_last_error() and returns code */
int lmc_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* a CUDA runtime call; fn names the op in the message */
#define LMC_CUDA(fn, expr)                                                                                         \
    do {                                                                                                           \
        const cudaError_t lmc_e_ = (expr);                                                                         \
        if (lmc_e_ != cudaSuccess)                                                                                 \
            return lmc_fail(lmc_e_ == cudaErrorMemoryAllocation ? LMC_ERR_NOMEM : LMC_ERR_CUDA, "%s: %s (%s)", fn, \
                            cudaGetErrorString(lmc_e_), #expr);                                                    \
    } while (0)

/* after a kernel launch: a bad configuration shows up here, not later */
#define LMC_LAUNCHED(fn) LMC_CUDA(fn, cudaGetLastError())

/* ------------------------------------------------------------ types */
typedef struct {
    int64_t blck;       /* values per block */
    size_t bytes;       /* bytes per block */
    int partner;        /* activation type of the dot */
    int kind;           /* LM_KIND_FLOAT, _QUANT (weights) or _ACT (activations only) */
} lmc_type_info;

/* NULL unless type is in the list of types (quants/types.h): a supported
 * weight type or one of the activation formats Q8_1/Q8_K */
const lmc_type_info *lmc_type(int type);

static inline size_t lmc_rowb(const lmc_type_info *t, int64_t n) { return (size_t)(n / t->blck) * t->bytes; }

/* grid size for n items in blocks of threads, capped to what a launch takes
 * (kernels that see a capped grid loop with a grid stride) */
static inline unsigned lmc_grid(int64_t n, int threads) {
    const int64_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 1 ? 1 : g > 0x7fffffff ? 0x7fffffff : g);
}

/* ------------------------------------------------------- positions */
/* The position an op runs at. The by-value ops pass pos_dev NULL and the
 * position in pos; the _dev ops pass a device pointer, read when the kernel
 * runs, so that a captured graph replays at whatever position the caller
 * wrote there since (one kernel body serves both). */
__device__ __forceinline__ int32_t lmc_pos(const int32_t *pos_dev, int32_t pos) { return pos_dev ? *pos_dev : pos; }

/* ------------------------------------------------------ reductions */
template <typename T> __device__ __forceinline__ T lmc_warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float lmc_warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

/* sum over the whole thread block (blockDim.x a multiple of 32, <= 1024);
 * every thread gets the result; sh holds 32 values */
template <typename T> __device__ T lmc_block_sum(T v, T *sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = lmc_warp_sum(v);
    __syncthreads();   /* sh may still be read by a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (T)0;
    return lmc_warp_sum(v);
}

__device__ inline float lmc_block_max(float v, float *sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = lmc_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return lmc_warp_max(v);
}

/* ------------------------------------------------- cross-file kernels */
/* Q8_0 quantization of nblk 32-value blocks, block b from src + b * 32 to
 * (char *)dst + (row0 + b / per_row) * dst_row_bytes + (b % per_row) * 34,
 * row0 = lmc_pos(row0_dev, row0_val); one warp per block (used for
 * activations, row0 0, and for Q8_0 KV-cache rows, row0 the position) */
int lmc_launch_quantize_q8_0(const float *src, void *dst, int64_t nblk, int64_t per_row, size_t dst_row_bytes,
                             const int32_t *row0_dev, int32_t row0_val, const char *fn);

/* count values of a weight type -> dst (f16 when out_f16, else f32); the
 * rows of a matrix are contiguous, so a tile of rows is one flat run */
int lmc_launch_dequant(int type, const void *w, int64_t count, void *dst, int out_f16, const char *fn);

/* y = W x by cuBLAS: W f16 or f32 [m][k] row-major (wtype CUDA_R_16F/32F),
 * x [ncols][k] of the same type, y f32 with leading dimension ldy */
int lmc_gemm(const void *w, int wtype_is_f16, int64_t m, int64_t k, const void *x, int64_t ncols, float *y, int64_t ldy,
             const char *fn);

/* x f32 [ncols][n] -> the dot partner of weight_type (Q8_0/Q8_1/Q8_K) */
int lmc_quantize_partner(int weight_type, const float *x, int64_t n, int64_t ncols, void *out, const char *fn);

/* x f32 [count] -> f16 */
int lmc_launch_f32_to_f16(const float *x, void *dst, int64_t count, const char *fn);

#endif /* LAMINA_CUDA_COMMON_CUH */
