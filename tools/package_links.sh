#!/usr/bin/env bash
# Lay the checkout out as the installed package, with links: DIR/lamina is
# runtime/ and DIR/lamina/convert is convert/. For tools that read the package
# without installing it (mypy in tools/lint.sh, a GPU machine without pip's
# build tools in tools/gpu_check.sh): put DIR on the path. Prints DIR.
#   tools/package_links.sh build/typecheck
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: tools/package_links.sh DIR}
rm -rf "$dir" && mkdir -p "$dir/lamina"
for entry in "$root"/runtime/*; do
  case $(basename "$entry") in __pycache__|*.so) continue ;; esac
  ln -s "$entry" "$dir/lamina/$(basename "$entry")"
done
ln -s "$root/convert" "$dir/lamina/convert"
echo "$dir"
