//! `host new NAME`: writes a ready-to-build guest project in the directory NAME, as
//! `cargo new` does: an HTTP hello to start from, the SDK and the contract of the
//! host that wrote it (carried in this binary, so the project builds anywhere, in or
//! out of this repository), a `build.sh` that writes `NAME.wasm`, and a README.
//!
//! Rust only for now; the Python and JavaScript SDKs are still to come.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The SDK's sources, as this host was built with them: `(path in the SDK, text)`.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../guest/sdk/src/lib.rs")),
    ("src/conn.rs", include_str!("../guest/sdk/src/conn.rs")),
    (
        "src/handler.rs",
        include_str!("../guest/sdk/src/handler.rs"),
    ),
    (
        "src/handoff.rs",
        include_str!("../guest/sdk/src/handoff.rs"),
    ),
    ("src/host.rs", include_str!("../guest/sdk/src/host.rs")),
    ("src/input.rs", include_str!("../guest/sdk/src/input.rs")),
    ("src/io.rs", include_str!("../guest/sdk/src/io.rs")),
    ("src/raw.rs", include_str!("../guest/sdk/src/raw.rs")),
    (
        "src/runtime.rs",
        include_str!("../guest/sdk/src/runtime.rs"),
    ),
    (
        "src/snapshot.rs",
        include_str!("../guest/sdk/src/snapshot.rs"),
    ),
    ("src/tests.rs", include_str!("../guest/sdk/src/tests.rs")),
    (
        "src/write_queue.rs",
        include_str!("../guest/sdk/src/write_queue.rs"),
    ),
];

/// The contract, which the SDK's bindings are generated from (`../../wit` from the
/// SDK's directory, as in this repository).
const WIT: &str = include_str!("../wit/handler.wit");

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

use sandsock_sdk::{Conn, ConnMap, Handler, Io};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
/// A head longer than this is refused: a client cannot make the guest hold more.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Default)]
struct Hello {
    /// Each connection's request head so far.
    heads: ConnMap<Vec<u8>>,
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let head = self.heads.entry(conn).or_default();
        head.extend_from_slice(data);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            io.write(conn, ANSWER);
        }
        if head.len() > MAX_HEAD {
            io.write(conn, b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            io.close(conn);
        }
    }

    fn on_eof(&mut self, io: &mut Io, conn: Conn) {
        io.close(conn);
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.heads.remove(&conn);
    }
}

sandsock_sdk::serve!(Hello);
"#;

/// Writes the project for guest `name` into the directory `name` (under `parent`);
/// returns the directory. A name that is not a crate name, or a directory that is
/// there already, is an error naming it.
pub fn new_project(parent: &Path, name: &str) -> Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a guest name: use letters, digits, `-` and `_`, starting with a letter"
        );
    }
    // What cargo refuses as a package name, and the SDK's own.
    const RESERVED: &[&str] = &[
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
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        bail!("`{name}` is not a guest name: it is reserved by Rust or the SDK; pick another");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already: pick another name", dir.display());
    }
    let lib = name.replace('-', "_");
    let files: Vec<(PathBuf, String)> = [
        ("Cargo.toml".into(), manifest(name, &lib)),
        ("rust-toolchain.toml".into(), TOOLCHAIN.to_string()),
        ("src/lib.rs".into(), HELLO.to_string()),
        ("build.sh".into(), build_script(name, &lib)),
        ("README.md".into(), readme(name)),
        (".gitignore".into(), format!("/target\n/{name}.wasm\n")),
        ("wit/handler.wit".into(), WIT.to_string()),
        (
            "vendor/sandsock-sdk/Cargo.toml".into(),
            SDK_MANIFEST.to_string(),
        ),
    ]
    .into_iter()
    .map(|(path, text): (String, String)| (PathBuf::from(path), text))
    .chain(SDK_SOURCES.iter().map(|(path, text)| {
        (
            Path::new("vendor/sandsock-sdk").join(path),
            text.to_string(),
        )
    }))
    .collect();
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    make_executable(&dir.join("build.sh"))?;
    Ok(dir)
}

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

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}
