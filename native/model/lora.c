/* lora.c — LoRA adapters applied at run time (lamina.h, lm_lora_*), as
 * llama.cpp's build_lora_mm (src/llama-graph.cpp) does it:
 *
 *   y = x W                      (lm_matmuls, the base weights untouched)
 *   for each adapter targeting W, in the context's order:
 *     t = x A^T                  [ncols][rank]
 *     y += s * t B^T             [ncols][n_out], s = scale * alpha / rank
 *
 * The scale is per (sequence, adapter), so each row of a batch takes its
 * sequence's; an adapter no row of the batch uses costs nothing. The
 * adapter's matmuls go through the same kernels as the base ones. */
#include <stdlib.h>
#include <string.h>

#include "compute/matmul.h"
#include "error.h"
#include "model/model.h"
#include "quants/type_traits.h"

struct lm_lora {
    const lm_model *model;
    lm_lora_weight *w;            /* [n] */
    int32_t n;
    float alpha;
};

/* one adapter's pair for one base matrix */
typedef struct {
    const lm_matrix *target;      /* the base matrix in the model (what lm_matmuls is handed) */
    lm_lora_weight w;             /* a copy: the adapter object may go first, its matrices may not */
    int32_t adapter;              /* index in the context's list */
    float mult;                   /* alpha / rank, or 1 when alpha is 0 (llama.cpp's get_scale) */
    int is_output;                /* the head: its columns are the batch rows c->b_out */
} lora_entry;

struct lm_lora_state {
    int32_t n_loras, n_seq, n_cols;
    float *scales;                /* [n_seq][n_loras] */
    lora_entry *entries;          /* [n_entries] sorted by target */
    int32_t n_entries;
    float *t;                     /* [n_cols][max rank] x A^T */
    float *u;                     /* [n_cols][max n_out] (x A^T) B^T */
    float *row_s;                 /* [n_cols] each column's scale */
    void *scratch;                /* quantized activations of the adapter's matmuls */
};

static const char *const target_names[] = { "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "output" };

/* the base matrix of (layer, target) and its shape: rows outputs of n inputs */
static const lm_matrix *target_matrix(const lm_model *m, int32_t layer, int32_t target, int64_t *rows, int64_t *n) {
    const lm_model_params *p = &m->p;
    const int64_t E = p->n_embd, Q = (int64_t)p->n_head * p->head_dim, KV = (int64_t)p->n_head_kv * p->head_dim;
    if (target == LM_LORA_OUTPUT) {
        *rows = p->n_vocab, *n = E;
        return &p->output;
    }
    lm_layer_weights *l = &m->layers[layer];
    switch (target) {
    case LM_LORA_WQ: *rows = Q, *n = E; return &l->wq;
    case LM_LORA_WK: *rows = KV, *n = E; return &l->wk;
    case LM_LORA_WV: *rows = KV, *n = E; return &l->wv;
    case LM_LORA_WO: *rows = E, *n = Q; return &l->wo;
    case LM_LORA_W_GATE: *rows = p->n_ff, *n = E; return &l->w_gate;
    case LM_LORA_W_UP: *rows = p->n_ff, *n = E; return &l->w_up;
    default: *rows = E, *n = p->n_ff; return &l->w_down;
    }
}

/* a matrix of `rows` rows of n values: a type that runs, whole blocks of it and of its activation partner */
static int check_matrix(const lm_matrix *a, int64_t n, int32_t i, const char *which) {
    if (!a->data) return lm_set_error(LM_ERR_ARG, "lm_lora_create: weight %d: %s has no data", i, which);
    if (!lm_type_supported(a->type))
        return lm_set_error(LM_ERR_TYPE, "lm_lora_create: weight %d: %s has type %d, which does not run", i, which,
                            a->type);
    const int64_t bs = lm_type_block_size(a->type), bp = lm_type_block_size(lm_type_vec_dot_type(a->type));
    if (n % bs || n % bp)
        return lm_set_error(LM_ERR_SHAPE, "lm_lora_create: weight %d: %s rows of %lld are not whole %s blocks", i,
                            which, (long long)n, lm_type_name(a->type));
    if (a->scale)
        return lm_set_error(LM_ERR_ARG, "lm_lora_create: weight %d: %s cannot have an output scale", i, which);
    return LM_OK;
}

lm_lora *lm_lora_create(const lm_model *m, const lm_lora_weight *w, int32_t n, float alpha) {
    if (!m || (!w && n > 0) || n < 0) {
        lm_set_error(LM_ERR_ARG, "lm_lora_create: model or weights NULL, or n_weights < 0");
        return NULL;
    }
    if (!(alpha >= 0.0f) || alpha > 1e30f) {
        lm_set_error(LM_ERR_ARG, "lm_lora_create: alpha %g: expected a finite number >= 0", (double)alpha);
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) {
        const lm_lora_weight *e = &w[i];
        if (e->target < LM_LORA_WQ || e->target > LM_LORA_OUTPUT) {
            lm_set_error(LM_ERR_ARG, "lm_lora_create: weight %d: target %d unknown", i, e->target);
            return NULL;
        }
        if (e->target != LM_LORA_OUTPUT && (e->layer < 0 || e->layer >= m->p.n_layer)) {
            lm_set_error(LM_ERR_ARG, "lm_lora_create: weight %d: layer %d outside [0, %d)", i, e->layer, m->p.n_layer);
            return NULL;
        }
        if (m->p.n_expert > 0 && e->target >= LM_LORA_W_GATE && e->target <= LM_LORA_W_DOWN) {
            lm_set_error(LM_ERR_ARG, "lm_lora_create: weight %d: %s of a mixture-of-experts layer", i,
                         target_names[e->target]);
            return NULL;
        }
        if (e->rank < 1) {
            lm_set_error(LM_ERR_SHAPE, "lm_lora_create: weight %d: rank %d < 1", i, e->rank);
            return NULL;
        }
        int64_t rows, width;
        (void)target_matrix(m, e->target == LM_LORA_OUTPUT ? 0 : e->layer, e->target, &rows, &width);
        if (check_matrix(&e->a, width, i, "A") || check_matrix(&e->b, e->rank, i, "B")) return NULL;
        for (int32_t j = 0; j < i; j++)
            if (w[j].target == e->target && (e->target == LM_LORA_OUTPUT || w[j].layer == e->layer)) {
                lm_set_error(LM_ERR_ARG, "lm_lora_create: weights %d and %d both target layer %d's %s", j, i, e->layer,
                             target_names[e->target]);
                return NULL;
            }
    }
    lm_lora *a = calloc(1, sizeof *a);
    if (a) a->w = malloc(sizeof *a->w * (size_t)(n > 0 ? n : 1));
    if (!a || !a->w) {
        if (a) free(a);
        lm_set_error(LM_ERR_NOMEM, "lm_lora_create: out of memory");
        return NULL;
    }
    if (n > 0) memcpy(a->w, w, sizeof *a->w * (size_t)n);
    a->model = m, a->n = n, a->alpha = alpha;
    return a;
}

void lm_lora_free(lm_lora *a) {
    if (!a) return;
    free(a->w);
    free(a);
}

void lm_lora_state_free(struct lm_lora_state *s) {
    if (!s) return;
    free(s->scales);
    free(s->entries);
    free(s->t);
    free(s->u);
    free(s->row_s);
    free(s->scratch);
    free(s);
}

static int by_target(const void *a, const void *b) {
    const lora_entry *x = a, *y = b;
    if (x->target != y->target) return (uintptr_t)x->target < (uintptr_t)y->target ? -1 : 1;
    return x->adapter - y->adapter;   /* adapters in the context's order, as llama.cpp adds them */
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

int lm_context_set_loras(lm_context *c, lm_lora *const *loras, int32_t n_loras) {
    if (!c || n_loras < 0 || (n_loras > 0 && !loras))
        return lm_set_error(LM_ERR_ARG, "lm_context_set_loras: context or adapters NULL, or n_loras < 0");
    if (c->dev && n_loras > 0)
        return lm_set_error(LM_ERR_ARG, "LoRA adapters on a context with offloaded layers are not supported");
    int32_t n_entries = 0;
    for (int32_t i = 0; i < n_loras; i++) {
        if (!loras[i] || loras[i]->model != c->model)
            return lm_set_error(LM_ERR_ARG, "lm_context_set_loras: adapter %d is NULL or made for another model", i);
        n_entries += loras[i]->n;
    }
    if (n_loras == 0) {
        lm_lora_state_free(c->lora);
        c->lora = NULL;
        return LM_OK;
    }
    struct lm_lora_state *s = calloc(1, sizeof *s);
    if (!s) return lm_set_error(LM_ERR_NOMEM, "lm_context_set_loras: out of memory");
    s->n_loras = n_loras, s->n_seq = c->pool.n_seq_max, s->n_cols = c->n_batch;
    s->scales = calloc((size_t)s->n_seq * (size_t)n_loras, sizeof *s->scales);
    s->entries = malloc(sizeof *s->entries * (size_t)(n_entries > 0 ? n_entries : 1));
    int64_t max_rank = 1, max_out = 1;
    size_t scratch = 64;
    for (int32_t i = 0; s->entries && i < n_loras; i++) {
        for (int32_t j = 0; j < loras[i]->n; j++) {
            const lm_lora_weight *w = &loras[i]->w[j];
            int64_t rows, width;
            lora_entry *e = &s->entries[s->n_entries++];
            e->target = target_matrix(c->model, w->layer, w->target, &rows, &width);
            e->w = *w, e->adapter = i, e->is_output = w->target == LM_LORA_OUTPUT;
            e->mult = loras[i]->alpha != 0.0f ? loras[i]->alpha / (float)w->rank : 1.0f;
            if (w->rank > max_rank) max_rank = w->rank;
            if (rows > max_out) max_out = rows;
            scratch = max_size(scratch, lm_matmul_scratch_bytes(w->a.type, width, c->n_batch));
            scratch = max_size(scratch, lm_matmul_scratch_bytes(w->b.type, w->rank, c->n_batch));
        }
    }
    s->t = malloc(sizeof(float) * (size_t)(max_rank * c->n_batch));
    s->u = malloc(sizeof(float) * (size_t)(max_out * c->n_batch));
    s->row_s = malloc(sizeof(float) * (size_t)c->n_batch);
    s->scratch = malloc(scratch);
    if (!s->scales || !s->entries || !s->t || !s->u || !s->row_s || !s->scratch) {
        lm_lora_state_free(s);
        return lm_set_error(LM_ERR_NOMEM, "lm_context_set_loras: out of memory");
    }
    qsort(s->entries, (size_t)s->n_entries, sizeof *s->entries, by_target);
    lm_lora_state_free(c->lora);
    c->lora = s;
    return LM_OK;
}

int lm_context_lora_scale(lm_context *c, int32_t seq, int32_t i, float scale) {
    if (!c || !c->lora) return lm_set_error(LM_ERR_ARG, "lm_context_lora_scale: the context has no adapters");
    struct lm_lora_state *s = c->lora;
    if (i < 0 || i >= s->n_loras)
        return lm_set_error(LM_ERR_ARG, "lm_context_lora_scale: adapter %d outside [0, %d)", i, s->n_loras);
    if (seq < -1 || seq >= s->n_seq)
        return lm_set_error(LM_ERR_ARG, "lm_context_lora_scale: sequence %d outside [-1, %d)", seq, s->n_seq);
    if (!(scale == scale) || scale > 1e30f || scale < -1e30f)
        return lm_set_error(LM_ERR_ARG, "lm_context_lora_scale: scale %g is not finite", (double)scale);
    for (int32_t q = seq < 0 ? 0 : seq; q < (seq < 0 ? s->n_seq : seq + 1); q++)
        s->scales[(size_t)q * (size_t)s->n_loras + (size_t)i] = scale;
    return LM_OK;
}

/* y [ncols][rows] += row_s[col] * (x A^T) B^T; 0 when no column uses it */
static int apply_entry(lm_context *c, const lora_entry *e, const float *x, int64_t n, int64_t ncols, float *y,
                       int64_t rows) {
    struct lm_lora_state *s = c->lora;
    int any = 0;
    for (int64_t j = 0; j < ncols; j++) {
        const int32_t row = e->is_output ? c->b_out[j] : (int32_t)j;
        const int32_t seq = c->b_seq_id[row];
        s->row_s[j] = s->scales[(size_t)seq * (size_t)s->n_loras + (size_t)e->adapter] * e->mult;
        any |= s->row_s[j] != 0.0f;
    }
    if (!any) return LM_OK;
    const lm_lora_weight *w = &e->w;
    int rc = lm_matmul_into(c->tp, LM_IMPL_AUTO, w->a.type, w->a.data, w->rank, n, x, ncols, s->t, w->rank, s->scratch);
    if (!rc)
        rc = lm_matmul_into(c->tp, LM_IMPL_AUTO, w->b.type, w->b.data, rows, w->rank, s->t, ncols, s->u, rows,
                            s->scratch);
    if (rc) return rc;
    for (int64_t j = 0; j < ncols; j++) {
        const float sj = s->row_s[j];
        if (sj == 0.0f) continue;
        float *yj = y + j * rows;
        const float *uj = s->u + j * rows;
        for (int64_t r = 0; r < rows; r++) yj[r] += sj * uj[r];
    }
    return LM_OK;
}

int lm_lora_apply(lm_context *c, const float *x, int64_t n, int64_t ncols, const lm_mm_out *out, int n_out) {
    const struct lm_lora_state *s = c->lora;
    for (int i = 0; i < n_out; i++) {
        /* the first entry of this matrix: the entries are sorted by target */
        int32_t lo = 0, hi = s->n_entries;
        while (lo < hi) {
            const int32_t mid = (lo + hi) / 2;
            if ((uintptr_t)s->entries[mid].target < (uintptr_t)out[i].w)
                lo = mid + 1;
            else
                hi = mid;
        }
        const float *xi = out[i].x ? out[i].x : x;
        const int64_t ci = out[i].x ? out[i].ncols : ncols;
        for (int32_t k = lo; k < s->n_entries && s->entries[k].target == out[i].w; k++) {
            if (ci > s->n_cols) return lm_set_error(LM_ERR_ARG, "LoRA: %lld columns, more than n_batch", (long long)ci);
            int rc = apply_entry(c, &s->entries[k], xi, n, ci, out[i].y, out[i].rows);
            if (rc) return rc;
        }
    }
    return LM_OK;
}
