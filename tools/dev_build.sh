#!/usr/bin/env bash
# Developer build of the native module without pip: builds into build/<name>
# and prints the LAMINA_NATIVE_DIR to export. Each developer (or helper) uses
# its own name so parallel builds never share a directory.
#   eval "$(tools/dev_build.sh mine)"   # then: python -m pytest tests/...
set -euo pipefail
name=${1:-dev}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/$name"
# LAMINA_DEV_CUDA=1 also builds liblamina_cuda into build/<name>/module (slow)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAMINA_CUDA="${LAMINA_DEV_CUDA:-0}" >/dev/null
cmake --build "$build" -j2 >&2
echo "export LAMINA_NATIVE_DIR=$build/module"
