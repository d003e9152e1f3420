/* lamina_gptq.h — GPTQ INT4 linear layers run straight from their packed form.
 *
 * The same ABI rules as lamina.h: cffi reads the part between the LM_CDEF
 * markers verbatim (after lamina.h's, so lm_threadpool and LM_IMPL_* come from
 * there); it stays plain C with no macros. Packing, exactly as AutoGPTQ /
 * GPTQModel write it (runtime/gptq/pack.py, runtime/gptq/format.py):
 *
 *   qweight int32 [n_in/8][n_out]      nibble j (bits 4j..4j+3) of qweight[r][o]
 *                                      is the level of input 8r+j, output o
 *   qzeros  int32 [n_groups][n_out/8]  nibble j of qzeros[g][c] is the zero of
 *                                      output 8c+j in group g, as is ("v2";
 *                                      v1 files are converted when loaded)
 *   scales  f16   [n_groups][n_out]
 *   g_idx   int32 [n_in]               group of each input, or NULL: i / group_size
 *
 *   W[o][i] = scales[g][o] * (level[o][i] - zero[g][o]),  g = g_idx[i]
 *   y[c][o] = sum_i W[o][i] * x[c][i]          (x and y f32, no rounding of x)
 */
#ifndef LAMINA_GPTQ_H
#define LAMINA_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "lamina.h"

#ifdef __cplusplus
extern "C" {
#endif

/* LM_CDEF_BEGIN */
/* lm_matrix.type of a GPTQ weight (outside the ggml id range on purpose: it is
 * never written to a file); lm_matrix.data then points to an lm_gptq_matrix */
enum { LM_TYPE_GPTQ_INT4 = 1024 };

typedef struct {
    const int32_t *qweight;   /* [n_in/8][n_out] */
    const uint16_t *scales;   /* [n_groups][n_out] f16 bits */
    const int32_t *qzeros;    /* [n_groups][n_out/8] v2 zeros */
    const int32_t *g_idx;     /* [n_in] or NULL */
    int32_t n_in, n_out;      /* multiples of 8 */
    int32_t group_size;       /* inputs per group; -1 or 0: one group per row */
    int32_t n_groups;         /* ceil(n_in / group_size), 1 for one group per row */
    /* CPU only, all NULL or qweight_grouped and perm_grouped set: an act-order
     * matrix repacked at load into group order (runtime/gptq/kernels.py), so
     * the CPU kernels run it as an ordinary file. Input k of qweight_grouped /
     * g_idx_grouped is input perm_grouped[k] of x. Device backends read the
     * fields above, which stay the file's own. */
    const int32_t *qweight_grouped;   /* [n_in/8][n_out] */
    const int32_t *g_idx_grouped;     /* [n_in] (sorted) or NULL: k / group_size */
    const int32_t *perm_grouped;      /* [n_in] a permutation of 0..n_in-1 */
} lm_gptq_matrix;

/* LM_OK, or an error code with a message (lm_last_error) naming what is wrong:
 * n_in/n_out not multiples of 8, n_groups that does not match group_size, a
 * g_idx entry outside [0, n_groups), NULL pointers, a perm_grouped that is not
 * a permutation. Scans g_idx once: call it
 * when the weights are loaded, not per matmul. */
int lm_gptq_validate(const lm_gptq_matrix *w);

/* bytes of scratch lm_gptq_matmul_into needs for ncols activation rows */
size_t lm_gptq_scratch_bytes(const lm_gptq_matrix *w, int64_t ncols);

/* Outputs [o0, o1) of y = x W^T:  y[c * ldy + (o - o0)] for c < ncols, x f32
 * [ncols][n_in]. tp may be NULL (run on the calling thread) or a pool (outputs
 * are split over its threads). impl: LM_IMPL_AUTO / _SCALAR / _AVX2. Any
 * 0 <= o0 <= o1 <= n_out works; multiples of 8 are the fast case. w must have
 * passed lm_gptq_validate; scratch holds lm_gptq_scratch_bytes(w, ncols). */
int lm_gptq_matmul_into(lm_threadpool *tp, int impl, const lm_gptq_matrix *w, int64_t o0, int64_t o1, const float *x,
                        int64_t ncols, float *y, int64_t ldy, void *scratch);

/* Whole matrix, y [ncols][n_out], on a pool of its own of n_threads; validates
 * w first (tests and benchmarks; the forward pass uses lm_gptq_matmul_into). */
int lm_gptq_matmul(const lm_gptq_matrix *w, const float *x, int64_t ncols, float *y, int impl, int n_threads);
/* LM_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* LAMINA_GPTQ_H */
