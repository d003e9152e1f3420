/* matmul.c — weight matrix (any block type) times a batch of f32 activations.
 *
 * Phase 1 quantizes every activation column once into the type's dot partner
 * (Q8_0/Q8_1/Q8_K/F16...), as ggml does. Phase 2 splits weight rows across
 * threads and walks tiles of TILE_R rows x TILE_C columns, so in prefill a
 * weight row is loaded once per tile of columns instead of once per column. */
#include <stdlib.h>

#include "threadpool.h"
#include "type_traits.h"

enum { TILE_R = 16, TILE_C = 16 };

typedef struct {
    const lm_type_traits *wt, *at;   /* weight type, activation (partner) type */
    lm_vec_dot_fn dot;
    const char *w;
    size_t w_row_bytes;
    int64_t rows, n, ncols;
    const float *x;
    char *xq;
    size_t xq_row_bytes;
    float *y;
} matmul_job;

static void quantize_columns(void *p, int ith, int nth) {
    matmul_job *job = p;
    int64_t c0, c1;
    lm_split_range(job->ncols, ith, nth, &c0, &c1);
    for (int64_t c = c0; c < c1; c++)
        job->at->from_float(job->x + c * job->n, job->xq + (size_t)c * job->xq_row_bytes, job->n);
}

static void multiply_rows(void *p, int ith, int nth) {
    matmul_job *job = p;
    int64_t r_begin, r_end;
    lm_split_range(job->rows, ith, nth, &r_begin, &r_end);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += TILE_R) {
        const int64_t r1 = r0 + TILE_R < r_end ? r0 + TILE_R : r_end;
        for (int64_t c0 = 0; c0 < job->ncols; c0 += TILE_C) {
            const int64_t c1 = c0 + TILE_C < job->ncols ? c0 + TILE_C : job->ncols;
            for (int64_t r = r0; r < r1; r++) {
                const char *wrow = job->w + (size_t)r * job->w_row_bytes;
                for (int64_t c = c0; c < c1; c++)
                    job->dot(job->n, &job->y[c * job->rows + r], wrow, job->xq + (size_t)c * job->xq_row_bytes);
            }
        }
    }
}

int lm_matmul(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n,
              const float *x, int64_t ncols, float *y) {
    const lm_type_traits *wt = lm_get_type_traits(type);
    if (!wt) return lm_set_error(LM_ERR_TYPE, "unknown ggml type id %d", type);
    const lm_type_traits *at = lm_get_type_traits(wt->vec_dot_type);
    if (rows < 0 || ncols < 0 || n <= 0 || n % wt->blck_size || n % at->blck_size)
        return lm_set_error(LM_ERR_SHAPE, "matmul %s: bad shape rows=%lld n=%lld ncols=%lld", wt->name,
                            (long long)rows, (long long)n, (long long)ncols);
    lm_vec_dot_fn dot = lm_select_vec_dot(wt, impl);
    if (!dot || !at->from_float)
        return lm_set_error(LM_ERR_IMPL, "matmul %s: no kernel for impl %d", wt->name, impl);
    matmul_job job = {
        .wt = wt, .at = at, .dot = dot, .w = w,
        .w_row_bytes = (size_t)(n / wt->blck_size) * wt->type_size,
        .rows = rows, .n = n, .ncols = ncols, .x = x,
        .xq_row_bytes = (size_t)(n / at->blck_size) * at->type_size, .y = y,
    };
    job.xq = malloc(job.xq_row_bytes * (size_t)(ncols ? ncols : 1));
    if (!job.xq) return lm_set_error(LM_ERR_NOMEM, "matmul: out of memory for activations");
    lm_threadpool_run(tp, quantize_columns, &job);
    lm_threadpool_run(tp, multiply_rows, &job);
    free(job.xq);
    return LM_OK;
}
