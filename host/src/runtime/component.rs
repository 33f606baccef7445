//! A guest before and after compilation: [`GuestSource`] (bytes and where they came
//! from) and [`Guest`] (compiled, checked against the `handler` world, ready to
//! instantiate).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tracing::warn;
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use super::cache::{Cache, Miss};
use super::contracts::{self, Contract, Exports, StateExports};
use super::digest::{self, Digest};
use super::guest_log::GuestBudget;
use super::imports::GuestState;

/// A guest's bytes and where they came from, before compilation.
pub struct GuestSource {
    /// The name it is logged under (file stem or built-in name).
    pub name: String,
    /// Where it came from, for error messages: a path, or `built-in guest NAME`.
    pub origin: String,
    /// Its file, if it has one (built-in guests do not): what a reload reads.
    pub path: Option<PathBuf>,
    /// The component's bytes.
    pub bytes: Vec<u8>,
}

impl GuestSource {
    /// Reads a guest file; the guest is named after the file's stem in logs.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!("guest file not found: {}", path.display()),
            _ => {
                anyhow::Error::new(e).context(format!("cannot read guest file {}", path.display()))
            }
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into());
        Ok(Self {
            name,
            origin: path.display().to_string(),
            path: Some(path.to_path_buf()),
            bytes,
        })
    }

    /// The SHA-256 of its bytes.
    pub fn digest(&self) -> Digest {
        digest::of(&self.bytes)
    }
}

/// A compiled guest that fits the `handler` world, ready to instantiate. Cheap to
/// clone: the compiled code is shared.
#[derive(Clone)]
pub struct Guest {
    /// Its name, for logs.
    pub name: Arc<str>,
    /// The SHA-256 of its bytes: what a reload compares, and what logs show.
    pub digest: Digest,
    /// The engine its code was compiled for: instances are made in its stores.
    pub(super) engine: Engine,
    pub(super) pre: InstancePre<GuestState>,
    /// The version of the contract it was built for.
    pub contract: Contract,
    /// Where its `handle` is, in its contract's types.
    pub(super) exports: Exports,
    /// Where its optional `state` interface lives, if it exports one.
    pub(super) state: Option<StateExports>,
    /// How long compilation (or loading it compiled) and checking took.
    pub load_time: Duration,
    /// Whether it came compiled from the cache.
    pub cached: bool,
    /// Whether its code is the optimizing compiler's (else the baseline's, until a
    /// tier-up replaces it).
    pub optimized: bool,
    /// The log budget all its instances share.
    pub(super) log_budget: Arc<GuestBudget>,
}

impl Guest {
    /// The first 12 hex digits of its digest, for logs.
    pub fn short_digest(&self) -> String {
        digest::short(&self.digest)
    }

    /// Whether it exports the `state` interface (snapshot and restore).
    pub fn keeps_state(&self) -> bool {
        self.state.is_some()
    }

    /// How it was loaded, for the log.
    pub fn how_loaded(&self) -> &'static str {
        match (self.cached, self.optimized) {
            (true, _) => "loaded compiled from the cache",
            (false, true) => "compiled",
            (false, false) => "compiled by the baseline compiler (Winch); optimizing",
        }
    }
}

/// Compiles `source` for `engine` (whose compiler is the optimizing one if
/// `optimized`), or takes its compiled form from `cache`, and checks that it fits the
/// `handler` world. Errors name the origin and what is wrong, in one line.
pub fn compile(
    engine: &Engine,
    linker: &Linker<GuestState>,
    source: &GuestSource,
    cache: Option<&Cache>,
    optimized: bool,
) -> Result<Guest> {
    let started = Instant::now();
    let origin = &source.origin;
    check_header(&source.bytes).with_context(|| origin.clone())?;
    let digest = source.digest();
    let cached = match cache.map(|cache| cache.load(engine, &digest)) {
        Some(Ok(component)) => Some(component),
        Some(Err(Miss::Unusable(why))) => {
            warn!("compiled-component cache: not using {why}; compiling the guest again");
            None
        }
        Some(Err(Miss::Absent)) | None => None,
    };
    let from_cache = cached.is_some();
    let component = match cached {
        Some(component) => component,
        None => {
            let component = Component::new(engine, &source.bytes).map_err(|err| {
                let err = anyhow::Error::from(err);
                match async_abi(&err) {
                    Some(builtin) => anyhow::anyhow!(
                        "{origin}: built for the component model's async ABI (it uses \
                         `{builtin}`), which this host does not run: rebuild it \
                         synchronously (componentize-qjs: --sync; wit-bindgen and \
                         componentize-py make synchronous components by default)"
                    ),
                    None => err.context(format!("{origin}: not a valid component")),
                }
            })?;
            if let Some(cache) = cache
                && let Err(err) = cache.store(&digest, &component)
            {
                warn!("compiled-component cache: {err:#}");
            }
            component
        }
    };

    let named = contracts::built_for(engine, &component).with_context(|| origin.clone())?;
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    // The world it was built for, or today's when its names say nothing.
    let world = named.unwrap_or(Contract::CURRENT).world();
    if !exports.iter().any(|name| name == "handle") {
        bail!(
            "{origin}: does not fit the `{world}` world: it does not export `handle` (it exports: {})",
            list_or_none(&exports)
        );
    }
    let misfit = || format!("{origin}: does not fit the `{world}` world");
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(misfit)?;
    let (contract, exports) = Exports::find(named, &pre).with_context(misfit)?;
    let state = StateExports::find(&component, contract);
    let name: Arc<str> = source.name.as_str().into();
    Ok(Guest {
        engine: engine.clone(),
        log_budget: Arc::new(GuestBudget::new(name.clone())),
        name,
        digest,
        pre,
        contract,
        exports,
        state,
        load_time: started.elapsed(),
        cached: from_cache,
        optimized,
    })
}

/// The async-ABI builtin a component was refused for, if that is why: the engine
/// runs the handler world synchronously (concurrency support off), and wasmtime's
/// own words for it ("`task.cancel` requires the component model async feature")
/// do not tell a user what to do.
fn async_abi(err: &anyhow::Error) -> Option<String> {
    let text = format!("{err:#}");
    let at = text.find(" requires the component model async feature")?;
    let builtin = text[..at].rsplit(['`', ' ']).find(|s| !s.is_empty())?;
    Some(builtin.to_string())
}

/// Tells apart the inputs that are not components at all, with a hint for each.
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (no `\\0asm` header)");
    }
    // The version field tells a core module (1) from a component (0x0d, layer 1).
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "a core WebAssembly module, not a component (build the guest for the \
             wasm32-wasip2 target, which produces a component)"
        );
    }
    Ok(())
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_error(bytes: &[u8]) -> String {
        check_header(bytes).unwrap_err().to_string()
    }

    #[test]
    fn the_header_tells_text_modules_and_components_apart() {
        assert!(header_error(b"").starts_with("not a WebAssembly file"));
        assert!(header_error(b"hello, world").starts_with("not a WebAssembly file"));
        assert!(header_error(b"\0asm\x01\0").starts_with("not a WebAssembly file"));
        assert!(header_error(b"\0asm\x01\0\0\0").starts_with("a core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok(), "a component");
    }
}
