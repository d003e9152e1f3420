/* iq_quantize.h — what the IQ2 and IQ3 quantizers (quants/iq2_quantize.c,
 * iq3_quantize.c) share: folding signs out of a sub-block, the search for a
 * sub-block's scale over the lattice, and the 4-bit sub-block scales.
 *
 * ggml's quantize_row_iq2_xxs_impl .. quantize_row_iq3_s_impl all do, per
 * sub-block of 16 or 32 weights: take |x| (the signs stored apart), try a
 * range of scales, round |x|/scale to levels 2l+1 per group, replace a group
 * that is off the grid by its best neighbour, and keep the scale whose levels
 * maximize (sum w q x)^2 / sum w q^2; then round once more against the best
 * scale and refit it. They differ in the constants and in which groups that
 * last pass redoes, which iq_search holds.
 *
 * Bit-exact with ggml only in ggml's order and precision of every float
 * operation (built with -ffp-contract=off).
 */
#ifndef LAMINA_IQ_QUANTIZE_H
#define LAMINA_IQ_QUANTIZE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "quants/iq_neighbours.h"
#include "quants/kquant_search.h"

#define LM_IQ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LM_IQ_MIN(a, b) ((a) < (b) ? (a) : (b))

/* sum of squares of a super-block: ggml's sigma2 is it over QK_K (IQ2_XXS,
 * IQ2_XS) or twice that (the others) */
static inline float lm_iq_sumx2(const float *x) {
    float s = 0;
    for (int i = 0; i < QK_K; i++) s += x[i] * x[i];
    return s;
}

/* importance of each of n weights: imatrix * sqrt(sigma2 + x^2) */
static inline void lm_iq_weights(const float *x, const float *qw, float sigma2, float *w, int n) {
    for (int i = 0; i < n; i++) w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
}

/* 8 weights as magnitudes xval and a sign byte. With even set, an odd number
 * of negatives flips the weight of least w*x^2 back, so the byte has even
 * parity and its 7 low bits are stored (ggml's ksigns); its value then enters
 * with the wrong sign. */
static inline uint8_t lm_iq_fold_signs(const float *x, const float *w, float *xval, bool even) {
    int nflip = 0;
    uint8_t s = 0;
    for (int i = 0; i < 8; i++) {
        if (x[i] >= 0) {
            xval[i] = x[i];
        } else {
            xval[i] = -x[i];
            nflip++;
            s |= (uint8_t)(1 << i);
        }
    }
    if (even && nflip % 2) {
        int imin = 0;
        float min = w[0] * x[0] * x[0];
        for (int i = 1; i < 8; i++) {
            const float ax = w[i] * x[i] * x[i];
            if (ax < min) {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= (uint8_t)(1 << imin);
    }
    return even ? s & 127 : s;
}

static inline float lm_iq_max(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = LM_IQ_MAX(m, x[i]);
    return m;
}

/* one group's levels for inverse scale id: nearest (id x - 1) / 2 in 0..nmax-1 */
static inline int lm_iq_round_group(const lm_iq_lattice *g, float id, const float *xval, int nmax, int8_t *L) {
    for (int i = 0; i < g->group; i++) {
        const int l = lm_nearest_int(0.5f * (id * xval[i] - 1));
        L[i] = (int8_t)LM_IQ_MAX(0, LM_IQ_MIN(nmax - 1, l));
    }
    return lm_iq_point(g, L);
}

/* sum w x q and sum w q^2 over q = 2L+1 */
static inline void lm_iq_fit(int n, const float *w, const float *xval, const int8_t *L, float *sumqx, float *sumq2) {
    float qx = 0, q2 = 0;
    for (int i = 0; i < n; i++) {
        const float q = 2 * L[i] + 1;
        qx += w[i] * xval[i] * q;
        q2 += w[i] * q * q;
    }
    *sumqx = qx, *sumq2 = q2;
}

typedef struct {
    const lm_iq_lattice *lat;
    int n;            /* weights per sub-block */
    int nmax;         /* levels 0..nmax-1 (ggml's kMaxQ) */
    int ntry;         /* scales (2 nmax - 1 + is * step) / max for is in -ntry..ntry */
    float step;
    bool start_on_grid;  /* a group counts as on the grid until a scale is taken (not IQ3_S) */
    bool always_refine;  /* the last pass runs even when every group was on the grid (IQ2_XXS) */
    bool refine_all;     /* the last pass redoes every group, not only those off the grid */
} lm_iq_search;

/* The scale of one sub-block of magnitudes xval (max > 0 their largest, or
 * IQ2_XXS's effective max), starting from `scale`; its levels go to L (every
 * group a grid entry). w weights the fit, waux = sqrt(w) the neighbour choice. */
static inline float lm_iq_search_scale(const lm_iq_search *s, const float *xval, const float *w, const float *waux,
                                       float max, float scale, int8_t *L) {
    const lm_iq_lattice *g = s->lat;
    const int ng = s->n / g->group;
    int8_t Laux[32];
    bool on_grid[8], on_grid_aux[8];
    float best = 0;
    for (int k = 0; k < ng; k++) on_grid[k] = s->start_on_grid;
    for (int is = -s->ntry; is <= s->ntry; is++) {
        const float id = (2 * s->nmax - 1 + is * s->step) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < ng; k++) {
            const int off = g->group * k;
            const int u = lm_iq_round_group(g, id, xval + off, s->nmax, Laux + off);
            on_grid_aux[k] = g->map[u] >= 0;
            if (!on_grid_aux[k]) lm_iq_best_neighbour(g, u, xval + off, waux + off, this_scale, Laux + off);
        }
        float sumqx, sumq2;
        lm_iq_fit(s->n, w, xval, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(L, Laux, (size_t)s->n);
            memcpy(on_grid, on_grid_aux, sizeof on_grid);
        }
    }
    int n_off = 0;
    for (int k = 0; k < ng; k++) n_off += !on_grid[k];
    if ((n_off > 0 || s->always_refine) && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < ng; k++) {
            if (on_grid[k] && !s->refine_all) continue;
            const int off = g->group * k;
            const int u = lm_iq_round_group(g, id, xval + off, s->nmax, L + off);
            if (g->map[u] < 0) lm_iq_best_neighbour(g, u, xval + off, waux + off, scale, L + off);
        }
        float sumqx, sumq2;
        lm_iq_fit(s->n, w, xval, L, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
    }
    return scale;
}

/* group k's grid entry */
static inline int lm_iq_entry(const lm_iq_lattice *g, const int8_t *L, int k) {
    return g->map[lm_iq_point(g, L + g->group * k)];
}

/* a sub-block scale against the super-block's d = max_scale/31 (its inverse
 * id): the 4-bit s with d (2s+1) nearest */
static inline int lm_iq_scale4(float id, float scale) {
    const int l = lm_nearest_int(0.5f * (id * scale - 1));
    return LM_IQ_MAX(0, LM_IQ_MIN(15, l));
}

/* lm_quantize_<t> over <t>_block(g, x, qw, y): one super-block at a time,
 * block i of every row weighted by imatrix[256i ..] (ggml_quantize_chunk);
 * 0 where the lattice could not be built */
#define LM_IQ_DEFINE_QUANTIZE(t, lattice)                                                                         \
    size_t lm_quantize_##t(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) { \
        const lm_iq_lattice *g = lm_iq_lattice_get(lattice);                                                      \
        if (!g) return 0;                                                                                         \
        block_##t *y = (block_##t *)dst;                                                                          \
        const int64_t nb = n_per_row / QK_K;                                                                      \
        for (int64_t r = 0; r < nrows; r++, src += n_per_row)                                                     \
            for (int64_t i = 0; i < nb; i++, y++)                                                                 \
                t##_block(g, src + QK_K * i, imatrix ? imatrix + QK_K * i : NULL, y);                             \
        return (size_t)(nrows * nb) * sizeof(block_##t);                                                          \
    }

#endif /* LAMINA_IQ_QUANTIZE_H */
