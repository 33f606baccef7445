//! The leaves every part of the host uses, importing nothing of it: the contract's
//! bindings, the limits and units of the command line, what workers count for
//! `/metrics`, the log's set-up, and log lines that must not repeat per connection.

pub mod limits;
pub mod logging;
pub mod metrics;
pub mod rate_limit;
pub mod units;
pub mod wit;
