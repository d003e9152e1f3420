#!/usr/bin/env bash
# The CMake CPU options for building llama.cpp (the test and benchmark peers)
# on this machine: every instruction-set extension GGML_NATIVE would use,
# except AMX. ggml's AMX matmul segfaults in KVM guests that advertise AMX
# (ggml_backend_amx_mul_mat, llama.cpp of llama-cpp-python 0.3.36, on a
# Xeon guest with amx_int8 in /proc/cpuinfo), and -march=native turns it on
# by itself, so x86 builds name their extensions one by one.
#   CMAKE_ARGS="$(tools/llama_cpp_cpu_flags.sh)" pip wheel llama-cpp-python ...
set -euo pipefail
if [ "$(uname -m)" != x86_64 ]; then
  echo "-DGGML_NATIVE=ON"
  exit 0
fi
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
out="-DGGML_NATIVE=OFF"
for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
  avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
  if [[ $flags == *" ${pair%%:*} "* ]]; then out+=" -DGGML_${pair#*:}=ON"; else out+=" -DGGML_${pair#*:}=OFF"; fi
done
echo "$out"
