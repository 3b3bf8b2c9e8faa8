//! What the mail clients need from the OAuth engine, as a trait: a fresh access token, a
//! forced refresh after a server refused one, the flow of an account's app, and a place to
//! record what a test run found.
//!
//! `mailgate-mail` takes a `&dyn TokenSource` instead of `mailgate_grants::Engine`, so the
//! network clients do not link the database (`cargo tree -p mailgate-mail` shows no sqlx);
//! the engine implements it in `mailgate-grants`. The futures are boxed so the trait can be
//! used as `dyn` (one allocation per token request, next to a network round trip).

use crate::app::OAuthFlow;
use crate::event::EventKind;
use crate::{AccountId, AppId, Secret, Timestamp};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A future a [`TokenSource`] returns: `Send`, so mail sessions run on any task.
pub type TokenFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An access token handed out as usable.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: Option<Timestamp>,
}

/// Why no token could be had, in the terms the mail side reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenUnavailable {
    /// The provider refused or failed the token request: the step, the remediation
    /// catalogue's code and sentence, and the provider's own words.
    #[error("{message}")]
    Provider {
        /// "refresh", "client credentials", …
        step: &'static str,
        code: &'static str,
        sentence: &'static str,
        provider_says: Option<String>,
        /// The whole failure in the engine's words.
        message: String,
    },
    /// A forced refresh was refused because one happened less than a minute ago.
    #[error("{0}")]
    ForcedRefreshLimited(String),
    /// Anything else (the account is not authorized, the database failed), in words an
    /// administrator can act on.
    #[error("{0}")]
    Other(String),
}

/// The engine as the mail clients see it. Implemented by `mailgate_grants::Engine`.
pub trait TokenSource: Send + Sync {
    /// A token valid for at least the refresh margin (refreshing single-flight if needed).
    fn access_token(
        &self,
        account: AccountId,
    ) -> TokenFuture<'_, Result<AccessToken, TokenUnavailable>>;

    /// One refresh although the token looked valid, because a server refused `refused`;
    /// rate-limited per account ([`TokenUnavailable::ForcedRefreshLimited`]).
    fn force_refresh<'a>(
        &'a self,
        account: AccountId,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a, Result<AccessToken, TokenUnavailable>>;

    /// The flow of an app, `None` when it cannot be read (a refusal then keeps its cause).
    fn app_flow(&self, app: AppId) -> TokenFuture<'_, Option<OAuthFlow>>;

    /// Records an event (a test run's outcome); a failure to record is logged, not returned,
    /// because the run itself has already happened.
    fn record_event<'a>(
        &'a self,
        at: Timestamp,
        kind: EventKind,
        app: Option<AppId>,
        account: Option<AccountId>,
        message: &'a str,
    ) -> TokenFuture<'a, ()>;
}

/// Callers hold the engine in an `Arc` and pass `&state.engine`; this lets that coerce to
/// `&dyn TokenSource` as `&Engine` did.
impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn access_token(
        &self,
        account: AccountId,
    ) -> TokenFuture<'_, Result<AccessToken, TokenUnavailable>> {
        (**self).access_token(account)
    }

    fn force_refresh<'a>(
        &'a self,
        account: AccountId,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a, Result<AccessToken, TokenUnavailable>> {
        (**self).force_refresh(account, refused)
    }

    fn app_flow(&self, app: AppId) -> TokenFuture<'_, Option<OAuthFlow>> {
        (**self).app_flow(app)
    }

    fn record_event<'a>(
        &'a self,
        at: Timestamp,
        kind: EventKind,
        app: Option<AppId>,
        account: Option<AccountId>,
        message: &'a str,
    ) -> TokenFuture<'a, ()> {
        (**self).record_event(at, kind, app, account, message)
    }
}
