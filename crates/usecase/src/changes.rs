//! The changes an administrator makes to apps and accounts, once for every edge: the CLI
//! (`cmd_app.rs`, `cmd_account.rs`), the admin forms (`web/forms.rs`) and the API
//! (`web/api_admin.rs`). Each edge parses its own format into `core::input`'s requests
//! (`NewApp`, `AppChanges`, `NewAccount`, `AccountChanges`); here they are completed
//! (a generic app's endpoints from its issuer's discovery document), checked by the same
//! rules, and stored with their event. Nothing is stored unless the whole request is valid.

use mailgate_core::account::AccountSpec;
use mailgate_core::app::FieldError;
use mailgate_core::input::{AccountChanges, AppChanges, NewAccount, NewApp};
use mailgate_core::{AccountId, AppId, MailAccount, OAuthApp, Timestamp};
use mailgate_grants::Engine;
use mailgate_store::{Store, StoreError};

/// Why a change was not made.
#[derive(Debug)]
pub enum ChangeError {
    /// A field the administrator gave is at fault (the edge shows it beside that field).
    Field(FieldError),
    /// The store refused (a taken name, an app in use, not found) or failed.
    Store(StoreError),
    /// The change would send an account's tokens to other servers, which this caller may
    /// not decide; the fields that moved.
    MovesDestinations(Vec<&'static str>),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::Field(e) => write!(f, "{}: {}", e.field, e.message),
            ChangeError::Store(e) => write!(f, "{e}"),
            ChangeError::MovesDestinations(moved) => write!(
                f,
                "the change moves where the account's token is sent ({})",
                moved.join(", ")
            ),
        }
    }
}

impl From<FieldError> for ChangeError {
    fn from(e: FieldError) -> Self {
        ChangeError::Field(e)
    }
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> Self {
        ChangeError::Store(e)
    }
}

/// Creates an app: a generic app's missing endpoints discovered, then checked and stored.
pub async fn create_app(
    engine: &Engine,
    mut new: NewApp,
    now: Timestamp,
) -> Result<OAuthApp, ChangeError> {
    mailgate_oauth::discovery::complete_endpoints(
        engine.oauth_client(),
        new.kind,
        &mut new.endpoints,
    )
    .await?;
    let spec = new.into_spec()?;
    Ok(engine.store().create_app(&spec, now).await?)
}

/// Changes an app; fields not given keep their value.
pub async fn update_app(
    engine: &Engine,
    current: OAuthApp,
    mut changes: AppChanges,
    now: Timestamp,
) -> Result<OAuthApp, ChangeError> {
    mailgate_oauth::discovery::complete_endpoints(
        engine.oauth_client(),
        current.spec.kind,
        &mut changes.endpoints,
    )
    .await?;
    let clear_secret = changes.clear_secret;
    let spec = changes.apply(current.spec)?;
    Ok(engine
        .store()
        .update_app(current.id, &spec, clear_secret, now)
        .await?)
}

/// Removes an app no account uses.
pub async fn remove_app(store: &Store, id: AppId, now: Timestamp) -> Result<(), ChangeError> {
    Ok(store.remove_app(id, now).await?)
}

/// Creates an account of `app`.
pub async fn create_account(
    store: &Store,
    new: NewAccount,
    app: &OAuthApp,
    now: Timestamp,
) -> Result<MailAccount, ChangeError> {
    let spec = new.into_spec(app)?;
    Ok(store.create_account(&spec, now).await?)
}

/// Changes an account (moving it to `app` if that is another one). Unless `may_move`,
/// a change of the servers its tokens are sent to is refused (`MovesDestinations`).
pub async fn update_account(
    store: &Store,
    current: &MailAccount,
    changes: AccountChanges,
    app: &OAuthApp,
    may_move: bool,
    now: Timestamp,
) -> Result<MailAccount, ChangeError> {
    let spec: AccountSpec = changes.apply(current.spec.clone(), app)?;
    let moved = current.spec.changed_destinations(&spec);
    if !may_move && !moved.is_empty() {
        return Err(ChangeError::MovesDestinations(moved));
    }
    Ok(store.update_account(current.id, &spec, now).await?)
}

/// Removes an account and its grant.
pub async fn remove_account(
    store: &Store,
    id: AccountId,
    now: Timestamp,
) -> Result<(), ChangeError> {
    Ok(store.remove_account(id, now).await?)
}
