#!/usr/bin/env bash
# Builds {{name}}.wasm beside this script, from any directory. Needs node and npm: the
# first run installs the toolchain pinned in package-lock.json (componentize-qjs) from
# npm into a private directory, .tools/js here (or $SANDSOCK_TOOLS/js).
set -euo pipefail
cd "$(dirname "$0")"
tools="${SANDSOCK_TOOLS:-$PWD/.tools}/js"
cli="$tools/node_modules/componentize-qjs/cli.mjs"
if [ ! -f "$cli" ] || ! cmp -s package-lock.json "$tools/package-lock.json"; then
    echo "installing componentize-qjs into $tools" >&2
    mkdir -p "$tools"
    cp package.json package-lock.json "$tools/"
    npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error
fi
node "$cli" --wit wit/handler.wit --world stateful-handler --js sandsock-entry.js \
    -o {{name}}.wasm --sync
echo "built $(pwd)/{{name}}.wasm"
