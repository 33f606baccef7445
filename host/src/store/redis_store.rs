//! [`RedisStore`]: `--store redis://HOST:PORT[/DB]` (or `rediss://`, over TLS): the
//! store and topics on a Redis or Valkey server, shared by every host that uses it.
//!
//! A thread of its own runs the client (redis-rs, on a current-thread tokio runtime),
//! so that no worker ever waits on the network. Workers queue operations; the thread
//! takes what has queued up (at most [`GROUP`]), sends it as one pipeline on one
//! connection, and answers each operation to its worker's inbox when the replies
//! come. Up to [`MAX_IN_FLIGHT`] pipelines are out at once, each queued on the
//! connection as it is made: the server sees the operations in the order they were
//! submitted, and under load each pipeline carries what queued while the others were
//! out. Names and scripts: [`redis_layout`];
//! topics: [`redis_relay`], on a connection of its own.
//!
//! Every operation is answered within `--store-timeout` of its submission (connecting
//! and the idle check are bound by it too, and what queued meanwhile is answered by
//! its own deadline when it is taken):
//!
//! - an operation whose answer does not come in time, or whose connection breaks
//!   under it, answers `timed-out` (a write may still land);
//! - one that is not sent (no connection) or does not run (NOSCRIPT, READONLY,
//!   MASTERDOWN, LOADING) answers `unavailable`;
//! - a connection silent for a whole `--store-timeout`, or closed by the server
//!   (noticed at once: RESP3, so Redis 6 or later, or Valkey), is dropped, and the
//!   thread connects again after 100 ms, doubling up to 2 s; an idle one is checked
//!   with a PING once a second. `/readyz` says not ready while it is down.
//!
//! [`redis_layout`]: super::redis_layout
//! [`redis_relay`]: super::redis_relay

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, RedisError, TlsCertificates, Value,
};
use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{error, warn};

use super::redis_health::{CHECK_EVERY, FIRST_RETRY, Health, MAX_RETRY};
use super::redis_layout::{Layout, SCRIPTS};
use super::redis_ops::{command, loaded, outcome_of};
use super::redis_relay::Relay;
use super::{Backend, Inbox, Job, Namespace, Op, Outcome, StoreError, StoreLimits, Topics};
use crate::shared::rate_limit::RateLimit;

/// `--store-timeout`'s default: what an operation waits for the server at most.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most operations one pipeline carries.
pub const GROUP: usize = 512;
/// The most pipelines out at once: enough that an operation seldom waits for one to
/// come back before it is sent, few enough that a stalled server holds a bounded
/// number of operations (each answered at its deadline anyway).
pub const MAX_IN_FLIGHT: usize = 8;
/// How often the store's thread looks whether it is time to connect again.
const TICK: Duration = Duration::from_millis(100);

/// The environment variable a remote store's password can come from.
pub const PASSWORD_VARIABLE: &str = "SANDSOCK_STORE_PASSWORD";

/// A remote store's password: never printed, never in a label.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// `text` without its trailing line break; `None` if nothing is left.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim_end_matches(['\r', '\n']);
        (!text.is_empty()).then(|| Self(text.to_string()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<password>")
    }
}

/// What a remote store needs beside its URL.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `--store-password-file`, or `SANDSOCK_STORE_PASSWORD`.
    pub password: Option<Password>,
    /// `--store-timeout`.
    pub timeout: Duration,
    /// `--store-ca-file`: the CA a `rediss://` server's certificate is checked
    /// against, instead of the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            password: None,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
        }
    }
}

/// Checks a URL given to `--store`: a Redis URL, with no password in it (a process's
/// arguments are readable by every user of the machine).
pub fn check_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "valkey://", "valkeys://"];
    if !SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return Err(format!(
            "--store {}: a store URL is redis://, rediss://, valkey:// or valkeys://",
            redact(url)
        ));
    }
    // The client reads `#insecure` as "skip the certificate check": never silently.
    if url.contains('#') {
        return Err(format!(
            "--store {}: a store URL takes no `#` part (use --store-ca-file for a \
             private CA)",
            redact(url)
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| format!("--store {}: not a Redis URL: {e}", redact(url)))?;
    if info.redis_settings().password().is_some() {
        return Err(format!(
            "--store {}: put the password in --store-password-file or \
             SANDSOCK_STORE_PASSWORD, not in the URL (every user of the machine can read a \
             process's arguments)",
            redact(url)
        ));
    }
    Ok(())
}

/// `url` with whatever sits between `://` and `@` hidden, for an error line about a
/// URL that may hold a password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// What the store's thread is given.
enum Work {
    /// An operation, submitted then.
    Op(Job, Instant),
    /// A message for a topic's channel.
    Publish {
        channel: String,
        message: Vec<u8>,
        submitted: Instant,
    },
}

impl Work {
    fn submitted(&self) -> Instant {
        match self {
            Self::Op(_, submitted) | Self::Publish { submitted, .. } => *submitted,
        }
    }
}

/// The store on a Redis server, with the thread that talks to it.
pub struct RedisStore {
    work: UnboundedSender<Work>,
    /// Where an operation is answered if the store's thread is gone.
    inboxes: Vec<Arc<Inbox>>,
    namespace: Namespace,
    layout: Layout,
    /// The namespace's bytes, as the last write's script counted them.
    bytes: Arc<AtomicU64>,
    health: Arc<Health>,
    /// Tells the relay that the topics heard in the process changed.
    nudge: Arc<Notify>,
    /// Messages that could not be handed to the server.
    unsent: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` for `namespace` and starts the store's thread; answers go to
    /// `inboxes`, messages to `topics`' subscribers.
    ///
    /// A server that refuses the credentials stops the host here, with one line: that
    /// is a mistake to fix, not an outage to wait out. A server that cannot be reached
    /// does not: the host serves with the store unavailable (and not ready) until it
    /// can be, as after any outage.
    pub fn open(
        url: &str,
        options: &RedisOptions,
        namespace: &Namespace,
        limits: StoreLimits,
        inboxes: Vec<Arc<Inbox>>,
        topics: Arc<Topics>,
    ) -> Result<Self> {
        let client = client(url, options)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the store's runtime")?;
        let health = Arc::new(Health::new());
        let bytes = Arc::new(AtomicU64::new(0));
        let unsent = Arc::new(AtomicU64::new(0));
        let layout = Layout::new(namespace);
        let mut driver = Driver {
            client: client.clone(),
            url: url.to_string(),
            timeout: options.timeout,
            limits,
            inboxes: inboxes.clone(),
            bytes: bytes.clone(),
            health: health.clone(),
            unsent: unsent.clone(),
            namespace: namespace.clone(),
            layout: layout.clone(),
            conn: None,
            retry_at: Instant::now(),
            retry_delay: FIRST_RETRY,
            last_answer: Instant::now(),
            failures: RateLimit::default(),
            dropped: Arc::new(Notify::new()),
            in_flight: FuturesOrdered::new(),
            pending: VecDeque::new(),
        };
        if let Err(e) = runtime.block_on(driver.connect()) {
            if refused(&e) {
                bail!(
                    "the store {url} refused the host's credentials or their permissions \
                     (--store-password-file, SANDSOCK_STORE_PASSWORD, the URL's user and \
                     its ACL): {e}"
                );
            }
            warn!(
                store = url,
                "the store cannot be reached yet: {e}; serving with it unavailable (and \
                 not ready) until it can be"
            );
        }
        let nudge = Arc::new(Notify::new());
        let relay = Relay {
            client,
            url: url.to_string(),
            timeout: options.timeout,
            namespace: namespace.clone(),
            layout: layout.clone(),
            topics,
            nudge: nudge.clone(),
            health: health.clone(),
        };
        let (work, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(relay.run());
                    driver.run(queue).await;
                })
            })
            .context("cannot start the store's thread")?;
        Ok(Self {
            work,
            inboxes,
            namespace: namespace.clone(),
            layout,
            bytes,
            health,
            nudge,
            unsent,
        })
    }
}

impl Backend for RedisStore {
    fn submit(&self, job: Job) {
        // The thread ends only with the process, or if it panicked: then the
        // operation is answered `failed` here, never left without an answer.
        if let Err(mpsc::error::SendError(Work::Op(job, submitted))) =
            self.work.send(Work::Op(job, Instant::now()))
        {
            job.answer(
                &self.inboxes,
                submitted,
                Outcome::Failed(StoreError::Failed),
            );
        }
    }

    fn bytes_of(&self, namespace: &Namespace) -> u64 {
        if *namespace == self.namespace {
            self.bytes.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn publish(&self, namespace: &Namespace, topic: &str, message: &[u8]) -> bool {
        let channel = if *namespace == self.namespace {
            self.layout.channel(topic)
        } else {
            Layout::new(namespace).channel(topic)
        };
        let work = Work::Publish {
            channel,
            message: message.to_vec(),
            submitted: Instant::now(),
        };
        if self.work.send(work).is_err() {
            self.unsent.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn heard_changed(&self) {
        self.nudge.notify_one();
    }

    fn unsent(&self) -> u64 {
        self.unsent.load(Ordering::Relaxed)
    }

    fn unavailable(&self) -> Option<String> {
        self.health.unavailable()
    }
}

/// The client for `url`, with the password and CA of `options`.
fn client(url: &str, options: &RedisOptions) -> Result<Client> {
    let mut info = url
        .into_connection_info()
        .with_context(|| format!("--store {}: not a Redis URL", redact(url)))?;
    // RESP3 (Redis 6 and later, Valkey): with it the client says at once when the
    // server closes an idle connection (a restart), instead of on the next use.
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    if let Some(password) = &options.password {
        settings = settings.set_password(&password.0);
    }
    info = info.set_redis_settings(settings);
    match &options.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --store-ca-file {}", path.display()))?;
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Client::build_with_tls(info, certificates)
                .with_context(|| format!("--store-ca-file {}", path.display()))
        }
        None => Client::open(info).with_context(|| format!("--store {url}")),
    }
}

/// Whether the server refused the credentials (rather than could not be reached).
fn refused(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// The store's thread: its connection, and where answers go.
struct Driver {
    client: Client,
    url: String,
    timeout: Duration,
    limits: StoreLimits,
    inboxes: Vec<Arc<Inbox>>,
    bytes: Arc<AtomicU64>,
    health: Arc<Health>,
    unsent: Arc<AtomicU64>,
    /// The namespace whose names `layout` makes (the process's: a job of another
    /// gets its own).
    namespace: Namespace,
    layout: Layout,
    conn: Option<Connected>,
    /// Not before then is a connection tried again.
    retry_at: Instant,
    retry_delay: Duration,
    /// When the server last answered.
    last_answer: Instant,
    failures: RateLimit,
    /// Rung when the client sees a connection close.
    dropped: Arc<Notify>,
    /// Pipelines sent on the current connection and not yet answered, oldest first,
    /// and what each carries (the same order).
    in_flight: FuturesOrdered<InFlight>,
    pending: VecDeque<Pending>,
}

/// What a pipeline out carries.
struct Pending {
    works: Vec<Work>,
    sent_at: Instant,
}

/// What a pipeline comes back with, or that it did not in time.
type Replies = Result<::redis::RedisResult<Vec<Value>>, tokio::time::error::Elapsed>;

/// A pipeline out.
type InFlight = Pin<Box<dyn Future<Output = Replies> + Send>>;

/// A connection, with the hashes of the scripts loaded on it.
struct Connected {
    mux: MultiplexedConnection,
    scripts: [String; SCRIPTS.len()],
    /// Set when the client saw the server close it.
    closed: Arc<AtomicBool>,
}

impl Driver {
    /// Runs until every sender is gone (the process exits).
    async fn run(mut self, mut queue: UnboundedReceiver<Work>) {
        let mut batch = Vec::with_capacity(GROUP);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let dropped = self.dropped.clone();
        loop {
            tokio::select! {
                taken = queue.recv_many(&mut batch, GROUP), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    if taken == 0 {
                        return;
                    }
                    self.send(&mut batch).await;
                }
                Some(replies) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let pending = self.pending.pop_front().expect("one per pipeline out");
                    self.receive(pending, replies);
                }
                () = dropped.notified() => self.closed(),
                _ = tick.tick() => self.check().await,
            }
        }
    }

    /// Drops the connection if the server closed it.
    fn closed(&mut self) {
        if self
            .conn
            .as_ref()
            .is_some_and(|conn| conn.closed.load(Ordering::Relaxed))
        {
            self.lost("the server closed the connection");
        }
    }

    /// Connects if the last failure is long enough ago, and checks an idle connection.
    async fn check(&mut self) {
        match &mut self.conn {
            None if Instant::now() >= self.retry_at => {
                let _ = self.connect().await;
            }
            None => {}
            // Not behind pipelines out: a large answer coming slowly is not silence.
            Some(conn)
                if self.in_flight.is_empty() && self.last_answer.elapsed() >= CHECK_EVERY =>
            {
                let ping = ::redis::cmd("PING");
                match tokio::time::timeout(self.timeout, ping.query_async::<Value>(&mut conn.mux))
                    .await
                {
                    Ok(Ok(_)) => self.answered(),
                    Ok(Err(e)) => self.lost(&e.to_string()),
                    Err(_) => self.lost("no answer to a PING within --store-timeout"),
                }
            }
            Some(_) => {}
        }
    }

    /// Opens a connection and loads the scripts on it, within `--store-timeout`.
    async fn connect(&mut self) -> Result<(), RedisError> {
        let closed = Arc::new(AtomicBool::new(false));
        let (flag, wake) = (closed.clone(), self.dropped.clone());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            // The pipelines' own deadlines bound the wait (see `send`).
            .set_response_timeout(None)
            .set_push_sender(move |info: PushInfo| {
                if info.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Relaxed);
                    wake.notify_one();
                }
                Ok::<(), ::redis::aio::SendError>(())
            });
        let usage = self.layout.usage();
        let attempt = async {
            let mut mux = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let mut pipe = ::redis::pipe();
            for script in SCRIPTS {
                pipe.cmd("SCRIPT").arg("LOAD").arg(script.source);
            }
            pipe.cmd("GET").arg(&usage);
            let (hashes, bytes): ([String; SCRIPTS.len()], Option<u64>) =
                loaded(pipe.query_async::<Vec<Value>>(&mut mux).await?)?;
            Ok::<_, RedisError>((mux, hashes, bytes))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((mux, scripts, bytes))) => {
                self.conn = Some(Connected {
                    mux,
                    scripts,
                    closed,
                });
                self.retry_delay = FIRST_RETRY;
                self.bytes.store(bytes.unwrap_or(0), Ordering::Relaxed);
                self.answered();
                Ok(())
            }
            Ok(Err(e)) => {
                self.lost(&e.to_string());
                Err(e)
            }
            Err(_) => {
                let why = "no answer within --store-timeout";
                self.lost(why);
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    why,
                )))
            }
        }
    }

    /// The server answered.
    fn answered(&mut self) {
        self.last_answer = Instant::now();
        self.health.commands.up(&self.url);
    }

    /// The connection failed: dropped, and tried again after a wait. What is out on
    /// it will get no answer from it: each of those operations answers `timed-out`
    /// now (it may or may not have run).
    fn lost(&mut self, why: &str) {
        self.conn = None;
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
        self.health.commands.down(&self.url, why);
        self.in_flight = FuturesOrdered::new();
        for pending in std::mem::take(&mut self.pending) {
            for work in pending.works {
                self.fail(&work, StoreError::TimedOut);
            }
        }
    }

    /// Sends `batch` as one pipeline, which joins those in flight; leaves `batch`
    /// empty. What needs no server, has waited out its time (connecting included), or
    /// finds no connection is answered now, unsent.
    async fn send(&mut self, batch: &mut Vec<Work>) {
        self.closed();
        if self.conn.is_none() && Instant::now() >= self.retry_at {
            let _ = self.connect().await;
        }
        let now = Instant::now();
        batch.retain(|work| !self.answer_locally(work, now));
        if batch.is_empty() {
            return;
        }
        let Some(conn) = &self.conn else {
            for work in batch.drain(..) {
                self.fail(&work, StoreError::Unavailable);
            }
            return;
        };
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for work in batch.iter() {
            match work {
                Work::Op(job, _) => command(
                    &mut pipe,
                    job,
                    &conn.scripts,
                    &self.limits,
                    &self.namespace,
                    &self.layout,
                ),
                Work::Publish {
                    channel, message, ..
                } => {
                    pipe.cmd("PUBLISH").arg(channel).arg(message);
                }
            }
        }
        // The batch is in submission order: its first waited longest.
        let deadline = tokio::time::Instant::from_std(batch[0].submitted() + self.timeout);
        let mut mux = conn.mux.clone();
        let replies =
            async move { tokio::time::timeout_at(deadline, pipe.query_async(&mut mux)).await };
        // Polled once now, outside tokio's cooperative budget (which could make it
        // wait a turn), so that its commands are queued on the connection before
        // those of any later pipeline: the server sees operations in the order they
        // were submitted, however many pipelines are out.
        let mut sent: InFlight = Box::pin(tokio::task::unconstrained(replies));
        let mut context = Context::from_waker(Waker::noop());
        if let Poll::Ready(done) = sent.as_mut().poll(&mut context) {
            sent = Box::pin(std::future::ready(done));
        }
        self.in_flight.push_back(sent);
        self.pending.push_back(Pending {
            works: std::mem::take(batch),
            sent_at: now,
        });
    }

    /// Answers every operation of a pipeline that came back (or did not in time).
    fn receive(&mut self, pending: Pending, replies: Replies) {
        let Pending { works, sent_at } = pending;
        let replies = match replies {
            Ok(Ok(replies)) if replies.len() == works.len() => replies,
            Ok(Ok(replies)) => {
                error!(
                    store = self.url,
                    "the store answered {} replies to {} commands",
                    replies.len(),
                    works.len()
                );
                self.lost("a reply was missing");
                works
                    .into_iter()
                    .for_each(|work| self.fail(&work, StoreError::Failed));
                return;
            }
            // The connection broke with these sent: each may or may not have run.
            Ok(Err(e)) => {
                works
                    .into_iter()
                    .for_each(|work| self.fail(&work, StoreError::TimedOut));
                self.lost(&e.to_string());
                return;
            }
            Err(_) => {
                works
                    .into_iter()
                    .for_each(|work| self.fail(&work, StoreError::TimedOut));
                // These may have waited in the queue, or the server may only be slow:
                // the connection is given up once nothing at all has come on it for a
                // whole --store-timeout.
                if self.last_answer.max(sent_at).elapsed() >= self.timeout {
                    self.lost("no answer within --store-timeout");
                }
                return;
            }
        };
        self.answered();
        // NOSCRIPT (the server lost the scripts: told to forget them, or a replica
        // promoted without them), READONLY, MASTERDOWN and LOADING (a failover or a
        // restart under way): that operation did not run. It answers `unavailable`,
        // and a new connection finds the server as it is now.
        let mut gone = None;
        for (work, reply) in works.into_iter().zip(replies) {
            match &reply {
                Value::ServerError(e)
                    if matches!(e.code(), "NOSCRIPT" | "READONLY" | "MASTERDOWN" | "LOADING") =>
                {
                    gone = Some(e.code().to_string());
                    self.fail(&work, StoreError::Unavailable);
                }
                _ => self.finish(work, reply),
            }
        }
        if let Some(code) = gone {
            self.lost(&format!("the server answered {code}"));
        }
    }

    /// Answers `work` without the server if it can be: past its time, refused by the
    /// limits, or with nothing to do. True if it did.
    fn answer_locally(&self, work: &Work, now: Instant) -> bool {
        if now >= work.submitted() + self.timeout {
            self.fail(work, StoreError::TimedOut);
            return true;
        }
        let Work::Op(job, submitted) = work else {
            return false;
        };
        let outcome = match job.op.check(&self.limits) {
            Err(error) => Outcome::Failed(error),
            Ok(()) => match &job.op {
                Op::GetMany(_, keys) if keys.is_empty() => Outcome::Values(Vec::new()),
                Op::SetMany(_, entries) if entries.is_empty() => Outcome::Done,
                Op::DeleteMany(_, keys) if keys.is_empty() => Outcome::Done,
                _ => return false,
            },
        };
        job.answer(&self.inboxes, *submitted, outcome);
        true
    }

    /// Answers `work` with its reply.
    fn finish(&mut self, work: Work, reply: Value) {
        match work {
            Work::Publish { .. } => {
                if let Value::ServerError(e) = reply {
                    self.unsent.fetch_add(1, Ordering::Relaxed);
                    if self.failures.allow() {
                        warn!(store = self.url, "the store refused a message: {e}");
                    }
                }
            }
            Work::Op(job, submitted) => {
                let outcome = match outcome_of(&job.op, reply) {
                    Ok((outcome, bytes)) => {
                        if let Some(bytes) = bytes
                            && job.namespace == self.namespace
                        {
                            self.bytes.store(bytes, Ordering::Relaxed);
                        }
                        outcome
                    }
                    Err(why) => {
                        if self.failures.allow() {
                            error!(
                                store = self.url,
                                op = job.op.name(),
                                "a store operation failed: {why}"
                            );
                        }
                        Outcome::Failed(StoreError::Failed)
                    }
                };
                job.answer(&self.inboxes, submitted, outcome);
            }
        }
    }

    /// Answers `work` with `error` (a message: counted as unsent).
    fn fail(&self, work: &Work, error: StoreError) {
        match work {
            Work::Op(job, submitted) => {
                job.answer(&self.inboxes, *submitted, Outcome::Failed(error))
            }
            Work::Publish { .. } => {
                self.unsent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_comes_from_the_url() {
        assert!(check_url("redis://127.0.0.1:6379/2").is_ok());
        assert!(check_url("redis://sandsock@127.0.0.1:6379").is_ok());
        assert!(check_url("rediss://cache.example:6380").is_ok());
        let said = check_url("redis://user:hunter2@127.0.0.1:6379").unwrap_err();
        assert!(said.contains("--store-password-file"), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(check_url("valkeys://cache.example:6380").is_ok());
        let said = check_url("http://user:hunter2@127.0.0.1").unwrap_err();
        assert!(
            said.contains("redis://") && !said.contains("hunter2"),
            "{said}"
        );
        assert!(check_url("rediss://cache.example:6380#insecure").is_err());
        assert_eq!(
            format!("{:?}", Password::new("hunter2\n")),
            "Some(<password>)"
        );
        assert!(Password::new("\n").is_none());
    }
}
