/* model.c — lm_model (hyperparameters + pointers to mapped weights) and
 * lm_context (KV cache, activation buffers, thread pool): creation with a
 * last check of every size, and the small accessors of lamina.h. The
 * forward pass itself is in forward.c, the offload split in offload/split.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/matmul.h"
#include "error.h"
#include "include/lamina_gptq.h"
#include "model/model.h"
#include "offload/backend.h"
#include "quants/type_traits.h"
#include "simd/cpu_features.h"

/* ------------------------------------------------------------ checks */

static int check_matrix(const lm_matrix *m, int64_t rows, int64_t n, const char *what, int il) {
    if (!m->data) return lm_set_error(LM_ERR_ARG, "layer %d: %s is NULL", il, what);
    if (m->type == LM_TYPE_GPTQ_INT4) {
        const lm_gptq_matrix *g = m->data;
        if (g->n_in != n || g->n_out != rows)
            return lm_set_error(LM_ERR_SHAPE, "layer %d: %s: GPTQ matrix is %d x %d, expected %lld x %lld", il, what,
                                g->n_out, g->n_in, (long long)rows, (long long)n);
        return lm_gptq_validate(g);
    }
    if (!lm_type_supported(m->type))
        return lm_set_error(LM_ERR_TYPE, "layer %d: %s has type %s, which has no kernels", il, what,
                            lm_type_name(m->type));
    const lm_type_traits *t = lm_get_type_traits(m->type);
    const lm_type_traits *a = lm_get_type_traits(t->vec_dot_type);
    if (!a || !a->from_float)
        return lm_set_error(LM_ERR_TYPE, "layer %d: %s: no activation format for %s", il, what, t->name);
    if (n % t->blck_size || n % a->blck_size)
        return lm_set_error(LM_ERR_SHAPE, "layer %d: %s: row length %lld is not a multiple of %s's block size", il,
                            what, (long long)n, t->name);
    return LM_OK;
}

static int check_params(const lm_model_params *p) {
    if (p->n_vocab <= 0 || p->n_embd <= 0 || p->n_layer <= 0 || p->n_ff <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->head_dim <= 0)
        return lm_set_error(LM_ERR_SHAPE, "model: every size must be positive");
    if (p->n_head % p->n_head_kv)
        return lm_set_error(LM_ERR_SHAPE, "model: n_head %d is not a multiple of n_head_kv %d", p->n_head,
                            p->n_head_kv);
    if (p->n_rot < 0 || p->n_rot % 2 || p->n_rot > p->head_dim)
        return lm_set_error(LM_ERR_SHAPE, "model: n_rot %d must be even and <= head_dim %d", p->n_rot, p->head_dim);
    if (p->rope_layout != LM_ROPE_NORMAL && p->rope_layout != LM_ROPE_NEOX)
        return lm_set_error(LM_ERR_ARG, "model: unknown rope layout %d", p->rope_layout);
    if (p->norm_kind != LM_NORM_RMS && p->norm_kind != LM_NORM_RMS_PLUS_ONE)
        return lm_set_error(LM_ERR_ARG, "model: unknown norm kind %d", p->norm_kind);
    if (p->activation != LM_ACT_SILU && p->activation != LM_ACT_GELU_TANH && p->activation != LM_ACT_SWIGLU_OAI)
        return lm_set_error(LM_ERR_ARG, "model: unknown activation %d", p->activation);
    if (p->expert_gating != LM_GATING_SOFTMAX && p->expert_gating != LM_GATING_SOFTMAX_PICKED)
        return lm_set_error(LM_ERR_ARG, "model: unknown expert gating %d", p->expert_gating);
    if (!(p->norm_eps >= 0.0f) || !isfinite(p->embd_scale) || !isfinite(p->attn_scale))
        return lm_set_error(LM_ERR_ARG, "model: norm_eps, embd_scale and attn_scale must be finite");
    const lm_type_traits *te = lm_get_type_traits(p->tok_embd.type);
    if (!p->tok_embd.data || !te || !te->to_float || p->n_embd % te->blck_size)
        return lm_set_error(LM_ERR_TYPE, "model: token embedding of type %s cannot be read by rows of %d",
                            lm_type_name(p->tok_embd.type), p->n_embd);
    if (!p->output_norm) return lm_set_error(LM_ERR_ARG, "model: output_norm is NULL");
    if (p->n_expert < 0 || p->n_expert > LM_EXPERT_MAX ||
        (p->n_expert > 0 && (p->n_expert_used < 1 || p->n_expert_used > p->n_expert || p->n_ff_exp <= 0)))
        return lm_set_error(LM_ERR_ARG, "model: n_expert=%d (at most %d), n_expert_used=%d, n_ff_exp=%d do not fit",
                            p->n_expert, LM_EXPERT_MAX, p->n_expert_used, p->n_ff_exp);
    const float scales[4] = { p->residual_scale, p->logit_scale, p->attn_softcap, p->final_softcap };
    static const char *const scale_names[4] = { "residual_scale", "logit_scale", "attn_softcap", "final_softcap" };
    for (int i = 0; i < 4; i++)
        if (!(scales[i] >= 0.0f) || !isfinite(scales[i]))
            return lm_set_error(LM_ERR_ARG, "model: %s = %g is not a finite number >= 0", scale_names[i],
                                (double)scales[i]);
    for (int i = 0; p->rope_freqs && i < p->n_rot / 2; i++)
        if (!(p->rope_freqs[i] > 0.0f) || !isfinite(p->rope_freqs[i]))
            return lm_set_error(LM_ERR_ARG, "model: rope_freqs[%d] = %g is not a positive number", i,
                                (double)p->rope_freqs[i]);
    for (int i = 0; p->rope_freqs_long && i < p->n_rot / 2; i++)
        if (!(p->rope_freqs_long[i] > 0.0f) || !isfinite(p->rope_freqs_long[i]))
            return lm_set_error(LM_ERR_ARG, "model: rope_freqs_long[%d] = %g is not a positive number", i,
                                (double)p->rope_freqs_long[i]);
    if (!(p->rope_attn_factor >= 0.0f) || !isfinite(p->rope_attn_factor) || p->rope_long_ctx < 0)
        return lm_set_error(LM_ERR_ARG, "model: rope_attn_factor %g / rope_long_ctx %d out of range",
                            (double)p->rope_attn_factor, p->rope_long_ctx);
    return check_matrix(&p->output, p->n_vocab, p->n_embd, "output", -1);
}

static int check_layer(const lm_model_params *p, const lm_layer_weights *l, int il) {
    const int64_t q_dim = (int64_t)p->n_head * p->head_dim;
    if ((l->q_norm == NULL) != (l->k_norm == NULL))
        return lm_set_error(LM_ERR_ARG, "layer %d: q_norm and k_norm must both be set or both NULL", il);
    /* scale 0 makes every angle 0: cos 1, sin 0, an exact identity (smollm3's NoPE layers) */
    if (!(l->rope_base > 0.0f) || !(l->rope_scale >= 0.0f) || !isfinite(l->rope_base) || !isfinite(l->rope_scale))
        return lm_set_error(LM_ERR_ARG, "layer %d: rope base must be positive and scale positive or 0", il);
    if (l->sliding_window < 0) return lm_set_error(LM_ERR_ARG, "layer %d: negative sliding window", il);
    if (l->rope_plain != 0 && l->rope_plain != 1)
        return lm_set_error(LM_ERR_ARG, "layer %d: rope_plain %d is not 0 or 1", il, l->rope_plain);
    int rc;
    const int64_t E = p->n_embd, kv_dim = (int64_t)p->n_head_kv * p->head_dim;
    if ((rc = check_matrix(&l->wq, q_dim, E, "wq", il)) || (rc = check_matrix(&l->wk, kv_dim, E, "wk", il)) ||
        (rc = check_matrix(&l->wv, kv_dim, E, "wv", il)) || (rc = check_matrix(&l->wo, E, q_dim, "wo", il)))
        return rc;
    if (p->n_expert > 0) {
        /* one check of a whole stack: the experts' matrices follow one another */
        const int64_t n_exp = p->n_expert, F = p->n_ff_exp;
        const lm_matrix *stacks[3] = { &l->moe_gate, &l->moe_up, &l->moe_down };
        for (int i = 0; i < 3; i++)
            if (stacks[i]->type == LM_TYPE_GPTQ_INT4)
                return lm_set_error(LM_ERR_TYPE, "layer %d: GPTQ experts are not supported", il);
        if ((rc = check_matrix(&l->moe_router, n_exp, E, "moe_router", il)) ||
            (rc = check_matrix(&l->moe_gate, n_exp * F, E, "moe_gate", il)) ||
            (rc = check_matrix(&l->moe_up, n_exp * F, E, "moe_up", il)) ||
            (rc = check_matrix(&l->moe_down, n_exp * E, F, "moe_down", il)))
            return rc;
        return LM_OK;
    }
    if ((rc = check_matrix(&l->w_gate, p->n_ff, E, "w_gate", il)) ||
        (rc = check_matrix(&l->w_up, p->n_ff, E, "w_up", il)) ||
        (rc = check_matrix(&l->w_down, E, p->n_ff, "w_down", il)))
        return rc;
    return LM_OK;
}

/* ------------------------------------------------------------- model */

/* Angle per position of each rotated pair, folded once per distinct
 * (base, scale, plain): theta_i = pos * scale * base^(-2i/n_rot) / freq_factor_i
 * (no factor in a plain group), and the group's cos/sin multiplier. */
static int build_rope_groups(lm_model *m) {
    const int half = m->p.n_rot / 2, n_layer = m->p.n_layer;
    const size_t table = (size_t)n_layer * (size_t)(half > 0 ? half : 1);
    const float mscale = m->p.rope_attn_factor != 0.0f ? m->p.rope_attn_factor : 1.0f;
    m->rope_group = calloc((size_t)n_layer, sizeof(int32_t));
    m->rope_inv_freq = calloc(table, sizeof(double));
    m->rope_mscale = calloc((size_t)n_layer, sizeof(float));
    if (m->p.rope_freqs_long) m->rope_inv_freq_long = calloc(table, sizeof(double));
    if (!m->rope_group || !m->rope_inv_freq || !m->rope_mscale || (m->p.rope_freqs_long && !m->rope_inv_freq_long))
        return LM_ERR_NOMEM;
    for (int il = 0; il < n_layer; il++) {
        const lm_layer_weights *l = &m->layers[il];
        int same = 0;
        for (int j = 0; j < il && !same; j++)
            if (m->layers[j].rope_base == l->rope_base && m->layers[j].rope_scale == l->rope_scale &&
                !m->layers[j].rope_plain == !l->rope_plain) {
                m->rope_group[il] = m->rope_group[j];
                same = 1;
            }
        if (same) continue;
        const int g = m->rope_group[il] = m->n_rope_groups++;
        /* a NoPE group (scale 0, every angle 0) stays an exact identity, as llama.cpp
         * skips those layers' rope, its multiplier included */
        m->rope_mscale[g] = l->rope_plain || l->rope_scale == 0.0f ? 1.0f : mscale;
        for (int i = 0; i < half; i++) {
            double f = (double)l->rope_scale * pow((double)l->rope_base, -2.0 * i / m->p.n_rot);
            if (l->rope_plain) {
                if (m->p.rope_freqs_long) m->rope_inv_freq_long[(size_t)g * half + i] = f;
            } else {
                if (m->p.rope_freqs_long)
                    m->rope_inv_freq_long[(size_t)g * half + i] = f / (double)m->p.rope_freqs_long[i];
                if (m->p.rope_freqs) f /= (double)m->p.rope_freqs[i];
            }
            m->rope_inv_freq[(size_t)g * half + i] = f;
        }
    }
    return LM_OK;
}

lm_model *lm_model_create(const lm_model_params *p, const lm_layer_weights *layers) {
    if (!p || !layers) {
        lm_set_error(LM_ERR_ARG, "lm_model_create: NULL argument");
        return NULL;
    }
    if (check_params(p)) return NULL;
    for (int il = 0; il < p->n_layer; il++)
        if (check_layer(p, &layers[il], il)) return NULL;
    lm_model *m = calloc(1, sizeof *m);
    if (!m) goto nomem;
    m->p = *p;
    m->layers = malloc((size_t)p->n_layer * sizeof *layers);
    if (!m->layers) goto nomem;
    memcpy(m->layers, layers, (size_t)p->n_layer * sizeof *layers);
    if (build_rope_groups(m)) goto nomem;
    return m;
nomem:
    lm_model_free(m);
    lm_set_error(LM_ERR_NOMEM, "lm_model_create: out of memory");
    return NULL;
}

void lm_model_free(lm_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->rope_group);
    free(m->rope_inv_freq);
    free(m->rope_inv_freq_long);
    free(m->rope_mscale);
    free(m);
}

/* ---------------------------------------------------------- KV cache */

static size_t kv_row_bytes(const lm_model *m, int kv_type) {
    const lm_type_traits *t = lm_get_type_traits(kv_type);
    const int64_t n = (int64_t)m->p.n_head_kv * m->p.head_dim;
    if (!t || m->p.head_dim % t->blck_size) return 0;
    return (size_t)(n / t->blck_size) * t->type_size;
}

static int kv_type_usable(const lm_model *m, int kv_type) {
    if (kv_type != LM_TYPE_F32 && kv_type != LM_TYPE_F16 && kv_type != LM_TYPE_Q8_0)
        return lm_set_error(LM_ERR_TYPE, "KV cache type %s: expected f32, f16 or q8_0", lm_type_name(kv_type));
    const lm_type_traits *t = lm_get_type_traits(kv_type);
    if (m->p.head_dim % t->blck_size)
        return lm_set_error(LM_ERR_SHAPE, "KV cache type %s needs head_dim %d to be a multiple of %lld", t->name,
                            m->p.head_dim, (long long)t->blck_size);
    if (!t->from_float) return lm_set_error(LM_ERR_TYPE, "KV cache type %s: no row converter built", t->name);
    return LM_OK;
}

size_t lm_kv_cache_bytes(const lm_model *m, int32_t n_ctx, int kv_type) {
    if (!m || n_ctx <= 0 || kv_type_usable(m, kv_type)) return 0;
    const size_t row = kv_row_bytes(m, kv_type);
    const size_t per_layer = row * (size_t)n_ctx;
    if (per_layer / (size_t)n_ctx != row || per_layer > SIZE_MAX / 2 / (size_t)m->p.n_layer) return 0;
    return 2 * per_layer * (size_t)m->p.n_layer;
}

/* ----------------------------------------------------------- context */

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static size_t matrix_scratch_bytes(const lm_matrix *w, int64_t n, int64_t ncols) {
    if (w->type == LM_TYPE_GPTQ_INT4) return lm_gptq_scratch_bytes(w->data, ncols);
    return lm_matmul_scratch_bytes(w->type, n, ncols);
}

static size_t matmul_scratch_bytes(const lm_model *m, int64_t n_batch) {
    const lm_model_params *p = &m->p;
    const int64_t q_dim = (int64_t)p->n_head * p->head_dim;
    size_t s = matrix_scratch_bytes(&p->output, p->n_embd, n_batch);
    for (int il = 0; il < p->n_layer; il++) {
        const lm_layer_weights *l = &m->layers[il];
        s = max_size(s, matrix_scratch_bytes(&l->wq, p->n_embd, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->wk, p->n_embd, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->wv, p->n_embd, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->wo, q_dim, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->w_gate, p->n_embd, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->w_up, p->n_embd, n_batch));
        s = max_size(s, matrix_scratch_bytes(&l->w_down, p->n_ff, n_batch));
        if (p->n_expert > 0) {
            s = max_size(s, matrix_scratch_bytes(&l->moe_router, p->n_embd, n_batch));
            s = max_size(s, matrix_scratch_bytes(&l->moe_gate, p->n_embd, n_batch));
            s = max_size(s, matrix_scratch_bytes(&l->moe_down, p->n_ff_exp, n_batch));
        }
    }
    return s;
}

static float *alloc_floats(size_t n) { return malloc((n > 0 ? n : 1) * sizeof(float)); }

/* the checks of lm_context_params every context makes; fills in n_ctx_seq */
static int check_context_params(const lm_model *m, lm_context_params *p) {
    if (p->n_ctx <= 0 || p->n_batch <= 0 || p->n_threads < 1 || p->n_threads > 512)
        return lm_set_error(LM_ERR_ARG, "lm_context_create: bad n_ctx=%d n_batch=%d n_threads=%d", p->n_ctx, p->n_batch,
                            p->n_threads);
    if (p->n_seq_max < 1 || p->n_seq_max > LM_SEQ_MAX || p->n_seq_max > p->n_ctx)
        return lm_set_error(LM_ERR_ARG, "lm_context_create: n_seq_max=%d outside [1, min(%d, n_ctx=%d)]", p->n_seq_max,
                            LM_SEQ_MAX, p->n_ctx);
    if (p->n_ctx_seq == 0) p->n_ctx_seq = p->n_ctx / p->n_seq_max;
    if (p->n_ctx_seq < 1 || p->n_ctx_seq > p->n_ctx)
        return lm_set_error(LM_ERR_ARG, "lm_context_create: n_ctx_seq=%d outside [1, n_ctx=%d]", p->n_ctx_seq,
                            p->n_ctx);
    return kv_type_usable(m, p->kv_type);
}

lm_context *lm_context_create_range(lm_model *m, lm_context_params *cp, int32_t kv_il0, int32_t kv_il1) {
    if (!m || !cp) {
        lm_set_error(LM_ERR_ARG, "lm_context_create: model or parameters NULL");
        return NULL;
    }
    if (kv_il0 < 0 || kv_il0 > kv_il1 || kv_il1 > m->p.n_layer) {
        lm_set_error(LM_ERR_ARG, "lm_context_create: cache layers [%d, %d) outside [0, %d]", kv_il0, kv_il1,
                     m->p.n_layer);
        return NULL;
    }
    if (check_context_params(m, cp)) return NULL;
    const int32_t n_ctx = cp->n_ctx, n_batch = cp->n_batch, n_threads = cp->n_threads;
    const int kv_type = cp->kv_type;
    const size_t all_layers = lm_kv_cache_bytes(m, n_ctx, kv_type);
    if (all_layers == 0) {
        lm_set_error(LM_ERR_NOMEM, "lm_context_create: KV cache of %d positions does not fit in memory", n_ctx);
        return NULL;
    }
    /* only the layers this context runs keep a cache */
    const size_t kv_bytes = all_layers / (size_t)m->p.n_layer * (size_t)(kv_il1 - kv_il0);
    const lm_model_params *p = &m->p;
    const size_t B = (size_t)n_batch, S = (size_t)cp->n_seq_max;
    const size_t q_dim = (size_t)p->n_head * p->head_dim, kv_dim = (size_t)p->n_head_kv * p->head_dim;
    lm_context *c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->model = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->kv_type = kv_type;
    lm_kv_kernels_for(kv_type, lm_cpu_features_avx2(), &c->kv);
    lm_act_kernels_for(lm_cpu_features_avx2(), &c->act);
    const int long_rope = m->rope_inv_freq_long && cp->n_ctx_seq > m->p.rope_long_ctx;
    c->rope_inv_freq = long_rope ? m->rope_inv_freq_long : m->rope_inv_freq;
    c->kv_row_bytes = kv_row_bytes(m, kv_type);
    c->kv_bytes = kv_bytes;
    c->kv_il0 = kv_il0;
    c->kv_il1 = kv_il1;
    if (lm_kv_pool_init(&c->pool, n_ctx, cp->n_ctx_seq, cp->n_seq_max)) goto nomem;
    /* calloc: untouched positions cost no resident memory */
    c->k_cache = calloc(1, max_size(kv_bytes / 2, 1));
    c->v_cache = calloc(1, max_size(kv_bytes / 2, 1));
    c->tp = lm_threadpool_create(n_threads);
    c->x = alloc_floats(B * p->n_embd);
    c->xb = alloc_floats(B * p->n_embd);
    c->q = alloc_floats(B * q_dim);
    c->k = alloc_floats(B * kv_dim);
    c->v = alloc_floats(B * kv_dim);
    c->att = alloc_floats(B * q_dim);
    c->hb = alloc_floats(B * p->n_ff);
    c->hb2 = alloc_floats(B * p->n_ff);
    if (p->two_pass_down && !(c->xb2 = alloc_floats(B * p->n_embd))) goto nomem;
    if (p->n_expert > 0) {
        const size_t k = (size_t)p->n_expert_used, X = (size_t)p->n_expert;
        c->moe_logits = alloc_floats(B * X);
        c->moe_sel = malloc(B * k * sizeof *c->moe_sel);
        c->moe_w = alloc_floats(B * k);
        c->moe_rows = malloc(B * k * sizeof *c->moe_rows);
        c->moe_row_w = alloc_floats(B * k);
        c->moe_x = alloc_floats(B * k * p->n_embd);
        c->moe_g = alloc_floats(B * k * (size_t)p->n_ff_exp);
        c->moe_u = alloc_floats(B * k * (size_t)p->n_ff_exp);
        c->moe_mm = malloc(2 * X * sizeof *c->moe_mm);
        c->moe_first = malloc((X + 1) * sizeof *c->moe_first);
        if (!c->moe_logits || !c->moe_sel || !c->moe_w || !c->moe_rows || !c->moe_row_w || !c->moe_x || !c->moe_g ||
            !c->moe_u || !c->moe_mm || !c->moe_first)
            goto nomem;
    }
    c->capture_il = -1;
    c->rope_cs = alloc_floats((size_t)m->n_rope_groups * B * (size_t)p->n_rot);
    /* a task's heads per thread, or every head of one token (forward.c's split by keys) */
    const int score_rows = n_threads * LM_KV_MAX_HEADS > m->p.n_head ? n_threads * LM_KV_MAX_HEADS : m->p.n_head;
    c->scores = alloc_floats((size_t)score_rows * (size_t)n_ctx);
    c->kv_row = alloc_floats(kv_dim);
    c->b_cell = malloc(B * sizeof *c->b_cell);
    c->b_out = malloc(B * sizeof *c->b_out);
    c->b_seqs = malloc(S * sizeof *c->b_seqs);
    c->b_count = calloc(S, sizeof *c->b_count);
    c->e_pos = malloc(B * sizeof *c->e_pos);
    c->e_seq = calloc(B, sizeof *c->e_seq);
    c->e_logits = malloc(B);
    /* sliced matmuls (few tokens): every thread quantizes its own copy of the activations */
    c->mm_slice_bytes = (matmul_scratch_bytes(m, LM_SLICED_MATMUL_COLS) + 63) / 64 * 64;
    c->mm_scratch =
        malloc(max_size(max_size(matmul_scratch_bytes(m, n_batch), c->mm_slice_bytes * (size_t)n_threads), 64));
    if (!c->k_cache || !c->v_cache || !c->tp || !c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb ||
        !c->hb2 || !c->rope_cs || !c->scores || !c->kv_row || !c->mm_scratch || !c->b_cell || !c->b_out || !c->b_seqs ||
        !c->b_count || !c->e_pos || !c->e_seq || !c->e_logits)
        goto nomem;
    return c;
nomem:
    lm_context_free(c);
    lm_set_error(LM_ERR_NOMEM, "lm_context_create: out of memory (KV cache %zu bytes)", kv_bytes);
    return NULL;
}

lm_context *lm_context_create(lm_model *m, int32_t n_ctx, int32_t n_batch, int kv_type, int n_threads) {
    const lm_context_params p = {
        .n_ctx = n_ctx, .n_batch = n_batch, .n_seq_max = 1, .kv_type = kv_type, .n_threads = n_threads
    };
    return lm_context_create_params(m, &p);
}

void lm_context_free(lm_context *c) {
    if (!c) return;
    if (c->dev) c->backend->free(c->dev);
    lm_threadpool_free(c->tp);
    free(c->k_cache);
    free(c->v_cache);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->xb2);
    free(c->moe_logits);
    free(c->moe_sel);
    free(c->moe_w);
    free(c->moe_rows);
    free(c->moe_row_w);
    free(c->moe_x);
    free(c->moe_g);
    free(c->moe_u);
    free(c->moe_mm);
    free(c->moe_first);
    free(c->rope_cs);
    free(c->scores);
    free(c->kv_row);
    free(c->mm_scratch);
    free(c->b_cell);
    free(c->b_out);
    free(c->b_seqs);
    free(c->b_count);
    free(c->e_pos);
    free(c->e_seq);
    free(c->e_logits);
    lm_lora_state_free(c->lora);
    lm_kv_pool_free(&c->pool);
    free(c);
}

size_t lm_context_kv_bytes(const lm_context *c) { return c ? c->kv_bytes : 0; }

int lm_context_capture(lm_context *c, int32_t il, float *attn_in, float *wo_in, float *ffn_in, float *down_in) {
    if (!c) return lm_set_error(LM_ERR_ARG, "lm_context_capture: context is NULL");
    if (il < -1 || il >= c->kv_il1)
        return lm_set_error(LM_ERR_ARG, "capture layer %d: expected -1 (off) or one of this context's layers [0, %d)",
                            il, c->kv_il1);
    c->capture_il = il;
    c->capture[0] = attn_in;
    c->capture[1] = wo_in;
    c->capture[2] = ffn_in;
    c->capture[3] = down_in;
    return LM_OK;
}
