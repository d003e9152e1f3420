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
mapfile -t tools < <("$py" -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['lint'], sep='\n')")
"$py" -m pip install -q "${tools[@]}" 2>&1 | grep -v -e "^WARNING: Location" -e "^WARNING: Running pip as" || true
mapfile -t native < <(git ls-files 'native/*.c' 'native/*.h' 'native/*.cu' 'native/*.cuh')

typecheck() {
  # mypy reads the package as it is installed (an editable install's import
  # hook is invisible to it): links in build/ give the checkout that shape
  MYPYPATH=$(tools/package_links.sh build/typecheck) "$py" -m mypy -p lamina
}

if [ "${1:-}" = "--mypy-only" ]; then
  typecheck
  exit 0
fi

if [ "${1:-}" = "--fix" ]; then
  "$py" -m ruff check --fix .
  "$py" -m ruff format .
  clang-format -i "${native[@]}"
  exit 0
fi

"$py" -m ruff check .
"$py" -m ruff format --check .

typecheck

clang-format --dry-run --Werror "${native[@]}"
echo "lint: clean"
