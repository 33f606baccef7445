//! `host new NAME --lang rust`: a cargo project (its files in guest/templates/rust/)
//! whose `build.sh` runs cargo for wasm32-wasip2, with the Rust SDK vendored.

use std::path::PathBuf;

use super::{File, WIT, fill};

/// The io contract's table, which the vendored SDK's contract test (`src/contract.rs`)
/// reads from `wit/io-cases.json`, beside the contract.
const IO_CASES: &str = include_str!("../../../../wit/io-cases.json");

/// The SDK's sources, as this host was built with them: `(path in the SDK, text)`.
const SDK_SOURCES: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../../guest/sdk/src/lib.rs"),
    ),
    (
        "src/conn.rs",
        include_str!("../../../../guest/sdk/src/conn.rs"),
    ),
    (
        "src/conn_state.rs",
        include_str!("../../../../guest/sdk/src/conn_state.rs"),
    ),
    (
        "src/contract.rs",
        include_str!("../../../../guest/sdk/src/contract.rs"),
    ),
    (
        "src/handler.rs",
        include_str!("../../../../guest/sdk/src/handler.rs"),
    ),
    (
        "src/handoff.rs",
        include_str!("../../../../guest/sdk/src/handoff.rs"),
    ),
    (
        "src/host.rs",
        include_str!("../../../../guest/sdk/src/host.rs"),
    ),
    (
        "src/input.rs",
        include_str!("../../../../guest/sdk/src/input.rs"),
    ),
    ("src/io.rs", include_str!("../../../../guest/sdk/src/io.rs")),
    (
        "src/raw.rs",
        include_str!("../../../../guest/sdk/src/raw.rs"),
    ),
    (
        "src/runtime.rs",
        include_str!("../../../../guest/sdk/src/runtime.rs"),
    ),
    (
        "src/snapshot.rs",
        include_str!("../../../../guest/sdk/src/snapshot.rs"),
    ),
    (
        "src/store.rs",
        include_str!("../../../../guest/sdk/src/store.rs"),
    ),
    (
        "src/tests.rs",
        include_str!("../../../../guest/sdk/src/tests.rs"),
    ),
    (
        "src/write_queue.rs",
        include_str!("../../../../guest/sdk/src/write_queue.rs"),
    ),
];

/// The project's own files: `(path in the project, template)`, from
/// guest/templates/rust/, where the hello guest is a member of the guest workspace (so
/// the normal build compiles and lints it). The files whose real name would act on
/// that workspace (a manifest, a toolchain, a .gitignore) end in `.in` there.
const TEMPLATE: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../../guest/templates/rust/Cargo.toml.in"),
    ),
    // The toolchain the host was built with: the guest's bindings come from the same
    // wit-bindgen, and wasm32-wasip2 must be there.
    (
        "rust-toolchain.toml",
        include_str!("../../../../guest/templates/rust/rust-toolchain.toml.in"),
    ),
    // The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
    (
        "src/lib.rs",
        include_str!("../../../../guest/templates/rust/src/lib.rs"),
    ),
    (
        "build.sh",
        include_str!("../../../../guest/templates/rust/build.sh"),
    ),
    (
        "README.md",
        include_str!("../../../../guest/templates/rust/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../../../guest/templates/rust/.gitignore.in"),
    ),
    // The SDK's manifest, standalone (in this repository it inherits from the guest
    // workspace).
    (
        "vendor/sandsock-sdk/Cargo.toml",
        include_str!("../../../../guest/templates/rust/vendor/sandsock-sdk/Cargo.toml.in"),
    ),
];

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

/// The files of the project for guest `name`: the template's with `{{name}}` and
/// `{{lib}}` (the name as a crate, which is also the wasm file's) filled in.
pub(super) fn files(name: &str) -> Vec<File> {
    let lib = name.replace('-', "_");
    let values = [("name", name), ("lib", lib.as_str())];
    TEMPLATE
        .iter()
        .map(|(path, text)| (PathBuf::from(path), fill(text, &values)))
        .chain([
            (PathBuf::from("wit/handler.wit"), WIT.to_string()),
            (PathBuf::from("wit/io-cases.json"), IO_CASES.to_string()),
        ])
        .chain(SDK_SOURCES.iter().map(|(path, text)| {
            (
                PathBuf::from("vendor/sandsock-sdk").join(path),
                text.to_string(),
            )
        }))
        .collect()
}
