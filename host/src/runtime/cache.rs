//! [`Cache`]: compiled components kept on disk, so that a start or a swap to a guest
//! seen before skips compilation (about 130 ms for a small Rust guest, seconds for a
//! Python one; loading a cached one takes about a millisecond).
//!
//! Loading compiled code is `unsafe` in wasmtime for a reason: the file is machine
//! code the host will run, so whoever can write it can run code as the host. The
//! cache therefore trusts only a directory and entries that no other user can write:
//! the directory is created `0700` and entries `0600`, and a directory or an entry
//! that is group- or world-writable, or owned by someone else, is refused with one
//! log line (the guest is then compiled as if there were no cache).
//!
//! An entry is named for the component's SHA-256 and the engine's compatibility hash
//! (its configuration and wasmtime's version), written to a temporary file and
//! renamed into place, and carries a SHA-256 of its own contents: a truncated or
//! corrupt entry is found before wasmtime sees it, and recompiled with a warning.

use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::digest::{self, Digest};

/// What an entry starts with: this cache's format, version 1.
const MAGIC: &[u8; 16] = b"sandsock-cwasm1\n";
/// The entry's own SHA-256 follows the magic.
const HEADER: usize = MAGIC.len() + 32;
/// Permission bits that let others write: a directory or entry with any of them is
/// not trusted.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// A directory of compiled components for one engine configuration.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// The engine's compatibility hash, in hex: part of every entry's name.
    engine: String,
}

/// Why a cached entry was not used.
#[derive(Debug)]
pub enum Miss {
    /// There is none yet: compile and store.
    Absent,
    /// There is one, but it is not usable: compile, store over it, and say why.
    Unusable(String),
}

impl Cache {
    /// Opens the cache in `dir` for `engine`, creating the directory (mode 0700) if
    /// need be. An error says why it cannot be trusted or made, in one line.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        let meta = fs::metadata(dir)
            .with_context(|| format!("cannot read the cache directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("the cache directory {} is not a directory", dir.display());
        }
        check_trusted(&meta).map_err(|why| {
            anyhow::anyhow!(
                "refusing the cache directory {}: {why} (it must be yours and writable by you \
                 alone: chmod 700 it, or pick another with --cache-dir)",
                dir.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            engine: engine_hash(engine),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled form of the component with SHA-256 `digest`, if the cache holds
    /// a usable one.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Result<Component, Miss> {
        let path = self.entry(digest);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(unusable(&path, e)),
        };
        if !meta.is_file() {
            return Err(unusable(&path, "not a regular file"));
        }
        check_trusted(&meta).map_err(|why| unusable(&path, why))?;
        let bytes = fs::read(&path).map_err(|e| unusable(&path, e))?;
        let payload = verified_payload(&bytes).map_err(|why| unusable(&path, why))?;
        // SAFETY: the entry is one this cache wrote (it carries our header and its own
        // checksum matches) in a directory only this user can write, so it holds what
        // `Component::serialize` produced for this engine's configuration; wasmtime
        // checks the configuration and version again and refuses a mismatch.
        unsafe { Component::deserialize(engine, payload) }.map_err(|e| unusable(&path, e))
    }

    /// Whether an entry for the component with SHA-256 `digest` is there (not
    /// whether it is usable: [`load`](Self::load) checks that).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.entry(digest).is_file()
    }

    /// Stores the compiled `component` for the component with SHA-256 `digest`:
    /// written to a private temporary file, then renamed into place, so that a
    /// reader never sees half of it.
    pub fn store(&self, digest: &Digest, component: &Component) -> Result<()> {
        let payload = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("cannot serialize the compiled component")?;
        let path = self.entry(digest);
        let temporary = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            digest::short(digest),
            std::process::id(),
            next_temporary()
        ));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(&payload))?;
            file.write_all(&payload)?;
            fs::rename(&temporary, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temporary);
            anyhow::Error::new(e)
                .context(format!("cannot write the cache entry {}", path.display()))
        })
    }

    fn entry(&self, digest: &Digest) -> PathBuf {
        let component = digest::hex(digest);
        self.dir.join(format!("{component}-{}.cwasm", self.engine))
    }
}

/// Where the cache lives unless `--cache-dir` says: `$XDG_CACHE_HOME/sandsock`, else
/// `~/.cache/sandsock`; `None` when neither variable is set.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME").filter(|dir| !dir.is_empty())?;
            Some(PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("sandsock"))
}

/// Refuses what another user could have written: owned by someone else, or
/// writable by group or world.
fn check_trusted(meta: &fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("it is owned by uid {}, not {me}", meta.uid()));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "others can write it (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The compiled component inside an entry, once its header and checksum hold.
fn verified_payload(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an entry of this cache (truncated, or another format)");
    }
    let (sum, payload) = bytes[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        return Err("its checksum does not match (truncated or corrupt)");
    }
    Ok(payload)
}

fn unusable(path: &Path, why: impl std::fmt::Display) -> Miss {
    Miss::Unusable(format!("{}: {why}", path.display()))
}

/// The engine's compatibility hash in hex: wasmtime's own `Hash` of everything in
/// the configuration that compiled code depends on, wasmtime's version included,
/// fed to SHA-256 (the first 16 bytes name the entry).
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `Hasher` that feeds SHA-256, so the hash is the same on every run.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

/// Temporary files of one process never collide.
fn next_temporary() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn an_entry_is_checked_before_it_is_used() {
        let good = entry(b"compiled code");
        assert_eq!(verified_payload(&good), Ok(&b"compiled code"[..]));
        for end in 0..good.len() {
            assert!(
                verified_payload(&good[..end]).is_err(),
                "truncated at {end}"
            );
        }
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(verified_payload(&flipped).is_err(), "a flipped bit");
        let mut other = good.clone();
        other[0] = b'S';
        assert!(verified_payload(&other).is_err(), "another format");
    }

    #[test]
    fn the_engine_hash_is_stable_and_tells_configurations_apart() {
        let plain = Engine::default();
        assert_eq!(engine_hash(&plain), engine_hash(&Engine::default()));
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fuel = Engine::new(&config).unwrap();
        assert_ne!(engine_hash(&plain), engine_hash(&fuel));
        assert_eq!(engine_hash(&plain).len(), 32);
    }
}
