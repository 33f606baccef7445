//! `host new NAME [--lang rust|python|js]`: writes a ready-to-build guest project in
//! the directory NAME, as `cargo new` does: an HTTP hello to start from, the SDK and
//! the contract of the host that wrote it (carried in this binary, so the project
//! builds anywhere, in or out of this repository), a `build.sh` that installs what it
//! needs into a private environment and writes `NAME.wasm`, and a README.
//!
//! One file per language gives the project's files, embedded from the templates in
//! guest/templates/ (real files, built and tested there); this one checks the name,
//! fills the templates' placeholders and writes the files.

mod js;
mod python;
mod rust;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The languages `host new` writes projects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the SDK of this host; cargo and wasm32-wasip2.
    Rust,
    /// Python, with the SDK of this host; componentize-py, installed by build.sh.
    Python,
    /// JavaScript, with the SDK of this host; its toolchain from npm, installed by
    /// build.sh.
    Js,
}

/// A file of a project: its path in the project, and its text.
type File = (PathBuf, String);

/// The contract, which every language's bindings are generated from.
const WIT: &str = include_str!("../../../../wit/handler.wit");

/// Writes the project for guest `name` in `lang` into the directory `name` (under
/// `parent`); returns the directory. A name that is not a guest name, or a directory
/// that is there already, is an error naming it.
pub fn new_project(parent: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a guest name: use letters, digits, `-` and `_`, starting with a letter"
        );
    }
    if lang == Lang::Rust && rust::RESERVED.contains(&name.replace('-', "_").as_str()) {
        bail!("`{name}` is not a guest name: it is reserved by Rust or the SDK; pick another");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already: pick another name", dir.display());
    }
    let files = match lang {
        Lang::Rust => rust::files(name),
        Lang::Python => python::files(name),
        Lang::Js => js::files(name),
    };
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

/// Fills a template's placeholders: each `{{KEY}}` of `values` becomes its value. Plain
/// replacement, no escapes: the templates are ours, and nothing else in them looks like
/// a placeholder.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}
