/* kquant_search.h — ggml's scale searches behind the k-quants (ggml's imatrix
 * paths of the legacy formats use the same routines), ported operation for
 * operation.
 *
 * Each routine picks a scale (and for the asymmetric ones a min) for a small
 * group of weights and writes the group's integer levels to L. The quantizers
 * that call them are bit-exact with ggml only if every float operation here
 * happens in ggml's order and precision: float accumulators (never double),
 * the same strict comparisons when a candidate replaces the best one, the
 * nearest_int bit trick instead of lrintf, and division where ggml divides.
 */
#ifndef LAMINA_KQUANT_SEARCH_H
#define LAMINA_KQUANT_SEARCH_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* lm_nearest_int (ggml's nearest_int) is in quants/blocks.h. Outside |x| <= 2^22 it
 * returns the same garbage as ggml, which the quantizers' clamps then absorb
 * identically. */
#include "quants/blocks.h"

/* below this the group counts as all zero (ggml's GROUP_MAX_EPS) */
#define LM_GROUP_MAX_EPS 1e-15f

/* Symmetric levels in [-nmax, nmax-1], stored as L = l + nmax. The sign of the
 * scale follows the largest-magnitude value so that value lands on -nmax.
 * rmse_type 0: plain max scaling; 1..4: weighted least-squares refinement
 * over 18 scale candidates with weights qw (or x^2, 1, |x|, sqrt|x| when qw is
 * NULL); negative: one least-squares step, averaged with the max scale.
 * Mirrors ggml's make_qx_quants. */
float lm_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);

/* Like rmse_type 1 above, but refines each level in turn (up to 5 sweeps)
 * instead of trying scale candidates. Mirrors ggml's make_q3_quants. */
float lm_make_q3_quants(int n, int nmax, const float *x, int8_t *L, bool do_rmse);

/* Asymmetric levels in [0, nmax] with x ~ scale*L - the_min, the_min >= 0:
 * weighted least squares for scale and min over nstep+1 candidate inverse
 * scales (nmax + rmin + rdelta*is) / (max - min); use_mad weighs |error|
 * instead of error^2. Mirrors ggml's make_qkx2_quants. */
float lm_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);

/* make_qkx2 with weights x^2 when weights is NULL and a max <= min guard;
 * the imatrix quantizers use it. Mirrors ggml's make_qkx3_quants. */
float lm_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);

/* Non-negative values (the sub-block scales and mins themselves) on levels
 * [0, nmax]: best of 9 candidate scales by weighted MSE, then per-level
 * refinement. Mirrors ggml's make_qp_quants. */
float lm_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

#endif
