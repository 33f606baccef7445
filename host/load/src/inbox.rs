//! [`Inbox`]: one client's read buffer, fed to the answer check as bytes arrive.

use crate::protocol::{Feed, Protocol, ResponseState};

/// A connection's read buffer: bytes read but not yet used up by the response check.
pub(crate) struct Inbox {
    buf: Box<[u8]>,
    len: usize,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// The free space to read into.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Marks `n` more bytes of the spare space as read.
    pub(crate) fn filled(&mut self, n: usize) {
        self.len += n;
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds the held bytes to the check and drops what it used up. `Ok(Some(reusable))` when
    /// the response is complete; bytes beyond it are an error, since one request at a time is
    /// outstanding and the server had nothing else to answer.
    pub(crate) fn check(
        &mut self,
        protocol: &Protocol,
        state: &mut ResponseState,
    ) -> Result<Option<bool>, String> {
        match protocol.feed(state, &self.buf[..self.len]) {
            Feed::Partial { consumed } => {
                self.buf.copy_within(consumed..self.len, 0);
                self.len -= consumed;
                Ok(None)
            }
            Feed::Complete { consumed, reusable } => {
                let extra = self.len - consumed;
                self.len = 0;
                if extra > 0 {
                    return Err(format!("{extra} unexpected bytes after the response"));
                }
                Ok(Some(reusable))
            }
            Feed::Invalid(message) => Err(message),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::READ_BUFFER_BYTES;
    use crate::protocol::tests::protocol;

    /// Feeds `chunks` through an inbox as reads would deliver them; returns each outcome.
    fn deliver(protocol: &Protocol, chunks: &[&[u8]]) -> Vec<Result<Option<bool>, String>> {
        let mut inbox = Inbox::new(READ_BUFFER_BYTES);
        let mut state = protocol.fresh_state();
        let mut outcomes = Vec::new();
        for chunk in chunks {
            inbox.spare()[..chunk.len()].copy_from_slice(chunk);
            inbox.filled(chunk.len());
            let outcome = inbox.check(protocol, &mut state);
            if matches!(outcome, Ok(Some(_))) {
                state = protocol.fresh_state();
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// A whole HTTP response of 13 body bytes.
    pub(crate) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!";

    #[test]
    fn echo_split_across_reads() {
        let p = protocol(false, "ping");
        let outcomes = deliver(&p, &[b"p", b"in", b"g", b"\n"]);
        assert_eq!(outcomes, vec![Ok(None), Ok(None), Ok(None), Ok(Some(true))]);
    }

    #[test]
    fn echo_mismatch_names_the_byte() {
        let p = protocol(false, "ping");
        let outcomes = deliver(&p, &[b"pi", b"xg\n"]);
        assert_eq!(outcomes[0], Ok(None));
        let message = outcomes[1].clone().unwrap_err();
        assert!(message.contains("byte 2 of 5"), "{message}");
        assert!(message.contains("expected 'n', got 'x'"), "{message}");
    }

    #[test]
    fn echo_short_line_then_more_is_fine() {
        let p = protocol(false, "a longer payload");
        assert_eq!(
            deliver(&p, &[b"a longer ", b"payload\n"]),
            vec![Ok(None), Ok(Some(true))]
        );
    }

    #[test]
    fn http_split_at_every_byte() {
        let p = protocol(true, "");
        for cut in 1..OK.len() {
            let outcomes = deliver(&p, &[&OK[..cut], &OK[cut..]]);
            assert_eq!(outcomes, vec![Ok(None), Ok(Some(true))], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = OK.chunks(1).collect();
        let outcomes = deliver(&p, &bytes);
        assert_eq!(outcomes.last(), Some(&Ok(Some(true))));
        assert!(
            outcomes[..outcomes.len() - 1]
                .iter()
                .all(|o| *o == Ok(None))
        );
    }

    #[test]
    fn http_non_200_is_an_error() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        let message = deliver(&p, &[response]).remove(0).unwrap_err();
        assert!(message.contains("status 500"), "{message}");
    }

    #[test]
    fn http_connection_close_is_not_reusable() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(false))]);
        let response = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(false))]);
        let response = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(true))]);
    }

    #[test]
    fn http_without_content_length_or_chunked_is_an_error() {
        let p = protocol(true, "");
        let message = deliver(&p, &[b"HTTP/1.1 200 OK\r\n\r\n"])
            .remove(0)
            .unwrap_err();
        assert!(message.contains("no Content-Length"), "{message}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let message = deliver(&p, &[chunked]).remove(0).unwrap_err();
        assert!(message.contains("Transfer-Encoding"), "{message}");
        let message = deliver(&p, &[b"garbage\r\n\r\n"]).remove(0).unwrap_err();
        assert!(message.contains("bad response head"), "{message}");
    }

    #[test]
    fn http_zero_length_body_completes_with_the_head() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(true))]);
    }

    #[test]
    fn oversized_head_fills_the_inbox() {
        let mut inbox = Inbox::new(32);
        let p = protocol(true, "");
        let mut state = p.fresh_state();
        let head = b"HTTP/1.1 200 OK\r\nX-Filler: aaaaaaaaaaaaa";
        let n = inbox.spare().len();
        inbox.spare().copy_from_slice(&head[..n]);
        inbox.filled(n);
        assert_eq!(inbox.check(&p, &mut state), Ok(None));
        assert!(inbox.spare().is_empty());
    }

    #[test]
    fn a_second_answer_in_the_same_read_is_an_error() {
        // One request is outstanding at a time: the server had nothing else to answer.
        let echo = protocol(false, "ping");
        let outcome = deliver(&echo, &[b"ping\nping\n"]).remove(0);
        assert!(outcome.unwrap_err().contains("5 unexpected bytes"));
        let http = protocol(true, "");
        let both = [OK, OK].concat();
        let outcome = deliver(&http, &[&both]).remove(0);
        assert!(outcome.unwrap_err().contains("unexpected bytes"));
        // Head and body in separate reads, body split again: one answer.
        let outcomes = deliver(&http, &[&OK[..40], &OK[40..45], &OK[45..]]);
        assert_eq!(outcomes, vec![Ok(None), Ok(None), Ok(Some(true))]);
    }
}
