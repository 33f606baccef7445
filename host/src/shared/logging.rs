//! The host's log: where it goes, what `RUST_LOG` lets through, and the format
//! (`--log-format`).

use std::io::IsTerminal;

/// The log target of the lines that say where the host listens, in JSON mode: the
/// log filter always lets it through, as text mode always prints them.
pub const ANNOUNCE_TARGET: &str = "sandsock::announce";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: a line of text per record.
    Text,
    /// For machines: a JSON object per line, fields at the top level (`timestamp`,
    /// `level`, `target`, `message`, and the record's own: `guest`, `generation`,
    /// `conn`, `cause`, `took_ms`, ...).
    Json,
}

/// Logs go to stderr; `RUST_LOG` picks what is logged (see [`filter`]). Text is
/// coloured only for a terminal, and never with `NO_COLOR` set (no-color.org).
pub fn init(format: LogFormat) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}

/// The host's own log targets: the library, this binary, the guests' output, and
/// the load client.
const OWN_TARGETS: [&str; 4] = ["sandsock", "host", "guest", "sandsock_load"];

/// The log filter for `RUST_LOG` (default `info`), in `tracing`'s directive syntax,
/// except that a bare level (`debug`) is the level of the host's own targets, its
/// dependencies staying at `warn` unless a directive names them
/// (`RUST_LOG=debug,cranelift_codegen=debug`): the compiler alone would write
/// thousands of lines per guest. The lines saying where the host listens always
/// pass.
pub fn filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing::level_filters::LevelFilter;
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    // Dependencies: `warn`, or less where the bare level asks for less (`error`, `off`).
    let mut dependencies = LevelFilter::WARN;
    // What a bare level says goes first, so that a directive naming a target
    // (`guest=off`) wins wherever it is written, as in a plain filter.
    let mut own = Vec::new();
    let mut named = Vec::new();
    for directive in rust_log.unwrap_or("info").split(',').map(str::trim) {
        if let Ok(level) = directive.parse::<LevelFilter>() {
            dependencies = dependencies.min(level);
            own = OWN_TARGETS.iter().map(|t| format!("{t}={level}")).collect();
        } else if !directive.is_empty() {
            named.push(directive.to_string());
        }
    }
    let mut directives = vec![dependencies.to_string()];
    directives.extend(own);
    directives.extend(named);
    directives.push(format!("{ANNOUNCE_TARGET}=info"));
    tracing_subscriber::EnvFilter::builder().parse_lossy(directives.join(","))
}

#[cfg(test)]
mod tests {
    use super::filter as log_filter;

    #[test]
    fn a_bare_level_is_the_hosts_own_and_dependencies_stay_at_warn() {
        let filter = log_filter(Some("debug")).to_string();
        for part in ["warn", "sandsock=debug", "host=debug", "guest=debug"] {
            assert!(filter.split(',').any(|d| d == part), "{part} in {filter}");
        }
        let named = log_filter(Some("debug,cranelift_codegen=trace")).to_string();
        assert!(named.contains("cranelift_codegen=trace"), "{named}");
        let off = log_filter(Some("off")).to_string();
        assert!(off.split(',').any(|d| d == "off"), "{off}");
        assert!(off.contains("sandsock::announce=info"), "{off}");
        assert!(log_filter(None).to_string().contains("sandsock=info"));
        // A named target wins, before or after the bare level.
        let named = log_filter(Some("guest=off,info")).to_string();
        assert!(named.split(',').any(|d| d == "guest=off"), "{named}");
        assert!(!named.split(',').any(|d| d == "guest=info"), "{named}");
    }
}
