//! What can go wrong reading a mail server's bytes.
//!
//! Every error is final: the readers stop at the first one and keep returning it, because
//! after a framing error nobody knows where the next response starts. The caller drops the
//! connection and reports the error; the messages name the protocol and what was wrong so
//! that an administrator can tell a misconfigured port (TLS expected, wrong protocol) from a
//! misbehaving server.

/// A server's bytes that cannot be read as the protocol, or that would need more memory than
/// the reader's limits allow.
///
/// The three variants are kept few on purpose, so that clients can match on them. Limits that
/// are not about one line or one literal (a POP3 multi-line body, the number of lines in an
/// SMTP reply) are reported as [`ProtoError::Malformed`] with the limit in `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A line (not counting its CRLF) is longer than the reader's limit. Raised as soon as
    /// the buffer holds more than the limit without a line end, never after buffering the
    /// whole line.
    #[error("the server sent a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// An IMAP literal (`{N}`) larger than the limit, or literals in one response adding up to
    /// more. Raised when the announcement arrives, before any of its bytes. A size that does
    /// not fit in `usize` is reported as `usize::MAX`.
    #[error("the server announced a literal of {size} bytes (limit {limit})")]
    LiteralTooLarge { size: usize, limit: usize },
    /// Anything else the grammar does not allow; `detail` says what and quotes the start of
    /// the offending line.
    #[error("malformed {protocol} response: {detail}")]
    Malformed {
        protocol: &'static str,
        detail: String,
    },
}
