#!/usr/bin/env bash
# Coverage-guided fuzzing of one target (tests/fuzz/fuzz_TARGET.py) under
# atheris for SECONDS: the committed seeds of tests/fuzz/corpus/TARGET are read,
# new inputs go to build/fuzz-corpus/TARGET (not committed), crashes to
# build/fuzz-crashes/ (each becomes a fix and a file corpus/TARGET/crash-*).
#   tools/fuzz.sh gguf 60            # one minute on the GGUF reader
#   tools/fuzz.sh all 30             # every target, 30 s each
# Extra arguments go to libFuzzer (-jobs=2, -max_len=..., -runs=N...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: tools/fuzz.sh TARGET|all SECONDS [libFuzzer flags]" >&2
  echo "targets: $(cd tests/fuzz && ls fuzz_*.py | sed 's/fuzz_//; s/\.py//' | tr '\n' ' ')" >&2
  exit 2
fi
target=$1 seconds=$2
shift 2
py=${PYTHON:-python}
if [ "$target" = all ]; then
  for t in $(cd tests/fuzz && ls fuzz_*.py | sed 's/fuzz_//; s/\.py//'); do
    "$0" "$t" "$seconds" "$@"
  done
  exit 0
fi
work=build/fuzz-corpus/$target crashes=build/fuzz-crashes/$target
mkdir -p "$work" "$crashes"
flags=(-max_total_time="$seconds" -artifact_prefix="$crashes/" -print_final_stats=1 -rss_limit_mb=4096 -timeout=20)
if [ -f "tests/fuzz/dict/$target.dict" ]; then flags+=(-dict="tests/fuzz/dict/$target.dict"); fi
echo "== fuzz $target for ${seconds}s" >&2
seeds=tests/fuzz/corpus/$target
[ -d "$seeds" ] || seeds=
exec "$py" tests/fuzz/run.py "$target" "${flags[@]}" "$@" "$work" ${seeds:+"$seeds"}
