#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build the core and liblamina_cuda for that
# GPU only, run the GPU-marked tests, and bench offload. Logs go to $OUT
# (default /tmp/gpu_check). Stages, in order, any subset:
#   tools/gpu_check.sh build ops offload bench profile sanitize
# Wheels the machine lacks may sit in .whl/ (installed to /tmp/site); SmolLM2
# may come as split parts in .gpu/m.part* (joined into $LAMINA_CACHE).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
stages=${*:-build ops offload bench}
py=$(command -v python3)

# the lamina package from this checkout without pip's build tools (the
# machine may have none): links in the shape of the installed package
export PYTHONPATH=$(tools/package_links.sh /tmp/lamina-src)
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
export LAMINA_CACHE=${LAMINA_CACHE:-/tmp/lamina-cache}
mkdir -p "$LAMINA_CACHE"
if compgen -G ".gpu/m.part*" >/dev/null && [ ! -s "$LAMINA_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  cat .gpu/m.part* > "$LAMINA_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
ls -la .gpu "$LAMINA_CACHE" 2>&1 | tee "$out/files.txt"

cublas=$("$py" -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))")
export LD_LIBRARY_PATH="$cublas/lib:${LD_LIBRARY_PATH:-}"
export LAMINA_NATIVE_DIR=$PWD/build/gpu/module PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv; nvcc --version | tail -2
  "$py" -V; nproc; } 2>&1 | tee "$out/info.txt"

for stage in $stages; do
  case $stage in
    build)
      arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
      start=$(date +%s)
      cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$py" \
        -DLAMINA_CUDA=ON -DLAMINA_CUDA_REQUIRED=ON -DLAMINA_CUDA_ARCHITECTURES="${arch}-real" \
        -DLAMINA_CUBLAS_ROOT="$cublas" >"$out/build.txt" 2>&1 &&
        cmake --build build/gpu -j"$(nproc)" >>"$out/build.txt" 2>&1
      echo "build rc=$? in $(( $(date +%s) - start )) s"; tail -5 "$out/build.txt" ;;
    ops)
      "$py" -m pytest -q -p no:cacheprovider --timeout 300 tests/native/test_cuda_ops.py 2>&1 | tee "$out/ops.txt" | tail -40 ;;
    offload)
      "$py" -m pytest -q -s -p no:cacheprovider --timeout 300 tests/runtime/test_offload.py 2>&1 | tee "$out/offload.txt" | tail -40 ;;
    bench)
      "$py" -m lamina bench -m "$LAMINA_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" -p 512 -n 128 -t 16 -r 3 -ngl 0,10,99 \
        2>&1 | tee "$out/bench.txt" | tail -15 ;;
    profile)
      # GPU time of each kernel over a short all-GPU decode, to set against the wall time
      ncu --metrics gpu__time_duration.sum --print-summary per-kernel "$py" -m lamina bench \
        -m "$LAMINA_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" -p 0 -n 8 -t 16 -r 1 -ngl 99 >"$out/profile.txt" 2>&1
      grep -E "^  [a-z_]|gpu__time_duration|Invocations|rc=" "$out/profile.txt" | head -60 ;;
    sanitize)
      compute-sanitizer --tool memcheck --error-exitcode 3 "$py" -m pytest -q -p no:cacheprovider -x \
        tests/runtime/test_offload.py -k "cuda and tiny" 2>&1 | tee "$out/sanitize.txt" | tail -30 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
