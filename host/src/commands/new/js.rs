//! `host new NAME --lang js`: `app.js` on the JavaScript SDK (`sandsock.js` with its
//! modules under `sandsock/`, and its entry `sandsock-entry.js`, vendored beside it),
//! and a `build.sh` that installs the pinned componentize-qjs from npm into a private
//! directory and builds the component.

use std::path::PathBuf;

use super::{File, WIT};

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
];
const ENTRY: &str = include_str!("../../../../guest/js/sandsock-entry.js");
/// The toolchain, pinned: the lock file names the exact packages.
const PACKAGE: &str = include_str!("../../../../guest/js/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../../guest/js/package-lock.json");

/// The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
const HELLO: &str = r#"// An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are not
// expected) is answered `200 hello`, on the same connection. Start from here.

import {
  Handler, InputBuffers, SnapshotReader, SnapshotWriter, BadSnapshot, serve, utf8,
} from "./sandsock.js";

const ANSWER = utf8("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n");
const TOO_LARGE = utf8(
  "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
);
// A head longer than this is refused: a client cannot make the guest hold more.
const MAX_HEAD = 8 * 1024;
// The layout of this guest's own part of a snapshot (see `snapshot`).
const SNAPSHOT_VERSION = 1;

// Where the head starting at `from` ends: the index after "\r\n\r\n", or -1.
function headEnd(bytes, from) {
  for (let i = from; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i + 4;
    }
  }
  return -1;
}

class Hello extends Handler {
  constructor() {
    super();
    // Each connection's unfinished request (a head split across chunks).
    this.unfinished = new InputBuffers();
  }

  onData(conn, bytes) {
    this.unfinished.feed(conn, bytes, (input) => {
      let used = 0;
      for (let end = headEnd(input, 0); end >= 0; end = headEnd(input, used)) {
        conn.write(ANSWER);
        used = end;
      }
      if (input.length - used > MAX_HEAD) {
        conn.write(TOO_LARGE);
        conn.close();
        return input.length;
      }
      return used;
    });
  }

  onClose(conn) {
    this.unfinished.forget(conn);
  }

  // At a hot swap (or a recycle), unfinished requests go to the next instance.
  snapshot() {
    const w = new SnapshotWriter();
    w.u8(SNAPSHOT_VERSION);
    this.unfinished.encode(w);
    return w.finish();
  }

  restore(bytes) {
    const r = new SnapshotReader(bytes);
    if (r.u8() !== SNAPSHOT_VERSION) throw new BadSnapshot("another snapshot layout");
    const unfinished = InputBuffers.decode(r);
    r.finish();
    this.unfinished.merge(unfinished);
  }
}

serve(new Hello());
"#;

/// The files of the project for guest `name`.
pub(super) fn files(name: &str) -> Vec<File> {
    [
        ("app.js", HELLO.to_string()),
        ("sandsock.js", SDK.to_string()),
        ("sandsock-entry.js", ENTRY.to_string()),
        ("package.json", PACKAGE.to_string()),
        ("package-lock.json", PACKAGE_LOCK.to_string()),
        ("build.sh", build_script(name)),
        ("README.md", readme(name)),
        (".gitignore", format!("/.tools\n/{name}.wasm\n")),
        ("wit/handler.wit", WIT.to_string()),
    ]
    .into_iter()
    .map(|(path, text)| (PathBuf::from(path), text))
    .chain(
        SDK_MODULES
            .iter()
            .map(|(path, text)| (PathBuf::from("sandsock").join(path), text.to_string())),
    )
    .collect()
}

fn build_script(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm beside this script, from any directory. Needs node and npm: the
# first run installs the toolchain pinned in package-lock.json (componentize-qjs) from
# npm into a private directory, .tools/js here (or $SANDSOCK_TOOLS/js).
set -euo pipefail
cd "$(dirname "$0")"
tools="${{SANDSOCK_TOOLS:-$PWD/.tools}}/js"
cli="$tools/node_modules/componentize-qjs/cli.mjs"
if [ ! -f "$cli" ] || ! cmp -s package-lock.json "$tools/package-lock.json"; then
    echo "installing componentize-qjs into $tools" >&2
    mkdir -p "$tools"
    cp package.json package-lock.json "$tools/"
    npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error
fi
node "$cli" --wit wit/handler.wit --world stateful-handler --js sandsock-entry.js \
    -o {name}.wasm --sync
echo "built $(pwd)/{name}.wasm"
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A sandsock handler guest in JavaScript, made by `host new {name} --lang js`: an
HTTP/1.1 hello to start from, in `app.js`.

```sh
./build.sh                                   # writes {name}.wasm (the first run installs the toolchain)
host --guest {name}.wasm --listen 127.0.0.1:8080 --watch
curl http://127.0.0.1:8080/                  # hello
```

Edit `app.js` and run `./build.sh` again: with `--watch` the host swaps the new code
in without dropping a connection. The component runs QuickJS (componentize-qjs); a
handler gets `Conn` objects with buffered writes, and `console.log` goes to the
host's log.

`sandsock.js` (with its modules in `sandsock/`) is the JavaScript SDK of the host
that made this project, `sandsock-entry.js` binds it to the contract's imports, and `wit/handler.wit` is the
contract it speaks; a host that speaks another version of the contract refuses the
guest with one line saying so. An exception a handler does not catch is a trap: the
host logs it and serves the next connection with a fresh instance.
"#
    )
}
