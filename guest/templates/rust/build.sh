#!/usr/bin/env bash
# Builds {{name}}.wasm beside this script, from any directory. Needs rustup only: it
# installs the pinned toolchain and the wasm32-wasip2 target if they are missing.
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install 1.95.0 --profile minimal --target wasm32-wasip2
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{lib}}.wasm" {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
