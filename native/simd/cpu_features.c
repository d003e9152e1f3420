/* cpu_features.c — which SIMD kernels this CPU can run, decided once at run
 * time so one build works on any x86-64 (and builds scalar-only elsewhere).
 * LAMINA_SIMD=scalar in the environment forces the scalar reference path,
 * LAMINA_SIMD=avx2 the AVX2 kernels without the VNNI byte dot,
 * LAMINA_SIMD=avx512vnni its AVX512-VNNI build over the AVX-VNNI one. */
#include <stdlib.h>
#include <string.h>

#include "simd/cpu_features.h"

static int detect_avx2(void) {
    const char *force = getenv("LAMINA_SIMD");
    if (force && strcmp(force, "scalar") == 0) return 0;
#if defined(LM_BUILD_AVX2) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

int lm_cpu_features_avx2(void) {
    static int cached = -1;   /* benign race: every thread computes the same value */
    if (cached < 0) cached = detect_avx2();
    return cached;
}

static int detect_vnni(void) {
    const char *force = getenv("LAMINA_SIMD");
    if ((force && strcmp(force, "avx2") == 0) || !lm_cpu_features_avx2()) return 0;
#if defined(LM_BUILD_AVXVNNI)
    /* LAMINA_SIMD=avx512vnni: the EVEX build even where AVX-VNNI runs (tests) */
    if (__builtin_cpu_supports("avxvnni") && !(force && strcmp(force, "avx512vnni") == 0)) return LM_VNNI_AVX;
#endif
#if defined(LM_BUILD_AVX512VNNI)
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) return LM_VNNI_AVX512;
#endif
    return 0;
}

int lm_cpu_features_vnni(void) {
    static int cached = -1;   /* benign race, as above */
    if (cached < 0) cached = detect_vnni();
    return cached;
}
