#!/usr/bin/env bash
# The scalar path must build on ARM: cross-compile every C file of the core for
# aarch64 (no AVX2 files, no LM_BUILD_AVX2) and link it with no undefined symbols.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CROSS_CC:-aarch64-linux-gnu-gcc}
if ! command -v "$cc" >/dev/null; then
  apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# every C file of the core but the per-ISA kernels of native/simd/x86/ (the
# source globs of CMakeLists.txt)
for f in "$root"/native/*.c "$root"/native/{quants,model,compute,offload,gptq,simd}/*.c; do
  "$cc" -std=gnu11 -fPIC -O2 -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -Werror \
    -I"$root/native" -I"$root/native/include" -c "$f" -o "$out/$(basename "$f").o"
done
"$cc" -shared -o "$out/liblamina.so" "$out"/*.o -lpthread -lm -Wl,--no-undefined
echo "aarch64 scalar build: ok ($(ls "$out"/*.o | wc -l) objects)"
