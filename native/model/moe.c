/* moe.c — the mixture-of-experts FFN (qwen3moe): a router picks
 * n_expert_used of n_expert FFNs for each token and mixes their outputs.
 *
 *   p[t]   = softmax(h[t] Wr)                     [n_expert] router probabilities
 *   S_t    = the n_expert_used largest p[t][e]    (ties: the lower id)
 *   w[t,e] = p[t][e]  (/ sum over S_t with expert_norm, as llama.cpp: sum >= 2^-14)
 *   out[t] = sum over e in S_t, in id order, of w[t,e] * (act(h W_gate_e) * (h W_up_e)) W_down_e
 *
 * Tokens are grouped by expert: each expert that any token picked runs its
 * three matmuls once over the rows routed to it, so only picked experts'
 * weights are read (decode reads n_expert_used of them). A token's sum runs
 * over its experts in id order whatever else is in the batch, and matmul
 * columns do not see one another, so a sequence gets the same bits in any
 * batch. */
#include <string.h>

#include "error.h"
#include "model/model.h"
#include "quants/type_traits.h"

/* route every row of h: sel [T][k] expert ids ascending, w [T][k] weights */
static void route(lm_context *c, int64_t T) {
    const lm_model_params *p = &c->model->p;
    const int n = p->n_expert, k = p->n_expert_used;
    for (int64_t t = 0; t < T; t++) {
        float *prob = c->moe_logits + t * n;
        lm_softmax(prob, n);
        int32_t *sel = c->moe_sel + t * k;
        float *w = c->moe_w + t * k;
        /* k passes of "largest not taken yet": k is small (8 of 128 in the 30B) */
        uint8_t taken[LM_EXPERT_MAX] = { 0 };
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < n; e++)
                if (!taken[e] && (best < 0 || prob[e] > prob[best])) best = e;
            taken[best] = 1;
        }
        int j = 0;
        double sum = 0.0;
        for (int e = 0; e < n; e++)
            if (taken[e]) {
                sel[j] = e;
                w[j] = prob[e];
                sum += prob[e];
                j++;
            }
        if (p->expert_norm) {
            const float s = (float)sum < 6.103515625e-5f ? 6.103515625e-5f : (float)sum;
            for (j = 0; j < k; j++) w[j] /= s;
        }
    }
}

/* one expert's matrix of a 3-D stack: rows [e * rows, (e + 1) * rows) */
static lm_matrix expert_matrix(const lm_matrix *stack, int e, int64_t rows, int64_t n) {
    const lm_type_traits *t = lm_get_type_traits(stack->type);
    const size_t bytes = (size_t)rows * (size_t)(n / t->blck_size) * t->type_size;
    return (lm_matrix){ .data = (const char *)stack->data + (size_t)e * bytes, .type = stack->type };
}

int lm_moe_ffn(lm_context *c, const lm_layer_weights *l, int64_t T) {
    const lm_model_params *p = &c->model->p;
    const int64_t E = p->n_embd, F = p->n_ff_exp;
    const int k = p->n_expert_used;
    int rc;
    const lm_mm_out router[1] = { { &l->moe_router, p->n_expert, c->moe_logits } };
    if ((rc = lm_matmuls(c, c->xb, E, T, router, 1))) return rc;
    route(c, T);
    memset(c->moe_acc, 0, sizeof(float) * (size_t)(T * E));
    for (int e = 0; e < p->n_expert; e++) {
        /* the rows that picked e, gathered, with their weights */
        int64_t n_rows = 0;
        for (int64_t t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (c->moe_sel[t * k + j] == e) {
                    c->moe_rows[n_rows] = (int32_t)t;
                    c->moe_row_w[n_rows] = c->moe_w[t * k + j];
                    memcpy(c->moe_x + n_rows * E, c->xb + t * E, sizeof(float) * (size_t)E);
                    n_rows++;
                }
        if (n_rows == 0) continue;
        const lm_matrix gate = expert_matrix(&l->moe_gate, e, F, E), up = expert_matrix(&l->moe_up, e, F, E);
        const lm_matrix down = expert_matrix(&l->moe_down, e, E, F);
        const lm_mm_out gate_up[2] = { { &gate, F, c->moe_g }, { &up, F, c->moe_u } };
        if ((rc = lm_matmuls(c, c->moe_x, E, n_rows, gate_up, 2))) return rc;
        if (p->activation == LM_ACT_GELU_TANH)
            lm_gelu_tanh_mul(c->moe_g, c->moe_u, n_rows * F);
        else
            lm_silu_mul(c->moe_g, c->moe_u, n_rows * F);
        const lm_mm_out out[1] = { { &down, E, c->moe_x } };   /* the gathered input is spent */
        if ((rc = lm_matmuls(c, c->moe_g, F, n_rows, out, 1))) return rc;
        for (int64_t r = 0; r < n_rows; r++) {
            float *acc = c->moe_acc + (int64_t)c->moe_rows[r] * E;
            const float *y = c->moe_x + r * E, w = c->moe_row_w[r];
            for (int64_t i = 0; i < E; i++) acc[i] += w * y[i];
        }
    }
    memcpy(c->xb, c->moe_acc, sizeof(float) * (size_t)(T * E));
    return LM_OK;
}
