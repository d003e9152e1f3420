/* api.c — the exported entry points of lamina.h for the block formats.
 * Each checks its arguments once more (the Python side validated them already)
 * and dispatches through the type-traits table. */
#include "error.h"
#include "include/lamina.h"
#include "model/forward_ops.h"
#include "quants/type_traits.h"
#include "simd/cpu_features.h"

static const lm_type_traits *traits_or_error(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    if (!t) lm_set_error(LM_ERR_TYPE, "unknown ggml type id %d", type);
    return t;
}

static int check_count(const lm_type_traits *t, int64_t n, const char *what) {
    if (n < 0 || n % t->blck_size != 0)
        return lm_set_error(LM_ERR_SHAPE, "%s=%lld is not a multiple of %s's block size %lld", what, (long long)n,
                            t->name, (long long)t->blck_size);
    return LM_OK;
}

int lm_cpu_has_avx2(void) { return lm_cpu_features_avx2(); }
int lm_cpu_has_vnni(void) { return lm_cpu_features_vnni(); }

int lm_impl_available(int impl) {
    if (impl == LM_IMPL_AUTO || impl == LM_IMPL_SCALAR) return 1;
    if (impl == LM_IMPL_AVX2) return lm_cpu_features_avx2();
    if (impl == LM_IMPL_VNNI) return lm_cpu_features_vnni() != 0;
    return 0;
}

/* what a model's weight needs: its rows to float, a dot, and a quantizer for
 * the dot's activations. Whether lamina can also write the type is
 * lm_type_quantizable: files of a few types (the lattice i-quants) run here
 * but are made by llama-quantize. */
int lm_type_supported(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    if (!t || !t->to_float || !t->vec_dot_ref) return 0;
    const lm_type_traits *a = lm_get_type_traits(t->vec_dot_type);
    return a && a->from_float;
}

/* lm_quantize can write it: a weight quantizer, or an activation format's
 * row quantizer (without an importance matrix) */
int lm_type_quantizable(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    return t && (t->quantize || t->from_float);
}

/* ggml_quantize_requires_imatrix: ggml's quantizers of these abort without one */
int lm_type_needs_imatrix(int type) {
    return type == LM_TYPE_IQ2_XXS || type == LM_TYPE_IQ2_XS || type == LM_TYPE_IQ1_S;
}

const char *lm_type_name(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    return t ? t->name : "unknown";
}

int64_t lm_type_block_size(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    return t ? t->blck_size : 0;
}

size_t lm_type_block_bytes(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    return t ? t->type_size : 0;
}

int lm_type_vec_dot_type(int type) {
    const lm_type_traits *t = lm_get_type_traits(type);
    return t ? t->vec_dot_type : LM_ERR_TYPE;
}

int lm_quantize(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    const lm_type_traits *t = traits_or_error(type);
    if (!t) return LM_ERR_TYPE;
    int rc = check_count(t, n_per_row, "n_per_row");
    if (rc) return rc;
    if (nrows < 0) return lm_set_error(LM_ERR_SHAPE, "nrows=%lld is negative", (long long)nrows);
    if (t->quantize) {
        if (!imatrix && lm_type_needs_imatrix(type))
            return lm_set_error(LM_ERR_ARG, "quantize to %s needs an importance matrix (imatrix)", t->name);
        if (nrows && n_per_row && !t->quantize(src, dst, nrows, n_per_row, imatrix))
            return lm_set_error(LM_ERR_NOMEM, "quantize to %s: out of memory for its lattice tables", t->name);
        return LM_OK;
    }
    if (t->from_float && !imatrix) {   /* activation formats: plain row quantizer */
        const size_t row_bytes = (size_t)(n_per_row / t->blck_size) * t->type_size;
        for (int64_t r = 0; r < nrows; r++)
            t->from_float(src + r * n_per_row, (char *)dst + (size_t)r * row_bytes, n_per_row);
        return LM_OK;
    }
    if (t->vec_dot_ref)   /* a weight type lamina runs but does not write */
        return lm_set_error(LM_ERR_TYPE,
                            "quantize to %s is not implemented: lamina runs %s files but has no quantizer for it "
                            "(llama-quantize makes them)",
                            t->name, t->name);
    return lm_set_error(LM_ERR_TYPE, "quantize to %s is not implemented%s", t->name,
                        imatrix ? " with an importance matrix" : "");
}

int lm_dequantize(int type, const void *src, float *dst, int64_t n) {
    const lm_type_traits *t = traits_or_error(type);
    if (!t) return LM_ERR_TYPE;
    int rc = check_count(t, n, "n");
    if (rc) return rc;
    if (!t->to_float) return lm_set_error(LM_ERR_TYPE, "dequantize of %s is not implemented", t->name);
    t->to_float(src, dst, n);
    return LM_OK;
}

int lm_quantize_activations(int type, const float *src, void *dst, int64_t n) {
    return lm_quantize_activations_impl(type, LM_IMPL_AUTO, src, dst, n);
}

int lm_quantize_activations_impl(int type, int impl, const float *src, void *dst, int64_t n) {
    const lm_type_traits *t = traits_or_error(type);
    if (!t) return LM_ERR_TYPE;
    const lm_type_traits *p = lm_get_type_traits(t->vec_dot_type);
    int rc = check_count(p, n, "n");
    if (rc) return rc;
    if (!lm_impl_available(impl)) return lm_set_error(LM_ERR_IMPL, "kernel implementation %d is not available", impl);
    const lm_from_float_fn from_float = lm_select_from_float(p, impl);
    if (!from_float) return lm_set_error(LM_ERR_TYPE, "no activation quantizer for %s", p->name);
    from_float(src, dst, n);
    return LM_OK;
}

int lm_softmax_row(int impl, float *x, int64_t n) {
    if (!x || n < 1)
        return lm_set_error(LM_ERR_ARG, "lm_softmax_row: need a row of n >= 1 floats, got n=%lld", (long long)n);
    if (!lm_impl_available(impl)) return lm_set_error(LM_ERR_IMPL, "kernel implementation %d is not available", impl);
    lm_kv_kernels k;
    lm_kv_kernels_for(LM_TYPE_F32, impl != LM_IMPL_SCALAR && lm_cpu_features_avx2(), &k);
    k.softmax(x, n);
    return LM_OK;
}

int lm_act_mul_row(int impl, int act, float *x, const float *up, int64_t n) {
    if (!x || !up || n < 1)
        return lm_set_error(LM_ERR_ARG, "lm_act_mul_row: need rows of n >= 1 floats, got n=%lld", (long long)n);
    if (act != LM_ACT_SILU && act != LM_ACT_GELU_TANH)
        return lm_set_error(LM_ERR_ARG, "lm_act_mul_row: act %d is not LM_ACT_SILU or LM_ACT_GELU_TANH", act);
    if (!lm_impl_available(impl)) return lm_set_error(LM_ERR_IMPL, "kernel implementation %d is not available", impl);
    lm_act_kernels k;
    lm_act_kernels_for(impl != LM_IMPL_SCALAR && lm_cpu_features_avx2(), &k);
    (act == LM_ACT_GELU_TANH ? k.gelu_tanh_mul : k.silu_mul)(x, up, n);
    return LM_OK;
}

int lm_vec_dot(int type, int impl, int64_t n, const void *x, const void *y, float *out) {
    const lm_type_traits *t = traits_or_error(type);
    if (!t) return LM_ERR_TYPE;
    int rc = check_count(t, n, "n");
    if (rc) return rc;
    rc = check_count(lm_get_type_traits(t->vec_dot_type), n, "n");
    if (rc) return rc;
    lm_vec_dot_fn dot = lm_select_vec_dot(t, impl);
    if (!dot) return lm_set_error(LM_ERR_IMPL, "no %s vec_dot for impl %d on this build/CPU", t->name, impl);
    dot(n, out, x, y);
    return LM_OK;
}
