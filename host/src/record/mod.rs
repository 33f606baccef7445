//! `--record` and `host replay`'s shared ground: the tape format ([`tape`]; its
//! records in `items.rs`, as bytes in `codec.rs`), the
//! thread that writes tapes into the record directory ([`writer`]), and how two
//! outputs of one connection compare ([`diff`], the canary's too). Knows
//! nothing of wasmtime or sockets: the recorder that fills tapes is `swap`'s
//! (it sees every instance's calls), the replay that reads them is `runtime`'s.

mod codec;
pub mod diff;
mod items;
pub mod tape;
pub mod writer;
