//! Every shell command in the repository's READMEs (README.md, and those under
//! `guest/`, the templates' included), run as written, so that none can go stale.
//!
//! Each `sh` block is preceded by a note, an HTML comment that Markdown does not show,
//! which says how to run it (or why not: only container and cluster commands, and the
//! test command that runs this test):
//!
//! ```text
//! <!-- readme-test
//! in: scratch/canary         where it runs: the repository's root (the default; for a
//!                            template, the project `host new` made), or a directory
//!                            under this README's scratch directory
//! serve: 2                   commands (counted from 1, comments and continuations
//!                            aside) that serve in the foreground; a command that ends
//!                            in `&` does too: it runs in the background, and the next
//!                            command waits until it listens on every address its
//!                            `--listen`, `--listen-tls` and `--admin` name
//!                            (127.0.0.1:8080, the host's default, if no listener)
//! wait: 127.0.0.1:10000      more addresses to wait for (a server that is not `host`)
//! before: rm -rf my-guest    a command to run first: what the prose around says to do
//! then: curl -s 127.0.0.1:8080/   a check after the block
//! expect: hello              its standard output must hold this
//! log: canary: trying        its standard error must come to hold this (60 s at most)
//! name: certs / needs: certs a block to run first, once, in the same scratch directory
//! env: CARGO_TARGET_DIR=$TESTTMP/x   for the block; $REPO, $SCRATCH, $TESTTMP are set
//! replace: /path/to/sandsock => $REPO   a placeholder the reader fills in
//! write: shout/Cargo.toml    (on a non-`sh` block) written to the scratch directory
//! only: 2, 3                 run only these commands (the note's `why:` says why)
//! skip: why                  not run
//! -->
//! ```
//!
//! `SANDSOCK_README=PART` walks only the READMEs whose path holds PART.
//!
//! Blocks run one at a time, in the order of the file (their servers use the README's
//! fixed ports), each as one bash script in its own process group with `set -e`,
//! `target/release` first on `PATH` (as the README tells a reader to do) and every
//! process it started killed when it ends.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{host_bin, languages, test_cache_home};

/// How long one block may take: a first build of a guest project installs its
/// toolchain and compiles its dependencies.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a `log:` line may take to appear once the block's commands are done.
const LOG_TIMEOUT: Duration = Duration::from_secs(60);

/// The keys a note may have (see the top of this file): a misspelt one would drop
/// its check without a word.
const KEYS: [&str; 15] = [
    "in", "serve", "wait", "before", "then", "expect", "log", "name", "needs", "env", "replace",
    "write", "only", "why", "skip",
];

/// One fenced block and the note before it.
struct Block {
    /// Where it starts, as `FILE:LINE`.
    at: String,
    lang: String,
    body: String,
    note: HashMap<String, Vec<String>>,
}

impl Block {
    fn get(&self, key: &str) -> Option<&str> {
        self.note
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn all(&self, key: &str) -> &[String] {
        self.note.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The numbers in a comma-separated key (`serve: 1, 3`).
    fn numbers(&self, key: &str) -> Vec<usize> {
        self.all(key)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: `{key}: {n}` is not a number", self.at))
            })
            .collect()
    }
}

/// The fenced blocks of a Markdown file, each with the `readme-test` note just before
/// it (blank lines between allowed).
fn blocks(file: &Path, shown_as: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{shown_as}: {e}"));
    let mut blocks = Vec::new();
    let mut note: Option<HashMap<String, Vec<String>>> = None;
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if let Some(rest) = line.trim_start().strip_prefix("<!-- readme-test") {
            let mut entries = HashMap::<String, Vec<String>>::new();
            let mut add = |entry: &str| {
                let entry = entry.trim();
                if entry.is_empty() {
                    return;
                }
                let (key, value) = entry.split_once(':').unwrap_or_else(|| {
                    panic!("{shown_as}:{}: `{entry}` is not `key: value`", n + 1)
                });
                entries
                    .entry(key.trim().to_owned())
                    .or_default()
                    .push(value.trim().to_owned());
            };
            let mut rest = rest.to_owned();
            while !rest.contains("-->") {
                add(&rest);
                rest = lines
                    .next()
                    .unwrap_or_else(|| panic!("{shown_as}:{}: an unclosed readme-test note", n + 1))
                    .1
                    .to_owned();
            }
            add(rest.split("-->").next().unwrap());
            if let Some(key) = entries.keys().find(|key| !KEYS.contains(&key.as_str())) {
                panic!(
                    "{shown_as}:{}: `{key}` is not a readme-test key ({KEYS:?})",
                    n + 1
                );
            }
            note = Some(entries);
        } else if let Some(lang) = line.strip_prefix("```") {
            let mut body = String::new();
            for (_, line) in lines.by_ref() {
                if line.starts_with("```") {
                    break;
                }
                body.push_str(line);
                body.push('\n');
            }
            blocks.push(Block {
                at: format!("{shown_as}:{}", n + 1),
                lang: lang.trim().to_owned(),
                body,
                note: note.take().unwrap_or_default(),
            });
        } else if !line.trim().is_empty() {
            // A note belongs to the block right after it, not to one further down.
            note = None;
        }
    }
    blocks
}

/// The commands of a `sh` block: continuation lines joined, blank and comment lines
/// left out (a comment after a command stays: bash ignores it).
fn commands(body: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        let line = if current.is_empty() {
            line
        } else {
            line.trim_start()
        };
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// Whether a command (its comment aside) runs in the background.
fn backgrounded(command: &str) -> bool {
    command
        .split(" #")
        .next()
        .unwrap()
        .trim_end()
        .ends_with('&')
}

/// Whether the last command of an and-list is the host serving (`host` with no
/// subcommand, however it is invoked), which runs until stopped.
fn serves_forever(command: &str) -> bool {
    let command = command.split(" #").next().unwrap();
    let last = command.rsplit("&&").next().unwrap();
    let mut words = last.split_whitespace();
    let Some(program) = words.next() else {
        return false;
    };
    let mut rest: Vec<&str> = words.collect();
    if program == "cargo" {
        if rest.first() != Some(&"run") {
            return false;
        }
        rest = match rest.iter().position(|w| *w == "--") {
            Some(dashes) => rest[dashes + 1..].to_vec(),
            None => Vec::new(),
        };
    } else if !(program == "host" || program.ends_with("/host")) {
        return false;
    }
    let first = rest.first().copied().unwrap_or("");
    let answers_and_exits = [
        "check",
        "examples",
        "new",
        "load",
        "health",
        "replay",
        "help",
        "--version",
        "-V",
        "-h",
        "--help",
    ];
    !answers_and_exits.contains(&first)
}

/// Where a server command listens: for the host, the addresses its `--listen`,
/// `--listen-tls` and `--admin` name (and 127.0.0.1:8080, its default, when it names no
/// listener); for any other program, nothing it says (the note's `wait:` does).
fn listens(command: &str) -> Vec<String> {
    let command = command.split(" #").next().unwrap();
    let last = command.rsplit("&&").next().unwrap();
    if !serves_forever(last) {
        return Vec::new();
    }
    let words: Vec<&str> = last.split_whitespace().collect();
    let mut found = Vec::new();
    let mut listener = false;
    for pair in words.windows(2) {
        if ["--listen", "--listen-tls", "--admin"].contains(&pair[0]) {
            listener |= pair[0] != "--admin";
            found.push(pair[1].to_owned());
        }
    }
    if !listener {
        found.push("127.0.0.1:8080".into());
    }
    found
}

/// `'text'` for bash.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Waits for a server: until every address accepts, or the server has exited.
const PRELUDE: &str = r#"set -eo pipefail
__serving() {
    local pid=$1 addr host port i
    shift
    for addr in "$@"; do
        host=${addr%:*} port=${addr##*:}
        for ((i = 0; ; i++)); do
            if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "readme-test: the server exited before listening on $addr" >&2
                return 1
            fi
            if ((i >= 3000)); then
                echo "readme-test: nothing listens on $addr after 300 s" >&2
                return 1
            fi
            sleep 0.1
        done
    done
}
"#;

/// The bash script that runs `block` as its note says.
fn script(block: &Block) -> String {
    let mut script = PRELUDE.to_owned();
    for env in block.all("env") {
        writeln!(script, "export {env}").unwrap();
    }
    let mut body = block.body.clone();
    for replace in block.all("replace") {
        let (from, to) = replace
            .split_once("=>")
            .unwrap_or_else(|| panic!("{}: `replace: {replace}` is not `FROM => TO`", block.at));
        body = body.replace(from.trim(), to.trim());
    }
    let serve = block.numbers("serve");
    let only = block.numbers("only");
    let waits: Vec<String> = block
        .all("wait")
        .iter()
        .flat_map(|w| w.split(','))
        .map(|w| w.trim().to_owned())
        .collect();
    let commands = commands(&body);
    assert!(
        serve
            .iter()
            .chain(&only)
            .all(|n| (1..=commands.len()).contains(n)),
        "{}: the note names a command the block does not have ({} commands)",
        block.at,
        commands.len()
    );
    let before = block.all("before").iter().map(|c| (0, c.clone()));
    let own = commands.into_iter().enumerate().map(|(i, c)| (i + 1, c));
    let then = block.all("then").iter().map(|c| (0, c.clone()));
    for (n, command) in before.chain(own).chain(then) {
        if n > 0 && !only.is_empty() && !only.contains(&n) {
            continue;
        }
        writeln!(
            script,
            "echo {} >&2",
            quoted(&format!("readme-test: $ {command}"))
        )
        .unwrap();
        let serves = serve.contains(&n) || backgrounded(&command);
        assert!(
            serves || !serves_forever(&command),
            "{}: `{command}` serves until stopped: name it in the note's `serve:`",
            block.at
        );
        if serves {
            let mut wait = listens(&command);
            wait.extend(waits.iter().cloned());
            assert!(
                !wait.is_empty(),
                "{}: say where `{command}` listens, in the note's `wait:`",
                block.at
            );
            let command = command.split(" #").next().unwrap().trim_end();
            let command = command.strip_suffix('&').unwrap_or(command).trim_end();
            writeln!(script, "{command} &\n__serving $! {}", wait.join(" ")).unwrap();
        } else {
            writeln!(script, "{command}").unwrap();
        }
    }
    script
}

/// Kills every process of the process group `pgid` and waits until none is left, so
/// that the next block finds its ports free.
fn kill_group(pgid: u32) {
    let signal = |signal| {
        // SAFETY: kill(2) with a negative pid signals a process group we created; it
        // fails (ESRCH) once the group has no process left.
        unsafe { libc::kill(-(pgid as i32), signal) == 0 }
    };
    signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while signal(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The paths `$REPO`, `$SCRATCH` and `$TESTTMP` stand for.
struct Places {
    repo: PathBuf,
    scratch: PathBuf,
    /// Where the block runs unless its note says otherwise.
    home: PathBuf,
}

impl Places {
    fn expand(&self, text: &str) -> String {
        text.replace("$REPO", &self.repo.to_string_lossy())
            .replace("$SCRATCH", &self.scratch.to_string_lossy())
            .replace("$TESTTMP", env!("CARGO_TARGET_TMPDIR"))
    }
}

/// Runs one block; `Err` says what went wrong, with its output.
fn run(block: &Block, places: &Places) -> Result<(), String> {
    let dir = match block.get("in") {
        None | Some("repo") => places.home.clone(),
        Some(dir) => match dir.strip_prefix("scratch") {
            Some(sub) => places.scratch.join(sub.trim_start_matches('/')),
            None => return Err(format!("`in: {dir}`: say `repo` or `scratch[/DIR]`")),
        },
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![Path::new(host_bin()).parent().unwrap().to_owned()];
    paths.extend(std::env::split_paths(&path));
    let out = |stream: &str| {
        let name = block.at.replace(['/', ':', ' ', '`'], "-");
        places.scratch.join(format!(".out-{name}.{stream}"))
    };
    let stdout = std::fs::File::create(out("stdout")).unwrap();
    let stderr = std::fs::File::create(out("stderr")).unwrap();
    let started = Instant::now();
    let mut bash = Command::new("bash");
    // A reader's shell, not a test's: what cargo sets for a test (the package's name,
    // its manifest's directory) would change the fingerprints of build scripts that
    // watch those variables, and a `cargo run` in a block would rebuild the host.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = key == "CARGO"
            || key == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_BIN_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref());
        if set_by_cargo {
            bash.env_remove(key.as_ref());
        }
    }
    let mut child = bash
        .arg("-c")
        .arg(places.expand(&script(block)))
        .current_dir(&dir)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("REPO", &places.repo)
        .env("SCRATCH", &places.scratch)
        .env("TESTTMP", env!("CARGO_TARGET_TMPDIR"))
        // Shared with the other tests: toolchains and compiled guests made once.
        .env("SANDSOCK_TOOLS", languages::tools_dir())
        .env("XDG_CACHE_HOME", test_cache_home())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start bash: {e}"))?;
    let pgid = child.id();
    let output = || {
        let read = |stream| std::fs::read_to_string(out(stream)).unwrap_or_default();
        (read("stdout"), read("stderr"))
    };
    let failed = |why: String| {
        let (stdout, stderr) = output();
        Err(format!("{why}\n--- stdout\n{stdout}--- stderr\n{stderr}"))
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BLOCK_TIMEOUT {
            kill_group(pgid);
            let _ = child.wait();
            return failed(format!("still running after {BLOCK_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let result = if !status.success() {
        failed(format!("exited with {status}"))
    } else {
        let mut result = Ok(());
        for want in block.all("expect") {
            if !output().0.contains(want.as_str()) {
                result = failed(format!("its output does not hold `{want}`"));
            }
        }
        for want in block.all("log") {
            let deadline = Instant::now() + LOG_TIMEOUT;
            while !output().1.contains(want.as_str()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !output().1.contains(want.as_str()) {
                result = failed(format!("its log does not come to hold `{want}`"));
            }
        }
        result
    };
    kill_group(pgid);
    eprintln!(
        "{} ran in {:.1} s",
        block.at,
        started.elapsed().as_secs_f64()
    );
    result
}

/// Runs the blocks of one README; returns what failed.
fn walk(file: &Path, shown_as: &str, places: &Places) -> Vec<String> {
    let blocks = blocks(file, shown_as);
    let named: HashMap<&str, &Block> = blocks
        .iter()
        .filter_map(|b| b.get("name").map(|n| (n, b)))
        .collect();
    let mut done = Vec::<String>::new();
    let mut failures = Vec::new();
    for block in &blocks {
        if let Some(path) = block.get("write") {
            let path = places.scratch.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut body = block.body.clone();
            for replace in block.all("replace") {
                let (from, to) = replace.split_once("=>").unwrap();
                body = body.replace(from.trim(), &places.expand(to.trim()));
            }
            std::fs::write(&path, body).unwrap();
            continue;
        }
        if block.lang != "sh" {
            continue;
        }
        if block.note.is_empty() {
            failures.push(format!(
                "{}: a sh block without a readme-test note (say how to run it, or why not)",
                block.at
            ));
            continue;
        }
        if let Some(why) = block.get("skip") {
            eprintln!("{}: skipped: {why}", block.at);
            continue;
        }
        if block.note.contains_key("only") && block.get("why").is_none() {
            failures.push(format!("{}: `only:` without a `why:`", block.at));
            continue;
        }
        let mut order: Vec<&Block> = Vec::new();
        for need in block.all("needs") {
            match named.get(need.as_str()) {
                Some(b) if !done.contains(need) => {
                    order.push(b);
                    done.push(need.clone());
                }
                Some(_) => {}
                None => failures.push(format!("{}: needs `{need}`, which no block is", block.at)),
            }
        }
        if let Some(name) = block.get("name") {
            if done.iter().any(|d| d == name) {
                continue;
            }
            done.push(name.to_owned());
        }
        order.push(block);
        for block in order {
            if let Err(why) = run(block, places) {
                failures.push(format!("{}: {why}", block.at));
            }
        }
    }
    failures
}

/// The READMEs of the repository: README.md and every one under `guest/`, build
/// output and installed toolchains aside.
fn readmes(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !["target", "node_modules", ".tools"].contains(&name.as_ref()) {
                readmes(&path, found);
            }
        } else if name == "README.md" {
            found.push(path);
        }
    }
}

#[test]
fn every_readme_command_runs_as_written() {
    let repo = languages::repo().to_owned();
    let mut files = vec![repo.join("README.md")];
    readmes(&repo.join("guest"), &mut files);
    files.sort();
    // `SANDSOCK_README=guest/python cargo test --release --test readme`: only those.
    if let Ok(only) = std::env::var("SANDSOCK_README") {
        files.retain(|f| f.to_string_lossy().contains(&only));
    }
    let root = common::scratch("readme");
    let mut failures = Vec::new();
    for file in &files {
        let shown = file
            .strip_prefix(&repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let scratch = root.join(shown.replace('/', "-"));
        std::fs::create_dir_all(&scratch).unwrap();
        // A template's README is for the project `host new` makes from it: walked there.
        if let Some(lang) = shown
            .strip_prefix("guest/templates/")
            .and_then(|rest| rest.strip_suffix("/README.md"))
        {
            let made = Command::new(host_bin())
                .args(["new", "demo", "--lang", lang])
                .current_dir(&scratch)
                .output()
                .expect("run host new");
            assert!(made.status.success(), "host new --lang {lang}: {made:?}");
            let project = scratch.join("demo");
            let places = Places {
                repo: repo.clone(),
                scratch: scratch.clone(),
                home: project.clone(),
            };
            let shown = format!("{shown} (as `host new demo --lang {lang}` writes it)");
            failures.extend(walk(&project.join("README.md"), &shown, &places));
        } else {
            let places = Places {
                repo: repo.clone(),
                scratch,
                home: repo.clone(),
            };
            failures.extend(walk(file, &shown, &places));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_note_shapes_its_script() {
    let file = common::scratch("readme-notes").join("NOTES.md");
    std::fs::write(
        &file,
        "<!-- readme-test\nserve: 2\nthen: curl -s 127.0.0.1:9/ # ok\n-->\n\n```sh\n\
         # a comment\nhost new x && \\\n  x/build.sh\nhost --guest x/x.wasm --admin 127.0.0.1:9090\n\
         host --guest echo --listen 127.0.0.1:9000 &   # in the background\n```\n\n\
         ```sh\necho unnoted\n```\n",
    )
    .unwrap();
    let blocks = blocks(&file, "NOTES.md");
    assert_eq!(blocks.len(), 2);
    for (command, serves) in [
        ("host --guest x.wasm --watch", true),
        ("host new x && x/build.sh && host --guest x/x.wasm", true),
        ("cargo run --release --bin host", true),
        ("cargo run --release -- examples --out /tmp/x", false),
        (
            "target/release/host --guest http.wasm --listen 127.0.0.1:8080",
            true,
        ),
        ("host load 127.0.0.1:8080 --http", false),
        ("host --version", false),
        ("cargo build --release", false),
    ] {
        assert_eq!(serves_forever(command), serves, "{command}");
    }
    assert!(
        blocks[1].note.is_empty(),
        "a note is only for the block right after it"
    );
    let script = script(&blocks[0]);
    let lines: Vec<&str> = script.lines().skip(PRELUDE.lines().count()).collect();
    assert_eq!(
        lines,
        [
            "echo 'readme-test: $ host new x && x/build.sh' >&2",
            "host new x && x/build.sh",
            "echo 'readme-test: $ host --guest x/x.wasm --admin 127.0.0.1:9090' >&2",
            "host --guest x/x.wasm --admin 127.0.0.1:9090 &",
            "__serving $! 127.0.0.1:9090 127.0.0.1:8080",
            "echo 'readme-test: $ host --guest echo --listen 127.0.0.1:9000 &   # in the background' >&2",
            "host --guest echo --listen 127.0.0.1:9000 &",
            "__serving $! 127.0.0.1:9000",
            "echo 'readme-test: $ curl -s 127.0.0.1:9/ # ok' >&2",
            "curl -s 127.0.0.1:9/ # ok",
        ]
    );
}

#[test]
#[should_panic(expected = "`expects` is not a readme-test key")]
fn a_misspelt_key_is_refused() {
    let file = common::scratch("readme-misspelt").join("NOTES.md");
    std::fs::write(
        &file,
        "<!-- readme-test\nexpects: hello\n-->\n```sh\necho hello\n```\n",
    )
    .unwrap();
    blocks(&file, "NOTES.md");
}
