//! The compiled-component cache: a second start loads what the first compiled; a
//! truncated entry, an entry of another engine configuration and a directory others
//! can write are each refused with a line, and the host still serves; `--no-cache`
//! writes nothing.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use common::{Host, read_line, scratch};

const COMPILED: &str = "guest compiled";
const FROM_CACHE: &str = "guest loaded compiled from the cache";

/// Serves the built-in echo with `flags`, checks it echoes, and returns its log.
fn serve_echo(flags: &[&str]) -> String {
    let mut args = vec!["--guest", "echo"];
    args.extend_from_slice(flags);
    let host = Host::start(&args);
    let mut client = host.connect();
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut client), "ping");
    host.log()
}

/// The cache's entries (not its temporary files).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<PathBuf> = listing
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[test]
fn a_second_start_loads_the_compiled_guest_from_the_cache() {
    let dir = scratch("hit");
    let dir_arg = dir.to_str().unwrap();
    let first = serve_echo(&["--cache-dir", dir_arg]);
    assert!(first.contains(COMPILED), "{first}");
    let [entry] = &entries(&dir)[..] else {
        panic!("one entry: {:?}", entries(&dir));
    };
    let mode = fs::metadata(entry).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an entry is private");
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o022, 0, "nobody else can write the directory");

    let second = serve_echo(&["--cache-dir", dir_arg]);
    assert!(second.contains(FROM_CACHE), "{second}");
    assert!(!second.contains(COMPILED), "{second}");
}

#[test]
fn a_directory_it_creates_is_private() {
    let dir = scratch("create").join("made").join("here");
    serve_echo(&["--cache-dir", dir.to_str().unwrap()]);
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(entries(&dir).len(), 1);
}

#[test]
fn a_truncated_entry_is_compiled_again_and_replaced() {
    let dir = scratch("truncated");
    let dir_arg = dir.to_str().unwrap();
    serve_echo(&["--cache-dir", dir_arg]);
    let entry = entries(&dir).remove(0);
    let whole = fs::read(&entry).unwrap();
    fs::write(&entry, &whole[..whole.len() / 2]).unwrap();

    let log = serve_echo(&["--cache-dir", dir_arg]);
    assert!(log.contains("checksum does not match"), "{log}");
    assert!(log.contains(COMPILED), "{log}");
    assert_eq!(
        fs::read(&entry).unwrap(),
        whole,
        "the entry was written again"
    );
    assert!(serve_echo(&["--cache-dir", dir_arg]).contains(FROM_CACHE));
}

#[test]
fn an_entry_of_another_engine_configuration_is_compiled_again() {
    let dir = scratch("config");
    let dir_arg = dir.to_str().unwrap();
    serve_echo(&["--cache-dir", dir_arg]);
    let plain = entries(&dir).remove(0);
    // Fuel changes the engine's configuration, and so the entry's name.
    let fuel = ["--cache-dir", dir_arg, "--fuel", "100000000"];
    assert!(serve_echo(&fuel).contains(COMPILED));
    let entries = entries(&dir);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let fueled = entries.into_iter().find(|e| *e != plain).unwrap();
    // An entry compiled for the plain engine, under the fuel engine's name: the
    // checksum holds, so it is wasmtime that must refuse it.
    fs::copy(&plain, &fueled).unwrap();
    let log = serve_echo(&fuel);
    assert!(log.contains("not using"), "{log}");
    assert!(log.contains(COMPILED), "{log}");
}

#[test]
fn a_directory_others_can_write_is_refused_and_the_host_still_serves() {
    let dir = scratch("open");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let log = serve_echo(&["--cache-dir", dir.to_str().unwrap()]);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("compiled-component cache off"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].contains("others can write it (mode 777)"),
        "{log}"
    );
    assert!(log.contains(COMPILED), "{log}");
    assert!(entries(&dir).is_empty(), "nothing was written there");
}

#[test]
fn an_entry_others_can_write_is_not_loaded() {
    let dir = scratch("open-entry");
    let dir_arg = dir.to_str().unwrap();
    serve_echo(&["--cache-dir", dir_arg]);
    let entry = entries(&dir).remove(0);
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
    let log = serve_echo(&["--cache-dir", dir_arg]);
    assert!(log.contains("others can write it (mode 666)"), "{log}");
    assert!(log.contains(COMPILED), "{log}");
}

#[test]
fn no_cache_writes_nothing() {
    let home = scratch("no-cache");
    let host = Host::start_env(
        &["--guest", "echo", "--no-cache"],
        &[("XDG_CACHE_HOME", home.to_str().unwrap())],
    );
    let mut client = host.connect();
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut client), "ping");
    host.wait_for_log(COMPILED, Duration::from_secs(5));
    assert!(
        !host.log().contains("compiled-component cache"),
        "{}",
        host.log()
    );
    assert_eq!(
        fs::read_dir(&home).unwrap().count(),
        0,
        "nothing under {home:?}"
    );
}

#[test]
fn the_default_directory_is_under_xdg_cache_home() {
    let home = scratch("xdg");
    let host = Host::start_env(
        &["--guest", "echo"],
        &[("XDG_CACHE_HOME", home.to_str().unwrap())],
    );
    host.wait_for_log(COMPILED, Duration::from_secs(5));
    assert_eq!(entries(&home.join("sandsock")).len(), 1);
}
