//! `--store redis://`: the store and topics on a real `redis-server`, on loopback,
//! shared by host processes; what a stalled, killed or restarted server does to them;
//! namespaces on one server; credentials; TLS.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Host, IO_TIMEOUT, read_line, run_host, scratch};
use sandsock::store::{
    Asker, Backend, Delivery, Inbox, Job, Key, MemoryStore, Namespace, Op, Outcome, RedisOptions,
    RedisStore, SqliteStore, StoreLimits, Topics,
};

fn say(stream: &mut TcpStream, line: &str) {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn ask(stream: &mut TcpStream, line: &str) -> String {
    say(stream, line);
    read_line(stream)
}

/// A kv host on `redis` in `namespace`, with an admin listener.
fn kv(redis: &RedisServer, namespace: &str, extra: &[&str]) -> Host {
    kv_env(redis, namespace, extra, &[])
}

/// [`kv`], with variables set in the host's environment.
fn kv_env(redis: &RedisServer, namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Host {
    let url = redis.url();
    let mut args = vec![
        "--guest",
        "kv",
        "--store",
        &url,
        "--store-namespace",
        namespace,
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Host::start_env(&args, env)
}

/// A chat host on `redis` in `namespace`.
fn chat(redis: &RedisServer, namespace: &str) -> Host {
    Host::start(&[
        "--guest",
        "chat",
        "--store",
        &redis.url(),
        "--store-namespace",
        namespace,
        "--admin",
        "127.0.0.1:0",
    ])
}

/// The channel of the chat example's room in `namespace`.
fn room(namespace: &str) -> String {
    format!("sandsock:{{{namespace}}}:t:room")
}

/// Waits until `/readyz` answers `status`.
fn wait_ready(host: &Host, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = host.admin_request("GET", "/readyz");
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {got}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `line` until the answer is `want` (the host reconnecting, say).
fn ask_until(stream: &mut TcpStream, line: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ask(stream, line);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{line:?} still answers {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_hosts_share_the_store_and_the_chat_room() {
    let redis = RedisServer::start();
    let (a, b) = (kv(&redis, "shop", &[]), kv(&redis, "shop", &[]));
    let (mut to_a, mut to_b) = (a.connect(), b.connect());
    assert_eq!(ask(&mut to_a, "SET cart three apples"), "OK");
    assert_eq!(ask(&mut to_b, "GET cart"), "VALUE three apples");
    assert_eq!(ask(&mut to_b, "DEL cart"), "DELETED");
    assert_eq!(ask(&mut to_a, "GET cart"), "NOT_FOUND");
    assert_eq!(
        redis.cli(&["GET", "sandsock:{shop}:bytes"]),
        "0",
        "the byte count is the server's, kept by both"
    );

    // The chat example subscribes to its room when its first client joins.
    let (one, two) = (chat(&redis, "lobby"), chat(&redis, "lobby"));
    let mut on_one: Vec<TcpStream> = (0..2).map(|_| one.connect()).collect();
    let mut on_two: Vec<TcpStream> = (0..2).map(|_| two.connect()).collect();
    common::joined(&one, 2);
    common::joined(&two, 2);
    redis.wait_subscribers(&room("lobby"), 2);
    say(&mut on_one[0], "hello from one");
    say(&mut on_two[0], "hello from two");
    for (i, client) in on_one.iter_mut().chain(on_two.iter_mut()).enumerate() {
        let mut heard = vec![read_line(client)];
        if i % 2 == 1 {
            heard.push(read_line(client));
        }
        heard.sort();
        let expected: &[&str] = match i {
            0 => &["hello from two"],
            2 => &["hello from one"],
            _ => &["hello from one", "hello from two"],
        };
        assert_eq!(heard, expected, "client {i}");
    }
}

#[test]
fn a_stalled_server_times_out_while_other_lines_are_answered() {
    let redis = RedisServer::start();
    let host = kv(&redis, "stall", &["--store-timeout", "500ms"]);
    let mut client = host.connect();
    assert_eq!(ask(&mut client, "SET before stall"), "OK");
    wait_ready(&host, 200);

    redis.signal(libc::SIGSTOP);
    let stalled = Instant::now();
    // An operation under way when the server stops answers an error, not a wait.
    say(&mut client, "GET before");
    let answer = read_line(&mut client);
    let waited = stalled.elapsed();
    assert!(
        answer == "ERROR store timed out" || answer == "ERROR store unavailable",
        "{answer:?}"
    );
    assert!(
        waited < Duration::from_millis(500) + Duration::from_secs(2),
        "answered after {waited:?}, with --store-timeout 500ms"
    );
    // The guest's other lines keep being answered during the stall, on another
    // connection and on this one.
    let mut other = host.connect();
    let mut answered = 0;
    while stalled.elapsed() < Duration::from_secs(3) {
        assert_eq!(ask(&mut other, "HELLO"), "ERROR unknown command");
        answered += 1;
    }
    assert!(answered >= 10, "only {answered} lines answered in 3 s");
    assert!(ask(&mut client, "GET before").starts_with("ERROR store"));
    let body = wait_ready(&host, 503);
    assert!(body.contains("store"), "{body}");

    redis.signal(libc::SIGCONT);
    ask_until(&mut client, "GET before", "VALUE stall");
    assert_eq!(ask(&mut client, "SET after fine"), "OK");
    assert_eq!(ask(&mut client, "GET after"), "VALUE fine");
    wait_ready(&host, 200);
    assert!(
        host.log().contains("connection is down"),
        "the log says so:\n{}",
        host.log()
    );
    println!(
        "{answered} other lines answered during a 3 s stall; the stalled GET answered in {waited:?}"
    );
}

#[test]
fn a_restarted_server_is_reconnected_and_subscriptions_come_back() {
    let mut redis = RedisServer::start();
    let host = kv(&redis, "again", &["--store-timeout", "500ms"]);
    let (one, two) = (chat(&redis, "again"), chat(&redis, "again"));
    let (mut x, mut y) = (one.connect(), two.connect());
    common::joined(&one, 1);
    common::joined(&two, 1);
    redis.wait_subscribers(&room("again"), 2);
    let mut client = host.connect();
    assert_eq!(ask(&mut client, "SET k before"), "OK");

    redis.kill();
    ask_until(&mut client, "GET k", "ERROR store unavailable");
    // Lines the store has no part in are answered as before.
    assert_eq!(ask(&mut client, "HELLO"), "ERROR unknown command");
    wait_ready(&host, 503);

    redis.restart();
    ask_until(&mut client, "GET k", "NOT_FOUND");
    assert_eq!(ask(&mut client, "SET k after"), "OK");
    assert_eq!(ask(&mut client, "GET k"), "VALUE after");
    wait_ready(&host, 200);
    // Both chat hosts listen to the room again, and the clients connected all along
    // hear each other.
    redis.wait_subscribers(&room("again"), 2);
    // A message published while the publisher's own connection is still down is
    // lost (counted), as Redis pub/sub loses what finds no subscriber: wait for it.
    wait_ready(&one, 200);
    say(&mut x, "back again");
    assert_eq!(read_line(&mut y), "back again");
}

#[test]
fn namespaces_on_one_server_stay_apart_whatever_their_characters() {
    let redis = RedisServer::start();
    let names = ["a", "a*", "a?", "ab", "[a]"];
    let hosts: Vec<Host> = names.iter().map(|ns| kv(&redis, ns, &[])).collect();
    let mut clients: Vec<TcpStream> = hosts.iter().map(Host::connect).collect();
    for (client, ns) in clients.iter_mut().zip(names) {
        assert_eq!(ask(client, &format!("SET k {ns}")), "OK");
        assert_eq!(ask(client, &format!("SET only{ns} x")), "OK");
    }
    for (client, ns) in clients.iter_mut().zip(names) {
        assert_eq!(ask(client, "GET k"), format!("VALUE {ns}"), "in {ns}");
        for other in names.iter().filter(|other| **other != ns) {
            assert_eq!(
                ask(client, &format!("GET only{other}")),
                "NOT_FOUND",
                "{ns} sees {other}'s key"
            );
        }
    }

    // Chat rooms of two namespaces, one a pattern that matches the other's name.
    let (star, plain) = (chat(&redis, "r*"), chat(&redis, "rx"));
    let (mut s1, mut s2) = (star.connect(), star.connect());
    let (mut p1, mut p2) = (plain.connect(), plain.connect());
    common::joined(&star, 2);
    common::joined(&plain, 2);
    redis.wait_subscribers(&room("r*"), 1);
    redis.wait_subscribers(&room("rx"), 1);
    say(&mut s1, "only for r*");
    assert_eq!(read_line(&mut s2), "only for r*");
    say(&mut p1, "only for rx");
    assert_eq!(
        read_line(&mut p2),
        "only for rx",
        "rx heard r*'s message first"
    );
    s2.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut nothing = String::new();
    let read = BufReader::new(&mut s2).read_line(&mut nothing);
    assert!(read.is_err() || nothing.is_empty(), "r* heard {nothing:?}");
    s2.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

#[test]
fn credentials_come_from_a_file_or_the_environment_and_a_wrong_one_stops_the_host() {
    let redis = RedisServer::with_password("correct horse");
    let dir = scratch("redis-credentials");
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "battery staple\n").unwrap();
    let url = redis.url();
    let out = run_host(&[
        "--guest",
        "kv",
        "--store",
        &url,
        "--store-namespace",
        "creds",
        "--store-password-file",
        wrong.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    let error: Vec<&str> = said.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error.len(), 1, "one line: {said}");
    assert!(
        error[0].contains("refused the host's credentials"),
        "{said}"
    );
    assert!(
        !said.contains("battery"),
        "the password is never written: {said}"
    );

    let right = dir.join("right");
    std::fs::write(&right, "correct horse\n").unwrap();
    let by_file = kv(
        &redis,
        "creds",
        &["--store-password-file", right.to_str().unwrap()],
    );
    let by_env = kv_env(
        &redis,
        "creds",
        &[],
        &[("SANDSOCK_STORE_PASSWORD", "correct horse")],
    );
    assert_eq!(ask(&mut by_file.connect(), "SET secret kept"), "OK");
    assert_eq!(ask(&mut by_env.connect(), "GET secret"), "VALUE kept");
    let metrics = by_env.admin_request("GET", "/metrics").1;
    assert!(!metrics.contains("correct horse") && !by_env.log().contains("correct horse"));

    let in_url = url.replace("redis://", "redis://:hunter2@");
    let out = run_host(&[
        "--guest",
        "kv",
        "--store",
        &in_url,
        "--store-namespace",
        "x",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("--store-password-file"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

#[test]
fn a_remote_store_needs_a_namespace() {
    let out = run_host(&["--guest", "kv", "--store", "redis://127.0.0.1:1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("--store-namespace"), "{said}");
}

#[test]
fn rediss_checks_the_server_against_the_given_ca() {
    let dir = scratch("redis-tls");
    write_certificates(&dir);
    let redis = RedisServer::with_tls(&dir);
    let ca = dir.join("ca.pem");
    let url = redis.url();
    let host = Host::start(&[
        "--guest",
        "kv",
        "--store",
        &url,
        "--store-namespace",
        "tls",
        "--store-ca-file",
        ca.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut client = host.connect();
    assert_eq!(ask(&mut client, "SET over tls"), "OK");
    assert_eq!(ask(&mut client, "GET over"), "VALUE tls");
    wait_ready(&host, 200);

    // Without the CA, the system's roots do not know the server: not ready, and
    // every operation answers unavailable.
    let untrusted = kv(&redis, "tls", &[]);
    wait_ready(&untrusted, 503);
    assert_eq!(
        ask(&mut untrusted.connect(), "GET over"),
        "ERROR store unavailable"
    );
}

/// A CA and a certificate for `localhost` it signed, as PEM files in `dir`.
fn write_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sandsock test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// The same operations on memory, SQLite and Redis answer the same, and leave the
/// same byte count: a guest written against one backend runs on the others.
#[test]
fn every_operation_answers_alike_on_every_backend() {
    let redis = RedisServer::start();
    let dir = scratch("redis-alike");
    let limits = StoreLimits {
        max_key: 64,
        max_value: 64,
        max_namespace_bytes: 4096,
    };
    let ns = Namespace::new("alike*").unwrap();
    let ops = operations();
    let mut answers = Vec::new();
    for backend in ["memory", "file", "redis"] {
        let inbox = Inbox::new();
        let store: Box<dyn Backend> = match backend {
            "memory" => Box::new(MemoryStore::new(limits, vec![inbox.clone()])),
            "file" => Box::new(
                SqliteStore::open(&dir.join("store.db"), limits, vec![inbox.clone()]).unwrap(),
            ),
            _ => Box::new(
                RedisStore::open(
                    &redis.url(),
                    &RedisOptions::default(),
                    &ns,
                    limits,
                    vec![inbox.clone()],
                    Arc::new(Topics::new(vec![inbox.clone()])),
                )
                .unwrap(),
            ),
        };
        let outcomes = run(store.as_ref(), &inbox, &ns, &ops);
        answers.push((backend, outcomes, store.bytes_of(&ns)));
    }
    let (_, memory, memory_bytes) = &answers[0];
    for (backend, outcomes, bytes) in &answers[1..] {
        for (i, (op, (want, got))) in ops.iter().zip(memory.iter().zip(outcomes)).enumerate() {
            assert_eq!(got, want, "{backend}, operation {i}: {op:?}");
        }
        assert_eq!(bytes, memory_bytes, "{backend}'s byte count");
    }
    assert_eq!(
        redis.cli(&["GET", "sandsock:{alike*}:bytes"]),
        memory_bytes.to_string()
    );
}

/// Every kind of operation, on keys with characters Redis gives a meaning to, up to
/// and past the namespace's limit.
fn operations() -> Vec<Op> {
    let key = |k: &str| Key::new("b", k);
    let mut ops = vec![
        Op::Get(key("*")),
        Op::Set(key("*"), b"star".to_vec()),
        Op::Set(key("a?b"), b"".to_vec()),
        Op::Set(key("x:y"), b"colon".to_vec()),
        Op::Get(key("*")),
        Op::Get(key("a?b")),
        Op::Exists(key("a?b")),
        Op::Exists(key("nope")),
        Op::Set(key("*"), b"longer star".to_vec()),
        Op::Increment(key("n"), 41),
        Op::Increment(key("n"), 1),
        Op::Increment(key("n"), -50),
        Op::Increment(key("*"), 1),
        Op::Increment(key("big"), i64::MAX),
        Op::Increment(key("big"), 1),
        Op::Set(key("plus"), b"+5".to_vec()),
        Op::Increment(key("plus"), 1),
        Op::Set(key("zeros"), b"007".to_vec()),
        Op::Increment(key("zeros"), 1),
        Op::Set(key("minus0"), b"-0".to_vec()),
        Op::Increment(key("minus0"), 1),
        Op::Set(key("neg"), b"-12".to_vec()),
        Op::Increment(key("neg"), 2),
        Op::CompareAndSwap(key("c"), None, b"1".to_vec()),
        Op::CompareAndSwap(key("c"), None, b"2".to_vec()),
        Op::CompareAndSwap(key("c"), Some(b"2".to_vec()), b"3".to_vec()),
        Op::CompareAndSwap(key("c"), Some(b"1".to_vec()), b"3".to_vec()),
        Op::Get(key("c")),
        Op::Delete(key("x:y")),
        Op::Delete(key("x:y")),
        Op::GetMany(
            "b".into(),
            vec!["*".into(), "x:y".into(), "c".into(), "*".into()],
        ),
        Op::SetMany(
            "b".into(),
            vec![
                ("m1".into(), b"one".to_vec()),
                ("m2".into(), b"two".to_vec()),
                ("m1".into(), b"uno".to_vec()),
            ],
        ),
        Op::GetMany("b".into(), vec!["m1".into(), "m2".into()]),
        Op::DeleteMany("b".into(), vec!["m2".into(), "gone".into()]),
        Op::GetMany("b".into(), vec![]),
        Op::Set(Key::new("other", "k"), b"v".to_vec()),
        Op::Set(key(&"k".repeat(65)), b"v".to_vec()),
        Op::Set(key("v"), vec![0; 65]),
        Op::Set(Key::new("bad:name", "k"), b"v".to_vec()),
    ];
    // Enough keys for more than one page.
    for i in 0..120 {
        ops.push(Op::Set(key(&format!("p{i:03}")), b"page".to_vec()));
    }
    ops.push(Op::ListKeys("b".into(), None));
    ops.push(Op::ListKeys("b".into(), Some("p050".into())));
    ops.push(Op::ListKeys("other".into(), None));
    // Past the limit: refused, and nothing of it kept.
    for i in 0..40 {
        ops.push(Op::Set(key(&format!("fill{i}")), vec![b'f'; 60]));
    }
    ops.push(Op::Increment(key("fill0"), 1));
    ops.push(Op::CompareAndSwap(key("new"), None, vec![b'n'; 60]));
    ops.push(Op::Delete(key("fill0")));
    ops.push(Op::Set(key("after"), b"room again".to_vec()));
    ops
}

/// Submits `ops` in order and waits for every answer.
fn run(store: &dyn Backend, inbox: &Inbox, ns: &Namespace, ops: &[Op]) -> Vec<Outcome> {
    let asker = Asker {
        worker: 0,
        owner: 1,
        serial: 1,
    };
    for (i, op) in ops.iter().enumerate() {
        store.submit(Job {
            asker,
            op_id: i as u64,
            namespace: ns.clone(),
            op: op.clone(),
        });
    }
    let mut answers: Vec<Option<Outcome>> = vec![None; ops.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "the store did not answer");
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        for delivery in taken {
            if let Delivery::Done { op, outcome, .. } = delivery {
                answers[op as usize] = Some(outcome);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    answers.into_iter().map(Option::unwrap).collect()
}

/// Thousands of operations submitted at once go out as many pipelines, several in
/// flight together: each `get` still sees the `set` submitted just before it.
#[test]
fn operations_land_in_submission_order_across_pipelines() {
    let redis = RedisServer::start();
    let ns = Namespace::new("order").unwrap();
    let inbox = Inbox::new();
    let store = RedisStore::open(
        &redis.url(),
        &RedisOptions::default(),
        &ns,
        StoreLimits::DEFAULT,
        vec![inbox.clone()],
        Arc::new(Topics::new(vec![inbox.clone()])),
    )
    .unwrap();
    let ops: Vec<Op> = (0..6000)
        .map(|i| {
            let key = Key::new("b", &format!("k{}", i / 2 % 7));
            if i % 2 == 0 {
                Op::Set(key, i.to_string().into_bytes())
            } else {
                Op::Get(key)
            }
        })
        .collect();
    let outcomes = run(&store, &inbox, &ns, &ops);
    for (i, outcome) in outcomes.iter().enumerate() {
        let want = if i % 2 == 0 {
            Outcome::Done
        } else {
            Outcome::Value((i - 1).to_string().into_bytes())
        };
        assert_eq!(*outcome, want, "operation {i}");
    }
}
