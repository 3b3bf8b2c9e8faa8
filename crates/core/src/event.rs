//! Events: every state change and every warning, kept for the dashboard and sent to
//! webhooks.

use crate::{AccountId, AppId, Timestamp};
use serde::{Deserialize, Serialize};

crate::app::keyword_enum!(
    EventKind, "event kind" {
        AppCreated = "app.created",
        AppUpdated = "app.updated",
        AppRemoved = "app.removed",
        AccountCreated = "account.created",
        AccountUpdated = "account.updated",
        AccountRemoved = "account.removed",
        AccountStateChanged = "account.state_changed",
        AccountAuthorized = "account.authorized",
        AccountReauthRequired = "account.reauth_required",
        TokenRefreshed = "account.token_refreshed",
        AuthorizationFailed = "account.authorization_failed",
        TestPassed = "account.test_passed",
        TestFailed = "account.test_failed",
        MessageSent = "message.sent",
        MessageFailed = "message.failed",
        TokenRefreshFailed = "account.refresh_failed",
        SecretExpiring = "app.secret_expiring",
        KeysRotated = "keys.rotated",
        InboundWatching = "account.inbound_watching",
        InboundFailed = "account.inbound_failed",
        WebhookCreated = "webhook.created",
        WebhookUpdated = "webhook.updated",
        WebhookRemoved = "webhook.removed",
        UserCreated = "user.created",
        /// A user's role or password changed (the message says which; never the password).
        UserUpdated = "user.updated",
        UserRemoved = "user.removed",
        /// A proxy password was set or replaced (never the password itself).
        ProxyPasswordSet = "proxy.password_set",
        ProxyPasswordRevoked = "proxy.password_revoked",
        /// A legacy client's login at the proxy was refused (wrong password, account not
        /// usable, upstream trouble); the message says which and from where.
        ProxyLoginFailed = "proxy.login_failed",
        /// An API token was created (its name, scopes and accounts; never its value).
        ApiTokenCreated = "api_token.created",
        ApiTokenRevoked = "api_token.revoked",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub app_id: Option<AppId>,
    pub account_id: Option<AccountId>,
    /// Human-readable, never containing a secret.
    pub message: String,
    /// Who made the change: a user name, `api-token:<name>` or `cli:<os user>`; absent for
    /// what mailgate did by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The client address of a change made over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A point in time as an administrator types it to filter events (`--since`, `?since=`):
/// a date `YYYY-MM-DD` (its start, UTC) or an RFC 3339 time (`2026-12-04T15:00:00Z`).
pub fn parse_since(input: &str) -> Result<Timestamp, String> {
    const DATE: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]");
    let text = input.trim();
    if let Ok(date) = time::Date::parse(text, DATE) {
        return Ok(Timestamp(date.midnight().assume_utc().unix_timestamp()));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| Timestamp(t.unix_timestamp()))
        .map_err(|_| {
            format!(
                "{:?} is not a date or time; expected YYYY-MM-DD or RFC 3339 like 2026-12-04T15:00:00Z",
                text.chars().take(40).collect::<String>()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_an_rfc3339_time() {
        assert_eq!(parse_since("1970-01-02"), Ok(Timestamp(86_400)));
        assert_eq!(parse_since("1970-01-01T00:01:00Z"), Ok(Timestamp(60)));
        assert_eq!(parse_since("1970-01-01T01:00:00+01:00"), Ok(Timestamp(0)));
        assert!(parse_since("yesterday").unwrap_err().contains("YYYY-MM-DD"));
    }
}
