//! What the serve flags turn into for the rest of the host: limits, the sandbox, the
//! store's and the recorder's settings, the swap policy, the addresses to bind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{DEFAULT_LISTEN, ServeArgs, Toggle};
use crate::record::writer::{MAX_QUEUED, RecordConfig};
use crate::runtime::sandbox::Sandbox;
use crate::shared::limits::Limits;
use crate::sockets::allow::AllowList;
use crate::store::redis_store::{PASSWORD_VARIABLE, Password};
use crate::store::{Namespace, RedisOptions, StoreConfig, StoreKind, StoreLimits};
use crate::swap::{CanaryConfig, Recycle, SwapMode, SwapPolicy};

impl ServeArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            event_timeout: self.event_timeout.0,
            max_memory: self.max_memory.0,
            max_connections: self.max_connections,
            max_buffer: self.max_buffer.0.max(1),
            max_timers: self.max_timers,
            fuel: self.fuel,
        }
    }

    /// The sandbox these flags describe, within `limits`.
    pub fn sandbox(&self, limits: Limits) -> Sandbox {
        Sandbox {
            limits,
            isolation: self.isolation,
            env: self.env.clone(),
            record: self.record.is_some(),
        }
    }

    /// The store's settings, the namespace defaulting to `guest_name` (made plain)
    /// with a local store; an error is one line naming the flag or file at fault.
    pub fn store_config(&self, guest_name: &str) -> Result<StoreConfig, String> {
        self.store.check()?;
        let remote = self.store.is_remote();
        let namespace = match &self.store_namespace {
            Some(name) => Namespace::new(name)?,
            None if remote => {
                return Err(format!(
                    "--store {} is shared by every host that uses it: give \
                     --store-namespace NAME, so that guests that happen to share a name \
                     do not share data",
                    self.store.describe()
                ));
            }
            None => Namespace::for_guest(guest_name),
        };
        let password = self.store_password()?;
        if !remote && (password.is_some() || self.store_ca_file.is_some()) {
            return Err(
                "--store-password-file, SANDSOCK_STORE_PASSWORD and --store-ca-file are \
                 for a redis:// store"
                    .into(),
            );
        }
        if let StoreKind::Redis(url) = &self.store
            && self.store_ca_file.is_some()
            && !url.starts_with("rediss://")
        {
            return Err(format!(
                "--store-ca-file is for a rediss:// (TLS) store, not {url}"
            ));
        }
        Ok(StoreConfig {
            kind: self.store.clone(),
            namespace,
            limits: StoreLimits {
                max_key: self.store_max_key.0,
                max_value: self.store_max_value.0,
                max_namespace_bytes: self.store_max_bytes.0 as u64,
            },
            redis: RedisOptions {
                password,
                timeout: self.store_timeout.0.max(Duration::from_millis(1)),
                ca_file: self.store_ca_file.clone(),
            },
        })
    }

    /// The remote store's password, from `--store-password-file` or the environment.
    fn store_password(&self) -> Result<Option<Password>, String> {
        let from_env = std::env::var(PASSWORD_VARIABLE).ok();
        let Some(path) = &self.store_password_file else {
            return Ok(from_env.as_deref().and_then(Password::new));
        };
        if from_env.is_some() {
            return Err(format!(
                "both --store-password-file and {PASSWORD_VARIABLE} are given: keep one"
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --store-password-file {}: {e}", path.display()))?;
        let first = text.lines().next().unwrap_or_default();
        Password::new(first)
            .map(Some)
            .ok_or_else(|| format!("--store-password-file {} is empty", path.display()))
    }

    /// Where compiled guests are kept, if anywhere.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(crate::runtime::cache::default_dir)
        }
    }

    /// How a new generation takes over once it does (with --swap canary: once
    /// promoted).
    pub fn swap_mode(&self) -> SwapMode {
        match self.swap {
            SwapPolicy::Drain => SwapMode::Drain,
            SwapPolicy::Handoff => SwapMode::Handoff,
            SwapPolicy::Canary => self.canary_then,
        }
    }

    /// The canary's settings, with --swap canary.
    pub fn canary(&self) -> Option<CanaryConfig> {
        (self.swap == SwapPolicy::Canary).then(|| CanaryConfig {
            sample_percent: self.canary_sample,
            connections: self.canary_connections,
            then: self.canary_then,
            timeout: self.canary_timeout.0,
            noise: self.canary_noise == Toggle::On,
        })
    }

    /// What `--record` asks for, if it does.
    pub fn record(&self) -> Option<RecordConfig> {
        Some(RecordConfig {
            dir: self.record.clone()?,
            sample_percent: self.record_sample,
            max_bytes: self.record_max_bytes.0 as u64,
            max_queued: self.record_queue.map_or(MAX_QUEUED, |size| size.0),
            slow_writer: self.record_slow_writer.map_or(Duration::ZERO, |d| d.0),
        })
    }

    /// When the shared instance is recycled.
    pub fn recycle(&self) -> Recycle {
        Recycle {
            at_memory: self
                .recycle_at_memory
                .map_or(self.max_memory.0 / 4 * 3, |size| size.0),
            after_calls: self.recycle_after,
        }
    }

    /// An address given twice (to --listen, --listen-tls and --admin together) is an
    /// error naming it, rather than the "address in use" the second bind would meet.
    /// Port 0 may repeat: each bind picks a port of its own.
    pub fn check_addresses(&self) -> Result<(), String> {
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        let plain = if self.listen.is_empty() {
            "the default --listen"
        } else {
            "--listen"
        };
        let given = (self.plain_addrs().into_iter().map(|a| (a, plain)))
            .chain(self.listen_tls.iter().map(|&a| (a, "--listen-tls")))
            .chain(self.admin.map(|a| (a, "--admin")));
        for (addr, flag) in given {
            if addr.port() == 0 {
                continue;
            }
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                return Err(if *first == flag {
                    format!("{flag} {addr} is given twice")
                } else {
                    format!("{addr} is given to both {first} and {flag}")
                });
            }
            seen.push((addr, flag));
        }
        Ok(())
    }

    /// The plaintext addresses to listen on: those given, or the default when no
    /// address at all (plain or TLS) is.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() && self.listen_tls.is_empty() {
            vec![DEFAULT_LISTEN.parse().expect("a valid default address")]
        } else {
            self.listen.clone()
        }
    }

    /// The outbound addresses allowed.
    pub fn allow_list(&self) -> AllowList {
        AllowList::new(self.allow_connect.clone())
    }
}
