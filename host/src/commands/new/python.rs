//! `host new NAME --lang python`: `src/app.py` on the Python SDK (vendored under
//! `vendor/sandsock`), and a `build.sh` that installs componentize-py into a private
//! virtual environment and builds the component; its files are in
//! guest/templates/python/.

use std::path::PathBuf;

use super::{File, WIT, fill};

/// The SDK's modules, as this host was built with them.
const SDK_SOURCES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../../guest/python/sandsock/__init__.py"),
    ),
    (
        "runtime.py",
        include_str!("../../../../guest/python/sandsock/runtime.py"),
    ),
    (
        "snapshot.py",
        include_str!("../../../../guest/python/sandsock/snapshot.py"),
    ),
    (
        "lines.py",
        include_str!("../../../../guest/python/sandsock/lines.py"),
    ),
    (
        "answer.py",
        include_str!("../../../../guest/python/sandsock/answer.py"),
    ),
    (
        "store.py",
        include_str!("../../../../guest/python/sandsock/store.py"),
    ),
    (
        "wasm.py",
        include_str!("../../../../guest/python/sandsock/wasm.py"),
    ),
];

/// The project's own files: `(path in the project, template)`, from
/// guest/templates/python/ (the .gitignore as `.gitignore.in`, so that it does not act
/// on the repository). build.sh pins the componentize-py the SDK was tested with.
const TEMPLATE: &[(&str, &str)] = &[
    // The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
    (
        "src/app.py",
        include_str!("../../../../guest/templates/python/src/app.py"),
    ),
    (
        "build.sh",
        include_str!("../../../../guest/templates/python/build.sh"),
    ),
    (
        "README.md",
        include_str!("../../../../guest/templates/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../../../guest/templates/python/.gitignore.in"),
    ),
];

/// The files of the project for guest `name`: the template's with `{{name}}` filled in.
pub(super) fn files(name: &str) -> Vec<File> {
    TEMPLATE
        .iter()
        .map(|(path, text)| (PathBuf::from(path), fill(text, &[("name", name)])))
        .chain([(PathBuf::from("wit/handler.wit"), WIT.to_string())])
        .chain(SDK_SOURCES.iter().map(|(path, text)| {
            (
                PathBuf::from("vendor/sandsock").join(path),
                text.to_string(),
            )
        }))
        .collect()
}
