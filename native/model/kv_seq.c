/* kv_seq.c — the sequence operations of a context (llama.cpp's
 * llama_memory_seq_rm / seq_cp / seq_add): remove a range of positions (a
 * suffix: the blocks past it go back; a middle range: the later positions
 * move down and their keys are rotated by the shift), share a prefix with
 * another sequence, and the copy-on-write that keeps shared blocks intact.
 * Sequence 0's lm_context_n_past / lm_context_truncate are here too.
 *
 * With a device, every operation is checked here first, then repeated on the
 * device (which refuses or applies it whole), then applied here, so the two
 * sides never disagree about a sequence. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "model/model.h"
#include "offload/backend.h"
#include "quants/type_traits.h"

/* ------------------------------------------------------ block copies */

/* rows of one block of every layer here, block src to block dst */
static void copy_block(lm_context *c, int32_t src, int32_t dst) {
    const int32_t shift = c->pool.block_shift;
    const size_t block_bytes = c->kv_row_bytes << shift, layer_bytes = (size_t)c->n_ctx * c->kv_row_bytes;
    for (int32_t il = 0; il < c->kv_il1 - c->kv_il0; il++) {
        const size_t from = il * layer_bytes + ((size_t)src << shift) * c->kv_row_bytes;
        const size_t to = il * layer_bytes + ((size_t)dst << shift) * c->kv_row_bytes;
        memcpy(c->k_cache + to, c->k_cache + from, block_bytes);
        memcpy(c->v_cache + to, c->v_cache + from, block_bytes);
    }
}

int lm_kv_make_private(lm_context *c, int32_t seq, int32_t block_index) {
    lm_kv_pool *pool = &c->pool;
    int32_t *table = lm_kv_table(pool, seq);
    const int32_t old = block_index < pool->max_blocks ? table[block_index] : -1;
    if (old < 0 || pool->refs[old] <= 1) return LM_OK;
    const int32_t fresh = lm_kv_pool_take(pool);
    if (fresh < 0)
        return lm_set_error(LM_ERR_CONTEXT_FULL, "KV pool: no free block for a copy although it was checked");
    copy_block(c, old, fresh);
    table[block_index] = fresh;
    lm_kv_pool_drop(pool, old);
    return LM_OK;
}

/* ------------------------------------------------------------ checks */

static int check_seq(const lm_context *c, int32_t seq, const char *fn) {
    if (!c) return lm_set_error(LM_ERR_ARG, "%s: context is NULL", fn);
    if (seq < 0 || seq >= c->pool.n_seq_max)
        return lm_set_error(LM_ERR_ARG, "%s: sequence %d outside [0, n_seq_max=%d)", fn, seq, c->pool.n_seq_max);
    return LM_OK;
}

int32_t lm_context_seq_len(const lm_context *c, int32_t seq) {
    int rc = check_seq(c, seq, "lm_context_seq_len");
    return rc ? rc : c->pool.len[seq];
}

int32_t lm_context_n_past(const lm_context *c) { return c ? c->pool.len[0] : 0; }

int lm_context_kv_usage(const lm_context *c, lm_kv_usage *out) {
    if (!c || !out) return lm_set_error(LM_ERR_ARG, "lm_context_kv_usage: NULL argument");
    const lm_kv_pool *pool = &c->pool;
    *out = (lm_kv_usage){ .n_seq_max = pool->n_seq_max,
                          .n_ctx_seq = pool->n_ctx_seq,
                          .block_size = lm_kv_block_size(pool),
                          .cells_total = pool->n_blocks << pool->block_shift,
                          .cells_used = (pool->n_blocks - pool->n_free) << pool->block_shift };
    return LM_OK;
}

int lm_context_kv_read(const lm_context *c, int32_t seq, int32_t il, int32_t pos, float *k, float *v) {
    int rc = check_seq(c, seq, "lm_context_kv_read");
    if (rc) return rc;
    if (il < c->kv_il0 || il >= c->kv_il1)
        return lm_set_error(LM_ERR_ARG, "lm_context_kv_read: layer %d is not cached here (layers [%d, %d))", il,
                            c->kv_il0, c->kv_il1);
    if (pos < 0 || pos >= c->pool.len[seq])
        return lm_set_error(LM_ERR_ARG, "lm_context_kv_read: position %d outside sequence %d's [0, %d)", pos, seq,
                            c->pool.len[seq]);
    if (!k || !v) return lm_set_error(LM_ERR_ARG, "lm_context_kv_read: NULL output");
    const lm_type_traits *t = lm_get_type_traits(c->kv_type);
    const size_t at = ((size_t)(il - c->kv_il0) * c->n_ctx + lm_kv_cell(&c->pool, seq, pos)) * c->kv_row_bytes;
    const int64_t kv_dim = (int64_t)c->model->p.n_head_kv * c->model->p.head_dim;
    t->to_float(c->k_cache + at, k, kv_dim);
    t->to_float(c->v_cache + at, v, kv_dim);
    return LM_OK;
}

/* --------------------------------------------------------- the shift */

/* The blocks a shift of seq's positions [p1, len) down to p0 writes into:
 * those holding its new positions [p0, len - (p1 - p0)). */
static int32_t shared_blocks_written(const lm_context *c, int32_t seq, int32_t p0, int32_t new_len) {
    const lm_kv_pool *pool = &c->pool;
    const int32_t *table = lm_kv_table(pool, seq);
    int32_t n = 0;
    for (int32_t i = p0 >> pool->block_shift; i < lm_kv_blocks_for(pool, new_len); i++) n += pool->refs[table[i]] > 1;
    return n;
}

/* (cos, sin) of a rotation by -delta positions for each rope group, in row 0
 * of the group's rope table (free between batches) */
static const float *shift_angles(lm_context *c, int32_t group, int32_t delta) {
    const lm_model *m = c->model;
    const int half = m->p.n_rot / 2;
    const double *inv_freq = c->rope_inv_freq + (size_t)group * half;   /* a pure rotation: no mscale */
    float *cs = c->rope_cs + (size_t)group * c->n_batch * m->p.n_rot;
    for (int i = 0; i < half; i++) {
        const double theta = -(double)delta * inv_freq[i];
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
    return cs;
}

/* Positions [p1, len) of seq become [p0, len - d), d = p1 - p0: each row
 * moves to its new cell, the value as it is, the key rotated by -d (rope of
 * position p then of -d is rope of p - d, up to rounding). Ascending, so a
 * row is read before anything writes over it (its new cell is below it). */
static int shift_down(lm_context *c, int32_t seq, int32_t p0, int32_t p1) {
    lm_kv_pool *pool = &c->pool;
    const lm_model_params *p = &c->model->p;
    const int32_t len = pool->len[seq], d = p1 - p0, new_len = len - d;
    for (int32_t i = p0 >> pool->block_shift; i < lm_kv_blocks_for(pool, new_len); i++) {
        int rc = lm_kv_make_private(c, seq, i);
        if (rc) return rc;
    }
    const lm_type_traits *t = lm_get_type_traits(c->kv_type);
    const int64_t hd = p->head_dim, kv_dim = (int64_t)p->n_head_kv * hd;
    const size_t row = c->kv_row_bytes;
    for (int32_t il = c->kv_il0; il < c->kv_il1; il++) {
        const float *cs = shift_angles(c, c->model->rope_group[il], d);
        char *k_layer = c->k_cache + (size_t)(il - c->kv_il0) * c->n_ctx * row;
        char *v_layer = c->v_cache + (size_t)(il - c->kv_il0) * c->n_ctx * row;
        for (int32_t q = p0; q < new_len; q++) {
            const size_t from = (size_t)lm_kv_cell(pool, seq, q + d) * row, to = (size_t)lm_kv_cell(pool, seq, q) * row;
            t->to_float(k_layer + from, c->kv_row, kv_dim);
            for (int h = 0; h < p->n_head_kv; h++)
                lm_rope_head(c->kv_row + h * hd, cs, p->n_rot, p->rope_layout == LM_ROPE_NEOX);
            t->from_float(c->kv_row, k_layer + to, kv_dim);
            memcpy(v_layer + to, v_layer + from, row);
        }
    }
    lm_kv_pool_keep(pool, seq, new_len);
    return LM_OK;
}

/* -------------------------------------------------------- operations */

int lm_context_seq_rm(lm_context *c, int32_t seq, int32_t p0, int32_t p1) {
    int rc = check_seq(c, seq, "lm_context_seq_rm");
    if (rc) return rc;
    if (p0 < 0 || (p1 >= 0 && p1 < p0))
        return lm_set_error(LM_ERR_ARG,
                            "lm_context_seq_rm: positions [%d, %d) of sequence %d: expected 0 <= p0 <= p1 "
                            "(or p1 < 0: to the end)",
                            p0, p1, seq);
    lm_kv_pool *pool = &c->pool;
    const int32_t len = pool->len[seq];
    if (p1 < 0 || p1 > len) p1 = len;
    if (p0 >= p1) return LM_OK;   /* nothing cached there */
    const int shift = p1 < len;
    if (shift) {
        const int32_t copies = shared_blocks_written(c, seq, p0, len - (p1 - p0));
        if (copies > pool->n_free)
            return lm_set_error(LM_ERR_CONTEXT_FULL,
                                "context full: moving sequence %d's positions [%d, %d) down to %d writes into %d "
                                "shared blocks, to be copied first, and %d blocks are free",
                                seq, p1, len, p0, copies, pool->n_free);
    }
    if (c->dev && (rc = c->backend->seq_rm(c->dev, seq, p0, shift ? p1 : -1))) return rc;
    if (!shift) {
        lm_kv_pool_keep(pool, seq, p0);
        return LM_OK;
    }
    return shift_down(c, seq, p0, p1);
}

int lm_context_seq_cp(lm_context *c, int32_t src, int32_t dst, int32_t n) {
    int rc = check_seq(c, src, "lm_context_seq_cp");
    if (!rc) rc = check_seq(c, dst, "lm_context_seq_cp");
    if (rc) return rc;
    if (src == dst)
        return lm_set_error(LM_ERR_ARG, "lm_context_seq_cp: source and destination are both sequence %d", src);
    if (n < 0 || n > c->pool.len[src])
        return lm_set_error(LM_ERR_ARG, "lm_context_seq_cp: %d positions of sequence %d, which holds %d", n, src,
                            c->pool.len[src]);
    if (c->dev && (rc = c->backend->seq_cp(c->dev, src, dst, n))) return rc;
    lm_kv_pool_share(&c->pool, src, dst, n);
    return LM_OK;
}

int lm_context_truncate(lm_context *c, int32_t n_keep) {
    if (!c) return lm_set_error(LM_ERR_ARG, "lm_context_truncate: context is NULL");
    if (n_keep < 0 || n_keep > c->pool.len[0])
        return lm_set_error(LM_ERR_ARG, "truncate to %d: expected 0 <= n_keep <= n_past = %d", n_keep, c->pool.len[0]);
    return lm_context_seq_rm(c, 0, n_keep, -1);
}
