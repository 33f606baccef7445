//! `host`: parses the command line and dispatches; the work is in the library.

use std::path::Path;
use std::process::ExitCode;

use sandsock::cli::{Cli, Command};
use sandsock::commands::health::health;
use sandsock::commands::new::new_project;
use sandsock::commands::replay::replay_command;
use sandsock::commands::serve::serve;
use sandsock::runtime::builtin::examples_command;
use sandsock::runtime::component::GuestSource;
use sandsock::runtime::engine::check;
use sandsock::shared::logging;

fn main() -> ExitCode {
    let cli = match Cli::parse_or_explain() {
        Ok(cli) => cli,
        Err(line) => {
            eprintln!("error: {line}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(cli.log_format);
    let result = match &cli.command {
        None => serve(&cli.serve, cli.log_format).map(|()| ExitCode::SUCCESS),
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
        Some(Command::Replay(args)) => replay_command(args).map(|clean| match clean {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
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
