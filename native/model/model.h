/* model.h — the structs behind lm_model and lm_context (lamina.h), shared by
 * model.c (creation, validation, the cache) and forward.c (eval). */
#ifndef LAMINA_MODEL_H
#define LAMINA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "include/lamina.h"
#include "model/forward_ops.h"

/* batches of at most this many tokens run each matmul as row slices, one
 * pool wake-up for q/k/v together (forward.c, mm_slices) */
#define LM_SLICED_MATMUL_COLS 8

struct lm_model {
    lm_model_params p;
    lm_layer_weights *layers;     /* [n_layer] */
    /* Layers with the same (rope_base, rope_scale) share one table of angles
     * per batch; gemma3 has two groups (sliding and global), llama one. */
    int32_t n_rope_groups;
    int32_t *rope_group;          /* [n_layer] group of each layer */
    double *rope_inv_freq;        /* [n_rope_groups][n_rot/2] angle per position */
};

struct lm_backend;

struct lm_context {
    lm_model *model;
    int32_t n_ctx, n_batch, n_past;
    int kv_type;
    int32_t kv_il0, kv_il1;       /* the layers this context runs and caches */
    /* offload: layers [kv_il1, n_layer) and the output head run on a device */
    const struct lm_backend *backend;
    void *dev;                    /* NULL: everything runs here */
    lm_kv_kernels kv;             /* attention inner loops for kv_type */
    size_t kv_row_bytes;          /* one position of one layer: n_head_kv * head_dim values */
    size_t kv_bytes;
    char *k_cache;                /* [kv_il1 - kv_il0][n_ctx][kv_row_bytes] */
    char *v_cache;                /* [kv_il1 - kv_il0][n_ctx][kv_row_bytes] */
    lm_threadpool *tp;

    /* activations of one batch (B = n_batch rows) */
    float *x;                     /* [B][n_embd] residual stream */
    float *xb;                    /* [B][n_embd] normed input of a sublayer / its output */
    float *q;                     /* [B][n_head * head_dim] */
    float *k;                     /* [B][n_head_kv * head_dim] */
    float *v;                     /* [B][n_head_kv * head_dim] */
    float *att;                   /* [B][n_head * head_dim] attention output, heads side by side */
    float *hb;                    /* [B][n_ff] gate, then act(gate) * up */
    float *hb2;                   /* [B][n_ff] up */
    float *rope_cs;               /* [n_rope_groups][B][n_rot/2][2] cos, sin */
    float *scores;                /* [n_threads][n_ctx] attention weights of one query */
    float *xb2;                   /* [B][n_embd] second pass of ffn_down (two_pass_down), else NULL */
    void *mm_scratch;             /* quantized activations for lm_matmul_into */
    size_t mm_slice_bytes;        /* per-thread part of mm_scratch for sliced matmuls */

    /* lm_context_capture: copies of one layer's matmul inputs, or NULL */
    int32_t capture_il;           /* -1: off */
    float *capture[4];            /* attn_in, wo_in, ffn_in, down_in */
};

/* a context whose cache holds layers [kv_il0, kv_il1) only (the others run
 * elsewhere); lm_context_create is the [0, n_layer) case */
lm_context *lm_context_create_range(lm_model *m, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads,
                                    int32_t kv_il0, int32_t kv_il1);

/* the output head of one checked batch on this context: layers [il0, n_layer)
 * from x_in (the stream entering il0; NULL with il0 == 0: the embeddings),
 * then output_norm and the head into logits (NULL: skipped). Does not move
 * n_past. (forward.c) */
int lm_context_eval_from(lm_context *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0, int32_t il0,
                         const float *x_in, float *logits, int all_logits);

#endif
