#!/usr/bin/env bash
# llama.cpp's own tools, the benchmark and interop peers, built once from the
# tree vendored in the llama-cpp-python sdist that tools/test.sh caches (the
# same llama.cpp the tests' llama-cpp-python runs), into
# ${LAMINA_CACHE:-~/.cache/lamina}/llama.cpp/build/bin. About 45 minutes on 2
# cores the first time; prints the bin directory.
#   tools/build_llama_cpp.sh [TARGET...]   (default: the tools lamina compares with)
set -euo pipefail
cache=${LAMINA_CACHE:-$HOME/.cache/lamina}
version=0.3.36
sdist=$cache/sdist/llama_cpp_python-$version.tar.gz
root=$cache/llama.cpp
src=$root/llama_cpp_python-$version/vendor/llama.cpp
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-bench llama-batched-bench llama-server llama-imatrix llama-quantize llama-perplexity
  llama-lookup llama-speculative)
if [ ! -f "$src/CMakeLists.txt" ]; then
  [ -f "$sdist" ] || { echo "tools/build_llama_cpp.sh: $sdist is missing (tools/test.sh downloads it)" >&2; exit 1; }
  mkdir -p "$root" && tar xzf "$sdist" -C "$root" "llama_cpp_python-$version/vendor/llama.cpp"
fi
# this CPU's extensions but AMX (tools/llama_cpp_cpu_flags.sh); cmake rebuilds what they change
read -r -a cpu_flags <<<"$("$(dirname "$0")/llama_cpp_cpu_flags.sh")"
cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  "${cpu_flags[@]}" >/dev/null
cmake --build "$root/build" -j"${CMAKE_BUILD_PARALLEL_LEVEL:-2}" --target "${targets[@]}" >&2
echo "$root/build/bin"
