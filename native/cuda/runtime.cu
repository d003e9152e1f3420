/* runtime.cu — errors, devices, memory, the type table and the cuBLAS handles
 * of liblamina_cuda. */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.cuh"

/* ------------------------------------------------------------ errors */

static thread_local char t_error[512];

int lmc_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_error, sizeof t_error, fmt, ap);
    va_end(ap);
    return code;
}

LMC_API const char *lmc_last_error(void) { return t_error; }

LMC_API int lmc_abi_version(void) { return 3; }   /* 2: graphs, per-thread stream; 3: _dev position ops */

/* ------------------------------------------------------------- types */

const lmc_type_info *lmc_type(int type) {
#define LMC_T(ID, t, qk, block, PARTNER, KIND, ...)                                                 \
    case LM_TYPE_##ID: {                                                                            \
        static const lmc_type_info info = { qk, sizeof(block), LM_TYPE_##PARTNER, LM_KIND_##KIND }; \
        return &info;                                                                               \
    }
    switch (type) {
        LM_BLOCK_TYPES(LMC_T)
    default: return NULL;
    }
#undef LMC_T
}

LMC_API int lmc_type_supported(int type) {
    const lmc_type_info *t = lmc_type(type);
    /* Q8_1 and Q8_K are activation formats only; Q8_0 is both */
    return t != NULL && t->kind != LM_KIND_ACT;
}

LMC_API size_t lmc_row_bytes(int type, int64_t n) {
    const lmc_type_info *t = lmc_type(type);
    if (!t || n < 0 || n % t->blck) return 0;
    return lmc_rowb(t, n);
}

/* ----------------------------------------------------------- devices */

LMC_API int lmc_device_count(void) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorNotSupported) {
        cudaGetLastError();   /* not sticky: clear it so later calls report their own */
        lmc_fail(LMC_ERR_NO_DEVICE, "no usable CUDA device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        lmc_fail(LMC_ERR_CUDA, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    return n;
}

static int check_device(int device, const char *fn) {
    int n = 0;
    LMC_CUDA(fn, cudaGetDeviceCount(&n));
    if (device < 0 || device >= n) return lmc_fail(LMC_ERR_ARG, "%s: device %d is outside [0, %d)", fn, device, n);
    return LMC_OK;
}

LMC_API int lmc_device_name(int device, char *buf, size_t buf_len) {
    if (!buf || buf_len == 0) return lmc_fail(LMC_ERR_ARG, "lmc_device_name: NULL or empty buffer");
    buf[0] = 0;
    int rc = check_device(device, "lmc_device_name");
    if (rc) return rc;
    cudaDeviceProp prop;
    LMC_CUDA("lmc_device_name", cudaGetDeviceProperties(&prop, device));
    snprintf(buf, buf_len, "%s", prop.name);
    return LMC_OK;
}

LMC_API int lmc_device_capability(int device, int *major, int *minor) {
    if (!major || !minor) return lmc_fail(LMC_ERR_ARG, "lmc_device_capability: NULL out-parameter");
    int rc = check_device(device, "lmc_device_capability");
    if (rc) return rc;
    LMC_CUDA("lmc_device_capability", cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, device));
    LMC_CUDA("lmc_device_capability", cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, device));
    return LMC_OK;
}

LMC_API int lmc_device_memory(int device, size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return lmc_fail(LMC_ERR_ARG, "lmc_device_memory: NULL out-parameter");
    int rc = check_device(device, "lmc_device_memory");
    if (rc) return rc;
    int cur = 0;
    LMC_CUDA("lmc_device_memory", cudaGetDevice(&cur));
    LMC_CUDA("lmc_device_memory", cudaSetDevice(device));
    const cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
    cudaSetDevice(cur);
    LMC_CUDA("lmc_device_memory", e);
    return LMC_OK;
}

LMC_API int lmc_set_device(int device) {
    int rc = check_device(device, "lmc_set_device");
    if (rc) return rc;
    LMC_CUDA("lmc_set_device", cudaSetDevice(device));
    return LMC_OK;
}

/* ------------------------------------------------------------ memory */

LMC_API int lmc_malloc(void **ptr, size_t bytes) {
    if (!ptr) return lmc_fail(LMC_ERR_ARG, "lmc_malloc: NULL out-pointer");
    *ptr = NULL;
    if (bytes == 0) return lmc_fail(LMC_ERR_ARG, "lmc_malloc: 0 bytes requested");
    const cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return lmc_fail(e == cudaErrorMemoryAllocation ? LMC_ERR_NOMEM : LMC_ERR_CUDA, "lmc_malloc: %zu bytes: %s",
                        bytes, cudaGetErrorString(e));
    }
    return LMC_OK;
}

LMC_API int lmc_free(void *ptr) {
    if (!ptr) return LMC_OK;
    LMC_CUDA("lmc_free", cudaFree(ptr));
    return LMC_OK;
}

/* h2d and d2h: cudaMemcpy on this thread's stream, which returns when the
 * host buffer may be reused (d2h: when the copy, and so all work queued
 * before it, is done). d2d: stream-ordered and asynchronous, as a kernel; the
 * Async form is the one a graph capture may record. */
static int copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, const char *fn) {
    if (bytes == 0) return LMC_OK;
    if (!dst || !src) return lmc_fail(LMC_ERR_ARG, "%s: NULL pointer", fn);
    if (kind == cudaMemcpyDeviceToDevice)
        LMC_CUDA(fn, cudaMemcpyAsync(dst, src, bytes, kind, LMC_STREAM));
    else
        LMC_CUDA(fn, cudaMemcpy(dst, src, bytes, kind));
    return LMC_OK;
}

LMC_API int lmc_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    return copy(dst, src, bytes, cudaMemcpyHostToDevice, "lmc_memcpy_h2d");
}
LMC_API int lmc_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    return copy(dst, src, bytes, cudaMemcpyDeviceToHost, "lmc_memcpy_d2h");
}
LMC_API int lmc_memcpy_d2d(void *dst, const void *src, size_t bytes) {
    return copy(dst, src, bytes, cudaMemcpyDeviceToDevice, "lmc_memcpy_d2d");
}

LMC_API int lmc_memset(void *dst, int value, size_t bytes) {
    if (bytes == 0) return LMC_OK;
    if (!dst) return lmc_fail(LMC_ERR_ARG, "lmc_memset: NULL pointer");
    LMC_CUDA("lmc_memset", cudaMemsetAsync(dst, value, bytes, LMC_STREAM));
    return LMC_OK;
}

/* the whole device, every thread's stream: what a caller needs before it
 * hands the device's buffers to another host thread */
LMC_API int lmc_synchronize(void) {
    LMC_CUDA("lmc_synchronize", cudaDeviceSynchronize());
    return LMC_OK;
}

/* ------------------------------------------------------------ cuBLAS */

enum { MAX_DEVICES = 64 };
static cublasHandle_t g_handles[MAX_DEVICES];
static pthread_mutex_t g_handles_lock = PTHREAD_MUTEX_INITIALIZER;

/* cuBLAS is compiled without --default-stream=per-thread: a new handle
 * would launch on the legacy default stream, outside the order of our
 * kernels. cudaStreamPerThread names the calling thread's stream at each
 * call, so one handle per device serves every thread. */
static cublasStatus_t create_handle(cublasHandle_t *h) {
    cublasStatus_t st = cublasCreate(h);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    st = cublasSetStream(*h, LMC_STREAM);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(*h);
        *h = NULL;
    }
    return st;
}

static int handle_for_current(cublasHandle_t *out, const char *fn) {
    int dev = 0;
    LMC_CUDA(fn, cudaGetDevice(&dev));
    if (dev < 0 || dev >= MAX_DEVICES) return lmc_fail(LMC_ERR_ARG, "%s: device %d >= %d", fn, dev, MAX_DEVICES);
    pthread_mutex_lock(&g_handles_lock);
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (!g_handles[dev]) st = create_handle(&g_handles[dev]);
    *out = g_handles[dev];
    pthread_mutex_unlock(&g_handles_lock);
    if (st != CUBLAS_STATUS_SUCCESS)
        return lmc_fail(LMC_ERR_CUBLAS, "%s: cublasCreate/cublasSetStream: %s", fn, cublasGetStatusString(st));
    return LMC_OK;
}

LMC_API void lmc_release(void) {
    pthread_mutex_lock(&g_handles_lock);
    for (int d = 0; d < MAX_DEVICES; d++) {
        if (!g_handles[d]) continue;
        int cur = 0;
        cudaGetDevice(&cur);
        cudaSetDevice(d);
        cublasDestroy(g_handles[d]);
        cudaSetDevice(cur);
        g_handles[d] = NULL;
    }
    pthread_mutex_unlock(&g_handles_lock);
}

/* Row-major y[c][r] = sum_k W[r][k] x[c][k] is, in cuBLAS's column-major
 * terms, Y (m x ncols, ld ldy) = W^T' ... i.e. op(A) = A^T with A = W seen as
 * a k x m column-major matrix (lda = k), B = x as k x ncols (ldb = k). */
int lmc_gemm(const void *w, int wtype_is_f16, int64_t m, int64_t k, const void *x, int64_t ncols, float *y, int64_t ldy,
             const char *fn) {
    if (m > INT_MAX || k > INT_MAX || ncols > INT_MAX || ldy > INT_MAX)
        return lmc_fail(LMC_ERR_SHAPE, "%s: GEMM size m=%lld k=%lld ncols=%lld exceeds cuBLAS's int range", fn,
                        (long long)m, (long long)k, (long long)ncols);
    cublasHandle_t h = NULL;
    int rc = handle_for_current(&h, fn);
    if (rc) return rc;
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType_t t = wtype_is_f16 ? CUDA_R_16F : CUDA_R_32F;
    const cublasStatus_t st =
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)ncols, (int)k, &alpha, w, t, (int)k, x, t, (int)k, &beta,
                     y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return lmc_fail(LMC_ERR_CUBLAS, "%s: cublasGemmEx: %s", fn, cublasGetStatusString(st));
    return LMC_OK;
}

/* ------------------------------------------------- f32 -> f16 convert */

__global__ void f32_to_f16_kernel(const float *x, __half *y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

int lmc_launch_f32_to_f16(const float *x, void *dst, int64_t count, const char *fn) {
    if (count <= 0) return LMC_OK;
    f32_to_f16_kernel<<<lmc_grid(count, 256), 256>>>(x, (__half *)dst, count);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}
