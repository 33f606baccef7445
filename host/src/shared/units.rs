//! The human-written durations and sizes of the command line, both ways: parsed from
//! `250ms` or `64MiB`, and shown the same way in `--help`'s defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written `250ms`, `10s`, `2m` or as a bare number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A size in bytes written `4096`, `64KiB`, `64MiB`, `1GiB` (or `K`, `M`, `G`, `KB`,
/// `MB`, `GB`: all binary multiples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub usize);

impl FromStr for Dur {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Dur)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(Size)
    }
}

/// The largest whole unit: `100ms`, `10s`, `2m`.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0ms"),
            _ if ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1_000) => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

/// The largest whole binary unit: `64MiB`, `1KiB`, `4095`.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if bytes != 0 && bytes.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", bytes >> shift);
            }
        }
        write!(f, "{bytes}")
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 100ms, 10s or 2m)"))?;
    let scale_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    value
        .checked_mul(scale_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Parses `4096`, `64KiB`, `64MiB`, `1GiB` (and the `K`, `M`, `G`, `KB`, `MB`, `GB`
/// spellings, all binary multiples).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let (number, unit) = split_number(text);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 4096, 64KiB or 64MiB)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use KiB, MiB or GiB)"
            ));
        }
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..digits], text[digits..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("many").is_err());
        assert!(parse_size("3PB").is_err());
    }

    #[test]
    fn shown_as_written_and_parsed_back() {
        for text in ["100ms", "10s", "2m", "1500ms", "0ms"] {
            assert_eq!(text.parse::<Dur>().unwrap().to_string(), text);
        }
        for text in ["64MiB", "1MiB", "1GiB", "4KiB", "4095", "0"] {
            assert_eq!(text.parse::<Size>().unwrap().to_string(), text);
        }
        assert_eq!(Dur(Duration::from_secs(90)).to_string(), "90s");
    }
}
