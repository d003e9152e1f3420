/* model.h — the structs behind lm_model and lm_context (lamina.h), shared by
 * model.c (creation, validation, the cache) and forward.c (eval). */
#ifndef LAMINA_MODEL_H
#define LAMINA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "include/lamina.h"
#include "model/forward_ops.h"
#include "model/kv_pool.h"

/* batches of at most this many tokens run each matmul as row slices, one
 * pool wake-up for q/k/v together (forward.c, mm_slices) */
#define LM_SLICED_MATMUL_COLS 8

struct lm_model {
    lm_model_params p;
    lm_layer_weights *layers;     /* [n_layer] */
    /* Layers with the same (rope_base, rope_scale, rope_plain) share one
     * table of angles per batch; gemma3 has two groups (sliding and global),
     * llama one. */
    int32_t n_rope_groups;
    int32_t *rope_group;          /* [n_layer] group of each layer */
    double *rope_inv_freq;        /* [n_rope_groups][n_rot/2] angle per position */
    double *rope_inv_freq_long;   /* the same with rope_freqs_long, or NULL */
    float *rope_mscale;           /* [n_rope_groups] cos and sin of a rotation times this */
};

/* y = x W for matrices W that read the same activations x, or each its own */
typedef struct {
    const lm_matrix *w;
    int64_t rows;
    float *y;                     /* [ncols][rows] */
    const float *x;               /* [ncols][n] this matrix's own input, or NULL: the shared one */
    int64_t ncols;                /* with x: its columns */
} lm_mm_out;

struct lm_backend;

struct lm_context {
    lm_model *model;
    int32_t n_ctx, n_batch;
    int kv_type;
    int32_t kv_il0, kv_il1;       /* the layers this context runs and caches */
    /* offload: layers [kv_il1, n_layer) and the output head run on a device,
     * which keeps a pool of its own and repeats every sequence operation */
    const struct lm_backend *backend;
    void *dev;                    /* NULL: everything runs here */
    lm_kv_kernels kv;             /* attention inner loops for kv_type */
    lm_act_kernels act;           /* the FFN's act(gate) * up */
    const double *rope_inv_freq;  /* the model's table this context rotates by (LongRoPE: short or long) */
    lm_kv_pool pool;              /* who holds which cells (kv_pool.h) */
    size_t kv_row_bytes;          /* one position of one layer: n_head_kv * head_dim values */
    size_t kv_bytes;
    char *k_cache;                /* [kv_il1 - kv_il0][n_ctx cells][kv_row_bytes] */
    char *v_cache;                /* [kv_il1 - kv_il0][n_ctx cells][kv_row_bytes] */
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
    float *scores;                /* [max(n_threads * LM_KV_MAX_HEADS, n_head)][n_ctx] attention weights */
    float *kv_row;                /* [n_head_kv * head_dim] one key as floats (kv_seq.c: the shift) */
    float *xb2;                   /* [B][n_embd] second pass of ffn_down (two_pass_down), else NULL */
    /* mixture of experts (moe.c), NULL in a dense model */
    float *moe_logits;            /* [B][n_expert] router logits, then probabilities */
    int32_t *moe_sel;             /* [B][n_expert_used] each row's experts, ascending */
    float *moe_w;                 /* [B][n_expert_used] their weights */
    int32_t *moe_rows;            /* [B * n_expert_used] the batch row of each row of moe_x */
    float *moe_row_w;             /* [B * n_expert_used] and its weight for that expert */
    float *moe_x;                 /* [B * n_expert_used][n_embd] rows by expert: inputs, then outputs */
    float *moe_g;                 /* [B * n_expert_used][n_ff_exp] gate, then act(gate) * up */
    float *moe_u;                 /* [B * n_expert_used][n_ff_exp] up */
    lm_mm_out *moe_mm;            /* [2 * n_expert] the picked experts' matmuls of one step */
    int32_t *moe_first;           /* [n_expert + 1] each expert's first row in moe_x */
    void *mm_scratch;             /* quantized activations for lm_matmul_into */
    size_t mm_slice_bytes;        /* per-thread part of mm_scratch for sliced matmuls */

    /* the batch being run (batch.c fills these, forward.c reads them) */
    int32_t *b_cell;              /* [B] the cell each token's key and value go to */
    int32_t *b_out;               /* [B] rows whose logits are returned, ascending */
    int32_t b_n_out;
    int32_t *b_seqs;              /* [n_seq_max] the batch's sequences, ascending */
    int32_t b_n_seqs;
    int32_t *b_count;             /* [n_seq_max] tokens of each sequence in the batch */
    int32_t *e_pos;               /* [B] lm_context_eval's batch: positions, */
    int32_t *e_seq;               /* [B] sequence 0 (zeros), */
    int8_t *e_logits;             /* [B] and its logits flags */

    /* lm_context_capture: copies of one layer's matmul inputs, or NULL */
    int32_t capture_il;           /* -1: off */
    float *capture[4];            /* attn_in, wo_in, ffn_in, down_in */

    /* lm_context_imatrix: running sums of x * x of the matmul inputs, or NULL */
    float *imx_sums;              /* [n_layer][lm_imatrix_layer_floats] */
    int64_t *imx_counts;          /* [n_layer][1 + n_expert] */
    int imx_dense;                /* 0: only the experts' matmuls add */
    float *imx_head;              /* [n_embd] the output head's input, or NULL */
    int64_t *imx_head_count;

    /* lm_context_set_loras: the adapters and their scales (lora.c), or NULL */
    struct lm_lora_state *lora;
    const int32_t *b_seq_id;      /* [B] the sequence of each row of the batch being run */
};

/* a context whose cache holds layers [kv_il0, kv_il1) only (the others run
 * elsewhere); p is checked and its n_ctx_seq filled in (0: n_ctx / n_seq_max).
 * lm_context_create_params is the [0, n_layer) case plus the device. */
lm_context *lm_context_create_range(lm_model *m, lm_context_params *p, int32_t kv_il0, int32_t kv_il1);

/* ---------------------------------------------------------- batch.c */

/* One batch on this context without its device: checked against this
 * context's sequences, then layers [il0, n_layer) from x_in (the stream
 * entering il0; NULL with il0 == 0: the embeddings) and the head into logits;
 * the lengths move when all of it succeeded. The device side of offload. */
int lm_context_decode_from(lm_context *c, const lm_batch *b, int32_t il0, const float *x_in, float *logits);

/* -------------------------------------------------------- forward.c */

/* the n_out products of x [ncols][n] (or each output's own x) on the
 * context's pool: few columns as row slices of every matrix in one wake-up,
 * else one threaded matmul each */
int lm_matmuls(lm_context *c, const float *x, int64_t n, int64_t ncols, const lm_mm_out *out, int n_out);

/* Layers [il0, il1) of a batch whose cells batch.c reserved: x from x_in, or
 * the embeddings when x_in is NULL (il0 == 0); il0 == il1 only fills x. With
 * il1 == n_layer and logits not NULL, then the output norm and the head of
 * the rows in c->b_out into logits. Moves no length. */
int lm_forward(lm_context *c, const lm_batch *b, int32_t il0, int32_t il1, const float *x_in, float *logits);
void lm_forward_embd_rows(lm_context *c, float *embd);

/* ------------------------------------------------------------ moe.c */

/* The mixture-of-experts FFN of layer l over T rows: xb holds ffn_norm(x)
 * on entry and the FFN output on return. */
int lm_moe_ffn(lm_context *c, const lm_layer_weights *l, int64_t T, int il);

/* ----------------------------------------------------------- lora.c */

/* out[i].y += the adapters' products for the matrices they target (x, n,
 * ncols as lm_matmuls); the output head's rows are c->b_out's */
int lm_lora_apply(lm_context *c, const float *x, int64_t n, int64_t ncols, const lm_mm_out *out, int n_out);
void lm_lora_state_free(struct lm_lora_state *s);

/* ------------------------------------------------------- imatrix.c */

/* offsets of layer il's parts in c->imx_sums (lamina.h, lm_context_imatrix) */
enum { LM_IMX_ATTN_IN, LM_IMX_WO_IN, LM_IMX_FFN_IN, LM_IMX_DOWN_IN, LM_IMX_EXP_IN, LM_IMX_EXP_DOWN };
float *lm_imx_part(lm_context *c, int il, int part);
/* part += x * x of rows [0, T) of x [T][width], rows in order, columns split over the pool */
void lm_imx_add(lm_context *c, float *part, const float *x, int64_t T, int64_t width);

/* --------------------------------------------------------- kv_seq.c */

/* copy block `block` of seq if others hold it too, so seq can write into it;
 * the pool has a free block (the caller checked) */
int lm_kv_make_private(lm_context *c, int32_t seq, int32_t block_index);

#endif
