/* kv_pool.h — the bookkeeping of a KV cache shared by several sequences: a
 * pool of fixed-size blocks of cells and each sequence's table of blocks.
 *
 * Block i of a sequence's table holds its positions [i * bs, (i + 1) * bs),
 * so a position's cell is table[pos / bs] * bs + pos % bs. Blocks are taken
 * lowest first: one sequence alone gets blocks 0, 1, 2, ... and its cells
 * are its positions, in order. A block may be held by several sequences
 * (lm_context_seq_cp shares a prefix); refs counts them, and whoever writes
 * into a block held by others copies it first (kv_seq.c). This file knows no
 * cache data: the copies, the shift and the checks of the entry points live
 * in kv_seq.c and batch.c. */
#ifndef LAMINA_KV_POOL_H
#define LAMINA_KV_POOL_H

#include <stdint.h>

typedef struct {
    int32_t block_shift;          /* positions per block: bs = 1 << block_shift, at most 32 */
    int32_t n_blocks;             /* n_ctx / bs */
    int32_t n_seq_max;
    int32_t n_ctx_seq;            /* most positions of one sequence, a multiple of bs */
    int32_t max_blocks;           /* per sequence: n_ctx_seq / bs */
    int32_t n_free;
    int32_t first_free;           /* no free block below this one */
    int32_t *refs;                /* [n_blocks] sequences holding each block; 0: free */
    int32_t *len;                 /* [n_seq_max] positions of each sequence */
    int32_t *table;               /* [n_seq_max][max_blocks] the blocks it holds, then -1 */
} lm_kv_pool;

/* The block size is the largest power of two <= 32 dividing both n_ctx and
 * n_ctx_seq: the pool is exactly n_ctx cells, and any n_ctx / n_ctx_seq
 * sequences of full length fit. 0, or LM_ERR_NOMEM. */
int lm_kv_pool_init(lm_kv_pool *p, int32_t n_ctx, int32_t n_ctx_seq, int32_t n_seq_max);
void lm_kv_pool_free(lm_kv_pool *p);

static inline int32_t lm_kv_block_size(const lm_kv_pool *p) { return 1 << p->block_shift; }

/* blocks that hold n positions */
static inline int32_t lm_kv_blocks_for(const lm_kv_pool *p, int32_t n) {
    return (n + lm_kv_block_size(p) - 1) >> p->block_shift;
}

static inline int32_t *lm_kv_table(const lm_kv_pool *p, int32_t seq) { return p->table + (int64_t)seq * p->max_blocks; }

/* the cell of a position whose block the sequence holds */
static inline int32_t lm_kv_cell(const lm_kv_pool *p, int32_t seq, int32_t pos) {
    return (lm_kv_table(p, seq)[pos >> p->block_shift] << p->block_shift) + (pos & (lm_kv_block_size(p) - 1));
}

/* From position p of seq, how many positions up to `last` lie in consecutive
 * cells starting at *cell: a run of blocks that follow each other in the pool
 * (one sequence alone: all of them). Attention reads a run as one stretch of
 * rows. */
static inline int32_t lm_kv_run(const lm_kv_pool *p, int32_t seq, int32_t pos, int32_t last, int32_t *cell) {
    const int32_t *t = lm_kv_table(p, seq), shift = p->block_shift;
    int32_t b = pos >> shift;
    *cell = (t[b] << shift) + (pos & (lm_kv_block_size(p) - 1));
    while (((b + 1) << shift) <= last && t[b + 1] == t[b] + 1) b++;
    const int32_t end = (b + 1) << shift;   /* first position past the run */
    return (end <= last ? end : last + 1) - pos;
}

/* the partly filled last block of seq, the one its next append writes into
 * (copied first when others hold it too); -1 when its blocks are full */
static inline int32_t lm_kv_tail_block(const lm_kv_pool *p, int32_t seq) {
    const int32_t n = p->len[seq];
    return n & (lm_kv_block_size(p) - 1) ? lm_kv_table(p, seq)[n >> p->block_shift] : -1;
}

/* the lowest free block, now held once; -1 when none is free */
int32_t lm_kv_pool_take(lm_kv_pool *p);
/* one holder fewer; the block is free again at none */
void lm_kv_pool_drop(lm_kv_pool *p, int32_t block);
/* seq keeps positions [0, n) (n <= the positions its blocks cover): the
 * blocks past them go back, and its length becomes n */
void lm_kv_pool_keep(lm_kv_pool *p, int32_t seq, int32_t n);
/* dst drops its blocks and holds the blocks of src's first n positions */
void lm_kv_pool_share(lm_kv_pool *p, int32_t src, int32_t dst, int32_t n);

#endif
