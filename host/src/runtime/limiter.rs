//! [`Limiter`]: holds one store to its memory cap, and to bounds on what else a
//! component could make the host allocate.

use wasmtime::ResourceLimiter;

/// Instances a component may create: ours are a handful; a bound stops a component
/// built to exhaust the host with nested instances.
const MAX_INSTANCES: usize = 64;
/// Tables per store: a guest cannot make the host allocate without bound through
/// many tables...
const MAX_TABLES: usize = 64;
/// ...or through `table.grow`.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The store's limiter. It remembers when it refused a memory growth during the
/// current call, so that the trap that usually follows (a Rust guest aborts when an
/// allocation fails) can be named "out of memory". Only during that call: a guest
/// that handled a refusal (a `try_reserve` that failed) and traps later for another
/// reason must not be told it ran out of memory.
#[derive(Debug)]
pub struct Limiter {
    max_memory: usize,
    memory_refused: bool,
    /// The size of the last growth refused, in bytes: what a guest that cannot even
    /// start needed.
    last_refused: Option<usize>,
    /// The largest linear memory the store has grown to, in bytes (memory never
    /// shrinks): what `--recycle-at-memory` compares.
    memory: usize,
}

impl Limiter {
    /// A limiter capping each linear memory at `max_memory` bytes.
    pub fn new(max_memory: usize) -> Self {
        Self {
            max_memory,
            memory_refused: false,
            last_refused: None,
            memory: 0,
        }
    }

    /// The largest linear memory of the store, in bytes.
    pub fn memory(&self) -> usize {
        self.memory
    }

    /// Whether a memory growth was refused since the current call began.
    pub fn memory_refused(&self) -> bool {
        self.memory_refused
    }

    /// The size of the last memory growth refused, in bytes, if one was.
    pub fn last_refused(&self) -> Option<usize> {
        self.last_refused
    }

    /// The cap on each linear memory, in bytes.
    pub fn max_memory(&self) -> usize {
        self.max_memory
    }

    /// A call into the guest begins: a refusal before it is no longer news.
    pub fn start_call(&mut self) {
        self.memory_refused = false;
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        self.memory_refused |= !allowed;
        if !allowed {
            self.last_refused = Some(desired);
        }
        if allowed {
            self.memory = self.memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_cap_and_remembers_it_for_the_call() {
        let mut limiter = Limiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.memory_refused());
        assert!(
            !limiter
                .memory_growing(1 << 20, (1 << 20) + 1, None)
                .unwrap()
        );
        assert!(limiter.memory_refused());
        limiter.start_call();
        assert!(!limiter.memory_refused(), "a refusal belongs to its call");
    }
}
