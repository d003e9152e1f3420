/* gptq.cu — GPTQ INT4 linears on the GPU, straight from the packed form
 * (lamina_gptq.h). Each weight is formed by gptq_math.h, the arithmetic the
 * CPU reference uses.
 *
 * Mat-vec: a thread per output o reads qweight[r][o] (neighbouring threads,
 * neighbouring words: coalesced), 8 slices of the input rows per output are
 * summed in f32 and added through shared memory. x stays f32: a warp reads
 * the same x value, a broadcast.
 * GEMM: tiles of outputs are dequantized to f16 W[o][i] rows and multiplied
 * by cuBLAS, as for the ggml types. */
#include <cuda_fp16.h>
#include <string.h>

#include "common.cuh"
#include "gptq/gptq_math.h"

enum { G_OUT = 32, G_SLICES = 8, G_THREADS = G_OUT * G_SLICES };
static const size_t TILE_BYTES = 64u << 20;

static int check_matrix(const lmc_gptq_matrix *w, const char *fn) {
    if (!w) return lmc_fail(LMC_ERR_ARG, "%s: the GPTQ matrix is NULL", fn);
    if (!w->qweight || !w->scales || !w->qzeros)
        return lmc_fail(LMC_ERR_ARG, "%s: GPTQ qweight, scales or qzeros pointer is NULL", fn);
    if (w->n_in <= 0 || w->n_in % LM_GPTQ_PER_WORD || w->n_out <= 0 || w->n_out % LM_GPTQ_PER_WORD)
        return lmc_fail(LMC_ERR_SHAPE, "%s: GPTQ n_in=%d and n_out=%d must be positive multiples of 8", fn,
                        (int)w->n_in, (int)w->n_out);
    if (w->group_size < -1)
        return lmc_fail(LMC_ERR_SHAPE, "%s: GPTQ group_size=%d must be positive, or -1/0 for one group per row", fn,
                        (int)w->group_size);
    const int64_t gs = lm_gptq_eff_group_size(w->group_size, w->n_in);
    const int64_t want = (w->n_in + gs - 1) / gs;
    if (w->n_groups != want)
        return lmc_fail(LMC_ERR_SHAPE, "%s: GPTQ n_groups=%d does not match n_in=%d with group_size=%d (expected %lld)",
                        fn, (int)w->n_groups, (int)w->n_in, (int)w->group_size, (long long)want);
    return LMC_OK;
}

/* ------------------------------------------------------------ mat-vec */

/* y[c * ldy + o] for NC columns of x [NC][n_in] */
template <int NC>
__global__ void __launch_bounds__(G_THREADS) gptq_mv_kernel(lmc_gptq_matrix w, const float *x, float *y, int64_t ldy) {
    __shared__ float sh[NC][G_SLICES][G_OUT];
    const int64_t n_out = w.n_out, n_in = w.n_in, n_rows = n_in / LM_GPTQ_PER_WORD;
    const int64_t o = (int64_t)blockIdx.x * G_OUT + threadIdx.x;
    const bool ok = o < n_out;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    if (ok) {
        const int64_t gs = lm_gptq_eff_group_size(w.group_size, w.n_in);
        const int64_t r0 = n_rows * threadIdx.y / G_SLICES, r1 = n_rows * (threadIdx.y + 1) / G_SLICES;
        int64_t g_cur = -1;
        float scale = 0.0f;
        int zero = 0;
        for (int64_t r = r0; r < r1; r++) {
            const uint32_t word = (uint32_t)w.qweight[r * n_out + o];
#pragma unroll
            for (int j = 0; j < LM_GPTQ_PER_WORD; j++) {
                const int64_t i = r * LM_GPTQ_PER_WORD + j;
                const int64_t g = lm_gptq_group_of(w.g_idx, gs, i);
                if (g != g_cur) {   /* once per group run, as the CPU reference */
                    scale = lm_half_to_f32(w.scales[g * n_out + o]);
                    zero = lm_gptq_zero(w.qzeros, n_out, g, o);
                    g_cur = g;
                }
                const float wv = lm_gptq_weight(scale, lm_gptq_nibble(word, j), zero);
#pragma unroll
                for (int c = 0; c < NC; c++) acc[c] += wv * x[c * n_in + i];
            }
        }
    }
#pragma unroll
    for (int c = 0; c < NC; c++) sh[c][threadIdx.y][threadIdx.x] = acc[c];
    __syncthreads();
    if (threadIdx.y == 0 && ok) {
        for (int c = 0; c < NC; c++) {
            float s = 0.0f;
            for (int k = 0; k < G_SLICES; k++) s += sh[c][k][threadIdx.x];
            y[c * ldy + o] = s;
        }
    }
}

template <int NC> static void launch_mv(const lmc_gptq_matrix *w, const float *x, float *y, int64_t ldy) {
    gptq_mv_kernel<NC><<<lmc_grid(w->n_out, G_OUT), dim3(G_OUT, G_SLICES)>>>(*w, x, y, ldy);
}

/* ---------------------------------------------------------- dequantize */

template <typename O> __device__ __forceinline__ O gptq_out(float v);
template <> __device__ __forceinline__ float gptq_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half gptq_out<__half>(float v) { return __float2half_rn(v); }

/* outputs [o0, o0 + m) -> dst [m][n_in]; a thread per (word row r, output o),
 * o fastest so the qweight reads coalesce; its 8 values are one 16- or
 * 32-byte store */
template <typename O> __global__ void gptq_dequant_kernel(lmc_gptq_matrix w, int64_t o0, int64_t m, O *dst) {
    const int64_t n_out = w.n_out, n_in = w.n_in, n_rows = n_in / LM_GPTQ_PER_WORD;
    const int64_t gs = lm_gptq_eff_group_size(w.group_size, w.n_in);
    const int64_t total = m * n_rows;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = o0 + idx % m, r = idx / m;
        O v[LM_GPTQ_PER_WORD];
#pragma unroll
        for (int j = 0; j < LM_GPTQ_PER_WORD; j++)
            v[j] = gptq_out<O>(
                lm_gptq_dequant_one(w.qweight, w.scales, w.qzeros, w.g_idx, n_out, gs, o, r * LM_GPTQ_PER_WORD + j));
        memcpy(dst + (o - o0) * n_in + r * LM_GPTQ_PER_WORD, v, sizeof v);
    }
}

/* ------------------------------------------------------------- C ABI */

static int64_t tile_outputs(const lmc_gptq_matrix *w) {
    const int64_t fit = (int64_t)(TILE_BYTES / ((size_t)w->n_in * 2));
    return fit < 1 ? 1 : fit < w->n_out ? fit : w->n_out;
}

static size_t x16_bytes(const lmc_gptq_matrix *w, int64_t ncols) {
    return (((size_t)ncols * (size_t)w->n_in * 2) + 255) & ~(size_t)255;
}

LMC_API size_t lmc_gptq_scratch_bytes(const lmc_gptq_matrix *w, int64_t ncols) {
    if (check_matrix(w, "lmc_gptq_scratch_bytes") || ncols < 0) return 0;
    return x16_bytes(w, ncols) + (size_t)tile_outputs(w) * (size_t)w->n_in * 2;
}

LMC_API int lmc_gptq_matmul(const lmc_gptq_matrix *w, const float *x, int64_t ncols, float *y, int64_t ldy,
                            void *scratch, size_t scratch_bytes, int path) {
    const char *fn = "lmc_gptq_matmul";
    int rc = check_matrix(w, fn);
    if (rc) return rc;
    if (ncols < 0) return lmc_fail(LMC_ERR_SHAPE, "%s: ncols=%lld is negative", fn, (long long)ncols);
    if (ldy < w->n_out) return lmc_fail(LMC_ERR_SHAPE, "%s: ldy=%lld < n_out=%d", fn, (long long)ldy, (int)w->n_out);
    if (path != LMC_PATH_AUTO && path != LMC_PATH_MMVQ && path != LMC_PATH_GEMM)
        return lmc_fail(LMC_ERR_ARG, "%s: unknown path %d", fn, path);
    if (ncols == 0) return LMC_OK;
    if (!x || !y) return lmc_fail(LMC_ERR_ARG, "%s: x or y is NULL", fn);
    if (path == LMC_PATH_AUTO) path = ncols <= LMC_MMVQ_MAX_COLS ? LMC_PATH_MMVQ : LMC_PATH_GEMM;
    if (path == LMC_PATH_MMVQ) {
        for (int64_t c0 = 0; c0 < ncols; c0 += LMC_MMVQ_MAX_COLS) {
            const int64_t left = ncols - c0;
            const float *xc = x + c0 * w->n_in;
            float *yc = y + c0 * ldy;
            switch (left < (int64_t)LMC_MMVQ_MAX_COLS ? left : (int64_t)LMC_MMVQ_MAX_COLS) {
            case 1: launch_mv<1>(w, xc, yc, ldy); break;
            case 2: launch_mv<2>(w, xc, yc, ldy); break;
            case 3: launch_mv<3>(w, xc, yc, ldy); break;
            case 4: launch_mv<4>(w, xc, yc, ldy); break;
            case 5: launch_mv<5>(w, xc, yc, ldy); break;
            case 6: launch_mv<6>(w, xc, yc, ldy); break;
            case 7: launch_mv<7>(w, xc, yc, ldy); break;
            default: launch_mv<8>(w, xc, yc, ldy); break;
            }
            LMC_LAUNCHED(fn);
        }
        return LMC_OK;
    }
    const size_t need = lmc_gptq_scratch_bytes(w, ncols);
    if (!scratch || scratch_bytes < need)
        return lmc_fail(LMC_ERR_ARG, "%s: scratch of %zu bytes at %p, this call needs %zu (lmc_gptq_scratch_bytes)", fn,
                        scratch_bytes, scratch, need);
    if ((rc = lmc_launch_f32_to_f16(x, scratch, ncols * w->n_in, fn))) return rc;
    __half *tile = (__half *)((char *)scratch + x16_bytes(w, ncols));
    const int64_t tm = tile_outputs(w), n_rows = w->n_in / LM_GPTQ_PER_WORD;
    for (int64_t o0 = 0; o0 < w->n_out; o0 += tm) {
        const int64_t m = w->n_out - o0 < tm ? w->n_out - o0 : tm;
        gptq_dequant_kernel<__half><<<lmc_grid(m * n_rows, 256), 256>>>(*w, o0, m, tile);
        LMC_LAUNCHED(fn);
        if ((rc = lmc_gemm(tile, 1, m, w->n_in, scratch, ncols, y + o0, ldy, fn))) return rc;
    }
    return LMC_OK;
}

LMC_API int lmc_gptq_dequantize(const lmc_gptq_matrix *w, float *dst) {
    const char *fn = "lmc_gptq_dequantize";
    int rc = check_matrix(w, fn);
    if (rc) return rc;
    if (!dst) return lmc_fail(LMC_ERR_ARG, "%s: dst is NULL", fn);
    const int64_t total = (int64_t)w->n_out * (w->n_in / LM_GPTQ_PER_WORD);
    gptq_dequant_kernel<float><<<lmc_grid(total, 256), 256>>>(*w, 0, w->n_out, dst);
    LMC_LAUNCHED(fn);
    return LMC_OK;
}
