//! `host`: parses the command line and dispatches; the work is in the library.

use std::process::ExitCode;

use clap::Parser;
use sandsock::cli::{Cli, Command};
use sandsock::{examples, load, runtime, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match &cli.command {
        None => serve::serve(&cli.serve).map(|()| ExitCode::SUCCESS),
        Some(Command::Check { path }) => check(path),
        Some(Command::Examples { out }) => {
            examples::examples_command(out.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Load(args)) => load_command(args),
    };
    result.unwrap_or_else(|err| {
        // One line, whatever the error chain holds.
        eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
        ExitCode::FAILURE
    })
}

fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let source = examples::read_guest_file(path)?;
    println!("{}", runtime::check(&source)?);
    Ok(ExitCode::SUCCESS)
}

fn load_command(args: &load::LoadArgs) -> anyhow::Result<ExitCode> {
    let report = load::run(args)?;
    println!("{report}");
    let complete = report.errors == 0 && report.requests == args.requests;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Logs go to stderr; `RUST_LOG` picks the level (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
