#!/usr/bin/env bash
# Builds JavaScript guests into components of the sandsock:net@1.1.0
# `stateful-handler` world.
#
#   guest/js/build.sh OUT_DIR [NAME...]
#
# NAME is an example (echo, http, kv), a test guest (testing/throws), or a directory
# holding an app.js; the default is echo, http, kv and testing/throws. Each is built
# into OUT_DIR/BASENAME.wasm (testing/throws -> OUT_DIR/throws.wasm).
#
# The toolchain (componentize-qjs, pinned in package-lock.json) is installed once
# with `npm ci` into ${SANDSOCK_TOOLS:-<repo>/guest/target/tools}/js, and again only
# when the lock file changes. SANDSOCK_WIT overrides the contract (default
# <repo>/wit/handler.wit). Works from any directory; needs node and npm.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${SANDSOCK_TOOLS:-$repo/guest/target/tools}/js
wit=${SANDSOCK_WIT:-$repo/wit/handler.wit}

die() {
  echo "guest/js/build.sh: error: $*" >&2
  exit 1
}

[ $# -ge 1 ] || die "usage: build.sh OUT_DIR [NAME...] (NAME: echo, http, kv, testing/throws, or a directory with app.js)"
out=$1
shift
[ $# -ge 1 ] || set -- echo http kv testing/throws

command -v node >/dev/null || die "node is not installed (Node.js 18 or later is needed)"
command -v npm >/dev/null || die "npm is not installed (it comes with Node.js)"
[ -f "$wit" ] || die "the contract $wit is missing"

# The toolchain, installed once per lock file.
cli=$tools/node_modules/componentize-qjs/cli.mjs
if ! [ -f "$cli" ] || ! cmp -s "$here/package-lock.json" "$tools/package-lock.json"; then
  mkdir -p "$tools" || die "cannot create $tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  echo "installing componentize-qjs into $tools (once)" >&2
  if ! npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error >"$tools/npm.log" 2>&1; then
    rm -f "$tools/package-lock.json"
    die "npm ci failed (see $tools/npm.log): $(grep -m1 -i 'err' "$tools/npm.log" || tail -n1 "$tools/npm.log")"
  fi
  [ -f "$cli" ] || die "npm ci did not install componentize-qjs ($cli is missing)"
fi

mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/sandsock-js.XXXXXX")
trap 'rm -rf "$stage"' EXIT

for name in "$@"; do
  if [ -f "$name/app.js" ]; then
    src=$(cd "$name" && pwd)
  elif [ -f "$here/examples/$name/app.js" ]; then
    src=$here/examples/$name
  elif [ -f "$here/$name/app.js" ]; then
    src=$here/$name
  else
    die "no guest named '$name' (no app.js in $here/examples/$name, $here/$name or ./$name)"
  fi
  base=$(basename "$name")
  # The app's directory, with the SDK (sandsock.js and its modules, sandsock/) and
  # the entry beside its app.js.
  dir=$stage/$base
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -R "$src/." "$dir/"
  rm -rf "$dir/sandsock"
  cp -R "$here/sandsock" "$dir/"
  cp "$here/sandsock.js" "$here/sandsock-entry.js" "$dir/"
  start=$(date +%s%N)
  if ! (cd "$dir" && node "$cli" --wit "$wit" --world stateful-handler \
        --js sandsock-entry.js -o "$out/$base.wasm" --sync) >"$dir/build.log" 2>&1; then
    cat "$dir/build.log" >&2
    die "componentize-qjs failed on $name: $(grep -m1 -iE 'error|exception' "$dir/build.log" || tail -n1 "$dir/build.log")"
  fi
  echo "built $out/$base.wasm ($(wc -c <"$out/$base.wasm") bytes, $(( ($(date +%s%N) - start) / 1000000 )) ms)" >&2
done
