//! The use-case layer: what an administrator can do with apps and accounts, written once
//! and called by the CLI (`crates/mailgate`), the admin forms and the API (`crates/web`).
//!
//! `views` holds the one JSON view of each resource (`AppView`, `AccountView`): the CLI's
//! `--json`, the API's answers and the OpenAPI schemas all come from these types, so a field
//! cannot be spelt or counted differently in two places.
//!
//! `changes` holds the changes to apps and accounts (create, update, remove): discovery,
//! the rules of `core::input`, and the store, in that order, for every edge. `access`
//! issues API tokens and creates webhook subscriptions (check, mint, store, once).
//!
//! **Does not**: parse requests (that is `core::input` for the rules, the edges for their
//! formats), render HTML, or print.

pub mod access;
pub mod changes;
pub mod views;

pub use changes::ChangeError;
pub use views::{AccountView, AppView};
