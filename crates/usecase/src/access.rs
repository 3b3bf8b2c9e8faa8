//! Giving programs access, once for every edge: issuing an API token (`mailgate api-token
//! create`, the admin page `web/tokens.rs`) and creating a webhook subscription or rotating
//! its secret (`POST /api/v1/webhooks`, the admin page `web/webhooks_ui.rs`). Each checks
//! the request, mints the secret, stores it (the store keeps a token only as its hash and a
//! signing secret sealed, and records the event) and hands the secret back once, for the
//! one answer that shows it.

use mailgate_core::app::FieldError;
use mailgate_core::user::{ApiToken, NewApiToken};
use mailgate_core::webhook::{NewWebhook, Webhook};
use mailgate_core::{Secret, Timestamp};
use mailgate_store::{Store, StoreError};

/// Why no API token was issued.
#[derive(Debug)]
pub enum IssueTokenError {
    /// Every field at fault (`name`, `scope`, `account`), so a form can show each.
    Invalid(Vec<FieldError>),
    /// The store refused (`NotFound`: an account named does not exist; `Duplicate`: the
    /// name is taken, revoked tokens included) or failed.
    Store(StoreError),
}

/// Issues the API token an administrator asked for; its value is returned to be shown
/// once. `accounts` are names or ids; none means every account.
pub async fn issue_api_token<S: AsRef<str>>(
    store: &Store,
    name: &str,
    scopes: &[S],
    accounts: &[S],
    now: Timestamp,
) -> Result<(Secret, ApiToken), IssueTokenError> {
    let new = NewApiToken::parse(name, scopes, accounts).map_err(IssueTokenError::Invalid)?;
    store
        .issue_api_token(&new, now)
        .await
        .map_err(IssueTokenError::Store)
}

/// A subscription's HMAC key: `whsec_` and 24 random bytes.
fn new_signing_secret() -> Result<Secret, mailgate_core::random::RandomFailed> {
    Ok(Secret::new(format!(
        "whsec_{}",
        mailgate_oauth::random::token(24)?
    )))
}

/// Stores a checked subscription (`NewWebhook::parse`) with a new signing secret, returned
/// for the one answer that shows it. `NotFound` when its account does not exist.
pub async fn create_webhook(
    store: &Store,
    new: &NewWebhook,
    now: Timestamp,
) -> Result<(Webhook, Secret), StoreError> {
    let secret = new_signing_secret()?;
    let hook = store
        .create_webhook(
            new.account_id,
            &new.url,
            &new.events,
            &new.description,
            &secret,
            now,
        )
        .await?;
    Ok((hook, secret))
}

/// Replaces subscription `id`'s signing secret; the new one comes back for the one answer
/// that shows it, and the old one stops signing at once.
pub async fn rotate_webhook_secret(
    store: &Store,
    id: i64,
    now: Timestamp,
) -> Result<Secret, StoreError> {
    let secret = new_signing_secret()?;
    store.rotate_webhook_secret(id, &secret, now).await?;
    Ok(secret)
}
