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

/* ----------------------------------------------------- many columns */

/* Prefill: a run of 16 outputs is unpacked once into floats (the levels,
 * exact) in L1, then read by every column, PC at a time: a register tile of
 * 16 outputs x PC columns with two weight loads and PC broadcasts per input,
 * so the FMAs, not the unpacking, set the pace. x is read unscaled (no 16^-j
 * factors: the levels are unpacked whole). Per run the same formula as
 * tile_runs: y (+)= scale * (sum level * x - zero * sum x). */
enum { PC = 6, XN_OUT = 16, XN_MAX_K = 8 * 16, XN_MIN_COLS = 8 };

/* levels of outputs [o, o + 16), word rows [r0, r1) -> lv[k][16] floats */
static void unpack_run(const lm_gptq_matrix *w, int64_t o, int64_t r0, int64_t r1, float *lv) {
    const int64_t n_out = w->n_out;
    const __m256i m15 = _mm256_set1_epi32(15);
    for (int64_t r = r0; r < r1; r++) {
        const int32_t *qp = w->qweight + r * n_out + o;
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)qp), q1 = _mm256_loadu_si256((const __m256i *)(qp + 8));
        float *d = lv + (r - r0) * PER_WORD * XN_OUT;
        for (int j = 0; j < PER_WORD; j++) {
            const __m128i sh = _mm_cvtsi32_si128(4 * j);
            _mm256_store_ps(d + j * XN_OUT, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(q0, sh), m15)));
            _mm256_store_ps(d + j * XN_OUT + 8, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(q1, sh), m15)));
        }
    }
}

/* columns [c0, c0 + NC) of run u over the unpacked levels lv[K][16] */
LM_INLINE void xn_tile(const lm_gptq_job *k, const float *lv, int64_t K, int64_t i0, int64_t o, int32_t u, int64_t c0,
                       const int NC) {
    const lm_gptq_matrix *w = k->w;
    const int64_t n_in = w->n_in, n_out = w->n_out, ldy = k->ldy, g = k->runs[3 * u];
    const float *x = k->x + c0 * n_in + i0;
    float *y = k->y + c0 * ldy + (o - k->o0);
    __m256 acc[PC][2];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
    for (int64_t i = 0; i < K; i++) {
        const __m256 w0 = _mm256_load_ps(lv + i * XN_OUT), w1 = _mm256_load_ps(lv + i * XN_OUT + 8);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) {
            const __m256 xb = _mm256_broadcast_ss(x + c * n_in + i);
            acc[c][0] = _mm256_fmadd_ps(w0, xb, acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(w1, xb, acc[c][1]);
        }
    }
    const float *xsum = k->xsum + c0 * k->n_sums + u;
    const __m256 s0 = scales_f32(w->scales + g * n_out + o), s1 = scales_f32(w->scales + g * n_out + o + 8);
    const __m256 z0 = zeros_f32(w->qzeros[g * (n_out / PER_WORD) + o / PER_WORD]);
    const __m256 z1 = zeros_f32(w->qzeros[g * (n_out / PER_WORD) + o / PER_WORD + 1]);
    /* constant indices only, so the accumulators stay in registers */
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) {
        float *yc = y + c * ldy;
        const __m256 xsb = _mm256_broadcast_ss(xsum + c * k->n_sums);
        const __m256 a0 = _mm256_fnmadd_ps(z0, xsb, acc[c][0]), a1 = _mm256_fnmadd_ps(z1, xsb, acc[c][1]);
        const __m256 t0 = u == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(yc);
        const __m256 t1 = u == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(yc + 8);
        _mm256_storeu_ps(yc, _mm256_fmadd_ps(s0, a0, t0));
        _mm256_storeu_ps(yc + 8, _mm256_fmadd_ps(s1, a1, t1));
    }
}

typedef void (*xn_fn)(const lm_gptq_job *k, const float *lv, int64_t K, int64_t i0, int64_t o, int32_t u, int64_t c0);
#define LM_GPTQ_XN(NC)                                                                                      \
    static void xn_##NC(const lm_gptq_job *k, const float *lv, int64_t K, int64_t i0, int64_t o, int32_t u, \
                        int64_t c0) {                                                                       \
        xn_tile(k, lv, K, i0, o, u, c0, NC);                                                                \
    }
LM_GPTQ_XN(1)
LM_GPTQ_XN(2)
LM_GPTQ_XN(3)
LM_GPTQ_XN(4)
LM_GPTQ_XN(5)
LM_GPTQ_XN(6)
static const xn_fn k_xn[PC] = { xn_1, xn_2, xn_3, xn_4, xn_5, xn_6 };

/* outputs [ob, oe) (multiples of 16) over every column, runs layout */
static void rows_xn(const lm_gptq_job *job, int64_t ob, int64_t oe) {
    _Alignas(32) float lv[XN_MAX_K * XN_OUT];
    for (int64_t o = ob; o < oe; o += XN_OUT)
        for (int32_t u = 0; u < job->n_runs; u++) {
            const int64_t r0 = job->runs[3 * u + 1], r1 = job->runs[3 * u + 2];
            unpack_run(job->w, o, r0, r1, lv);
            for (int64_t c0 = 0; c0 < job->ncols; c0 += PC) {
                const int nc = job->ncols - c0 >= PC ? PC : (int)(job->ncols - c0);
                k_xn[nc - 1](job, lv, (r1 - r0) * PER_WORD, r0 * PER_WORD, o, u, c0);
            }
        }
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
    /* many columns in whole 16-output strips: the unpack-once kernel; a
     * ragged 8-output tail (and decode) below */
    if (runs && job->ncols >= XN_MIN_COLS) {
        const int64_t e16 = ob + (oe - ob) / XN_OUT * XN_OUT;
        rows_xn(job, ob, e16);
        if (e16 == oe) return;
        ob = e16;
    }
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
