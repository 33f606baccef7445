//! [`Namespace`]: whose keys and topics these are; and [`StoreLimits`], what one
//! namespace may hold.

use std::fmt;

use super::StoreError;

/// A guest's namespace (`--store-namespace`, by default the guest's name with a
/// local store): two guests see each other's keys and topics only if they share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(std::sync::Arc<str>);

impl Namespace {
    /// `name` if it is 1 to 64 printable ASCII characters other than space, `{` and
    /// `}` (a remote store's names are `sandsock:{NAMESPACE}:...`, the braces its
    /// cluster hash tag). Characters Redis patterns give a meaning to (`*`, `?`, `[`)
    /// are allowed: no command the host sends takes a pattern.
    pub fn new(name: &str) -> Result<Self, String> {
        if !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            Ok(Self(name.into()))
        } else {
            Err(format!(
                "`{name}` is not a store namespace: use 1 to 64 printable ASCII \
                 characters other than space, `{{` and `}}`"
            ))
        }
    }

    /// The namespace a guest gets when none is given: its name, with each character
    /// a plain name cannot hold made `-`, what starts it other than a letter or a
    /// digit dropped, cut to 64 bytes, or `guest` if nothing is left. Never an error:
    /// a guest whose file name is not a plain name still starts.
    pub fn for_guest(name: &str) -> Self {
        let plain: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = plain
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        name.truncate(64);
        if name.is_empty() {
            name.push_str("guest");
        }
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is 1 to `max` ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or a digit: a bucket's or a topic's name, and the namespace a
/// guest's name gives.
pub fn plain(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What one namespace may hold, checked on every write: each is answered with an
/// error value, never a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// The longest key, in bytes.
    pub max_key: usize,
    /// The largest value, in bytes.
    pub max_value: usize,
    /// The most bytes (keys and values) one namespace holds.
    pub max_namespace_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl StoreLimits {
    /// `--store-max-key` 1 KiB, `--store-max-value` 1 MiB, `--store-max-bytes` 64 MiB.
    pub const DEFAULT: StoreLimits = StoreLimits {
        max_key: 1024,
        max_value: 1 << 20,
        max_namespace_bytes: 64 << 20,
    };

    /// A bucket's or a topic's name must be plain: 1 to 64 letters, digits, `-`, `_`
    /// and `.`, starting with a letter or a digit.
    pub fn check_name(&self, name: &str) -> Result<(), StoreError> {
        if plain(name, 64) {
            Ok(())
        } else {
            Err(StoreError::BadName)
        }
    }

    /// A key must fit `max_key`.
    pub fn check_key(&self, key: &str) -> Result<(), StoreError> {
        if key.len() > self.max_key {
            Err(StoreError::KeyTooLarge)
        } else {
            Ok(())
        }
    }

    /// A value must fit `max_value`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.max_value {
            Err(StoreError::ValueTooLarge)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_printable_ascii_without_braces() {
        for good in [
            "kv",
            "my-guest_2",
            "9lives",
            "v1.2",
            "a*",
            "a?",
            "[x]",
            "a:b",
        ] {
            assert!(Namespace::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "{a}", "a}", "ä", "tab\t", &"x".repeat(65)] {
            let said = Namespace::new(bad).unwrap_err();
            assert!(said.contains("not a store namespace"), "{said}");
        }
    }

    #[test]
    fn a_guest_name_always_makes_a_namespace() {
        let of = |name: &str| Namespace::for_guest(name).as_str().to_string();
        assert_eq!(of("kv"), "kv");
        assert_eq!(of("my handler+v2"), "my-handler-v2");
        assert_eq!(of("_private"), "private");
        assert_eq!(of("ünïcode"), "n-code");
        assert_eq!(of("***"), "guest");
        assert_eq!(of(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn limits_answer_errors() {
        let limits = StoreLimits {
            max_key: 3,
            max_value: 4,
            max_namespace_bytes: 100,
        };
        assert_eq!(limits.check_key("abc"), Ok(()));
        assert_eq!(limits.check_key("abcd"), Err(StoreError::KeyTooLarge));
        assert_eq!(limits.check_value(b"1234"), Ok(()));
        assert_eq!(limits.check_value(b"12345"), Err(StoreError::ValueTooLarge));
        assert_eq!(limits.check_name("users"), Ok(()));
        assert_eq!(limits.check_name("a*"), Err(StoreError::BadName));
    }
}
