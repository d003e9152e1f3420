#!/usr/bin/env bash
# The native core's unit tests under ASan + UBSan: builds the module with
# -DLAMINA_SANITIZE=ON into build/sanitize (or build/$1), then runs tests/native
# (or the pytest arguments given after the name) with libasan preloaded into
# Python. Any sanitizer report fails the run (UBSan does not recover; ASan
# aborts on its first error). Leak checking is off: CPython itself "leaks".
#   tools/sanitize_check.sh                 # build + tests/native
#   tools/sanitize_check.sh sanitize tests/native/test_quants_iq.py -k q4
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-sanitize}
shift || true
build="$root/build/$name"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAMINA_CUDA=OFF -DLAMINA_SANITIZE=ON >/dev/null
cmake --build "$build" -j2 >&2
libasan=$(${CC:-cc} -print-file-name=libasan.so)
libubsan=$(${CC:-cc} -print-file-name=libubsan.so)
workers=$(nproc); [ "$workers" -le 4 ] || workers=4   # pytest-xdist workers, as tools/test.sh
if [ $# -eq 0 ]; then set -- -q -p no:cacheprovider -n "$workers" tests/native; fi
cd "$root"
export LAMINA_NATIVE_DIR="$build/module"
export PYTHONPATH
PYTHONPATH=$(tools/package_links.sh "build/links-$name")
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}
# the suite's oracles (libggml-python, torch) are not sanitized; only lamina's core is checked
LD_PRELOAD="$libasan $libubsan" exec "${PYTHON:-python}" -m pytest "$@"
