/* nvfp4.c — NVFP4 on the CPU: the quantizer (byte-identical with ggml's
 * quantize_row_nvfp4_ref, which ggml_quantize_chunk calls; there is no
 * importance-weighted variant), rows to float, and the scalar reference dot. */
#include <math.h>

#include "quants/kernels.h"
#include "quants/nvfp4.h"

/* mirrors ggml's ggml_fp32_to_ue4m3: x > 0 to the UE4M3 byte, the mantissa
 * rounded half up on its fourth bit (not to even), clamped to 448 (0x7E);
 * x <= 0 or NaN gives 0 */
static uint8_t nvfp4_scale_code(float x) {
    if (!(x > 0.0f)) return 0;
    if (x > 448.0f) x = 448.0f;
    const uint32_t bits = lm_f32_to_bits(x);
    int e = (int)((bits >> 23) & 0xFF) - 127 + 7;
    if (e <= 0) { /* subnormal: m * 2^-9 */
        int m = (int)(x * 512.0f + 0.5f);
        if (m > 7) m = 7;
        return m < 1 ? 0 : (uint8_t)m;
    }
    if (e >= 15) return 0x7E;
    int m = (int)((bits >> 20) & 0x7) + (int)((bits >> 19) & 1);
    if (m > 7) {
        m = 0;
        if (++e >= 15) return 0x7E;
    }
    return (uint8_t)((e << 3) | m);
}

/* mirrors ggml's quantize_row_nvfp4_ref (one block): per sub-block, the
 * scale maps amax to the largest E2M1 value, 6 */
static void quantize_block_nvfp4(const float *x, block_nvfp4 *y) {
    for (int s = 0; s < QK_NVFP4 / QK_NVFP4_SUB; s++) {
        const float *xb = x + s * QK_NVFP4_SUB;
        float amax = 0.0f;
        for (int j = 0; j < QK_NVFP4_SUB; j++)
            if (amax < fabsf(xb[j])) amax = fabsf(xb[j]);
        y->d[s] = nvfp4_scale_code(amax / 6.0f);
        const float d = lm_ue4m3_to_f32_half(y->d[s]);
        for (int j = 0; j < QK_NVFP4_SUB / 2; j++) {
            const int lo = lm_e2m1_best_index(xb[j], d), hi = lm_e2m1_best_index(xb[j + QK_NVFP4_SUB / 2], d);
            y->qs[s * (QK_NVFP4_SUB / 2) + j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

size_t lm_quantize_nvfp4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    (void)imatrix; /* ggml's quantize_nvfp4 ignores it too */
    block_nvfp4 *y = dst;
    const int64_t nb = nrows * (n_per_row / QK_NVFP4);
    for (int64_t i = 0; i < nb; i++) quantize_block_nvfp4(src + QK_NVFP4 * i, &y[i]);
    return (size_t)nb * sizeof(block_nvfp4);
}

LM_DEFINE_DEQUANTIZE_ROW(nvfp4, block_nvfp4, QK_NVFP4)

/* mirrors ggml_vec_dot_nvfp4_q8_0_generic: sub-block terms summed in order,
 * block i dotted with Q8_0 blocks 2i and 2i+1 */
void lm_vec_dot_nvfp4_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_nvfp4 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_NVFP4; i++)
        for (int sb = 0; sb < QK_NVFP4 / QK_NVFP4_SUB; sb++)
            sum += lm_nvfp4_q8_0_scale(&x[i], &y[2 * i], sb) * lm_idot_nvfp4_sub_q8_0(&x[i], &y[2 * i], sb);
    *s = sum;
}
