/* iq_neighbours.h — the lattices the i-quant quantizers search (quants/iq1_quantize.c,
 * iq2_quantize.c, iq3_quantize.c): each grid of quants/iq_grids.h as integer
 * levels, a map from a point of levels to its grid entry, and for every point
 * off the grid the list of its nearest grid entries (ggml's iq2xs_init_impl /
 * iq3xs_init_impl).
 *
 * A quantizer rounds each group of 8 (IQ3: 4) weights to levels l (0..2 for
 * IQ1/IQ2, 0..7 for IQ3) and packs them into a point u, l_i at bits 2i (IQ3:
 * 3i). Where u is a grid entry it is stored as is; otherwise the quantizer
 * picks among u's neighbours: the grid entries at the `nwant` smallest
 * squared distances from u, in the coordinates 2l+1, in order of distance
 * then entry (ggml's qsort of (d2, entry) pairs), the order deciding ties.
 *
 * Built once per lattice on first use, under pthread_once: quantizers run on
 * several threads at once and only read the tables afterwards.
 */
#ifndef LAMINA_IQ_NEIGHBOURS_H
#define LAMINA_IQ_NEIGHBOURS_H

#include <stdint.h>

enum {
    LM_IQ_LATTICE_IQ2_XXS, /* iq2xxs_grid, 256 entries, 2 nearest distances */
    LM_IQ_LATTICE_IQ2_XS,  /* iq2xs_grid, 512, 2 */
    LM_IQ_LATTICE_IQ2_S,   /* iq2s_grid, 1024, 1 */
    LM_IQ_LATTICE_IQ1,     /* iq1s_grid, 2048, 3 (IQ1_S and IQ1_M) */
    LM_IQ_LATTICE_IQ3_XXS, /* iq3xxs_grid, 256, 2 */
    LM_IQ_LATTICE_IQ3_S,   /* iq3s_grid, 512, 3 */
    LM_IQ_LATTICE_COUNT
};

typedef struct {
    int n_grid;       /* grid entries */
    int group;        /* levels per entry: 8 or 4 */
    int bits;         /* bits per level in a point: 2 or 3 */
    int8_t *pos;      /* [n_grid][group]: entry k's levels as 2l+1 */
    int32_t *map;     /* [1 << bits*group]: point -> entry, or -1 - offset of its list */
    uint16_t *lists;  /* at each offset: a count n, then n entries */
} lm_iq_lattice;

/* the lattice, built on first use; NULL if its tables could not be allocated */
const lm_iq_lattice *lm_iq_lattice_get(int which);

/* the levels l[0..group) as a point */
static inline int lm_iq_point(const lm_iq_lattice *g, const int8_t *l) {
    int u = 0;
    for (int i = 0; i < g->group; i++) u |= l[i] << (g->bits * i);
    return u;
}

/* u's neighbour list (count first), for a point off the grid */
static inline const uint16_t *lm_iq_neighbours(const lm_iq_lattice *g, int u) { return g->lists - g->map[u] - 1; }

/* Off-grid point u: the neighbour minimizing sum w_i (scale q_i - x_i)^2 over
 * q = 2l+1, the first of equals (ggml's iq2/iq3_find_best_neighbour); its
 * levels go to L. */
int lm_iq_best_neighbour(const lm_iq_lattice *g, int u, const float *x, const float *w, float scale, int8_t *L);

#endif /* LAMINA_IQ_NEIGHBOURS_H */
