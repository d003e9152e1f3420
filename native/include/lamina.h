/* lamina.h — the whole C ABI of lamina's native core.
 *
 * cffi reads the part between the LM_CDEF markers verbatim as its cdef, so that
 * part stays plain C: no macros, no includes, no inline code. Every size passed
 * in has already been validated by the Python side; the checks here are a
 * second fence that returns an error code instead of touching bad memory.
 *
 * Conventions: tensors are row-major; a weight matrix is `rows` rows of `n`
 * weights each, stored as n/blck_size blocks per row. Functions returning int
 * return 0 on success and a negative LM_ERR_* code on failure, with a message
 * available from lm_last_error() on the calling thread.
 */
#ifndef LAMINA_H
#define LAMINA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* LM_CDEF_BEGIN */
typedef struct lm_threadpool lm_threadpool;

enum lm_status {
    LM_OK = 0,
    LM_ERR_TYPE = -1,        /* type id unknown or not implemented */
    LM_ERR_SHAPE = -2,       /* a size is not a multiple of the block size, or negative */
    LM_ERR_IMPL = -3,        /* requested kernel implementation not available on this CPU */
    LM_ERR_NOMEM = -4,
    LM_ERR_ARG = -5
};

/* which vec_dot kernels to use; AUTO picks the fastest the CPU supports */
enum lm_impl { LM_IMPL_AUTO = 0, LM_IMPL_SCALAR = 1, LM_IMPL_AVX2 = 2 };

const char *lm_last_error(void);

/* CPU features and kernel availability */
int lm_cpu_has_avx2(void);            /* AVX2 + FMA + F16C all present */
int lm_impl_available(int impl);

/* type traits */
int lm_type_supported(int type);      /* quantize, dequantize and dot all exist */
const char *lm_type_name(int type);
int64_t lm_type_block_size(int type);
size_t lm_type_block_bytes(int type);
int lm_type_vec_dot_type(int type);   /* activation format the dot consumes */

/* Quantize nrows rows of n_per_row floats, exactly as ggml_quantize_chunk does
 * (imatrix: n_per_row importance weights or NULL). */
int lm_quantize(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
/* Dequantize n values (a multiple of the block size). */
int lm_dequantize(int type, const void *src, float *dst, int64_t n);
/* Quantize n activations into lm_type_vec_dot_type(type) blocks. */
int lm_quantize_activations(int type, const float *src, void *dst, int64_t n);
/* out = dot(x, y): x is n weights of `type`, y the same n already in its vec_dot_type. */
int lm_vec_dot(int type, int impl, int64_t n, const void *x, const void *y, float *out);

/* A persistent pool of worker threads; the caller's thread is worker 0. */
lm_threadpool *lm_threadpool_create(int n_threads);
void lm_threadpool_free(lm_threadpool *tp);
int lm_threadpool_size(const lm_threadpool *tp);

/* y[c, r] = sum_k w[r, k] * x[c, k]
 * w: [rows, n] in `type`; x: [ncols, n] f32; y: [ncols, rows] f32.
 * Activations are quantized once to the type's dot partner, then rows are
 * split across the pool's threads; a batch (ncols > 1) is tiled so each
 * weight row is read once per tile of columns, not once per column. */
int lm_matmul(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n,
              const float *x, int64_t ncols, float *y);
/* Sustained read bandwidth in GB/s: every thread of tp sums its share of
 * buf (bytes, a multiple of 64) `reps` times. The physical limit that decode,
 * which reads every weight once per token, is measured against. */
double lm_memory_read_gbps(lm_threadpool *tp, const void *buf, size_t bytes, int reps);
/* LM_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* LAMINA_H */
