#!/usr/bin/env bash
# Builds {{name}}.wasm beside this script, from any directory. Needs python3 (with the
# venv module): the first run installs componentize-py 0.25.1 from PyPI into a
# private environment, .tools/python here (or $SANDSOCK_TOOLS/python).
set -euo pipefail
cd "$(dirname "$0")"
version=0.25.1
tools="${SANDSOCK_TOOLS:-$PWD/.tools}/python"
if [ "$(cat "$tools/.componentize-py-version" 2>/dev/null)" != "$version" ]; then
    echo "installing componentize-py $version into $tools" >&2
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
    echo "$version" > "$tools/.componentize-py-version"
fi
"$tools/bin/componentize-py" -d wit -w stateful-handler componentize app \
    -p src -p vendor -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
