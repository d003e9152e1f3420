/* cuda_backend.c — the CUDA device of the backend table (backend.h).
 *
 * The core never links CUDA: liblamina_cuda (native/cuda, built when nvcc is
 * found) is dlopened by lm_cuda_load when offload is asked for, and its
 * lmc_* ops are called through the table below. The device runs blocks
 * [il0, n_layer) and the head with the op sequence of forward.c's
 * layer_forward, on its own copies of the weights (uploaded once) and the KV
 * cache of its blocks; the host sends the residual stream once per batch and
 * reads back the logits.
 *
 * Decode (one token) is captured once as a CUDA graph and replayed as one
 * launch every token, the position read from device memory
 * (cuda_forward_graph); LAMINA_CUDA_GRAPHS=0 turns that off.
 *
 * Differences from the CPU path, both from the op library: batches of more
 * than LMC_MMVQ_MAX_COLS tokens multiply f16 activations against f16 tiles
 * of the weights (cuBLAS), and gemma's two-pass ffn_down (lamina.h
 * two_pass_down) is not done on the device, as llama.cpp does not. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/lamina_cuda.h"
#include "error.h"
#include "include/lamina_gptq.h"
#include "offload/backend.h"
#include "quants/type_traits.h"

/* the device struct is the host one's leading fields with device pointers
 * (the host's CPU-only group-order copy stays behind: upload_matrix sends the
 * file's own arrays) */
_Static_assert(sizeof(lmc_gptq_matrix) == offsetof(lm_gptq_matrix, qweight_grouped),
               "lmc_gptq_matrix != lm_gptq_matrix's leading fields");
_Static_assert(offsetof(lmc_gptq_matrix, g_idx) == offsetof(lm_gptq_matrix, g_idx), "g_idx offset");
_Static_assert(offsetof(lmc_gptq_matrix, n_groups) == offsetof(lm_gptq_matrix, n_groups), "n_groups offset");

/* ------------------------------------------------------- the library */

#define LMC_FUNCS(X)                                                                                                  \
    X(const char *, lmc_last_error, (void))                                                                           \
    X(int, lmc_abi_version, (void))                                                                                   \
    X(int, lmc_device_count, (void))                                                                                  \
    X(int, lmc_device_memory, (int, size_t *, size_t *))                                                              \
    X(int, lmc_malloc, (void **, size_t))                                                                             \
    X(int, lmc_free, (void *))                                                                                        \
    X(int, lmc_memcpy_h2d, (void *, const void *, size_t))                                                            \
    X(int, lmc_memcpy_d2h, (void *, const void *, size_t))                                                            \
    X(int, lmc_synchronize, (void))                                                                                   \
    X(int, lmc_graph_begin, (void))                                                                                   \
    X(int, lmc_graph_end, (void **))                                                                                  \
    X(int, lmc_graph_launch, (void *))                                                                                \
    X(int, lmc_graph_abort, (void))                                                                                   \
    X(int, lmc_graph_free, (void *))                                                                                  \
    X(int, lmc_type_supported, (int))                                                                                 \
    X(size_t, lmc_matmul_scratch_bytes, (int, int64_t, int64_t, int64_t))                                             \
    X(int, lmc_matmul,                                                                                                \
      (int, const void *, int64_t, int64_t, const float *, int64_t, float *, int64_t, void *, size_t, int))           \
    X(int, lmc_quantize_activations, (int, const float *, int64_t, int64_t, void *))                                  \
    X(int, lmc_matmul_q, (int, const void *, int64_t, int64_t, int, const void *, int64_t, float *, int64_t))         \
    X(size_t, lmc_gptq_scratch_bytes, (const lmc_gptq_matrix *, int64_t))                                             \
    X(int, lmc_gptq_matmul, (const lmc_gptq_matrix *, const float *, int64_t, float *, int64_t, void *, size_t, int)) \
    X(int, lmc_rms_norm, (float *, const float *, const float *, int64_t, int64_t, float, float))                     \
    X(int, lmc_act_mul, (float *, const float *, int64_t, int))                                                       \
    X(int, lmc_add, (float *, const float *, int64_t))                                                                \
    X(int, lmc_add_bias, (float *, const float *, int64_t, int64_t))                                                  \
    X(int, lmc_rope_cs, (float *, const double *, int32_t, int32_t, int32_t))                                         \
    X(int, lmc_rope_cs_dev, (float *, const double *, int32_t, const int32_t *, int32_t))                             \
    X(int, lmc_rope, (float *, int64_t, int32_t, int32_t, int32_t, const float *, int))                               \
    X(int, lmc_kv_store, (int, void *, size_t, int32_t, const float *, int32_t, int32_t))                             \
    X(int, lmc_kv_store_dev, (int, void *, size_t, const int32_t *, const float *, int32_t, int32_t))                 \
    X(int, lmc_attention,                                                                                             \
      (float *, const float *, const void *, const void *, int, size_t, int32_t, int32_t, int32_t, int32_t, int32_t,  \
       float, int32_t))                                                                                               \
    X(int, lmc_attention_dev,                                                                                         \
      (float *, const float *, const void *, const void *, int, size_t, int32_t, const int32_t *, int32_t, int32_t,   \
       int32_t, float, int32_t))

#define LMC_FIELD(ret, name, args) ret(*name) args;
static struct {
    LMC_FUNCS(LMC_FIELD)
} lmc;
static void *lmc_handle;
static char lmc_load_error[512] = "the CUDA library was not loaded (lm_cuda_load)";

int lm_cuda_load(const char *path) {
    if (lmc_handle) return LM_OK;
    if (!path) return lm_set_error(LM_ERR_ARG, "lm_cuda_load: path is NULL");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lmc_load_error, sizeof lmc_load_error, "cannot load %s: %s", path, dlerror());
        return lm_set_error(LM_ERR_NO_DEVICE, "%s", lmc_load_error);
    }
#define LMC_RESOLVE(ret, name, args)                                                         \
    if (!(*(void **)&lmc.name = dlsym(h, #name))) {                                          \
        snprintf(lmc_load_error, sizeof lmc_load_error, "%s has no symbol %s", path, #name); \
        dlclose(h);                                                                          \
        return lm_set_error(LM_ERR_NO_DEVICE, "%s", lmc_load_error);                         \
    }
    LMC_FUNCS(LMC_RESOLVE)
    lmc_handle = h;
    return LM_OK;
}

static int lmc_fail_early(int rc) {
    (void)rc;
    return lm_set_error(LM_ERR_NO_DEVICE, "CUDA: %s", lmc.lmc_last_error());
}

int lm_cuda_usable(void) {
    if (!lmc_handle) return lm_set_error(LM_ERR_NO_DEVICE, "%s", lmc_load_error), 0;
    if (lmc.lmc_device_count() <= 0) return lm_set_error(LM_ERR_NO_DEVICE, "%s", lmc.lmc_last_error()), 0;
    return 1;
}

int lm_cuda_memory(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return lm_set_error(LM_ERR_ARG, "lm_cuda_memory: NULL argument");
    if (!lm_cuda_usable()) return LM_ERR_NO_DEVICE;
    int rc = lmc.lmc_device_memory(0, free_bytes, total_bytes);
    return rc ? lmc_fail_early(rc) : LM_OK;
}

/* ----------------------------------------------------------- device */

typedef struct {
    int type;
    const void *data;             /* device weights, or NULL for GPTQ */
    lmc_gptq_matrix gptq;         /* device arrays when type == LM_TYPE_GPTQ_INT4 */
    int64_t rows, n;
} dmatrix;

typedef struct {
    const float *attn_norm, *bq, *bk, *bv, *q_norm, *k_norm, *attn_post_norm, *ffn_norm, *ffn_post_norm;
    dmatrix wq, wk, wv, wo, w_gate, w_up, w_down;
    char *k_cache, *v_cache;      /* [n_ctx][kv_row_bytes] each */
} dlayer;

typedef struct {
    const lm_model *m;
    int32_t il0, n_ctx, n_batch;
    int kv_type;
    size_t kv_row_bytes;
    dlayer *layers;               /* [n_layer - il0] */
    const float *output_norm;
    dmatrix output;
    double *inv_freq;             /* [n_rope_groups][n_rot/2] */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs, *logits;
    int32_t *pos;                 /* one int: the position the decode graph's _dev ops read */
    void *scratch;
    size_t scratch_bytes, weight_bytes, kv_bytes;
    void **allocs;
    int n_allocs, cap_allocs;
    int failed;                   /* an upload failed: create gives up */
    int graphs;                   /* decode runs as a CUDA graph (off: LAMINA_CUDA_GRAPHS=0, or a capture failed) */
    void *graph[2];               /* its executables, without / with the head (logits wanted); NULL until the
                                   * first decode of that kind captures it */
} cuda_dev;

static int lmc_fail(int rc, const char *what) {
    return lm_set_error(rc == LMC_ERR_NOMEM ? LM_ERR_NOMEM : LM_ERR_NO_DEVICE, "CUDA %s: %s", what,
                        lmc.lmc_last_error());
}

static void *dev_alloc(cuda_dev *d, size_t bytes) {
    void *p = NULL;
    if (d->failed) return NULL;
    if (d->n_allocs == d->cap_allocs) {
        const int cap = d->cap_allocs ? 2 * d->cap_allocs : 256;
        void **grown = realloc(d->allocs, (size_t)cap * sizeof *grown);
        if (!grown) {
            d->failed = lm_set_error(LM_ERR_NOMEM, "CUDA backend: out of host memory");
            return NULL;
        }
        d->allocs = grown;
        d->cap_allocs = cap;
    }
    int rc = lmc.lmc_malloc(&p, bytes ? bytes : 1);
    if (rc) {
        d->failed = lmc_fail(rc, "allocation");
        return NULL;
    }
    d->allocs[d->n_allocs++] = p;
    return p;
}

static void *upload(cuda_dev *d, const void *src, size_t bytes) {
    if (!src) return NULL;
    void *p = dev_alloc(d, bytes);
    if (!p) return NULL;
    int rc = lmc.lmc_memcpy_h2d(p, src, bytes);
    if (rc) {
        d->failed = lmc_fail(rc, "upload");
        return NULL;
    }
    d->weight_bytes += bytes;
    return p;
}

static const float *upload_vec(cuda_dev *d, const float *v, int64_t n) {
    return upload(d, v, (size_t)n * sizeof(float));
}

static size_t matrix_scratch(const dmatrix *w, int64_t ncols) {
    return w->type == LM_TYPE_GPTQ_INT4 ? lmc.lmc_gptq_scratch_bytes(&w->gptq, ncols)
                                        : lmc.lmc_matmul_scratch_bytes(w->type, w->rows, w->n, ncols);
}

/* whether any matrix a device layer or the head would run has an output scale */
static int has_output_scales(const lm_model *m) {
    if (m->p.output.scale) return 1;
    for (int il = 0; il < m->p.n_layer; il++) {
        const lm_layer_weights *l = &m->layers[il];
        const lm_matrix *w[] = { &l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            if (w[i]->scale) return 1;
    }
    return 0;
}

static dmatrix upload_matrix(cuda_dev *d, lm_matrix m, int64_t rows, int64_t n) {
    dmatrix out = { .type = m.type, .rows = rows, .n = n };
    if (m.type == LM_TYPE_GPTQ_INT4) {
        const lm_gptq_matrix *g = m.data;
        const size_t G = (size_t)g->n_groups, O = (size_t)g->n_out, I = (size_t)g->n_in;
        out.gptq = (lmc_gptq_matrix){ .qweight = upload(d, g->qweight, I / 8 * O * sizeof(int32_t)),
                                      .scales = upload(d, g->scales, G * O * sizeof(uint16_t)),
                                      .qzeros = upload(d, g->qzeros, G * (O / 8) * sizeof(int32_t)),
                                      .g_idx = g->g_idx ? upload(d, g->g_idx, I * sizeof(int32_t)) : NULL,
                                      .n_in = g->n_in,
                                      .n_out = g->n_out,
                                      .group_size = g->group_size,
                                      .n_groups = g->n_groups };
    } else if (!lmc.lmc_type_supported(m.type)) {
        d->failed =
            lm_set_error(LM_ERR_TYPE, "CUDA backend: no GPU kernels for weights of type %s", lm_type_name(m.type));
    } else {
        const lm_type_traits *t = lm_get_type_traits(m.type);
        out.data = upload(d, m.data, (size_t)rows * (size_t)(n / t->blck_size) * t->type_size);
    }
    if (!d->failed) {
        const size_t s1 = matrix_scratch(&out, d->n_batch), s2 = matrix_scratch(&out, LMC_MMVQ_MAX_COLS);
        if (s1 > d->scratch_bytes) d->scratch_bytes = s1;
        if (s2 > d->scratch_bytes) d->scratch_bytes = s2;
    }
    return out;
}

#define TRY(call, what)                      \
    do {                                     \
        int rc_ = (call);                    \
        if (rc_) return lmc_fail(rc_, what); \
    } while (0)

static int matmul(cuda_dev *d, const dmatrix *w, const float *x, int64_t ncols, float *y) {
    int rc = w->type == LM_TYPE_GPTQ_INT4
                 ? lmc.lmc_gptq_matmul(&w->gptq, x, ncols, y, w->rows, d->scratch, d->scratch_bytes, LMC_PATH_AUTO)
                 : lmc.lmc_matmul(w->type, w->data, w->rows, w->n, x, ncols, y, w->rows, d->scratch, d->scratch_bytes,
                                  LMC_PATH_AUTO);
    return rc ? lmc_fail(rc, "matmul") : LM_OK;
}

/* the activation type all of w[0..nw) are dotted with when each is a
 * quantized (non-float, non-GPTQ) type and they agree; -1 otherwise */
static int shared_partner(const dmatrix *const *w, int nw) {
    int partner = -1;
    for (int i = 0; i < nw; i++) {
        const int t = w[i]->type;
        if (t == LM_TYPE_GPTQ_INT4 || t == LM_TYPE_F32 || t == LM_TYPE_F16 || t == LM_TYPE_BF16) return -1;
        const int vt = lm_get_type_traits(t)->vec_dot_type;
        if (i > 0 && vt != partner) return -1;
        partner = vt;
    }
    return partner;
}

/* y[i] = w[i] x for matrices that read the same x (q/k/v, gate/up). On the
 * mat-vec path x is quantized once into the scratch and each matrix reads
 * it (lmc_matmul would quantize it once per matrix: the same bytes each
 * time); otherwise, one matmul each. */
static int matmuls_shared(cuda_dev *d, const dmatrix *const *w, float *const *y, int nw, const float *x,
                          int64_t ncols) {
    const int partner = ncols <= LMC_MMVQ_MAX_COLS ? shared_partner(w, nw) : -1;
    int rc;
    if (partner < 0) {
        for (int i = 0; i < nw; i++)
            if ((rc = matmul(d, w[i], x, ncols, y[i]))) return rc;
        return LM_OK;
    }
    /* the scratch holds a mat-vec's quantized x for LMC_MMVQ_MAX_COLS columns (upload_matrix) */
    TRY(lmc.lmc_quantize_activations(w[0]->type, x, w[0]->n, ncols, d->scratch), "activation quantization");
    for (int i = 0; i < nw; i++)
        TRY(lmc.lmc_matmul_q(w[i]->type, w[i]->data, w[i]->rows, w[i]->n, partner, d->scratch, ncols, y[i], w[i]->rows),
            "matmul");
    return LM_OK;
}

static void cuda_free(void *dev) {
    cuda_dev *d = dev;
    if (!d) return;
    lmc.lmc_graph_free(d->graph[0]);
    lmc.lmc_graph_free(d->graph[1]);
    for (int i = 0; i < d->n_allocs; i++) lmc.lmc_free(d->allocs[i]);
    free(d->allocs);
    free(d->layers);
    free(d);
}

/* LAMINA_CUDA_GRAPHS=0 runs decode op by op (benchmarks compare the two) */
static int graphs_wanted(void) {
    const char *v = getenv("LAMINA_CUDA_GRAPHS");
    return !(v && strcmp(v, "0") == 0);
}

static void *cuda_create(const lm_model *m, int32_t il0, const lm_context_params *cp) {
    if (cp->n_seq_max > 1) {
        lm_set_error(LM_ERR_ARG,
                     "CUDA backend: multi-sequence decode on CUDA is not implemented yet (n_seq_max=%d; use "
                     "n_seq_max=1 with CUDA offload, or run on the CPU)",
                     cp->n_seq_max);
        return NULL;
    }
    const lm_model_params *mp = &m->p;
    if (mp->rope_freqs_long) {
        lm_set_error(LM_ERR_ARG, "CUDA backend: LongRoPE (phi3's rope factors and attention factor) is not "
                                 "implemented on the GPU yet; run this model on the CPU (0 GPU layers)");
        return NULL;
    }
    for (int32_t il = 0; il < mp->n_layer; il++)
        if (m->layers[il].attn_sinks || m->layers[il].bo) {
            lm_set_error(LM_ERR_ARG, "CUDA backend: gpt-oss layers (attention sinks, output bias) are not "
                                     "implemented on the GPU yet; run this model on the CPU (0 GPU layers)");
            return NULL;
        }
    /* YaRN's divisors are rope_freqs, which the GPU's angle table has (plain
     * layers' groups without them); its cos/sin multiplier is not */
    for (int g = 0; g < m->n_rope_groups; g++)
        if (m->rope_mscale[g] != 1.0f) {
            lm_set_error(LM_ERR_ARG,
                         "CUDA backend: YaRN rope scaling (its cos/sin attention factor %g) is not "
                         "implemented on the GPU yet; run this model on the CPU (0 GPU layers)",
                         (double)m->rope_mscale[g]);
            return NULL;
        }
    if (mp->n_expert > 0) {
        lm_set_error(LM_ERR_ARG, "CUDA backend: mixture-of-experts layers are not implemented on the GPU yet; run "
                                 "this model on the CPU (0 GPU layers)");
        return NULL;
    }
    if (has_output_scales(m)) {
        lm_set_error(LM_ERR_ARG, "CUDA backend: per-tensor output scales of weights (NVFP4 checkpoints' scale_2) are "
                                 "not implemented on the GPU yet; run this model on the CPU (0 GPU layers)");
        return NULL;
    }
    if ((mp->residual_scale != 0.0f && mp->residual_scale != 1.0f) ||
        (mp->logit_scale != 0.0f && mp->logit_scale != 1.0f) || mp->attn_softcap > 0.0f || mp->final_softcap > 0.0f) {
        lm_set_error(LM_ERR_ARG, "CUDA backend: residual/logit scales (granite) and soft-capping (gemma2) are not "
                                 "implemented on the GPU yet; run this model on the CPU (0 GPU layers)");
        return NULL;
    }
    if (!lm_cuda_usable()) return NULL;
    const int32_t n_ctx = cp->n_ctx, n_batch = cp->n_batch;
    const int kv_type = cp->kv_type;
    const lm_model_params *p = &m->p;
    const int64_t E = p->n_embd, F = p->n_ff, hd = p->head_dim, V = p->n_vocab;
    const int64_t q_dim = (int64_t)p->n_head * hd, kv_dim = (int64_t)p->n_head_kv * hd;
    int64_t qn, kn;
    lm_qk_norm_lengths(p, &qn, &kn);
    const int32_t L = p->n_layer;
    cuda_dev *d = calloc(1, sizeof *d);
    if (!d || !(d->layers = calloc((size_t)(L - il0 > 0 ? L - il0 : 1), sizeof *d->layers))) {
        free(d);
        lm_set_error(LM_ERR_NOMEM, "CUDA backend: out of host memory");
        return NULL;
    }
    d->m = m;
    d->il0 = il0;
    d->n_ctx = n_ctx;
    d->n_batch = n_batch;
    d->kv_type = kv_type;
    const lm_type_traits *kvt = lm_get_type_traits(kv_type);
    d->kv_row_bytes = (size_t)(kv_dim / kvt->blck_size) * kvt->type_size;

    d->output_norm = upload_vec(d, p->output_norm, E);
    d->output = upload_matrix(d, p->output, V, E);
    d->inv_freq = upload(d, m->rope_inv_freq, (size_t)m->n_rope_groups * (size_t)(p->n_rot / 2) * sizeof(double));
    for (int32_t il = il0; il < L && !d->failed; il++) {
        const lm_layer_weights *s = &m->layers[il];
        dlayer *l = &d->layers[il - il0];
#define UPLOAD_VEC(f, n) l->f = upload_vec(d, s->f, n);
#define UPLOAD_MATRIX(f, rows, cols) l->f = upload_matrix(d, s->f, rows, cols);
        LM_LAYER_VECTORS(UPLOAD_VEC)
        LM_LAYER_MATRICES(UPLOAD_MATRIX)
#undef UPLOAD_VEC
#undef UPLOAD_MATRIX
        const size_t cache = d->kv_row_bytes * (size_t)n_ctx;
        l->k_cache = dev_alloc(d, cache);
        l->v_cache = dev_alloc(d, cache);
        d->kv_bytes += 2 * cache;
    }
    const size_t B = (size_t)n_batch, f = sizeof(float);
    d->x = dev_alloc(d, B * (size_t)E * f);
    d->xb = dev_alloc(d, B * (size_t)E * f);
    d->q = dev_alloc(d, B * (size_t)q_dim * f);
    d->k = dev_alloc(d, B * (size_t)kv_dim * f);
    d->v = dev_alloc(d, B * (size_t)kv_dim * f);
    d->att = dev_alloc(d, B * (size_t)q_dim * f);
    d->hb = dev_alloc(d, B * (size_t)F * f);
    d->hb2 = dev_alloc(d, B * (size_t)F * f);
    d->cs = dev_alloc(d, (size_t)m->n_rope_groups * B * (size_t)p->n_rot * f);
    d->logits = dev_alloc(d, B * (size_t)V * f);
    d->pos = dev_alloc(d, sizeof *d->pos);
    d->scratch = dev_alloc(d, d->scratch_bytes);
    /* the uploads are ordered on this thread's stream only; eval may come
     * from another thread (lamina_cuda.h, Conventions) */
    int rc = d->failed ? LM_OK : lmc.lmc_synchronize();
    if (rc) d->failed = lmc_fail(rc, "synchronize");
    if (d->failed) {
        cuda_free(d);
        return NULL;
    }
    d->graphs = graphs_wanted();
    return d;
}

/* The ops that depend on the position. pos_dev NULL: pos0 by value (prefill,
 * or decode without graphs); else the _dev ops, which read *pos_dev when
 * they run, so that the decode graph captured once replays at every
 * position (cuda_forward_graph writes it there before each launch). */
static int rope_table(cuda_dev *d, int g, int32_t T, int32_t pos0, const int32_t *pos_dev) {
    const int32_t n_rot = d->m->p.n_rot;
    float *cs = d->cs + (size_t)g * d->n_batch * n_rot;
    const double *inv_freq = d->inv_freq + (size_t)g * (n_rot / 2);
    TRY(pos_dev ? lmc.lmc_rope_cs_dev(cs, inv_freq, n_rot, pos_dev, T) : lmc.lmc_rope_cs(cs, inv_freq, n_rot, pos0, T),
        "rope table");
    return LM_OK;
}

static int kv_store(cuda_dev *d, char *cache, const float *src, int32_t T, int32_t pos0, const int32_t *pos_dev) {
    const int32_t kv_dim = d->m->p.n_head_kv * d->m->p.head_dim;
    TRY(pos_dev ? lmc.lmc_kv_store_dev(d->kv_type, cache, d->kv_row_bytes, pos_dev, src, T, kv_dim)
                : lmc.lmc_kv_store(d->kv_type, cache, d->kv_row_bytes, pos0, src, T, kv_dim),
        "kv store");
    return LM_OK;
}

static int attention(cuda_dev *d, const dlayer *l, int32_t window, int32_t T, int32_t pos0, const int32_t *pos_dev) {
    const lm_model_params *p = &d->m->p;
    TRY(pos_dev ? lmc.lmc_attention_dev(d->att, d->q, l->k_cache, l->v_cache, d->kv_type, d->kv_row_bytes, T, pos_dev,
                                        p->n_head, p->n_head_kv, p->head_dim, p->attn_scale, window)
                : lmc.lmc_attention(d->att, d->q, l->k_cache, l->v_cache, d->kv_type, d->kv_row_bytes, T, pos0,
                                    p->n_head, p->n_head_kv, p->head_dim, p->attn_scale, window),
        "attention");
    return LM_OK;
}

static int cuda_block(cuda_dev *d, int32_t il, int32_t T, int32_t pos0, const int32_t *pos_dev) {
    const lm_model_params *p = &d->m->p;
    const lm_layer_weights *hl = &d->m->layers[il];
    const dlayer *l = &d->layers[il - d->il0];
    const int64_t E = p->n_embd, F = p->n_ff, hd = p->head_dim;
    const int64_t q_dim = (int64_t)p->n_head * hd, kv_dim = (int64_t)p->n_head_kv * hd;
    const float eps = p->norm_eps, one = p->norm_kind == LM_NORM_RMS_PLUS_ONE ? 1.0f : 0.0f;
    const float *cs = d->cs + (size_t)d->m->rope_group[il] * d->n_batch * p->n_rot;
    const int layout = p->rope_layout == LM_ROPE_NEOX ? LMC_ROPE_NEOX : LMC_ROPE_NORMAL;
    int rc;

    /* a layer without pre-norms (olmo2) feeds x itself to its matmuls */
    if (l->attn_norm) TRY(lmc.lmc_rms_norm(d->xb, d->x, l->attn_norm, T, E, eps, one), "rms_norm");
    const dmatrix *qkv[3] = { &l->wq, &l->wk, &l->wv };
    float *const qkv_out[3] = { d->q, d->k, d->v };
    if ((rc = matmuls_shared(d, qkv, qkv_out, 3, l->attn_norm ? d->xb : d->x, T))) return rc;
    if (l->bq) {
        TRY(lmc.lmc_add_bias(d->q, l->bq, T, q_dim), "bias");
        TRY(lmc.lmc_add_bias(d->k, l->bk, T, kv_dim), "bias");
        TRY(lmc.lmc_add_bias(d->v, l->bv, T, kv_dim), "bias");
    }
    if (l->q_norm && p->qk_norm_whole) {
        TRY(lmc.lmc_rms_norm(d->q, d->q, l->q_norm, T, q_dim, eps, one), "q norm");
        TRY(lmc.lmc_rms_norm(d->k, d->k, l->k_norm, T, kv_dim, eps, one), "k norm");
    } else if (l->q_norm) {
        TRY(lmc.lmc_rms_norm(d->q, d->q, l->q_norm, (int64_t)T * p->n_head, hd, eps, one), "q norm");
        TRY(lmc.lmc_rms_norm(d->k, d->k, l->k_norm, (int64_t)T * p->n_head_kv, hd, eps, one), "k norm");
    }
    TRY(lmc.lmc_rope(d->q, T, p->n_head, (int32_t)hd, p->n_rot, cs, layout), "rope");
    TRY(lmc.lmc_rope(d->k, T, p->n_head_kv, (int32_t)hd, p->n_rot, cs, layout), "rope");
    if ((rc = kv_store(d, l->k_cache, d->k, T, pos0, pos_dev))) return rc;
    if ((rc = kv_store(d, l->v_cache, d->v, T, pos0, pos_dev))) return rc;
    if ((rc = attention(d, l, hl->sliding_window, T, pos0, pos_dev))) return rc;
    if ((rc = matmul(d, &l->wo, d->att, T, d->xb))) return rc;
    if (l->attn_post_norm) TRY(lmc.lmc_rms_norm(d->xb, d->xb, l->attn_post_norm, T, E, eps, one), "post norm");
    TRY(lmc.lmc_add(d->x, d->xb, (int64_t)T * E), "residual");

    if (l->ffn_norm) TRY(lmc.lmc_rms_norm(d->xb, d->x, l->ffn_norm, T, E, eps, one), "rms_norm");
    const dmatrix *gate_up[2] = { &l->w_gate, &l->w_up };
    float *const gate_up_out[2] = { d->hb, d->hb2 };
    if ((rc = matmuls_shared(d, gate_up, gate_up_out, 2, l->ffn_norm ? d->xb : d->x, T))) return rc;
    TRY(lmc.lmc_act_mul(d->hb, d->hb2, (int64_t)T * F,
                        p->activation == LM_ACT_GELU_TANH ? LMC_ACT_GELU_TANH : LMC_ACT_SILU),
        "activation");
    if ((rc = matmul(d, &l->w_down, d->hb, T, d->xb))) return rc;
    if (l->ffn_post_norm) TRY(lmc.lmc_rms_norm(d->xb, d->xb, l->ffn_post_norm, T, E, eps, one), "post norm");
    TRY(lmc.lmc_add(d->x, d->xb, (int64_t)T * E), "residual");
    return LM_OK;
}

/* The device's whole part of a batch whose x is uploaded: rope tables, the
 * blocks, and when head: the output norm and the head for tokens first..T-1
 * into d->logits. Only ops that can be captured into a graph. The position
 * is pos0, or *pos_dev when pos_dev is not NULL (see rope_table). */
static int cuda_forward(cuda_dev *d, int32_t T, int32_t pos0, const int32_t *pos_dev, int64_t first, int head) {
    const lm_model_params *p = &d->m->p;
    const int64_t E = p->n_embd;
    int rc;
    for (int g = 0; g < d->m->n_rope_groups; g++)
        if ((rc = rope_table(d, g, T, pos0, pos_dev))) return rc;
    for (int32_t il = d->il0; il < p->n_layer; il++)
        if ((rc = cuda_block(d, il, T, pos0, pos_dev))) return rc;
    if (!head) return LM_OK;
    TRY(lmc.lmc_rms_norm(d->xb, d->x, d->output_norm, T, E, p->norm_eps,
                         p->norm_kind == LM_NORM_RMS_PLUS_ONE ? 1.0f : 0.0f),
        "output norm");
    return matmul(d, &d->output, d->xb + first * E, T - first, d->logits);
}

/* Capture a one-token step reading the position from d->pos into *exec.
 * LM_OK, or 1 when the capture failed (an op that cannot be captured, a
 * driver without graph support): nothing of it ran, and the caller runs
 * the step op by op. Below zero: leaving capture mode failed, an error. */
static int capture_decode(cuda_dev *d, int head, void **exec) {
    if (lmc.lmc_graph_begin() != LMC_OK) return 1;
    if (cuda_forward(d, 1, 0, d->pos, 0, head) == LM_OK && lmc.lmc_graph_end(exec) == LMC_OK) return LM_OK;
    /* an op refused mid-capture, or the end failed: leave capture mode (a
     * no-op when lmc_graph_end already did); *exec is NULL or unchanged */
    const int rc = lmc.lmc_graph_abort();
    return rc ? lmc_fail(rc, "graph abort") : 1;
}

/* A one-token step as one graph launch. Everything that changes from token
 * to token lives in device memory (x uploaded by the caller, the position
 * written here, both outside any capture, ordered before the launch on
 * this thread's stream), so the executable is captured once per head flag
 * and relaunched as it is: no capture, no update per token. When a capture
 * fails, graphs are turned off for this device and the step runs op by op,
 * with the same result. A failed launch is an error like any op's. */
static int cuda_forward_graph(cuda_dev *d, int32_t pos0, int head) {
    TRY(lmc.lmc_memcpy_h2d(d->pos, &pos0, sizeof pos0), "upload of the position");
    void **exec = &d->graph[head ? 1 : 0];
    if (!*exec) {
        const int rc = capture_decode(d, head, exec);
        if (rc < 0) return rc;
        if (rc > 0 || !*exec) {
            d->graphs = 0;
            return cuda_forward(d, 1, pos0, NULL, 0, head);
        }
    }
    const int rc = lmc.lmc_graph_launch(*exec);
    return rc ? lmc_fail(rc, "graph launch") : LM_OK;
}

/* The batch against the buffers and the cache (the core checked it too).
 * Here, not in the ops, because the graph's ops read the position from
 * device memory, where no kernel can refuse it: a bad one would write
 * outside the KV cache. */
static int check_batch(const cuda_dev *d, int32_t T, int32_t pos0) {
    if (T < 1 || T > d->n_batch)
        return lm_set_error(LM_ERR_ARG, "CUDA backend eval: n_tokens=%d outside [1, n_batch=%d]", T, d->n_batch);
    if (pos0 < 0 || pos0 > d->n_ctx - T)
        return lm_set_error(LM_ERR_CONTEXT_FULL, "CUDA backend eval: %d tokens at position %d do not fit n_ctx=%d", T,
                            pos0, d->n_ctx);
    return LM_OK;
}

/* One sequence at contiguous positions, as this backend runs it (the core
 * checked the batch against the sequence, which on CUDA is the only one).
 * LM_OK with *pos0, and *first when the rows asked for are a suffix
 * [first, T) (all, the last, or none: first = T), else *first = -1. */
static int single_sequence(const lm_batch *b, int32_t *pos0, int64_t *first) {
    *pos0 = b->pos[0];
    *first = b->n_tokens;
    int suffix = 1;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->seq_id[i] != b->seq_id[0])
            return lm_set_error(LM_ERR_ARG,
                                "CUDA backend: multi-sequence decode on CUDA is not implemented yet (batch "
                                "token %d is in sequence %d, token 0 in sequence %d)",
                                i, b->seq_id[i], b->seq_id[0]);
        if (b->pos[i] != *pos0 + i)
            return lm_set_error(LM_ERR_ARG, "CUDA backend: batch token %d at position %d, expected %d (contiguous)", i,
                                b->pos[i], *pos0 + i);
        const int out = b->logits && b->logits[i];
        if (out && *first == b->n_tokens) *first = i;
        if (!out && *first < b->n_tokens) suffix = 0;
    }
    if (!suffix) *first = -1;
    return LM_OK;
}

static int cuda_decode(void *dev, const lm_batch *b, const float *x_in, float *logits) {
    cuda_dev *d = dev;
    const lm_model_params *p = &d->m->p;
    const int32_t T = b->n_tokens;
    const int64_t E = p->n_embd, V = p->n_vocab;
    int32_t pos0;
    int64_t first;
    int rc;
    if ((rc = single_sequence(b, &pos0, &first))) return rc;
    if ((rc = check_batch(d, T, pos0))) return rc;
    /* rows asked for that are not a suffix: the head runs over every row and
     * the rows asked for are downloaded one by one (not lamina's own pattern) */
    const int scattered = first < 0;
    const int head = first < T;
    if (scattered) first = 0;
    TRY(lmc.lmc_memcpy_h2d(d->x, x_in, sizeof(float) * (size_t)T * (size_t)E), "upload of the hidden state");
    /* prefill (T > 1) stays op by op: its GEMMs go through cuBLAS, and a
     * batch's shape rarely repeats */
    rc = T == 1 && d->graphs ? cuda_forward_graph(d, pos0, head) : cuda_forward(d, T, pos0, NULL, first, head);
    if (rc) return rc;
    if (!head) {
        /* nothing to download, which would have waited: wait here, so the
         * next batch may come from another host thread */
        TRY(lmc.lmc_synchronize(), "synchronize");
        return LM_OK;
    }
    if (!scattered) {
        TRY(lmc.lmc_memcpy_d2h(logits, d->logits, sizeof(float) * (size_t)(T - first) * (size_t)V),
            "download of logits");
        return LM_OK;
    }
    for (int32_t i = 0, row = 0; i < T; i++)
        if (b->logits[i])
            TRY(lmc.lmc_memcpy_d2h(logits + (size_t)row++ * V, d->logits + (size_t)i * V, sizeof(float) * (size_t)V),
                "download of logits");
    return LM_OK;
}

/* A suffix of the one sequence is forgotten by its length alone (the host
 * keeps it): positions past it are written over by the next batches. */
static int cuda_seq_rm(void *dev, int32_t seq, int32_t p0, int32_t p1) {
    (void)dev;
    if (p1 < 0) return LM_OK;
    return lm_set_error(LM_ERR_ARG,
                        "CUDA backend: multi-sequence decode on CUDA is not implemented yet (removing positions "
                        "[%d, %d) of sequence %d moves the cached positions after them)",
                        p0, p1, seq);
}

static int cuda_seq_cp(void *dev, int32_t src, int32_t dst, int32_t n) {
    (void)dev;
    return lm_set_error(LM_ERR_ARG,
                        "CUDA backend: multi-sequence decode on CUDA is not implemented yet (copying %d positions of "
                        "sequence %d to sequence %d)",
                        n, src, dst);
}

static void cuda_usage(const void *dev, size_t *weight_bytes, size_t *kv_bytes) {
    const cuda_dev *d = dev;
    *weight_bytes = d->weight_bytes;
    *kv_bytes = d->kv_bytes;
}

const lm_backend lm_backend_cuda = {
    .name = "cuda",
    .create = cuda_create,
    .decode = cuda_decode,
    .seq_rm = cuda_seq_rm,
    .seq_cp = cuda_seq_cp,
    .usage = cuda_usage,
    .free = cuda_free,
};
