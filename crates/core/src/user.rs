//! People and programs that use mailgate.

use crate::app::{FieldError, field_error};
use crate::{Name, Secret, Timestamp};
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
    /// When it was revoked; a revoked token is kept for the record and opens nothing.
    pub revoked_at: Option<Timestamp>,
}

/// What every API token starts with, so one found in a file or a log is recognisable.
pub const API_TOKEN_PREFIX: &str = "mgt_";

/// The value handed to the application once: the prefix and `random`, which the caller
/// draws (this crate has no randomness). Only its SHA-256 is stored.
pub fn api_token_value(random: &str) -> Secret {
    Secret::new(format!("{API_TOKEN_PREFIX}{random}"))
}

/// What an administrator asks for when creating an API token, from the CLI's flags or the
/// admin form, parsed by the same rules so both say the same thing. Errors name the field
/// (`name`, `scope`, `account`), which the CLI shows as `--name`, `--scope`, `--account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub name: Name,
    /// At least one; each once, in the order given.
    pub scopes: Vec<TokenScope>,
    /// The accounts it is limited to, by name or id as given (the caller resolves them
    /// against the store); each once. Empty means every account.
    pub accounts: Vec<String>,
}

impl NewApiToken {
    /// Every problem, not just the first, so a form can show each beside its field.
    pub fn parse<S: AsRef<str>>(
        name: &str,
        scopes: &[S],
        accounts: &[S],
    ) -> Result<NewApiToken, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = Name::parse(name)
            .map_err(|e| errors.push(field_error("name", e.to_string())))
            .ok();
        let mut parsed: Vec<TokenScope> = Vec::new();
        for s in scopes
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !s.trim().is_empty())
        {
            match TokenScope::parse(s) {
                Ok(scope) if !parsed.contains(&scope) => parsed.push(scope),
                Ok(_) => {}
                Err(e) => errors.push(field_error("scope", e.to_string())),
            }
        }
        if parsed.is_empty() && !errors.iter().any(|e| e.field == "scope") {
            let all: Vec<&str> = TokenScope::ALL.iter().map(|s| s.as_str()).collect();
            errors.push(field_error(
                "scope",
                format!(
                    "choose at least one scope: {} (a token without one can do nothing)",
                    all.join(", ")
                ),
            ));
        }
        let mut wanted: Vec<String> = Vec::new();
        for a in accounts
            .iter()
            .map(|a| a.as_ref().trim())
            .filter(|a| !a.is_empty())
        {
            if !wanted.iter().any(|w| w == a) {
                wanted.push(a.to_owned());
            }
        }
        match name {
            Some(name) if errors.is_empty() => Ok(NewApiToken {
                name,
                scopes: parsed,
                accounts: wanted,
            }),
            _ => Err(errors),
        }
    }
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

    #[test]
    fn a_new_token_needs_a_name_and_a_scope_and_names_each_field_at_fault() {
        let none: [&str; 0] = [];
        let errors = NewApiToken::parse(" ", &none, &none).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "scope"]);
        assert!(errors[1].message.contains("accounts:read"), "{errors:?}");

        let errors = NewApiToken::parse("erp", &["messages:delete"], &none).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "scope");
        assert!(
            errors[0].message.contains("\"messages:delete\""),
            "{errors:?}"
        );

        let ok = NewApiToken::parse(
            " erp ",
            &["accounts:read", "tokens:read", "accounts:read", ""],
            &["support", " 2 ", "support", ""],
        )
        .unwrap();
        assert_eq!(ok.name.as_str(), "erp");
        assert_eq!(
            ok.scopes,
            [TokenScope::AccountsRead, TokenScope::TokensRead]
        );
        assert_eq!(ok.accounts, ["support", "2"]);
    }

    #[test]
    fn a_token_value_is_recognisable_and_redacted() {
        let t = api_token_value("abc");
        assert_eq!(t.expose(), "mgt_abc");
        assert_eq!(format!("{t} {t:?}"), "<redacted> Secret(<redacted>)");
    }
}
