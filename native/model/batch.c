/* batch.c — lm_context_decode and its one-sequence forms (lm_context_eval,
 * lm_context_eval_layers on sequence 0).
 *
 * A batch is checked whole against the sequence table first (tokens, ids,
 * positions that continue each sequence, room in n_ctx_seq and in the pool);
 * then its cells are reserved (a shared block the batch writes into is
 * copied first, new blocks are taken lowest first), the forward pass runs
 * (forward.c, the device's part through the backend table), and only then
 * do the sequences' lengths move. When the run fails (a device error: the
 * checks come first), the new blocks go back and the lengths stay; a shared
 * block copied for the batch stays copied, the same cells in one block more. */
#include <string.h>

#include "error.h"
#include "model/model.h"
#include "offload/backend.h"

/* ------------------------------------------------------------ checks */

static void clear_counts(lm_context *c) {
    for (int32_t k = 0; k < c->b_n_seqs; k++) c->b_count[c->b_seqs[k]] = 0;
    c->b_n_seqs = 0;
}

/* token ids, sequence ids and positions; fills b_count, b_seqs (ascending)
 * and b_out */
static int check_tokens(lm_context *c, const lm_batch *b) {
    const lm_kv_pool *pool = &c->pool;
    const int32_t n_vocab = c->model->p.n_vocab;
    c->b_n_seqs = c->b_n_out = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->token[i] < 0 || b->token[i] >= n_vocab)
            return lm_set_error(LM_ERR_TOKEN, "token %d at index %d is outside the vocabulary [0, %d)", b->token[i], i,
                                n_vocab);
        const int32_t s = b->seq_id[i];
        if (s < 0 || s >= pool->n_seq_max)
            return lm_set_error(LM_ERR_ARG, "batch token %d: sequence %d outside [0, n_seq_max=%d)", i, s,
                                pool->n_seq_max);
        if (c->b_count[s]++ == 0) c->b_seqs[c->b_n_seqs++] = s;
        const int32_t expected = pool->len[s] + c->b_count[s] - 1;
        if (b->pos[i] != expected)
            return lm_set_error(LM_ERR_ARG, "batch token %d: sequence %d continues at position %d, got position %d", i,
                                s, expected, b->pos[i]);
        if (b->logits && b->logits[i]) c->b_out[c->b_n_out++] = i;
    }
    /* ascending ids: the order blocks are taken in, the same on host and device */
    for (int32_t k = 1; k < c->b_n_seqs; k++)
        for (int32_t j = k; j > 0 && c->b_seqs[j - 1] > c->b_seqs[j]; j--) {
            const int32_t t = c->b_seqs[j];
            c->b_seqs[j] = c->b_seqs[j - 1];
            c->b_seqs[j - 1] = t;
        }
    return LM_OK;
}

/* Whether the k-th sequence of the batch copies its last block before
 * writing into it: it is partly filled and still held by others when its
 * turn comes. The batch's earlier sequences with the same last block copied
 * theirs while more than one holder was left, so of `earlier` such
 * sequences min(earlier, refs - 1) did. */
static int copies_tail(const lm_context *c, int32_t k) {
    const lm_kv_pool *pool = &c->pool;
    const int32_t tail = lm_kv_tail_block(pool, c->b_seqs[k]);
    if (tail < 0) return 0;
    int32_t earlier = 0;
    for (int32_t j = 0; j < k; j++) earlier += lm_kv_tail_block(pool, c->b_seqs[j]) == tail;
    return earlier < pool->refs[tail] - 1;
}

/* every sequence within n_ctx_seq, and the blocks they need free */
static int check_room(const lm_context *c) {
    const lm_kv_pool *pool = &c->pool;
    const int32_t bs = lm_kv_block_size(pool);
    int32_t need = 0;
    for (int32_t k = 0; k < c->b_n_seqs; k++) {
        const int32_t s = c->b_seqs[k], old = pool->len[s], n = old + c->b_count[s];
        if (n > pool->n_ctx_seq)
            return lm_set_error(LM_ERR_CONTEXT_FULL,
                                "context full: sequence %d needs %d positions (%d cached + %d new) > n_ctx_seq=%d", s,
                                n, old, c->b_count[s], pool->n_ctx_seq);
        const int32_t blocks = lm_kv_blocks_for(pool, n) - lm_kv_blocks_for(pool, old) + copies_tail(c, k);
        if (need + blocks > pool->n_free)
            return lm_set_error(LM_ERR_CONTEXT_FULL,
                                "context full: sequence %d needs %d new cells (%d blocks of %d) and %d of the %d "
                                "cells are free (%d taken by the batch's sequences before it)",
                                s, blocks * bs, blocks, bs, pool->n_free * bs, pool->n_blocks * bs, need * bs);
        need += blocks;
    }
    return LM_OK;
}

/* ------------------------------------------------------ reservation */

static int reserve(lm_context *c, const lm_batch *b) {
    lm_kv_pool *pool = &c->pool;
    for (int32_t k = 0; k < c->b_n_seqs; k++) {
        const int32_t s = c->b_seqs[k], old = pool->len[s];
        int rc = lm_kv_make_private(c, s, old >> pool->block_shift);
        if (rc) return rc;
        int32_t *table = lm_kv_table(pool, s);
        for (int32_t i = lm_kv_blocks_for(pool, old); i < lm_kv_blocks_for(pool, old + c->b_count[s]); i++)
            if ((table[i] = lm_kv_pool_take(pool)) < 0)
                return lm_set_error(LM_ERR_CONTEXT_FULL, "KV pool: no free block although the batch was checked");
    }
    for (int32_t i = 0; i < b->n_tokens; i++) c->b_cell[i] = lm_kv_cell(pool, b->seq_id[i], b->pos[i]);
    return LM_OK;
}

/* after the run: rc == 0 moves the lengths, else gives the reserved blocks back */
static int finish(lm_context *c, int rc) {
    lm_kv_pool *pool = &c->pool;
    for (int32_t k = 0; k < c->b_n_seqs; k++) {
        const int32_t s = c->b_seqs[k];
        lm_kv_pool_keep(pool, s, pool->len[s] + (rc ? 0 : c->b_count[s]));
    }
    clear_counts(c);
    return rc;
}

/* the checks, then the reservation; c->b_* describe the batch on success */
static int prepare(lm_context *c, const lm_batch *b, const float *logits, const char *fn) {
    if (!c || !b || !b->token || !b->pos || !b->seq_id)
        return lm_set_error(LM_ERR_ARG, "%s: NULL context, batch or batch array", fn);
    if (b->n_tokens <= 0 || b->n_tokens > c->n_batch)
        return lm_set_error(LM_ERR_ARG, "%s: n_tokens=%d outside [1, n_batch=%d]", fn, b->n_tokens, c->n_batch);
    int rc = check_tokens(c, b);
    if (!rc) rc = check_room(c);
    if (!rc && c->b_n_out > 0 && !logits)
        rc = lm_set_error(LM_ERR_ARG, "%s: %d tokens ask for an output row and the output buffer is NULL", fn,
                          c->b_n_out);
    if (rc) {
        clear_counts(c);
        return rc;
    }
    rc = reserve(c, b);
    return rc ? finish(c, rc) : LM_OK;
}

/* ----------------------------------------------------------- decode */

int lm_context_decode_from(lm_context *c, const lm_batch *b, int32_t il0, const float *x_in, float *logits) {
    int rc = prepare(c, b, logits, "lm_context_decode");
    if (rc) return rc;
    return finish(c, lm_forward(c, b, il0, c->model->p.n_layer, x_in, logits));
}

int lm_context_decode(lm_context *c, const lm_batch *b, float *logits) {
    if (c && !c->dev) return lm_context_decode_from(c, b, 0, NULL, logits);
    int rc = prepare(c, b, logits, "lm_context_decode");
    if (rc) return rc;
    /* host layers (or the embeddings alone), then the stream crosses to the
     * device once per batch; the device reserves its own cells */
    rc = lm_forward(c, b, 0, c->kv_il1, NULL, NULL);
    if (!rc) rc = c->backend->decode(c->dev, b, c->x, logits);
    return finish(c, rc);
}

int lm_context_decode_embd(lm_context *c, const lm_batch *b, float *embd) {
    if (c && c->dev)
        return lm_set_error(LM_ERR_ARG, "lm_context_decode_embd: a context with offloaded layers returns logits only "
                                        "(create it with gpu_layers = 0 for embeddings)");
    int rc = prepare(c, b, embd, "lm_context_decode_embd");
    if (rc) return rc;
    rc = lm_forward(c, b, 0, c->model->p.n_layer, NULL, NULL);
    if (!rc && c->b_n_out > 0) lm_forward_embd_rows(c, embd);
    return finish(c, rc);
}

/* ----------------------------------------------------- sequence 0 */

/* lm_context_eval's tokens as a batch of sequence 0 at its next positions */
static int sequence0_batch(lm_context *c, const int32_t *tokens, int32_t n_tokens, int logits_rows, lm_batch *b,
                           const char *fn) {
    if (!c || !tokens) return lm_set_error(LM_ERR_ARG, "%s: NULL context or tokens", fn);
    if (n_tokens <= 0 || n_tokens > c->n_batch)
        return lm_set_error(LM_ERR_ARG, "%s: n_tokens=%d outside [1, n_batch=%d]", fn, n_tokens, c->n_batch);
    const int32_t n_past = c->pool.len[0];
    for (int32_t i = 0; i < n_tokens; i++) {
        c->e_pos[i] = n_past + i;
        c->e_logits[i] = (int8_t)(i >= n_tokens - logits_rows);
    }
    *b =
        (lm_batch){ .n_tokens = n_tokens, .token = tokens, .pos = c->e_pos, .seq_id = c->e_seq, .logits = c->e_logits };
    return LM_OK;
}

int lm_context_eval(lm_context *c, const int32_t *tokens, int32_t n_tokens, float *logits, int all_logits) {
    lm_batch b;
    const int32_t rows = !logits ? 0 : all_logits ? n_tokens : 1;
    int rc = sequence0_batch(c, tokens, n_tokens, rows, &b, "lm_context_eval");
    return rc ? rc : lm_context_decode(c, &b, logits);
}

int lm_context_eval_layers(lm_context *c, const int32_t *tokens, int32_t n_tokens, int32_t il0, int32_t il1,
                           float *x_io) {
    lm_batch b;
    int rc = sequence0_batch(c, tokens, n_tokens, 0, &b, "lm_context_eval_layers");
    if (rc) return rc;
    const lm_model_params *p = &c->model->p;
    if (il0 < 0 || il0 >= il1 || il1 > p->n_layer)
        return lm_set_error(LM_ERR_ARG, "lm_context_eval_layers: layers [%d, %d) outside 0 <= il0 < il1 <= %d", il0,
                            il1, p->n_layer);
    if (il0 < c->kv_il0 || il1 > c->kv_il1)
        return lm_set_error(LM_ERR_ARG,
                            "lm_context_eval_layers: layers [%d, %d) are not all on this context's "
                            "device (it runs [%d, %d))",
                            il0, il1, c->kv_il0, c->kv_il1);
    if (!x_io) return lm_set_error(LM_ERR_ARG, "lm_context_eval_layers: x_io is NULL");
    if ((rc = prepare(c, &b, NULL, "lm_context_eval_layers"))) return rc;
    rc = lm_forward(c, &b, il0, il1, il0 == 0 ? NULL : x_io, NULL);
    if (!rc) memcpy(x_io, c->x, sizeof(float) * (size_t)n_tokens * (size_t)p->n_embd);
    return finish(c, rc);
}
