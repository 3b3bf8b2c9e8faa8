//! The mail protocols as mailgate speaks them, written as pure functions over bytes and
//! strings: no sockets, no async runtime, no clock. The network lives in the clients and the
//! proxy; they feed this crate what they read and send what it builds.
//!
//! Modules:
//! - [`sasl`]: the OAuth 2.0 SASL mechanisms XOAUTH2 and OAUTHBEARER (RFC 7628): initial
//!   responses, the server's error challenge, and the client's answer to it.
//! - [`imap`], [`pop3`], [`smtp`]: incremental decoders of what servers send, one `Reader`
//!   per protocol, plus the few helpers a client needs (capabilities, quoting, STAT/UIDL,
//!   EHLO extensions, DATA dot-stuffing).
//! - [`proxy`]: what password-only clients send mailgate's legacy proxy before login.
//! - [`error`]: [`ProtoError`], the one error the readers return.
//!
//! Every reader works the same way: `feed` it bytes as they arrive, cut anywhere, then ask
//! for the next response until it answers `Ok(None)` ("need more bytes"). Memory is bounded
//! by limits given at construction: a line longer than its limit is refused as soon as the
//! buffer holds more than the limit, not after a newline that may never come. An error is
//! final: the reader returns it again on every call, and the caller drops the connection.
//! The readers are tested with their input cut at every byte and with a small deterministic
//! fuzzer.

pub mod error;
pub mod imap;
pub mod pop3;
pub mod proxy;
pub mod sasl;
pub mod smtp;

mod line;
#[cfg(test)]
mod test_support;

pub use error::ProtoError;
