#!/usr/bin/env bash
# liblamina_cuda must build with every warning an error, for every GPU
# architecture we ship, on a machine with nvcc but no GPU: configure the CUDA
# library standalone from scratch and build it, then load it (no kernel runs).
#   tools/check_cuda_build.sh [build-dir]      (default build/cuda; the GPU
#                                               tests load build/cuda/liblamina_cuda.so)
# Env: LAMINA_CUDA_ARCHITECTURES overrides the architecture list (e.g. "75"
#      for a quick check); NVCC, when nvcc is not on PATH or /usr/local/cuda.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/cuda}

nvcc=${NVCC:-$(command -v nvcc || true)}
[ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; }
if [ -z "$nvcc" ]; then
  echo "check_cuda_build: no nvcc found (set NVCC=...)" >&2
  exit 1
fi

# the toolkit on this kind of machine ships no cuBLAS: pip's wheel has it
if ! ls "$(dirname "$(readlink -f "$nvcc")")"/../lib64/libcublas.so* >/dev/null 2>&1 &&
   ! python -c "import nvidia, os, sys; sys.exit(not any(os.path.exists(os.path.join(p, d, 'include', 'cublas_v2.h')) for p in nvidia.__path__ for d in os.listdir(p)))" 2>/dev/null; then
  python -m pip install -q "nvidia-cublas>=13,<14"
fi

archs=${LAMINA_CUDA_ARCHITECTURES:-"75-real;80-real;86-real;89-real;90"}
rm -rf "$build"
cmake -S "$root/native/cuda" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DLAMINA_CUDA_ARCHITECTURES="$archs" -DCMAKE_CUDA_ARCHITECTURES="$archs"
cmake --build "$build" -j2

lib="$build/liblamina_cuda.so"
# every declared lmc_ function is exported, and the library loads without a GPU
python - "$lib" "$root/native/cuda/lamina_cuda.h" <<'PY'
import ctypes, re, sys
lib_path, header = sys.argv[1], sys.argv[2]
names = re.findall(r"\b(lmc_[a-z0-9_]+)\s*\(", open(header).read())
lib = ctypes.CDLL(lib_path)
missing = [n for n in names if not hasattr(lib, n)]
if missing:
    sys.exit(f"check_cuda_build: {lib_path} lacks {', '.join(missing)}")
lib.lmc_device_count.restype = ctypes.c_int
lib.lmc_last_error.restype = ctypes.c_char_p
n = lib.lmc_device_count()
why = "" if n > 0 else f" ({lib.lmc_last_error().decode()})"
print(f"check_cuda_build: ok, {len(set(names))} functions exported, {n} GPU(s){why}")
PY
