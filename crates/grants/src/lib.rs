//! The OAuth engine: everything between "Authorize" and a fresh access token.
//!
//! Token lifecycle of one account (after pizauth's):
//!
//! ```text
//!  start_authorization ─▶ pending state (one-time, 10 min, bound to initiator + account)
//!        │ callback(code, state)
//!        ▼
//!  exchange code (PKCE) ─▶ check identity (id_token via JWKS, or userinfo) ─▶ compare
//!  with the mailbox ─▶ store grant + state `active` in ONE transaction (or nothing)
//!        │
//!        ▼
//!  access_token(): fresh enough? ─ yes ─▶ return it
//!        │ no
//!        ▼
//!  in-process mutex ─▶ database lease `refresh:<id>` ─▶ re-read (someone may have
//!  refreshed) ─▶ an earlier request in doubt, backoff not over? ─ yes ─▶ refresh_in_doubt
//!        │ no
//!        ▼
//!  record "sent, in doubt" in the grant row ─▶ refresh at the provider ─▶ persist access +
//!  rotated refresh token in one statement (guarded by the grant version; clears the
//!  doubt) ─▶ release ─▶ return
//!        │ failure
//!        ├─ timeout: stays in doubt (the provider may have rotated the token); no process
//!        │  sends it again before the backoff; the grant and the state are kept
//!        ├─ transient (network, 5xx, 429): retry with backoff + jitter; the grant
//!        │  and the state are kept
//!        ├─ invalid_grant after an unanswered request: `rotation_lost_in_outage`
//!        └─ permanent (invalid_grant, invalid_client, expired secret…): `reauth_required`
//!           with the remediation; an expired secret moves every account of the app.
//! ```
//!
//! Rotation and crashes: the provider keeps a rotated-out refresh token valid for a grace
//! period (Microsoft does not revoke it at once; the emulator's `refresh_reuse_grace_secs`
//! models it). If mailgate dies between receiving a new refresh token and persisting it,
//! the stored (old) token is still accepted within that grace, and the next refresh
//! persists a new one. Persisting before handing out the access token keeps the window to
//! one SQL statement — when the answer arrives; a lost answer is the in-doubt state above
//! (ARCHITECTURE.md, "Refresh-token rotation and crashes").
//! A persist that fails (a full disk) keeps the answer in memory, used and stored before
//! any later refresh (`tokens.rs`), so the old token is not sent again.

mod authorize;
mod cache;
mod problem;
pub mod secrets;
mod token_source;
mod tokens;

pub use authorize::{AuthorizationStarted, Completed};
pub use problem::problem_from;
pub use tokens::{FORCED_REFRESH_INTERVAL_SECS, FreshToken};

use mailgate_core::{AccountId, Clock};
use mailgate_oauth::OAuthClient;
use mailgate_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pending authorizations expire after ten minutes (DESIGN.md, RFC 9700 advice).
pub const STATE_TTL_SECS: i64 = 600;
/// A refresh lease lasts longer than one token request can take, so a crashed holder
/// frees it soon and a live one never loses it mid-request.
pub const LEASE_TTL_SECS: i64 = 60;
/// Two minutes: a provider that hangs usually recovers within minutes (the fault campaign
/// of issue 13 saw three), and a replayed rotated token can cost the whole grant.
pub const DEFAULT_IN_DOUBT_BACKOFF: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    OAuth(mailgate_oauth::Failure),
    #[error(
        "You signed in as {signed_in_as}, but this account is {expected}. Sign out of the provider (or use a private window), then authorize again as {expected}. Nothing was stored."
    )]
    WrongUser {
        signed_in_as: String,
        expected: String,
    },
    #[error("{0}")]
    BadState(&'static str),
    #[error("account {account} cannot give out tokens: it is {state}{hint}")]
    NotUsable {
        account: String,
        state: String,
        hint: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "account {account}: its token was refreshed early less than {retry_after_secs} s ago; mailgate forces a refresh at most once a minute per account. Try again later."
    )]
    ForcedRefreshLimited {
        account: String,
        retry_after_secs: i64,
    },
    #[error(transparent)]
    Random(#[from] mailgate_core::random::RandomFailed),
}

impl EngineError {
    /// The remediation code, for API responses and tests.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Store(_) | EngineError::Random(_) => "internal",
            EngineError::OAuth(f) => f.remediation.code(),
            EngineError::WrongUser { .. } => mailgate_oauth::Remediation::WrongUser.code(),
            EngineError::BadState(_) => "invalid_state",
            EngineError::NotUsable { .. } => "not_authorized",
            EngineError::Unsupported(_) => "unsupported",
            EngineError::ForcedRefreshLimited { .. } => "force_refresh_limited",
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

pub struct Engine {
    pub(crate) store: Arc<Store>,
    pub(crate) client: OAuthClient,
    pub(crate) clock: Arc<dyn Clock>,
    /// Unique per process: the lease holder name.
    pub(crate) holder: String,
    /// One mutex per account so tasks of this process queue up locally and only one of
    /// them touches the database lease.
    pub(crate) local: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    /// The last token handed out per account, with the commit marker it was read at.
    pub(crate) cached: Mutex<HashMap<AccountId, cache::CachedToken>>,
    /// The newest refresh leader's token per account, for the tasks that waited on it.
    pub(crate) leader_tokens: Mutex<HashMap<AccountId, cache::LeaderToken>>,
    /// Per account: held by the task that reads the database to fill `cached`.
    pub(crate) fills: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    /// Transient-failure retries for on-demand refresh (`token` command, API).
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    /// Per token request; a refresh that takes longer is in doubt, not failed.
    pub(crate) timeout: Duration,
    /// The first wait before a refresh token whose request got no answer is sent again.
    pub(crate) in_doubt_backoff: Duration,
    /// Refreshes the provider answered but the database could not store (a full disk):
    /// kept until they are stored, so the rotated refresh token is not lost and the old
    /// one is never presented again (see `tokens.rs`).
    pub(crate) unsaved: Mutex<HashMap<AccountId, tokens::UnsavedRefresh>>,
}

pub struct EngineOptions {
    /// Per token request.
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    /// After a refresh request timed out, how long (plus the timeout, doubling with each
    /// further lost answer) before the same refresh token is sent again.
    pub in_doubt_backoff: Duration,
    /// `MAILGATE_IDP_ALLOW_PRIVATE`: identity providers on loopback or private addresses
    /// may be reached. Off by default, so an app's endpoint cannot probe the internal network.
    pub allow_private_idp: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            timeout: mailgate_oauth::client::DEFAULT_TIMEOUT,
            retries: 3,
            backoff: Duration::from_millis(500),
            in_doubt_backoff: DEFAULT_IN_DOUBT_BACKOFF,
            allow_private_idp: false,
        }
    }
}

impl Engine {
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>, options: EngineOptions) -> Result<Engine> {
        let client = OAuthClient::new(options.timeout, options.allow_private_idp);
        let holder = format!(
            "{}-{}",
            std::process::id(),
            mailgate_oauth::random::token(6)?
        );
        Ok(Engine {
            store,
            client,
            clock,
            holder,
            local: Mutex::new(HashMap::new()),
            cached: Mutex::new(HashMap::new()),
            leader_tokens: Mutex::new(HashMap::new()),
            fills: Mutex::new(HashMap::new()),
            retries: options.retries,
            backoff: options.backoff,
            timeout: options.timeout,
            in_doubt_backoff: options.in_doubt_backoff,
            unsaved: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The engine's provider client (its timeouts and limits), for requests made while an
    /// app is being set up, such as reading a discovery document.
    pub fn oauth_client(&self) -> &OAuthClient {
        &self.client
    }

    pub(crate) fn local_lock(&self, id: AccountId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_default().clone()
    }
}
