/* forward_bert.c — the encoder forward pass of lamina_encoder.h (llama.cpp's
 * `bert` graph): embeddings with token types and absolute positions, then
 * post-norm blocks with bidirectional attention and a GELU FFN, all with
 * biases. One sequence per call, no cache: an encoder sees its whole input at
 * once. Matmuls go through lm_matmul (threaded, any weight type); attention
 * runs one head per task on the pool. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/threadpool.h"
#include "error.h"
#include "include/lamina.h"
#include "include/lamina_encoder.h"

/* out = (x - mean) / sqrt(var + eps) * w + b; sums in double as ggml_norm */
static void layer_norm(float *x, const float *w, const float *b, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    const float mean = (float)(sum / (double)n);
    double var = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float d = x[i] - mean;
        x[i] = d;
        var += (double)d * d;
    }
    const float scale = 1.0f / sqrtf((float)(var / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * scale * w[i] + b[i];
}

static void gelu(float *x, int64_t n, int act) {
    if (act == LM_ENC_GELU_TANH) {
        const float sqrt_2_over_pi = 0.79788456080286535588f;
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(sqrt_2_over_pi * v * (1.0f + 0.044715f * v * v)));
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752440f));
}

static void add_bias(float *y, const float *b, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) y[r * n + i] += b[i];
}

/* one row of a [rows, n_embd] table as f32 */
static int table_row(const lm_matrix *m, int64_t row, int64_t n, float *out) {
    const size_t row_bytes = (size_t)(n / lm_type_block_size(m->type)) * lm_type_block_bytes(m->type);
    return lm_dequantize(m->type, (const char *)m->data + (size_t)row * row_bytes, out, n);
}

typedef struct {
    const float *q, *k, *v;       /* [n][E] */
    float *out;                   /* [n][E] heads side by side */
    float *scores;                /* [nth][n] */
    int64_t n, E, d, n_head;
    float scale;
} attn_job;

static void attn_task(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    float *s = j->scores + (size_t)ith * j->n;
    for (int64_t h = ith; h < j->n_head; h += nth) {
        const int64_t o = h * j->d;
        for (int64_t i = 0; i < j->n; i++) {
            const float *qi = j->q + i * j->E + o;
            float max = -INFINITY;
            for (int64_t t = 0; t < j->n; t++) {
                const float *kt = j->k + t * j->E + o;
                float dot = 0.0f;
                for (int64_t c = 0; c < j->d; c++) dot += qi[c] * kt[c];
                s[t] = dot * j->scale;
                max = s[t] > max ? s[t] : max;
            }
            double sum = 0.0;
            for (int64_t t = 0; t < j->n; t++) {
                s[t] = expf(s[t] - max);
                sum += s[t];
            }
            const float inv = (float)(1.0 / sum);
            float *oi = j->out + i * j->E + o;
            memset(oi, 0, (size_t)j->d * sizeof(float));
            for (int64_t t = 0; t < j->n; t++) {
                const float p = s[t] * inv;
                const float *vt = j->v + t * j->E + o;
                for (int64_t c = 0; c < j->d; c++) oi[c] += p * vt[c];
            }
        }
    }
}

static int matmul(lm_threadpool *tp, const lm_matrix *w, int64_t rows, int64_t cols, const float *x, int64_t n,
                  float *y, const float *bias) {
    int rc = lm_matmul(tp, LM_IMPL_AUTO, w->type, w->data, rows, cols, x, n, y);
    if (rc == LM_OK && bias) add_bias(y, bias, n, rows);
    return rc;
}

int lm_encoder_run(lm_threadpool *tp, const lm_encoder_params *p, const lm_encoder_layer *layers, const int32_t *tokens,
                   const int32_t *types, int32_t n, float *hidden) {
    if (!p || !layers || !tokens || !hidden || !tp) return lm_set_error(LM_ERR_ARG, "lm_encoder_run: NULL argument");
    if (n < 1 || n > p->n_pos)
        return lm_set_error(LM_ERR_ARG, "lm_encoder_run: %d tokens, expected 1 to %d (the position table)", n,
                            p->n_pos);
    if (p->n_head <= 0 || p->n_embd % p->n_head)
        return lm_set_error(LM_ERR_ARG, "lm_encoder_run: n_head %d does not divide n_embd %d", p->n_head, p->n_embd);
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= p->n_vocab)
            return lm_set_error(LM_ERR_TOKEN, "token %d at position %d is outside [0, %d)", tokens[i], i, p->n_vocab);
        if (types && (types[i] < 0 || types[i] >= p->n_types))
            return lm_set_error(LM_ERR_TOKEN, "token type %d at position %d is outside [0, %d)", types[i], i,
                                p->n_types);
    }
    const int64_t E = p->n_embd, F = p->n_ff, T = n;
    const int nth = lm_threadpool_size(tp);
    float *buf = malloc(sizeof(float) * (size_t)(T * (5 * E + F) + E + (int64_t)nth * T));
    if (!buf) return lm_set_error(LM_ERR_NOMEM, "lm_encoder_run: out of memory for %d tokens", n);
    float *x = hidden;            /* [T][E] the residual stream */
    float *q = buf, *k = q + T * E, *v = k + T * E, *att = v + T * E, *proj = att + T * E;
    float *h = proj + T * E;      /* [T][F] */
    float *row = h + T * F;       /* [E] */
    float *scores = row + E;      /* [nth][T] */
    int rc = LM_OK;

    for (int64_t t = 0; t < T && rc == LM_OK; t++) {
        float *xt = x + t * E;
        rc = table_row(&p->tok_embd, tokens[t], E, xt);
        if (rc == LM_OK) rc = table_row(&p->type_embd, types ? types[t] : 0, E, row);
        for (int64_t i = 0; rc == LM_OK && i < E; i++) xt[i] += row[i];
        if (rc == LM_OK) rc = table_row(&p->pos_embd, t, E, row);
        for (int64_t i = 0; rc == LM_OK && i < E; i++) xt[i] += row[i];
        if (rc == LM_OK) layer_norm(xt, p->embd_norm_w, p->embd_norm_b, E, p->norm_eps);
    }

    const int64_t d = E / p->n_head;
    for (int il = 0; il < p->n_layer && rc == LM_OK; il++) {
        const lm_encoder_layer *L = &layers[il];
        rc = matmul(tp, &L->wq, E, E, x, T, q, L->bq);
        if (rc == LM_OK) rc = matmul(tp, &L->wk, E, E, x, T, k, L->bk);
        if (rc == LM_OK) rc = matmul(tp, &L->wv, E, E, x, T, v, L->bv);
        if (rc != LM_OK) break;
        attn_job job = { q, k, v, att, scores, T, E, d, p->n_head, 1.0f / sqrtf((float)d) };
        lm_threadpool_run(tp, attn_task, &job);
        rc = matmul(tp, &L->wo, E, E, att, T, proj, L->bo);
        if (rc != LM_OK) break;
        for (int64_t t = 0; t < T; t++) {
            for (int64_t i = 0; i < E; i++) x[t * E + i] += proj[t * E + i];
            layer_norm(x + t * E, L->attn_norm_w, L->attn_norm_b, E, p->norm_eps);
        }
        rc = matmul(tp, &L->w_up, F, E, x, T, h, L->b_up);
        if (rc != LM_OK) break;
        gelu(h, T * F, p->activation);
        rc = matmul(tp, &L->w_down, E, F, h, T, proj, L->b_down);
        if (rc != LM_OK) break;
        for (int64_t t = 0; t < T; t++) {
            for (int64_t i = 0; i < E; i++) x[t * E + i] += proj[t * E + i];
            layer_norm(x + t * E, L->out_norm_w, L->out_norm_b, E, p->norm_eps);
        }
    }
    free(buf);
    return rc;
}
