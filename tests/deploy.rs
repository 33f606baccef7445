//! The container image and the Kubernetes manifests, as far as they can be checked
//! without a container engine: the flags the image's `CMD` and the Deployment's
//! `args` give the host are run (on loopback, with their paths moved into a scratch
//! directory), so that they cannot drift from the CLI; the cache under a mount
//! anyone can write (an `emptyDir`) is used, not refused; the grace period covers
//! the shutdown. (`hadolint` and `kubernetes-validate` check the files in CI; the
//! ConfigMap's update sequence is replayed in tests/hot_swap.rs.)

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::redis::RedisServer;
use common::upgrade::nth_line;
use common::{Host, example, fresh_body, install, run_host, scratch};

/// Where the image and the Deployment mount the writable cache volume.
const CACHE_MOUNT: &str = "/var/cache/sandsock";
/// Where the Deployment mounts the store's password (the `sandsock-redis` Secret).
const PASSWORD_MOUNT: &str = "/etc/sandsock-redis";
/// The store's address in the cluster: redis.yaml's Service.
const STORE_URL: &str = "redis://sandsock-redis:6379";

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON array that follows `key` in `text` (a Dockerfile's exec form, or a YAML
/// flow sequence written as JSON), across lines and `\` continuations.
fn json_array_after(text: &str, key: &str) -> Vec<String> {
    let start = text.find(key).unwrap_or_else(|| panic!("no `{key}`")) + key.len();
    let rest = &text[start..];
    let open = rest.find('[').expect("an array");
    let close = rest.find(']').expect("the array's end");
    let json = rest[open..=close].replace("\\\n", " ");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("`{key}` is not a JSON array: {e}"))
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag);
    at.and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// `args` as this machine can run them: the guest, the cache and the store's password
/// under `dir`, the cluster's store at `store`, the admin listener on a free loopback
/// port, no `--listen` (the test's own is added).
fn on_loopback(args: &[String], dir: &Path, store: Option<&RedisServer>) -> Vec<String> {
    let guest = flag(args, "--guest").to_string();
    let cache = flag(args, "--cache-dir").to_string();
    let listen = flag(args, "--listen").to_string();
    let admin = flag(args, "--admin").to_string();
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if arg == "--listen" {
            skip = true;
            continue;
        }
        out.push(if *arg == guest {
            dir.join("etc/guest.wasm").display().to_string()
        } else if *arg == cache {
            let within = cache
                .strip_prefix(CACHE_MOUNT)
                .unwrap_or_else(|| panic!("--cache-dir {cache} is not on the {CACHE_MOUNT} mount"));
            format!("{}{within}", dir.join("cache-mount").display())
        } else if arg.starts_with("redis://") {
            assert_eq!(arg, STORE_URL, "the store is redis.yaml's Service");
            store.expect("a server for the store").url()
        } else if let Some(within) = arg.strip_prefix(PASSWORD_MOUNT) {
            format!("{}{within}", dir.join("password-mount").display())
        } else if *arg == admin {
            "127.0.0.1:0".to_string()
        } else {
            arg.clone()
        });
    }
    assert!(listen.ends_with(":8080"), "{listen}");
    out
}

/// A scratch directory laid out like the container's mounts: the guest file, and a
/// cache mount that anyone can write, as an `emptyDir` is.
fn mounts(name: &str) -> PathBuf {
    let dir = scratch(name);
    fs::create_dir(dir.join("etc")).unwrap();
    install(&dir.join("etc/guest.wasm"), &example("http"));
    for mount in ["cache-mount", "password-mount"] {
        let mount = dir.join(mount);
        fs::create_dir(&mount).unwrap();
        fs::set_permissions(&mount, fs::Permissions::from_mode(0o777)).unwrap();
    }
    dir
}

/// Starts the host with `args` (made loopback) twice, as a pod restarted on the same
/// `emptyDir`: both serve, the first compiles into a private subdirectory, the second
/// loads from it, and `host health` answers for the admin listener.
fn serves_twice_with_its_cache(name: &str, args: &[String], store: Option<&RedisServer>) {
    let dir = mounts(name);
    if store.is_some() {
        // With a trailing newline, as `openssl rand -hex 24 > FILE` writes it.
        fs::write(
            dir.join("password-mount/password"),
            format!("{STORE_PASSWORD}\n"),
        )
        .unwrap();
    }
    let loopback = on_loopback(args, &dir, store);
    let args: Vec<&str> = loopback.iter().map(String::as_str).collect();
    for start in ["first", "second"] {
        let host = Host::start(&args);
        assert_eq!(fresh_body(&host), "hello\n", "{start} start");
        let health = run_host(&["health", &host.admin.unwrap().to_string(), "--ready"]);
        assert!(health.status.success(), "{health:?}");
        let log = host.log();
        assert!(!log.contains("refusing the cache"), "{log}");
        let wanted = match start {
            "first" => "guest compiled",
            _ => "guest loaded compiled from the cache",
        };
        assert!(log.contains(wanted), "{start} start:\n{log}");
    }
    let cache = flag(&loopback, "--cache-dir");
    let mode = fs::metadata(cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the host's own cache directory is private");
}

#[test]
fn the_image_command_serves_and_caches_under_an_emptydir_like_mount() {
    let dockerfile = deploy_file("Dockerfile");
    let cmd = json_array_after(&dockerfile, "\nCMD ");
    serves_twice_with_its_cache("image-cmd", &cmd, None);
    assert!(
        dockerfile.contains("CMD [\"/usr/local/bin/host\", \"health\", \"127.0.0.1:9901\"]"),
        "the health check asks the admin port the CMD opens"
    );
    assert_eq!(flag(&cmd, "--admin"), "0.0.0.0:9901");
    assert!(
        dockerfile.contains(&format!(" {CACHE_MOUNT}\n")),
        "the image makes the mount point"
    );
}

#[test]
fn the_deployment_args_serve_and_its_grace_period_covers_the_shutdown() {
    let deployment = deploy_file("k8s/deployment.yaml");
    let args = json_array_after(&deployment, "\n          args: ");
    // The pods share a store: redis.yaml's server, here a real one with a password,
    // which `host health --ready` shows the host reached.
    let store = RedisServer::with_password(STORE_PASSWORD);
    serves_twice_with_its_cache("deployment-args", &args, Some(&store));

    let number_after = |key: &str| -> u64 {
        let at = deployment.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        let digits: String = deployment[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let shutdown: u64 = flag(&args, "--shutdown-timeout")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let grace = number_after("terminationGracePeriodSeconds:");
    let pre_stop = number_after("sleep:\n                seconds:");
    assert!(
        grace > shutdown + pre_stop,
        "terminationGracePeriodSeconds {grace} must exceed --shutdown-timeout {shutdown}s \
         plus the preStop pause {pre_stop}s"
    );
    // The probes ask the admin port the args open.
    assert_eq!(flag(&args, "--admin"), "0.0.0.0:9901");
    assert!(deployment.contains("containerPort: 9901"));
    assert!(deployment.contains(&format!("mountPath: {CACHE_MOUNT}\n")));
    assert!(deployment.contains(&format!("mountPath: {PASSWORD_MOUNT}\n")));
}

/// What the store's Secret holds in the test.
const STORE_PASSWORD: &str = "not the cluster's";

/// The host's Deployment, the store's manifests and the kustomization name the same
/// Service, port and Secret.
#[test]
fn the_deployment_and_the_store_agree_on_its_service_and_secret() {
    let deployment = deploy_file("k8s/deployment.yaml");
    let store = deploy_file("k8s/redis.yaml");
    let kustomization = deploy_file("k8s/kustomization.yaml");
    let args = json_array_after(&deployment, "\n          args: ");
    assert_eq!(flag(&args, "--store"), STORE_URL);
    assert!(store.contains("kind: Service\nmetadata:\n  name: sandsock-redis\n"));
    assert!(store.contains("    - name: redis\n      port: 6379\n"));
    assert!(store.contains("--maxmemory-policy noeviction"));
    assert!(deployment.contains("secretName: sandsock-redis\n"));
    assert!(store.contains("--requirepass \"$(cat /etc/sandsock-redis/password)\""));
    assert_eq!(store.matches("secretName: sandsock-redis\n").count(), 1);
    assert!(kustomization.contains("secretGenerator:\n  - name: sandsock-redis\n"));
    assert!(kustomization.contains("  - redis.yaml\n"));
    // The pods' NetworkPolicy selects them and names their ports.
    let policy = deploy_file("k8s/networkpolicy.yaml");
    assert!(kustomization.contains("  - networkpolicy.yaml\n"));
    assert!(policy.contains("    matchLabels:\n      app.kubernetes.io/name: sandsock\n"));
    for port in ["http", "admin"] {
        assert!(deployment.contains(&format!("- name: {port}\n              containerPort")));
        assert!(policy.contains(&format!("- port: {port}\n")), "{port}");
    }
    // Only Prometheus may reach the admin port: every ingress rule that opens it
    // says from whom, and no rule without a `from` opens it.
    let (_, rules) = policy.split_once("\n  ingress:\n").unwrap();
    let rules: Vec<&str> = rules.split("\n    - ").collect();
    for rule in &rules {
        assert!(
            rule.contains("ports:"),
            "a rule without ports opens all: {rule}"
        );
        if !rule.contains("from:") {
            assert!(!rule.contains("admin") && !rule.contains("9901"), "{rule}");
        }
    }
    let admin: Vec<&&str> = rules
        .iter()
        .filter(|r| r.contains("- port: admin"))
        .collect();
    assert_eq!(admin.len(), 1, "{rules:?}");
    assert!(admin[0].contains("from:"), "{}", admin[0]);
    assert!(
        admin[0].contains("app.kubernetes.io/name: prometheus"),
        "{}",
        admin[0]
    );
    assert!(
        flag(&args, "--store-password-file").starts_with(PASSWORD_MOUNT),
        "the password file is on the Secret's mount"
    );
}

/// `Key=value` of a unit file, the first one.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// The systemd units as systemd would run them, on loopback: the service's
/// `ExecStart` (its paths moved into a scratch directory) with the socket units'
/// sockets passed as socket activation does, named by their `FileDescriptorName=`.
/// It serves on them, tells `NOTIFY_SOCKET` it is ready, and at an upgrade the old
/// process tells it the new one's pid (`MAINPID=`).
#[test]
fn the_systemd_units_serve_by_socket_activation_and_hand_over_the_main_pid() {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    let service = deploy_file("systemd/sandsock.service");
    let http = deploy_file("systemd/sandsock.socket");
    let admin = deploy_file("systemd/sandsock-admin.socket");
    assert_eq!(unit_value(&service, "Type"), "notify");
    assert_eq!(unit_value(&service, "NotifyAccess"), "main");
    assert_eq!(
        unit_value(&service, "Sockets"),
        "sandsock.socket sandsock-admin.socket"
    );
    for socket in [&http, &admin] {
        assert_eq!(unit_value(socket, "Service"), "sandsock.service");
    }
    assert_eq!(unit_value(&admin, "FileDescriptorName"), "admin");
    assert!(unit_value(&admin, "ListenStream").starts_with("127.0.0.1:"));
    let names = format!("{}:admin", unit_value(&http, "FileDescriptorName"));

    let dir = scratch("systemd-units");
    let exec: Vec<&str> = unit_value(&service, "ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/host");
    let moved = |path: &str| {
        let within = path.trim_start_matches('/');
        let moved = dir.join(within);
        fs::create_dir_all(moved.parent().unwrap()).unwrap();
        moved.display().to_string()
    };
    let mut args: Vec<String> = Vec::new();
    for (i, arg) in exec.iter().enumerate().skip(1) {
        let value_of = exec[i - 1];
        args.push(match value_of {
            "--guest" | "--store" | "--cache-dir" => moved(arg),
            _ => arg.to_string(),
        });
    }
    assert!(
        !args.iter().any(|a| a == "--listen" || a == "--admin"),
        "sockets come from the units"
    );
    install(Path::new(flag(&args, "--guest")), &example("http"));

    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let (web_at, admin_at) = (
        web.local_addr().unwrap(),
        admin_socket.local_addr().unwrap(),
    );
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let binary = common::upgrade::installed_binary("systemd-units-bin");
    let mut command = common::upgrade::socket_activated(
        &binary,
        &[web.as_raw_fd(), admin_socket.as_raw_fd()],
        Some(&names),
        &arg_refs,
    );
    command.env("NOTIFY_SOCKET", &notify_path);
    let mut host = Host::start_command(command, true);
    drop((web, admin_socket));
    assert_eq!(host.addr, web_at);
    assert_eq!(host.admin, Some(admin_at));
    let mut said = [0u8; 256];
    let n = notify.recv(&mut said).unwrap();
    assert_eq!(&said[..n], b"READY=1\n");
    assert_eq!(fresh_body(&host), "hello\n");

    // An upgrade: the old process names the new one the service's main process.
    host.signal(libc::SIGUSR2);
    let n = notify.recv(&mut said).unwrap();
    let message = String::from_utf8_lossy(&said[..n]).into_owned();
    let pid: u32 = message
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("{message}"))
        .parse()
        .unwrap();
    assert_ne!(pid, host.pid());
    // The units log JSON: the new process's line names its own pid.
    let serving = nth_line(&host, "upgrade: serving; took over", 0);
    let serving: serde_json::Value = serde_json::from_str(&serving).unwrap();
    assert_eq!(serving["pid"], pid, "MAINPID is the new process's own pid");
    assert!(host.wait_exit(std::time::Duration::from_secs(60)).is_some());
    assert_eq!(fresh_body(&host), "hello\n", "the new process serves");
    assert!(TcpStream::connect(admin_at).is_ok());
}
