/* matmul.cu — weights of any supported ggml type times f32 activations.
 *
 * Decode (few columns): ggml's mmvq scheme. The activations are quantized
 * once into the type's dot partner; one warp per weight row walks the row's
 * blocks, LMC_PARTS lanes per block, each lane taking a part's integer sums
 * from the type's lmc_ints_<t> (quants/<type>.h, the shared per-block
 * functions). The parts' integers are added across lanes exactly, the
 * block's float term is the CPU reference's expression, and only the final
 * float sum differs in order from the CPU.
 *
 * Prefill (many columns): tiles of weight rows are dequantized to f16 (the
 * same per-weight arithmetic as the CPU dequantizer, then one rounding to
 * f16), the activations converted to f16 once, and cuBLAS multiplies with f32
 * accumulation. F32 weights go to cuBLAS as they are (SGEMM); BF16 tiles are
 * widened to f32 instead of f16, whose range BF16 exceeds. */
#include <cuda_fp16.h>

#include "common.cuh"
#include "wtypes.cuh"

enum { MV_WARPS = 4 };                  /* rows per thread block of the mat-vec */
static const size_t TILE_BYTES = 64u << 20;   /* budget of one dequantized weight tile */

/* ---------------------------------------------------------- mat-vec */

/* y[c * ldy + row] for NC columns; xq: partner rows [NC][xq_row_bytes] */
template <int T, int NC>
__global__ void __launch_bounds__(32 * MV_WARPS)
    mmvq_kernel(const char *w, size_t w_row_bytes, int64_t rows, int64_t nb, const char *xq, size_t xq_row_bytes,
                float *y, int64_t ldy) {
    typedef lmc_qt<T> tr;
    constexpr int G = 32 / tr::PARTS;   /* blocks in flight per warp */
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.y;
    if (row >= rows) return;            /* uniform over the warp */
    const int lane = threadIdx.x, part = lane % tr::PARTS, group = lane / tr::PARTS;
    const typename tr::W *wr = (const typename tr::W *)(w + row * w_row_bytes);
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    /* every lane runs every iteration, so the shuffles below see the whole warp */
    for (int64_t b0 = 0; b0 < nb; b0 += G) {
        const int64_t b = b0 + group;
        const bool ok = b < nb;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const typename tr::A *ya = (const typename tr::A *)(xq + c * xq_row_bytes) + b * tr::A_PER_W;
            int32_t is = 0, im = 0;
            if (ok) tr::ints(wr + b, ya, part, &is, &im);
            if (tr::INT_REDUCE && tr::PARTS > 1) {
#pragma unroll
                for (int off = tr::PARTS / 2; off > 0; off >>= 1) {
                    is += __shfl_xor_sync(0xffffffffu, is, off);
                    im += __shfl_xor_sync(0xffffffffu, im, off);
                }
            }
            if (ok && (!tr::INT_REDUCE || part == 0)) acc[c] += tr::term(wr + b, ya, part, is, im);
        }
    }
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = lmc_warp_sum(acc[c]);
    if (lane == 0)
        for (int c = 0; c < NC; c++) y[c * ldy + row] = acc[c];
}

/* float weights: f32 activations as they are (the CPU rounds them to the
 * weight type first; on the GPU the products are simply more exact) */
template <int T, int NC>
__global__ void __launch_bounds__(32 * MV_WARPS)
    mmv_float_kernel(const void *w, int64_t rows, int64_t n, const float *x, float *y, int64_t ldy) {
    typedef lmc_ft<T> tr;
    const int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.y;
    if (row >= rows) return;
    const int lane = threadIdx.x;
    const typename tr::W *wr = (const typename tr::W *)w + row * n;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    for (int64_t i = lane; i < n; i += 32) {
        const float wv = tr::get(wr, i);
#pragma unroll
        for (int c = 0; c < NC; c++) acc[c] += wv * x[c * n + i];
    }
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = lmc_warp_sum(acc[c]);
    if (lane == 0)
        for (int c = 0; c < NC; c++) y[c * ldy + row] = acc[c];
}

template <int T, int NC>
static void launch_q(const void *w, size_t wrb, int64_t rows, int64_t nb, const void *xq, size_t xrb, float *y,
                     int64_t ldy) {
    const dim3 block(32, MV_WARPS), grid(lmc_grid(rows, MV_WARPS));
    mmvq_kernel<T, NC><<<grid, block>>>((const char *)w, wrb, rows, nb, (const char *)xq, xrb, y, ldy);
}

template <int T>
static void launch_q_cols(int nc, const void *w, size_t wrb, int64_t rows, int64_t nb, const void *xq, size_t xrb,
                          float *y, int64_t ldy) {
    switch (nc) {
    case 1: launch_q<T, 1>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 2: launch_q<T, 2>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 3: launch_q<T, 3>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 4: launch_q<T, 4>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 5: launch_q<T, 5>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 6: launch_q<T, 6>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    case 7: launch_q<T, 7>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    default: launch_q<T, 8>(w, wrb, rows, nb, xq, xrb, y, ldy); break;
    }
}

template <int T, int NC>
static void launch_f(const void *w, int64_t rows, int64_t n, const float *x, float *y, int64_t ldy) {
    const dim3 block(32, MV_WARPS), grid(lmc_grid(rows, MV_WARPS));
    mmv_float_kernel<T, NC><<<grid, block>>>(w, rows, n, x, y, ldy);
}

template <int T>
static void launch_f_cols(int nc, const void *w, int64_t rows, int64_t n, const float *x, float *y, int64_t ldy) {
    switch (nc) {
    case 1: launch_f<T, 1>(w, rows, n, x, y, ldy); break;
    case 2: launch_f<T, 2>(w, rows, n, x, y, ldy); break;
    case 3: launch_f<T, 3>(w, rows, n, x, y, ldy); break;
    case 4: launch_f<T, 4>(w, rows, n, x, y, ldy); break;
    case 5: launch_f<T, 5>(w, rows, n, x, y, ldy); break;
    case 6: launch_f<T, 6>(w, rows, n, x, y, ldy); break;
    case 7: launch_f<T, 7>(w, rows, n, x, y, ldy); break;
    default: launch_f<T, 8>(w, rows, n, x, y, ldy); break;
    }
}

/* --------------------------------------------------------- planning */

typedef struct {
    const lmc_type_info *t, *at;
    int path;               /* LMC_PATH_MMVQ or LMC_PATH_GEMM */
    int64_t tile_rows;      /* GEMM: weight rows per dequantized tile */
    size_t tile_elt;        /* GEMM: bytes per tile value (2: f16, 4: f32), 0: no tile */
    size_t x_bytes;         /* scratch for x in the partner type (mat-vec) or f16 (GEMM) */
    size_t scratch;         /* total */
} mm_plan;

static void make_plan(mm_plan *p, int type, int64_t rows, int64_t n, int64_t ncols, int path) {
    p->t = lmc_type(type);
    p->at = lmc_type(p->t->partner);
    p->path = path == LMC_PATH_AUTO ? (ncols <= LMC_MMVQ_MAX_COLS ? LMC_PATH_MMVQ : LMC_PATH_GEMM) : path;
    p->tile_rows = 0;
    p->tile_elt = 0;
    p->x_bytes = 0;
    if (p->path == LMC_PATH_MMVQ) {
        if (!lmc_is_float_type(type)) p->x_bytes = lmc_rowb(p->at, n) * (size_t)ncols;
    } else {
        if (type != LM_TYPE_F32 && type != LM_TYPE_BF16) p->x_bytes = (size_t)(n * ncols) * 2;
        if (type != LM_TYPE_F32 && type != LM_TYPE_F16) {
            p->tile_elt = type == LM_TYPE_BF16 ? 4 : 2;
            const int64_t fit = (int64_t)(TILE_BYTES / ((size_t)n * p->tile_elt));
            p->tile_rows = fit < 1 ? 1 : fit < rows ? fit : rows;
        }
    }
    /* the tile starts 256-byte aligned after x */
    p->scratch = ((p->x_bytes + 255) & ~(size_t)255) + (size_t)p->tile_rows * (size_t)n * p->tile_elt;
}

static int check_shape(int type, int64_t rows, int64_t n, int64_t ncols, int64_t ldy, const char *fn) {
    if (!lmc_type_supported(type))
        return lmc_fail(LMC_ERR_TYPE, "%s: ggml type %d is not supported on the GPU", fn, type);
    const lmc_type_info *t = lmc_type(type), *at = lmc_type(t->partner);
    if (rows < 0 || ncols < 0 || n <= 0 || n % t->blck || n % at->blck)
        return lmc_fail(LMC_ERR_SHAPE,
                        "%s: bad shape rows=%lld n=%lld ncols=%lld (n must be a positive multiple "
                        "of %lld)",
                        fn, (long long)rows, (long long)n, (long long)ncols,
                        (long long)(t->blck > at->blck ? t->blck : at->blck));
    if (ldy < rows) return lmc_fail(LMC_ERR_SHAPE, "%s: ldy=%lld < rows=%lld", fn, (long long)ldy, (long long)rows);
    return LMC_OK;
}

LMC_API size_t lmc_matmul_scratch_bytes(int type, int64_t rows, int64_t n, int64_t ncols) {
    if (check_shape(type, rows, n, ncols, rows, "lmc_matmul_scratch_bytes")) return 0;
    mm_plan a, b;
    make_plan(&a, type, rows, n, ncols, LMC_PATH_MMVQ);
    make_plan(&b, type, rows, n, ncols, LMC_PATH_GEMM);
    return a.scratch > b.scratch ? a.scratch : b.scratch;
}

/* ------------------------------------------------------------- paths */

/* quantized weights times x already in their partner type: xq [ncols][rowb(at, n)] */
static int run_mmvq_quantized(int type, const mm_plan *p, const void *w, int64_t rows, int64_t n, const void *xq,
                              int64_t ncols, float *y, int64_t ldy, const char *fn) {
    const size_t wrb = lmc_rowb(p->t, n), xrb = lmc_rowb(p->at, n);
    const int64_t nb = n / p->t->blck;
    for (int64_t c0 = 0; c0 < ncols; c0 += LMC_MMVQ_MAX_COLS) {
        const int64_t left = ncols - c0;
        const int nc = (int)(left < (int64_t)LMC_MMVQ_MAX_COLS ? left : (int64_t)LMC_MMVQ_MAX_COLS);
        const char *xc = (const char *)xq + c0 * xrb;
#define LMC_MQ(ID) launch_q_cols<ID>(nc, w, wrb, rows, nb, xc, xrb, y + c0 * ldy, ldy)
        LMC_FOR_QTYPE(type, LMC_MQ);
#undef LMC_MQ
        LMC_LAUNCHED(fn);
    }
    return LMC_OK;
}

static int run_mmvq(int type, const mm_plan *p, const void *w, int64_t rows, int64_t n, const float *x, int64_t ncols,
                    float *y, int64_t ldy, void *scratch, const char *fn) {
    if (lmc_is_float_type(type)) {
        for (int64_t c0 = 0; c0 < ncols; c0 += LMC_MMVQ_MAX_COLS) {
            const int64_t left = ncols - c0;
            const int nc = (int)(left < (int64_t)LMC_MMVQ_MAX_COLS ? left : (int64_t)LMC_MMVQ_MAX_COLS);
#define LMC_MF(ID) launch_f_cols<ID>(nc, w, rows, n, x + c0 * n, y + c0 * ldy, ldy)
            LMC_FOR_FTYPE(type, LMC_MF);
#undef LMC_MF
            LMC_LAUNCHED(fn);
        }
        return LMC_OK;
    }
    int rc = lmc_quantize_partner(type, x, n, ncols, scratch, fn);
    if (rc) return rc;
    return run_mmvq_quantized(type, p, w, rows, n, scratch, ncols, y, ldy, fn);
}

static int run_gemm(int type, const mm_plan *p, const void *w, int64_t rows, int64_t n, const float *x, int64_t ncols,
                    float *y, int64_t ldy, void *scratch, const char *fn) {
    if (type == LM_TYPE_F32) return lmc_gemm(w, 0, rows, n, x, ncols, y, ldy, fn);
    int rc;
    const void *xg = x;   /* activations as the GEMM reads them */
    if (type != LM_TYPE_BF16) {
        if ((rc = lmc_launch_f32_to_f16(x, scratch, n * ncols, fn))) return rc;
        xg = scratch;
    }
    if (type == LM_TYPE_F16) return lmc_gemm(w, 1, rows, n, xg, ncols, y, ldy, fn);
    void *tile = (char *)scratch + ((p->x_bytes + 255) & ~(size_t)255);
    const int f16 = p->tile_elt == 2;
    const size_t wrb = lmc_rowb(p->t, n);
    /* one stream: the next tile's dequantization waits for this GEMM */
    for (int64_t r0 = 0; r0 < rows; r0 += p->tile_rows) {
        const int64_t m = rows - r0 < p->tile_rows ? rows - r0 : p->tile_rows;
        if ((rc = lmc_launch_dequant(type, (const char *)w + r0 * wrb, m * n, tile, f16, fn))) return rc;
        if ((rc = lmc_gemm(tile, f16, m, n, xg, ncols, y + r0, ldy, fn))) return rc;
    }
    return LMC_OK;
}

LMC_API int lmc_matmul(int type, const void *w, int64_t rows, int64_t n, const float *x, int64_t ncols, float *y,
                       int64_t ldy, void *scratch, size_t scratch_bytes, int path) {
    const char *fn = "lmc_matmul";
    int rc = check_shape(type, rows, n, ncols, ldy, fn);
    if (rc) return rc;
    if (path != LMC_PATH_AUTO && path != LMC_PATH_MMVQ && path != LMC_PATH_GEMM)
        return lmc_fail(LMC_ERR_ARG, "%s: unknown path %d", fn, path);
    if (rows == 0 || ncols == 0) return LMC_OK;
    if (!w || !x || !y) return lmc_fail(LMC_ERR_ARG, "%s: NULL weight, input or output pointer", fn);
    mm_plan p;
    make_plan(&p, type, rows, n, ncols, path);
    if (p.scratch > 0 && (!scratch || scratch_bytes < p.scratch))
        return lmc_fail(LMC_ERR_ARG,
                        "%s: scratch of %zu bytes at %p, this call needs %zu "
                        "(lmc_matmul_scratch_bytes)",
                        fn, scratch_bytes, scratch, p.scratch);
    return p.path == LMC_PATH_MMVQ ? run_mmvq(type, &p, w, rows, n, x, ncols, y, ldy, scratch, fn)
                                   : run_gemm(type, &p, w, rows, n, x, ncols, y, ldy, scratch, fn);
}

/* the mat-vec path of lmc_matmul without its first step: for several
 * matrices that read the same x (q/k/v, gate/up), x is quantized once */
LMC_API int lmc_matmul_q(int type, const void *w, int64_t rows, int64_t n, int xq_type, const void *xq, int64_t ncols,
                         float *y, int64_t ldy) {
    const char *fn = "lmc_matmul_q";
    int rc = check_shape(type, rows, n, ncols, ldy, fn);
    if (rc) return rc;
    if (lmc_is_float_type(type))
        return lmc_fail(LMC_ERR_TYPE, "%s: float weights (type %d) take f32 activations: use lmc_matmul", fn, type);
    const int partner = lmc_type(type)->partner;
    if (xq_type != partner)
        return lmc_fail(LMC_ERR_TYPE, "%s: weights of type %d are dotted with type %d, not xq_type %d", fn, type,
                        partner, xq_type);
    if (rows == 0 || ncols == 0) return LMC_OK;
    if (!w || !xq || !y) return lmc_fail(LMC_ERR_ARG, "%s: NULL weight, input or output pointer", fn);
    mm_plan p;
    make_plan(&p, type, rows, n, ncols, LMC_PATH_MMVQ);
    return run_mmvq_quantized(type, &p, w, rows, n, xq, ncols, y, ldy, fn);
}
