/* kquants_dot.c — scalar reference dots of the k-quants with Q8_K activations,
 * the oracle the SIMD paths are tested against. The integer work per
 * super-block lives in block_dot_k.h; here only the float part: one term per
 * block, d * isum - dmin * imin with d, dmin = fp16 scale * y.d, summed in
 * the lanes of lm_kdot_sum_lanes. */
#include "block_dot_k.h"
#include "type_kernels.h"

/* mirrors ggml's ggml_vec_dot_q2_K_q8_K_generic */
void lm_vec_dot_q2_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    float lanes[LM_KDOT_LANES] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32_t isum, imin;
        lm_kdot_q2_K(&x[i], &y[i], &isum, &imin);
        const float d = lm_half_to_f32(x[i].d) * y[i].d;
        const float dmin = lm_half_to_f32(x[i].dmin) * y[i].d;
        lanes[i % LM_KDOT_LANES] += d * isum - dmin * imin;
    }
    *s = lm_kdot_sum_lanes(lanes);
}

/* mirrors ggml's ggml_vec_dot_q3_K_q8_K_generic */
void lm_vec_dot_q3_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    float lanes[LM_KDOT_LANES] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = lm_half_to_f32(x[i].d) * y[i].d;
        lanes[i % LM_KDOT_LANES] += d * lm_kdot_q3_K(&x[i], &y[i]);
    }
    *s = lm_kdot_sum_lanes(lanes);
}

/* mirrors ggml's ggml_vec_dot_q4_K_q8_K_generic */
void lm_vec_dot_q4_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_K *x = vx;
    const block_q8_K *y = vy;
    float lanes[LM_KDOT_LANES] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32_t isum, imin;
        lm_kdot_q4_K(&x[i], &y[i], &isum, &imin);
        const float d = lm_half_to_f32(x[i].d) * y[i].d;
        const float dmin = lm_half_to_f32(x[i].dmin) * y[i].d;
        lanes[i % LM_KDOT_LANES] += d * isum - dmin * imin;
    }
    *s = lm_kdot_sum_lanes(lanes);
}

/* mirrors ggml's ggml_vec_dot_q5_K_q8_K_generic */
void lm_vec_dot_q5_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_K *x = vx;
    const block_q8_K *y = vy;
    float lanes[LM_KDOT_LANES] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32_t isum, imin;
        lm_kdot_q5_K(&x[i], &y[i], &isum, &imin);
        const float d = lm_half_to_f32(x[i].d) * y[i].d;
        const float dmin = lm_half_to_f32(x[i].dmin) * y[i].d;
        lanes[i % LM_KDOT_LANES] += d * isum - dmin * imin;
    }
    *s = lm_kdot_sum_lanes(lanes);
}

/* mirrors ggml's ggml_vec_dot_q6_K_q8_K_generic */
void lm_vec_dot_q6_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    float lanes[LM_KDOT_LANES] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = lm_half_to_f32(x[i].d) * y[i].d;
        lanes[i % LM_KDOT_LANES] += d * lm_kdot_q6_K(&x[i], &y[i]);
    }
    *s = lm_kdot_sum_lanes(lanes);
}
