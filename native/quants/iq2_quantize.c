/* iq2_quantize.c — the IQ2_XXS, IQ2_XS and IQ2_S quantizers, byte-identical
 * with ggml_quantize_chunk (ggml's quantize_row_iq2_xxs_impl, _iq2_xs_impl,
 * _iq2_s_impl). IQ2_XXS and IQ2_XS need an importance matrix (lm_quantize
 * refuses them without one, where ggml aborts); IQ2_S weights by
 * sigma2/4 + x^2 without one. Block layouts in quants/blocks.h, the lattice
 * search in quants/iq_quantize.h. */
#include "quants/iq_quantize.h"
#include "quants/kernels.h"

#define IQ2_NMAX 3
#define GROUP_MAX_EPS_IQ2_S 1e-8f

/* ------------------------------------------------------------- IQ2_XXS */
/* 8 sub-blocks of 32: four grid bytes in word 0, four 7-bit sign indices
 * and the 4-bit scale in word 1 */
static void iq2_xxs_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq2_xxs *y) {
    const lm_iq_search search = { g, 32, IQ2_NMAX, 6, 0.1f, true, true, true };
    uint32_t words[2 * (QK_K / 32)] = { 0 };
    float scales[QK_K / 32], w[32], waux[32], xval[32], max_scale = 0;
    int8_t L[32];
    uint8_t Lqp[32], signs[4];
    const float sigma2 = lm_iq_sumx2(x) / QK_K;
    y->d = lm_f32_to_half(0.f);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const float *xb = x + 32 * ib;
        lm_iq_weights(xb, qw + 32 * ib, sigma2, w, 32);
        for (int i = 0; i < 32; i++) waux[i] = sqrtf(w[i]);
        for (int k = 0; k < 4; k++) signs[k] = lm_iq_fold_signs(xb + 8 * k, w + 8 * k, xval + 8 * k, true);
        scales[ib] = 0;
        if (lm_iq_max(xval, 32) < LM_GROUP_MAX_EPS) continue;
        /* the search starts from the weighted fit of levels 0..3 */
        float scale = lm_make_qp_quants(32, IQ2_NMAX + 1, xval, Lqp, w);
        const float eff_max = scale * IQ2_NMAX;
        if (eff_max <= 0) continue;
        memset(L, 0, sizeof L); /* ggml leaves L as it was; it is rewritten unless x holds NaN */
        scale = lm_iq_search_scale(&search, xval, w, waux, eff_max, scale, L);
        if (scale < 0) { /* only with negative importances: positive scales, flipped signs */
            scale = -scale;
            for (int k = 0; k < 4; k++) signs[k] = (~signs[k]) & 127;
        }
        for (int k = 0; k < 4; k++) {
            words[2 * ib] |= (uint32_t)lm_iq_entry(g, L, k) << (8 * k);
            words[2 * ib + 1] |= (uint32_t)signs[k] << (7 * k);
        }
        scales[ib] = scale;
        max_scale = LM_IQ_MAX(max_scale, scale);
    }
    if (!max_scale) {
        memset(y->qs, 0, sizeof y->qs);
        return;
    }
    const float d = max_scale / 31;
    y->d = lm_f32_to_half(d);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 32; ib++) words[2 * ib + 1] |= (uint32_t)lm_iq_scale4(id, scales[ib]) << 28;
    for (int j = 0; j < 2 * (QK_K / 32); j++) {
        y->qs[2 * j] = (uint16_t)(words[j] & 0xFFFF);
        y->qs[2 * j + 1] = (uint16_t)(words[j] >> 16);
    }
}

/* ---------------------------------------------------- IQ2_XS and IQ2_S */
/* 16 sub-blocks of 16 weights, two groups of 8 each. IQ2_XS stores 7-bit
 * sign indices next to 9-bit entries, IQ2_S 10-bit entries and sign bytes. */
typedef struct {
    bool is_s;       /* IQ2_S */
    float sigma2;    /* over the super-block */
    const float *qw; /* its importances, or NULL (IQ2_S only) */
} iq2_16_ctx;

/* one sub-block: its scale, the entries of its two groups, their signs */
static float iq2_16_sub_block(const lm_iq_lattice *g, const iq2_16_ctx *c, const float *xb, const float *qw,
                              int entries[2], uint8_t signs[2]) {
    const lm_iq_search search = { g, 16, IQ2_NMAX, 9, 0.1f, true, false, false };
    float w[16], waux[16], xval[16];
    int8_t L[16];
    if (qw)
        lm_iq_weights(xb, qw, c->sigma2, w, 16);
    else
        for (int i = 0; i < 16; i++) w[i] = 0.25f * c->sigma2 + xb[i] * xb[i];
    for (int i = 0; i < 16; i++) waux[i] = sqrtf(w[i]);
    for (int k = 0; k < 2; k++) signs[k] = lm_iq_fold_signs(xb + 8 * k, w + 8 * k, xval + 8 * k, !c->is_s);
    const float max = lm_iq_max(xval, 16);
    if (max < (c->is_s ? GROUP_MAX_EPS_IQ2_S : LM_GROUP_MAX_EPS)) return -1;
    memset(L, 0, sizeof L);
    float scale = lm_iq_search_scale(&search, xval, w, waux, max, max / (2 * IQ2_NMAX - 1), L);
    if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; k++) signs[k] = c->is_s ? (uint8_t)~signs[k] : (~signs[k]) & 127;
    }
    for (int k = 0; k < 2; k++) entries[k] = lm_iq_entry(g, L, k);
    return scale;
}

/* the sub-block scales as nibbles against d = max_scale/31 */
static void iq2_pack_scales16(const float *scales, float max_scale, uint8_t *out) {
    const float id = 1 / (max_scale / 31);
    for (int ib = 0; ib < QK_K / 16; ib += 2)
        out[ib / 2] = (uint8_t)(lm_iq_scale4(id, scales[ib]) | lm_iq_scale4(id, scales[ib + 1]) << 4);
}

static void iq2_xs_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq2_xs *y) {
    const iq2_16_ctx c = { false, lm_iq_sumx2(x) / QK_K, qw };
    float scales[QK_K / 16], max_scale = 0;
    memset(y, 0, sizeof *y);
    for (int ib = 0; ib < QK_K / 16; ib++) {
        int entries[2];
        uint8_t signs[2];
        const float scale = iq2_16_sub_block(g, &c, x + 16 * ib, qw + 16 * ib, entries, signs);
        scales[ib] = scale < 0 ? 0 : scale;
        if (scale < 0) continue;
        for (int k = 0; k < 2; k++) y->qs[2 * ib + k] = (uint16_t)(entries[k] | signs[k] << 9);
        max_scale = LM_IQ_MAX(max_scale, scale);
    }
    if (!max_scale) {
        memset(y->qs, 0, sizeof y->qs);
        return;
    }
    y->d = lm_f32_to_half(max_scale / 31);
    iq2_pack_scales16(scales, max_scale, y->scales);
}

static void iq2_s_block(const lm_iq_lattice *g, const float *x, const float *qw, block_iq2_s *y) {
    const iq2_16_ctx c = { true, 2 * lm_iq_sumx2(x) / QK_K, qw };
    float scales[QK_K / 16], max_scale = 0;
    memset(y, 0, sizeof *y);
    for (int ib = 0; ib < QK_K / 16; ib++) {
        int entries[2];
        uint8_t signs[2];
        const float scale = iq2_16_sub_block(g, &c, x + 16 * ib, qw ? qw + 16 * ib : NULL, entries, signs);
        scales[ib] = scale < 0 ? 0 : scale;
        if (scale < 0) continue;
        for (int k = 0; k < 2; k++) {
            const int i8 = 2 * ib + k;
            y->qs[i8] = (uint8_t)(entries[k] & 255);
            y->qh[i8 / 4] |= (uint8_t)((entries[k] >> 8) << (2 * (i8 % 4)));
            y->qs[QK_K / 8 + i8] = signs[k];
        }
        max_scale = LM_IQ_MAX(max_scale, scale);
    }
    if (!max_scale) return;
    y->d = lm_f32_to_half(max_scale / 31 * 0.9875f);
    iq2_pack_scales16(scales, max_scale, y->scales);
}

/* ---------------------------------------------------------------- rows */
LM_IQ_DEFINE_QUANTIZE(iq2_xxs, LM_IQ_LATTICE_IQ2_XXS)
LM_IQ_DEFINE_QUANTIZE(iq2_xs, LM_IQ_LATTICE_IQ2_XS)
LM_IQ_DEFINE_QUANTIZE(iq2_s, LM_IQ_LATTICE_IQ2_S)
