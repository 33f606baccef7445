//! What the sandbox costs, against the floor: a minimal plain-mio HTTP server (written
//! for this benchmark, `minimal_http.rs`) and the same server on io_uring
//! (`minimal_uring.rs`: the floor below epoll's, where the kernel allows a ring; the
//! row is left out, saying why, where it does not), the host running the same HTTP logic
//! natively (`--native http`, the same event loop), and the `http` guest (shared
//! isolation, with `--admin` publishing metrics, an instance per connection, two
//! workers, and over TLS with a certificate made for the run), and one raw handler
//! built for contract 1.0 (the host reads for it), for 0.4.0 and for 0.1.0 (both
//! served through their adapters: what an old guest costs), all measured in one
//! run with the same load client (`host load`'s engine; over TLS every connection
//! makes a full handshake, no resumption).
//!
//! Where the kernel allows io_uring, the host runs on it too (`--io uring`: natively,
//! the guest, and an instance per connection), beside its epoll rows.
//!
//! nginx, where it is installed, is a row too (`nginx.rs`: one process, no log, a fixed
//! answer), the server users compare with.
//!
//! `cargo bench --bench http` (optionally `-- ROUNDS REQUESTS`: 9 rounds of 200,000
//! keep-alive requests by default, and a fifth as many with a connection per request;
//! `--keep-alive` or `--close` runs one mode only; `--connections N` for N concurrent
//! connections instead of 50, or `--connections 50,1000` for a table of each). On a shared 2-core machine single
//! rounds swing by 15%, medians of many do not. The servers take turns in every round,
//! in a rotating order; a server is pinned to CPU 0 and the load client (this process)
//! to CPU 1, except the two-worker host, which gets both CPUs. With two cores the
//! client is often the bottleneck, so besides requests/s it reports the server's CPU
//! time (user + sys, all threads) per request, which is the figure that shows the cost.

#[path = "minimal_http.rs"]
mod minimal_http;
#[path = "minimal_uring.rs"]
mod minimal_uring;
#[path = "nginx.rs"]
mod nginx;
#[path = "process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use process::{cpu_time, listening_addr, median, pin_to_cpu, raise_open_file_limit, spawn};

use sandsock_load::{LoadArgs, run};

/// Concurrent connections, unless `--connections N` says otherwise.
const CONNECTIONS: usize = 50;
const WARM_UP_REQUESTS: u64 = 20_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Minimal,
    MinimalUring,
    /// nginx, where it is installed (`nginx.rs`).
    Nginx,
    Native,
    Wasm,
    WasmAdmin,
    WasmPerConnection,
    WasmTwoWorkers,
    /// `--io uring` beside epoll: natively, the guest, an instance per connection.
    NativeUring,
    WasmUring,
    WasmPerConnectionUring,
    /// The raw handler of the `built_for_N` test guests, built for contract 1.0.
    RawToday,
    /// The same handler built for contract 0.4.0, served through its adapter.
    Raw0_4,
    /// The same handler built for contract 0.1.0, served through its adapter.
    Raw0_1,
    WasmTls,
}

/// The servers of each round; the TLS row stays last.
const SERVERS: [Server; 15] = [
    Server::Minimal,
    Server::MinimalUring,
    Server::Nginx,
    Server::Native,
    Server::Wasm,
    Server::WasmAdmin,
    Server::WasmPerConnection,
    Server::WasmTwoWorkers,
    Server::NativeUring,
    Server::WasmUring,
    Server::WasmPerConnectionUring,
    Server::RawToday,
    Server::Raw0_4,
    Server::Raw0_1,
    Server::WasmTls,
];

/// The raw test guests of the adapter rows.
const RAW_TODAY: &str = concat!(env!("SANDSOCK_GUEST_DIR"), "/built_for_1_0.wasm");
const RAW_0_4: &str = concat!(env!("SANDSOCK_GUEST_DIR"), "/built_for_0_4.wasm");
const RAW_0_1: &str = concat!(env!("SANDSOCK_GUEST_DIR"), "/built_for_0_1.wasm");

/// The certificate a TLS row serves, made for this run (a CA and a certificate it
/// signed for `localhost`), and the CA the load client trusts.
struct TlsFiles {
    cert: String,
    key: String,
    ca: std::path::PathBuf,
}

impl TlsFiles {
    fn make() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("sandsock-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        // ECDSA P-256, rcgen's default: what most sites serve.
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a certificate file");
            path
        };
        Self {
            cert: write("cert.pem", cert.pem()).display().to_string(),
            key: write("key.pem", key.serialize_pem()).display().to_string(),
            ca: write("ca.pem", ca.pem()),
        }
    }
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Minimal => "minimal mio",
            Server::MinimalUring => "minimal io_uring",
            Server::Nginx => "nginx",
            Server::Native => "host --native",
            Server::Wasm => "host wasm",
            Server::WasmAdmin => "host wasm, --admin",
            Server::WasmPerConnection => "wasm, instance/conn",
            Server::WasmTwoWorkers => "wasm, 2 workers",
            Server::NativeUring => "host --native, uring",
            Server::WasmUring => "host wasm, uring",
            Server::WasmPerConnectionUring => "instance/conn, uring",
            Server::RawToday => "raw guest, 1.0",
            Server::Raw0_4 => "raw guest, 0.4 adapted",
            Server::Raw0_1 => "raw guest, 0.1 adapted",
            Server::WasmTls => "host wasm, TLS",
        }
    }

    fn host_args(self, tls: &TlsFiles) -> Vec<&str> {
        let listen = ["--listen", "127.0.0.1:0"];
        let args: &[&str] = match self {
            Server::Minimal | Server::MinimalUring | Server::Nginx => &[],
            Server::Native => &["--native", "http"],
            Server::Wasm => &["--guest", "http"],
            Server::WasmAdmin => &["--guest", "http", "--admin", "127.0.0.1:0"],
            Server::WasmPerConnection => &["--guest", "http", "--isolation", "connection"],
            Server::WasmTwoWorkers => &["--guest", "http", "--workers", "2"],
            Server::NativeUring => &["--native", "http", "--io", "uring"],
            Server::WasmUring => &["--guest", "http", "--io", "uring"],
            Server::WasmPerConnectionUring => &[
                "--guest",
                "http",
                "--isolation",
                "connection",
                "--io",
                "uring",
            ],
            Server::RawToday => &["--guest", RAW_TODAY, "--env", "MODE=http"],
            Server::Raw0_4 => &["--guest", RAW_0_4, "--env", "MODE=http"],
            Server::Raw0_1 => &["--guest", RAW_0_1, "--env", "MODE=http"],
            Server::WasmTls => {
                return vec![
                    "--guest",
                    "http",
                    "--listen-tls",
                    "127.0.0.1:0",
                    "--tls-cert",
                    &tls.cert,
                    "--tls-key",
                    &tls.key,
                ];
            }
        };
        args.iter().chain(&listen).copied().collect()
    }

    /// Every server but the two-worker one runs on CPU 0 alone.
    fn pinned(self) -> bool {
        self != Server::WasmTwoWorkers
    }

    /// Whether it needs io_uring.
    fn on_ring(self) -> bool {
        matches!(
            self,
            Server::MinimalUring
                | Server::NativeUring
                | Server::WasmUring
                | Server::WasmPerConnectionUring
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    KeepAlive,
    ConnectionPerRequest,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::ConnectionPerRequest => "a connection per request",
        }
    }
}

struct Sample {
    requests_per_sec: f64,
    cpu_per_request: Duration,
    p99: Duration,
}

fn main() {
    if let Ok(addr) = std::env::var(minimal_http::SERVE_AT) {
        minimal_http::serve(addr.parse().expect("the minimal server's address"));
    }
    if let Ok(addr) = std::env::var(minimal_uring::SERVE_AT) {
        minimal_uring::serve(addr.parse().expect("the minimal server's address"));
    }
    let flags: Vec<String> = std::env::args().skip(1).collect();
    let mut counts = vec![CONNECTIONS];
    let mut positional = Vec::new();
    let mut args = flags.iter();
    while let Some(arg) = args.next() {
        if arg == "--connections" {
            let list: Option<Result<Vec<usize>, _>> = args
                .next()
                .map(|list| list.split(',').map(str::parse).collect());
            counts = match list {
                Some(Ok(counts)) if !counts.contains(&0) => counts,
                _ => panic!("--connections takes a count, or counts separated by commas, above 0"),
            };
        } else if !arg.starts_with("--") {
            positional.push(arg);
        }
    }
    let mut numbers = positional.into_iter();
    let rounds: usize = numbers.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let requests: u64 = numbers
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let modes: Vec<Mode> = if flags.iter().any(|f| f == "--keep-alive") {
        vec![Mode::KeepAlive]
    } else if flags.iter().any(|f| f == "--close") {
        vec![Mode::ConnectionPerRequest]
    } else {
        vec![Mode::KeepAlive, Mode::ConnectionPerRequest]
    };
    raise_open_file_limit();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if pinned {
        pin_to_cpu(1);
    }
    let shown: Vec<String> = counts.iter().map(usize::to_string).collect();
    println!(
        "http benchmark: {rounds} rounds, {} connections, servers {}",
        shown.join(" and "),
        if pinned {
            "on CPU 0 (two workers: both CPUs), load client on CPU 1"
        } else {
            "unpinned (one CPU)"
        }
    );
    let tls = TlsFiles::make();
    let mut servers: Vec<Server> = match sandsock::sockets::ring::probe() {
        Ok(()) => SERVERS.to_vec(),
        Err(e) => {
            println!("no io_uring rows: this kernel (or its seccomp filter) refuses it: {e}");
            SERVERS.into_iter().filter(|s| !s.on_ring()).collect()
        }
    };
    let nginx = nginx::find()
        .inspect_err(|why| println!("no nginx row: {why}"))
        .ok();
    if nginx.is_none() {
        servers.retain(|s| *s != Server::Nginx);
    }
    let setup = Setup { tls, nginx };
    for (connections, mode) in counts
        .iter()
        .flat_map(|&n| modes.iter().map(move |&mode| (n, mode)))
    {
        let n = match mode {
            Mode::KeepAlive => requests,
            Mode::ConnectionPerRequest => requests / 5,
        };
        println!(
            "\n{}, {connections} connections: {n} requests per round",
            mode.name()
        );
        let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Rotate who goes first, so that drift (thermal, other load) hits all alike.
            for k in 0..servers.len() {
                let i = (round + k) % servers.len();
                let sample = measure(servers[i], mode, n, connections, pinned, &setup);
                println!(
                    "round {round} {:<22} {:>9.0} requests/s  {:>7.2} µs CPU/request  p99 {:>7.0} µs",
                    servers[i].name(),
                    sample.requests_per_sec,
                    sample.cpu_per_request.as_secs_f64() * 1e6,
                    sample.p99.as_secs_f64() * 1e6
                );
                samples[i].push(sample);
            }
        }
        let medians: Vec<(f64, f64, f64)> = samples.iter().map(|s| medians(s)).collect();
        let cpu_of = |server| {
            servers
                .iter()
                .position(|s| *s == server)
                .map(|i| medians[i].1)
        };
        let floor_cpu = cpu_of(Server::Minimal).expect("the mio floor");
        let native_cpu = cpu_of(Server::Native).expect("the native row");
        println!();
        println!("median, {}, {connections} connections:", mode.name());
        println!(
            "  {:<22} {:>12} {:>11} {:>11} {:>10} {:>10}",
            "", "requests/s", "µs CPU/req", "× minimal", "× native", "p99 µs"
        );
        for (server, (rps, cpu, p99)) in servers.iter().zip(&medians) {
            println!(
                "  {:<22} {:>12.0} {:>11.2} {:>11.3} {:>10.3} {:>10.0}",
                server.name(),
                rps,
                cpu * 1e6,
                cpu / floor_cpu,
                cpu / native_cpu,
                p99 * 1e6
            );
        }
        let cpu = |server| cpu_of(server).expect("a row of every round");
        let raw_cpu = cpu(Server::RawToday);
        for (server, version) in [(Server::Raw0_4, "0.4"), (Server::Raw0_1, "0.1")] {
            println!(
                "  the same raw guest built for {version} (read by the guest, through its adapter) over 1.0: {:.2}× CPU per request",
                cpu(server) / raw_cpu
            );
        }
        if let Some(uring_cpu) = cpu_of(Server::MinimalUring) {
            println!(
                "  the io_uring floor over the mio one: {:.2}× CPU per request; the host wasm over the io_uring floor: {:.2}×",
                uring_cpu / floor_cpu,
                cpu(Server::Wasm) / uring_cpu
            );
            let ring = cpu(Server::WasmUring);
            println!(
                "  the host wasm on io_uring: {:.2}× its epoll self, {:.2}× the mio floor, {:.2}× the io_uring floor; natively {:.2}× its epoll self; an instance per connection {:.2}× its epoll self, {:.2}× the io_uring floor",
                ring / cpu(Server::Wasm),
                ring / floor_cpu,
                ring / uring_cpu,
                cpu(Server::NativeUring) / native_cpu,
                cpu(Server::WasmPerConnectionUring) / cpu(Server::WasmPerConnection),
                cpu(Server::WasmPerConnectionUring) / uring_cpu
            );
        }
        if let Some(nginx_cpu) = cpu_of(Server::Nginx) {
            println!(
                "  nginx over the mio floor: {:.2}× CPU per request; the host wasm over nginx: {:.2}× on epoll{}",
                nginx_cpu / floor_cpu,
                cpu(Server::Wasm) / nginx_cpu,
                cpu_of(Server::WasmUring)
                    .map(|ring| format!(", {:.2}× on io_uring", ring / nginx_cpu))
                    .unwrap_or_default()
            );
        }
        let wasm_cpu = cpu(Server::Wasm);
        let tls_cpu = cpu(Server::WasmTls);
        println!(
            "  TLS over plaintext, the same guest: {:.2}× CPU per request",
            tls_cpu / wasm_cpu
        );
    }
    nginx::clean_up();
}

fn measure(
    server: Server,
    mode: Mode,
    requests: u64,
    connections: usize,
    pinned: bool,
    setup: &Setup,
) -> Sample {
    let (mut child, addr) = start(server, pinned && server.pinned(), setup);
    let tls = &setup.tls;
    let load = |n: u64| {
        let args = LoadArgs {
            addr,
            connections,
            requests: n,
            http: true,
            payload: String::new(),
            close: mode == Mode::ConnectionPerRequest,
            timeout_secs: 300,
            quiet: true,
            tls_ca: (server == Server::WasmTls).then(|| tls.ca.clone()),
            tls_server_name: "localhost".into(),
        };
        let report = run(&args).expect("load run");
        assert_eq!(
            report.errors, 0,
            "the benchmark's load saw errors:\n{report}"
        );
        report
    };
    load(WARM_UP_REQUESTS.min(requests));
    let cpu_before = cpu_time(child.id());
    let report = load(requests);
    let cpu = cpu_time(child.id()) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    Sample {
        requests_per_sec: report.requests_per_sec(),
        cpu_per_request: cpu / requests as u32,
        p99: Duration::from_micros(report.latency.value_at_quantile(0.99)),
    }
}

/// What the servers of a run need: the TLS row's certificate, the nginx binary.
struct Setup {
    tls: TlsFiles,
    nginx: Option<PathBuf>,
}

/// Starts `server` and waits until it listens: its process and its address.
fn start(server: Server, pinned: bool, setup: &Setup) -> (Child, SocketAddr) {
    if server == Server::Nginx {
        let nginx = setup
            .nginx
            .as_deref()
            .expect("nginx rows only where it is found");
        return nginx::start(nginx, pinned);
    }
    let mut child = match server {
        Server::Minimal | Server::MinimalUring => {
            let serve_at = if server == Server::Minimal {
                minimal_http::SERVE_AT
            } else {
                minimal_uring::SERVE_AT
            };
            spawn(
                &std::env::current_exe()
                    .expect("this benchmark's binary")
                    .to_string_lossy(),
                &[],
                &[(serve_at, "127.0.0.1:0")],
                pinned,
            )
        }
        _ => spawn(
            env!("CARGO_BIN_EXE_host"),
            &server.host_args(&setup.tls),
            &[],
            pinned,
        ),
    };
    let addr = listening_addr(&mut child);
    (child, addr)
}

fn medians(samples: &[Sample]) -> (f64, f64, f64) {
    let of = |figure: fn(&Sample) -> f64| median(samples.iter().map(figure).collect());
    (
        of(|s| s.requests_per_sec),
        of(|s| s.cpu_per_request.as_secs_f64()),
        of(|s| s.p99.as_secs_f64()),
    )
}
