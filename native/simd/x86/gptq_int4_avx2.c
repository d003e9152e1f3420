/* gptq_int4_avx2.c — GPTQ INT4 linears with AVX2 + FMA + F16C.
 *
 * One 256-bit load of qweight row r at output o holds 8 outputs x 8 inputs:
 * lane k is output o+k, nibble j is input 8r+j. So the kernels vectorize
 * across outputs: nibble j of all lanes becomes 8 floats with one AND and one
 * convert (the 16^j it carries is cancelled by xs, see gptq_int4.h), and is
 * multiplied by the broadcast activation of input 8r+j. Activations stay f32.
 *
 * A tile is NV vectors of 8 outputs (NV = 2: one cache line of each qweight
 * row) times NC activation columns; each unpacked nibble feeds NC FMAs, so a
 * batch amortizes the unpacking. NS splits the accumulators by nibble so a
 * narrow tile still has ~8 independent FMA chains in flight. */
#include "gptq/gptq_int4.h"

#if defined(LM_BUILD_AVX2)
#include <immintrin.h>

#define LM_INLINE static inline __attribute__((always_inline))

enum { PER_WORD = 8, MAX_NV = 2, MAX_NC = 4 };

/* nibble j of each lane as a float, times 16^j for j < 7 */
LM_INLINE __m256 nibble_f32(__m256i q, int j) {
    if (j == 7) return _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 28));
    return _mm256_cvtepi32_ps(_mm256_and_si256(q, _mm256_set1_epi32(0xF << (4 * j))));
}

/* the 8 zero points of one qzeros word */
LM_INLINE __m256 zeros_f32(int32_t word) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i z = _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(z, _mm256_set1_epi32(15)));
}

LM_INLINE __m256 scales_f32(const uint16_t *s) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s)); }

/* enough accumulators for ~8 chains without spilling 16 registers; by
 * column count only, so an output sums in the same order whichever strip
 * width (thread split) it lands in */
#define NSPLIT(nc) ((nc) == 1 ? 4 : (nc) == 2 ? 2 : 1)

/* ---------------------------------------------------------------- runs */

/* outputs [o, o + 8 NV) x columns [c0, c0 + NC), runs [u0, u1):
 * y (+)= sum over the runs of scale * (sum level * x - zero * sum x) */
LM_INLINE void tile_runs(const lm_gptq_job *k, int64_t o, int64_t c0, int32_t u0, int32_t u1, const int NV,
                         const int NC, const int NS) {
    const lm_gptq_matrix *w = k->w;
    const int64_t n_in = w->n_in, n_out = w->n_out, ldy = k->ldy;
    const float *xs = k->xs + c0 * n_in;
    const float *xsum = k->xsum + c0 * k->n_sums;
    float *y = k->y + c0 * ldy + (o - k->o0);
    __m256 tot[MAX_NV][MAX_NC];
    for (int v = 0; v < NV; v++)
        for (int c = 0; c < NC; c++) tot[v][c] = u0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + c * ldy + 8 * v);

    for (int32_t u = u0; u < u1; u++) {
        const int64_t g = k->runs[3 * u], r0 = k->runs[3 * u + 1], r1 = k->runs[3 * u + 2];
        __m256 acc[MAX_NV][MAX_NC][4];
        for (int v = 0; v < NV; v++)
            for (int c = 0; c < NC; c++)
                for (int s = 0; s < NS; s++) acc[v][c][s] = _mm256_setzero_ps();
        const int32_t *qp = w->qweight + r0 * n_out + o;
        for (int64_t r = r0; r < r1; r++, qp += n_out) {
            __m256i q[MAX_NV];
            for (int v = 0; v < NV; v++) q[v] = _mm256_loadu_si256((const __m256i *)(qp + 8 * v));
            const float *xr = xs + r * PER_WORD;
#pragma GCC unroll 8
            for (int j = 0; j < PER_WORD; j++) {
                __m256 f[MAX_NV];
                for (int v = 0; v < NV; v++) f[v] = nibble_f32(q[v], j);
                for (int c = 0; c < NC; c++) {
                    const __m256 xb = _mm256_broadcast_ss(xr + c * n_in + j);
                    for (int v = 0; v < NV; v++) acc[v][c][j % NS] = _mm256_fmadd_ps(f[v], xb, acc[v][c][j % NS]);
                }
            }
        }
        for (int v = 0; v < NV; v++) {
            const __m256 s = scales_f32(w->scales + g * n_out + o + 8 * v);
            const __m256 z = zeros_f32(w->qzeros[g * (n_out / PER_WORD) + o / PER_WORD + v]);
            for (int c = 0; c < NC; c++) {
                __m256 a = acc[v][c][0];
                for (int t = 1; t < NS; t++) a = _mm256_add_ps(a, acc[v][c][t]);
                a = _mm256_fnmadd_ps(z, _mm256_broadcast_ss(xsum + c * k->n_sums + u), a);
                tot[v][c] = _mm256_fmadd_ps(s, a, tot[v][c]);
            }
        }
    }
    for (int c = 0; c < NC; c++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(y + c * ldy + 8 * v, tot[v][c]);
}

/* -------------------------------------------------------------- general */

/* act-order: the group changes from input to input, so each unpacked nibble
 * is scaled by its own group's scales before the FMAs; the zero points are
 * summed per group at the end */
LM_INLINE void tile_general(const lm_gptq_job *k, int64_t o, int64_t c0, int64_t r0, int64_t r1, const int NV,
                            const int NC, const int NS) {
    const lm_gptq_matrix *w = k->w;
    const int64_t n_in = w->n_in, n_out = w->n_out, ldy = k->ldy;
    const float *xs = k->xs + c0 * n_in;
    const float *xsum = k->xsum + c0 * k->n_sums;
    const int32_t *g_idx = k->g_idx;
    const uint16_t *sc = w->scales + o;
    float *y = k->y + c0 * ldy + (o - k->o0);
    __m256 acc[MAX_NV][MAX_NC][4];
    for (int v = 0; v < NV; v++)
        for (int c = 0; c < NC; c++) {
            acc[v][c][0] = r0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + c * ldy + 8 * v);
            for (int s = 1; s < NS; s++) acc[v][c][s] = _mm256_setzero_ps();
        }

    const int32_t *qp = w->qweight + r0 * n_out + o;
    for (int64_t r = r0; r < r1; r++, qp += n_out) {
        __m256i q[MAX_NV];
        for (int v = 0; v < NV; v++) q[v] = _mm256_loadu_si256((const __m256i *)(qp + 8 * v));
        const float *xr = xs + r * PER_WORD;
        const int32_t *gr = g_idx + r * PER_WORD;
#pragma GCC unroll 8
        for (int j = 0; j < PER_WORD; j++) {
            const uint16_t *srow = sc + (int64_t)gr[j] * n_out;
            __m256 f[MAX_NV];
            for (int v = 0; v < NV; v++) f[v] = _mm256_mul_ps(nibble_f32(q[v], j), scales_f32(srow + 8 * v));
            for (int c = 0; c < NC; c++) {
                const __m256 xb = _mm256_broadcast_ss(xr + c * n_in + j);
                for (int v = 0; v < NV; v++) acc[v][c][j % NS] = _mm256_fmadd_ps(f[v], xb, acc[v][c][j % NS]);
            }
        }
    }
    for (int v = 0; v < NV; v++)
        for (int c = 0; c < NC; c++)
            for (int t = 1; t < NS; t++) acc[v][c][0] = _mm256_add_ps(acc[v][c][0], acc[v][c][t]);
    for (int64_t g = 0; r1 == n_in / PER_WORD && g < w->n_groups; g++) {
        for (int v = 0; v < NV; v++) {
            const __m256 zs = _mm256_mul_ps(zeros_f32(w->qzeros[g * (n_out / PER_WORD) + o / PER_WORD + v]),
                                            scales_f32(sc + g * n_out + 8 * v));
            for (int c = 0; c < NC; c++)
                acc[v][c][0] = _mm256_fnmadd_ps(zs, _mm256_broadcast_ss(xsum + c * k->n_sums + g), acc[v][c][0]);
        }
    }
    for (int c = 0; c < NC; c++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(y + c * ldy + 8 * v, acc[v][c][0]);
}

/* ------------------------------------------------------------- dispatch */

/* a tile over part of the inputs: runs [a, b) or word rows [a, b) */
typedef void (*tile_fn)(const lm_gptq_job *k, int64_t o, int64_t c0, int64_t a, int64_t b);

#define LM_GPTQ_TILES(NV, NC)                                                                            \
    static void runs_##NV##_##NC(const lm_gptq_job *k, int64_t o, int64_t c0, int64_t a, int64_t b) {    \
        tile_runs(k, o, c0, (int32_t)a, (int32_t)b, NV, NC, NSPLIT(NC));                                 \
    }                                                                                                    \
    static void general_##NV##_##NC(const lm_gptq_job *k, int64_t o, int64_t c0, int64_t a, int64_t b) { \
        tile_general(k, o, c0, a, b, NV, NC, NSPLIT(NC));                                                \
    }

LM_GPTQ_TILES(1, 1)
LM_GPTQ_TILES(1, 2)
LM_GPTQ_TILES(1, 3)
LM_GPTQ_TILES(1, 4)
LM_GPTQ_TILES(2, 1)
LM_GPTQ_TILES(2, 2)
LM_GPTQ_TILES(2, 3)
LM_GPTQ_TILES(2, 4)

static const tile_fn k_runs[MAX_NV][MAX_NC] = {
    { runs_1_1, runs_1_2, runs_1_3, runs_1_4 },
    { runs_2_1, runs_2_2, runs_2_3, runs_2_4 },
};
static const tile_fn k_general[MAX_NV][MAX_NC] = {
    { general_1_1, general_1_2, general_1_3, general_1_4 },
    { general_2_1, general_2_2, general_2_3, general_2_4 },
};

enum { PANEL_ROWS = 16, GENERAL_BLOCK_OUT = 256 };

/* The inputs are swept in panels of about PANEL_ROWS word rows, each panel
 * over all of this thread's outputs: a panel reads its rows side by side,
 * each sequentially. (Walking down a 16-output column of the matrix instead
 * takes a new page, and a TLB miss, every 64 bytes on wide layers: 4x slower.)
 * Partial sums wait in y between panels. The act-order path sweeps blocks of
 * GENERAL_BLOCK_OUT outputs so the block's scales, read for every input,
 * stay in L1 from panel to panel. */
void lm_gptq_rows_avx2(const lm_gptq_job *job, int64_t ob, int64_t oe) {
    const int runs = job->n_runs > 0;
    const tile_fn(*table)[MAX_NC] = runs ? k_runs : k_general;
    const int64_t n_units = runs ? job->n_runs : job->w->n_in / PER_WORD;
    const int64_t block = runs ? oe - ob : GENERAL_BLOCK_OUT;
    for (int64_t bb = ob; bb < oe; bb += block) {
        const int64_t be = oe - bb < block ? oe : bb + block;
        for (int64_t a = 0, b; a < n_units; a = b) {
            if (runs) {
                int64_t rows = 0;
                for (b = a; b < n_units && rows < PANEL_ROWS; b++) rows += job->runs[3 * b + 2] - job->runs[3 * b + 1];
            } else {
                b = a + PANEL_ROWS < n_units ? a + PANEL_ROWS : n_units;
            }
            for (int64_t o = bb; o < be; o += 8 * MAX_NV) {
                const int nv = be - o >= 8 * MAX_NV ? MAX_NV : 1;
                for (int64_t c0 = 0; c0 < job->ncols; c0 += MAX_NC) {
                    const int nc = job->ncols - c0 >= MAX_NC ? MAX_NC : (int)(job->ncols - c0);
                    table[nv - 1][nc - 1](job, o, c0, a, b);
                }
            }
        }
    }
}

#endif /* LM_BUILD_AVX2 */
