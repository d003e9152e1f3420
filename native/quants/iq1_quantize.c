/* iq1_quantize.c — the IQ1_S and IQ1_M quantizers, byte-identical with
 * ggml_quantize_chunk (ggml's quantize_row_iq1_s_impl and
 * quantize_row_iq1_m_impl). IQ1_S needs an importance matrix (lm_quantize
 * refuses it without one, where ggml aborts); IQ1_M weights by x^2 without
 * one. Block layouts in quants/blocks.h.
 *
 * Each group of 8 weights is a grid entry of levels -1, 0, 1 and the whole
 * group is shifted by +-1/8 (IQ1_S: one shift per 32 weights, IQ1_M one per
 * 8). With three levels the best split of a sub-block is found exactly: sort
 * its weights, and every pair of cut points (i1, i2) gives the levels -1 below
 * i1, 0 up to i2, 1 above, whose weighted least-squares scale and score come
 * from prefix sums. Points off the grid then go to their nearest neighbour.
 */
#include <float.h>
#include <stdlib.h>

#include "quants/iq1.h"
#include "quants/iq_quantize.h"
#include "quants/kernels.h"

#define GROUP_MAX_EPS_IQ1_S 1e-12f
#define GROUP_MAX_EPS_IQ1_M 1e-7f

/* the three levels shifted up (x_p) or down (x_m) */
static const float X_P[3] = { -1 + LM_IQ1_DELTA, LM_IQ1_DELTA, 1 + LM_IQ1_DELTA };
static const float X_M[3] = { -1 - LM_IQ1_DELTA, -LM_IQ1_DELTA, 1 - LM_IQ1_DELTA };

/* ggml sorts (value, index) pairs with libc's qsort comparing values only;
 * the order of equal values is qsort's, so the same qsort keeps it */
typedef struct {
    float x;
    int idx;
} iq1_pair;

static int iq1_pair_cmp(const void *a, const void *b) {
    const float l = ((const iq1_pair *)a)->x, r = ((const iq1_pair *)b)->x;
    return l < r ? -1 : l > r ? 1 : 0;
}

static void iq1_sort(const float *xb, int n, iq1_pair *p) {
    for (int j = 0; j < n; j++) p[j] = (iq1_pair){ xb[j], j };
    qsort(p, (size_t)n, sizeof *p, iq1_pair_cmp);
}

/* levels 0, 1, 2 by the cut points over the sorted order; a negative scale
 * mirrors them */
static void iq1_levels(const iq1_pair *p, int n, int i1, int i2, int8_t *L) {
    for (int j = 0; j < n; j++) L[p[j].idx] = (int8_t)(j < i1 ? 0 : j < i2 ? 1 : 2);
}

/* Off-grid point u of group xb: the neighbour minimizing sum w (scale xx[l] -
 * x)^2, the first of equals (ggml's iq1_find_best_neighbour2; ggml aborts
 * where no distance is below FLT_MAX). */
static int iq1_best_neighbour(const lm_iq_lattice *g, int u, const float *xb, const float *w, float scale,
                              const float *xx, int8_t *L) {
    const uint16_t *list = lm_iq_neighbours(g, u);
    float best_d2 = FLT_MAX;
    int best = list[1];
    for (int j = 1; j <= list[0]; j++) {
        const int8_t *pg = g->pos + 8 * (size_t)list[j];
        float d2 = 0;
        for (int i = 0; i < 8; i++) {
            const float q = xx[(pg[i] - 1) / 2];
            const float diff = scale * q - xb[i];
            d2 += w[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            best = list[j];
        }
    }
    const int8_t *pg = g->pos + 8 * (size_t)best;
    for (int i = 0; i < 8; i++) L[i] = (int8_t)((pg[i] - 1) / 2);
    return best;
}

/* group k's entry, its nearest neighbour where off the grid; *on_grid cleared then */
static int iq1_entry(const lm_iq_lattice *g, const float *xb, const float *w, float scale, const float *xx, int8_t *L,
                     int k, bool *on_grid) {
    const int u = lm_iq_point(g, L + 8 * k);
    if (g->map[u] >= 0) return g->map[u];
    *on_grid = false;
    return iq1_best_neighbour(g, u, xb + 8 * k, w + 8 * k, scale, xx, L + 8 * k);
}

/* sum w q x and sum w q^2 of a group at entry e, q its shifted level xx[l]
 * times the odd integer m (1 while fitting a sub-block's scale) */
static void iq1_fit_group(const lm_iq_lattice *g, int e, const float *xx, int m, const float *xb, const float *w,
                          float *sumqx, float *sumq2) {
    const int8_t *pg = g->pos + 8 * (size_t)e;
    for (int j = 0; j < 8; j++) {
        const float q = xx[(pg[j] - 1) / 2] * m;
        *sumqx += w[j] * q * xb[j];
        *sumq2 += w[j] * q * q;
    }
}

static float iq1_absmax(const float *x, int n) {
    float m = fabsf(x[0]);
    for (int i = 1; i < n; i++) m = LM_IQ_MAX(m, fabsf(x[i]));
    return m;
}

/* --------------------------------------------------------------- IQ1_S */
/* A sub-block of 32: false where it stays zero; else its scale, the shift's
 * sign and its four entries. */
static bool iq1_s_sub_block(const lm_iq_lattice *g, const float *xb, const float *w, float *scale_out, int *shift,
                            int *entries) {
    enum { n = 32 };
    iq1_pair p[n];
    float sumx[n + 1], sumw[n + 1];
    int8_t L[n];
    const float max = iq1_absmax(xb, n);
    if (max < GROUP_MAX_EPS_IQ1_S) return false;
    iq1_sort(xb, n, p);
    sumx[0] = sumw[0] = 0;
    for (int j = 0; j < n; j++) {
        const int i = p[j].idx;
        sumx[j + 1] = sumx[j] + w[i] * xb[i];
        sumw[j + 1] = sumw[j] + w[i];
    }
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_shift = 0;
    for (int i1 = 0; i1 <= n; i1++) {
        for (int i2 = i1; i2 <= n; i2++) {
            for (int s = 1; s >= -1; s -= 2) { /* shifted up, then down */
                const float *v = s == 1 ? X_P : X_M;
                const float sumqx =
                    (sumx[i1] - sumx[0]) * v[0] + (sumx[i2] - sumx[i1]) * v[1] + (sumx[n] - sumx[i2]) * v[2];
                const float sumq2 = (sumw[i1] - sumw[0]) * v[0] * v[0] + (sumw[i2] - sumw[i1]) * v[1] * v[1] +
                                    (sumw[n] - sumw[i2]) * v[2] * v[2];
                if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    besti1 = i1, besti2 = i2, best_shift = s;
                }
            }
        }
    }
    if (besti1 < 0 || besti2 < 0 || best_shift == 0) return false;
    iq1_levels(p, n, besti1, besti2, L);
    if (scale < 0) {
        for (int j = 0; j < n; j++) L[j] = (int8_t)(2 - L[j]);
        scale = -scale;
        best_shift = -best_shift;
    }
    const float *xx = best_shift == 1 ? X_P : X_M;
    bool on_grid = true;
    for (int k = 0; k < 4; k++) entries[k] = iq1_entry(g, xb, w, scale, xx, L, k, &on_grid);
    if (!on_grid) {
        float sumqx = 0, sumq2 = 0;
        for (int k = 0; k < 4; k++) iq1_fit_group(g, entries[k], xx, 1, xb + 8 * k, w + 8 * k, &sumqx, &sumq2);
        if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
    }
    *scale_out = scale;
    *shift = best_shift;
    return true;
}

/* qh[ib]: the entries' top 3 bits, then the 3-bit scale against
 * d = max_scale/15 and the shift's sign (set: down) */
static void iq1_s_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq1_s *y) {
    float scales[QK_K / 32], w[32], max_scale = 0;
    int shifts[QK_K / 32];
    const float sigma2 = 2 * lm_iq_sumx2(x) / QK_K;
    memset(y, 0, sizeof *y);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        int e[4];
        lm_iq_weights(x + 32 * ib, qw + 32 * ib, sigma2, w, 32);
        scales[ib] = 0, shifts[ib] = 1;
        if (!iq1_s_sub_block(g, x + 32 * ib, w, &scales[ib], &shifts[ib], e)) continue;
        for (int k = 0; k < 4; k++) y->qs[4 * ib + k] = (uint8_t)(e[k] & 255);
        y->qh[ib] = (uint16_t)((e[0] >> 8) | (e[1] >> 8) << 3 | (e[2] >> 8) << 6 | (e[3] >> 8) << 9);
        max_scale = LM_IQ_MAX(max_scale, scales[ib]);
    }
    if (!max_scale) return;
    const float d = max_scale / 15;
    y->d = lm_f32_to_half(d * 1.125f);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        int l = LM_IQ_MAX(0, LM_IQ_MIN(7, lm_nearest_int(0.5f * (id * scales[ib] - 1))));
        if (shifts[ib] == -1) l |= 8;
        y->qh[ib] |= (uint16_t)(l << 12);
    }
}

/* --------------------------------------------------------------- IQ1_M */
/* the shifted levels of group k (0, 1) of a sub-block with sign pattern
 * best_k: 0 (+, +), 1 (+, -), 2 (-, +), 3 (-, -) */
static const float *iq1_m_levels(int best_k, int k) { return (k == 0 ? best_k < 2 : best_k % 2 == 0) ? X_P : X_M; }

/* A sub-block of 16: false where it stays zero; else its scale, sign pattern
 * and two entries. Every split is scored with the four sign patterns, each
 * sum taken over the weights in sorted order (ggml 0.20's order: newer ggml
 * keeps prefix sums per half, which rounds differently). */
static bool iq1_m_sub_block(const lm_iq_lattice *g, const float *xb, const float *w, float *scale_out, int *pattern,
                            int *entries) {
    enum { n = 16 };
    iq1_pair p[n];
    int8_t L[n];
    const float max = iq1_absmax(xb, n);
    if (max < GROUP_MAX_EPS_IQ1_M) return false;
    iq1_sort(xb, n, p);
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_k = -1;
    for (int i1 = 0; i1 <= n; i1++) {
        for (int i2 = i1; i2 <= n; i2++) {
            float sumqx[4] = { 0 }, sumq2[4] = { 0 };
            for (int j = 0; j < n; j++) {
                const int i = p[j].idx, level = j < i1 ? 0 : j < i2 ? 1 : 2;
                for (int k = 0; k < 4; k++) {
                    const float v = iq1_m_levels(k, i < n / 2 ? 0 : 1)[level];
                    sumqx[k] += w[i] * v * xb[i];
                    sumq2[k] += w[i] * v * v;
                }
            }
            for (int k = 0; k < 4; k++) {
                if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    besti1 = i1, besti2 = i2, best_k = k;
                }
            }
        }
    }
    if (besti1 < 0 || besti2 < 0 || best_k < 0) return false;
    iq1_levels(p, n, besti1, besti2, L);
    if (scale < 0) {
        for (int j = 0; j < n; j++) L[j] = (int8_t)(2 - L[j]);
        scale = -scale;
        best_k = 3 - best_k;
    }
    bool on_grid = true;
    for (int k = 0; k < 2; k++) entries[k] = iq1_entry(g, xb, w, scale, iq1_m_levels(best_k, k), L, k, &on_grid);
    if (!on_grid) {
        float sumqx = 0, sumq2 = 0;
        for (int k = 0; k < 2; k++)
            iq1_fit_group(g, entries[k], iq1_m_levels(best_k, k), 1, xb + 8 * k, w + 8 * k, &sumqx, &sumq2);
        if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
    }
    *scale_out = scale;
    *pattern = best_k;
    return true;
}

static void iq1_m_weights(const float *xb, const float *qw, float sigma2, float *w) {
    if (qw)
        lm_iq_weights(xb, qw, sigma2, w, 16);
    else
        for (int i = 0; i < 16; i++) w[i] = xb[i] * xb[i];
}

/* The 3-bit scales, 4 per 16-bit word of scales; the super-block scale is
 * then refitted to the weights as stored and its fp16 bits spread over the
 * words' top nibbles. */
static void iq1_m_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq1_m *y) {
    static const uint8_t SHIFT_BITS[4] = { 0x00, 0x80, 0x08, 0x88 };
    float scales[QK_K / 16], w[16], max_scale = 0;
    int patterns[QK_K / 16];
    const float sigma2 = 2 * lm_iq_sumx2(x) / QK_K;
    memset(y, 0, sizeof *y);
    for (int ib = 0; ib < QK_K / 16; ib++) {
        int e[2];
        iq1_m_weights(x + 16 * ib, qw ? qw + 16 * ib : NULL, sigma2, w);
        scales[ib] = 0, patterns[ib] = 0;
        if (!iq1_m_sub_block(g, x + 16 * ib, w, &scales[ib], &patterns[ib], e)) continue;
        y->qs[2 * ib] = (uint8_t)(e[0] & 255);
        y->qs[2 * ib + 1] = (uint8_t)(e[1] & 255);
        y->qh[ib] = (uint8_t)((e[0] >> 8) | (e[1] >> 8) << 4);
        max_scale = LM_IQ_MAX(max_scale, scales[ib]);
    }
    if (!max_scale) return;
    uint16_t sc[4] = { 0 };
    float d = max_scale / 15;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
        const int l = LM_IQ_MAX(0, LM_IQ_MIN(7, lm_nearest_int(0.5f * (id * scales[ib] - 1))));
        sc[ib / 4] |= (uint16_t)(l << (3 * (ib % 4)));
        y->qh[ib] |= SHIFT_BITS[patterns[ib]];
        const float *xb = x + 16 * ib;
        iq1_m_weights(xb, qw ? qw + 16 * ib : NULL, sigma2, w);
        for (int k = 0; k < 2; k++) {
            const int e = y->qs[2 * ib + k] + ((y->qh[ib] << (8 - 4 * k)) & 0x700);
            iq1_fit_group(g, e, iq1_m_levels(patterns[ib], k), 2 * l + 1, xb + 8 * k, w + 8 * k, &sumqx, &sumq2);
        }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    const uint16_t h = lm_f32_to_half(d * 1.1125f);
    sc[0] |= (uint16_t)((h & 0x000f) << 12);
    sc[1] |= (uint16_t)((h & 0x00f0) << 8);
    sc[2] |= (uint16_t)((h & 0x0f00) << 4);
    sc[3] |= (uint16_t)(h & 0xf000);
    for (int k = 0; k < 4; k++) {
        y->scales[2 * k] = (uint8_t)(sc[k] & 0xFF);
        y->scales[2 * k + 1] = (uint8_t)(sc[k] >> 8);
    }
}

LM_IQ_DEFINE_QUANTIZE(iq1_s, LM_IQ_LATTICE_IQ1)
LM_IQ_DEFINE_QUANTIZE(iq1_m, LM_IQ_LATTICE_IQ1)
