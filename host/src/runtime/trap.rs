//! Trap reports: a trap's cause in words, and the guest's backtrace, short enough for
//! a log record.

use wasmtime::{Trap, WasmBacktrace};

use crate::shared::metrics::TrapCause;

/// Frames of a trap's backtrace shown in the log; a stack overflow has thousands.
const BACKTRACE_FRAMES: usize = 12;

/// A trap's cause in words; wasmtime's own text for a trap is only "error while
/// executing at wasm backtrace". `memory_refused` says the store denied a growth
/// before it: a guest that aborts on a failed allocation is out of memory.
pub fn describe(err: &anyhow::Error, memory_refused: bool) -> String {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "timeout: the call ran past --event-timeout".into(),
        Some(Trap::OutOfFuel) => "out of fuel: the call used up its --fuel".into(),
        Some(Trap::StackOverflow) => "stack overflow".into(),
        Some(Trap::UnreachableCodeReached) if memory_refused => {
            "out of memory: a growth past --max-memory was refused and the guest aborted".into()
        }
        Some(Trap::UnreachableCodeReached) => {
            "unreachable executed (a panic or an abort in the guest)".into()
        }
        Some(Trap::MemoryOutOfBounds) => "out-of-bounds memory access".into(),
        Some(trap) => trap.to_string(),
        None if memory_refused => format!("out of memory: {err:#}"),
        None => format!("{err:#}"),
    }
}

/// A trap's cause, as the metrics count it.
pub fn cause(err: &anyhow::Error, memory_refused: bool) -> TrapCause {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapCause::Timeout,
        Some(Trap::OutOfFuel) => TrapCause::OutOfFuel,
        Some(Trap::StackOverflow) => TrapCause::StackOverflow,
        Some(Trap::UnreachableCodeReached) if memory_refused => TrapCause::OutOfMemory,
        Some(Trap::UnreachableCodeReached) => TrapCause::Unreachable,
        _ if memory_refused => TrapCause::OutOfMemory,
        _ => TrapCause::Other,
    }
}

/// The guest's backtrace of a trap, innermost frame first, at most
/// [`BACKTRACE_FRAMES`] of them, names demangled.
pub fn backtrace(err: &anyhow::Error) -> String {
    let Some(trace) = err.downcast_ref::<WasmBacktrace>() else {
        return format!("{err:?}");
    };
    let frames = trace.frames();
    let mut text = String::from("guest backtrace:");
    for (i, frame) in frames.iter().take(BACKTRACE_FRAMES).enumerate() {
        match frame.func_name() {
            Some(name) => {
                text.push_str(&format!("\n  {i:>2}: {:#}", rustc_demangle::demangle(name)))
            }
            None => text.push_str(&format!("\n  {i:>2}: <unnamed>")),
        }
    }
    if frames.len() > BACKTRACE_FRAMES {
        text.push_str(&format!(
            "\n  ... {} more frames",
            frames.len() - BACKTRACE_FRAMES
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named() {
        let trap = |t: Trap| anyhow::Error::from(t);
        assert!(describe(&trap(Trap::Interrupt), false).starts_with("timeout"));
        assert!(describe(&trap(Trap::OutOfFuel), false).starts_with("out of fuel"));
        assert!(describe(&trap(Trap::UnreachableCodeReached), true).starts_with("out of memory"));
        assert!(describe(&trap(Trap::UnreachableCodeReached), false).starts_with("unreachable"));
        let other = anyhow::anyhow!("no such export");
        assert_eq!(describe(&other, false), "no such export");
    }
}
