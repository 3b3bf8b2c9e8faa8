//! Fresh access tokens, refreshed single-flight across tasks and processes.

use crate::{Engine, EngineError, LEASE_TTL_SECS, Result, problem_from};
use mailgate_core::account::MailAccount;
use mailgate_core::app::{OAuthApp, OAuthFlow};
use mailgate_core::event::EventKind;
use mailgate_core::grant::refresh_margin_secs;
use mailgate_core::metrics;
use mailgate_core::{AccountEvent, AccountId, Grant, Scopes, Secret, Timestamp};
use mailgate_oauth::client::TokenResponse;
use mailgate_oauth::{Failure, Remediation};
use mailgate_store::RefreshInDoubt;
use std::time::Duration;

/// A usable access token.
#[derive(Debug, Clone)]
pub struct FreshToken {
    pub access_token: Secret,
    pub expires_at: Option<Timestamp>,
    pub scopes: Scopes,
    /// Whether this call refreshed it.
    pub refreshed: bool,
    /// The validity it must keep to be handed out again: the refresh margin for its
    /// lifetime (`refresh_margin_secs`).
    pub margin_secs: i64,
}

/// How often a process waiting on another process's refresh looks again. A database has
/// no cross-process notification (SQLite), so this is a bounded poll.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// How often a refused token may force a refresh of one account: a mail server that keeps
/// refusing good tokens (a wrong audience, a disabled protocol) must not turn every send or
/// watcher round into a token request.
pub const FORCED_REFRESH_INTERVAL_SECS: i64 = 60;

/// The stored token if it stays valid for `min_validity` seconds; a token equal to
/// `refused` (one a mail server refused) never counts.
fn fresh_unless(
    grant: &Grant,
    now: Timestamp,
    min_validity: i64,
    refused: Option<&str>,
) -> Option<FreshToken> {
    let token = grant.access_token.as_ref()?;
    if refused.is_some_and(|r| r == token.expose()) {
        return None;
    }
    match grant.access_expires_at {
        Some(exp) if now.secs_until(exp) <= min_validity => None,
        exp => Some(FreshToken {
            access_token: token.clone(),
            expires_at: exp,
            scopes: grant.scopes.clone(),
            refreshed: false,
            margin_secs: min_validity,
        }),
    }
}

impl Engine {
    /// [`Engine::access_token`] without its in-memory cache (`cache.rs`).
    pub(crate) async fn access_token_uncached(&self, id: AccountId) -> Result<FreshToken> {
        let account = self.store.account(id).await?;
        self.access_token_of(account).await
    }

    /// [`Engine::access_token`] for an account the caller has just read (a command that
    /// looked it up by name), without reading it again and without the in-memory cache: for
    /// a process that asks once.
    pub async fn access_token_of(&self, account: MailAccount) -> Result<FreshToken> {
        let (account, app) = self.usable(account).await?;
        let mut attempt = 0;
        loop {
            match self.refresh_single_flight(&account, &app, None).await {
                // Retrying a refresh in doubt (or one that just timed out, which is now in
                // doubt) would only be refused again.
                Err(EngineError::OAuth(f))
                    if f.is_transient()
                        && !matches!(
                            f.remediation,
                            Remediation::RefreshInDoubt | Remediation::Timeout
                        )
                        && attempt < self.retries =>
                {
                    attempt += 1;
                    let delay = backoff(self.backoff, attempt)?;
                    tracing::warn!(account = %account.spec.name, attempt, ?delay, failure = %f, "refresh failed transiently; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// A new access token although the stored one has not expired: a mail server refused
    /// `refused` (a token mailgate handed out as valid), or an API caller asked for it
    /// (`None`: the stored token counts as refused). If another task already replaced the
    /// refused token, that newer token is returned without a request. Otherwise one
    /// refresh, single-flight like every refresh and at most once per
    /// [`FORCED_REFRESH_INTERVAL_SECS`] per account across processes; a permanent refusal
    /// moves the account to `reauth_required` at once, as in [`Engine::access_token`].
    pub async fn force_refresh(&self, id: AccountId, refused: Option<&str>) -> Result<FreshToken> {
        let (account, app) = self.usable_account(id).await?;
        let grant = self.store.grant(id).await?;
        let stored = grant
            .as_ref()
            .and_then(|g| g.access_token.as_ref())
            .map(|t| t.expose().to_owned());
        let refused = match (refused, stored) {
            (Some(r), Some(s)) if r != s => {
                // Someone refreshed since the refused token was handed out: use theirs.
                return self.access_token(id).await;
            }
            (Some(r), _) => r.to_owned(),
            (None, Some(s)) => s,
            (None, None) => return self.access_token(id).await,
        };
        let now = self.clock.now();
        // A holder name of its own, so even this process cannot take the lease again
        // before it expires: that expiry is the rate limit.
        let holder = format!("{}-{}", self.holder, mailgate_oauth::random::token(6)?);
        if !self
            .store
            .try_lease(
                &format!("forced-refresh:{id}"),
                &holder,
                FORCED_REFRESH_INTERVAL_SECS,
                now,
            )
            .await?
        {
            // Perhaps the forced refresh that took the limit is still running here (two
            // sends refused at once): wait for it, and use its token if it got one.
            drop(self.local_lock(id).lock().await);
            let replaced = self
                .store
                .grant(id)
                .await?
                .and_then(|g| g.access_token)
                .is_some_and(|t| t.expose() != refused);
            if replaced {
                return self.access_token(id).await;
            }
            return Err(EngineError::ForcedRefreshLimited {
                account: account.spec.name.to_string(),
                retry_after_secs: FORCED_REFRESH_INTERVAL_SECS,
            });
        }
        tracing::info!(account = %account.spec.name, "the stored access token was refused; refreshing before it expires");
        self.refresh_single_flight(&account, &app, Some(&refused))
            .await
    }

    /// The account and its app, if the account may use its grant.
    async fn usable_account(&self, id: AccountId) -> Result<(MailAccount, OAuthApp)> {
        self.usable(self.store.account(id).await?).await
    }

    async fn usable(&self, account: MailAccount) -> Result<(MailAccount, OAuthApp)> {
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
        Ok((account, app))
    }

    /// The minimum remaining validity a handed-out token must have.
    fn min_validity(grant: &Grant, issued_at: Option<Timestamp>) -> i64 {
        let lifetime = match (issued_at, grant.access_expires_at) {
            (Some(i), Some(e)) => i.secs_until(e),
            _ => 3600,
        };
        refresh_margin_secs(lifetime)
    }

    /// `refused`: a token a mail server refused, which does not count as fresh.
    async fn refresh_single_flight(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
        refused: Option<&str>,
    ) -> Result<FreshToken> {
        let id = account.id;
        let stored = self
            .store
            .versioned_grant(id)
            .await?
            .ok_or_else(|| without_grant(account))?;
        let min_validity = Self::min_validity(&stored.grant, stored.issued_at);
        let grant = stored.grant;
        if let Some(t) = fresh_unless(&grant, self.clock.now(), min_validity, refused) {
            return Ok(t);
        }
        // Tasks of this process queue here; the first one does the work, and the others
        // take its token rather than reading the grant again one after another.
        let local = self.local_lock(id);
        let waited_from = self.leader_seq(id);
        let _guard = local.lock().await;
        if let Some(t) = self.leader_token_since(id, waited_from, min_validity, refused) {
            return Ok(t);
        }
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
        // The grant was read just before the mutex; whoever refreshed meanwhile in this
        // process published its token (checked above), and one in another process is found
        // by the read under the lease. So the first round takes the lease without reading.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                let grant = self
                    .store
                    .grant(id)
                    .await?
                    .ok_or_else(|| without_grant(account))?;
                if let Some(t) = fresh_unless(&grant, self.clock.now(), min_validity, refused) {
                    return Ok(t);
                }
            }
            // The tasks queued behind the mutex wait for this: ahead of their queue.
            let attempt = async {
                if !self
                    .store
                    .try_lease(&lease, &self.holder, LEASE_TTL_SECS, self.clock.now())
                    .await?
                {
                    return Ok(None);
                }
                let result = self.refresh_holding_lease(account, app, refused).await;
                if let Ok(t) = &result {
                    self.publish_leader_token(id, t);
                }
                if let Err(e) = self.store.release_lease(&lease, &self.holder).await {
                    tracing::warn!(error = %e, "could not release the refresh lease; it expires by itself");
                }
                result.map(Some)
            };
            if let Some(token) = ahead_of_the_queue(attempt).await? {
                return Ok(token);
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
        refused: Option<&str>,
    ) -> Result<FreshToken> {
        let id = account.id;
        // Re-read under the lease: the previous holder may have just refreshed.
        let Some(stored) = self.store.versioned_grant(id).await? else {
            return Err(EngineError::NotUsable {
                account: account.spec.name.to_string(),
                state: "without a grant".into(),
                hint: String::new(),
            });
        };
        let (grant, version, doubt) = (stored.grant, stored.version, stored.doubt);
        let min_validity = Self::min_validity(&grant, stored.issued_at);
        if let Some(t) = fresh_unless(&grant, self.clock.now(), min_validity, refused) {
            return Ok(t);
        }
        let started = std::time::Instant::now();
        let result = match app.spec.flow {
            OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount => {
                self.app_only_token(account, app).await
            }
            OAuthFlow::AuthorizationCode | OAuthFlow::DeviceCode => match &grant.refresh_token {
                Some(rt) => self.refresh_once(account, app, version, doubt, rt).await?,
                None => Err(Failure::new("refresh", Remediation::NoRefreshToken)),
            },
        };
        metrics::token_request(
            app.spec.kind.as_str(),
            token_outcome(&result),
            started.elapsed(),
        );
        let now = self.clock.now();
        match result {
            Ok(tokens) => {
                let expires_at = tokens.expires_in.map(|s| now.plus_secs(s));
                let margin_secs = refresh_margin_secs(tokens.expires_in.unwrap_or(3600));
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
                            margin_secs,
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
                    margin_secs,
                })
            }
            // Logged once, when the request timed out, not on every refusal that follows.
            Err(f) if f.remediation == Remediation::RefreshInDoubt => Err(EngineError::OAuth(f)),
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

    /// Sends one refresh request with the stored refresh token, unless an earlier one is
    /// still in doubt. A request whose answer never arrived (a timeout, or a process that
    /// died waiting) may have rotated the token at the provider; sending the same token
    /// again while the provider may still be working on the first one is what makes a
    /// replay-detecting provider revoke the grant. So the request is recorded as in doubt
    /// in the grant row before it is sent, every process honours that until
    /// `refresh_not_before`, and only an answer clears it.
    ///
    /// `version` and `doubt` are the grant row's, as read under the lease.
    async fn refresh_once(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
        version: i64,
        doubt: RefreshInDoubt,
        refresh_token: &Secret,
    ) -> Result<std::result::Result<TokenResponse, Failure>> {
        let id = account.id;
        let now = self.clock.now();
        if let Some(not_before) = doubt.not_before.filter(|t| *t > now) {
            return Ok(Err(in_doubt_failure(doubt.last_sent_at, not_before)));
        }
        // The wait before this token may be sent again if the answer is lost: the request's
        // own timeout, then a backoff that grows with each unanswered request, so a provider
        // that was hung has long finished the first request before the second arrives.
        let wait = self.timeout + in_doubt_backoff(self.in_doubt_backoff, doubt.unanswered);
        let not_before = now.plus_secs(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 4) + 1);
        if !self
            .store
            .mark_refresh_sent(id, version, now, not_before)
            .await?
        {
            return Err(EngineError::BadState(
                "the grant changed during refresh (re-authorized meanwhile); try again",
            ));
        }
        let result = self.client.refresh(&app.spec, refresh_token).await;
        match &result {
            // Stored with the new tokens, which clears the doubt in the same statement.
            Ok(_) => Ok(result),
            Err(f) if f.remediation == Remediation::Timeout => {
                // Still a timeout to the caller, but in doubt: nobody sends this token
                // again before `not_before` (the next callers get `refresh_in_doubt`).
                tracing::warn!(account = %account.spec.name, until = not_before.0, "refresh timed out; the provider may have rotated the token, so it is not sent again before the backoff");
                Ok(Err(f.clone().with_detail(format!(
                    "the refresh timed out after {} s and may still have been processed (the provider may have rotated the token); it is not sent again before {not_before}",
                    self.timeout.as_secs(),
                ))))
            }
            Err(f) => {
                // An answer (or a failure before the request left): this one is settled.
                self.store.refresh_answered(id, version).await?;
                let refused_for_good = matches!(
                    f.remediation,
                    Remediation::InvalidGrant
                        | Remediation::GrantRevoked
                        | Remediation::GoogleInvalidGrant
                        | Remediation::ProviderInvalidGrant
                        | Remediation::RefreshTokenExpired
                );
                if refused_for_good && doubt.unanswered > 0 {
                    // An earlier request with this token went unanswered: the provider
                    // most likely rotated it then, and now sees this one as a replay.
                    let mut lost = f.clone();
                    lost.remediation = Remediation::RotationLostInOutage;
                    return Ok(Err(lost));
                }
                Ok(result)
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

/// How a token request ended, in the words of `/metrics`: the same split as the match in
/// `refresh_holding_lease` (transient failures keep the grant, the rest reject it).
fn token_outcome(
    result: &std::result::Result<TokenResponse, Failure>,
) -> metrics::TokenOutcome<'static> {
    match result {
        Ok(_) => metrics::TokenOutcome::Ok,
        Err(f) if f.remediation == Remediation::RefreshInDoubt || f.is_transient() => {
            metrics::TokenOutcome::Transient(f.remediation.code())
        }
        Err(f) => metrics::TokenOutcome::Permanent(f.remediation.code()),
    }
}

/// The refusal while an earlier refresh is in doubt: transient (the grant is kept), and
/// nothing was sent.
fn in_doubt_failure(sent_at: Option<Timestamp>, not_before: Timestamp) -> Failure {
    let since = sent_at.map(|t| format!(" sent at {t}")).unwrap_or_default();
    Failure::new("refresh", Remediation::RefreshInDoubt).with_detail(format!(
        "an earlier refresh{since} got no answer and may have rotated the token; not sent again before {not_before}"
    ))
}

/// How long to wait after the `unanswered`-th lost answer: doubling from `base`, at most an
/// hour (a provider hung for longer than that is an outage a person will look at).
fn in_doubt_backoff(base: Duration, unanswered: i64) -> Duration {
    let doublings = u32::try_from(unanswered.clamp(0, 6)).unwrap_or(6);
    base.saturating_mul(1 << doublings)
        .min(Duration::from_secs(3600))
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
                        margin_secs: min_validity,
                    }))
                } else {
                    Err(e)
                }
            }
        }
    }
}

fn without_grant(account: &MailAccount) -> EngineError {
    EngineError::NotUsable {
        account: account.spec.name.to_string(),
        state: "without a grant".into(),
        hint: " — authorize it first".into(),
    }
}

/// Runs `work` to its end on this thread, outside the scheduler's queue, where the runtime
/// has other workers to take that queue over (`serve`); a command's one-thread runtime
/// awaits it. For the refresh and its lease: after a commit, a burst of requests for the
/// account queues behind it, and each of its steps (a database statement, the token
/// request) would otherwise wait its turn behind those requests' tasks, every one of which
/// is waiting for it (issue 15: the expired-token burst, docs/benchmarks.md). Once per
/// attempt at the lease (one per refresh unless another process holds it), so the thread
/// hand-off `block_in_place` costs does not count.
///
/// The work is not cancelled when its caller stops waiting (a timeout, a client gone): a
/// refresh is bounded by the token request's timeout, and one dropped after its request
/// left would leave the refresh token in doubt for the backoff (`refresh_once`).
async fn ahead_of_the_queue<F: std::future::Future>(work: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| handle.block_on(work))
    } else {
        work.await
    }
}

/// Exponential backoff with ±25 % jitter, so many accounts do not retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Result<Duration> {
    let exp = base.saturating_mul(1 << attempt.min(6));
    let jitter_range = exp.as_millis() as u64 / 4;
    let r = u64::from(u32::from_le_bytes(mailgate_core::random::bytes::<4>()?));
    let jitter = if jitter_range == 0 {
        0
    } else {
        r % (2 * jitter_range)
    };
    Ok(Duration::from_millis(
        exp.as_millis() as u64 - jitter_range + jitter,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_doubt_backoff_doubles_per_lost_answer_up_to_an_hour() {
        let base = Duration::from_secs(120);
        assert_eq!(in_doubt_backoff(base, 0), base);
        assert_eq!(in_doubt_backoff(base, 1), Duration::from_secs(240));
        assert_eq!(in_doubt_backoff(base, 2), Duration::from_secs(480));
        assert_eq!(in_doubt_backoff(base, 9), Duration::from_secs(3600));
        assert_eq!(in_doubt_backoff(base, -3), base);
    }
}
