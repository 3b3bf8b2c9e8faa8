//! Fresh access tokens, refreshed single-flight across tasks and processes.

use crate::{Engine, EngineError, LEASE_TTL_SECS, Result, problem_from};
use mailgate_core::account::MailAccount;
use mailgate_core::app::{OAuthApp, OAuthFlow};
use mailgate_core::event::EventKind;
use mailgate_core::grant::refresh_margin_secs;
use mailgate_core::{AccountEvent, AccountId, Grant, Scopes, Secret, Timestamp};
use mailgate_oauth::{Failure, Remediation};
use std::time::Duration;

/// A usable access token.
#[derive(Debug, Clone)]
pub struct FreshToken {
    pub access_token: Secret,
    pub expires_at: Option<Timestamp>,
    pub scopes: Scopes,
    /// Whether this call refreshed it.
    pub refreshed: bool,
}

/// How often a process waiting on another process's refresh looks again. A database has
/// no cross-process notification (SQLite), so this is a bounded poll.
const LEASE_POLL: Duration = Duration::from_millis(50);

fn fresh(grant: &Grant, now: Timestamp, min_validity: i64) -> Option<FreshToken> {
    let token = grant.access_token.as_ref()?;
    match grant.access_expires_at {
        Some(exp) if now.secs_until(exp) <= min_validity => None,
        exp => Some(FreshToken {
            access_token: token.clone(),
            expires_at: exp,
            scopes: grant.scopes.clone(),
            refreshed: false,
        }),
    }
}

impl Engine {
    /// A token valid for at least the refresh margin (max(5 min, 10 % of its lifetime)),
    /// refreshing first if needed. Concurrent callers share one refresh.
    pub async fn access_token(&self, id: AccountId) -> Result<FreshToken> {
        let account = self.store.account(id).await?;
        if !account.state.can_use_grant() {
            let hint = match &account.last_problem {
                Some(p) => format!(" — {} [{}]", p.remediation, p.code),
                None if account.state == mailgate_core::AccountState::Unauthorized => {
                    " — authorize it first".into()
                }
                None => String::new(),
            };
            return Err(EngineError::NotUsable {
                account: account.spec.name.to_string(),
                state: account.state.to_string(),
                hint,
            });
        }
        let app = self.store.app(account.spec.app_id).await?;
        let mut attempt = 0;
        loop {
            match self.refresh_single_flight(&account, &app).await {
                Err(EngineError::OAuth(f)) if f.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    let delay = backoff(self.backoff, attempt);
                    tracing::warn!(account = %account.spec.name, attempt, ?delay, failure = %f, "refresh failed transiently; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// The minimum remaining validity a handed-out token must have.
    fn min_validity(grant: &Grant, issued_at: Option<Timestamp>) -> i64 {
        let lifetime = match (issued_at, grant.access_expires_at) {
            (Some(i), Some(e)) => i.secs_until(e),
            _ => 3600,
        };
        refresh_margin_secs(lifetime)
    }

    async fn refresh_single_flight(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
    ) -> Result<FreshToken> {
        let id = account.id;
        let not_usable = || EngineError::NotUsable {
            account: account.spec.name.to_string(),
            state: "without a grant".into(),
            hint: " — authorize it first".into(),
        };
        let grant = self.store.grant(id).await?.ok_or_else(not_usable)?;
        let issued = self.store.grant_version(id).await?.and_then(|(_, i)| i);
        let min_validity = Self::min_validity(&grant, issued);
        if let Some(t) = fresh(&grant, self.clock.now(), min_validity) {
            return Ok(t);
        }
        // Tasks of this process queue here; the first one does the work.
        let local = self.local_lock(id);
        let _guard = local.lock().await;
        if let Some(t) = self.store_unsaved_refresh(id, min_validity).await? {
            return Ok(t);
        }
        // No refresh while the database cannot store its result (a full disk): a rotated
        // refresh token that is not stored is lost, and presenting the old one again may
        // make the provider revoke the whole grant. A small real write says when it can.
        if self.store.write_failure().is_some() {
            self.store.probe_write(self.clock.now()).await?;
        }
        let lease = format!("refresh:{id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * LEASE_TTL_SECS as u64);
        loop {
            let grant = self.store.grant(id).await?.ok_or_else(not_usable)?;
            if let Some(t) = fresh(&grant, self.clock.now(), min_validity) {
                return Ok(t);
            }
            if self
                .store
                .try_lease(&lease, &self.holder, LEASE_TTL_SECS, self.clock.now())
                .await?
            {
                let result = self.refresh_holding_lease(account, app).await;
                if let Err(e) = self.store.release_lease(&lease, &self.holder).await {
                    tracing::warn!(error = %e, "could not release the refresh lease; it expires by itself");
                }
                return result;
            }
            // Another process is refreshing: wait for it to finish, then use its token.
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::OAuth(
                    Failure::new("refresh", Remediation::Timeout)
                        .with_detail("another mailgate process held the refresh lease too long"),
                ));
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    async fn refresh_holding_lease(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
    ) -> Result<FreshToken> {
        let id = account.id;
        // Re-read under the lease: the previous holder may have just refreshed.
        let Some((version, issued)) = self.store.grant_version(id).await? else {
            return Err(EngineError::NotUsable {
                account: account.spec.name.to_string(),
                state: "without a grant".into(),
                hint: String::new(),
            });
        };
        let grant = self.store.grant(id).await?.ok_or(EngineError::BadState(
            "the grant disappeared during refresh",
        ))?;
        if let Some(t) = fresh(&grant, self.clock.now(), Self::min_validity(&grant, issued)) {
            return Ok(t);
        }
        let result = match app.spec.flow {
            OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount => {
                self.app_only_token(account, app).await
            }
            OAuthFlow::AuthorizationCode | OAuthFlow::DeviceCode => match &grant.refresh_token {
                Some(rt) => self.client.refresh(&app.spec, rt).await,
                None => Err(Failure::new("refresh", Remediation::NoRefreshToken)),
            },
        };
        let now = self.clock.now();
        match result {
            Ok(tokens) => {
                let expires_at = tokens.expires_in.map(|s| now.plus_secs(s));
                // Persist access and rotated refresh token together before handing either out.
                let unsaved = UnsavedRefresh {
                    version,
                    access_token: tokens.access_token.clone(),
                    expires_at,
                    issued_at: now,
                    refresh_token: tokens.refresh_token.clone(),
                    scopes: tokens.scope.clone(),
                };
                let stored = match self.store_refresh(id, &unsaved).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        // The provider has rotated the refresh token; the database cannot
                        // hold the new one (a full disk). Keep it here and use it, rather than
                        // lose it and present the old one, which a provider may take for a
                        // replay and answer by revoking the grant.
                        tracing::error!(account = %account.spec.name, error = %e, "a refreshed token could not be stored; keeping it in memory until the database accepts it");
                        self.unsaved_refreshes().insert(id, unsaved);
                        return Ok(FreshToken {
                            access_token: tokens.access_token,
                            expires_at,
                            scopes: tokens.scope.unwrap_or(grant.scopes),
                            refreshed: true,
                        });
                    }
                };
                if !stored {
                    return Err(EngineError::BadState(
                        "the grant changed during refresh (re-authorized meanwhile); try again",
                    ));
                }
                let rotated = if tokens.refresh_token.is_some() {
                    ", refresh token rotated"
                } else {
                    ""
                };
                let _ = self
                    .store
                    .record_event(
                        now,
                        EventKind::TokenRefreshed,
                        Some(app.id),
                        Some(id),
                        &format!("account {} token refreshed{rotated}", account.spec.name),
                    )
                    .await;
                tracing::info!(account = %account.spec.name, "access token refreshed");
                Ok(FreshToken {
                    access_token: tokens.access_token,
                    expires_at,
                    scopes: tokens.scope.unwrap_or(grant.scopes),
                    refreshed: true,
                })
            }
            Err(f) if f.is_transient() => {
                let _ = self
                    .store
                    .record_event(
                        now,
                        EventKind::TokenRefreshFailed,
                        Some(app.id),
                        Some(id),
                        &format!(
                            "account {} refresh failed, will retry: {} [{}]",
                            account.spec.name,
                            f.remediation.sentence(),
                            f.remediation.code()
                        ),
                    )
                    .await;
                Err(EngineError::OAuth(f))
            }
            Err(f) => {
                self.reject(account, app, &f).await?;
                Err(EngineError::OAuth(f))
            }
        }
    }

    /// A permanent failure: the account (or, for an expired client secret, every account
    /// of the app) needs re-authorization. The grant is kept for the record.
    async fn reject(&self, account: &MailAccount, app: &OAuthApp, f: &Failure) -> Result<()> {
        let now = self.clock.now();
        let problem = problem_from(f, now);
        tracing::warn!(account = %account.spec.name, code = f.remediation.code(), "grant rejected; re-authorization required");
        if f.remediation == Remediation::SecretExpired {
            self.store
                .reject_all_grants_of_app(app.id, &problem, now)
                .await?;
        } else {
            self.store
                .apply_account_event(account.id, AccountEvent::GrantRejected, Some(&problem), now)
                .await?;
        }
        Ok(())
    }

    /// Proactive refresh: every grant whose token is inside its refresh margin (or will be
    /// within `lookahead_secs`). Transient failures leave the account active; the next
    /// round retries. Returns how many were refreshed.
    pub async fn refresh_due(&self, lookahead_secs: i64) -> Result<usize> {
        let now = self.clock.now();
        // A token with the longest plausible margin (10 % of a day) is the widest window.
        let candidates = self
            .store
            .grants_expiring_before(now.plus_secs(lookahead_secs + 8_640))
            .await?;
        let mut refreshed = 0;
        for (id, expires_at, issued_at) in candidates {
            let lifetime = issued_at.map(|i| i.secs_until(expires_at)).unwrap_or(3600);
            if now.secs_until(expires_at) > refresh_margin_secs(lifetime) + lookahead_secs {
                continue;
            }
            match self.access_token(id).await {
                Ok(t) if t.refreshed => refreshed += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(account = %id, error = %e, "proactive refresh failed"),
            }
        }
        Ok(refreshed)
    }
}

/// A refresh the provider answered but the database could not store yet.
#[derive(Clone)]
pub(crate) struct UnsavedRefresh {
    /// The grant version it replaces: a grant re-authorized meanwhile is not overwritten.
    version: i64,
    access_token: Secret,
    expires_at: Option<Timestamp>,
    issued_at: Timestamp,
    refresh_token: Option<Secret>,
    scopes: Option<Scopes>,
}

impl Engine {
    fn unsaved_refreshes(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<AccountId, UnsavedRefresh>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn store_refresh(&self, id: AccountId, r: &UnsavedRefresh) -> Result<bool> {
        Ok(self
            .store
            .store_refreshed(
                id,
                r.version,
                &r.access_token,
                r.expires_at,
                r.issued_at,
                r.refresh_token.as_ref(),
                r.scopes.as_ref(),
            )
            .await?)
    }

    /// Before any refresh (under the account's local lock): a refresh kept in memory
    /// because the database could not store it is stored first. While it still cannot
    /// be, its access token is used as long as it is valid, and then no refresh happens
    /// at all: the only refresh token the provider still accepts is the unsaved one, and
    /// the stored one would be taken for a replay.
    async fn store_unsaved_refresh(
        &self,
        id: AccountId,
        min_validity: i64,
    ) -> Result<Option<FreshToken>> {
        let Some(pending) = self.unsaved_refreshes().get(&id).cloned() else {
            return Ok(None);
        };
        let version = pending.version;
        match self.store_refresh(id, &pending).await {
            Ok(stored) => {
                self.unsaved_refreshes().remove(&id);
                if stored {
                    tracing::info!(account = %id, "a refreshed token kept in memory is stored now");
                } else {
                    tracing::warn!(account = %id, version, "a refreshed token kept in memory was dropped: the grant changed meanwhile");
                }
                Ok(None)
            }
            Err(e) => {
                let still_valid = pending
                    .expires_at
                    .is_none_or(|exp| self.clock.now().secs_until(exp) > min_validity);
                if still_valid {
                    let scopes = match pending.scopes {
                        Some(s) => s,
                        // The provider kept the scopes: they are the stored grant's.
                        None => self
                            .store
                            .grant(id)
                            .await?
                            .map(|g| g.scopes)
                            .unwrap_or_default(),
                    };
                    Ok(Some(FreshToken {
                        access_token: pending.access_token,
                        expires_at: pending.expires_at,
                        scopes,
                        refreshed: false,
                    }))
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Exponential backoff with ±25 % jitter, so many accounts do not retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.min(6));
    let jitter_range = exp.as_millis() as u64 / 4;
    let r = mailgate_oauth::random::token(4)
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let jitter = if jitter_range == 0 {
        0
    } else {
        r % (2 * jitter_range)
    };
    Duration::from_millis(exp.as_millis() as u64 - jitter_range + jitter)
}
