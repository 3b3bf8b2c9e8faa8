//! Authorization state, grants and leases: the storage half of the OAuth engine.

use crate::{Result, Store, apply_in_tx, record, record_for_account};
use mailgate_core::account::Problem;
use mailgate_core::event::EventKind;
use mailgate_core::{
    AccountEvent, AccountId, AccountState, AppId, Grant, Scopes, Secret, Timestamp,
};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A started authorization, waiting for its callback. One-time: taking it deletes it.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    pub account_id: AccountId,
    /// Who started it (admin user, `cli`), bound so a callback completes only their request.
    pub initiator: String,
    pub verifier: Secret,
    pub nonce: String,
    pub redirect_uri: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Refresh requests sent with a grant's current refresh token whose answers never arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefreshInDoubt {
    pub last_sent_at: Option<Timestamp>,
    /// How many; more than zero means the provider may have rotated the token already.
    pub unanswered: i64,
    /// No refresh with the same token before this time.
    pub not_before: Option<Timestamp>,
}

impl Store {
    /// Stores a pending authorization under the SHA-256 of its state value.
    pub async fn put_oauth_state(&self, state_hash: &str, p: &PendingAuthorization) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Expired requests are useless; drop them while we are writing anyway.
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(p.created_at.0)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "INSERT INTO oauth_states (state_hash, account_id, initiator, verifier, nonce, redirect_uri, created_at, expires_at) VALUES ($1, $2, $3, '', $4, $5, $6, $7) RETURNING id",
        )
        .bind(state_hash.to_owned())
        .bind(p.account_id.0)
        .bind(p.initiator.clone())
        .bind(p.nonce.clone())
        .bind(p.redirect_uri.clone())
        .bind(p.created_at.0)
        .bind(p.expires_at.0)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.seal_into(&mut tx, "oauth_states", "verifier", id, &p.verifier)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes (deletes and returns) a pending authorization: a second callback with the
    /// same state finds nothing. Expired requests are returned too, so the caller can say
    /// "expired" rather than "unknown".
    pub async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<PendingAuthorization>> {
        let Some(row) = self
            .write_returning(
                sqlx::query(
                    "DELETE FROM oauth_states WHERE state_hash = $1 RETURNING id, account_id, initiator, verifier, nonce, redirect_uri, created_at, expires_at",
                )
                .bind(state_hash.to_owned()),
            )
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let sealed: String = row.try_get("verifier")?;
        Ok(Some(PendingAuthorization {
            account_id: AccountId(row.try_get("account_id")?),
            initiator: row.try_get("initiator")?,
            verifier: self.open_sealed("oauth_states", "verifier", id, &sealed)?,
            nonce: row.try_get("nonce")?,
            redirect_uri: row.try_get("redirect_uri")?,
            created_at: Timestamp(row.try_get("created_at")?),
            expires_at: Timestamp(row.try_get("expires_at")?),
        }))
    }

    /// Whether a pending authorization for the account is still waiting (for `mailgate
    /// authorize`, which waits for the browser).
    pub async fn pending_authorizations(&self, id: AccountId, now: Timestamp) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM oauth_states WHERE account_id = $1 AND expires_at >= $2",
        )
        .bind(id.0)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores a new grant and makes the account active, in one transaction: either the
    /// account works with the new grant or nothing changed.
    pub async fn complete_authorization(
        &self,
        grant: &Grant,
        access_issued_at: Timestamp,
        now: Timestamp,
    ) -> Result<AccountState> {
        let id = grant.account_id.0;
        let mut tx = self.begin_write().await?;
        self.replace_grant_in_tx(&mut tx, grant, Some(access_issued_at))
            .await?;
        let who = grant
            .identity
            .username
            .clone()
            .unwrap_or_else(|| "an app-only identity".into());
        let row = sqlx::query("SELECT name, app_id FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        record_for_account(
            &mut tx,
            now,
            EventKind::AccountAuthorized,
            grant.account_id,
            &row,
            |name| {
                format!(
                    "account {name} authorized as {who} by {}",
                    grant.authorized_by
                )
            },
        )
        .await?;
        let state = apply_in_tx(
            &mut tx,
            grant.account_id,
            AccountEvent::Authorized,
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Persists a refresh: the new access token and, if the provider rotated it, the new
    /// refresh token, in one statement, and only if nobody else refreshed since `version`
    /// was read. Returns false when the version moved (the caller re-reads).
    #[allow(clippy::too_many_arguments)]
    pub async fn store_refreshed(
        &self,
        id: AccountId,
        version: i64,
        access: &Secret,
        expires_at: Option<Timestamp>,
        issued_at: Timestamp,
        refresh: Option<&Secret>,
        scopes: Option<&Scopes>,
    ) -> Result<bool> {
        let access = self.seal("grants", "access_token", id.0, access)?;
        let refresh = refresh
            .map(|r| self.seal("grants", "refresh_token", id.0, r))
            .transpose()?;
        self.write_guarded(
            sqlx::query(
                "UPDATE grants SET access_token = $1, access_expires_at = $2, access_issued_at = $3, refresh_token = COALESCE($4, refresh_token), scopes = COALESCE($5, scopes), version = version + 1, refresh_sent_at = NULL, refresh_unanswered = 0, refresh_not_before = NULL WHERE account_id = $6 AND version = $7",
            )
            .bind(access)
            .bind(expires_at.map(|t| t.0))
            .bind(issued_at.0)
            .bind(refresh)
            .bind(scopes.map(|s| s.to_string()))
            .bind(id.0)
            .bind(version),
        )
        .await
    }

    /// The refresh requests of this grant whose answers never arrived (a timeout, or a
    /// process that died waiting). `None` without a grant. (The refresh path reads them
    /// with the grant: [`Store::versioned_grant`].)
    pub async fn refresh_in_doubt(&self, id: AccountId) -> Result<Option<RefreshInDoubt>> {
        Ok(self.versioned_grant(id).await?.map(|v| v.doubt))
    }

    /// Records, before a refresh request is sent, that it is in doubt until its answer is
    /// handled: if the process dies or the request times out, nobody sends the same refresh
    /// token again before `not_before`. Guarded by the grant version (false when it moved).
    pub async fn mark_refresh_sent(
        &self,
        id: AccountId,
        version: i64,
        sent_at: Timestamp,
        not_before: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE grants SET refresh_sent_at = $1, refresh_unanswered = refresh_unanswered + 1, refresh_not_before = $2 WHERE account_id = $3 AND version = $4",
        )
        .bind(sent_at.0)
        .bind(not_before.0)
        .bind(id.0)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The refresh request sent under `version` was answered (refused, or failed before it
    /// reached the provider): it is no longer in doubt. Earlier unanswered requests stay
    /// counted, since one of them may have rotated the token.
    pub async fn refresh_answered(&self, id: AccountId, version: i64) -> Result<()> {
        sqlx::query(
            "UPDATE grants SET refresh_unanswered = CASE WHEN refresh_unanswered > 0 THEN refresh_unanswered - 1 ELSE 0 END, refresh_not_before = NULL WHERE account_id = $1 AND version = $2",
        )
        .bind(id.0)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims the named lease for `ttl_secs` if it is free, expired, or already ours.
    /// Works across processes sharing the database; this is what makes refresh
    /// single-flight, not an in-process mutex.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
        now: Timestamp,
    ) -> Result<bool> {
        let row = self
            .write_returning(
                sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.expires_at < $4 OR leases.holder = excluded.holder
             RETURNING holder",
                )
                .bind(name.to_owned())
                .bind(holder.to_owned())
                .bind(now.0 + ttl_secs)
                .bind(now.0),
            )
            .await?;
        Ok(row.is_some())
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name.to_owned())
            .bind(holder.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether anyone holds the lease now.
    pub async fn lease_held(&self, name: &str, now: Timestamp) -> Result<bool> {
        let row = sqlx::query("SELECT holder FROM leases WHERE name = $1 AND expires_at >= $2")
            .bind(name.to_owned())
            .bind(now.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// When each account's access token expires (accounts without a grant are absent).
    pub async fn token_expiries(
        &self,
    ) -> Result<std::collections::HashMap<AccountId, Option<Timestamp>>> {
        let rows =
            sqlx::query("SELECT account_id, access_expires_at, access_issued_at FROM grants")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| token_times(r).map(|(account, expires, _)| (account, expires)))
            .collect()
    }

    /// Accounts whose access token expires before `before` and may be refreshed.
    pub async fn grants_expiring_before(
        &self,
        before: Timestamp,
    ) -> Result<Vec<(AccountId, Timestamp, Option<Timestamp>)>> {
        let rows = sqlx::query(
            "SELECT g.account_id, g.access_expires_at, g.access_issued_at FROM grants g JOIN accounts a ON a.id = g.account_id
             WHERE a.state IN ('active', 'refreshing') AND g.refresh_token IS NOT NULL AND g.access_expires_at IS NOT NULL AND g.access_expires_at < $1
             ORDER BY g.access_expires_at",
        )
        .bind(before.0)
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            // `access_expires_at IS NOT NULL` in the query: every row has one.
            if let (account, Some(expires), issued) = token_times(r)? {
                due.push((account, expires, issued));
            }
        }
        Ok(due)
    }

    /// Moves every active account of an app to `reauth_required` with `problem` (an
    /// expired client secret breaks them all at once).
    pub async fn reject_all_grants_of_app(
        &self,
        app: AppId,
        problem: &Problem,
        now: Timestamp,
    ) -> Result<Vec<AccountId>> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = sqlx::query("SELECT id FROM accounts WHERE app_id = $1 AND state IN ('active', 'refreshing') ORDER BY id")
            .bind(app.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<std::result::Result<_, _>>()?;
        for id in &ids {
            apply_in_tx(
                &mut tx,
                AccountId(*id),
                AccountEvent::GrantRejected,
                Some(problem),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ids.into_iter().map(AccountId).collect())
    }

    /// Records that a secret-expiry warning at `days` was raised, so it is raised once.
    /// Returns false if that (or a closer) warning was already raised.
    pub async fn mark_secret_warning(
        &self,
        app: AppId,
        days: i64,
        message: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE apps SET secret_warned_days = $1 WHERE id = $2 AND (secret_warned_days IS NULL OR secret_warned_days > $1)")
            .bind(days)
            .bind(app.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        record(
            &mut tx,
            now,
            EventKind::SecretExpiring,
            Some(app),
            None,
            message,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Clears the warning marker (a new secret was stored).
    pub async fn reset_secret_warning(&self, app: AppId) -> Result<()> {
        sqlx::query("UPDATE apps SET secret_warned_days = NULL WHERE id = $1")
            .bind(app.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many instances hold a live `instance:` lease (watchers share the mailboxes
    /// among them).
    pub async fn live_instances(&self, now: Timestamp) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM leases WHERE substr(name, 1, 9) = 'instance:' AND expires_at >= $1",
        )
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Renews, in one statement, every `watch:<account>` lease `holder` holds (an inbound
    /// watcher's), and returns their names: a lease missing from the answer was taken over
    /// by another instance. One write per instance per interval, however many mailboxes it
    /// watches.
    pub async fn renew_watch_leases(
        &self,
        holder: &str,
        ttl_secs: i64,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE leases SET expires_at = $1 WHERE substr(name, 1, 6) = 'watch:' AND holder = $2 RETURNING name",
        )
        .bind(now.0 + ttl_secs)
        .bind(holder.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("name")?))
            .collect()
    }
}

/// A `grants` row's account, its access token's expiry and when that token was issued.
fn token_times(r: &AnyRow) -> Result<(AccountId, Option<Timestamp>, Option<Timestamp>)> {
    let at = |column: &str| -> Result<Option<Timestamp>> {
        Ok(r.try_get::<Option<i64>, _>(column)?.map(Timestamp))
    };
    Ok((
        AccountId(r.try_get("account_id")?),
        at("access_expires_at")?,
        at("access_issued_at")?,
    ))
}

/// The in-doubt columns of a `grants` row read with them.
pub(crate) fn refresh_doubt(row: &sqlx::any::AnyRow) -> Result<RefreshInDoubt> {
    Ok(RefreshInDoubt {
        last_sent_at: row
            .try_get::<Option<i64>, _>("refresh_sent_at")?
            .map(Timestamp),
        unanswered: row.try_get("refresh_unanswered")?,
        not_before: row
            .try_get::<Option<i64>, _>("refresh_not_before")?
            .map(Timestamp),
    })
}
