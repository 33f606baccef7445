//! [`Writer`]: the thread that writes tapes into the record directory, and the
//! directory's rules: created `0700`, files `0600`, refused if someone else could
//! have put or changed something there; at most `--record-max-bytes` in it, the
//! oldest finished tapes removed first and the tapes of traps last (tapes being
//! written are not removed: with many open at once, each up to a quarter of the
//! cap, the directory can hold more for a while).
//!
//! The loop never waits for it: a worker hands it encoded turns over a channel
//! (which never wakes it: it drains the channel every few milliseconds),
//! and when more than [`MAX_QUEUED`] bytes wait, the worker stops recording (the
//! connection is counted as cut, its tape marked incomplete) rather than slow down.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracing::warn;

use super::tape::{End, Frame, frame, framed_turn};

/// The most bytes of turns waiting for the writer before workers stop recording.
pub const MAX_QUEUED: usize = 32 << 20;

/// The writer's nap between drains under load: what a turn may wait to be written.
const FIRST_NAP: Duration = Duration::from_millis(5);

/// The writer's longest nap, when idle.
const LONGEST_NAP: Duration = Duration::from_millis(100);

/// What `--record` is told.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// The record directory.
    pub dir: PathBuf,
    /// `--record-sample`: the share of connections recorded, in percent.
    pub sample_percent: u32,
    /// `--record-max-bytes`: the most the directory's tapes hold together.
    pub max_bytes: u64,
    /// The most bytes of turns waiting for the writer ([`MAX_QUEUED`], smaller in
    /// a test that slows the writer down).
    pub max_queued: usize,
    /// A test's hook: the writer sleeps this long before each turn it writes.
    pub slow_writer: Duration,
}

/// What `/metrics` tells of recording: counted by the workers and the writer.
#[derive(Debug, Default)]
pub struct RecordStats {
    /// Connections recorded from their start.
    pub recorded: AtomicU64,
    /// Connections the sampling skipped.
    pub skipped: AtomicU64,
    /// Connections whose recording stopped because the writer fell behind (their
    /// tapes are marked incomplete).
    pub cut: AtomicU64,
    /// Tapes of instances that trapped.
    pub traps: AtomicU64,
    /// Bytes written into tapes.
    pub bytes: AtomicU64,
    /// Tapes removed to keep the directory within its cap.
    pub removed: AtomicU64,
    /// Bytes handed to the writer and not written yet.
    queued: AtomicUsize,
}

/// A tape's number in this process.
pub type TapeId = u64;

enum Message {
    Open {
        id: TapeId,
        name: String,
        bytes: Vec<u8>,
    },
    Turn {
        id: TapeId,
        payload: Vec<u8>,
    },
    Close {
        id: TapeId,
        end: End,
        trap: bool,
    },
}

/// A worker's way to the writer.
#[derive(Clone)]
pub struct WriterLink {
    sender: Sender<Message>,
    stats: Arc<RecordStats>,
    max_queued: usize,
}

impl WriterLink {
    /// Starts tape `id` as the file `name`, with its header (and snapshot):
    /// false, and nothing sent, when the writer is behind.
    pub fn open(&self, id: TapeId, name: String, bytes: Vec<u8>) -> bool {
        self.send(bytes.len(), Message::Open { id, name, bytes })
    }

    /// Appends one encoded turn to tape `id`: false, and nothing sent, when the
    /// writer is behind.
    pub fn turn(&self, id: TapeId, payload: Vec<u8>) -> bool {
        self.send(payload.len(), Message::Turn { id, payload })
    }

    /// Ends tape `id` (always sent: an end is a few bytes).
    pub fn close(&self, id: TapeId, end: End, trap: bool) {
        let _ = self.sender.send(Message::Close { id, end, trap });
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<RecordStats> {
        &self.stats
    }

    fn send(&self, len: usize, message: Message) -> bool {
        let queued = self.stats.queued.fetch_add(len, Ordering::Relaxed);
        if queued + len > self.max_queued {
            self.stats.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if self.sender.send(message).is_err() {
            self.stats.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The writer thread.
pub struct Writer {
    link: Option<WriterLink>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Checks (or creates) the record directory and starts the writer; an error
    /// is one line naming the directory and what is wrong with it.
    pub fn start(config: &RecordConfig) -> Result<Self> {
        open_dir(&config.dir)?;
        let (sender, receiver) = mpsc::channel();
        let stats = Arc::new(RecordStats::default());
        let mut files = Files::scan(config, stats.clone())?;
        let slow = config.slow_writer;
        let thread = std::thread::Builder::new()
            .name("record-writer".into())
            .spawn(move || files.run(receiver, slow))
            .context("cannot start the record writer thread")?;
        Ok(Self {
            link: Some(WriterLink {
                sender,
                stats,
                max_queued: config.max_queued,
            }),
            thread: Some(thread),
        })
    }

    /// A link for a worker.
    pub fn link(&self) -> WriterLink {
        self.link
            .clone()
            .expect("the writer runs until it is finished")
    }

    /// Waits for the writer to write what it was given, once every worker's link is
    /// gone (the loops have ended). Dropped without it (the host exiting on an
    /// error, or at a second signal), the writer is not waited for.
    pub fn finish(&mut self) {
        self.link = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Creates `dir` (mode 0700) if need be, and refuses it if it is a symbolic link,
/// not a directory, someone else's, or writable by group or world.
pub fn open_dir(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the record directory {}", dir.display()))?;
    }
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("cannot read the record directory {}", dir.display()))?;
    let refuse = |why: String| {
        anyhow::anyhow!(
            "refusing the record directory {}: {why} (tapes hold users' traffic: the \
             directory must be yours and writable by you alone)",
            dir.display()
        )
    };
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        bail!("the record directory {} is not a directory", dir.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "others can write it (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// A tape file finished (or found at start), by age then name: the oldest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Finished {
    /// A trap's tape, removed only when no other is left.
    trap: bool,
    name: String,
    bytes: u64,
}

/// A tape being written.
struct Open {
    name: String,
    file: BufWriter<File>,
    bytes: u64,
    /// Cut: the rest of its turns are dropped.
    cut: bool,
}

/// The writer thread's state: the open tapes and the finished ones.
struct Files {
    dir: PathBuf,
    max_bytes: u64,
    stats: Arc<RecordStats>,
    open: HashMap<TapeId, Open>,
    finished: BTreeSet<Finished>,
    total: u64,
}

impl Files {
    /// Counts the tapes already in the directory against the cap.
    fn scan(config: &RecordConfig, stats: Arc<RecordStats>) -> Result<Self> {
        let mut files = Self {
            dir: config.dir.clone(),
            max_bytes: config.max_bytes,
            stats,
            open: HashMap::new(),
            finished: BTreeSet::new(),
            total: 0,
        };
        let entries = fs::read_dir(&config.dir).with_context(|| {
            format!("cannot read the record directory {}", config.dir.display())
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !name.ends_with(".tape") || !meta.is_file() || written_by_another_live(&name) {
                continue;
            }
            files.total += meta.len();
            files.finished.insert(Finished {
                trap: name.ends_with(".trap.tape"),
                name,
                bytes: meta.len(),
            });
        }
        Ok(files)
    }

    /// Writes what the workers send until every link is gone. It naps rather than
    /// blocks on the channel: a send to a receiver blocked in `recv` wakes it with
    /// a syscall, and a context switch, per turn of every loop; a send to a napping
    /// one costs neither. Under load it naps [`FIRST_NAP`] between drains; idle,
    /// its naps double up to [`LONGEST_NAP`].
    fn run(&mut self, receiver: Receiver<Message>, slow: Duration) {
        let mut nap = FIRST_NAP;
        loop {
            match receiver.try_recv() {
                Ok(message) => {
                    self.handle(message, slow);
                    nap = FIRST_NAP;
                    continue;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => break,
            }
            // Nothing waits: what was written reaches the files.
            for open in self.open.values_mut() {
                let _ = open.file.flush();
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(LONGEST_NAP);
        }
        let ids: Vec<TapeId> = self.open.keys().copied().collect();
        for id in ids {
            let why = "the host stopped before its recorder closed it".to_string();
            self.close(
                id,
                End {
                    complete: false,
                    why,
                },
                false,
            );
        }
    }

    fn handle(&mut self, message: Message, slow: Duration) {
        match message {
            Message::Open { id, name, bytes } => {
                self.stats.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                self.open_tape(id, name, &bytes);
            }
            Message::Turn { id, payload } => {
                self.stats
                    .queued
                    .fetch_sub(payload.len(), Ordering::Relaxed);
                if !slow.is_zero() {
                    std::thread::sleep(slow);
                }
                let framed = framed_turn(&payload);
                self.append(id, &framed);
            }
            Message::Close { id, end, trap } => self.close(id, end, trap),
        }
    }

    fn open_tape(&mut self, id: TapeId, name: String, bytes: &[u8]) {
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match file {
            Ok(file) => {
                let mut open = Open {
                    name,
                    file: BufWriter::with_capacity(64 * 1024, file),
                    bytes: 0,
                    cut: false,
                };
                write(&mut open, bytes, &self.stats, &mut self.total);
                self.open.insert(id, open);
                self.keep_within_cap();
            }
            Err(err) => warn!(path = %path.display(), "cannot write a tape: {err}"),
        }
    }

    fn append(&mut self, id: TapeId, bytes: &[u8]) {
        let share = self.max_bytes / 4;
        let Some(open) = self.open.get_mut(&id) else {
            return;
        };
        if open.cut {
            return;
        }
        if open.bytes + bytes.len() as u64 > share {
            // One tape may not take the directory: it ends here, incomplete.
            open.cut = true;
            self.stats.cut.fetch_add(1, Ordering::Relaxed);
            let end = End {
                complete: false,
                why: format!("cut at a quarter of --record-max-bytes ({share} bytes)"),
            };
            let bytes = frame(&Frame::End(end));
            write(open, &bytes, &self.stats, &mut self.total);
            return;
        }
        write(open, bytes, &self.stats, &mut self.total);
        self.keep_within_cap();
    }

    fn close(&mut self, id: TapeId, end: End, trap: bool) {
        let Some(mut open) = self.open.remove(&id) else {
            return;
        };
        if !open.cut {
            let bytes = frame(&Frame::End(end));
            write(&mut open, &bytes, &self.stats, &mut self.total);
        }
        if let Err(err) = open.file.flush() {
            warn!(tape = %open.name, "cannot write a tape: {err}");
        }
        let mut name = open.name;
        if trap {
            let trapped = name.replace(".tape", ".trap.tape");
            if fs::rename(self.dir.join(&name), self.dir.join(&trapped)).is_ok() {
                name = trapped;
            }
        }
        self.finished.insert(Finished {
            trap,
            name,
            bytes: open.bytes,
        });
        self.keep_within_cap();
    }

    /// Removes finished tapes, the oldest first and the traps' last, until the
    /// directory is within its cap (tapes being written stay).
    fn keep_within_cap(&mut self) {
        while self.total > self.max_bytes {
            let Some(oldest) = self.finished.pop_first() else {
                return;
            };
            match fs::remove_file(self.dir.join(&oldest.name)) {
                Ok(()) => {
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => warn!(tape = %oldest.name, "cannot remove a tape over the cap: {err}"),
            }
            self.total = self.total.saturating_sub(oldest.bytes);
        }
    }
}

/// Whether a tape is another running process's (`STARTED-PID-wWORKER-ID.tape`): the
/// old process of a binary upgrade still writing, or a second host on the same
/// directory. Those stay out of this process's count and are never removed by it.
fn written_by_another_live(name: &str) -> bool {
    let pid = name
        .split('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

fn write(open: &mut Open, bytes: &[u8], stats: &RecordStats, total: &mut u64) {
    if let Err(err) = open.file.write_all(bytes) {
        warn!(tape = %open.name, "cannot write a tape: {err}");
        open.cut = true;
        return;
    }
    open.bytes += bytes.len() as u64;
    *total += bytes.len() as u64;
    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
}
