//! The byte buffer under the three readers, the [`Framing`] that makes their first error final,
//! and the small text helpers they share.
//!
//! The RFCs require CRLF (RFC 3501 §2.2, RFC 1939 §3, RFC 5321 §2.3.8), but some servers and
//! proxies send a bare LF, and the usual clients accept it (Python's `poplib` and `smtplib`
//! read up to LF and strip CR), so a line ends at LF and one CR right before it is dropped.
//! A lone CR inside a line stays part of the line.
//!
//! Memory is bounded: a line longer than the limit is refused as soon as the buffer holds
//! more than the limit without an LF, so a server that never sends a newline costs at most
//! the limit plus one read.

use crate::ProtoError;

/// After a burst (a large literal or message) an emptied buffer gives back its memory down
/// to this much, so an idle connection does not keep megabytes.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// The line is longer than the limit the caller passed; the caller knows which limit to
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong;

#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    bytes: Vec<u8>,
    /// The first byte not yet handed out.
    start: usize,
    /// `bytes[start..scanned]` holds no LF: a line split across many feeds is scanned once.
    scanned: usize,
}

impl LineBuffer {
    pub(crate) fn feed(&mut self, more: &[u8]) {
        self.compact();
        self.bytes.extend_from_slice(more);
    }

    /// Bytes received and not yet handed out.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Forgets everything: after an error the stream has no known framing.
    pub(crate) fn clear(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }

    /// The next line without its line end, or `None` until its LF arrives.
    ///
    /// `max` counts the line's bytes without CRLF. With no LF yet, `max + 1` buffered bytes
    /// may still be a full line waiting for the LF after its CR; anything more cannot be.
    pub(crate) fn next_line(&mut self, max: usize) -> Result<Option<&[u8]>, LineTooLong> {
        // No need to look further than the longest acceptable line and its CRLF.
        let window_end = self
            .bytes
            .len()
            .min(self.start.saturating_add(max).saturating_add(2));
        let from = self.scanned.max(self.start);
        let found = self
            .bytes
            .get(from..window_end)
            .and_then(|unscanned| unscanned.iter().position(|&b| b == b'\n'));
        let Some(offset) = found else {
            self.scanned = window_end.max(self.start);
            let pending = self.len();
            let may_still_fit = pending <= max
                || (pending == max.saturating_add(1) && self.bytes.last() == Some(&b'\r'));
            return if may_still_fit {
                Ok(None)
            } else {
                Err(LineTooLong)
            };
        };
        let line_feed = from + offset;
        let line_start = self.start;
        let mut line_end = line_feed;
        if line_end > line_start && self.bytes.get(line_end - 1) == Some(&b'\r') {
            line_end -= 1;
        }
        self.start = line_feed + 1;
        self.scanned = self.start;
        if line_end - line_start > max {
            return Err(LineTooLong);
        }
        Ok(self.bytes.get(line_start..line_end))
    }

    /// Up to `n` bytes, as many as have arrived: an IMAP literal is taken out as it comes, so
    /// its bytes are held once, in the literal.
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let taken_start = self.start;
        let end = self.bytes.len().min(self.start.saturating_add(n));
        self.start = end;
        self.scanned = self.scanned.max(end);
        self.bytes.get(taken_start..end).unwrap_or_default()
    }

    /// Consumed bytes are shifted out only when they are at least half the buffer, so each
    /// byte is moved a bounded number of times however the input is cut.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start == self.bytes.len() {
            self.bytes.clear();
            if self.bytes.capacity() > RETAINED_CAPACITY {
                self.bytes.shrink_to(RETAINED_CAPACITY);
            }
            self.start = 0;
            self.scanned = 0;
        } else if self.start >= self.bytes.len() - self.start {
            self.bytes.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }
}

/// What every reader holds: the line buffer, what it has read of a response still arriving
/// (`S`, the protocol's own), and its first error. An error is final, as the framing is lost:
/// the bytes and the partial response are dropped, later feeds are ignored and every later
/// read returns the same error.
#[derive(Debug, Default)]
pub(crate) struct Framing<S> {
    buffer: LineBuffer,
    pending: S,
    failure: Option<ProtoError>,
}

impl<S: Default> Framing<S> {
    /// Appends bytes read from the server. After an error they are dropped unread.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.failure.is_none() {
            self.buffer.feed(bytes);
        }
    }

    /// Bytes received and not yet handed out.
    pub(crate) fn unread(&self) -> usize {
        self.buffer.len()
    }

    /// The response still arriving.
    pub(crate) fn pending(&self) -> &S {
        &self.pending
    }

    /// Runs `read` unless the reader already failed, and remembers its error.
    pub(crate) fn read<T>(
        &mut self,
        read: impl FnOnce(&mut LineBuffer, &mut S) -> Result<Option<T>, ProtoError>,
    ) -> Result<Option<T>, ProtoError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let result = read(&mut self.buffer, &mut self.pending);
        if let Err(failure) = &result {
            self.failure = Some(failure.clone());
            self.pending = S::default();
            self.buffer.clear();
        }
        result
    }
}

/// Server text as a `String`: servers are supposed to send ASCII or UTF-8, and a stray Latin-1
/// byte in a human-readable message is not worth dropping the connection for.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The start of a line for an error message: enough to recognise it, never a whole message.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 80;
    let shown = bytes.get(..SHOWN).unwrap_or(bytes);
    let mut text = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > SHOWN {
        text.push('…');
    }
    text
}

/// A decimal number made of ASCII digits only: Rust's `parse` would also take `+5`, which no
/// protocol here allows.
pub(crate) fn decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The first word (up to a space) and the rest after that one space.
pub(crate) fn split_word(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buffer: &mut LineBuffer, max: usize) -> Vec<Result<Vec<u8>, LineTooLong>> {
        let mut out = Vec::new();
        loop {
            match buffer.next_line(max) {
                Ok(Some(line)) => out.push(Ok(line.to_vec())),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn crlf_and_bare_lf_end_lines_and_a_lone_cr_stays() {
        let mut buffer = LineBuffer::default();
        buffer.feed(b"one\r\ntwo\nthr\ree\r\n\r\nrest");
        assert_eq!(
            lines(&mut buffer, 100),
            vec![
                Ok(b"one".to_vec()),
                Ok(b"two".to_vec()),
                Ok(b"thr\ree".to_vec()),
                Ok(Vec::new())
            ]
        );
        assert_eq!(buffer.len(), 4);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_whatever_the_cut() {
        let input = b"12345\r\n";
        for cut in 0..=input.len() {
            let mut buffer = LineBuffer::default();
            buffer.feed(&input[..cut]);
            let mut got = lines(&mut buffer, 5);
            buffer.feed(&input[cut..]);
            got.extend(lines(&mut buffer, 5));
            assert_eq!(got, vec![Ok(b"12345".to_vec())], "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_over_the_limit_fails_as_soon_as_it_is_certain() {
        let mut buffer = LineBuffer::default();
        buffer.feed(b"12345\r");
        assert_eq!(buffer.next_line(5), Ok(None), "CR may be followed by LF");
        let mut buffer = LineBuffer::default();
        buffer.feed(b"123456");
        assert_eq!(buffer.next_line(5), Err(LineTooLong));
        let mut buffer = LineBuffer::default();
        buffer.feed(b"123456\r\n");
        assert_eq!(buffer.next_line(5), Err(LineTooLong));
    }

    #[test]
    fn take_hands_out_what_has_arrived() {
        let mut buffer = LineBuffer::default();
        buffer.feed(b"abc");
        assert_eq!(buffer.take(5), b"abc");
        buffer.feed(b"de\r\nf\n");
        assert_eq!(buffer.take(2), b"de");
        assert_eq!(
            lines(&mut buffer, 10),
            vec![Ok(Vec::new()), Ok(b"f".to_vec())]
        );
        assert_eq!(buffer.take(3), b"");
    }

    #[test]
    fn framing_drops_everything_at_the_first_error_and_returns_it_again() {
        // A toy protocol: lines are collected until "end"; "bad" is an error.
        let read = |buffer: &mut LineBuffer, lines: &mut Vec<Vec<u8>>| {
            while let Some(line) = buffer
                .next_line(16)
                .map_err(|_| ProtoError::LineTooLong { limit: 16 })?
            {
                match line {
                    b"end" => return Ok(Some(std::mem::take(lines))),
                    b"bad" => {
                        return Err(ProtoError::Malformed {
                            protocol: "toy",
                            detail: "bad".into(),
                        });
                    }
                    line => lines.push(line.to_vec()),
                }
            }
            Ok(None)
        };
        let mut framing = Framing::<Vec<Vec<u8>>>::default();
        framing.feed(b"a\nend\nb\n");
        assert_eq!(framing.read(read), Ok(Some(vec![b"a".to_vec()])));
        assert_eq!(framing.read(read), Ok(None));
        assert_eq!(framing.pending(), &vec![b"b".to_vec()]);
        framing.feed(b"bad\nrest");
        let error = framing.read(read).unwrap_err();
        assert_eq!((framing.unread(), framing.pending().len()), (0, 0));
        framing.feed(b"end\n");
        assert_eq!(framing.unread(), 0, "fed after the error: dropped");
        assert_eq!(framing.read(read), Err(error));
    }

    #[test]
    fn decimal_takes_digits_only() {
        assert_eq!(decimal::<u32>("42"), Some(42));
        for bad in ["", "+4", "-4", " 4", "4 ", "4a", "99999999999"] {
            assert_eq!(decimal::<u32>(bad), None, "{bad:?}");
        }
    }
}
