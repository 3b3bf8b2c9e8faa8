//! The audit trail: who made a change and from where, recorded with the change's event.
//!
//! The edges name the actor once for everything a request or command does, rather than
//! every store method taking one: the CLI runs its command [`within`] `cli:<os user>`; the
//! HTTP server runs each request [`within`] its client address, and the extractors that
//! recognise the caller (an admin session, an API token) [`identify`] it. Every event
//! recorded inside that scope (`record_with`) carries the actor and source; what mailgate
//! does by itself (refreshes, sends, watchers, tasks spawned off a request) has none.
//! Names and addresses only: never a secret.

use crate::{Result, Store, rows};
use mailgate_core::AccountId;
use mailgate_core::Timestamp;
use mailgate_core::event::Event;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

/// Who made a change, and the client address when it came over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A user name, `api-token:<name>` or `cli:<os user>`.
    pub name: String,
    pub source: Option<String>,
}

/// The actor of the request or command running in this task; the name is filled in once
/// the caller is known.
struct Scope {
    name: Mutex<Option<String>>,
    source: Option<String>,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Runs `work` as `name` (if known yet) from `source`: every event it records carries them.
pub async fn within<F: Future>(name: Option<String>, source: Option<String>, work: F) -> F::Output {
    let scope = Arc::new(Scope {
        name: Mutex::new(name),
        source,
    });
    SCOPE.scope(scope, work).await
}

/// Names the caller of the running request (a session's user, an API token). Outside a
/// scope it does nothing.
pub fn identify(name: impl Into<String>) {
    let name = name.into();
    let _ = SCOPE.try_with(|scope| {
        *scope.name.lock().unwrap_or_else(PoisonError::into_inner) = Some(name);
    });
}

/// The actor of the running request or command; `None` for mailgate's own work and for a
/// request whose caller is unknown (not signed in).
pub(crate) fn current() -> Option<Actor> {
    SCOPE
        .try_with(|scope| {
            let name = scope
                .name
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()?;
            Some(Actor {
                name,
                source: scope.source.clone(),
            })
        })
        .ok()
        .flatten()
}

/// Which events to list: all conditions given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The actor exactly, or a kind of actor: `cli` and `api-token` match every
    /// `cli:…` and `api-token:…`.
    pub actor: Option<String>,
    /// At or after this time.
    pub since: Option<Timestamp>,
    pub account: Option<AccountId>,
    /// At most this many, newest first.
    pub limit: i64,
}

impl Store {
    /// Events with their actor and source, newest first, as `filter` selects them.
    pub async fn audit_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, app_id, account_id, message, actor, source FROM events \
             WHERE ($1 IS NULL OR actor = $1 OR substr(actor, 1, length($1) + 1) = $1 || ':') \
             AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR account_id = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(filter.actor.clone())
        .bind(filter.since.map(|t| t.0))
        .bind(filter.account.map(|a| a.0))
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::event).collect()
    }
}
