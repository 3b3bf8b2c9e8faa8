//! Grants: an account's sealed access and refresh tokens, stored and dropped.

use crate::{Result, Store, StoreError, apply_in_tx, record_for_account, rows};
use mailgate_core::account::Problem;
use mailgate_core::event::EventKind;
use mailgate_core::{AccountId, AccountState, Grant, Timestamp};
use sqlx::Row;

impl Store {
    /// Stores (replaces) an account's grant; access and refresh token are written together.
    pub async fn put_grant(
        &self,
        grant: &Grant,
        access_issued_at: Option<Timestamp>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.replace_grant_in_tx(&mut tx, grant, access_issued_at)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the account's grant inside the caller's transaction, tokens sealed.
    pub(crate) async fn replace_grant_in_tx(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        grant: &Grant,
        access_issued_at: Option<Timestamp>,
    ) -> Result<()> {
        let id = grant.account_id.0;
        let access = grant
            .access_token
            .as_ref()
            .map(|s| self.seal("grants", "access_token", id, s))
            .transpose()?;
        let refresh = grant
            .refresh_token
            .as_ref()
            .map(|s| self.seal("grants", "refresh_token", id, s))
            .transpose()?;
        let identity = serde_json::to_string(&grant.identity)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("DELETE FROM grants WHERE account_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO grants (account_id, access_token, access_expires_at, access_issued_at, refresh_token, scopes, identity, authorized_at, authorized_by, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)",
        )
        .bind(id)
        .bind(access)
        .bind(grant.access_expires_at.map(|t| t.0))
        .bind(access_issued_at.map(|t| t.0))
        .bind(refresh)
        .bind(grant.scopes.to_string())
        .bind(identity)
        .bind(grant.authorized_at.0)
        .bind(grant.authorized_by.clone())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn grant(&self, id: AccountId) -> Result<Option<Grant>> {
        Ok(self.versioned_grant(id).await?.map(|v| v.grant))
    }

    /// The grant with its version, the access token's issue time and the refresh requests
    /// in doubt, in one read (the refresh path needs them all, and each statement is a round
    /// trip to the database).
    pub async fn versioned_grant(&self, id: AccountId) -> Result<Option<VersionedGrant>> {
        let Some(row) = sqlx::query("SELECT account_id, access_token, access_expires_at, refresh_token, scopes, identity, authorized_at, authorized_by, version, access_issued_at, refresh_sent_at, refresh_unanswered, refresh_not_before FROM grants WHERE account_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let access: Option<String> = row.try_get("access_token")?;
        let refresh: Option<String> = row.try_get("refresh_token")?;
        let mut grant = rows::grant(&row)?;
        grant.access_token = access
            .map(|s| self.open_sealed("grants", "access_token", id.0, &s))
            .transpose()?;
        grant.refresh_token = refresh
            .map(|s| self.open_sealed("grants", "refresh_token", id.0, &s))
            .transpose()?;
        Ok(Some(VersionedGrant {
            grant,
            version: row.try_get("version")?,
            issued_at: row
                .try_get::<Option<i64>, _>("access_issued_at")?
                .map(Timestamp),
            doubt: crate::authz::refresh_doubt(&row)?,
        }))
    }
}

/// A grant as read with [`Store::versioned_grant`].
#[derive(Debug, Clone)]
pub struct VersionedGrant {
    pub grant: Grant,
    /// Bumped by every write of the tokens; a refresh stores its result only if it is
    /// unchanged (`Store::store_refreshed`).
    pub version: i64,
    /// When the stored access token was issued (its lifetime decides the refresh margin).
    pub issued_at: Option<Timestamp>,
    /// Refresh requests sent with the stored refresh token and not answered.
    pub doubt: crate::RefreshInDoubt,
}

/// Deletes the account's grant and pending authorizations because where its tokens would go
/// changed (`why` says what),
/// and moves the account to `unauthorized` with that as its problem and an event. A disabled
/// account stays disabled (it comes back `unauthorized` when enabled). Returns the state.
pub(crate) async fn drop_grant_in_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: AccountId,
    why: &str,
    now: Timestamp,
) -> Result<AccountState> {
    let dropped = sqlx::query("DELETE FROM grants WHERE account_id = $1")
        .bind(id.0)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    // An authorization started under the old endpoints is not finished under the new ones
    // (its code and PKCE verifier would go to the new token endpoint).
    sqlx::query("DELETE FROM oauth_states WHERE account_id = $1")
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT state, name, app_id FROM accounts WHERE id = $1")
        .bind(id.0)
        .fetch_one(&mut **tx)
        .await?;
    let state: String = row.try_get("state")?;
    let state = AccountState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("accounts.state: {state:?}")))?;
    if matches!(
        state,
        AccountState::Active | AccountState::Refreshing | AccountState::ReauthRequired
    ) {
        let problem = Problem {
            code: GRANT_DROPPED.to_owned(),
            remediation: why.to_owned(),
            detail: None,
            at: now,
        };
        return apply_in_tx(
            tx,
            id,
            mailgate_core::AccountEvent::Deauthorized,
            Some(&problem),
            now,
        )
        .await;
    }
    if dropped > 0 {
        record_for_account(tx, now, EventKind::AccountStateChanged, id, &row, |name| {
            format!("account {name} is {state}: {why} [{GRANT_DROPPED}]")
        })
        .await?;
    }
    Ok(state)
}

/// The problem code of an account whose grant was dropped by [`drop_grant_in_tx`].
pub const GRANT_DROPPED: &str = "grant_dropped_endpoints_changed";
