/* expf_avx2.h — expf of 8 floats at once with the bits of glibc's expf.
 *
 * Attention's softmax takes one expf per cached key, per head and token, and
 * scalar expf calls were its largest cost at long context. A faster
 * approximation would move every logit by an ulp here and there, and through
 * the next layers' activation quantization, the near-tie tokens with them; so
 * this is glibc's own algorithm (sysdeps/ieee754/flt-32/e_expf.c, as its FMA
 * build computes it), lane by lane in double precision:
 *   x * 32/ln2 = k + r, |r| <= 1/2;  exp(x) = 2^(k/32) * p(r),
 *   2^(k/32) = 2^(k div 32) * T[k mod 32], p a cubic
 * It equals libm's expf bit for bit (tests/native/test_softmax.py compares
 * them over every float in [-104, 88]); inputs at or below -0x1.9fe368p6
 * (where glibc returns +0 by its underflow path), from 88 up (its overflow
 * checks) and NaNs take the scalar call. */
#ifndef LAMINA_EXPF_AVX2_H
#define LAMINA_EXPF_AVX2_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* bits of 2^(i/32), rounded to double, less i << 47 (so adding k << 47 puts
 * k div 32 into the exponent) */
static const int64_t lm_exp2f_tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

/* 4 lanes: x in double, the result rounded to float */
static inline __m128 lm_expf4_pd(__m256d xd) {
    const __m256d shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d z = _mm256_mul_pd(_mm256_set1_pd(0x1.71547652b82fep+0 * 32), xd);
    __m256d kd = _mm256_add_pd(z, shift);               /* k in the low bits */
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    const __m256d r = _mm256_sub_pd(z, kd);
    __m256i t =
        _mm256_i64gather_epi64((const long long *)lm_exp2f_tab, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
    const __m256d s = _mm256_castsi256_pd(t);
    const __m256d c0 = _mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m256d c1 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32);
    const __m256d c2 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    const __m256d zz = _mm256_fmadd_pd(c0, r, c1);
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(c2, r, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(zz, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
}

/* expf of 8 floats, each with libm's bits */
static inline __m256 lm_expf8(__m256 x) {
    /* between glibc's underflow bound and its special cases above (not NaN):
     * the formula; else libm */
    const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9fe368p6f), _CMP_GT_OQ),
                                    _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_LT_OQ));
    if (__builtin_expect(_mm256_movemask_ps(ok) != 0xFF, 0)) {
        float v[8];
        _mm256_storeu_ps(v, x);
        for (int i = 0; i < 8; i++) v[i] = expf(v[i]);
        return _mm256_loadu_ps(v);
    }
    const __m128 lo = lm_expf4_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    const __m128 hi = lm_expf4_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    return _mm256_set_m128(hi, lo);
}

#endif
