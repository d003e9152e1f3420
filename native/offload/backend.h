/* backend.h — the table of functions a device implements to run the last
 * layers of a model and its output head (--gpu-layers).
 *
 * The split is llama.cpp's (split.c): with N offloaded "layers", the output
 * head counts as one, so the device runs blocks [n_layer - (N - 1), n_layer)
 * and the head; the token embedding stays on the host. The host runs its blocks and hands
 * the residual stream over once per batch; the device keeps its own copy of
 * its weights and the KV cache of its layers.
 *
 * Backends: the CPU stand-in (cpu_standin.c: a second CPU instance with its
 * own copies, so the split, the transfer and the per-device caches are tested
 * on machines without a GPU) and CUDA (cuda_backend.c, over native/cuda
 * loaded at run time). */
#ifndef LAMINA_BACKEND_H
#define LAMINA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct lm_backend {
    const char *name;
    /* Copies the weights of blocks [il0, n_layer) and the head to the device
     * and makes room for their KV cache, a pool of p->n_ctx cells shared by
     * p->n_seq_max sequences as the host's (p is checked, n_ctx_seq filled
     * in); NULL (with lm_set_error) on failure. */
    void *(*create)(const lm_model *m, int32_t il0, const lm_context_params *p);
    /* One batch the host checked against its own sequences (the device checks
     * it against its copy of them again): x_in [n_tokens][n_embd] is the
     * stream entering block il0; writes the logits asked for as
     * lm_context_decode does. All or nothing, as lm_context_decode. */
    int (*decode)(void *dev, const lm_batch *b, const float *x_in, float *logits);
    /* The host's sequence operations, repeated on the device's cache, each
     * all or nothing; called before the host applies its own, after it
     * checked the arguments. seq_rm gets p0 < p1 <= seq_len, or p1 = -1 for
     * "to the end"; any other p1 shifts the later positions down. */
    int (*seq_rm)(void *dev, int32_t seq, int32_t p0, int32_t p1);
    int (*seq_cp)(void *dev, int32_t src, int32_t dst, int32_t n);
    /* one sequence's rows of the device's layers, laid out as
     * lm_context_seq_state_get / _set do (sizes checked by the host); set is
     * all or nothing and takes the blocks the host's pool takes. NULL: the
     * device cannot, and the host refuses a state with its layers. */
    int (*seq_state_get)(void *dev, int32_t seq, void *dst, size_t size);
    int (*seq_state_set)(void *dev, int32_t seq, int32_t n_pos, const void *src, size_t size);
    /* bytes of device memory held: weights, KV cache */
    void (*usage)(const void *dev, size_t *weight_bytes, size_t *kv_bytes);
    void (*free)(void *dev);
} lm_backend;

/* A block's weights as every device copies them: float vectors X(field,
 * length) and matrices X(field, rows, cols), with E, F, q_dim, kv_dim and the
 * q/k norm lengths qn, kn (lm_qk_norm_lengths) in scope. One list, so a weight added to lm_layer_weights cannot be
 * forgotten by one backend. */
#define LM_LAYER_VECTORS(X) \
    X(attn_norm, E)         \
    X(bq, q_dim)            \
    X(bk, kv_dim)           \
    X(bv, kv_dim)           \
    X(q_norm, qn)           \
    X(k_norm, kn)           \
    X(attn_post_norm, E)    \
    X(ffn_norm, E)          \
    X(ffn_post_norm, E)
#define LM_LAYER_MATRICES(X) \
    X(wq, q_dim, E)          \
    X(wk, kv_dim, E)         \
    X(wv, kv_dim, E)         \
    X(wo, E, q_dim)          \
    X(w_gate, F, E)          \
    X(w_up, F, E)            \
    X(w_down, E, F)

/* the lengths of q_norm and k_norm: one head, or the whole projection */
static inline void lm_qk_norm_lengths(const lm_model_params *p, int64_t *qn, int64_t *kn) {
    *qn = p->qk_norm_whole ? (int64_t)p->n_head * p->head_dim : p->head_dim;
    *kn = p->qk_norm_whole ? (int64_t)p->n_head_kv * p->head_dim : p->head_dim;
}

extern const lm_backend lm_backend_cpu_standin;
extern const lm_backend lm_backend_cuda;       /* cuda_backend.c, over the dlopened liblamina_cuda */

/* 1 when liblamina_cuda is loaded and sees a GPU, else 0 with lm_last_error */
int lm_cuda_usable(void);

#endif
