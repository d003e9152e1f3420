/* cpu_standin.c — a second CPU instance used as the offload device.
 *
 * It behaves as a GPU backend does: at creation it copies ("uploads") the
 * weights of its blocks and of the head into memory of its own and makes its
 * own KV cache for those blocks, with a pool and sequence table of its own;
 * each batch it receives the residual stream and returns logits, and it
 * repeats the host's sequence operations on its cache. Running the same code
 * (checks, block decisions, forward pass), any split must give the logits of
 * the CPU alone, which is what the split tests check. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "include/lamina_gptq.h"
#include "offload/backend.h"
#include "quants/type_traits.h"

typedef struct {
    lm_model *model;              /* params + layers pointing at the copies below */
    lm_context *ctx;              /* cache of blocks [il0, n_layer) */
    int32_t il0;
    void **owned;                 /* every copied buffer */
    int n_owned, cap_owned;
    size_t weight_bytes;
} standin;

static void *keep_copy(standin *d, const void *src, size_t bytes) {
    if (!src) return NULL;
    if (d->n_owned == d->cap_owned) {
        const int cap = d->cap_owned ? 2 * d->cap_owned : 64;
        void **grown = realloc(d->owned, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        d->owned = grown;
        d->cap_owned = cap;
    }
    void *dst = malloc(bytes ? bytes : 1);
    if (!dst) return NULL;
    memcpy(dst, src, bytes);
    d->owned[d->n_owned++] = dst;
    d->weight_bytes += bytes;
    return dst;
}

/* a vector of n floats, or NULL kept NULL; *ok = 0 when a copy failed */
static const float *copy_vec(standin *d, const float *v, int64_t n, int *ok) {
    if (!v) return NULL;
    const float *c = keep_copy(d, v, (size_t)n * sizeof(float));
    if (!c) *ok = 0;
    return c;
}

/* the rows x n matrix m, data and (for GPTQ) its descriptor; n_scale:
 * the entries of its scale (1, or n_expert for a stack) */
static lm_matrix copy_matrix(standin *d, lm_matrix m, int64_t rows, int64_t n, int64_t n_scale, int *ok) {
    lm_matrix out = { NULL, m.type, copy_vec(d, m.scale, n_scale, ok) };
    if (!m.data) return out;   /* a matrix this layer does not have (a MoE layer's dense FFN) */
    if (m.type == LM_TYPE_GPTQ_INT4) {
        lm_gptq_matrix g = *(const lm_gptq_matrix *)m.data;
        const size_t G = (size_t)g.n_groups, O = (size_t)g.n_out, I = (size_t)g.n_in;
        g.qweight = keep_copy(d, g.qweight, I / 8 * O * sizeof(int32_t));
        g.scales = keep_copy(d, g.scales, G * O * sizeof(uint16_t));
        g.qzeros = keep_copy(d, g.qzeros, G * (O / 8) * sizeof(int32_t));
        if (g.g_idx) g.g_idx = keep_copy(d, g.g_idx, I * sizeof(int32_t));
        /* the CPU-only group-order copy too: the stand-in runs the CPU kernels */
        const lm_gptq_matrix *h = m.data;
        if (h->qweight_grouped) g.qweight_grouped = keep_copy(d, h->qweight_grouped, I / 8 * O * sizeof(int32_t));
        if (h->g_idx_grouped) g.g_idx_grouped = keep_copy(d, h->g_idx_grouped, I * sizeof(int32_t));
        if (h->perm_grouped) g.perm_grouped = keep_copy(d, h->perm_grouped, I * sizeof(int32_t));
        out.data = keep_copy(d, &g, sizeof g);
        if (!g.qweight || !g.scales || !g.qzeros || (h->g_idx && !g.g_idx) ||
            (h->qweight_grouped && !g.qweight_grouped) || (h->g_idx_grouped && !g.g_idx_grouped) ||
            (h->perm_grouped && !g.perm_grouped))
            *ok = 0;
    } else {
        const lm_type_traits *t = lm_get_type_traits(m.type);
        out.data = keep_copy(d, m.data, (size_t)rows * (size_t)(n / t->blck_size) * t->type_size);
    }
    if (!out.data) *ok = 0;
    return out;
}

static void standin_free(void *dev) {
    standin *d = dev;
    if (!d) return;
    lm_context_free(d->ctx);
    lm_model_free(d->model);
    for (int i = 0; i < d->n_owned; i++) free(d->owned[i]);
    free(d->owned);
    free(d);
}

static void *standin_create(const lm_model *m, int32_t il0, const lm_context_params *params) {
    standin *d = calloc(1, sizeof *d);
    const int32_t L = m->p.n_layer;
    lm_layer_weights *layers = malloc((size_t)L * sizeof *layers);
    if (!d || !layers) goto nomem;
    d->il0 = il0;
    const lm_model_params *hp = &m->p;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t q_dim = (int64_t)hp->n_head * hd, kv_dim = (int64_t)hp->n_head_kv * hd;
    int64_t qn, kn;
    lm_qk_norm_lengths(hp, &qn, &kn);
    int ok = 1;
    lm_model_params p = *hp;
    /* tok_embd stays the host's: the device never reads it (x arrives embedded) */
    p.output_norm = copy_vec(d, hp->output_norm, E, &ok);
    p.output = copy_matrix(d, hp->output, hp->n_vocab, E, 1, &ok);
    p.rope_freqs = copy_vec(d, hp->rope_freqs, hp->n_rot / 2, &ok);
    p.rope_freqs_long = copy_vec(d, hp->rope_freqs_long, hp->n_rot / 2, &ok);
    memcpy(layers, m->layers, (size_t)L * sizeof *layers);
    for (int32_t il = il0; il < L; il++) {   /* blocks below il0 are never run here */
        const lm_layer_weights *s = &m->layers[il];
        lm_layer_weights *l = &layers[il];
#define COPY_VEC(f, n) l->f = copy_vec(d, s->f, n, &ok);
#define COPY_MATRIX(f, rows, cols) l->f = copy_matrix(d, s->f, rows, cols, 1, &ok);
        LM_LAYER_VECTORS(COPY_VEC)
        LM_LAYER_MATRICES(COPY_MATRIX)
#undef COPY_VEC
#undef COPY_MATRIX
        if (hp->n_expert > 0) {
            const int64_t n_exp = hp->n_expert, Fe = hp->n_ff_exp;
            l->moe_router = copy_matrix(d, s->moe_router, n_exp, E, 1, &ok);
            l->moe_gate = copy_matrix(d, s->moe_gate, n_exp * Fe, E, n_exp, &ok);
            l->moe_up = copy_matrix(d, s->moe_up, n_exp * Fe, E, n_exp, &ok);
            l->moe_down = copy_matrix(d, s->moe_down, n_exp * E, Fe, n_exp, &ok);
            l->moe_router_b = copy_vec(d, s->moe_router_b, n_exp, &ok);
            l->moe_gate_b = copy_vec(d, s->moe_gate_b, n_exp * Fe, &ok);
            l->moe_up_b = copy_vec(d, s->moe_up_b, n_exp * Fe, &ok);
            l->moe_down_b = copy_vec(d, s->moe_down_b, n_exp * E, &ok);
        }
        /* gpt-oss's (not in LM_LAYER_VECTORS: CUDA refuses them) */
        l->bo = copy_vec(d, s->bo, E, &ok);
        l->attn_sinks = copy_vec(d, s->attn_sinks, hp->n_head, &ok);
    }
    if (!ok) goto nomem;
    if (!(d->model = lm_model_create(&p, layers))) goto fail;
    free(layers);
    layers = NULL;
    lm_context_params cp = *params;
    cp.gpu_layers = 0;   /* the stand-in's context runs its layers itself */
    if (!(d->ctx = lm_context_create_range(d->model, &cp, il0, L))) goto fail;
    return d;
nomem:
    lm_set_error(LM_ERR_NOMEM, "offload device (cpu stand-in): out of memory copying the weights");
fail:
    free(layers);
    standin_free(d);
    return NULL;
}

/* the same code as the host's on the stand-in's own context: its checks,
 * its pool, the same decisions */
static int standin_decode(void *dev, const lm_batch *b, const float *x_in, float *logits) {
    standin *d = dev;
    return lm_context_decode_from(d->ctx, b, d->il0, x_in, logits);
}

static int standin_seq_rm(void *dev, int32_t seq, int32_t p0, int32_t p1) {
    return lm_context_seq_rm(((standin *)dev)->ctx, seq, p0, p1);
}

static int standin_seq_cp(void *dev, int32_t src, int32_t dst, int32_t n) {
    return lm_context_seq_cp(((standin *)dev)->ctx, src, dst, n);
}

static int standin_seq_state_get(void *dev, int32_t seq, void *dst, size_t size) {
    return lm_context_seq_state_get(((standin *)dev)->ctx, seq, dst, size);
}

static int standin_seq_state_set(void *dev, int32_t seq, int32_t n_pos, const void *src, size_t size) {
    return lm_context_seq_state_set(((standin *)dev)->ctx, seq, n_pos, src, size);
}

static void standin_usage(const void *dev, size_t *weight_bytes, size_t *kv_bytes) {
    const standin *d = dev;
    *weight_bytes = d->weight_bytes;
    *kv_bytes = lm_context_kv_bytes(d->ctx);
}

const lm_backend lm_backend_cpu_standin = {
    .name = "cpu-standin",
    .create = standin_create,
    .decode = standin_decode,
    .seq_rm = standin_seq_rm,
    .seq_cp = standin_seq_cp,
    .seq_state_get = standin_seq_state_get,
    .seq_state_set = standin_seq_state_set,
    .usage = standin_usage,
    .free = standin_free,
};
