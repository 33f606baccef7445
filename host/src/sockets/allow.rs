//! `--allow-connect`: the only outbound addresses a guest may connect to.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// One `--allow-connect HOST:PORT` (or `HOST:*`), its host resolved at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// What the user wrote, for logs.
    pub text: String,
    ips: Vec<IpAddr>,
    /// `None` for `*`.
    port: Option<u16>,
}

impl AllowRule {
    /// Parses `HOST:PORT` or `HOST:*`; a name is looked up now, once, so that guests
    /// never cause a lookup.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` is not HOST:PORT or HOST:*"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse()
                    .map_err(|_| format!("`{text}`: `{p}` is not a port or *"))?,
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| format!("`{text}`: cannot resolve `{host}`: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        Ok(Self {
            text: text.to_string(),
            ips,
            port,
        })
    }

    fn matches(&self, addr: SocketAddr) -> bool {
        self.ips.contains(&addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

/// Every rule; empty means no outbound connection at all.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

impl AllowList {
    /// The list of these rules.
    pub fn new(rules: Vec<AllowRule>) -> Self {
        Self { rules }
    }

    /// Whether a guest may connect to `addr`.
    pub fn permits(&self, addr: SocketAddr) -> bool {
        self.rules.iter().any(|rule| rule.matches(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_wildcards() {
        let list = AllowList::new(vec![
            AllowRule::parse("127.0.0.1:8080").unwrap(),
            AllowRule::parse("10.0.0.1:*").unwrap(),
        ]);
        assert!(list.permits("127.0.0.1:8080".parse().unwrap()));
        assert!(!list.permits("127.0.0.1:8081".parse().unwrap()));
        assert!(list.permits("10.0.0.1:1".parse().unwrap()));
        assert!(!list.permits("10.0.0.2:1".parse().unwrap()));
        assert!(!AllowList::default().permits("127.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(AllowRule::parse("nohost").is_err());
        assert!(AllowRule::parse("127.0.0.1:http").is_err());
        assert!(AllowRule::parse("[::1]:99").is_ok());
    }
}
