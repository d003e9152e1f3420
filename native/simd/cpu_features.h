/* cpu_features.h — which SIMD kernels this CPU runs (cpu_features.c). */
#ifndef LAMINA_CPU_FEATURES_H
#define LAMINA_CPU_FEATURES_H

/* 1 when the AVX2 kernels were built and this CPU has AVX2, FMA and F16C (and
 * LAMINA_SIMD=scalar is not set), else 0 */
int lm_cpu_features_avx2(void);

/* which build of the VNNI kernels runs (simd/x86/avx2.h, LM_VNNI): the
 * VEX-encoded AVX-VNNI one where the CPU has it, else the EVEX-encoded
 * AVX512-VNNI one (with AVX512VL, for 256-bit registers); 0 when neither was
 * built or runs, lm_cpu_features_avx2() is 0, or LAMINA_SIMD=avx2 */
enum { LM_VNNI_AVX = 1, LM_VNNI_AVX512 = 2 };
int lm_cpu_features_vnni(void);

#endif /* LAMINA_CPU_FEATURES_H */
