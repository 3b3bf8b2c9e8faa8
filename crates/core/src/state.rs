//! The account state machine.
//!
//! ```text
//!                 Authorized                RefreshStarted
//!  Unauthorized ─────────────▶ Active ◀──────────────────▶ Refreshing
//!       ▲                      │  ▲   RefreshSucceeded /         │
//!       │ Deauthorized         │  │   RefreshFailedTransient     │
//!       │                      │  │                              │
//!       │      GrantRejected   ▼  │ Authorized                   │ GrantRejected
//!       └─────────────── ReauthRequired ◀────────────────────────┘
//!
//!  any state ── Disabled ──▶ Disabled ── Enabled{has_grant} ──▶ Active | Unauthorized
//! ```
//!
//! * A transient failure (network, 5xx, 429, timeout) never leaves `Active`: the grant is
//!   kept and the refresh retried. Only a rejection by the provider (`invalid_grant`,
//!   expired secret, revoked consent) moves to `ReauthRequired`.
//! * `Refreshing` is informational (the dashboard shows it); single-flight is enforced by a
//!   lease in the database, not by this enum.
//! * Every change goes through [`AccountState::apply`]; callers record the returned state
//!   together with an event in one transaction.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Created, never authorized (or the grant was removed).
    Unauthorized,
    /// Holds a working grant.
    Active,
    /// A refresh is in flight.
    Refreshing,
    /// The provider rejected the grant; only a new authorization helps.
    ReauthRequired,
    /// Switched off by the administrator; nothing runs for it.
    Disabled,
}

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountEvent {
    /// A grant for the right identity was stored.
    Authorized,
    RefreshStarted,
    RefreshSucceeded,
    /// Network trouble, 5xx, 429: retry later, keep the grant.
    RefreshFailedTransient,
    /// The provider or mail server refused the grant for good.
    GrantRejected,
    /// The administrator removed the grant.
    Deauthorized,
    Disabled,
    Enabled {
        has_grant: bool,
    },
}

/// A transition the machine does not allow, e.g. authorizing a disabled account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionRefused {
    pub from: AccountState,
    pub event: AccountEvent,
}

impl fmt::Display for TransitionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match (self.from, self.event) {
            (AccountState::Disabled, _) => "the account is disabled; enable it first",
            (_, AccountEvent::Enabled { .. }) => "the account is not disabled",
            (AccountState::Unauthorized, _) => "the account has not been authorized yet",
            (AccountState::ReauthRequired, _) => "the account must be authorized again first",
            _ => "that change is not possible in this state",
        };
        write!(
            f,
            "cannot apply {:?} to an account that is {}: {why}",
            self.event, self.from
        )
    }
}

impl std::error::Error for TransitionRefused {}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Unauthorized => "unauthorized",
            AccountState::Active => "active",
            AccountState::Refreshing => "refreshing",
            AccountState::ReauthRequired => "reauth_required",
            AccountState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AccountState::Unauthorized,
            AccountState::Active,
            AccountState::Refreshing,
            AccountState::ReauthRequired,
            AccountState::Disabled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// The one place that decides transitions.
    pub fn apply(self, event: AccountEvent) -> Result<AccountState, TransitionRefused> {
        use AccountEvent as E;
        use AccountState as S;
        let next = match (self, event) {
            (S::Disabled, E::Enabled { has_grant: true }) => S::Active,
            (S::Disabled, E::Enabled { has_grant: false }) => S::Unauthorized,
            (S::Disabled, _) => return Err(TransitionRefused { from: self, event }),
            (_, E::Disabled) => S::Disabled,
            (_, E::Enabled { .. }) => return Err(TransitionRefused { from: self, event }),

            (S::Unauthorized | S::Active | S::ReauthRequired | S::Refreshing, E::Authorized) => {
                S::Active
            }
            (S::Active, E::RefreshStarted) => S::Refreshing,
            (S::Refreshing, E::RefreshSucceeded | E::RefreshFailedTransient) => S::Active,
            // A refresh that finished after another process already marked the grant bad
            // must not resurrect it; so these are only accepted from the two live states.
            (S::Active, E::RefreshSucceeded | E::RefreshFailedTransient) => S::Active,
            (S::Active | S::Refreshing, E::GrantRejected) => S::ReauthRequired,
            (S::ReauthRequired, E::GrantRejected) => S::ReauthRequired,
            (S::Active | S::Refreshing | S::ReauthRequired, E::Deauthorized) => S::Unauthorized,
            _ => return Err(TransitionRefused { from: self, event }),
        };
        Ok(next)
    }

    /// Whether tokens may be handed out in this state.
    pub fn can_use_grant(self) -> bool {
        matches!(self, AccountState::Active | AccountState::Refreshing)
    }
}

impl fmt::Display for AccountState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::AccountEvent as E;
    use super::AccountState as S;

    const ALL_STATES: [S; 5] = [
        S::Unauthorized,
        S::Active,
        S::Refreshing,
        S::ReauthRequired,
        S::Disabled,
    ];
    const ALL_EVENTS: [E; 9] = [
        E::Authorized,
        E::RefreshStarted,
        E::RefreshSucceeded,
        E::RefreshFailedTransient,
        E::GrantRejected,
        E::Deauthorized,
        E::Disabled,
        E::Enabled { has_grant: true },
        E::Enabled { has_grant: false },
    ];

    #[test]
    fn the_full_transition_table() {
        // Every (state, event) pair, written out: Some(next) allowed, None refused.
        let expected = |s: S, e: E| -> Option<S> {
            Some(match (s, e) {
                (S::Unauthorized, E::Authorized) => S::Active,
                (S::Unauthorized, E::Disabled) => S::Disabled,
                (S::Active, E::Authorized) => S::Active,
                (S::Active, E::RefreshStarted) => S::Refreshing,
                (S::Active, E::RefreshSucceeded) => S::Active,
                (S::Active, E::RefreshFailedTransient) => S::Active,
                (S::Active, E::GrantRejected) => S::ReauthRequired,
                (S::Active, E::Deauthorized) => S::Unauthorized,
                (S::Active, E::Disabled) => S::Disabled,
                (S::Refreshing, E::Authorized) => S::Active,
                (S::Refreshing, E::RefreshSucceeded) => S::Active,
                (S::Refreshing, E::RefreshFailedTransient) => S::Active,
                (S::Refreshing, E::GrantRejected) => S::ReauthRequired,
                (S::Refreshing, E::Deauthorized) => S::Unauthorized,
                (S::Refreshing, E::Disabled) => S::Disabled,
                (S::ReauthRequired, E::Authorized) => S::Active,
                (S::ReauthRequired, E::GrantRejected) => S::ReauthRequired,
                (S::ReauthRequired, E::Deauthorized) => S::Unauthorized,
                (S::ReauthRequired, E::Disabled) => S::Disabled,
                (S::Disabled, E::Disabled) => return None,
                (S::Disabled, E::Enabled { has_grant: true }) => S::Active,
                (S::Disabled, E::Enabled { has_grant: false }) => S::Unauthorized,
                _ => return None,
            })
        };
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                assert_eq!(s.apply(e).ok(), expected(s, e), "{s:?} + {e:?}");
            }
        }
    }

    #[test]
    fn refused_transitions_explain_themselves() {
        let err = S::Disabled.apply(E::Authorized).unwrap_err();
        assert!(err.to_string().contains("enable it first"));
        let err = S::ReauthRequired.apply(E::RefreshStarted).unwrap_err();
        assert!(err.to_string().contains("authorized again"));
        let err = S::Unauthorized.apply(E::RefreshStarted).unwrap_err();
        assert!(err.to_string().contains("not been authorized"));
    }

    #[test]
    fn a_transient_failure_never_loses_the_grant() {
        let s = S::Active.apply(E::RefreshStarted).unwrap();
        assert_eq!(s.apply(E::RefreshFailedTransient).unwrap(), S::Active);
        assert!(S::Active.can_use_grant());
        assert!(!S::ReauthRequired.can_use_grant());
    }

    #[test]
    fn names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("bogus"), None);
    }
}
