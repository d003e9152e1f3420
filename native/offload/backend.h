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
     * and makes room for their KV cache; NULL (with lm_set_error) on failure. */
    void *(*create)(const lm_model *m, int32_t il0, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads);
    /* One batch at positions pos0..: x_in [n_tokens][n_embd] is the stream
     * entering block il0; writes logits as lm_context_eval does. */
    int (*eval)(void *dev, const int32_t *tokens, int32_t n_tokens, int32_t pos0, const float *x_in, float *logits,
                int all_logits);
    /* bytes of device memory held: weights, KV cache */
    void (*usage)(const void *dev, size_t *weight_bytes, size_t *kv_bytes);
    void (*free)(void *dev);
} lm_backend;

/* A block's weights as every device copies them: float vectors X(field,
 * length) and matrices X(field, rows, cols), with E, F, hd, q_dim and kv_dim
 * in scope. One list, so a weight added to lm_layer_weights cannot be
 * forgotten by one backend. */
#define LM_LAYER_VECTORS(X) \
    X(attn_norm, E)         \
    X(bq, q_dim)            \
    X(bk, kv_dim)           \
    X(bv, kv_dim)           \
    X(q_norm, hd)           \
    X(k_norm, hd)           \
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

extern const lm_backend lm_backend_cpu_standin;
extern const lm_backend lm_backend_cuda;       /* cuda_backend.c, over the dlopened liblamina_cuda */

/* 1 when liblamina_cuda is loaded and sees a GPU, else 0 with lm_last_error */
int lm_cuda_usable(void);

#endif
