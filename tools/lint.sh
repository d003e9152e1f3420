#!/usr/bin/env bash
# Lint, format and type checks; CI fails on any finding (.ci/run).
#   ruff check + ruff format --check   over every Python file
#   mypy                               over the lamina package
#   clang-format --dry-run --Werror    over native/ (.clang-format)
# The tools are pinned (pyproject.toml's `lint` extra) so a new release never
# turns CI red on its own. tools/lint.sh --fix applies ruff's fixes and both
# formatters instead of checking.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
"$py" -m pip install -q ruff==0.17.6 mypy==2.4.1 clang-format==23.1.5 2>&1 \
  | grep -v -e "^WARNING: Location" -e "^WARNING: Running pip as" || true
mapfile -t native < <(git ls-files 'native/*.c' 'native/*.h' 'native/*.cu' 'native/*.cuh')

if [ "${1:-}" = "--fix" ]; then
  "$py" -m ruff check --fix .
  "$py" -m ruff format .
  "$py" -m clang_format -i "${native[@]}" 2>/dev/null || clang-format -i "${native[@]}"
  exit 0
fi

"$py" -m ruff check .
"$py" -m ruff format --check .

# mypy reads the package as it is installed, `lamina` (runtime/) with
# `lamina.convert` (convert/) inside: a tree of links in build/ gives it that
# shape without an install (an editable install's import hook is invisible to it)
shim=build/typecheck
rm -rf "$shim" && mkdir -p "$shim/lamina"
for entry in runtime/*; do
  case $(basename "$entry") in __pycache__|*.so) continue ;; esac
  ln -s "$PWD/$entry" "$shim/lamina/$(basename "$entry")"
done
ln -s "$PWD/convert" "$shim/lamina/convert"
MYPYPATH=$shim "$py" -m mypy -p lamina

clang-format --dry-run --Werror "${native[@]}"
echo "lint: clean"
