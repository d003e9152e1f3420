/* legacy_avx2.h — the prefetch distance of the 32-weight formats' one-column
 * dots (the kernels themselves: legacy_i8_avx2.h). */
#ifndef LAMINA_LEGACY_AVX2_H
#define LAMINA_LEGACY_AVX2_H

#include "simd/x86/avx2.h"

/* Blocks fetched ahead by the one-column dots. In decode every weight is read
 * once and a row is a few hundred bytes, so the loads of the next row wait on
 * memory; fetching 16 blocks ahead took one column of a large Q4_0/Q4_1/Q8_0
 * matrix from 12-16 to 18-19 (Q4) and 27-34 to 38 (Q8_0) GB/s on 2 threads of a
 * KVM Xeon guest (`lamina bench-kernels`, 64 MiB matrices). A prefetch never
 * faults, so running past the row's end is harmless. */
#define LM_LEGACY_PREFETCH 16

#endif /* LAMINA_LEGACY_AVX2_H */
