//! `host new NAME --lang rust`: a cargo project whose `build.sh` runs cargo for
//! wasm32-wasip2, with the Rust SDK vendored.

use std::path::PathBuf;

use super::{File, WIT};

/// The SDK's sources, as this host was built with them: `(path in the SDK, text)`.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../guest/sdk/src/lib.rs")),
    ("src/conn.rs", include_str!("../../../guest/sdk/src/conn.rs")),
    (
        "src/handler.rs",
        include_str!("../../../guest/sdk/src/handler.rs"),
    ),
    (
        "src/handoff.rs",
        include_str!("../../../guest/sdk/src/handoff.rs"),
    ),
    ("src/host.rs", include_str!("../../../guest/sdk/src/host.rs")),
    ("src/input.rs", include_str!("../../../guest/sdk/src/input.rs")),
    ("src/io.rs", include_str!("../../../guest/sdk/src/io.rs")),
    ("src/raw.rs", include_str!("../../../guest/sdk/src/raw.rs")),
    (
        "src/runtime.rs",
        include_str!("../../../guest/sdk/src/runtime.rs"),
    ),
    (
        "src/snapshot.rs",
        include_str!("../../../guest/sdk/src/snapshot.rs"),
    ),
    ("src/tests.rs", include_str!("../../../guest/sdk/src/tests.rs")),
    (
        "src/write_queue.rs",
        include_str!("../../../guest/sdk/src/write_queue.rs"),
    ),
];

/// The SDK's manifest, standalone (in this repository it inherits from the guest
/// workspace).
const SDK_MANIFEST: &str = r#"[package]
name = "sandsock-sdk"
description = "Write sandsock handler guests: buffered connections over the raw readiness interface"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "sandsock_sdk"

[dependencies]
wit-bindgen = "0.61"
"#;

/// The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
const HELLO: &str = r#"//! An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are not
//! expected) is answered `200 hello`, on the same connection. Start from here.

use sandsock_sdk::{
    BadSnapshot, Conn, Handler, InputBuffers, Io, SnapshotReader, SnapshotWriter,
};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// A head longer than this is refused: a client cannot make the guest hold more.
const MAX_HEAD: usize = 8 * 1024;
/// The layout of this guest's own part of a snapshot (see `snapshot`).
const SNAPSHOT_VERSION: u8 = 1;

#[derive(Default)]
struct Hello {
    /// Each connection's unfinished request (a head split across chunks).
    unfinished: InputBuffers,
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let refused = self.unfinished.feed(conn, data, |input| {
            let mut used = 0;
            while let Some(end) = input[used..].windows(4).position(|w| w == b"\r\n\r\n") {
                io.write(conn, ANSWER);
                used += end + 4;
            }
            if input.len() - used > MAX_HEAD {
                return (input.len(), true);
            }
            (used, false)
        });
        if refused {
            io.write(conn, TOO_LARGE);
            io.close(conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.unfinished.forget(conn);
    }

    /// At a hot swap (or a recycle), unfinished requests go to the next instance.
    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        self.unfinished.encode(&mut w);
        w.into_bytes()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let mut r = SnapshotReader::new(state);
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(BadSnapshot::new("another snapshot layout"));
        }
        let unfinished = InputBuffers::decode(&mut r)?;
        r.finish()?;
        self.unfinished.merge(unfinished);
        Ok(())
    }
}

sandsock_sdk::serve!(Hello);
"#;

/// The toolchain the host was built with: the guest's bindings come from the same
/// wit-bindgen, and wasm32-wasip2 must be there.
const TOOLCHAIN: &str = r#"[toolchain]
channel = "1.95.0"
targets = ["wasm32-wasip2"]
"#;

fn manifest(name: &str, lib: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "A sandsock handler guest"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# The build writes target/wasm32-wasip2/release/{lib}.wasm; build.sh copies it to {name}.wasm.
name = "{lib}"
crate-type = ["cdylib"]

[dependencies]
# The SDK of the host that made this project, with the contract it speaks (wit/).
sandsock-sdk = {{ path = "vendor/sandsock-sdk" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
# A panic traps; the host replaces the instance. Unwinding would only add size.
panic = "abort"
# Keep the name section: the host logs guest backtraces with function names.
strip = "debuginfo"

# A project of its own, even when made inside another cargo workspace.
[workspace]
"#
    )
}

fn build_script(name: &str, lib: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm beside this script, from any directory. Needs rustup only: it
# installs the pinned toolchain and the wasm32-wasip2 target if they are missing.
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install 1.95.0 --profile minimal --target wasm32-wasip2
cargo build --release --target wasm32-wasip2
cp "${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{lib}.wasm" {name}.wasm
echo "built $(pwd)/{name}.wasm"
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A sandsock handler guest, made by `host new {name}`: an HTTP/1.1 hello to start
from, in `src/lib.rs`.

```sh
./build.sh                                   # writes {name}.wasm
host --guest {name}.wasm --listen 127.0.0.1:8080 --watch
curl http://127.0.0.1:8080/                  # hello
```

Edit `src/lib.rs` and run `./build.sh` again: with `--watch` the host swaps the new
code in without dropping a connection. `vendor/sandsock-sdk` is the SDK of the host
that made this project and `wit/handler.wit` the contract it speaks; a host that
speaks another version of the contract refuses the guest with one line saying so.
"#
    )
}

/// What cargo refuses as a package name, and the SDK's own.
pub(super) const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "test",
    "proc_macro",
    "self",
    "super",
    "crate",
    "Self",
    "sandsock_sdk",
    "fn",
    "mod",
    "struct",
    "enum",
    "impl",
    "trait",
    "type",
    "use",
    "let",
    "loop",
    "match",
    "if",
    "else",
    "while",
    "for",
    "in",
    "return",
    "break",
    "continue",
    "pub",
    "ref",
    "mut",
    "const",
    "static",
    "extern",
    "unsafe",
    "where",
    "as",
    "async",
    "await",
    "dyn",
    "move",
    "true",
    "false",
];

/// The files of the project for guest `name`.
pub(super) fn files(name: &str) -> Vec<File> {
    let lib = name.replace('-', "_");
    [
        ("Cargo.toml", manifest(name, &lib)),
        ("rust-toolchain.toml", TOOLCHAIN.to_string()),
        ("src/lib.rs", HELLO.to_string()),
        ("build.sh", build_script(name, &lib)),
        ("README.md", readme(name)),
        (".gitignore", format!("/target\n/{name}.wasm\n")),
        ("wit/handler.wit", WIT.to_string()),
        ("vendor/sandsock-sdk/Cargo.toml", SDK_MANIFEST.to_string()),
    ]
    .into_iter()
    .map(|(path, text)| (PathBuf::from(path), text))
    .chain(SDK_SOURCES.iter().map(|(path, text)| {
        (
            PathBuf::from("vendor/sandsock-sdk").join(path),
            text.to_string(),
        )
    }))
    .collect()
}
