//! mailgate's domain model.
//!
//! Every value that crosses a boundary (CLI flag, form field, config key, database row) is
//! parsed into one of the newtypes here, which cannot hold an invalid value; the rest of
//! mailgate takes those types and never re-validates. This crate does no I/O and never
//! reads the wall clock except through [`clock::SystemClock`], nor the operating system's
//! random generator except through [`random`].

pub mod account;
pub mod address;
pub mod app;
pub mod clock;
pub mod event;
pub mod grant;
pub mod html;
pub mod input;
pub mod invalid;
pub mod log_limit;
pub mod metrics;
pub mod openapi;
pub mod preset;
pub mod random;
pub mod secret;
pub mod send;
pub mod state;
pub mod token_source;
pub mod user;
pub mod values;
pub mod webhook;

pub use account::{Inbound, InboundProtocol, MailAccount, OnReceived, Outbound, ServerEndpoint};
pub use app::{AppKind, Endpoints, OAuthApp, OAuthFlow};
pub use clock::{Clock, SystemClock, Timestamp};
pub use grant::{Grant, Identity};
pub use invalid::Invalid;
pub use secret::Secret;
pub use state::{AccountEvent, AccountState, TransitionRefused};
pub use values::{
    AccountId, AppId, ClientId, EmailAddress, Host, HttpUrl, Name, Port, Scopes, TenantId, TlsMode,
};
