//! People and programs that use mailgate.

use crate::app::{FieldError, field_error};
use crate::{Invalid, Name, Secret, Timestamp};
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
    /// The last successful sign-in to the admin UI; None before the first.
    pub last_login_at: Option<Timestamp>,
}

/// Shortest password accepted: long passphrases beat complexity rules (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, so hashing one cannot be made arbitrarily expensive.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A sign-in name: 1 to 64 characters, no spaces or control characters (it is typed at
/// the login form and shown in events, where a space would make two names look like one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(input: &str) -> Result<Username, Invalid> {
        let s = input.trim();
        let count = s.chars().count();
        if count == 0 || count > 64 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Invalid::new(
                "user name",
                s,
                "expected 1 to 64 characters without spaces",
            ));
        }
        Ok(Username(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password, from the CLI's stdin (`repeat` None: it was not typed twice) or a form
/// (`repeat` Some). Errors name `password` or `password_repeat` and never echo the input.
pub fn parse_new_password(password: &str, repeat: Option<&str>) -> Result<Secret, FieldError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(field_error(
            "password",
            format!(
                "the password must be at least {MIN_PASSWORD_CHARS} characters (a passphrase is best)"
            ),
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(field_error(
            "password",
            format!("the password must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    if repeat.is_some_and(|r| r != password) {
        return Err(field_error(
            "password_repeat",
            "the two passwords differ; type the same password twice",
        ));
    }
    Ok(Secret::new(password))
}

/// A user an administrator asks for, from `mailgate user add` or the users page, parsed by
/// the same rules so both say the same thing. Errors name the field (`username`, `role`,
/// `password`, `password_repeat`).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub role: Role,
    pub password: Secret,
}

impl NewUser {
    /// Every problem, not just the first, so a form can show each beside its field.
    pub fn parse(
        username: &str,
        role: &str,
        password: &str,
        repeat: Option<&str>,
    ) -> Result<NewUser, Vec<FieldError>> {
        let mut errors = Vec::new();
        let username = Username::parse(username)
            .map_err(|e| errors.push(field_error("username", e.to_string())))
            .ok();
        let role = parse_role(role).map_err(|e| errors.push(e)).ok();
        let password = parse_new_password(password, repeat)
            .map_err(|e| errors.push(e))
            .ok();
        match (username, role, password) {
            (Some(username), Some(role), Some(password)) => Ok(NewUser {
                username,
                role,
                password,
            }),
            _ => Err(errors),
        }
    }
}

/// A role as typed or chosen; the error names the field `role`.
pub fn parse_role(input: &str) -> Result<Role, FieldError> {
    Role::parse(input).map_err(|e| field_error("role", e.to_string()))
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

/// A new token value, handed to the application once: the prefix and 32 random bytes
/// (base64url, 43 characters, 256 bits). Only its SHA-256 is stored.
pub fn new_api_token_value() -> Result<Secret, crate::random::RandomFailed> {
    Ok(Secret::new(format!(
        "{API_TOKEN_PREFIX}{}",
        crate::random::token(32)?
    )))
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
    fn a_new_user_names_each_field_at_fault_and_never_echoes_the_password() {
        let errors = NewUser::parse(" ", "boss", "short pw", Some("short pw")).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["username", "role", "password"]);
        assert!(errors[0].message.contains("without spaces"), "{errors:?}");
        assert!(errors[1].message.contains("admin, operator"), "{errors:?}");
        assert!(errors[2].message.contains("at least 12"), "{errors:?}");
        assert!(!format!("{errors:?}").contains("short pw"));

        let errors = NewUser::parse(
            "olga",
            "operator",
            "a long passphrase",
            Some("a long passphrasE"),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "password_repeat");
        assert!(!errors[0].message.contains("passphrase"));
        assert!(NewUser::parse("two words", "admin", "a long passphrase", None).is_err());
        assert!(NewUser::parse("olga", "admin", &"x".repeat(1025), None).is_err());

        let ok = NewUser::parse(" olga ", "Operator", "a long passphrase", None).unwrap();
        assert_eq!(ok.username.as_str(), "olga");
        assert_eq!(ok.role, Role::Operator);
        assert_eq!(ok.password.expose(), "a long passphrase");
    }

    #[test]
    fn a_token_value_is_recognisable_and_redacted() {
        let t = new_api_token_value().unwrap();
        let random = t.expose().strip_prefix("mgt_").unwrap();
        assert_eq!(random.len(), 43, "{random}");
        assert_ne!(t.expose(), new_api_token_value().unwrap().expose());
        assert_eq!(format!("{t} {t:?}"), "<redacted> Secret(<redacted>)");
    }
}
