/* lamina_cuda.h — the C ABI of liblamina_cuda, the CUDA op library the core
 * dlopens when layers are offloaded (--gpu-layers). Plain C, no macros in the
 * declarations, so it can be read by cffi/ctypes as it is.
 *
 * Conventions
 *  - Every pointer an op takes is a device pointer (from lmc_malloc), unless
 *    it is a host out-parameter (names, memory info) or the host side of a copy.
 *  - Every function returns LMC_OK (0) or a negative LMC_ERR_* code; the
 *    message is in lmc_last_error() (thread-local). Arguments are checked on
 *    the host before any CUDA call, so a bad shape never reaches a kernel.
 *  - All work goes to the per-thread default stream (cudaStreamPerThread) of
 *    the calling host thread on its current device, in order: ops return
 *    before their kernels finish; lmc_memcpy_d2h waits for this thread's
 *    work, lmc_synchronize for the whole device's. Work of two host threads
 *    is not ordered: a caller that moves to another thread calls
 *    lmc_synchronize first. One host thread at a time.
 *  - That stream can be captured into a CUDA graph (lmc_graph_begin) and the
 *    graph replayed as one launch (see CUDA graphs below for what captures).
 *  - Row-major shapes, as the CPU forward pass (native/model/forward.c)
 *    lays its buffers out; each op names its shapes.
 *  - Weight bytes are ggml blocks exactly as in the GGUF (native/quants/blocks.h).
 */
#ifndef LAMINA_CUDA_H
#define LAMINA_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LMC_OK = 0,
    LMC_ERR_TYPE = -1,        /* type id unknown or not supported on the GPU */
    LMC_ERR_SHAPE = -2,       /* a size is negative, too large, or not a multiple of a block */
    LMC_ERR_NOMEM = -4,       /* device allocation failed */
    LMC_ERR_ARG = -5,         /* NULL pointer, bad enum, scratch too small */
    LMC_ERR_CUDA = -20,       /* the CUDA runtime reported an error (message has it) */
    LMC_ERR_CUBLAS = -21,     /* cuBLAS reported an error */
    LMC_ERR_NO_DEVICE = -22   /* no usable GPU / driver */
};

/* lmc_matmul / lmc_gptq_matmul: which kernel family */
enum {
    LMC_PATH_AUTO = 0,        /* mat-vec for ncols <= LMC_MMVQ_MAX_COLS, else GEMM */
    LMC_PATH_MMVQ = 1,        /* quantized activations + integer block dots (any ncols) */
    LMC_PATH_GEMM = 2         /* weights dequantized to f16 tiles + cuBLAS (f32 accumulate) */
};
enum { LMC_MMVQ_MAX_COLS = 8 };

enum { LMC_ACT_SILU = 0, LMC_ACT_GELU_TANH = 1 };    /* = LM_ACT_* of lamina.h */
enum { LMC_ROPE_NORMAL = 0, LMC_ROPE_NEOX = 1 };     /* = LM_ROPE_* of lamina.h */

/* ------------------------------------------------------------ runtime */
const char *lmc_last_error(void);
/* library version; bumped on any ABI change */
int lmc_abi_version(void);
/* >= 0 devices; 0 also when there is no driver (lmc_last_error says why) */
int lmc_device_count(void);
int lmc_device_name(int device, char *buf, size_t buf_len);
int lmc_device_memory(int device, size_t *free_bytes, size_t *total_bytes);
/* compute capability, e.g. 8.6 -> *major = 8, *minor = 6 */
int lmc_device_capability(int device, int *major, int *minor);
int lmc_set_device(int device);
int lmc_malloc(void **ptr, size_t bytes);
int lmc_free(void *ptr);
int lmc_memcpy_h2d(void *dst, const void *src, size_t bytes);
int lmc_memcpy_d2h(void *dst, const void *src, size_t bytes);
int lmc_memcpy_d2d(void *dst, const void *src, size_t bytes);
int lmc_memset(void *dst, int value, size_t bytes);
int lmc_synchronize(void);
/* frees the cuBLAS handles (they are created on first use per device) */
void lmc_release(void);

/* ------------------------------------------------------- CUDA graphs */
/* Capture, then replay, a sequence of ops as one launch:
 *     lmc_graph_begin();  ...ops...;  lmc_graph_end(&exec);  lmc_graph_launch(exec);
 * Between begin and end the ops are recorded, not run: nothing they write
 * changes until the launch, and each op's arguments (pointers, sizes,
 * positions) are those of the capture. Capture again to change them;
 * lmc_graph_end then updates exec in place (cheap when the ops are the same
 * kernels in the same order) or replaces it. Or capture once and replay
 * many times: the _dev ops (lmc_rope_cs_dev, lmc_kv_store_dev,
 * lmc_attention_dev) read the position from device memory when they run,
 * so the caller writes a new one there (lmc_memcpy_h2d, outside the
 * capture) before each launch of the same executable.
 * Capturable: the ops, lmc_memcpy_d2d and lmc_memset. Not capturable (they
 * fail, and so does the capture): lmc_memcpy_h2d, lmc_memcpy_d2h,
 * lmc_synchronize, lmc_malloc, lmc_free. The GEMM path (cuBLAS) is not
 * promised to capture; the mat-vec path is. */
/* start capturing this thread's stream (LMC_ERR_ARG when it already is) */
int lmc_graph_begin(void);
/* End the capture. *graph_exec: NULL the first time, then what the last call
 * left there; it is instantiated, or updated (re-instantiated when CUDA
 * refuses the update). On an error the capture is over all the same, the
 * stream usable, nothing was launched, and *graph_exec is NULL or still the
 * old, valid executable. */
int lmc_graph_end(void **graph_exec);
/* launch graph_exec on this thread's stream (asynchronous, like an op) */
int lmc_graph_launch(void *graph_exec);
/* end a capture that is in progress (or failed) without instantiating it, as
 * after an op refused its arguments mid-capture; LMC_OK when none is */
int lmc_graph_abort(void);
/* free what lmc_graph_end made; NULL is a no-op */
int lmc_graph_free(void *graph_exec);

/* ----------------------------------------------------- types, matmul */
/* 1 when lmc_matmul runs weights of this ggml type id: F32 F16 BF16 Q4_0
 * Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4 NVFP4 */
int lmc_type_supported(int type);
/* bytes of one row of n values of type (0 when unsupported or n is ragged) */
size_t lmc_row_bytes(int type, int64_t n);

/* scratch lmc_matmul needs for these sizes on any path */
size_t lmc_matmul_scratch_bytes(int type, int64_t rows, int64_t n, int64_t ncols);

/* y[c * ldy + r] = sum_k W[r][k] * x[c][k]
 *   w: [rows][row_bytes(type, n)]   x: f32 [ncols][n]   y: f32 [ncols][ldy], ldy >= rows
 * Quantized weights on the mat-vec path see x quantized to the type's dot
 * partner (Q8_0, Q8_1 or Q8_K, as the CPU does); the GEMM path sees x in f16. */
int lmc_matmul(int type, const void *w, int64_t rows, int64_t n, const float *x, int64_t ncols, float *y, int64_t ldy,
               void *scratch, size_t scratch_bytes, int path);

/* x: f32 [ncols][n] -> out: [ncols][row_bytes(partner, n)], the activation
 * format that weights of type weight_type are dotted with (for F32/F16/BF16
 * weights the partner is the type itself). Bit-identical to the CPU's
 * lm_quantize_activations for Q8_0/Q8_1/Q8_K. */
int lmc_quantize_activations(int weight_type, const float *x, int64_t n, int64_t ncols, void *out);

/* lmc_matmul's mat-vec path (any ncols) for x already quantized, so that
 * matrices reading the same x quantize it once: the same bits as lmc_matmul
 * with LMC_PATH_MMVQ.
 *   type: a quantized weight type (not F32/F16/BF16)
 *   xq_type: the type of xq, which must be type's dot partner (Q8_0, Q8_1, Q8_K)
 *   xq: [ncols][row_bytes(xq_type, n)], as lmc_quantize_activations writes it */
int lmc_matmul_q(int type, const void *w, int64_t rows, int64_t n, int xq_type, const void *xq, int64_t ncols, float *y,
                 int64_t ldy);

/* src: n_total values of type -> dst f32 [n_total] (bit-identical to the
 * CPU's lm_dequantize) */
int lmc_dequantize(int type, const void *src, int64_t n_total, float *dst);

/* ---------------------------------------------------------- GPTQ INT4 */
/* Field for field the leading fields of lamina_gptq.h's lm_gptq_matrix, with the
 * four arrays in device memory. Validate g_idx on the host before upload
 * (lm_gptq_validate): a kernel cannot report a bad entry. */
typedef struct {
    const int32_t *qweight;   /* [n_in/8][n_out] */
    const uint16_t *scales;   /* [n_groups][n_out] f16 bits */
    const int32_t *qzeros;    /* [n_groups][n_out/8] v2 zeros */
    const int32_t *g_idx;     /* [n_in] or NULL */
    int32_t n_in, n_out;      /* multiples of 8 */
    int32_t group_size;       /* inputs per group; -1 or 0: one group per row */
    int32_t n_groups;
} lmc_gptq_matrix;

size_t lmc_gptq_scratch_bytes(const lmc_gptq_matrix *w, int64_t ncols);
/* y[c * ldy + o] = sum_i W[o][i] * x[c][i]   x: f32 [ncols][n_in]  y: f32 [ncols][ldy], ldy >= n_out
 * mat-vec path: f32 x, weights dequantized in registers; GEMM path: f16 tiles + cuBLAS */
int lmc_gptq_matmul(const lmc_gptq_matrix *w, const float *x, int64_t ncols, float *y, int64_t ldy, void *scratch,
                    size_t scratch_bytes, int path);
/* W: f32 [n_out][n_in] (tests, debugging) */
int lmc_gptq_dequantize(const lmc_gptq_matrix *w, float *dst);

/* ------------------------------------------------------ row-wise ops */
/* out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * (w[i] + add_one); rows of n, out may be x */
int lmc_rms_norm(float *out, const float *x, const float *w, int64_t rows, int64_t n, float eps, float add_one);
/* x[r] = softmax(x[r]) for rows of n */
int lmc_softmax(float *x, int64_t rows, int64_t n);
/* x[i] = act(x[i]) * up[i], act LMC_ACT_SILU or LMC_ACT_GELU_TANH */
int lmc_act_mul(float *x, const float *up, int64_t n, int act);
/* x[i] += y[i] (the residual add) */
int lmc_add(float *x, const float *y, int64_t n);
/* x[i] *= s (the embedding scale) */
int lmc_scale(float *x, float s, int64_t n);
/* x[r][i] += b[i] for rows of n (q/k/v biases) */
int lmc_add_bias(float *x, const float *b, int64_t rows, int64_t n);

/* ---------------------------------------------------------------- RoPE */
/* cs[t][2i], cs[t][2i+1] = cos, sin of (pos0 + t) * inv_freq[i]  (computed in
 * double, then rounded, as forward.c's rope_tables)
 *   inv_freq: f64 [n_rot/2]   cs: f32 [n_tokens][n_rot] */
int lmc_rope_cs(float *cs, const double *inv_freq, int32_t n_rot, int32_t pos0, int32_t n_tokens);
/* lmc_rope_cs with pos0 = *pos0_dev (device memory), read when the kernel
 * runs, not when it is launched or captured. The grid depends on n_rot and
 * n_tokens only. pos0_dev NULL: LMC_ERR_ARG, even for n_tokens 0. */
int lmc_rope_cs_dev(float *cs, const double *inv_freq, int32_t n_rot, const int32_t *pos0_dev, int32_t n_tokens);
/* Rotate the first n_rot dims of each head of each row by that row's angles.
 *   x: f32 [rows][n_heads * head_dim]   cs: f32 [rows][n_rot]
 * layout LMC_ROPE_NORMAL: pairs (2i, 2i+1); LMC_ROPE_NEOX: pairs (i, i + n_rot/2) */
int lmc_rope(float *x, int64_t rows, int32_t n_heads, int32_t head_dim, int32_t n_rot, const float *cs, int layout);

/* ------------------------------------------------------------ KV cache */
/* One layer's cache is [n_ctx][kv_row_bytes] (forward.c); a row holds kv_dim
 * values in kv_type (F32, F16 or Q8_0; Q8_0 needs head_dim % 32 == 0).
 * Store n_tokens rows of src f32 [n_tokens][kv_dim] at rows pos0.. of cache
 * (the same rounding as the CPU's from_float). */
int lmc_kv_store(int kv_type, void *cache, size_t kv_row_bytes, int32_t pos0, const float *src, int32_t n_tokens,
                 int32_t kv_dim);
/* lmc_kv_store at rows *pos0_dev.. (device memory, read when the kernel
 * runs). A kernel cannot report a bad position: the caller validates the
 * value it writes there (0 <= pos0, pos0 + n_tokens <= the cache's rows).
 * pos0_dev NULL: LMC_ERR_ARG, even for n_tokens 0. */
int lmc_kv_store_dev(int kv_type, void *cache, size_t kv_row_bytes, const int32_t *pos0_dev, const float *src,
                     int32_t n_tokens, int32_t kv_dim);

/* out[t][h*hd ..] = softmax(scale * q_th . K[lo..pos]) V[lo..pos] for every
 * token t (pos = pos0 + t) and head h: causal, and no further back than
 * window keys when window > 0 (lo = max(0, pos - window + 1)). Query head h
 * reads KV head h / (n_head / n_head_kv), at byte offset (h / group) * head
 * bytes of each cache row. Rows 0..pos0+n_tokens-1 must be stored.
 *   q, out: f32 [n_tokens][n_head * head_dim]   k_cache, v_cache: this layer's base
 * head_dim <= 512. */
int lmc_attention(float *out, const float *q, const void *k_cache, const void *v_cache, int kv_type,
                  size_t kv_row_bytes, int32_t n_tokens, int32_t pos0, int32_t n_head, int32_t n_head_kv,
                  int32_t head_dim, float scale, int32_t window);
/* lmc_attention with pos0 = *pos0_dev (device memory, read when the kernel
 * runs; validated by the caller as for lmc_kv_store_dev). The grid is
 * (n_tokens, n_head) and the shared memory fixed, whatever the position:
 * one capture serves every position. pos0_dev NULL: LMC_ERR_ARG. */
int lmc_attention_dev(float *out, const float *q, const void *k_cache, const void *v_cache, int kv_type,
                      size_t kv_row_bytes, int32_t n_tokens, const int32_t *pos0_dev, int32_t n_head, int32_t n_head_kv,
                      int32_t head_dim, float scale, int32_t window);

#ifdef __cplusplus
}
#endif

#endif /* LAMINA_CUDA_H */
