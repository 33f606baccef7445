//! `host`: parses the command line and dispatches; the work is in the library.

use std::path::Path;
use std::process::ExitCode;

use std::io::IsTerminal;

use clap::Parser;
use sandsock::cli::{Cli, Command, LogFormat};
use sandsock::commands::health::health;
use sandsock::commands::new::new_project;
use sandsock::commands::serve::serve;
use sandsock::runtime::builtin::examples_command;
use sandsock::runtime::component::GuestSource;
use sandsock::runtime::engine::check;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match &cli.command {
        None => serve(&cli.serve).map(|()| ExitCode::SUCCESS),
        Some(Command::Check { path }) => GuestSource::read(path)
            .and_then(|source| check(&source))
            .map(|verdict| {
                println!("{verdict}");
                ExitCode::SUCCESS
            }),
        Some(Command::Examples { out }) => {
            examples_command(out.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::New { name, lang }) => new_project(Path::new("."), name, *lang).map(|dir| {
            println!(
                "made {}: build it with `{}/build.sh`",
                dir.display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }),
        Some(Command::Health { admin, ready }) => health(*admin, *ready).map(|answer| {
            println!("{answer}");
            ExitCode::SUCCESS
        }),
        Some(Command::Load(args)) => sandsock_load::run(args).map(|report| {
            println!("{report}");
            if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
    };
    result.unwrap_or_else(|err| {
        // One line, whatever the error chain holds.
        eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
        ExitCode::FAILURE
    })
}

/// Logs go to stderr; `RUST_LOG` picks the level (default: info). Text is coloured
/// only for a terminal, and never with `NO_COLOR` set (no-color.org).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
