/* forward.c — the forward pass: one batch of tokens of several sequences
 * through the whole decoder (batch.c checks the batch and reserves its cells).
 *
 *   x = embed(tokens) * embd_scale
 *   for each layer:
 *     h = norm(x)                (x itself where the layer has no pre-norm)
 *     q, k, v = h Wq (+bq), h Wk (+bk), h Wv (+bv)
 *     q, k = rope(qk_norm(q)), rope(qk_norm(k));  cache[cell of (seq, pos)] = k, v
 *       (qk_norm: per head, or over the whole projection)
 *     x = x + post_norm(attention(q, cache) Wo (+bo)) * residual_scale
 *       (gpt-oss: each head's softmax also counts its sink logit)
 *     h = norm(x)
 *     x = x + post_norm((act(h Wgate) * (h Wup)) Wdown) * residual_scale
 *       (or the mix of the experts the router picks: moe.c)
 *   logits = softcap(norm(x) Wout / logit_scale)
 *
 * Every step is a job over the context's thread pool: matmuls split weight
 * rows (lm_matmul_into; in decode the matrices that share an input go out
 * together as row slices, one pool wake-up), the row-wise steps split
 * tokens, attention splits (token, head) pairs. Every step but attention
 * treats each token alone, whatever sequence it belongs to; attention reads
 * the token's own sequence through its block table. Steps too small to be
 * worth waking the workers run on the calling thread. */
#include <math.h>
#include <string.h>

#include "compute/matmul.h"
#include "compute/threadpool.h"
#include "error.h"
#include "include/lamina_gptq.h"
#include "model/model.h"
#include "offload/backend.h"
#include "quants/type_traits.h"

/* Below this much work (~flops) a step runs on the calling thread: waking the
 * workers costs more than a decode step's norm or activation. */
enum { INLINE_WORK = 1 << 16 };

typedef struct {
    lm_context *c;
    const lm_model_params *p;
    const lm_layer_weights *l;    /* current layer */
    int il;
    int32_t n_tokens;             /* T, rows of the batch */
    int32_t max_pos;              /* the batch's last position (the work attention does) */
    const int32_t *tokens;        /* [T] */
    const int32_t *pos;           /* [T] position of each row in its sequence */
    const int32_t *seq;           /* [T] its sequence */
    const int32_t *cell;          /* [T] the cell its key and value go to */
    const float *post_norm;       /* residual step: norm of the sublayer output, or NULL */
    const float *bias;            /* residual step: added to the sublayer output first, or NULL */
    const float *next_norm;       /* residual step: norm for the next sublayer */
    int heads_per_task;           /* attention: heads of one KV group a task takes */
    int split_parts;              /* attention split by keys: the shares of a group's keys */
    int64_t next_task;            /* attention: the next task a thread takes */
} fwd_job;

static void run(lm_context *c, lm_task_fn fn, fwd_job *job, int64_t work) {
    if (work < INLINE_WORK)
        fn(job, 0, 1);
    else
        lm_threadpool_run(c->tp, fn, job);
}

static float norm_add_one(const lm_model_params *p) { return p->norm_kind == LM_NORM_RMS_PLUS_ONE ? 1.0f : 0.0f; }

/* out = the input of a sublayer: w's RMS norm of x, or x itself when w is
 * NULL (olmo2 norms sublayer outputs only) */
static void pre_norm(float *out, const float *x, const float *w, const lm_model_params *p) {
    if (w)
        lm_rms_norm(out, x, w, p->n_embd, p->norm_eps, norm_add_one(p));
    else
        memcpy(out, x, sizeof(float) * (size_t)p->n_embd);
}

/* ---------------------------------------------------------- embedding */

/* x[t] = tok_embd[tokens[t]] * embd_scale;  xb[t] = attn_norm_0(x[t]) */
static void embed_rows(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    const lm_model_params *p = job->p;
    const lm_type_traits *t = lm_get_type_traits(p->tok_embd.type);
    const size_t row_bytes = (size_t)(p->n_embd / t->blck_size) * t->type_size;
    int64_t r0, r1;
    lm_split_range(job->n_tokens, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *x = job->c->x + r * p->n_embd;
        t->to_float((const char *)p->tok_embd.data + (size_t)job->tokens[r] * row_bytes, x, p->n_embd);
        if (p->embd_scale != 1.0f)
            for (int i = 0; i < p->n_embd; i++) x[i] *= p->embd_scale;
        pre_norm(job->c->xb + r * p->n_embd, x, job->next_norm, p);
    }
}

/* ---------------------------------------------------------- attention */

/* (cos, sin) of every rotated pair of every row, once per rope group */
static void rope_tables(lm_context *c, const int32_t *pos, int32_t n_tokens) {
    const lm_model *m = c->model;
    const int half = m->p.n_rot / 2;
    for (int g = 0; g < m->n_rope_groups; g++) {
        const double *inv_freq = c->rope_inv_freq + (size_t)g * half;
        /* 1 but for LongRoPE and YaRN, and then as ggml: cos * ms, sin * ms */
        const float ms = m->rope_mscale[g];
        for (int32_t t = 0; t < n_tokens; t++) {
            float *cs = c->rope_cs + ((size_t)g * c->n_batch + t) * 2 * half;
            for (int i = 0; i < half; i++) {
                const double theta = (double)pos[t] * inv_freq[i];
                cs[2 * i] = (float)cos(theta) * ms;
                cs[2 * i + 1] = (float)sin(theta) * ms;
            }
        }
    }
}

/* biases, q/k norms and rope on each row's q and k; then k, v into the cache */
static void qkv_rows(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    lm_context *c = job->c;
    const lm_model_params *p = job->p;
    const lm_layer_weights *l = job->l;
    const int hd = p->head_dim, q_dim = p->n_head * hd, kv_dim = p->n_head_kv * hd;
    const float *cs_group = c->rope_cs + (size_t)c->model->rope_group[job->il] * c->n_batch * p->n_rot;
    const lm_type_traits *kvt = lm_get_type_traits(c->kv_type);
    const size_t layer_off = (size_t)(job->il - c->kv_il0) * c->n_ctx * c->kv_row_bytes;
    int64_t r0, r1;
    lm_split_range(job->n_tokens, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *q = c->q + r * q_dim, *k = c->k + r * kv_dim, *v = c->v + r * kv_dim;
        if (l->bq)
            for (int i = 0; i < q_dim; i++) q[i] += l->bq[i];
        if (l->bk)
            for (int i = 0; i < kv_dim; i++) k[i] += l->bk[i];
        if (l->bv)
            for (int i = 0; i < kv_dim; i++) v[i] += l->bv[i];
        const float *cs = cs_group + r * p->n_rot;
        const int whole = p->qk_norm_whole && l->q_norm;
        if (whole) {
            lm_rms_norm(q, q, l->q_norm, q_dim, p->norm_eps, norm_add_one(p));
            lm_rms_norm(k, k, l->k_norm, kv_dim, p->norm_eps, norm_add_one(p));
        }
        for (int h = 0; h < p->n_head; h++) {
            if (l->q_norm && !whole) lm_rms_norm(q + h * hd, q + h * hd, l->q_norm, hd, p->norm_eps, norm_add_one(p));
            lm_rope_head(q + h * hd, cs, p->n_rot, p->rope_layout == LM_ROPE_NEOX);
        }
        for (int h = 0; h < p->n_head_kv; h++) {
            if (l->k_norm && !whole) lm_rms_norm(k + h * hd, k + h * hd, l->k_norm, hd, p->norm_eps, norm_add_one(p));
            lm_rope_head(k + h * hd, cs, p->n_rot, p->rope_layout == LM_ROPE_NEOX);
        }
        const size_t at = layer_off + (size_t)job->cell[r] * c->kv_row_bytes;
        kvt->from_float(k, c->k_cache + at, kv_dim);
        kvt->from_float(v, c->v_cache + at, kv_dim);
    }
}

/* att[t, head h] = softmax(scale * q_th . K[lo..pos]) V[lo..pos], where the
 * keys are the cached positions of the token's own sequence up to its own
 * (causal), and no further back than the sliding window. The positions are
 * read run by run (lm_kv_run: blocks that follow each other in the pool, all
 * of them for one sequence alone); mix adds each run into the output, which
 * gives the bits of one pass over all rows, so a sequence's result does not
 * depend on where its blocks are.
 *
 * A task is one token and up to LM_KV_MAX_HEADS heads of one KV group, which
 * read the group's cached rows once between them (the kernels give each head
 * the bits it gets alone). Fewer heads go together when whole groups would
 * leave threads idle (decode of a model with few KV heads). Threads take the
 * next task as they finish one, one KV group after another (at depth a
 * group's cached rows fit a core's L2 where all groups' do not, so the
 * threads' neighbouring tokens reuse them), and within a group latest tokens
 * first: later tokens attend to more keys, so the big tasks go out first and
 * the small ones fill the gaps. */
/* where a layer's cached rows are: row `cell` of KV head g starts at
 * base + layer + g * head_bytes + cell * stride */
typedef struct {
    size_t head_bytes, stride, layer;
} kv_layout;

static kv_layout layer_kv(const fwd_job *job) {
    const lm_context *c = job->c;
    const lm_type_traits *kvt = lm_get_type_traits(c->kv_type);
    const size_t stride = c->kv_row_bytes;
    return (kv_layout){ .head_bytes = (size_t)(job->p->head_dim / kvt->blck_size) * kvt->type_size,
                        .stride = stride,
                        .layer = (size_t)(job->il - c->kv_il0) * c->n_ctx * stride };
}

static int attention_heads_per_task(const lm_model_params *p, int32_t n_tokens, int nth) {
    const int group = p->n_head / p->n_head_kv;
    int heads = group < LM_KV_MAX_HEADS ? group : LM_KV_MAX_HEADS;
    while (heads > 1 && (int64_t)n_tokens * p->n_head_kv * ((group + heads - 1) / heads) < 2 * nth) heads--;
    return heads;
}

/* one head's scores into probabilities; with a sink (gpt-oss) the scalar
 * kernel, which counts it */
static void head_softmax(const lm_context *c, const lm_layer_weights *l, int h, float *s, int64_t n) {
    if (l->attn_sinks)
        lm_softmax_sink(s, n, l->attn_sinks[h]);
    else
        c->kv.softmax(s, n);
}

static void attention(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    lm_context *c = job->c;
    const lm_model_params *p = job->p;
    const int hd = p->head_dim, q_dim = p->n_head * hd, group = p->n_head / p->n_head_kv;
    const int heads = job->heads_per_task, per_group = (group + heads - 1) / heads;
    const kv_layout kv = layer_kv(job);
    const size_t stride = kv.stride;
    const size_t s_stride = (size_t)c->n_ctx;
    const int32_t window = job->l->sliding_window;
    float *s = c->scores + (size_t)ith * LM_KV_MAX_HEADS * s_stride;
    const int64_t per_kv_head = (int64_t)job->n_tokens * per_group, n_tasks = p->n_head_kv * per_kv_head;
    (void)nth;
    for (;;) {
        const int64_t task = __atomic_fetch_add(&job->next_task, 1, __ATOMIC_RELAXED);
        if (task >= n_tasks) break;
        const int g = (int)(task / per_kv_head);
        const int t = job->n_tokens - 1 - (int)(task % per_kv_head / per_group);
        const int h0 = g * group + (int)(task % per_group) * heads;
        const int nh = h0 + heads <= (g + 1) * group ? heads : (g + 1) * group - h0;
        const int32_t pos = job->pos[t], seq = job->seq[t];
        const int32_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        const float *q = c->q + (size_t)t * q_dim + (size_t)h0 * hd;
        const size_t head_off = kv.layer + (size_t)g * kv.head_bytes;
        float *out = c->att + (size_t)t * q_dim + (size_t)h0 * hd;
        int32_t cell, n;
        for (int32_t j = lo; j <= pos; j += n) {
            n = lm_kv_run(&c->pool, seq, j, pos, &cell);
            c->kv.scores(s + (j - lo), s_stride, q, (size_t)hd, nh, c->k_cache + head_off + (size_t)cell * stride,
                         stride, n, hd, p->attn_scale);
        }
        for (int h = 0; h < nh; h++) {
            if (p->attn_softcap > 0.0f) lm_softcap(s + h * s_stride, pos - lo + 1, p->attn_softcap);
            head_softmax(c, job->l, h0 + h, s + h * s_stride, pos - lo + 1);
        }
        memset(out, 0, sizeof(float) * (size_t)hd * nh);
        for (int32_t j = lo; j <= pos; j += n) {
            n = lm_kv_run(&c->pool, seq, j, pos, &cell);
            c->kv.mix(out, (size_t)hd, s + (j - lo), s_stride, nh, c->v_cache + head_off + (size_t)cell * stride,
                      stride, n, hd);
        }
    }
}

/* One token and many keys (decode of one sequence at long context): split
 * by keys instead of heads, so every thread has work and each cached row is
 * read once, by one thread, for all heads of its group. Three steps: the
 * scores of a group's heads over a share of the keys; each head's softmax;
 * each 32-wide strip of a group's outputs over all the keys. Every value
 * comes from the same kernels in the same order as in attention(): the same
 * bits. */
enum { SPLIT_MIN_KEYS = 1024, SPLIT_MIN_PART = 256, STRIP = 32 };

static int attention_split(const fwd_job *job, int64_t keys, int nth) {
    return job->n_tokens == 1 && nth > 1 && keys >= SPLIT_MIN_KEYS;
}

static int32_t split_lo(const fwd_job *job) {
    const int32_t window = job->l->sliding_window, pos = job->pos[0];
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}

/* row h of the scores: [n_head][n_ctx] for the one token */
static float *split_scores(const fwd_job *job, int h) { return job->c->scores + (size_t)h * job->c->n_ctx; }

static void attention_split_scores(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    lm_context *c = job->c;
    const lm_model_params *p = job->p;
    const int hd = p->head_dim, group = p->n_head / p->n_head_kv;
    const kv_layout kv = layer_kv(job);
    const int32_t pos = job->pos[0], seq = job->seq[0], lo = split_lo(job), n_keys = pos - lo + 1;
    const int parts = job->split_parts;
    (void)ith, (void)nth;
    for (;;) {
        const int64_t task = __atomic_fetch_add(&job->next_task, 1, __ATOMIC_RELAXED);
        if (task >= (int64_t)p->n_head_kv * parts) break;
        const int g = (int)(task / parts), part = (int)(task % parts);
        const int32_t a = lo + (int32_t)((int64_t)n_keys * part / parts);
        const int32_t b = lo + (int32_t)((int64_t)n_keys * (part + 1) / parts) - 1;
        for (int h0 = g * group; h0 < (g + 1) * group; h0 += LM_KV_MAX_HEADS) {
            const int nh = (g + 1) * group - h0 < LM_KV_MAX_HEADS ? (g + 1) * group - h0 : LM_KV_MAX_HEADS;
            const float *q = c->q + (size_t)h0 * hd;
            int32_t cell, n;
            for (int32_t j = a; j <= b; j += n) {
                n = lm_kv_run(&c->pool, seq, j, b, &cell);
                c->kv.scores(split_scores(job, h0) + (j - lo), (size_t)c->n_ctx, q, (size_t)hd, nh,
                             c->k_cache + kv.layer + (size_t)g * kv.head_bytes + (size_t)cell * kv.stride, kv.stride, n,
                             hd, p->attn_scale);
            }
        }
    }
}

static void attention_split_softmax(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    const lm_model_params *p = job->p;
    const int32_t n_keys = job->pos[0] - split_lo(job) + 1;
    for (int h = ith; h < p->n_head; h += nth) {
        if (p->attn_softcap > 0.0f) lm_softcap(split_scores(job, h), n_keys, p->attn_softcap);
        head_softmax(job->c, job->l, h, split_scores(job, h), n_keys);
    }
}

static void attention_split_mix(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    lm_context *c = job->c;
    const lm_model_params *p = job->p;
    const int hd = p->head_dim, group = p->n_head / p->n_head_kv;
    const kv_layout kv = layer_kv(job);
    const int32_t pos = job->pos[0], seq = job->seq[0], lo = split_lo(job);
    const int strips = hd % STRIP ? 1 : hd / STRIP, width = strips == 1 ? hd : STRIP;
    const size_t strip_bytes = kv.head_bytes / (size_t)strips;
    (void)ith, (void)nth;
    for (;;) {
        const int64_t task = __atomic_fetch_add(&job->next_task, 1, __ATOMIC_RELAXED);
        if (task >= (int64_t)p->n_head_kv * strips) break;
        const int g = (int)(task / strips), strip = (int)(task % strips);
        for (int h0 = g * group; h0 < (g + 1) * group; h0 += LM_KV_MAX_HEADS) {
            const int nh = (g + 1) * group - h0 < LM_KV_MAX_HEADS ? (g + 1) * group - h0 : LM_KV_MAX_HEADS;
            float *out = c->att + (size_t)h0 * hd + (size_t)strip * width;
            for (int h = 0; h < nh; h++) memset(out + (size_t)h * hd, 0, sizeof(float) * (size_t)width);
            int32_t cell, n;
            for (int32_t j = lo; j <= pos; j += n) {
                n = lm_kv_run(&c->pool, seq, j, pos, &cell);
                c->kv.mix(out, (size_t)hd, split_scores(job, h0) + (j - lo), (size_t)c->n_ctx, nh,
                          c->v_cache + kv.layer + (size_t)g * kv.head_bytes + (size_t)cell * kv.stride +
                              strip * strip_bytes,
                          kv.stride, n, width);
            }
        }
    }
}

/* ------------------------------------------------- residual, ffn, norm */

/* x += post_norm(xb);  xb = next_norm(x)  — the seam between two sublayers */
static void residual_rows(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    const lm_model_params *p = job->p;
    const int n = p->n_embd;
    int64_t r0, r1;
    lm_split_range(job->n_tokens, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *x = job->c->x + r * n, *xb = job->c->xb + r * n;
        if (job->bias)
            for (int i = 0; i < n; i++) xb[i] += job->bias[i];
        if (job->post_norm) lm_rms_norm(xb, xb, job->post_norm, n, p->norm_eps, norm_add_one(p));
        if (p->residual_scale != 0.0f && p->residual_scale != 1.0f)
            for (int i = 0; i < n; i++) xb[i] *= p->residual_scale;
        for (int i = 0; i < n; i++) x[i] += xb[i];
        pre_norm(xb, x, job->next_norm, p);
    }
}

/* hb = act(hb) * hb2 over all rows */
static void ffn_act(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    const int64_t total = (int64_t)job->n_tokens * job->p->n_ff;
    int64_t i0, i1;
    lm_split_range(total, ith, nth, &i0, &i1);
    lm_act_for(&job->c->act, job->p->activation)(job->c->hb + i0, job->c->hb2 + i0, i1 - i0);
}

/* hb2 = hb - dequant(quant(hb)): what one pass of activation quantization
 * for w_down rounds away (two_pass_down). Each thread quantizes its rows
 * through its own slice of the matmul scratch, free between matmuls. */
static void down_residual_rows(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    lm_context *c = job->c;
    const int64_t n = job->p->n_ff;
    const lm_type_traits *a = lm_get_type_traits(lm_get_type_traits(job->l->w_down.type)->vec_dot_type);
    void *q = (char *)c->mm_scratch + (size_t)ith * c->mm_slice_bytes;
    int64_t r0, r1;
    lm_split_range(job->n_tokens, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const float *h = c->hb + r * n;
        float *res = c->hb2 + r * n;
        a->from_float(h, q, n);
        a->to_float(q, res, n);
        for (int64_t i = 0; i < n; i++) res[i] = h[i] - res[i];
    }
}

/* xb += xb2 */
static void add_second_pass(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    int64_t i0, i1;
    lm_split_range(job->n_tokens * job->p->n_embd, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) job->c->xb[i] += job->c->xb2[i];
}

/* lm_context_capture: copy a matmul input of the captured layer */
static void capture(const fwd_job *job, int which, const float *src, int64_t width) {
    float *dst = job->c->capture[which];
    if (job->c->capture_il == job->il && dst) memcpy(dst, src, sizeof(float) * (size_t)(job->n_tokens * width));
}

/* lm_context_imatrix: x * x of a dense matmul input into its sums */
static int imx_on(const fwd_job *job) { return job->c->imx_sums && job->c->imx_dense; }

static void imx(const fwd_job *job, int part, const float *src, int64_t width) {
    if (imx_on(job)) lm_imx_add(job->c, lm_imx_part(job->c, job->il, part), src, job->n_tokens, width);
}

/* ------------------------------------------------------------ matmuls */

typedef struct {
    lm_context *c;
    const float *x;               /* [ncols][n] */
    int64_t n, ncols;
    const lm_mm_out *out;
    int n_out;
    int rc;                       /* a failure on any thread */
} mm_job;

/* rows [r0, r1) of every column of o's output times the matrix's scale */
static void scale_rows(const lm_mm_out *o, int64_t r0, int64_t r1, int64_t ncols) {
    if (!o->w->scale) return;
    const float s = o->w->scale[0];
    for (int64_t c = 0; c < ncols; c++)
        for (int64_t r = r0; r < r1; r++) o->y[c * o->rows + r] *= s;
}

/* A few columns (decode): each thread takes a slice of every matrix's rows
 * and quantizes the few activation rows itself into its own scratch, so the
 * matrices cost one wake-up of the pool instead of two each. */
static void mm_slices(void *arg, int ith, int nth) {
    mm_job *job = arg;
    void *scratch = (char *)job->c->mm_scratch + (size_t)ith * job->c->mm_slice_bytes;
    for (int i = 0; i < job->n_out; i++) {
        const lm_mm_out *o = &job->out[i];
        const float *x = o->x ? o->x : job->x;
        const int64_t ncols = o->x ? o->ncols : job->ncols;
        int64_t r0, r1;
        lm_split_range(o->rows, ith, nth, &r0, &r1);
        if (r1 == r0) continue;
        int rc;
        if (o->w->type == LM_TYPE_GPTQ_INT4) {
            rc = lm_gptq_matmul_into(NULL, LM_IMPL_AUTO, o->w->data, r0, r1, x, ncols, o->y + r0, o->rows, scratch);
        } else {
            const lm_type_traits *t = lm_get_type_traits(o->w->type);
            const size_t row_bytes = (size_t)(job->n / t->blck_size) * t->type_size;
            rc = lm_matmul_into(NULL, LM_IMPL_AUTO, o->w->type, (const char *)o->w->data + r0 * row_bytes, r1 - r0,
                                job->n, x, ncols, o->y + r0, o->rows, scratch);
        }
        if (rc)
            job->rc = rc;
        else
            scale_rows(o, r0, r1, ncols);
    }
}

int lm_matmuls(lm_context *c, const float *x, int64_t n, int64_t ncols, const lm_mm_out *out, int n_out) {
    int64_t most_cols = ncols;
    for (int i = 0; i < n_out; i++)
        if (out[i].x && out[i].ncols > most_cols) most_cols = out[i].ncols;
    if (most_cols <= LM_SLICED_MATMUL_COLS && lm_threadpool_size(c->tp) > 1) {
        mm_job job = { .c = c, .x = x, .n = n, .ncols = ncols, .out = out, .n_out = n_out };
        lm_threadpool_run(c->tp, mm_slices, &job);
        if (job.rc) return lm_set_error(job.rc, "matmul failed on a worker thread");
        return c->lora ? lm_lora_apply(c, x, n, ncols, out, n_out) : LM_OK;
    }
    for (int i = 0; i < n_out; i++) {
        const lm_matrix *w = out[i].w;
        const float *xi = out[i].x ? out[i].x : x;
        const int64_t ci = out[i].x ? out[i].ncols : ncols;
        int rc = w->type == LM_TYPE_GPTQ_INT4 ? lm_gptq_matmul_into(c->tp, LM_IMPL_AUTO, w->data, 0, out[i].rows, xi,
                                                                    ci, out[i].y, out[i].rows, c->mm_scratch)
                                              : lm_matmul_into(c->tp, LM_IMPL_AUTO, w->type, w->data, out[i].rows, n,
                                                               xi, ci, out[i].y, out[i].rows, c->mm_scratch);
        if (rc) return rc;
        scale_rows(&out[i], 0, out[i].rows, ci);
    }
    return c->lora ? lm_lora_apply(c, x, n, ncols, out, n_out) : LM_OK;   /* LoRA adapters: lora.c */
}

/* --------------------------------------------------------------- eval */

static int layer_forward(fwd_job *job) {
    lm_context *c = job->c;
    const lm_model_params *p = job->p;
    const lm_layer_weights *l = job->l;
    const int64_t T = job->n_tokens, hd = p->head_dim;
    const int64_t q_dim = p->n_head * hd, kv_dim = p->n_head_kv * hd;
    int rc;

    /* attention: xb holds attn_norm(x) */
    capture(job, 0, c->xb, p->n_embd);
    if (imx_on(job)) c->imx_counts[(size_t)job->il * (size_t)(1 + p->n_expert)] += T;
    imx(job, LM_IMX_ATTN_IN, c->xb, p->n_embd);
    const lm_mm_out qkv[3] = { { .w = &l->wq, .rows = q_dim, .y = c->q },
                               { .w = &l->wk, .rows = kv_dim, .y = c->k },
                               { .w = &l->wv, .rows = kv_dim, .y = c->v } };
    if ((rc = lm_matmuls(c, c->xb, p->n_embd, T, qkv, 3))) return rc;
    run(c, qkv_rows, job, T * (q_dim + kv_dim) * 8);
    const int64_t keys =
        l->sliding_window > 0 && l->sliding_window <= job->max_pos ? l->sliding_window : job->max_pos + 1;
    const int nth = lm_threadpool_size(c->tp);
    if (attention_split(job, keys, nth)) {
        int parts = (2 * nth + p->n_head_kv - 1) / p->n_head_kv;
        while (parts > 1 && keys / parts < SPLIT_MIN_PART) parts--;
        job->split_parts = parts;
        job->next_task = 0;
        lm_threadpool_run(c->tp, attention_split_scores, job);
        lm_threadpool_run(c->tp, attention_split_softmax, job);
        job->next_task = 0;
        lm_threadpool_run(c->tp, attention_split_mix, job);
    } else {
        job->heads_per_task = attention_heads_per_task(p, job->n_tokens, nth);
        job->next_task = 0;
        run(c, attention, job, T * p->n_head * hd * 4 * keys);
    }
    capture(job, 1, c->att, q_dim);
    imx(job, LM_IMX_WO_IN, c->att, q_dim);
    const lm_mm_out o[1] = { { .w = &l->wo, .rows = p->n_embd, .y = c->xb } };
    if ((rc = lm_matmuls(c, c->att, q_dim, T, o, 1))) return rc;
    job->post_norm = l->attn_post_norm;
    job->next_norm = l->ffn_norm;
    job->bias = l->bo;
    run(c, residual_rows, job, T * p->n_embd * 8);
    job->bias = NULL;

    /* feed-forward: xb holds ffn_norm(x) */
    capture(job, 2, c->xb, p->n_embd);
    imx(job, LM_IMX_FFN_IN, c->xb, p->n_embd);
    if (p->n_expert > 0) {
        if ((rc = lm_moe_ffn(c, l, T, job->il))) return rc;
        job->post_norm = l->ffn_post_norm;
        job->next_norm = job->il + 1 < p->n_layer ? c->model->layers[job->il + 1].attn_norm : p->output_norm;
        run(c, residual_rows, job, T * p->n_embd * 8);
        return LM_OK;
    }
    const lm_mm_out gate_up[2] = { { .w = &l->w_gate, .rows = p->n_ff, .y = c->hb },
                                   { .w = &l->w_up, .rows = p->n_ff, .y = c->hb2 } };
    if ((rc = lm_matmuls(c, c->xb, p->n_embd, T, gate_up, 2))) return rc;
    run(c, ffn_act, job, T * p->n_ff * 16);
    capture(job, 3, c->hb, p->n_ff);
    imx(job, LM_IMX_DOWN_IN, c->hb, p->n_ff);
    const lm_mm_out down[1] = { { .w = &l->w_down, .rows = p->n_embd, .y = c->xb } };
    if ((rc = lm_matmuls(c, c->hb, p->n_ff, T, down, 1))) return rc;
    /* only for Q8_K partners: their f32 block scale keeps the residual's
     * small magnitudes, where Q8_0/Q8_1's f16 scale would go subnormal */
    const lm_type_traits *down_t = lm_get_type_traits(l->w_down.type);   /* NULL for GPTQ: f32 activations */
    if (c->xb2 && down_t && down_t->vec_dot_type == LM_TYPE_Q8_K) {
        run(c, down_residual_rows, job, T * p->n_ff * 8);
        const lm_mm_out second[1] = { { .w = &l->w_down, .rows = p->n_embd, .y = c->xb2 } };
        if ((rc = lm_matmuls(c, c->hb2, p->n_ff, T, second, 1))) return rc;
        run(c, add_second_pass, job, T * p->n_embd);
    }
    job->post_norm = l->ffn_post_norm;
    job->next_norm = job->il + 1 < p->n_layer ? c->model->layers[job->il + 1].attn_norm : p->output_norm;
    run(c, residual_rows, job, T * p->n_embd * 8);
    return LM_OK;
}

/* the residual stream entering layer il0 from the caller: xb = attn_norm(x) */
static void load_rows(void *arg, int ith, int nth) {
    fwd_job *job = arg;
    const lm_model_params *p = job->p;
    int64_t r0, r1;
    lm_split_range(job->n_tokens, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++)
        pre_norm(job->c->xb + r * p->n_embd, job->c->x + r * p->n_embd, job->next_norm, p);
}

/* Rows c->b_out of xb (output_norm(x)) to the front, in order, so the head
 * runs over the rows asked for only. In place: row b_out[i] >= i. */
static void gather_out_rows(lm_context *c) {
    const size_t E = (size_t)c->model->p.n_embd;
    for (int32_t i = 0; i < c->b_n_out; i++)
        if (c->b_out[i] != i) memcpy(c->xb + i * E, c->xb + (size_t)c->b_out[i] * E, E * sizeof(float));
}

int lm_forward(lm_context *c, const lm_batch *b, int32_t il0, int32_t il1, const float *x_in, float *logits) {
    const lm_model *m = c->model;
    const lm_model_params *p = &m->p;
    const int64_t T = b->n_tokens, E = p->n_embd;
    fwd_job job = {
        .c = c, .p = p, .n_tokens = b->n_tokens, .tokens = b->token, .pos = b->pos, .seq = b->seq_id, .cell = c->b_cell
    };
    c->b_seq_id = b->seq_id;
    for (int32_t t = 0; t < b->n_tokens; t++) job.max_pos = b->pos[t] > job.max_pos ? b->pos[t] : job.max_pos;
    /* xb = the norm the first layer run here reads (output_norm for the head alone) */
    job.next_norm = il0 < p->n_layer ? m->layers[il0].attn_norm : p->output_norm;
    if (il0 < il1) rope_tables(c, b->pos, b->n_tokens);
    if (!x_in) {
        run(c, embed_rows, &job, T * E * 8);
    } else {
        memcpy(c->x, x_in, sizeof(float) * (size_t)(T * E));
        run(c, load_rows, &job, T * E * 8);
    }
    for (int il = il0; il < il1; il++) {
        job.il = il;
        job.l = &m->layers[il];
        int rc = layer_forward(&job);
        if (rc) return rc;
    }
    if (il1 < p->n_layer || !logits || c->b_n_out == 0) return LM_OK;
    /* xb now holds output_norm(x) */
    gather_out_rows(c);
    if (c->imx_head && c->imx_dense) {
        lm_imx_add(c, c->imx_head, c->xb, c->b_n_out, p->n_embd);
        *c->imx_head_count += c->b_n_out;
    }
    const lm_mm_out head[1] = { { .w = &p->output, .rows = p->n_vocab, .y = logits } };
    int rc = lm_matmuls(c, c->xb, p->n_embd, c->b_n_out, head, 1);
    if (rc) return rc;
    const int64_t n_logits = (int64_t)c->b_n_out * p->n_vocab;
    if (p->logit_scale != 0.0f && p->logit_scale != 1.0f) {
        const float inv = 1.0f / p->logit_scale;   /* llama.cpp multiplies by the reciprocal */
        for (int64_t i = 0; i < n_logits; i++) logits[i] *= inv;
    }
    if (p->final_softcap > 0.0f) lm_softcap(logits, n_logits, p->final_softcap);
    return LM_OK;
}

/* After lm_forward ran the last layer, xb holds output_norm(x) of every
 * token; the rows asked for go to embd [b_n_out][n_embd] in batch order. */
void lm_forward_embd_rows(lm_context *c, float *embd) {
    gather_out_rows(c);
    memcpy(embd, c->xb, sizeof(float) * (size_t)c->b_n_out * (size_t)c->model->p.n_embd);
}
