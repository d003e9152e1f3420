/* imatrix.c — importance-matrix statistics (lamina imatrix): per layer, the
 * sum over tokens of x * x of every matmul input, as llama-imatrix's
 * collect_imatrix gathers them (tools/imatrix/imatrix.cpp): float sums,
 * token after token, one count per dense matmul and one per expert.
 * The forward pass calls in only when a context has buffers (a NULL check
 * otherwise). */
#include "compute/threadpool.h"
#include "error.h"
#include "model/model.h"

/* below this many products the pool is not woken */
enum { IMX_INLINE = 1 << 15 };

int64_t lm_imatrix_layer_floats(const lm_model *m) {
    if (!m) return 0;
    const lm_model_params *p = &m->p;
    const int64_t E = p->n_embd, X = p->n_expert > 0 ? p->n_expert : 0;
    return 2 * E + (int64_t)p->n_head * p->head_dim + p->n_ff + X * (E + p->n_ff_exp);
}

int lm_context_imatrix(lm_context *c, float *sums, int64_t *counts, int dense, float *head_sums, int64_t *head_count) {
    if (!c) return lm_set_error(LM_ERR_ARG, "lm_context_imatrix: context is NULL");
    if (!sums != !counts || !head_sums != !head_count || (head_sums && !sums))
        return lm_set_error(LM_ERR_ARG,
                            "lm_context_imatrix: sums and counts (and head_sums and head_count) go together");
    c->imx_sums = sums;
    c->imx_counts = counts;
    c->imx_dense = dense != 0;
    c->imx_head = head_sums;
    c->imx_head_count = head_count;
    return LM_OK;
}

float *lm_imx_part(lm_context *c, int il, int part) {
    const lm_model_params *p = &c->model->p;
    const int64_t E = p->n_embd, Q = (int64_t)p->n_head * p->head_dim, X = p->n_expert > 0 ? p->n_expert : 0;
    const int64_t offs[] = { 0, E, E + Q, 2 * E + Q, 2 * E + Q + p->n_ff, 2 * E + Q + p->n_ff + X * E };
    return c->imx_sums + (size_t)il * (size_t)lm_imatrix_layer_floats(c->model) + offs[part];
}

typedef struct {
    float *acc;
    const float *x;
    int64_t T, width;
} imx_job;

/* each thread owns a range of columns and adds the rows in order: the same
 * float sums as one thread */
static void imx_cols(void *arg, int ith, int nth) {
    const imx_job *job = arg;
    int64_t j0, j1;
    lm_split_range(job->width, ith, nth, &j0, &j1);
    for (int64_t t = 0; t < job->T; t++) {
        const float *x = job->x + t * job->width;
        for (int64_t j = j0; j < j1; j++) job->acc[j] += x[j] * x[j];
    }
}

void lm_imx_add(lm_context *c, float *part, const float *x, int64_t T, int64_t width) {
    imx_job job = { .acc = part, .x = x, .T = T, .width = width };
    if (T * width < IMX_INLINE)
        imx_cols(&job, 0, 1);
    else
        lm_threadpool_run(c->tp, imx_cols, &job);
}
