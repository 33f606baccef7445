//! `host new NAME --lang python`: `src/app.py` on the Python SDK (vendored under
//! `vendor/sandsock`), and a `build.sh` that installs componentize-py into a private
//! virtual environment and builds the component.

use std::path::PathBuf;

use super::{File, WIT};

/// The SDK's modules, as this host was built with them.
const SDK_SOURCES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../guest/python/sandsock/__init__.py"),
    ),
    (
        "runtime.py",
        include_str!("../../../guest/python/sandsock/runtime.py"),
    ),
    (
        "lines.py",
        include_str!("../../../guest/python/sandsock/lines.py"),
    ),
    (
        "wasm.py",
        include_str!("../../../guest/python/sandsock/wasm.py"),
    ),
];

/// The componentize-py the SDK was tested with; build.sh pins it.
const COMPONENTIZE_PY: &str = "0.25.1";

/// The guest to start from: HTTP/1.1, `hello` for every request, keep-alive.
const HELLO: &str = r#""""An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are
not expected) is answered `200 hello`, on the same connection. Start from here."""

import sandsock

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
# A head longer than this is refused: a client cannot make the guest hold more.
MAX_HEAD = 8 * 1024


class Hello(sandsock.Handler):
    def on_data(self, conn, data):
        # `data` starts with what the last call gave back with `unread` (a request
        # split across chunks); the SDK keeps that across a hot swap.
        answers = 0
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            start = end + 4
            answers += 1
        if answers:
            # One write for every request of the chunk (pipelining).
            conn.write(ANSWER * answers)
        rest = data[start:]
        if len(rest) > MAX_HEAD:
            conn.write(TOO_LARGE)
            conn.close()
        elif rest:
            conn.unread(rest)


WitWorld, State = sandsock.serve(Hello())
"#;

/// The files of the project for guest `name`.
pub(super) fn files(name: &str) -> Vec<File> {
    [
        ("src/app.py", HELLO.to_string()),
        ("build.sh", build_script(name)),
        ("README.md", readme(name)),
        (
            ".gitignore",
            format!("/.tools\n/{name}.wasm\n__pycache__/\n"),
        ),
        ("wit/handler.wit", WIT.to_string()),
    ]
    .into_iter()
    .map(|(path, text)| (PathBuf::from(path), text))
    .chain(SDK_SOURCES.iter().map(|(path, text)| {
        (
            PathBuf::from("vendor/sandsock").join(path),
            text.to_string(),
        )
    }))
    .collect()
}

fn build_script(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm beside this script, from any directory. Needs python3 (with the
# venv module): the first run installs componentize-py {COMPONENTIZE_PY} from PyPI into a
# private environment, .tools/python here (or $SANDSOCK_TOOLS/python).
set -euo pipefail
cd "$(dirname "$0")"
version={COMPONENTIZE_PY}
tools="${{SANDSOCK_TOOLS:-$PWD/.tools}}/python"
if [ "$(cat "$tools/.componentize-py-version" 2>/dev/null)" != "$version" ]; then
    echo "installing componentize-py $version into $tools" >&2
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
    echo "$version" > "$tools/.componentize-py-version"
fi
"$tools/bin/componentize-py" -d wit -w stateful-handler componentize app \
    -p src -p vendor -o {name}.wasm
echo "built $(pwd)/{name}.wasm"
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A sandsock handler guest in Python, made by `host new {name} --lang python`: an
HTTP/1.1 hello to start from, in `src/app.py`.

```sh
./build.sh                                   # writes {name}.wasm (the first run installs componentize-py)
host --guest {name}.wasm --listen 127.0.0.1:8080 --watch
curl http://127.0.0.1:8080/                  # hello
```

The first start compiles the component (about 18 MB: CPython is in it), which takes
seconds; the host caches the result, so later starts and swaps to the same build are
fast. Edit `src/app.py` and run `./build.sh` again: with `--watch` the host swaps the
new code in without dropping a connection.

`vendor/sandsock` is the Python SDK of the host that made this project (a `Handler`
with `on_accept`, `on_data`, `on_eof`, `on_close`, ... and `Conn` objects with
buffered writes) and `wit/handler.wit` the contract it speaks; a host that speaks
another version of the contract refuses the guest with one line saying so. An
exception a handler does not catch is a trap: the host logs the traceback and serves
the next connection with a fresh instance.
"#
    )
}
