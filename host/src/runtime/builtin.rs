//! The example guests built into the binary (`host examples`), and how `--guest` finds
//! a guest: a built-in name, or a file.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::runtime::component::GuestSource;

/// An example guest compiled into the host.
pub struct Example {
    /// The name `--guest` knows it by.
    pub name: &'static str,
    /// What it does, in a line.
    pub about: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

macro_rules! example {
    ($name:literal, $about:literal) => {
        Example {
            name: $name,
            about: $about,
            wasm: include_bytes!(concat!(env!("SANDSOCK_GUEST_DIR"), "/", $name, ".wasm")),
        }
    };
}

/// Every built-in guest; `http` is the default.
pub const EXAMPLES: &[Example] = &[
    example!(
        "http",
        "HTTP/1.1: every GET answers 200 `hello`, keep-alive, pipelining"
    ),
    example!("echo", "echoes every byte back, with backpressure"),
    example!(
        "kv",
        "line protocol SET/GET/DEL on a store shared by all connections (of one worker)"
    ),
    example!(
        "chat",
        "every line a client sends goes to every other client (of one worker)"
    ),
    example!(
        "proxy",
        "forwards each connection to $UPSTREAM (needs --env and --allow-connect)"
    ),
];

/// The built-in guest with this name.
pub fn find(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

/// Resolves `--guest`: a built-in name (a word without `/` or `.wasm`), or a path.
pub fn guest_source(spec: &str) -> Result<GuestSource> {
    let looks_like_path = spec.contains('/') || spec.ends_with(".wasm");
    if !looks_like_path {
        if let Some(example) = find(spec) {
            return Ok(GuestSource {
                name: example.name.into(),
                origin: format!("built-in guest `{}`", example.name),
                path: None,
                bytes: example.wasm.to_vec(),
            });
        }
        if !Path::new(spec).exists() {
            bail!(
                "guest `{spec}` not found: no such file, and not a built-in guest ({})",
                names()
            );
        }
    }
    GuestSource::read(Path::new(spec))
}

/// `host examples`: lists the built-in guests, or writes each to `DIR/NAME.wasm`.
pub fn examples_command(out: Option<&Path>) -> Result<()> {
    let Some(dir) = out else {
        for example in EXAMPLES {
            println!(
                "{:<6} {:>8} bytes  {}",
                example.name,
                example.wasm.len(),
                example.about
            );
        }
        return Ok(());
    };
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for example in EXAMPLES {
        let path: PathBuf = dir.join(format!("{}.wasm", example.name));
        fs::write(&path, example.wasm)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn names() -> String {
    EXAMPLES
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}
