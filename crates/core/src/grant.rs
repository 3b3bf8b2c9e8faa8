//! Grants: the tokens of one account and who consented to them.

use crate::{AccountId, Scopes, Secret, Timestamp};
use serde::{Deserialize, Serialize};

/// Who signed in and consented, as the provider reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// email, `preferred_username` or UPN.
    pub username: Option<String>,
    /// Google `sub` / OIDC subject.
    pub subject: Option<String>,
    /// Microsoft object id.
    pub oid: Option<String>,
    /// Microsoft tenant id.
    pub tid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub account_id: AccountId,
    pub access_token: Option<Secret>,
    pub access_expires_at: Option<Timestamp>,
    pub refresh_token: Option<Secret>,
    pub scopes: Scopes,
    pub identity: Identity,
    pub authorized_at: Timestamp,
    /// Who clicked Authorize (admin user name, `cli`, `api-token:NAME`).
    pub authorized_by: String,
}

/// Refresh this long before expiry: max(5 min, 10 % of the token's lifetime). Five minutes
/// covers clock skew and a slow provider; 10 % keeps long-lived tokens from being refreshed
/// at the last minute. Tokens living less than ten minutes get half their lifetime, or a
/// freshly issued token would already count as due and every use would refresh it.
pub fn refresh_margin_secs(lifetime_secs: i64) -> i64 {
    (lifetime_secs / 10).max(300).min(lifetime_secs.max(0) / 2)
}

impl Grant {
    /// When a proactive refresh is due, given when the token was issued.
    pub fn refresh_due_at(&self, issued_at: Timestamp) -> Option<Timestamp> {
        let exp = self.access_expires_at?;
        let lifetime = issued_at.secs_until(exp).max(0);
        Some(exp.plus_secs(-refresh_margin_secs(lifetime)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_five_minutes_or_ten_percent() {
        assert_eq!(refresh_margin_secs(3600), 360);
        assert_eq!(refresh_margin_secs(600), 300);
        assert_eq!(
            refresh_margin_secs(120),
            60,
            "short tokens: half their lifetime"
        );
        assert_eq!(refresh_margin_secs(0), 0);
        assert_eq!(refresh_margin_secs(86_400), 8_640);
        let g = Grant {
            account_id: AccountId(1),
            access_token: None,
            access_expires_at: Some(Timestamp(10_000)),
            refresh_token: None,
            scopes: Scopes::default(),
            identity: Identity::default(),
            authorized_at: Timestamp(0),
            authorized_by: "cli".into(),
        };
        assert_eq!(g.refresh_due_at(Timestamp(6_400)), Some(Timestamp(9_640)));
    }
}
