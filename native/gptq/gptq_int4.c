/* gptq_int4.c — GPTQ INT4 linears: validation, the scalar reference, and the
 * driver that prepares the activations once and splits the outputs over the
 * pool's threads (the SIMD kernels live in simd/x86/gptq_int4_avx2.c).
 *
 * The reference dequantizes every weight exactly as the packing's formula
 * reads, W = scale * (level - zero), and sums W * x in input order: it is the
 * oracle the SIMD path is compared with, and the kernel of CPUs without one. */
#include "gptq/gptq_int4.h"

#include <stdlib.h>
#include <string.h>

#include "compute/threadpool.h"
#include "error.h"
#include "quants/blocks.h"
#include "quants/type_traits.h"
#include "simd/cpu_features.h"

enum { PER_WORD = 8 };   /* 4-bit values per 32-bit word */
/* a run longer than this is split (each part has its own sum of x), so one
 * group per row still walks the outputs in panels of a few rows */
enum { MAX_RUN_ROWS = 16 };

/* ------------------------------------------------------------- validation */

/* everything but the g_idx scan: cheap enough for every matmul */
static int check_shape(const lm_gptq_matrix *w, const char *fn) {
    if (!w) return lm_set_error(LM_ERR_ARG, "%s: the GPTQ matrix is NULL", fn);
    if (!w->qweight) return lm_set_error(LM_ERR_ARG, "%s: GPTQ qweight pointer is NULL", fn);
    if (!w->scales) return lm_set_error(LM_ERR_ARG, "%s: GPTQ scales pointer is NULL", fn);
    if (!w->qzeros) return lm_set_error(LM_ERR_ARG, "%s: GPTQ qzeros pointer is NULL", fn);
    if (w->n_in <= 0 || w->n_in % PER_WORD)
        return lm_set_error(LM_ERR_SHAPE,
                            "%s: GPTQ n_in=%d must be a positive multiple of 8 "
                            "(qweight packs 8 inputs per int32)",
                            fn, (int)w->n_in);
    if (w->n_out <= 0 || w->n_out % PER_WORD)
        return lm_set_error(LM_ERR_SHAPE,
                            "%s: GPTQ n_out=%d must be a positive multiple of 8 "
                            "(qzeros packs 8 outputs per int32)",
                            fn, (int)w->n_out);
    if (w->group_size < -1)
        return lm_set_error(LM_ERR_SHAPE,
                            "%s: GPTQ group_size=%d must be positive, or -1/0 for one group "
                            "per row",
                            fn, (int)w->group_size);
    if (!w->perm_grouped != !w->qweight_grouped || (w->g_idx_grouped && !w->perm_grouped))
        return lm_set_error(LM_ERR_ARG,
                            "%s: GPTQ group-order copy needs qweight_grouped and perm_grouped together "
                            "(g_idx_grouped only with them)",
                            fn);
    const int64_t gs = lm_gptq_group_size(w);
    const int64_t want = (w->n_in + gs - 1) / gs;
    if (w->n_groups != want)
        return lm_set_error(LM_ERR_SHAPE,
                            "%s: GPTQ n_groups=%d does not match n_in=%d with group_size=%d "
                            "(expected %lld groups)",
                            fn, (int)w->n_groups, (int)w->n_in, (int)w->group_size, (long long)want);
    return LM_OK;
}

int lm_gptq_validate(const lm_gptq_matrix *w) {
    int rc = check_shape(w, "gptq_validate");
    if (rc) return rc;
    const int32_t *idx[2] = { w->g_idx, w->g_idx_grouped };
    const char *names[2] = { "g_idx", "g_idx_grouped" };
    for (int t = 0; t < 2; t++)
        for (int64_t i = 0; idx[t] && i < w->n_in; i++)
            if (idx[t][i] < 0 || idx[t][i] >= w->n_groups)
                return lm_set_error(LM_ERR_SHAPE, "gptq_validate: %s[%lld]=%d is outside [0, n_groups=%d)", names[t],
                                    (long long)i, (int)idx[t][i], (int)w->n_groups);
    if (w->perm_grouped) {
        /* a permutation: every input read exactly once */
        unsigned char *seen = calloc((size_t)w->n_in, 1);
        if (!seen) return lm_set_error(LM_ERR_NOMEM, "gptq_validate: out of memory");
        for (int64_t k = 0; k < w->n_in; k++) {
            const int32_t i = w->perm_grouped[k];
            if (i < 0 || i >= w->n_in || seen[i]) {
                free(seen);
                return lm_set_error(LM_ERR_SHAPE, "gptq_validate: perm_grouped[%lld]=%d is %s", (long long)k, (int)i,
                                    i < 0 || i >= w->n_in ? "outside [0, n_in)" : "repeated (not a permutation)");
            }
            seen[i] = 1;
        }
        free(seen);
    }
    return LM_OK;
}

/* ---------------------------------------------------------------- scratch */

typedef struct {
    size_t xs, xsum, runs, g_idx, xperm, total;   /* byte offsets of each part, then the size */
    int64_t n_sums;
} scratch_layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static scratch_layout layout_of(const lm_gptq_matrix *w, int64_t ncols) {
    const int64_t nc = ncols > 0 ? ncols : 1, n_rows = w->n_in / PER_WORD;
    scratch_layout L;
    L.n_sums = n_rows > w->n_groups ? n_rows : w->n_groups;   /* runs <= word rows */
    L.xs = 0;
    L.xsum = L.xs + align64((size_t)nc * (size_t)w->n_in * sizeof(float));
    L.runs = L.xsum + align64((size_t)nc * (size_t)L.n_sums * sizeof(float));
    L.g_idx = L.runs + align64((size_t)n_rows * 3 * sizeof(int32_t));
    L.xperm = L.g_idx + align64((size_t)w->n_in * sizeof(int32_t));
    /* x in group order, for a matrix with a group-order copy */
    L.total = L.xperm + (w->perm_grouped ? align64((size_t)nc * (size_t)w->n_in * sizeof(float)) : 0);
    return L;
}

size_t lm_gptq_scratch_bytes(const lm_gptq_matrix *w, int64_t ncols) {
    if (check_shape(w, "gptq_scratch_bytes")) return 0;
    return layout_of(w, ncols).total;
}

/* ------------------------------------------------------- scalar reference */

void lm_gptq_rows_ref(const lm_gptq_matrix *w, int64_t ob, int64_t oe, const float *x, int64_t ncols, float *y,
                      int64_t ldy) {
    enum { CHUNK = 16 };   /* outputs dequantized together, reused for every column */
    const int64_t n_in = w->n_in, n_out = w->n_out, gs = lm_gptq_group_size(w);
    for (int64_t c = 0; c < ncols; c++) memset(y + c * ldy, 0, (size_t)(oe - ob) * sizeof(float));
    for (int64_t oc = ob; oc < oe; oc += CHUNK) {
        const int64_t m = oe - oc < CHUNK ? oe - oc : CHUNK;
        float scale[CHUNK], zero[CHUNK], wcol[CHUNK];
        int64_t g_cur = -1;
        for (int64_t i = 0; i < n_in; i++) {
            const int64_t g = w->g_idx ? w->g_idx[i] : i / gs;
            if (g != g_cur) {
                for (int64_t k = 0; k < m; k++) {
                    const int64_t o = oc + k;
                    const uint32_t zw = (uint32_t)w->qzeros[g * (n_out / PER_WORD) + o / PER_WORD];
                    scale[k] = lm_half_to_f32(w->scales[g * n_out + o]);
                    zero[k] = (float)((zw >> (4 * (o % PER_WORD))) & 15u);
                }
                g_cur = g;
            }
            const int32_t *qrow = w->qweight + (i / PER_WORD) * n_out + oc;
            const unsigned shift = 4u * (unsigned)(i % PER_WORD);
            for (int64_t k = 0; k < m; k++)
                wcol[k] = scale[k] * ((float)(((uint32_t)qrow[k] >> shift) & 15u) - zero[k]);
            for (int64_t c = 0; c < ncols; c++) {
                const float xv = x[c * n_in + i];
                float *yc = y + c * ldy + (oc - ob);
                for (int64_t k = 0; k < m; k++) yc[k] += wcol[k] * xv;
            }
        }
    }
}

/* ----------------------------------------------------------------- driver */

/* word row r of group g onto the runs: the last run grows, or a new one
 * starts -> the number of runs */
static int32_t add_row(int32_t *runs, int32_t n_runs, int32_t g, int64_t r) {
    if (n_runs > 0 && runs[3 * (n_runs - 1)] == g && r - runs[3 * (n_runs - 1) + 1] < MAX_RUN_ROWS) {
        runs[3 * (n_runs - 1) + 2] = (int32_t)(r + 1);
        return n_runs;
    }
    runs[3 * n_runs] = g;
    runs[3 * n_runs + 1] = (int32_t)r;
    runs[3 * n_runs + 2] = (int32_t)(r + 1);
    return n_runs + 1;
}

/* The group of every input, and the runs when every word is one group's.
 * Also a second fence for g_idx (lm_gptq_validate is the first). */
static int plan_groups(lm_gptq_job *job, char *scratch, const scratch_layout *L) {
    const lm_gptq_matrix *w = job->w;
    const int64_t n_rows = w->n_in / PER_WORD, gs = lm_gptq_group_size(w);
    int32_t *g_idx = (int32_t *)(scratch + L->g_idx);
    int32_t *runs = (int32_t *)(scratch + L->runs);
    int32_t n_runs = 0;
    if (!w->g_idx && gs % PER_WORD == 0) {
        /* the ordinary file: word row r is group 8r / gs, nothing to scan
         * (this plan runs for every matmul; g_idx is then never read) */
        for (int64_t r = 0; r < n_rows; r++) {
            const int32_t g = (int32_t)(r * PER_WORD / gs);
            n_runs = add_row(runs, n_runs, g, r);
        }
        goto done;
    }
    for (int64_t i = 0; i < w->n_in; i++) {
        const int64_t g = w->g_idx ? w->g_idx[i] : i / gs;
        if (g < 0 || g >= w->n_groups)
            return lm_set_error(LM_ERR_SHAPE, "gptq_matmul: g_idx[%lld]=%lld is outside [0, n_groups=%d)", (long long)i,
                                (long long)g, (int)w->n_groups);
        g_idx[i] = (int32_t)g;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const int32_t g = g_idx[r * PER_WORD];
        for (int j = 1; j < PER_WORD; j++)
            if (g_idx[r * PER_WORD + j] != g) {
                n_runs = 0;
                goto general;
            }
        n_runs = add_row(runs, n_runs, g, r);
    }
general:
done:
    job->runs = runs;
    job->n_runs = n_runs;
    job->g_idx = g_idx;
    job->n_sums = L->n_sums;
    return LM_OK;
}

/* xs and xsum of columns [c0, c1) */
static void prepare_columns(const lm_gptq_job *job, int64_t c0, int64_t c1) {
    const int64_t n_in = job->w->n_in;
    float *xs = (float *)job->xs, *xsum = (float *)job->xsum;
    static const float k_nibble_scale[PER_WORD] = {
        1.0f, 1.0f / 16, 1.0f / 256, 1.0f / 4096, 1.0f / 65536, 1.0f / 1048576, 1.0f / 16777216, 1.0f,
    };
    for (int64_t c = c0; c < c1; c++) {
        const float *xc = job->x + c * n_in;
        float *xsc = xs + c * n_in, *sc = xsum + c * job->n_sums;
        for (int64_t i = 0; i < n_in; i++) xsc[i] = xc[i] * k_nibble_scale[i % PER_WORD];
        if (job->n_runs > 0) {
            for (int32_t u = 0; u < job->n_runs; u++) {
                float s = 0.0f;
                for (int64_t i = (int64_t)job->runs[3 * u + 1] * PER_WORD; i < (int64_t)job->runs[3 * u + 2] * PER_WORD;
                     i++)
                    s += xc[i];
                sc[u] = s;
            }
        } else {
            memset(sc, 0, (size_t)job->w->n_groups * sizeof(float));
            for (int64_t i = 0; i < n_in; i++) sc[job->g_idx[i]] += xc[i];
        }
    }
}

static void prepare_task(void *p, int ith, int nth) {
    const lm_gptq_job *job = p;
    int64_t c0, c1;
    lm_split_range(job->ncols, ith, nth, &c0, &c1);
    prepare_columns(job, c0, c1);
}

/* columns [c0, c1) of x gathered into group order: xp[c][k] = x[c][perm[k]] */
typedef struct {
    const float *x;
    float *xp;
    const int32_t *perm;
    int64_t n_in, ncols;
} gather_job;

static void gather_columns(const gather_job *gj, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
        const float *xc = gj->x + c * gj->n_in;
        float *xpc = gj->xp + c * gj->n_in;
        for (int64_t k = 0; k < gj->n_in; k++) xpc[k] = xc[gj->perm[k]];
    }
}

static void gather_task(void *p, int ith, int nth) {
    const gather_job *gj = p;
    int64_t c0, c1;
    lm_split_range(gj->ncols, ith, nth, &c0, &c1);
    gather_columns(gj, c0, c1);
}

static void rows_task(void *p, int ith, int nth) {
    const lm_gptq_job *job = p;
    const lm_gptq_matrix *w = job->w;
    const int64_t o0 = job->o0, o1 = job->o1;
    if (!job->use_simd) {
        int64_t b, e;
        lm_split_range(o1 - o0, ith, nth, &b, &e);
        if (b < e) lm_gptq_rows_ref(w, o0 + b, o0 + e, job->x, job->ncols, job->y + b, job->ldy);
        return;
    }
#if defined(LM_BUILD_AVX2)
    /* whole 8-output words go to the SIMD kernel; a ragged head or tail
     * (a slice not on a word boundary) to the reference */
    int64_t a = (o0 + PER_WORD - 1) / PER_WORD * PER_WORD, b = o1 / PER_WORD * PER_WORD;
    if (a > o1) a = o1;
    if (b < a) b = a;
    /* in strips of 16 outputs, the kernel's widest tile */
    int64_t kb, ke;
    lm_split_range((b - a + 2 * PER_WORD - 1) / (2 * PER_WORD), ith, nth, &kb, &ke);
    const int64_t sb = a + kb * 2 * PER_WORD, se = a + ke * 2 * PER_WORD < b ? a + ke * 2 * PER_WORD : b;
    if (sb < se) lm_gptq_rows_avx2(job, sb, se);
    if (ith == 0 && o0 < a) lm_gptq_rows_ref(w, o0, a, job->x, job->ncols, job->y, job->ldy);
    if (ith == nth - 1 && b < o1) lm_gptq_rows_ref(w, b, o1, job->x, job->ncols, job->y + (b - o0), job->ldy);
#endif
}

static int resolve_impl(int impl, int *use_simd) {
    switch (impl) {
    case LM_IMPL_SCALAR: *use_simd = 0; return LM_OK;
    case LM_IMPL_AVX2:
    case LM_IMPL_VNNI:   /* no VNNI build of its own: the AVX2 kernel */
        if (!lm_impl_available(impl))
            return lm_set_error(LM_ERR_IMPL, "gptq_matmul: kernel implementation %d is not available on this CPU/build",
                                impl);
        *use_simd = 1;
        return LM_OK;
    case LM_IMPL_AUTO: *use_simd = lm_cpu_features_avx2(); return LM_OK;
    default: return lm_set_error(LM_ERR_IMPL, "gptq_matmul: unknown kernel implementation %d", impl);
    }
}

int lm_gptq_matmul_into(lm_threadpool *tp, int impl, const lm_gptq_matrix *w, int64_t o0, int64_t o1, const float *x,
                        int64_t ncols, float *y, int64_t ldy, void *scratch) {
    int rc = check_shape(w, "gptq_matmul");
    if (rc) return rc;
    lm_gptq_job job = { 0 };
    if ((rc = resolve_impl(impl, &job.use_simd))) return rc;
    if (o0 < 0 || o1 < o0 || o1 > w->n_out)
        return lm_set_error(LM_ERR_SHAPE, "gptq_matmul: output range [%lld, %lld) is not inside [0, n_out=%d)",
                            (long long)o0, (long long)o1, (int)w->n_out);
    if (ncols < 0) return lm_set_error(LM_ERR_SHAPE, "gptq_matmul: ncols=%lld is negative", (long long)ncols);
    if (ldy < o1 - o0)
        return lm_set_error(LM_ERR_SHAPE, "gptq_matmul: ldy=%lld < %lld outputs", (long long)ldy, (long long)(o1 - o0));
    if (ncols == 0 || o0 == o1) return LM_OK;
    if (!x || !y) return lm_set_error(LM_ERR_ARG, "gptq_matmul: x or y is NULL");
    if (!scratch) return lm_set_error(LM_ERR_ARG, "gptq_matmul: scratch is NULL");
    const scratch_layout L = layout_of(w, ncols);
    /* one decode column is too little work to wake the pool for */
    const int small = ncols * (int64_t)w->n_in <= 32768;
    lm_gptq_matrix grouped;
    if (w->perm_grouped) {
        /* the act-order matrix as an ordinary one: its group-order copy,
         * read with x gathered into the same order */
        /* a perm that went bad after validation is caught, not followed */
        for (int64_t k = 0; k < w->n_in; k++)
            if (w->perm_grouped[k] < 0 || w->perm_grouped[k] >= w->n_in)
                return lm_set_error(LM_ERR_SHAPE, "gptq_matmul: perm_grouped[%lld]=%d is outside [0, n_in=%d)",
                                    (long long)k, (int)w->perm_grouped[k], (int)w->n_in);
        grouped = *w;
        grouped.qweight = w->qweight_grouped;
        grouped.g_idx = w->g_idx_grouped;
        grouped.qweight_grouped = grouped.g_idx_grouped = grouped.perm_grouped = NULL;
        gather_job gj = { x, (float *)((char *)scratch + L.xperm), w->perm_grouped, w->n_in, ncols };
        if (small)
            gather_columns(&gj, 0, ncols);
        else
            lm_threadpool_run(tp, gather_task, &gj);
        w = &grouped;
        x = gj.xp;
    }
    job.w = w;
    job.o0 = o0;
    job.o1 = o1;
    job.x = x;
    job.ncols = ncols;
    job.y = y;
    job.ldy = ldy;
    if ((rc = plan_groups(&job, scratch, &L))) return rc;
    if (job.use_simd) {
        job.xs = (const float *)((char *)scratch + L.xs);
        job.xsum = (const float *)((char *)scratch + L.xsum);
        if (small)
            prepare_columns(&job, 0, ncols);
        else
            lm_threadpool_run(tp, prepare_task, &job);
    }
    lm_threadpool_run(tp, rows_task, &job);
    return LM_OK;
}

int lm_gptq_matmul(const lm_gptq_matrix *w, const float *x, int64_t ncols, float *y, int impl, int n_threads) {
    int rc = lm_gptq_validate(w);
    if (rc) return rc;
    if (n_threads < 1 || n_threads > 512)
        return lm_set_error(LM_ERR_ARG, "gptq_matmul: n_threads=%d must be in 1..512", n_threads);
    lm_threadpool *tp = NULL;
    if (n_threads > 1 && !(tp = lm_threadpool_create(n_threads)))
        return lm_set_error(LM_ERR_NOMEM, "gptq_matmul: could not start %d threads", n_threads);
    void *scratch = malloc(lm_gptq_scratch_bytes(w, ncols));
    if (!scratch) {
        lm_threadpool_free(tp);
        return lm_set_error(LM_ERR_NOMEM, "gptq_matmul: out of memory for scratch");
    }
    rc = lm_gptq_matmul_into(tp, impl, w, 0, w->n_out, x, ncols, y, w->n_out, scratch);
    free(scratch);
    lm_threadpool_free(tp);
    return rc;
}
