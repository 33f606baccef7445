//! Level-triggered readiness as the guest sees it, on top of mio's edges.

mod common;

use std::io::Write;

use common::{Host, pattern, read_exact_n, test_guest};

/// The `partial_read` guest reads at most 7 bytes per `readable` event and never
/// loops until `would-block`. No new bytes arrive after the first write, so no new
/// edge comes from the kernel: every byte past the first 7 comes back only because
/// the host reports the connection `readable` again.
#[test]
fn a_guest_that_reads_only_part_is_told_readable_again() {
    let guest = test_guest("partial_read");
    let host = Host::start(&["--guest", guest.to_str().unwrap()]);
    let mut client = host.connect();
    let payload = pattern(100, 1);
    client.write_all(&payload).unwrap();
    assert_eq!(read_exact_n(&mut client, payload.len()), payload);

    // And again on the same connection, in a second burst.
    let payload = pattern(1000, 2);
    client.write_all(&payload).unwrap();
    assert_eq!(read_exact_n(&mut client, payload.len()), payload);
}
