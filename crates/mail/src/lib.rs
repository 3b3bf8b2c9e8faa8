//! Mail over OAuth2: SMTP, IMAP and POP3 clients that authenticate with XOAUTH2 or
//! OAUTHBEARER over TLS (implicit or STARTTLS), and the "Test configuration" runner that
//! walks DNS → TCP → TLS → greeting → capabilities → token → authenticate → select/stat →
//! send → find, and explains every failure.
//!
//! Protocol parsing is `mailgate-proto`'s; this crate owns the sockets, the timeouts and the
//! order of commands. Every network step has a timeout, so a server that accepts TCP and
//! never answers is a failed step, never a hung command.

pub mod check;
pub mod imap;
pub mod inbox;
pub mod message;
pub mod net;
pub mod parse;
pub mod pop3;
pub mod remedy;
pub mod send;
pub mod smtp;

pub use net::{MailError, TlsInfo, TlsSettings};
