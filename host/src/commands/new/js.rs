//! `host new NAME --lang js`: `app.js` on the JavaScript SDK (`sandsock.js` with its
//! modules under `sandsock/`, and its entry `sandsock-entry.js`, vendored beside it),
//! and a `build.sh` that installs the pinned componentize-qjs from npm into a private
//! directory and builds the component; its files are in guest/templates/js/.

use std::path::PathBuf;

use super::{File, WIT, fill};

/// The SDK (the module a guest imports, and the modules it re-exports, as this host
/// was built with them) and the entry that binds it to the contract's imports.
const SDK: &str = include_str!("../../../../guest/js/sandsock.js");
const SDK_MODULES: &[(&str, &str)] = &[
    (
        "bytes.js",
        include_str!("../../../../guest/js/sandsock/bytes.js"),
    ),
    (
        "log.js",
        include_str!("../../../../guest/js/sandsock/log.js"),
    ),
    (
        "conn.js",
        include_str!("../../../../guest/js/sandsock/conn.js"),
    ),
    (
        "handler.js",
        include_str!("../../../../guest/js/sandsock/handler.js"),
    ),
    (
        "runtime.js",
        include_str!("../../../../guest/js/sandsock/runtime.js"),
    ),
    (
        "input.js",
        include_str!("../../../../guest/js/sandsock/input.js"),
    ),
    (
        "snapshot.js",
        include_str!("../../../../guest/js/sandsock/snapshot.js"),
    ),
    (
        "answer.js",
        include_str!("../../../../guest/js/sandsock/answer.js"),
    ),
    (
        "store.js",
        include_str!("../../../../guest/js/sandsock/store.js"),
    ),
];
const ENTRY: &str = include_str!("../../../../guest/js/sandsock-entry.js");
/// The toolchain, pinned: the lock file names the exact packages.
const PACKAGE: &str = include_str!("../../../../guest/js/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../../guest/js/package-lock.json");

/// The project's own files: `(path in the project, template)`, from
/// guest/templates/js/ (the .gitignore as `.gitignore.in`, so that it does not act on
/// the repository).
const TEMPLATE: &[(&str, &str)] = &[
    // The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
    (
        "app.js",
        include_str!("../../../../guest/templates/js/app.js"),
    ),
    (
        "build.sh",
        include_str!("../../../../guest/templates/js/build.sh"),
    ),
    (
        "README.md",
        include_str!("../../../../guest/templates/js/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../../../guest/templates/js/.gitignore.in"),
    ),
];

/// The files of the project for guest `name`: the template's with `{{name}}` filled in.
pub(super) fn files(name: &str) -> Vec<File> {
    TEMPLATE
        .iter()
        .map(|(path, text)| (PathBuf::from(path), fill(text, &[("name", name)])))
        .chain(
            [
                ("sandsock.js", SDK),
                ("sandsock-entry.js", ENTRY),
                ("package.json", PACKAGE),
                ("package-lock.json", PACKAGE_LOCK),
                ("wit/handler.wit", WIT),
            ]
            .into_iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string())),
        )
        .chain(
            SDK_MODULES
                .iter()
                .map(|(path, text)| (PathBuf::from("sandsock").join(path), text.to_string())),
        )
        .collect()
}
