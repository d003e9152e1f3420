/* iq3_quantize.c — the IQ3_XXS and IQ3_S quantizers, byte-identical with
 * ggml_quantize_chunk (ggml's quantize_row_iq3_xxs_impl and
 * quantize_row_iq3_s_impl), with or without an importance matrix (weights
 * x^2 without one). Block layouts in quants/blocks.h, the lattice search in
 * quants/iq_quantize.h. */
#include "quants/iq_quantize.h"
#include "quants/kernels.h"

#define IQ3_NMAX 8
#define GROUP_MAX_EPS_IQ3_XXS 1e-8f

/* a sub-block of 32 weights: importances, their square roots, magnitudes and
 * sign bytes (4 of 8 weights each); its largest magnitude */
static float iq3_prepare(const float *xb, const float *qw, float sigma2, bool even_signs, float *w, float *waux,
                         float *xval, uint8_t *signs) {
    if (qw)
        lm_iq_weights(xb, qw, sigma2, w, 32);
    else
        for (int i = 0; i < 32; i++) w[i] = xb[i] * xb[i];
    for (int i = 0; i < 32; i++) waux[i] = sqrtf(w[i]);
    for (int k = 0; k < 4; k++) signs[k] = lm_iq_fold_signs(xb + 8 * k, w + 8 * k, xval + 8 * k, even_signs);
    return lm_iq_max(xval, 32);
}

/* ------------------------------------------------------------- IQ3_XXS */
/* qs: 8 grid bytes per sub-block, then per sub-block a word of four 7-bit
 * sign indices under the 4-bit scale */
static void iq3_xxs_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq3_xxs *y) {
    const lm_iq_search search = { g, 32, IQ3_NMAX, 15, 0.2f, true, false, false };
    uint32_t words[QK_K / 32] = { 0 };
    float scales[QK_K / 32], w[32], waux[32], xval[32], max_scale = 0;
    int8_t L[32];
    uint8_t signs[4];
    const float sigma2 = 2 * lm_iq_sumx2(x) / QK_K;
    memset(y, 0, sizeof *y);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const float max = iq3_prepare(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, true, w, waux, xval, signs);
        scales[ib] = 0;
        if (max < GROUP_MAX_EPS_IQ3_XXS) continue;
        memset(L, 0, sizeof L);
        float scale = lm_iq_search_scale(&search, xval, w, waux, max, max / (2 * IQ3_NMAX - 1), L);
        if (scale < 0) { /* only with negative importances */
            scale = -scale;
            for (int k = 0; k < 4; k++) signs[k] = (~signs[k]) & 127;
        }
        for (int k = 0; k < 8; k++) y->qs[8 * ib + k] = (uint8_t)lm_iq_entry(g, L, k);
        words[ib] = signs[0] | signs[1] << 7 | signs[2] << 14 | (uint32_t)signs[3] << 21;
        scales[ib] = scale;
        max_scale = LM_IQ_MAX(max_scale, scale);
    }
    if (!max_scale) {
        memset(y->qs, 0, sizeof y->qs);
        return;
    }
    const float d = max_scale / 31;
    y->d = lm_f32_to_half(d * 1.0125f);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint32_t word = words[ib] | (uint32_t)lm_iq_scale4(id, scales[ib]) << 28;
        for (int b = 0; b < 4; b++) y->qs[QK_K / 4 + 4 * ib + b] = (uint8_t)(word >> (8 * b));
    }
}

/* --------------------------------------------------------------- IQ3_S */
/* Eight sub-blocks of 32: 9-bit entries (low bytes in qs, the ninth bits in
 * qh[ib]), a sign byte per 8 weights, 4-bit scales in pairs.
 *
 * ggml advances its qs and signs cursors only past sub-blocks it quantizes:
 * after an all-zero sub-block the later ones are written one sub-block
 * early (and read back at the wrong place). Files hold those bytes, so they
 * are reproduced here; qh is indexed by sub-block and stays in place. */
static void iq3_s_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq3_s *y) {
    const lm_iq_search search = { g, 32, IQ3_NMAX, 9, 0.2f, false, false, true };
    float scales[QK_K / 32], w[32], waux[32], xval[32], max_scale = 0;
    int8_t L[32];
    uint8_t signs[4];
    const float sigma2 = 2 * lm_iq_sumx2(x) / QK_K;
    memset(y, 0, sizeof *y);
    uint8_t *qs = y->qs, *sg = y->signs;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const float max = iq3_prepare(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, false, w, waux, xval, signs);
        scales[ib] = 0;
        if (!max) continue;
        memset(L, 0, sizeof L);
        float scale = lm_iq_search_scale(&search, xval, w, waux, max, max / (2 * IQ3_NMAX - 1), L);
        if (scale < 0) {
            scale = -scale;
            for (int k = 0; k < 4; k++) signs[k] = (uint8_t)~signs[k];
        }
        for (int k = 0; k < 8; k++) {
            const int e = lm_iq_entry(g, L, k);
            qs[k] = (uint8_t)(e & 255);
            y->qh[ib] |= (uint8_t)((e >> 8) << k);
        }
        qs += 8;
        memcpy(sg, signs, 4);
        sg += 4;
        scales[ib] = scale;
        max_scale = LM_IQ_MAX(max_scale, scale);
    }
    if (!max_scale) return;
    const float d = max_scale / 31;
    y->d = lm_f32_to_half(d * 1.033f);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 32; ib += 2)
        y->scales[ib / 2] = (uint8_t)(lm_iq_scale4(id, scales[ib]) | lm_iq_scale4(id, scales[ib + 1]) << 4);
}

/* ---------------------------------------------------------------- rows */
LM_IQ_DEFINE_QUANTIZE(iq3_xxs, LM_IQ_LATTICE_IQ3_XXS)
LM_IQ_DEFINE_QUANTIZE(iq3_s, LM_IQ_LATTICE_IQ3_S)
