/* kv_state.c — one sequence's cached rows out of the context and back in
 * (the KV part of llama.cpp's llama_state_seq_get_data / set_data): the
 * bytes a saved state carries. The file format around them (header, model
 * identity, tokens, checksum) is the Python side's (runtime/engine/state.py).
 *
 * Layout of n_pos positions: for each layer il of the context's range (and
 * then its device's), the keys of positions 0..n_pos-1, [n_pos][kv_row_bytes],
 * then the values the same way; rows in the cache's own type. A sequence's
 * positions are contiguous from 0 (kv_pool.h), so no position list is needed;
 * the cells they sit in are the pool's business and are not saved: a state
 * set into another sequence, or another context of the same shape, takes
 * whatever blocks are free there. */
#include <string.h>

#include "error.h"
#include "model/model.h"
#include "offload/backend.h"

/* layers whose rows a state of this context holds: its own, then its device's */
static int32_t state_layers(const lm_context *c) { return (c->dev ? c->model->p.n_layer : c->kv_il1) - c->kv_il0; }

size_t lm_context_seq_state_bytes(const lm_context *c, int32_t n_pos) {
    if (!c || n_pos < 0 || n_pos > c->pool.n_ctx_seq) return 0;
    return 2 * (size_t)state_layers(c) * (size_t)n_pos * c->kv_row_bytes;
}

static int check_seq(const lm_context *c, int32_t seq, const char *fn) {
    if (!c) return lm_set_error(LM_ERR_ARG, "%s: context is NULL", fn);
    if (seq < 0 || seq >= c->pool.n_seq_max)
        return lm_set_error(LM_ERR_ARG, "%s: sequence %d outside [0, n_seq_max=%d)", fn, seq, c->pool.n_seq_max);
    return LM_OK;
}

/* Rows of positions [0, n) of seq in one layer's cache <-> n consecutive rows
 * of buf, one run of consecutive cells at a time. */
static void copy_layer(const lm_context *c, int32_t seq, int32_t n, char *cache, char *buf, int into_cache) {
    const size_t row = c->kv_row_bytes;
    for (int32_t pos = 0; pos < n;) {
        int32_t cell;
        const int32_t run = lm_kv_run(&c->pool, seq, pos, n - 1, &cell);
        char *at = cache + (size_t)cell * row, *b = buf + (size_t)pos * row;
        if (into_cache)
            memcpy(at, b, (size_t)run * row);
        else
            memcpy(b, at, (size_t)run * row);
        pos += run;
    }
}

/* this context's own layers, in the layout above */
static void copy_host(const lm_context *c, int32_t seq, int32_t n, char *buf, int into_cache) {
    const size_t layer = (size_t)c->n_ctx * c->kv_row_bytes, rows = (size_t)n * c->kv_row_bytes;
    for (int32_t il = 0; il < c->kv_il1 - c->kv_il0; il++) {
        copy_layer(c, seq, n, c->k_cache + (size_t)il * layer, buf + (2 * (size_t)il) * rows, into_cache);
        copy_layer(c, seq, n, c->v_cache + (size_t)il * layer, buf + (2 * (size_t)il + 1) * rows, into_cache);
    }
}

static int check_device(const lm_context *c, const char *fn) {
    if (c->dev && (!c->backend->seq_state_get || !c->backend->seq_state_set))
        return lm_set_error(LM_ERR_ARG,
                            "%s: the %s offload device cannot save or restore its KV cache yet (layers [%d, %d)); "
                            "run with fewer GPU layers (0) to save state",
                            fn, c->backend->name, c->kv_il1, c->model->p.n_layer);
    return LM_OK;
}

int lm_context_seq_state_get(const lm_context *c, int32_t seq, void *dst, size_t size) {
    int rc = check_seq(c, seq, "lm_context_seq_state_get");
    if (rc || (rc = check_device(c, "lm_context_seq_state_get"))) return rc;
    const int32_t n = c->pool.len[seq];
    const size_t want = lm_context_seq_state_bytes(c, n);
    if (size != want)
        return lm_set_error(LM_ERR_ARG,
                            "lm_context_seq_state_get: sequence %d's %d positions take %zu bytes, the buffer has %zu",
                            seq, n, want, size);
    if (want == 0) return LM_OK;
    if (!dst) return lm_set_error(LM_ERR_ARG, "lm_context_seq_state_get: NULL buffer");
    copy_host(c, seq, n, dst, 0);
    if (!c->dev) return LM_OK;
    const size_t host = 2 * (size_t)(c->kv_il1 - c->kv_il0) * (size_t)n * c->kv_row_bytes;
    return c->backend->seq_state_get(c->dev, seq, (char *)dst + host, size - host);
}

int lm_context_seq_state_set(lm_context *c, int32_t seq, int32_t n_pos, const void *src, size_t size) {
    int rc = check_seq(c, seq, "lm_context_seq_state_set");
    if (rc || (rc = check_device(c, "lm_context_seq_state_set"))) return rc;
    lm_kv_pool *pool = &c->pool;
    if (n_pos < 0 || n_pos > pool->n_ctx_seq)
        return lm_set_error(LM_ERR_CONTEXT_FULL,
                            "lm_context_seq_state_set: %d positions do not fit a sequence of n_ctx_seq=%d", n_pos,
                            pool->n_ctx_seq);
    const size_t want = lm_context_seq_state_bytes(c, n_pos);
    if (size != want)
        return lm_set_error(LM_ERR_ARG, "lm_context_seq_state_set: %d positions take %zu bytes here, got %zu", n_pos,
                            want, size);
    if (want > 0 && !src) return lm_set_error(LM_ERR_ARG, "lm_context_seq_state_set: NULL buffer");
    /* the blocks seq holds alone come back when its old positions go */
    const int32_t *table = lm_kv_table(pool, seq);
    int32_t freed = 0;
    for (int32_t b = 0; b < pool->max_blocks; b++) freed += table[b] >= 0 && pool->refs[table[b]] == 1;
    const int32_t need = lm_kv_blocks_for(pool, n_pos);
    if (need > pool->n_free + freed)
        return lm_set_error(LM_ERR_CONTEXT_FULL,
                            "context full: a state of %d positions needs %d blocks and %d are free (with sequence "
                            "%d's own)",
                            n_pos, need, pool->n_free + freed, seq);
    if (c->dev) {
        const size_t host = 2 * (size_t)(c->kv_il1 - c->kv_il0) * (size_t)n_pos * c->kv_row_bytes;
        const char *rest = want > 0 ? (const char *)src + host : NULL;
        if ((rc = c->backend->seq_state_set(c->dev, seq, n_pos, rest, size - host))) return rc;
    }
    lm_kv_pool_keep(pool, seq, 0);
    int32_t *t = lm_kv_table(pool, seq);
    for (int32_t b = 0; b < need; b++) t[b] = lm_kv_pool_take(pool);   /* checked: never -1 */
    pool->len[seq] = n_pos;
    if (n_pos > 0) copy_host(c, seq, n_pos, (char *)src, 1);
    return LM_OK;
}
