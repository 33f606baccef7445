//! Builds the guest workspace (`guest/`) for wasm32-wasip2 so that the host can embed
//! the example guests and the tests can find the test guests.
//!
//! The guests get their own target directory: the outer cargo holds the lock on ours.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest = root.join("guest");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");

    for watched in [
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/sdk",
        "guest/examples",
        "guest/testing",
        "guest/templates",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }

    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .arg("--release")
        .args(["--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host build (or clippy's wrapper) must not leak into the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .expect("failed to start cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guests in {} failed; is the {GUEST_TARGET} target installed? \
             (rustup target add {GUEST_TARGET})",
            guest.display()
        );
    }

    let out = target_dir.join(GUEST_TARGET).join("release");
    println!("cargo:rustc-env=SANDSOCK_GUEST_DIR={}", out.display());
}
