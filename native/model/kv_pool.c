/* kv_pool.c — the block pool and the sequence tables of a shared KV cache
 * (kv_pool.h): which blocks are free, who holds which. No cache data here. */
#include "model/kv_pool.h"

#include <stdlib.h>

#include "include/lamina.h"

int lm_kv_pool_init(lm_kv_pool *p, int32_t n_ctx, int32_t n_ctx_seq, int32_t n_seq_max) {
    int shift = 5;   /* 32 positions: few table lookups, at most 31 cells idle per sequence */
    while (shift > 0 && ((n_ctx | n_ctx_seq) & ((1 << shift) - 1))) shift--;
    p->block_shift = shift;
    p->n_blocks = n_ctx >> shift;
    p->n_seq_max = n_seq_max;
    p->n_ctx_seq = n_ctx_seq;
    p->max_blocks = n_ctx_seq >> shift;
    p->n_free = p->n_blocks;
    p->first_free = 0;
    p->refs = calloc((size_t)p->n_blocks, sizeof *p->refs);
    p->len = calloc((size_t)n_seq_max, sizeof *p->len);
    p->table = calloc((size_t)n_seq_max * (size_t)p->max_blocks, sizeof *p->table);
    if (!p->refs || !p->len || !p->table) return LM_ERR_NOMEM;
    for (int64_t i = 0; i < (int64_t)n_seq_max * p->max_blocks; i++) p->table[i] = -1;
    return LM_OK;
}

void lm_kv_pool_free(lm_kv_pool *p) {
    free(p->refs);
    free(p->len);
    free(p->table);
    p->refs = p->len = p->table = NULL;
}

int32_t lm_kv_pool_take(lm_kv_pool *p) {
    for (int32_t b = p->first_free; b < p->n_blocks; b++)
        if (p->refs[b] == 0) {
            p->refs[b] = 1;
            p->n_free--;
            p->first_free = b + 1;
            return b;
        }
    return -1;
}

void lm_kv_pool_drop(lm_kv_pool *p, int32_t block) {
    if (--p->refs[block] > 0) return;
    p->n_free++;
    if (block < p->first_free) p->first_free = block;
}

void lm_kv_pool_keep(lm_kv_pool *p, int32_t seq, int32_t n) {
    int32_t *t = lm_kv_table(p, seq);
    /* every block held past n, those a batch reserved past len included
     * (batch.c gives a failed batch's blocks back through here) */
    for (int32_t b = lm_kv_blocks_for(p, n); b < p->max_blocks && t[b] >= 0; b++) {
        lm_kv_pool_drop(p, t[b]);
        t[b] = -1;
    }
    p->len[seq] = n;
}

void lm_kv_pool_share(lm_kv_pool *p, int32_t src, int32_t dst, int32_t n) {
    lm_kv_pool_keep(p, dst, 0);
    const int32_t *from = lm_kv_table(p, src);
    int32_t *to = lm_kv_table(p, dst);
    for (int32_t b = 0; b < lm_kv_blocks_for(p, n); b++) {
        to[b] = from[b];
        p->refs[from[b]]++;
    }
    p->len[dst] = n;
}
