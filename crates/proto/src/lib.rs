//! The mail protocols as mailgate speaks them, written as pure functions over bytes and
//! strings: no sockets, no async runtime, no clock. The network lives in the clients and the
//! proxy; they feed this crate what they read and send what it builds.
//!
//! Modules:
//! - [`sasl`]: the OAuth 2.0 SASL mechanisms XOAUTH2 and OAUTHBEARER (RFC 7628): initial
//!   responses, the server's error challenge, and the client's answer to it.
//!
//! The IMAP, POP3 and SMTP line codecs join as `imap`, `pop3` and `smtp`, each an incremental
//! decoder that is tested with its input cut at every byte.

pub mod sasl;
