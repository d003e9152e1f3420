/* moe.c — the mixture-of-experts FFN (qwen3moe, gpt-oss): a router picks
 * n_expert_used of n_expert FFNs for each token and mixes their outputs.
 *
 *   r[t]   = h[t] Wr (+ br)                       [n_expert] router logits
 *   S_t    = the n_expert_used largest r[t][e]    (ties: the lower id)
 *   LM_GATING_SOFTMAX:        p[t] = softmax(r[t]); w[t,e] = p[t][e]
 *                             (/ sum over S_t with expert_norm, as llama.cpp: sum >= 2^-14)
 *   LM_GATING_SOFTMAX_PICKED: w[t,.] = softmax of r[t][e] over e in S_t
 *   out[t] = sum over e in S_t, in id order, of
 *            w[t,e] * (act(h W_gate_e (+bg_e)) * (h W_up_e (+bu_e))) W_down_e (+bd_e)
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
static void route(lm_context *c, const lm_layer_weights *l, int64_t T) {
    const lm_model_params *p = &c->model->p;
    const int n = p->n_expert, k = p->n_expert_used;
    for (int64_t t = 0; t < T; t++) {
        float *prob = c->moe_logits + t * n;
        if (l->moe_router_b)
            for (int e = 0; e < n; e++) prob[e] += l->moe_router_b[e];
        const int picked_softmax = p->expert_gating == LM_GATING_SOFTMAX_PICKED;
        if (!picked_softmax) lm_softmax(prob, n);   /* monotonic: the same experts either way */
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
        if (picked_softmax) lm_softmax(w, k);
        if (p->expert_norm && !picked_softmax) {
            const float s = (float)sum < 6.103515625e-5f ? 6.103515625e-5f : (float)sum;
            for (j = 0; j < k; j++) w[j] /= s;
        }
    }
}

/* one expert's matrix of a 3-D stack: rows [e * rows, (e + 1) * rows) */
static lm_matrix expert_matrix(const lm_matrix *stack, int e, int64_t rows, int64_t n) {
    const lm_type_traits *t = lm_get_type_traits(stack->type);
    const size_t bytes = (size_t)rows * (size_t)(n / t->blck_size) * t->type_size;
    return (lm_matrix){ .data = (const char *)stack->data + (size_t)e * bytes,
                        .type = stack->type,
                        .scale = stack->scale ? stack->scale + e : NULL };
}

/* lm_context_imatrix: x * x of each picked expert's rows of x [n][width]
 * (rows by expert, moe_first) into that expert's sums; as llama-imatrix's
 * MUL_MAT_ID, at any batch size, one count per (token, expert) */
static void imx_experts(lm_context *c, int il, int part, const float *x, int64_t width, int count) {
    const lm_model_params *p = &c->model->p;
    float *sums = lm_imx_part(c, il, part);
    int64_t *counts = c->imx_counts + (size_t)il * (size_t)(1 + p->n_expert) + 1;
    for (int e = 0; e < p->n_expert; e++) {
        const int32_t r0 = c->moe_first[e], rows = c->moe_first[e + 1] - r0;
        if (rows == 0) continue;
        lm_imx_add(c, sums + (int64_t)e * width, x + (int64_t)r0 * width, rows, width);
        if (count) counts[e] += rows;
    }
}

/* y [gathered rows][width] += bias [n_expert][width] of each row's expert */
static void add_expert_bias(const lm_context *c, const float *bias, float *y, int64_t width) {
    for (int e = 0; e < c->model->p.n_expert; e++) {
        const float *b = bias + (int64_t)e * width;
        for (int32_t r = c->moe_first[e]; r < c->moe_first[e + 1]; r++) {
            float *row = y + (int64_t)r * width;
            for (int64_t i = 0; i < width; i++) row[i] += b[i];
        }
    }
}

int lm_moe_ffn(lm_context *c, const lm_layer_weights *l, int64_t T, int il) {
    const lm_model_params *p = &c->model->p;
    const int64_t E = p->n_embd, F = p->n_ff_exp;
    const int k = p->n_expert_used;
    int rc;
    const lm_mm_out router[1] = { { .w = &l->moe_router, .rows = p->n_expert, .y = c->moe_logits } };
    if ((rc = lm_matmuls(c, c->xb, E, T, router, 1))) return rc;
    route(c, l, T);

    /* the rows that picked each expert, gathered expert after expert */
    int32_t n = 0;
    for (int e = 0; e < p->n_expert; e++) {
        c->moe_first[e] = n;
        for (int64_t t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (c->moe_sel[t * k + j] == e) {
                    c->moe_rows[n] = (int32_t)t;
                    c->moe_row_w[n] = c->moe_w[t * k + j];
                    memcpy(c->moe_x + (int64_t)n * E, c->xb + t * E, sizeof(float) * (size_t)E);
                    n++;
                }
    }
    c->moe_first[p->n_expert] = n;
    if (c->imx_sums) imx_experts(c, il, LM_IMX_EXP_IN, c->moe_x, E, 1);

    /* every picked expert's gate and up in one call, then its down in one
     * more: decode wakes the pool twice per layer, not three times per expert */
    lm_matrix gate[LM_EXPERT_MAX], up[LM_EXPERT_MAX], down[LM_EXPERT_MAX];
    int n_mm = 0;
    for (int e = 0; e < p->n_expert; e++) {
        const int32_t r0 = c->moe_first[e], rows = c->moe_first[e + 1] - r0;
        if (rows == 0) continue;
        gate[e] = expert_matrix(&l->moe_gate, e, F, E);
        up[e] = expert_matrix(&l->moe_up, e, F, E);
        const float *x = c->moe_x + (int64_t)r0 * E;
        c->moe_mm[n_mm++] = (lm_mm_out){ &gate[e], F, c->moe_g + (int64_t)r0 * F, x, rows };
        c->moe_mm[n_mm++] = (lm_mm_out){ &up[e], F, c->moe_u + (int64_t)r0 * F, x, rows };
    }
    if ((rc = lm_matmuls(c, NULL, E, 0, c->moe_mm, n_mm))) return rc;
    if (l->moe_gate_b) add_expert_bias(c, l->moe_gate_b, c->moe_g, F);
    if (l->moe_up_b) add_expert_bias(c, l->moe_up_b, c->moe_u, F);
    lm_act_for(&c->act, p->activation)(c->moe_g, c->moe_u, (int64_t)n * F);
    if (c->imx_sums) imx_experts(c, il, LM_IMX_EXP_DOWN, c->moe_g, F, 0);
    n_mm = 0;
    for (int e = 0; e < p->n_expert; e++) {
        const int32_t r0 = c->moe_first[e], rows = c->moe_first[e + 1] - r0;
        if (rows == 0) continue;
        down[e] = expert_matrix(&l->moe_down, e, E, F);
        /* the gathered inputs are spent: the outputs take their place */
        c->moe_mm[n_mm++] = (lm_mm_out){ &down[e], E, c->moe_x + (int64_t)r0 * E, c->moe_g + (int64_t)r0 * F, rows };
    }
    if ((rc = lm_matmuls(c, NULL, F, 0, c->moe_mm, n_mm))) return rc;
    if (l->moe_down_b) add_expert_bias(c, l->moe_down_b, c->moe_x, E);

    /* each row's mix, its experts in id order */
    memset(c->xb, 0, sizeof(float) * (size_t)(T * E));
    for (int32_t r = 0; r < n; r++) {
        float *acc = c->xb + (int64_t)c->moe_rows[r] * E;
        const float *y = c->moe_x + (int64_t)r * E, w = c->moe_row_w[r];
        for (int64_t i = 0; i < E; i++) acc[i] += w * y[i];
    }
    return LM_OK;
}
