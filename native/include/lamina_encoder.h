/* lamina_encoder.h — bidirectional encoders (BERT) run one sequence at a time.
 *
 * The same ABI rules as lamina.h: cffi reads the part between the LM_CDEF
 * markers verbatim (after lamina.h's, so lm_matrix and lm_threadpool come from
 * there); it stays plain C with no macros.
 *
 * llama.cpp's `bert` graph: x = LayerNorm(tok_embd[t] + type_embd[type] +
 * pos_embd[pos]); then per layer (post-norm)
 *   x = LayerNorm(x + Wo softmax(q k^T / sqrt(d)) v + bo)   every token sees every token
 *   x = LayerNorm(x + W_down gelu(W_up x + b_up) + b_down)
 * Matrices may be any lm_type_supported type; vectors are f32.
 */
#ifndef LAMINA_ENCODER_H
#define LAMINA_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "lamina.h"

#ifdef __cplusplus
extern "C" {
#endif

/* LM_CDEF_BEGIN */
typedef struct {
    lm_matrix wq;                 /* [n_embd, n_embd] */
    lm_matrix wk;                 /* [n_embd, n_embd] */
    lm_matrix wv;                 /* [n_embd, n_embd] */
    const float *bq;              /* [n_embd] */
    const float *bk;
    const float *bv;
    lm_matrix wo;                 /* [n_embd, n_embd] */
    const float *bo;
    const float *attn_norm_w;     /* [n_embd] LayerNorm of x + attention */
    const float *attn_norm_b;
    lm_matrix w_up;               /* [n_ff, n_embd] */
    const float *b_up;            /* [n_ff] */
    lm_matrix w_down;             /* [n_embd, n_ff] */
    const float *b_down;          /* [n_embd] */
    const float *out_norm_w;      /* [n_embd] LayerNorm of x + FFN */
    const float *out_norm_b;
} lm_encoder_layer;

enum lm_encoder_act { LM_ENC_GELU_ERF = 0, LM_ENC_GELU_TANH = 1 };

typedef struct {
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ff;
    int32_t n_head;               /* divides n_embd */
    int32_t n_pos;                /* rows of pos_embd: the longest input */
    int32_t n_types;              /* rows of type_embd */
    int32_t activation;           /* enum lm_encoder_act */
    float norm_eps;
    lm_matrix tok_embd;           /* [n_vocab, n_embd] */
    lm_matrix pos_embd;           /* [n_pos, n_embd] */
    lm_matrix type_embd;          /* [n_types, n_embd] */
    const float *embd_norm_w;     /* [n_embd] */
    const float *embd_norm_b;
} lm_encoder_params;

/* hidden [n][n_embd]: the last layer's output for tokens [n] with token
 * types [n] (NULL: all 0) at positions 0..n-1, on tp's threads.
 * LM_ERR_TOKEN for a token or type out of range, LM_ERR_ARG for n outside
 * [1, n_pos], LM_ERR_NOMEM. */
int lm_encoder_run(lm_threadpool *tp, const lm_encoder_params *p, const lm_encoder_layer *layers, const int32_t *tokens,
                   const int32_t *types, int32_t n, float *hidden);
/* LM_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* LAMINA_ENCODER_H */
