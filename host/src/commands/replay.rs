//! `host replay DIR|TAPE --guest G`: tapes recorded with `--record` run again on
//! a guest, offline, and what it sends compared with what the recorded one sent,
//! as a canary compares: byte streams and close positions, one line per
//! connection that diverges, a summary, and a non-zero exit on any divergence or
//! trap (`--json` for CI).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cli::ReplayArgs;
use crate::record::diff::{first_difference, snippet};
use crate::record::tape::{Header, Tape};
use crate::runtime::builtin::guest_source;
use crate::runtime::component::Guest;
use crate::runtime::digest;
use crate::runtime::engine::Runtime;
use crate::runtime::replay::{ConnRun, Replayed, Trapped, replay};
use crate::runtime::sandbox::{Isolation, Sandbox};
use crate::runtime::shadow::MAX_OUTPUT;
use crate::shared::limits::Limits;

/// How one connection compared.
#[derive(Debug, PartialEq)]
enum Verdict {
    Agree,
    /// Its output differs from the recording's at this byte.
    Diverge(usize),
    /// Its output agrees, but it closed the connection elsewhere.
    DivergeClose,
    /// Open when the replayed instance trapped.
    Trapped,
    /// Nothing to compare, for the reason given.
    Inconclusive(&'static str),
}

/// The counts of the summary line.
#[derive(Debug, Default)]
struct Summary {
    replayed: usize,
    agree: usize,
    diverge: usize,
    trapped: usize,
    inconclusive: usize,
    unreadable: usize,
    /// Tapes whose instance trapped with no connection open, or would not start.
    failed: usize,
}

/// Replays every tape at `args.tapes` on `args.guest`; answers whether all agree
/// (no divergence, no trap, every tape readable). An error is one line: no tape
/// there, a single tape that cannot be read, a guest that cannot be loaded.
pub fn replay_command(args: &ReplayArgs) -> Result<bool> {
    let files = tape_files(&args.tapes)?;
    let single = !args.tapes.is_dir();
    let mut guests = Guests::new(args)?;
    let mut summary = Summary::default();
    let mut documents = Vec::new();
    let started = Instant::now();
    let mut turns = 0usize;
    for file in &files {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let tape = match fs::read(file)
            .map_err(|err| err.to_string())
            .and_then(|bytes| Tape::read(&bytes))
        {
            Ok(tape) => tape,
            Err(why) if single => bail!("cannot replay the tape {}: {why}", file.display()),
            Err(why) => {
                summary.unreadable += 1;
                eprintln!("error: cannot replay the tape {}: {why}", file.display());
                documents.push(json!({"tape": name, "error": why}));
                continue;
            }
        };
        turns += tape.turns.len();
        let (runtime, guest, noise) = guests.for_tape(&tape.header)?;
        let replayed = replay(runtime, guest, &tape)?;
        let noise = match noise {
            Some(noise) => Some(replay(runtime, noise, &tape)?),
            None => None,
        };
        documents.push(report(
            &name,
            &tape,
            guest,
            &replayed,
            noise.as_ref(),
            args.json,
            &mut summary,
        ));
    }
    let elapsed = started.elapsed();
    let clean = summary.diverge == 0
        && summary.trapped == 0
        && summary.unreadable == 0
        && summary.failed == 0;
    if args.json {
        let document = json!({
            "tapes": documents,
            "summary": {
                "replayed": summary.replayed,
                "agree": summary.agree,
                "diverge": summary.diverge,
                "trapped": summary.trapped,
                "inconclusive": summary.inconclusive,
                "unreadable": summary.unreadable,
                "failed": summary.failed,
            },
            "turns": turns,
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{document}");
    } else {
        let mut line = format!(
            "{} replayed, {} agree, {} diverge, {} trapped",
            summary.replayed, summary.agree, summary.diverge, summary.trapped
        );
        if summary.inconclusive > 0 {
            line.push_str(&format!(", {} inconclusive", summary.inconclusive));
        }
        if summary.failed > 0 {
            line.push_str(&format!(
                ", {} tapes trapped with no connection open or would not start",
                summary.failed
            ));
        }
        if summary.unreadable > 0 {
            line.push_str(&format!(", {} tapes unreadable", summary.unreadable));
        }
        println!(
            "{line} ({} tapes, {turns} turns in {:.2}s)",
            files.len() - summary.unreadable,
            elapsed.as_secs_f64()
        );
    }
    Ok(clean)
}

/// The tape files at `path`: the file itself, or a directory's `*.tape`, oldest
/// first (their names begin with when they started).
fn tape_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(path)
        .with_context(|| format!("cannot read the directory {}", path.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tape") && p.is_file())
        .collect();
    if files.is_empty() {
        bail!("no tapes (*.tape) in {}", path.display());
    }
    files.sort();
    Ok(files)
}

/// The guests loaded once per set of recorded limits.
struct Guests<'a> {
    args: &'a ReplayArgs,
    loaded: HashMap<String, (Runtime, Guest, Option<Guest>)>,
}

impl<'a> Guests<'a> {
    fn new(args: &'a ReplayArgs) -> Result<Self> {
        // Fail on a bad guest before any tape is read.
        guest_source(&args.guest)?;
        if let Some(noise) = &args.noise_from {
            guest_source(noise)?;
        }
        Ok(Self {
            args,
            loaded: HashMap::new(),
        })
    }

    /// The runtime of the limits and environment `header` recorded, and the
    /// guests loaded on it.
    fn for_tape(&mut self, header: &Header) -> Result<(&Runtime, &Guest, Option<&Guest>)> {
        let limits = &header.limits;
        let key = format!("{limits:?} {:?}", header.env);
        if !self.loaded.contains_key(&key) {
            let sandbox = Sandbox {
                limits: Limits {
                    event_timeout: std::time::Duration::from_micros(limits.event_timeout_us),
                    fuel: limits.fuel,
                    max_memory: limits.max_memory as usize,
                    max_timers: limits.max_timers as usize,
                    ..Limits::DEFAULT
                },
                isolation: Isolation::Shared,
                env: header.env.clone(),
                record: false,
            };
            let runtime = Runtime::new(sandbox, None, false)?;
            let guest = runtime.load(&guest_source(&self.args.guest)?)?;
            let noise = match &self.args.noise_from {
                Some(noise) => Some(runtime.load(&guest_source(noise)?)?),
                None => None,
            };
            self.loaded.insert(key.clone(), (runtime, guest, noise));
        }
        let (runtime, guest, noise) = &self.loaded[&key];
        Ok((runtime, guest, noise.as_ref()))
    }
}

/// Prints what one tape's replay found (lines, unless `json`), counts it, and
/// answers its JSON.
fn report(
    name: &str,
    tape: &Tape,
    guest: &Guest,
    replayed: &Replayed,
    noise: Option<&Replayed>,
    json: bool,
    summary: &mut Summary,
) -> Value {
    let header = &tape.header;
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let same_guest = header.digest == guest.digest;
    say(format!(
        "tape {name}: guest `{}` ({}, contract {}), {} connection(s), {} turn(s){}; replayed on {}",
        header.guest,
        digest::short(&header.digest),
        header.contract,
        replayed.conns.len(),
        tape.turns.len(),
        match &tape.end {
            Some(end) if end.complete => String::new(),
            Some(end) => format!(", incomplete ({})", end.why),
            None => ", incomplete (the host had not closed it)".into(),
        },
        if same_guest {
            "the same guest".to_string()
        } else {
            format!("`{}` ({})", guest.name, guest.short_digest())
        },
    ));
    if let Some(why) = &replayed.failed_to_start {
        say(format!("  the guest failed to start: {why}"));
    }
    let mut conns = Vec::new();
    for (conn, run) in &replayed.conns {
        let noise = noise.and_then(|n| n.conns.get(conn));
        let verdict = judge(run, noise, replayed.recorded_trap.is_some());
        summary.replayed += 1;
        let peer = run.peer.as_deref().unwrap_or("?");
        match &verdict {
            Verdict::Agree => summary.agree += 1,
            Verdict::Inconclusive(_) => summary.inconclusive += 1,
            Verdict::Trapped => summary.trapped += 1,
            Verdict::Diverge(at) => {
                summary.diverge += 1;
                say(format!(
                    "  connection {conn} ({peer}) diverged at byte {at} of its output ({} bytes recorded, {} replayed): recorded {} replayed {}",
                    run.recorded.len(),
                    run.replayed.len(),
                    snippet(&run.recorded, *at),
                    snippet(&run.replayed, *at),
                ));
            }
            Verdict::DivergeClose => {
                summary.diverge += 1;
                let when = |at: Option<usize>| {
                    at.map_or("kept it open".to_string(), |n| {
                        format!("closed it after {n} input bytes")
                    })
                };
                say(format!(
                    "  connection {conn} ({peer}) diverged in its close: the recorded guest {}, the replayed one {}",
                    when(run.recorded_close),
                    when(run.replayed_close),
                ));
            }
        }
        conns.push(conn_json(*conn, run, &verdict));
    }
    let trapped_open = conns.iter().any(|c| c["verdict"] == "trapped");
    if replayed.failed_to_start.is_some() || (replayed.trap.is_some() && !trapped_open) {
        summary.failed += 1;
    }
    if let Some(trap) = &replayed.recorded_trap {
        say(format!("  the recorded instance trapped: {}", trap.message));
    }
    if let Some(trap) = &replayed.trap {
        say(format!(
            "  guest trapped: {}\n{}",
            trap.message,
            indent(&trap.backtrace)
        ));
    } else if replayed.recorded_trap.is_some() {
        say("  the replayed instance did not trap".into());
    }
    if [&replayed.trap, &replayed.recorded_trap]
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.deadline))
    {
        say(format!(
            "  note: this trap is --event-timeout's wall-clock deadline ({} ms recorded): whether it recurs depends on the machine's speed, not only on the input",
            header.limits.event_timeout_us / 1000
        ));
    }
    if let Some(difference) = &replayed.store_difference {
        say(format!("  store: {difference}"));
    }
    if replayed.beyond_tape > 0 {
        say(format!(
            "  note: the guest read {} clock or random values the tape does not hold (a changed guest asks for more): they were made up",
            replayed.beyond_tape
        ));
    }
    json!({
        "tape": name,
        "guest": header.guest,
        "digest": digest::hex(&header.digest),
        "contract": header.contract,
        "complete": tape.complete(),
        "recorded_trap": replayed.recorded_trap.as_ref().map(trap_json),
        "trap": replayed.trap.as_ref().map(trap_json),
        "failed_to_start": replayed.failed_to_start,
        "store_difference": replayed.store_difference,
        "beyond_tape": replayed.beyond_tape,
        "connections": conns,
    })
}

/// How one connection compares, its noise (the recorded guest's own replay)
/// masked. A connection the sampling skipped is on a tape only for its instance's
/// trap (`trap_tape`): it is compared from the turn it was kept from.
fn judge(run: &ConnRun, noise: Option<&ConnRun>, trap_tape: bool) -> Verdict {
    if run.open_at_trap {
        return Verdict::Trapped;
    }
    if !run.sampled && !trap_tape {
        return Verdict::Inconclusive(
            "kept only for its instance's trap: its earlier input is not on the tape",
        );
    }
    if run.input == 0 && run.recorded.is_empty() && run.replayed.is_empty() {
        return Verdict::Inconclusive("no input and no output");
    }
    let noise_output = noise.map(|n| n.replayed.as_slice());
    // A replay keeps the first MiB a connection sent: past it, only that much of
    // the recording is compared.
    let recorded = match run.replayed_dropped {
        0 => &run.recorded[..],
        _ => &run.recorded[..run.recorded.len().min(MAX_OUTPUT)],
    };
    if let Some(at) = first_difference(recorded, &run.replayed, noise_output) {
        return Verdict::Diverge(at);
    }
    let replayed_len = run.replayed.len() + run.replayed_dropped;
    if run.replayed_dropped > 0 && run.recorded.len() != replayed_len {
        return Verdict::Diverge(run.recorded.len().min(replayed_len));
    }
    let noisy_close = noise.is_some_and(|n| n.replayed_close != run.recorded_close);
    if !run.hung_up && run.recorded_close != run.replayed_close && !noisy_close {
        return Verdict::DivergeClose;
    }
    Verdict::Agree
}

fn conn_json(conn: u64, run: &ConnRun, verdict: &Verdict) -> Value {
    let (name, offset, why) = match verdict {
        Verdict::Agree => ("agree", None, None),
        Verdict::Diverge(at) => ("diverge", Some(*at), None),
        Verdict::DivergeClose => ("diverge", None, Some("close")),
        Verdict::Trapped => ("trapped", None, None),
        Verdict::Inconclusive(why) => ("inconclusive", None, Some(*why)),
    };
    json!({
        "conn": conn,
        "peer": run.peer,
        "verdict": name,
        "offset": offset,
        "why": why,
        "recorded_bytes": run.recorded.len(),
        "replayed_bytes": run.replayed.len(),
        "recorded": offset.map(|at| snippet(&run.recorded, at)),
        "replayed": offset.map(|at| snippet(&run.replayed, at)),
    })
}

fn trap_json(trap: &Trapped) -> Value {
    json!({"message": trap.message, "backtrace": trap.backtrace, "deadline": trap.deadline})
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
