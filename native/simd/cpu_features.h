/* cpu_features.h — which SIMD kernels this CPU runs (cpu_features.c). */
#ifndef LAMINA_CPU_FEATURES_H
#define LAMINA_CPU_FEATURES_H

/* 1 when the AVX2 kernels were built and this CPU has AVX2, FMA and F16C (and
 * LAMINA_SIMD=scalar is not set), else 0 */
int lm_cpu_features_avx2(void);

/* 1 when the AVX-VNNI kernels were built, lm_cpu_features_avx2() holds and
 * this CPU has AVX-VNNI (and LAMINA_SIMD is neither scalar nor avx2), else 0 */
int lm_cpu_features_avxvnni(void);

#endif /* LAMINA_CPU_FEATURES_H */
