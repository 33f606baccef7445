#!/usr/bin/env bash
# Builds the Python guests into components: build.sh OUT_DIR [NAME...]
#
# NAME is a directory under examples/ or testing/ holding an app.py (default: every
# example, and testing/raises). Each becomes OUT_DIR/NAME.wasm, built for the
# `stateful-handler` world of wit/handler.wit with componentize-py, which lives in
# a private venv at ${SANDSOCK_TOOLS:-<repo>/guest/target/tools}/python (created
# on first use; needs python3 with venv and network access to PyPI once).
# A component newer than its inputs (the SDK, the app's directory, the WIT, this
# script) is not rebuilt. Works from any directory.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

die() { echo "build.sh: error: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
wit="$repo/wit"

[ $# -ge 1 ] || die "usage: build.sh OUT_DIR [NAME...]"
out=$1
shift
mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)

if [ $# -eq 0 ]; then
    names=()
    for d in "$here"/examples/*/; do
        names+=("$(basename "$d")")
    done
    names+=(raises)
    set -- "${names[@]}"
fi

tools="${SANDSOCK_TOOLS:-$repo/guest/target/tools}/python"
cpy="$tools/bin/componentize-py"
if [ ! -x "$cpy" ] || [ "$(cat "$tools/.componentize-py-version" 2>/dev/null)" != "$COMPONENTIZE_PY_VERSION" ]; then
    echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into $tools" >&2
    command -v python3 >/dev/null || die "python3 is not installed"
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    python3 -m venv "$tools" || die "python3 -m venv $tools failed (is the venv module installed?)"
    "$tools/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" \
        || die "pip install componentize-py==$COMPONENTIZE_PY_VERSION failed"
    echo "$COMPONENTIZE_PY_VERSION" > "$tools/.componentize-py-version"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/sandsock-pybuild.XXXXXX")
trap 'rm -rf "$stage"' EXIT

for name in "$@"; do
    if [ -f "$here/examples/$name/app.py" ]; then
        src="$here/examples/$name"
    elif [ -f "$here/testing/$name/app.py" ]; then
        src="$here/testing/$name"
    else
        die "no guest named '$name' (looked for examples/$name/app.py and testing/$name/app.py)"
    fi
    target="$out/$name.wasm"
    if [ -f "$target" ] && [ -z "$(find "$here/sandsock" "$src" "$wit" "$here/build.sh" \
            -newer "$target" -not -name '*.pyc' -not -name __pycache__ -print -quit)" ]; then
        echo "build.sh: $name is up to date ($target)" >&2
        continue
    fi
    # Build from a copy: componentize-py's interpreter writes __pycache__ next to
    # the sources it imports, which must not litter the repository.
    rm -rf "$stage/sdk" "$stage/app"
    mkdir -p "$stage/sdk" "$stage/app"
    cp -R "$here/sandsock" "$stage/sdk/"
    (cd "$src" && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$stage/app/" \;)
    rm -rf "$stage/sdk/sandsock/__pycache__"
    started=$(date +%s)
    if ! (cd "$stage" && "$cpy" -d "$wit" -w stateful-handler componentize app \
            -p "$stage/sdk" -p "$stage/app" -o "$target.tmp" > "$stage/log" 2>&1); then
        cat "$stage/log" >&2
        rm -f "$target.tmp"
        die "componentize-py failed to build '$name' from $src (its output is above)"
    fi
    mv "$target.tmp" "$target"
    echo "build.sh: built $target ($(( $(date +%s) - started ))s, $(stat -c %s "$target") bytes)" >&2
done
