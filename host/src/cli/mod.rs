//! The command line: `host [serve flags]`, `host check`, `host examples`, `host load`,
//! `host replay`: the flags as clap parses them (here), and what the serve flags
//! turn into for the rest of the host ([`settings`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sandsock_load::LoadArgs;

mod settings;

use crate::commands::new::Lang;
use crate::runtime::sandbox::Isolation;
use crate::shared::limits::Limits;
use crate::shared::logging::LogFormat;
use crate::shared::units::{Dur, Size};
use crate::sockets::allow::AllowRule;
use crate::sockets::listener::default_backlog;
use crate::sockets::net::Lingering;
use crate::sockets::ring::Io;
use crate::store::{StoreKind, StoreLimits};
use crate::swap::{SwapMode, SwapPolicy};
use crate::upgrade::UpgradeMode;

/// How long open connections may take to finish after SIGTERM or SIGINT, by default.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upgrade's new process may take to be ready: compiling a large guest
/// without the cache takes seconds.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a TLS handshake may take, by default: a few round trips on any network.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the host listens when no address is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Serve sockets through a sandboxed WebAssembly handler.
///
/// With no subcommand, serves: `host --guest handler.wasm --listen 127.0.0.1:8080`.
#[derive(Parser, Debug)]
#[command(name = "host", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A subcommand; none means serve.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The serve flags.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How log lines are written to stderr: text or json.
    ///
    /// How log lines are written to stderr: text (coloured only on a terminal, and
    /// never with NO_COLOR set), or json, one object per line (every line, the
    /// listening addresses included).
    #[arg(help_heading = "Operations", long, value_enum, global = true,
          value_name = "text|json", hide_possible_values = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    /// Parses the command line. `--help` and `--version` are printed here and exit 0;
    /// any other mistake is one line naming it (with a hint towards the right flag
    /// for a few that other servers use), for the caller to print and exit 1 as for
    /// every error a user can cause.
    pub fn parse_or_explain() -> Result<Cli, String> {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        let err = match Cli::try_parse() {
            Ok(cli) => return Ok(cli),
            Err(err) => err,
        };
        if matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        ) {
            err.exit();
        }
        let rendered = err.render().to_string();
        let mut lines = rendered.lines();
        let first = lines.next().unwrap_or("bad command line");
        let mut line = first.trim_start_matches("error: ").to_string();
        // "the following required arguments were not provided:", then one indented
        // line for each, up to a blank line.
        if line.ends_with(':') {
            let what: Vec<&str> = lines
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            line = format!("{line} {}", what.join(", "));
        }
        if err.kind() == ErrorKind::UnknownArgument
            && let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
        {
            let flag = arg.split('=').next().unwrap_or(arg);
            let hint = match flag {
                "--port" | "-p" | "--host" | "--bind" | "--addr" | "--address" => {
                    Some("to listen on an address, use --listen ADDR (--listen 127.0.0.1:8080)")
                }
                "--wasm" | "--module" | "--component" | "--handler" => {
                    Some("the guest is --guest FILE")
                }
                _ => None,
            };
            let suggested = err.get(ContextKind::SuggestedArg).map(|s| s.to_string());
            match (hint, suggested) {
                (Some(hint), _) => line = format!("{line}; {hint}"),
                (None, Some(similar)) => line = format!("{line}; did you mean {similar}?"),
                (None, None) => line = format!("{line}; `host --help` lists the flags"),
            }
        }
        Err(line)
    }
}

/// The subcommands besides serving.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that a component fits the `handler` world; prints a one-line verdict.
    Check {
        /// The component file.
        path: PathBuf,
    },
    /// List the built-in example guests, or write them out as DIR/NAME.wasm.
    Examples {
        /// Write each built-in guest into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Many concurrent clients against a server, every answer checked.
    ///
    /// Drive many concurrent non-blocking clients against a server and check every answer.
    Load(LoadArgs),
    /// Write a guest project to start from, in the directory NAME.
    ///
    /// Write a ready-to-build guest project in the directory NAME: an HTTP hello, this
    /// host's SDK and contract, build.sh (writes NAME/NAME.wasm) and a README.
    New {
        /// The guest's name, and the directory made for it.
        name: String,
        /// The guest's language: its SDK, and a build.sh with that language's toolchain.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
    },
    /// Replay tapes recorded with --record on a guest; compare what it sends.
    ///
    /// Replay tapes recorded with --record on a guest, offline, and compare what it
    /// sends with what the recorded guest sent: a line per diverging connection, a
    /// summary, exit 1 on any divergence or trap.
    Replay(ReplayArgs),
    /// Ask a running host's admin listener whether it is alive (exit 0 or 1).
    ///
    /// Ask a running host's admin listener whether it is alive (exit 0) or not (exit
    /// 1), for container health checks.
    Health {
        /// The admin listener's address (`--admin`), e.g. 127.0.0.1:9901.
        admin: SocketAddr,
        /// Ask `/readyz` (serving and not in crash-loop back-off) instead of `/healthz`.
        #[arg(long)]
        ready: bool,
    },
}

/// What `host replay` is told.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A tape, or a directory of tapes (`--record`'s DIR).
    pub tapes: PathBuf,
    /// The guest to replay them on: a component file, or a built-in example's name.
    #[arg(long, value_name = "FILE|NAME")]
    pub guest: String,
    /// Replay on this guest too (the recorded one), and do not compare where its
    /// output differs from the tape's: noise the tape does not capture.
    #[arg(long, value_name = "FILE|NAME")]
    pub noise_from: Option<String>,
    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// A setting that is on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
}

/// How to serve: which guest, where, within which limits.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The guest: a component file, or a built-in example's name.
    ///
    /// The guest: a component file, or the name of a built-in example (see `host
    /// examples`).
    #[arg(
        help_heading = "Guest and listening",
        long,
        value_name = "PATH|NAME",
        default_value = "http"
    )]
    pub guest: String,

    /// Address to listen on (repeatable; port 0 picks one).
    ///
    /// Address to listen on; repeat for several. Port 0 picks a free port. [default:
    /// 127.0.0.1:8080, unless --listen-tls is given]
    #[arg(help_heading = "Guest and listening", long, value_name = "ADDR", value_parser = parse_addr)]
    pub listen: Vec<SocketAddr>,

    /// Address to listen on with TLS (repeatable).
    ///
    /// Address to listen on with TLS (repeatable), beside any --listen: the host runs
    /// the handshake with --tls-cert and --tls-key, the guest sees plaintext and never
    /// the key. The host prints `listening on ADDR (tls)`.
    #[arg(help_heading = "Guest and listening", long, value_name = "ADDR", value_parser = parse_addr, requires_all = ["tls_cert", "tls_key"])]
    pub listen_tls: Vec<SocketAddr>,

    /// The certificate chain for --listen-tls, PEM.
    ///
    /// The certificate chain for --listen-tls, PEM (the server's first). SIGHUP, POST
    /// /reload and --watch reload it, with the key: new handshakes use the new pair,
    /// open connections go on; a pair that fails to load is refused.
    #[arg(
        help_heading = "Guest and listening",
        long,
        value_name = "PEM",
        requires = "listen_tls"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key for --tls-cert, PEM.
    ///
    /// The private key for --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        help_heading = "Guest and listening",
        long,
        value_name = "PEM",
        requires = "listen_tls"
    )]
    pub tls_key: Option<PathBuf>,

    /// How long a TLS handshake may take.
    ///
    /// How long a TLS handshake may take before the connection is closed (a client that
    /// stalls mid-handshake holds a connection at most this long).
    #[arg(help_heading = "Guest and listening", long, value_name = "DUR", default_value_t = Dur(TLS_HANDSHAKE_TIMEOUT),
          hide_short_help = true)]
    pub tls_handshake_timeout: Dur,

    /// Event loops, one per thread; auto is one per CPU.
    ///
    /// Event loops, one per thread, each with its own listening socket on every address
    /// (the kernel spreads new connections across them) and its own guest instances;
    /// `auto` is one per CPU. Guest state is per worker: kv's store and chat's room are
    /// not shared between workers (use 1 for those).
    #[arg(
        help_heading = "Guest and listening",
        long,
        value_name = "N|auto",
        default_value = "1"
    )]
    pub workers: Workers,

    /// Connections the kernel queues per listener.
    ///
    /// Connections the kernel queues for a listener until the host accepts them; the
    /// default is the most the kernel allows (net.core.somaxconn), which also caps it.
    #[arg(help_heading = "Guest and listening", long, value_name = "N", default_value_t = default_backlog())]
    pub backlog: u32,

    /// Most wall time one guest call may take.
    ///
    /// Most wall time one guest call may take before it is interrupted (a trap); per
    /// call.
    #[arg(help_heading = "Sandbox limits", long, value_name = "DUR", default_value_t = Dur(Limits::DEFAULT.event_timeout))]
    pub event_timeout: Dur,

    /// Linear memory cap of each guest instance.
    ///
    /// The linear memory cap of each guest instance.
    #[arg(help_heading = "Sandbox limits", long, value_name = "SIZE", default_value_t = Size(Limits::DEFAULT.max_memory))]
    pub max_memory: Size,

    /// Open connections at most, across workers.
    ///
    /// Open connections at most, in total across workers; past it new ones are accepted
    /// and closed at once.
    #[arg(help_heading = "Sandbox limits", long, value_name = "N", default_value_t = Limits::DEFAULT.max_connections)]
    pub max_connections: usize,

    /// Unsent bytes held per connection.
    ///
    /// Bytes held for one connection's unsent writes (per connection); past it `write`
    /// answers would-block.
    #[arg(help_heading = "Sandbox limits", long, value_name = "SIZE", default_value_t = Size(Limits::DEFAULT.max_buffer))]
    pub max_buffer: Size,

    /// Timers one guest instance may have armed.
    ///
    /// Timers one guest instance may have armed at once (per instance); past it
    /// `set-timer` answers limit-exceeded.
    #[arg(help_heading = "Sandbox limits", long, value_name = "N", default_value_t = Limits::DEFAULT.max_timers)]
    pub max_timers: usize,

    /// A deterministic instruction budget per call (off).
    ///
    /// A deterministic budget of wasm fuel (about one unit per instruction) per guest
    /// call; off by default.
    #[arg(help_heading = "Sandbox limits", long, value_name = "N")]
    pub fuel: Option<u64>,

    /// One instance for all connections, or one each.
    ///
    /// shared: one guest instance for all connections (state lives across them);
    /// connection: an instance per connection (a trap costs only that connection).
    #[arg(help_heading = "Sandbox limits", long, value_enum, value_name = "shared|connection",
          hide_possible_values = true, default_value_t = Isolation::Shared)]
    pub isolation: Isolation,

    /// An environment variable the guest sees (repeatable).
    ///
    /// An environment variable the guest sees (repeatable); it sees no other.
    #[arg(help_heading = "Sandbox limits", long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Where the guest may connect out (repeatable).
    ///
    /// Let the guest connect out to HOST:PORT, or HOST:* for any port (repeatable);
    /// nothing else is allowed.
    #[arg(help_heading = "Sandbox limits", long = "allow-connect", value_name = "HOST:PORT", value_parser = AllowRule::parse)]
    pub allow_connect: Vec<AllowRule>,

    /// Reload the guest when its file changes.
    ///
    /// Reload the guest when its file changes (once it has been stable briefly). SIGHUP
    /// reloads it too, with or without this.
    #[arg(help_heading = "Swaps and canary", long)]
    pub watch: bool,

    /// How a new guest takes over at a reload.
    ///
    /// At a reload: drain (open connections stay with the generation that accepted
    /// them), handoff (they move to the new one, with the guest's state), or canary
    /// (the new one first runs as a shadow on new connections, its answers compared
    /// with the serving one's, and takes over with --canary-then only if they agree).
    #[arg(help_heading = "Swaps and canary", long, value_enum, value_name = "drain|handoff|canary",
          hide_possible_values = true, default_value_t = SwapPolicy::Drain)]
    pub swap: SwapPolicy,

    /// --swap canary: share of new connections tried.
    ///
    /// With --swap canary: the share of new connections the candidate is tried on,
    /// in percent.
    #[arg(help_heading = "Swaps and canary", long, value_name = "PERCENT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub canary_sample: u32,

    /// --swap canary: agreeing connections to promote.
    ///
    /// With --swap canary: connections compared with no divergence before the
    /// candidate is promoted.
    #[arg(help_heading = "Swaps and canary", long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub canary_connections: u32,

    /// --swap canary: how a promoted guest takes over.
    ///
    /// With --swap canary: how a promoted candidate takes over.
    #[arg(help_heading = "Swaps and canary", long, value_enum, value_name = "drain|handoff",
          hide_possible_values = true, default_value_t = SwapMode::Drain)]
    pub canary_then: SwapMode,

    /// --swap canary: how long to wait for a verdict.
    ///
    /// With --swap canary: how long to wait for enough connections; then the candidate
    /// is rejected.
    #[arg(
        help_heading = "Swaps and canary",
        long,
        value_name = "DUR",
        default_value = "60s"
    )]
    pub canary_timeout: Dur,

    /// --swap canary: mask the serving code's own noise.
    ///
    /// With --swap canary: learn the serving code's own noise (timestamps, random ids)
    /// from a second shadow of it, and do not compare those bytes.
    #[arg(help_heading = "Swaps and canary", long, value_enum, value_name = "on|off",
          hide_possible_values = true, default_value_t = Toggle::On)]
    pub canary_noise: Toggle,

    /// --swap drain: close what old generations hold after.
    ///
    /// With --swap drain: close what an old generation still holds after this long
    /// (default: never). With --upgrade drain, the old process's connections too.
    #[arg(help_heading = "Swaps and canary", long, value_name = "DUR")]
    pub drain_timeout: Option<Dur>,

    /// Serve new code only once fully optimized.
    ///
    /// At a swap, wait for the optimizing compiler (Cranelift, about 110 ms for a small
    /// guest) instead of serving the new code first as the baseline compiler (Winch)
    /// compiled it (about 35 ms) and then swapping again to the optimized code.
    #[arg(help_heading = "Swaps and canary", long)]
    pub no_tier_up: bool,

    /// Keep compiled guests in DIR.
    ///
    /// Keep compiled guests in DIR, so that a start or a swap to a guest seen before
    /// skips compiling it [default: $XDG_CACHE_HOME/sandsock, else ~/.cache/sandsock].
    /// It must be yours and writable by you alone: a directory others can write is
    /// refused, since its files are machine code the host runs.
    #[arg(help_heading = "Compiled-component cache", long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every guest; use no cache.
    ///
    /// Compile every guest; read and write no compiled-component cache.
    #[arg(
        help_heading = "Compiled-component cache",
        long,
        conflicts_with = "cache_dir"
    )]
    pub no_cache: bool,

    /// Record each instance's traffic into DIR, for `host replay`.
    ///
    /// Record what the world gave each guest instance (its connections' bytes,
    /// clocks, random bytes, store answers) and what it sent, one tape per instance,
    /// into DIR, for `host replay`. Tapes hold users' traffic in clear (TLS already
    /// decrypted), random bytes the guest used (keys, tokens) and store values: DIR
    /// is created 0700, and one that others could write, or a symbolic link, is
    /// refused. Off by default.
    #[arg(help_heading = "Record and replay", long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// The share of new connections recorded, in percent.
    #[arg(help_heading = "Record and replay", long, value_name = "PERCENT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100), requires = "record")]
    pub record_sample: u32,

    /// The most the tapes in --record's DIR hold together.
    ///
    /// The most bytes the tapes in --record's DIR hold together: past it, the oldest
    /// tapes are removed, the tapes of traps last. One tape takes at most a quarter;
    /// past that it is cut, marked incomplete.
    #[arg(help_heading = "Record and replay", long, value_name = "SIZE",
          default_value_t = Size(1 << 30), requires = "record", hide_short_help = true)]
    pub record_max_bytes: Size,

    /// Test hook: the record writer sleeps this long before each turn it writes.
    #[arg(long, value_name = "DUR", hide = true, requires = "record")]
    pub record_slow_writer: Option<Dur>,

    /// Test hook: the most bytes of turns waiting for the record writer.
    #[arg(long, value_name = "SIZE", hide = true, requires = "record")]
    pub record_queue: Option<Size>,

    /// Serve /metrics, /healthz, /readyz, POST /reload and /upgrade.
    ///
    /// Serve the admin endpoints on ADDR, off the event loops: GET /metrics (Prometheus
    /// text), /healthz, /readyz, POST /reload (as SIGHUP) and POST /upgrade (as
    /// SIGUSR2: the host binary replaced without a restart). Port 0 picks a free port;
    /// the host prints `admin listening on ADDR`. Off by default.
    #[arg(help_heading = "Operations", long, value_name = "ADDR", value_parser = parse_addr)]
    pub admin: Option<SocketAddr>,

    /// Let --admin listen on a non-loopback address.
    ///
    /// Let --admin listen on an address that is not loopback: the admin endpoints show
    /// the host's internals and can reload its guest. Writes there need
    /// --admin-token-file.
    #[arg(help_heading = "Operations", long)]
    pub admin_allow_remote: bool,

    /// The token admin writes (POST) must carry.
    ///
    /// The token `POST /reload` and `POST /upgrade` must carry, as `Authorization:
    /// Bearer TOKEN`: the first line of FILE. Without it, writes are taken only on a
    /// loopback admin listener. Reads (/metrics, /healthz, /readyz) stay open.
    #[arg(
        help_heading = "Operations",
        long,
        value_name = "FILE",
        hide_short_help = true
    )]
    pub admin_token_file: Option<PathBuf>,

    /// How long an upgrade's new process may take to load its guest.
    ///
    /// At SIGUSR2 or POST /upgrade, how long the new process may take to be ready
    /// (its guest loaded, from the compiled cache or compiled) before the upgrade is
    /// given up and this process goes on serving.
    #[arg(help_heading = "Operations", long, value_name = "DUR", default_value_t = Dur(UPGRADE_TIMEOUT),
          hide_short_help = true)]
    pub upgrade_timeout: Dur,

    /// What an upgrade does with open connections.
    ///
    /// At SIGUSR2 or POST /upgrade: handover (plain connections move to the new
    /// process with the guests' state, TLS ones finish here) or drain (they all
    /// finish here, within --shutdown-timeout and --drain-timeout).
    #[arg(help_heading = "Operations", long, value_enum, value_name = "handover|drain",
          hide_possible_values = true, default_value_t = UpgradeMode::Handover, hide_short_help = true)]
    pub upgrade: UpgradeMode,

    /// At SIGTERM, how long connections may take to finish.
    ///
    /// On SIGTERM or SIGINT, how long open connections may take to finish before they
    /// are closed.
    #[arg(help_heading = "Operations", long, value_name = "DUR", default_value_t = Dur(SHUTDOWN_TIMEOUT))]
    pub shutdown_timeout: Dur,

    /// How a closed connection ends: auto or always linger.
    ///
    /// When the guest closes a connection: auto lingers (sends the FIN, then reads and
    /// discards until the peer's end, 5 s at most) only if input is pending, so that it
    /// cannot turn into a reset that destroys the answer, and closes at once otherwise,
    /// as nginx does; always lingers after every close, so that even bytes the peer
    /// sends late cannot, at an extra turn per connection.
    #[arg(help_heading = "Operations", long, value_enum, value_name = "auto|always",
          hide_possible_values = true, default_value_t = Lingering::Auto)]
    pub lingering_close: Lingering,

    /// How the loops talk to the kernel: epoll or uring.
    ///
    /// epoll (the default) works on any Linux and under any seccomp profile. uring
    /// puts the plain TCP connections' receives, sends and closes on one io_uring per
    /// worker (multishot receives into a ring of buffers shared by every connection,
    /// a turn's sends in one system call), for fewer system calls a request; TLS
    /// connections, outbound connects and the listeners stay on epoll. It needs Linux
    /// 6.1 or later and a system that permits io_uring (many container runtimes'
    /// default seccomp profiles refuse it, and it widens the kernel surface the host
    /// exposes); the host checks at start and refuses with one line if not.
    #[arg(help_heading = "Operations", long, value_enum, value_name = "epoll|uring",
          hide_possible_values = true, default_value_t = Io::Epoll, env = "SANDSOCK_IO",
          hide_env = true, hide_short_help = true)]
    pub io: Io,

    /// Renew a shared instance whose memory reaches SIZE.
    ///
    /// Replace the shared guest instance with a fresh one of the same code once its
    /// linear memory reaches SIZE (per instance; default 3/4 of --max-memory), so that
    /// a guest that leaks is renewed before it runs out: its open connections move to
    /// the fresh instance with its state (a handoff, whatever --swap says) when the
    /// guest keeps state, and finish on the old one (drain) otherwise. Not with
    /// --isolation connection (an instance ends with its connection there). Above
    /// --max-memory: off.
    #[arg(
        help_heading = "Swaps and canary",
        long,
        value_name = "SIZE",
        hide_short_help = true
    )]
    pub recycle_at_memory: Option<Size>,

    /// Renew a shared instance after N calls.
    ///
    /// Also replace the shared instance after it has served N calls (off by default).
    #[arg(help_heading = "Swaps and canary", long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          hide_short_help = true)]
    pub recycle_after: Option<u32>,

    /// The guest's store: memory, a SQLite file, or Redis.
    ///
    /// The backend of the guest's `store` and `topics` (contract 1.1), shared by every
    /// worker and every generation: `memory` (the default: gone at exit); the PATH
    /// of a SQLite file, created if missing, which keeps every acknowledged write
    /// across a crash or a restart and can be shared by several host processes on one
    /// machine; or a Redis or Valkey server, `redis://HOST:PORT[/DB]` (`rediss://` for
    /// TLS, `redis://USER@...` for an ACL user), shared by every host that uses it,
    /// topics included. Write `./memory` for a file of that name.
    #[arg(help_heading = "State the host keeps", long, value_name = "memory|PATH|URL",
          default_value = "memory", value_parser = StoreKind::parse)]
    pub store: StoreKind,

    /// Whose keys and topics the guest sees [required with Redis].
    ///
    /// The namespace of the guest's keys and topics: two guests share keys only if
    /// they share a namespace. 1 to 64 printable ASCII characters other than space,
    /// `{` and `}`. By default the guest's name, with a local store; a remote store
    /// needs one given, so that two guests that happen to share a name on a shared
    /// server do not share data by accident.
    #[arg(help_heading = "State the host keeps", long, value_name = "NAME")]
    pub store_namespace: Option<String>,

    /// File holding the Redis password (or set SANDSOCK_STORE_PASSWORD).
    ///
    /// The file holding the remote store's password (its first line), for the
    /// default user or the URL's. Or set SANDSOCK_STORE_PASSWORD. Never in the URL:
    /// every user of the machine can read a process's arguments.
    #[arg(help_heading = "State the host keeps", long, value_name = "PATH")]
    pub store_password_file: Option<PathBuf>,

    /// What a remote store operation waits for at most.
    ///
    /// How long a remote store operation waits for the server at most; after it, the
    /// operation answers `timed-out`. Connecting, and the checks of an idle
    /// connection, are bound by it too.
    #[arg(
        help_heading = "State the host keeps",
        long,
        value_name = "DUR",
        default_value = "1s"
    )]
    pub store_timeout: Dur,

    /// CA certificate (PEM) a rediss:// server is checked against.
    ///
    /// The CA certificate (PEM) a `rediss://` server's certificate is checked against,
    /// instead of the system's.
    // In --help only: -h keeps to 70 lines of the common flags.
    #[arg(
        help_heading = "State the host keeps",
        long,
        value_name = "PATH",
        hide_short_help = true
    )]
    pub store_ca_file: Option<PathBuf>,

    /// Longest key the store takes.
    #[arg(help_heading = "State the host keeps", long, value_name = "SIZE",
          default_value_t = Size(StoreLimits::DEFAULT.max_key), hide_short_help = true)]
    pub store_max_key: Size,

    /// Largest value (or topic message) the store takes.
    #[arg(help_heading = "State the host keeps", long, value_name = "SIZE",
          default_value_t = Size(StoreLimits::DEFAULT.max_value), hide_short_help = true)]
    pub store_max_value: Size,

    /// Most bytes (keys and values) the namespace holds.
    #[arg(help_heading = "State the host keeps", long, value_name = "SIZE",
          default_value_t = Size(StoreLimits::DEFAULT.max_namespace_bytes as usize))]
    pub store_max_bytes: Size,

    /// Benchmark baseline: run the named logic natively instead of a guest.
    #[arg(long, value_name = "LOGIC", hide = true)]
    pub native: Option<String>,
}

/// `--workers`: a number of event loops, or one per CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// This many.
    Count(usize),
    /// One per CPU this process may run on.
    Auto,
}

/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

impl Workers {
    /// How many loops to run.
    pub fn count(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl std::str::FromStr for Workers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Workers::Auto);
        }
        match text.parse() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
            _ => Err(format!(
                "`{text}` is not a number of workers from 1 to {MAX_WORKERS}, or auto"
            )),
        }
    }
}

/// `KEY=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// An `ip:port`, or `name:port` resolved once at start.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some((_, port)) = text.rsplit_once(':')
        && let Ok(port) = port.parse::<u64>()
        && port > u64::from(u16::MAX)
    {
        return Err(format!(
            "`{text}`: port {port} is out of range (0 to 65535; 0 picks a free one)"
        ));
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("`{text}` is not an address like 127.0.0.1:8080"))
}
