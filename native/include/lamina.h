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

/* which vec_dot kernels to use; AUTO picks the fastest the CPU supports.
 * VNNI: the AVX2 kernels built with the VNNI byte dot (AVX-VNNI or
 * AVX512-VNNI, as the CPU has), with the AVX2 kernels' bits; AVX2 where a
 * type has no such build */
enum lm_impl { LM_IMPL_AUTO = 0, LM_IMPL_SCALAR = 1, LM_IMPL_AVX2 = 2, LM_IMPL_VNNI = 3 };

const char *lm_last_error(void);

/* CPU features and kernel availability */
int lm_cpu_has_avx2(void);            /* AVX2 + FMA + F16C all present */
int lm_cpu_has_vnni(void);            /* 0; 1 AVX-VNNI; 2 AVX512-VNNI (+VL): which VNNI kernels run */
int lm_impl_available(int impl);

/* type traits */
int lm_type_supported(int type);      /* runs as a weight: dequantize, dot, activation quantizer */
int lm_type_quantizable(int type);    /* lm_quantize can write it */
int lm_type_needs_imatrix(int type);  /* lm_quantize writes it only with an importance matrix */
const char *lm_type_name(int type);
int64_t lm_type_block_size(int type);
size_t lm_type_block_bytes(int type);
int lm_type_vec_dot_type(int type);   /* activation format the dot consumes */

/* Quantize nrows rows of n_per_row floats, exactly as ggml_quantize_chunk does
 * (imatrix: n_per_row importance weights or NULL; LM_ERR_ARG without one for
 * the types of lm_type_needs_imatrix, where ggml aborts). */
int lm_quantize(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
/* Dequantize n values (a multiple of the block size). */
int lm_dequantize(int type, const void *src, float *dst, int64_t n);
/* Quantize n activations into lm_type_vec_dot_type(type) blocks. */
int lm_quantize_activations(int type, const float *src, void *dst, int64_t n);
/* the same with the quantizer of impl (LM_IMPL_*): every impl writes the same bytes */
int lm_quantize_activations_impl(int type, int impl, const float *src, void *dst, int64_t n);
/* out = dot(x, y): x is n weights of `type`, y the same n already in its vec_dot_type. */
int lm_vec_dot(int type, int impl, int64_t n, const void *x, const void *y, float *out);
/* x[0..n) = softmax(x) in place with attention's kernel of impl (every impl
 * gives the same bits: the AVX2 one computes libm's expf itself) */
int lm_softmax_row(int impl, float *x, int64_t n);
/* x[0..n) = act(x) * up with the FFN's kernel of impl, act an LM_ACT_* of
 * the gated FFNs (silu, gelu_tanh); every impl gives the same bits */
int lm_act_mul_row(int impl, int act, float *x, const float *up, int64_t n);

/* A persistent pool of worker threads; the caller's thread is worker 0. */
lm_threadpool *lm_threadpool_create(int n_threads);
void lm_threadpool_free(lm_threadpool *tp);
int lm_threadpool_size(const lm_threadpool *tp);

/* y[c, r] = sum_k w[r, k] * x[c, k]
 * w: [rows, n] in `type`; x: [ncols, n] f32; y: [ncols, rows] f32.
 * Activations are quantized once to the type's dot partner, then rows are
 * split across the pool's threads; a batch (ncols > 1) is tiled so each
 * weight row is read once per tile of columns, not once per column. */
int lm_matmul(lm_threadpool *tp, int impl, int type, const void *w, int64_t rows, int64_t n, const float *x,
              int64_t ncols, float *y);
/* Sustained read bandwidth in GB/s: every thread of tp sums its share of
 * buf (bytes, a multiple of 64) `reps` times. The physical limit that decode,
 * which reads every weight once per token, is measured against. */
double lm_memory_read_gbps(lm_threadpool *tp, const void *buf, size_t bytes, int reps);

/* ================================================================ model ===
 * A decoder-only transformer whose weights stay where the caller mapped them
 * (the GGUF mmap: nothing is copied), and a context that owns the KV cache,
 * scratch buffers and a thread pool. One lm_context_decode call runs a whole
 * batch of tokens of several sequences (prefill chunks and decode steps
 * together) through every layer; lm_context_eval is its one-sequence form.
 *
 * One layer, parameterized: llama (SmolLM2, TinyLlama, Llama 2/3, Mistral),
 * qwen2 (q/k/v biases, NeoX rope) and gemma3 (q/k norms, post norms, GELU,
 * sliding-window layers with their own rope base, scaled embeddings) differ
 * only in the values below. The caller keeps the weights and the model alive
 * for as long as any context made from it. */
typedef struct lm_model lm_model;
typedef struct lm_context lm_context;

enum lm_model_status {
    LM_ERR_CONTEXT_FULL = -6,   /* a batch does not fit: a sequence's n_ctx_seq, or the free cells */
    LM_ERR_TOKEN = -7,          /* a token id outside [0, n_vocab) */
    LM_ERR_NO_DEVICE = -8       /* the offload device asked for is not available */
};

enum lm_norm_kind { LM_NORM_RMS = 0, LM_NORM_RMS_PLUS_ONE = 1 };   /* gemma checkpoints: x * (1 + w) */
/* gated FFN: act(gate) * up; LM_ACT_SWIGLU_OAI (gpt-oss, ggml's swiglu_oai):
 * g = min(gate, 7), u = clamp(up, -7, 7), g * sigmoid(1.702 g) * (u + 1) */
enum lm_activation { LM_ACT_SILU = 0, LM_ACT_GELU_TANH = 1, LM_ACT_SWIGLU_OAI = 2 };
/* how the router's logits become the picked experts' weights */
enum lm_expert_gating {
    LM_GATING_SOFTMAX = 0,         /* softmax over all experts, then the top k (qwen3moe) */
    LM_GATING_SOFTMAX_PICKED = 1   /* the top k logits, then softmax over those k (gpt-oss) */
};
enum lm_rope_layout { LM_ROPE_NORMAL = 0, LM_ROPE_NEOX = 1 };      /* pairs (2i,2i+1) | (i,i+n_rot/2) */

enum lm_model_limits { LM_EXPERT_MAX = 512 };   /* most experts of a mixture-of-experts layer */

/* a weight matrix: rows of a whole number of blocks of `type` */
typedef struct {
    const void *data;
    int32_t type;                 /* ggml type id; must be lm_type_supported */
    const float *scale;           /* NULL, or the matmul's output is multiplied by scale[0] (a 3-D
                                   * stack of experts: by scale[e] for expert e): the per-tensor
                                   * scale_2 of NVFP4 checkpoints, as llama.cpp applies it */
} lm_matrix;

/* One decoder layer: its weights ([rows, cols], i.e. ggml's ne reversed) and
 * its attention settings. Vectors are f32; optional ones are NULL. */
typedef struct {
    const float *attn_norm;       /* [n_embd], or NULL: attention reads x itself (olmo2) */
    lm_matrix wq;                 /* [n_head * head_dim, n_embd] */
    lm_matrix wk;                 /* [n_head_kv * head_dim, n_embd] */
    lm_matrix wv;                 /* [n_head_kv * head_dim, n_embd] */
    const float *bq;              /* [n_head * head_dim] or NULL */
    const float *bk;              /* [n_head_kv * head_dim] or NULL */
    const float *bv;              /* [n_head_kv * head_dim] or NULL */
    const float *q_norm;          /* [head_dim] RMS norm of each query head ([n_head * head_dim]
                                   * over the whole projection with qk_norm_whole), or NULL */
    const float *k_norm;          /* [head_dim] the same for each key head ([n_head_kv * head_dim]) */
    lm_matrix wo;                 /* [n_embd, n_head * head_dim] */
    const float *attn_post_norm;  /* [n_embd] norm of the attention output, or NULL */
    const float *ffn_norm;        /* [n_embd], or NULL: the FFN reads x itself (olmo2) */
    lm_matrix w_gate;             /* [n_ff, n_embd]; unused (data NULL) in a mixture-of-experts model */
    lm_matrix w_up;               /* [n_ff, n_embd] */
    lm_matrix w_down;             /* [n_embd, n_ff] */
    /* mixture of experts (n_expert > 0) instead of w_gate/w_up/w_down: the
     * router and n_expert matrices stored one after another (ggml's 3-D
     * ffn_{gate,up,down}_exps) */
    lm_matrix moe_router;         /* [n_expert, n_embd] */
    lm_matrix moe_gate;           /* [n_expert][n_ff_exp, n_embd] */
    lm_matrix moe_up;             /* [n_expert][n_ff_exp, n_embd] */
    lm_matrix moe_down;           /* [n_expert][n_embd, n_ff_exp] */
    const float *ffn_post_norm;   /* [n_embd] norm of the FFN output, or NULL */
    float rope_base;              /* theta base of this layer */
    float rope_scale;             /* position multiplier: 1 / linear scaling factor; 0: no rotation (NoPE) */
    int32_t sliding_window;       /* attend to the last this-many positions; 0 = all */
    /* 1: this layer rotates by the plain frequencies, cos and sin unscaled:
     * the model's rope_freqs and rope_attn_factor pass it by (gemma3's
     * sliding layers under YaRN, which llama.cpp leaves unscaled); 0: they apply */
    int32_t rope_plain;
    /* gpt-oss: the attention output's bias, one learned logit per head that
     * joins the softmax's denominator (an attention sink: probability the
     * head may give to no key), and the biases of the router and of each
     * expert's matrices; NULL = none */
    const float *bo;              /* [n_embd] */
    const float *attn_sinks;      /* [n_head] */
    const float *moe_router_b;    /* [n_expert] */
    const float *moe_gate_b;      /* [n_expert][n_ff_exp] */
    const float *moe_up_b;        /* [n_expert][n_ff_exp] */
    const float *moe_down_b;      /* [n_expert][n_embd] */
} lm_layer_weights;

typedef struct {
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ff;
    int32_t n_head;
    int32_t n_head_kv;            /* divides n_head (grouped-query attention) */
    int32_t head_dim;             /* may differ from n_embd / n_head (gemma3) */
    int32_t n_rot;                /* rotated dims of each head: even, <= head_dim */
    int32_t rope_layout;          /* enum lm_rope_layout */
    int32_t norm_kind;            /* enum lm_norm_kind, for every norm weight */
    int32_t activation;           /* enum lm_activation */
    float norm_eps;
    float embd_scale;             /* embeddings are multiplied by this (gemma: sqrt(n_embd)) */
    float attn_scale;             /* softmax(attn_scale * q.k), usually 1/sqrt(head_dim) */
    const float *rope_freqs;      /* [n_rot/2] divisors of the rope frequencies (llama 3.1), or NULL */
    lm_matrix tok_embd;           /* [n_vocab, n_embd]; rows read with the type's to_float */
    const float *output_norm;     /* [n_embd] */
    lm_matrix output;             /* [n_vocab, n_embd]; tok_embd again when tied */
    /* Quantize the ffn_down input twice: its Q8 activation blocks, then what
     * they rounded away, and sum both products. Gemma's GELU output has
     * outliers that one 256-wide Q8_K block per row flattens; one more pass
     * over the (small) down matrix restores ~16-bit activations. 0 = once,
     * as llama.cpp does. */
    int32_t two_pass_down;
    /* granite: each sublayer's output times residual_scale before the
     * residual add, and the logits divided by logit_scale; 0 means 1, so
     * zeroed parameters keep llama's math */
    float residual_scale;
    float logit_scale;
    /* gemma2: attention scores and logits squashed into (-cap, cap) by
     * cap * tanh(x / cap); 0 = off */
    float attn_softcap;
    float final_softcap;
    /* olmo2: q_norm and k_norm normalize the whole q and k projections,
     * before they are split into heads; 0 = each head alone */
    int32_t qk_norm_whole;
    /* mixture of experts (qwen3moe): each token's FFN is the mix of the
     * n_expert_used experts the router's softmax ranks first, weighted by
     * their probabilities (divided by their sum with expert_norm); 0 experts
     * = the dense FFN. At most LM_EXPERT_MAX experts. */
    int32_t n_expert;
    int32_t n_expert_used;
    int32_t n_ff_exp;             /* rows of one expert's gate and up */
    int32_t expert_norm;
    /* LongRoPE (phi3): divisors used instead of rope_freqs by contexts whose
     * n_ctx_seq exceeds rope_long_ctx (llama.cpp's choice); NULL = none */
    const float *rope_freqs_long; /* [n_rot/2] */
    int32_t rope_long_ctx;
    /* cos and sin of every rotation times this (LongRoPE's attention
     * factor); 0 means 1 */
    float rope_attn_factor;
    int32_t expert_gating;        /* enum lm_expert_gating */
} lm_model_params;

/* Copies the parameters and the layers array (not the weights). NULL on error. */
lm_model *lm_model_create(const lm_model_params *p, const lm_layer_weights *layers);
void lm_model_free(lm_model *model);
/* bytes the KV cache of a context of n_ctx positions takes (0 if invalid) */
size_t lm_kv_cache_bytes(const lm_model *model, int32_t n_ctx, int kv_type);

/* kv_type: LM_TYPE_F32, LM_TYPE_F16 or LM_TYPE_Q8_0 (head_dim a multiple of
 * 32). n_batch bounds the tokens of one eval. NULL on error. */
lm_context *lm_context_create(lm_model *model, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads);
void lm_context_free(lm_context *ctx);
/* Sequence 0 alone (lm_context_decode's one-sequence form): runs tokens[0..n_tokens) at positions n_past.. and appends them to the cache.
 * logits: [n_tokens][n_vocab] when all_logits, else [1][n_vocab] for the last
 * token; NULL skips the output head (a prefill chunk whose logits nobody
 * reads). On error nothing is appended. */
int lm_context_eval(lm_context *ctx, const int32_t *tokens, int32_t n_tokens, float *logits, int all_logits);
/* the length of sequence 0 */
int32_t lm_context_n_past(const lm_context *ctx);
/* forget positions >= n_keep of sequence 0 (0 <= n_keep <= n_past) */
int lm_context_truncate(lm_context *ctx, int32_t n_keep);
size_t lm_context_kv_bytes(const lm_context *ctx);

/* Offload (--gpu-layers, llama.cpp's meaning): the output head counts as one
 * layer, so gpu_layers = N puts the head and the last N - 1 blocks on the
 * device (N > n_layer: every block); 0 is lm_context_create. The token
 * embedding stays here; each batch's residual stream crosses once. The
 * device copies its weights and keeps the KV cache of its blocks.
 * LM_DEVICE_CPU_STANDIN is a second CPU instance behaving as a device (tests:
 * any split equals the CPU alone); LM_DEVICE_CUDA runs on liblamina_cuda,
 * loaded first with lm_cuda_load (LM_ERR_NO_DEVICE without it or a GPU).
 * NULL on error. */
enum lm_device_kind { LM_DEVICE_CPU_STANDIN = 0, LM_DEVICE_CUDA = 1 };
/* dlopen liblamina_cuda (native/cuda) at path; LM_ERR_NO_DEVICE when it
 * cannot be loaded. Loading needs no GPU; using it does. */
int lm_cuda_load(const char *path);
/* free and total memory of GPU 0 (LM_ERR_NO_DEVICE without one) */
int lm_cuda_memory(size_t *free_bytes, size_t *total_bytes);
/* 1 if contexts can offload to this device, else 0 with lm_last_error saying why */
int lm_device_available(int device);
lm_context *lm_context_create_offload(lm_model *model, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads,
                                      int32_t gpu_layers, int device);
/* where a context runs: blocks [0, *host_layers) here, the rest and the head
 * on its device (none when *host_layers == n_layer and *head_on_device == 0) */
int lm_context_offload_info(const lm_context *ctx, int32_t *host_layers, int *head_on_device,
                            size_t *device_weight_bytes, size_t *device_kv_bytes);

/* Layer by layer (GPTQ calibration): runs layers [il0, il1) on one batch at
 * positions n_past.. and appends to those layers' caches. x_io [n_tokens][n_embd]
 * is the residual stream entering layer il0 (ignored when il0 == 0: the
 * token embeddings) and receives the stream leaving layer il1 - 1. Other
 * layers' caches are not written: a context used this way serves one layer
 * range per sequence (truncate to 0 between sequences). Sequence 0 of an
 * offload device does not grow: eval after eval_layers on such a context is
 * refused by the device (its positions do not continue), until truncate(0). */
int lm_context_eval_layers(lm_context *ctx, const int32_t *tokens, int32_t n_tokens, int32_t il0, int32_t il1,
                           float *x_io);
/* From now on every eval copies the matmul inputs of layer il into the
 * buffers that are not NULL, each [n_tokens][width] of the latest batch:
 * attn_in (normed input of q/k/v, n_embd), wo_in (attention output,
 * n_head * head_dim), ffn_in (normed input of gate/up, n_embd), down_in
 * (act(gate) * up, n_ff). Buffers hold n_batch rows. il = -1 stops. */
int lm_context_capture(lm_context *ctx, int32_t il, float *attn_in, float *wo_in, float *ffn_in, float *down_in);
/* Importance matrix (lamina imatrix; llama-imatrix's statistics): from now
 * on every batch run on this host adds, for each layer, x * x of every
 * matmul input, summed over the batch's rows in row order in float, into
 * sums, and the number of rows into counts; with dense 0 only the experts'
 * matmuls add (llama-imatrix skips dense matmuls of micro-batches under 16
 * rows: the caller, which knows llama.cpp's split, says). Per layer il, sums holds
 * lm_imatrix_layer_floats(model) floats:
 *   attn_in [n_embd]     input of q, k, v (attn_qkv)
 *   wo_in   [q_dim]      input of attn_output
 *   ffn_in  [n_embd]     input of gate, up (the router in a MoE layer)
 *   down_in [n_ff]       input of ffn_down
 *   exp_in  [n_expert][n_embd]    input of each expert's gate and up
 *   exp_down [n_expert][n_ff_exp] input of each expert's down
 * and counts holds 1 + n_expert int64: the rows of the dense matmuls, then
 * the rows routed to each expert. Both NULL stops; the caller owns them.
 * head_sums [n_embd] and *head_count, when not NULL, get the output head's
 * input (the rows whose logits are asked for), as llama-imatrix
 * --process-output, under the dense flag too.
 * Only layers run on this host are seen (not those on an offload device);
 * when off, the forward pass pays one NULL check per layer. */
int64_t lm_imatrix_layer_floats(const lm_model *model);
int lm_context_imatrix(lm_context *ctx, float *sums, int64_t *counts, int dense, float *head_sums, int64_t *head_count);
/* ========================================================== sequences ===
 * llama.cpp's model: a batch is a list of tokens, each with its sequence, its
 * position in that sequence and a flag "return my logits"; one KV cache holds
 * the cells of up to n_seq_max sequences. Cells come in blocks of
 * lm_kv_usage.block_size positions of one sequence; each sequence has a table
 * of its blocks, taken from one pool (lowest free block first) and given back
 * when the sequence shrinks. Blocks are shared between sequences after
 * lm_context_seq_cp and copied before anything writes into a shared one.
 * A token attends to the positions <= its own of its own sequence (within
 * the layer's sliding window). Positions of a sequence stay contiguous.
 * lm_context_eval / n_past / truncate / eval_layers work on sequence 0. */
enum lm_seq_limits { LM_SEQ_MAX = 256 };   /* most sequences one context holds */

typedef struct {
    int32_t n_tokens;
    const int32_t *token;         /* [n_tokens] */
    const int32_t *pos;           /* [n_tokens] position of each token in its sequence */
    const int32_t *seq_id;        /* [n_tokens] in [0, n_seq_max) */
    const int8_t *logits;         /* [n_tokens] nonzero: return this token's logits; NULL: none */
} lm_batch;

typedef struct {
    int32_t n_ctx;                /* cells of the whole KV cache, all sequences together */
    int32_t n_batch;              /* most tokens of one batch */
    int32_t n_seq_max;            /* sequences, ids [0, n_seq_max), at most LM_SEQ_MAX */
    int32_t n_ctx_seq;            /* most positions one sequence holds, <= n_ctx; 0: n_ctx / n_seq_max */
    int32_t kv_type;              /* as lm_context_create */
    int32_t n_threads;
    int32_t gpu_layers;           /* as lm_context_create_offload; 0: none */
    int32_t device;               /* enum lm_device_kind, when gpu_layers > 0 */
} lm_context_params;

/* lm_context_create_offload with several sequences. NULL on error. */
lm_context *lm_context_create_params(lm_model *model, const lm_context_params *params);

/* One batch through the whole model, one call. Each sequence's tokens must
 * continue it exactly: in batch order at positions seq_len, seq_len + 1, ...
 * (LM_ERR_ARG naming the token, sequence and expected position otherwise);
 * a batch whose sequences do not fit their n_ctx_seq or the free cells is
 * LM_ERR_CONTEXT_FULL. Checked before anything runs: on any error no cell
 * is taken and no length moves. logits: [n_outputs][n_vocab], the rows
 * asked for in batch order (may be NULL when none is asked for). */
int lm_context_decode(lm_context *ctx, const lm_batch *batch, float *logits);
/* lm_context_decode without the output head (llama.cpp's embeddings mode):
 * embd [n_outputs][n_embd] receives output_norm(x) of the tokens whose
 * logits flag is set, in batch order; the batch is cached as decode caches
 * it. Host contexts only (LM_ERR_ARG with offloaded layers). */
int lm_context_decode_embd(lm_context *ctx, const lm_batch *batch, float *embd);
/* positions held by a sequence, or LM_ERR_ARG for an id outside [0, n_seq_max) */
int32_t lm_context_seq_len(const lm_context *ctx, int32_t seq_id);
/* Remove positions [p0, p1) of a sequence (p1 < 0 or past its end: to its
 * end; nothing past its end is removed). When p1 is before the end, the later
 * positions move down by p1 - p0 and their cached keys are rotated by that
 * delta (llama.cpp's seq_rm + seq_add context shift). */
int lm_context_seq_rm(lm_context *ctx, int32_t seq_id, int32_t p0, int32_t p1);
/* dst becomes the first n positions of src (0 <= n <= seq_len(src), dst !=
 * src; dst's old positions are dropped), sharing src's blocks: no cell is
 * copied until one of them writes into a shared block. */
int lm_context_seq_cp(lm_context *ctx, int32_t src, int32_t dst, int32_t n);

typedef struct {
    int32_t n_seq_max;
    int32_t n_ctx_seq;
    int32_t block_size;           /* positions per block: a power of two <= 32 dividing n_ctx and n_ctx_seq */
    int32_t cells_total;          /* n_ctx */
    int32_t cells_used;           /* in whole blocks held by at least one sequence */
} lm_kv_usage;
int lm_context_kv_usage(const lm_context *ctx, lm_kv_usage *out);
/* one cached position as floats (tests, debugging): k, v [n_head_kv * head_dim]
 * of layer il (one of this context's host layers) */
int lm_context_kv_read(const lm_context *ctx, int32_t seq_id, int32_t il, int32_t pos, float *k, float *v);
/* One sequence's cache as bytes (the KV part of llama.cpp's
 * llama_state_seq_get_data / set_data): for each layer, this context's and
 * then its device's, the keys of positions 0..n_pos-1 [n_pos][row bytes] then
 * the values, rows in the cache's kv_type. Only positions are saved, not
 * cells: a state may be set into any sequence of any context of the same
 * model, kv_type and layer split. The caller validates the bytes (the file
 * format's checksum); these check sizes only. Offload devices that cannot
 * copy their cache (CUDA for now) are refused with LM_ERR_ARG. */
/* bytes of a state of n_pos positions (0 when n_pos is outside [0, n_ctx_seq]) */
size_t lm_context_seq_state_bytes(const lm_context *ctx, int32_t n_pos);
/* sequence seq_id's rows into dst, whose size must be
 * lm_context_seq_state_bytes(ctx, seq_len(seq_id)) */
int lm_context_seq_state_get(const lm_context *ctx, int32_t seq_id, void *dst, size_t size);
/* seq_id drops its positions and holds the n_pos positions of src (size
 * bytes, exactly lm_context_seq_state_bytes(ctx, n_pos)). Checked first
 * (sizes, n_ctx_seq, free blocks: LM_ERR_CONTEXT_FULL): on error the
 * sequence is as it was. */
int lm_context_seq_state_set(lm_context *ctx, int32_t seq_id, int32_t n_pos, const void *src, size_t size);
/* ================================================================ LoRA ===
 * llama.cpp's LoRA adapters, applied at run time without touching the base
 * weights: every matmul y = x W of a matrix an adapter targets becomes
 * y = x W + s * (x A^T) B^T, with s = scale * alpha / rank (scale alone when
 * alpha is 0), as llama.cpp's build_lora_mm. A [rank, n_in] and B [n_out,
 * rank] are any supported type (f32, f16, q8_0, ...) and stay where the
 * caller mapped them. A context holds a list of adapters and a scale per
 * (sequence, adapter), so one batch mixes sequences with different adapters
 * or scales; a scale of 0 skips the adapter. Host contexts only. */
typedef struct lm_lora lm_lora;

enum lm_lora_target {
    LM_LORA_WQ = 0,
    LM_LORA_WK = 1,
    LM_LORA_WV = 2,
    LM_LORA_WO = 3,
    LM_LORA_W_GATE = 4,
    LM_LORA_W_UP = 5,
    LM_LORA_W_DOWN = 6,
    LM_LORA_OUTPUT = 7            /* the output head (layer ignored) */
};

typedef struct {
    int32_t layer;                /* block index */
    int32_t target;               /* enum lm_lora_target */
    int32_t rank;
    lm_matrix a;                  /* [rank, n_in]: rank rows of the target's input width */
    lm_matrix b;                  /* [n_out, rank]: the target's rows, each rank wide */
} lm_lora_weight;

/* Checks every weight against the model (layer, target, rows and widths,
 * types and block sizes; a target at most once) and copies the list, not
 * the matrices, which the caller keeps alive. NULL on error, naming the
 * weight's index. */
lm_lora *lm_lora_create(const lm_model *model, const lm_lora_weight *weights, int32_t n_weights, float alpha);
void lm_lora_free(lm_lora *lora);
/* the adapters this context applies from now on, in this order (their
 * index is the one lm_context_lora_scale takes); every scale starts at 0;
 * n_loras 0 removes them. The adapters must stay alive until removed. */
int lm_context_set_loras(lm_context *ctx, lm_lora *const *loras, int32_t n_loras);
/* the scale of adapter i for sequence seq_id (-1: every sequence) */
int lm_context_lora_scale(lm_context *ctx, int32_t seq_id, int32_t i, float scale);
/* ============================================================ end model === */
/* LM_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* LAMINA_H */
