/* iq_neighbours.c — building the i-quant lattices of iq_neighbours.h from the
 * grids of iq_grids.h (the same points as ggml's kgrid_* tables, there as
 * the byte values a dequantizer reads). */
#include "quants/iq_neighbours.h"

#include <float.h>
#include <pthread.h>
#include <stdlib.h>

#include "quants/iq_lattice.h"

typedef struct {
    int n_grid, group, bits, nwant;
} lattice_shape;

static const lattice_shape SHAPES[LM_IQ_LATTICE_COUNT] = {
    [LM_IQ_LATTICE_IQ2_XXS] = { 256, 8, 2, 2 }, [LM_IQ_LATTICE_IQ2_XS] = { 512, 8, 2, 2 },
    [LM_IQ_LATTICE_IQ2_S] = { 1024, 8, 2, 1 },  [LM_IQ_LATTICE_IQ1] = { 2048, 8, 2, 3 },
    [LM_IQ_LATTICE_IQ3_XXS] = { 256, 4, 3, 2 }, [LM_IQ_LATTICE_IQ3_S] = { 512, 4, 3, 3 },
};

/* an IQ2 grid byte (8, 25, 43) as a level */
static int level2(int v) { return v == 8 ? 0 : v == 25 ? 1 : 2; }

/* value j of grid entry k as a level 0..2 (IQ1, IQ2) or 0..7 (IQ3) */
static int grid_level(int which, int k, int j) {
    switch (which) {
    case LM_IQ_LATTICE_IQ2_XXS: return level2(lm_iq_grid8(lm_iq2xxs_grid[k], j));
    case LM_IQ_LATTICE_IQ2_XS: return level2(lm_iq_grid8(lm_iq2xs_grid[k], j));
    case LM_IQ_LATTICE_IQ2_S: return level2(lm_iq_grid8(lm_iq2s_grid[k], j));
    case LM_IQ_LATTICE_IQ1: return (int8_t)lm_iq_grid8(lm_iq1s_grid[k], j) + 1; /* -1, 0, 1 */
    case LM_IQ_LATTICE_IQ3_XXS: {
        const int v = lm_iq_grid4(lm_iq3xxs_grid[k], j); /* 4, 12, .., 52, 62 */
        return v == 62 ? 7 : (v - 4) / 8;
    }
    default: return (lm_iq_grid4(lm_iq3s_grid[k], j) - 1) / 2; /* 1, 3, .., 15 */
    }
}

/* levels of point u, or 0 where a level is past the grids' range (IQ1/IQ2
 * points with a level 3: the quantizers never form them) */
static int point_levels(const lattice_shape *s, int u, int8_t *pos) {
    const int max_level = s->bits == 2 ? 2 : 7;
    for (int i = 0; i < s->group; i++) {
        const int l = (u >> (s->bits * i)) & ((1 << s->bits) - 1);
        if (l > max_level) return 0;
        pos[i] = (int8_t)(2 * l + 1);
    }
    return 1;
}

static int dist2(const int8_t *a, const int8_t *b, int n) {
    int d = 0;
    for (int i = 0; i < n; i++) d += (a[i] - b[i]) * (a[i] - b[i]);
    return d;
}

/* append u's list at *used: the entries at the nwant smallest distances, by
 * distance then entry. d2 is scratch [n_grid]. 0 if out of memory. */
static int add_list(lm_iq_lattice *g, const lattice_shape *s, const int8_t *pos, int *d2, size_t *used, size_t *cap) {
    for (int k = 0; k < s->n_grid; k++) d2[k] = dist2(g->pos + (size_t)k * s->group, pos, s->group);
    const size_t start = (*used)++;
    int n = 0, level = -1;
    for (int have = 0; have < s->nwant; have++) {
        int next = INT32_MAX;   /* the next larger distance */
        for (int k = 0; k < s->n_grid; k++)
            if (d2[k] > level && d2[k] < next) next = d2[k];
        if (next == INT32_MAX) break;
        level = next;
        for (int k = 0; k < s->n_grid; k++) {
            if (d2[k] != level) continue;
            if (*used == *cap) {
                uint16_t *grown = realloc(g->lists, 2 * *cap * sizeof *grown);
                if (!grown) return 0;
                g->lists = grown;
                *cap *= 2;
            }
            g->lists[(*used)++] = (uint16_t)k;
            n++;
        }
    }
    g->lists[start] = (uint16_t)n;
    return 1;
}

static int build(lm_iq_lattice *g, int which) {
    const lattice_shape *s = &SHAPES[which];
    const int map_size = 1 << (s->bits * s->group);
    g->n_grid = s->n_grid;
    g->group = s->group;
    g->bits = s->bits;
    g->pos = malloc((size_t)s->n_grid * s->group);
    g->map = malloc((size_t)map_size * sizeof *g->map);
    size_t cap = 1 << 16, used = 0;
    g->lists = malloc(cap * sizeof *g->lists);
    int *d2 = malloc((size_t)s->n_grid * sizeof *d2);
    int ok = g->pos && g->map && g->lists && d2;
    if (ok) {
        for (int u = 0; u < map_size; u++) g->map[u] = -1;
        for (int k = 0; k < s->n_grid; k++) {
            int8_t *p = g->pos + (size_t)k * s->group, l[8];
            for (int j = 0; j < s->group; j++) {
                l[j] = (int8_t)grid_level(which, k, j);
                p[j] = (int8_t)(2 * l[j] + 1);
            }
            g->map[lm_iq_point(g, l)] = k;
        }
        int8_t pos[8];
        for (int u = 0; ok && u < map_size; u++) {
            if (g->map[u] >= 0 || !point_levels(s, u, pos)) continue;
            g->map[u] = -1 - (int32_t)used;
            ok = add_list(g, s, pos, d2, &used, &cap);
        }
    }
    free(d2);
    if (!ok) {
        free(g->pos), free(g->map), free(g->lists);
        g->pos = NULL, g->map = NULL, g->lists = NULL;
    }
    return ok;
}

static lm_iq_lattice lattices[LM_IQ_LATTICE_COUNT];
static int built[LM_IQ_LATTICE_COUNT];
static pthread_once_t once[LM_IQ_LATTICE_COUNT] = { PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT,
                                                    PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT };

#define LM_IQ_BUILD_ONCE(which) \
    static void build_##which(void) { built[which] = build(&lattices[which], which); }
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ2_XXS)
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ2_XS)
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ2_S)
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ1)
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ3_XXS)
LM_IQ_BUILD_ONCE(LM_IQ_LATTICE_IQ3_S)

static void (*const builders[LM_IQ_LATTICE_COUNT])(void) = {
    build_LM_IQ_LATTICE_IQ2_XXS, build_LM_IQ_LATTICE_IQ2_XS,  build_LM_IQ_LATTICE_IQ2_S,
    build_LM_IQ_LATTICE_IQ1,     build_LM_IQ_LATTICE_IQ3_XXS, build_LM_IQ_LATTICE_IQ3_S,
};

const lm_iq_lattice *lm_iq_lattice_get(int which) {
    if (which < 0 || which >= LM_IQ_LATTICE_COUNT) return NULL;
    pthread_once(&once[which], builders[which]);
    return built[which] ? &lattices[which] : NULL;
}

int lm_iq_best_neighbour(const lm_iq_lattice *g, int u, const float *x, const float *w, float scale, int8_t *L) {
    const uint16_t *list = lm_iq_neighbours(g, u);
    float best_d2 = FLT_MAX;
    int best = list[1]; /* ggml aborts where no distance is below FLT_MAX (NaN weights) */
    for (int j = 1; j <= list[0]; j++) {
        const int8_t *pg = g->pos + (size_t)list[j] * g->group;
        float d2 = 0;
        for (int i = 0; i < g->group; i++) {
            const float q = pg[i];
            const float diff = scale * q - x[i];
            d2 += w[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            best = list[j];
        }
    }
    const int8_t *pg = g->pos + (size_t)best * g->group;
    for (int i = 0; i < g->group; i++) L[i] = (int8_t)((pg[i] - 1) / 2);
    return best;
}
