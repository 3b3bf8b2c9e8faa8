//! People and programs that use mailgate.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

crate::app::keyword_enum!(
    /// Admins change everything; operators may authorize and test, not edit apps.
    Role, "role" { Admin = "admin", Operator = "operator" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: Timestamp,
}

crate::app::keyword_enum!(
    /// What an API token may do.
    TokenScope, "API token scope" {
        AccountsRead = "accounts:read",
        AccountsWrite = "accounts:write",
        MessagesSend = "messages:send",
        MessagesRead = "messages:read",
        TokensRead = "tokens:read",
        WebhooksWrite = "webhooks:write",
    }
);

/// An API token as stored: only a hash of the token itself is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<TokenScope>,
    /// Empty means every account.
    pub account_ids: Vec<crate::AccountId>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scopes_parse_with_colons() {
        assert_eq!(
            TokenScope::parse("messages:send").unwrap(),
            TokenScope::MessagesSend
        );
        assert!(TokenScope::parse("messages:delete").is_err());
        assert_eq!(Role::parse("Operator").unwrap(), Role::Operator);
    }
}
