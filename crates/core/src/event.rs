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
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub app_id: Option<AppId>,
    pub account_id: Option<AccountId>,
    /// Human-readable, never containing a secret.
    pub message: String,
}
