//! [`Progress`]: a bar on a terminal, a plain line per second otherwise, or nothing.

use std::fmt;
use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::LoadArgs;
use crate::report::Stats;

/// How often the progress bar is updated.
const BAR_REFRESH: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Progress output: a bar on a terminal, a plain line per second otherwise, or nothing.
pub(crate) enum Progress {
    Quiet,
    Bar {
        bar: ProgressBar,
        next: Instant,
        errors: u64,
    },
    Lines {
        next: Instant,
    },
}

impl Progress {
    pub(crate) fn new(args: &LoadArgs) -> Self {
        let now = Instant::now();
        if args.quiet {
            Self::Quiet
        } else if io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{elapsed_precise} {wide_bar} {pos}/{len} requests, {rate}, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                let _ = write!(out, "{:.0}/s", state.per_sec());
            });
            let bar = ProgressBar::new(args.requests)
                .with_style(style)
                .with_message("0 errors");
            Self::Bar {
                bar,
                next: now,
                errors: 0,
            }
        } else {
            Self::Lines {
                next: now + LINE_INTERVAL,
            }
        }
    }

    pub(crate) fn update(&mut self, stats: &Stats, total: u64, now: Instant) {
        let done = stats.ok + stats.errors;
        match self {
            Self::Quiet => {}
            Self::Bar { bar, next, errors } if now >= *next => {
                *next = now + BAR_REFRESH;
                bar.set_position(done);
                if *errors != stats.errors {
                    *errors = stats.errors;
                    bar.set_message(format!("{} errors", stats.errors));
                }
            }
            Self::Bar { .. } => {}
            Self::Lines { next } if now >= *next => {
                *next = now + LINE_INTERVAL;
                eprintln!("load: {done}/{total} requests, {} errors", stats.errors);
            }
            Self::Lines { .. } => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Self::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}
