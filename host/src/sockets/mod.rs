//! The sockets side: the event loop and everything it owns, with no knowledge of wasm.
//!
//! From the wire up:
//! - [`write_buffer`]: one connection's bounded buffer of unsent bytes.
//! - [`connection`]: one socket's state: what it is known to be ready for (mio's
//!   edges, remembered until a syscall says `WouldBlock`) and what the guest wants.
//! - [`conn_table`]: connections by slot (the mio token), with never-reused handles.
//! - [`owners`]: which guest instance holds which connections and timers.
//! - [`timers`]: the guests' one-shot timers.
//! - [`allow`]: where a guest may connect out (`--allow-connect`).
//! - [`capacity`]: places for connections under `--max-connections`, across workers.
//! - [`listener`]: listening sockets, with a backlog, shared by workers.
//! - [`accept`]: new connections from them (epoll's `accept4`, or the ring's
//!   multishot accepts), admitted under the connection limit.
//! - [`tls`]: TLS termination: certificates, and each connection's session.
//! - [`net`]: the guest's `io` calls, and the bookkeeping that turns edges into
//!   level-triggered batches.
//! - [`events`]: what the loop reports to a guest, in the host's own words.
//! - [`batch`]: one turn's events, grouped by owner as they are found.
//! - [`handler`]: what the loop calls with a batch (a wasm guest, or the native
//!   baseline).
//! - [`event_loop`]: poll, accept, one handler call per turn, shutdown.
//! - [`parcel`]: one worker's connections as an upgrade carries them to the new
//!   process.
//! - [`ring`]: `--io uring`: one io_uring per loop, through which the listeners
//!   accept and the plain connections receive, send and close (epoll stays for the
//!   rest).
//!
//! The discipline, in one picture: mio reports *edges*; [`net`] keeps a flag per
//! edge until a read or write answers `WouldBlock` (or a read comes back short),
//! and reports a connection in every batch while its flag is set and the guest
//! wants it. So a guest that reads 7 bytes of 100 (contract 0.x) hears `readable`
//! again next turn, and one whose host read a whole chunk for it (1.0) gets the next
//! chunk, without a syscall to ask.

pub mod accept;
pub mod allow;
pub mod batch;
pub mod capacity;
pub mod conn_table;
pub mod connection;
pub mod event_loop;
pub mod events;
pub mod handler;
pub mod listener;
pub mod net;
pub mod owners;
pub mod parcel;
pub mod ring;
pub mod tape;
pub mod timers;
pub mod tls;
pub mod write_buffer;

pub use allow::{AllowList, AllowRule};
pub use batch::Batch;
pub use capacity::Capacity;
pub use connection::Phase;
pub use event_loop::{EventLoop, Remote};
pub use events::{Event, HangupInfo, Read, ReadResult};
pub use handler::EventHandler;
pub use net::{Lingering, Net};
pub use owners::Owner;
