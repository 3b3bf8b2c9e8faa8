//! Mail accounts: create, read, change, remove, and state transitions (`apply_in_tx`).

use crate::{
    Result, Store, StoreError, drop_grant_in_tx, ensure_name_free, exists, record,
    record_for_account, record_with, rows, unique,
};
use mailgate_core::account::{AccountSpec, MailAccount, Problem};
use mailgate_core::event::EventKind;
use mailgate_core::{AccountId, AccountState, AppId, Timestamp};
use sqlx::Row;

impl Store {
    pub async fn create_account(&self, spec: &AccountSpec, now: Timestamp) -> Result<MailAccount> {
        let mut tx = self.begin_write().await?;
        ensure_name_free(&mut tx, "accounts", "account", spec.name.as_str(), None).await?;
        if !exists(&mut tx, "SELECT id FROM apps WHERE id = $1", spec.app_id.0).await? {
            return Err(StoreError::NotFound {
                what: "app",
                key: spec.app_id.to_string(),
            });
        }
        let state = if spec.enabled {
            AccountState::Unauthorized
        } else {
            AccountState::Disabled
        };
        let q = sqlx::query(
            "INSERT INTO accounts (name, description, enabled, mailbox, shared_mailbox, aliases, app_id, inbound_protocol, inbound_host, inbound_port, inbound_tls, outbound_host, outbound_port, outbound_tls, from_name, reply_to, signature, on_received, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20) RETURNING id",
        );
        let row = rows::bind_account(q, spec)
            .bind(state.as_str())
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique(e, "account", spec.name.as_str()))?;
        let id = AccountId(row.try_get("id")?);
        rows::write_account_delegate(&mut tx, id, spec).await?;
        record(
            &mut tx,
            now,
            EventKind::AccountCreated,
            Some(spec.app_id),
            Some(id),
            &format!("account {} ({}) created", spec.name, spec.mailbox),
        )
        .await?;
        tx.commit().await?;
        self.account(id).await
    }

    pub async fn account(&self, id: AccountId) -> Result<MailAccount> {
        let row = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {} FROM accounts WHERE id = $1",
                rows::ACCOUNT_COLUMNS
            ))
            .bind(id.0),
            &self.pool,
            "account",
            id,
        )
        .await?;
        rows::account(&row)
    }

    pub async fn find_account(&self, key: &str) -> Result<MailAccount> {
        let row = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {} FROM accounts WHERE name = $1 OR CAST(id AS TEXT) = $1",
                rows::ACCOUNT_COLUMNS
            ))
            .bind(key.trim()),
            &self.pool,
            "account",
            key,
        )
        .await?;
        rows::account(&row)
    }

    pub async fn list_accounts(&self) -> Result<Vec<MailAccount>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM accounts ORDER BY name",
            rows::ACCOUNT_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::account).collect()
    }

    /// Replaces the account's settings; enabling or disabling goes through the state machine.
    pub async fn update_account(
        &self,
        id: AccountId,
        spec: &AccountSpec,
        now: Timestamp,
    ) -> Result<MailAccount> {
        let current = self.account(id).await?;
        let mut tx = self.begin_write().await?;
        ensure_name_free(
            &mut tx,
            "accounts",
            "account",
            spec.name.as_str(),
            Some(id.0),
        )
        .await?;
        if !exists(&mut tx, "SELECT id FROM apps WHERE id = $1", spec.app_id.0).await? {
            return Err(StoreError::NotFound {
                what: "app",
                key: spec.app_id.to_string(),
            });
        }
        let has_grant = exists(
            &mut tx,
            "SELECT account_id FROM grants WHERE account_id = $1",
            id.0,
        )
        .await?;
        // A grant belongs to the app it came through: under another app its refresh token
        // would go to that app's token endpoint. Moving the account drops it.
        let app_changed = spec.app_id != current.spec.app_id;
        let mut current_state = current.state;
        if app_changed {
            current_state = drop_grant_in_tx(
                &mut tx,
                id,
                "the account moved to another app, so the grant obtained through the old one was dropped; authorize the account again",
                now,
            )
            .await?;
        }
        // A grant is the signed-in person's: a new delegate (or none) must sign in itself, or
        // mailgate would go on opening the mailbox as someone no longer named.
        let same_person = |a: &Option<mailgate_core::EmailAddress>,
                           b: &Option<mailgate_core::EmailAddress>| match (
            a, b,
        ) {
            (Some(a), Some(b)) => a.same_mailbox(b.as_str()),
            (None, None) => true,
            _ => false,
        };
        let delegate_changed = !same_person(&spec.delegate, &current.spec.delegate);
        if delegate_changed && !app_changed {
            current_state = drop_grant_in_tx(
                &mut tx,
                id,
                "the account's delegate (who signs in for it) changed, so the grant of the previous one was dropped; authorize the account again as the new delegate",
                now,
            )
            .await?;
        }
        let has_grant = has_grant && !app_changed && !delegate_changed;
        let state = match (current.spec.enabled, spec.enabled) {
            (true, false) => current_state.apply(mailgate_core::AccountEvent::Disabled),
            (false, true) => {
                current_state.apply(mailgate_core::AccountEvent::Enabled { has_grant })
            }
            _ => Ok(current_state),
        }
        .map_err(|e| StoreError::InUse(e.to_string()))?;
        let q = sqlx::query(
            "UPDATE accounts SET name = $1, description = $2, enabled = $3, mailbox = $4, shared_mailbox = $5, aliases = $6, app_id = $7, inbound_protocol = $8, inbound_host = $9, inbound_port = $10, inbound_tls = $11, outbound_host = $12, outbound_port = $13, outbound_tls = $14, from_name = $15, reply_to = $16, signature = $17, on_received = $18, state = $19, updated_at = $20 WHERE id = $21",
        );
        rows::bind_account(q, spec)
            .bind(state.as_str())
            .bind(now.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, "account", spec.name.as_str()))?;
        rows::write_account_delegate(&mut tx, id, spec).await?;
        record(
            &mut tx,
            now,
            EventKind::AccountUpdated,
            Some(spec.app_id),
            Some(id),
            &format!("account {} updated", spec.name),
        )
        .await?;
        if state != current_state {
            record(
                &mut tx,
                now,
                EventKind::AccountStateChanged,
                Some(spec.app_id),
                Some(id),
                &format!(
                    "account {} is now {} (was {})",
                    spec.name, state, current_state
                ),
            )
            .await?;
        }
        tx.commit().await?;
        self.account(id).await
    }

    /// Removes the account and its grant.
    pub async fn remove_account(&self, id: AccountId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM grants WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM proxy_passwords WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        let row = crate::fetch_or_not_found(
            sqlx::query("DELETE FROM accounts WHERE id = $1 RETURNING name, app_id").bind(id.0),
            &mut *tx,
            "account",
            id,
        )
        .await?;
        record_for_account(&mut tx, now, EventKind::AccountRemoved, id, &row, |name| {
            format!("account {name} removed")
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a state-machine event to an account and records the result, its problem
    /// (or clears it) and an event, in one transaction. Returns the new state.
    pub async fn apply_account_event(
        &self,
        id: AccountId,
        event: mailgate_core::AccountEvent,
        problem: Option<&Problem>,
        now: Timestamp,
    ) -> Result<AccountState> {
        let mut tx = self.begin_write().await?;
        let state = apply_in_tx(&mut tx, id, event, problem, now).await?;
        tx.commit().await?;
        Ok(state)
    }
}

/// The state transition, its problem and its event, inside the caller's transaction.
pub(crate) async fn apply_in_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: AccountId,
    event: mailgate_core::AccountEvent,
    problem: Option<&Problem>,
    now: Timestamp,
) -> Result<AccountState> {
    let row = crate::fetch_or_not_found(
        sqlx::query("SELECT state, name, app_id FROM accounts WHERE id = $1").bind(id.0),
        &mut **tx,
        "account",
        id,
    )
    .await?;
    let current: String = row.try_get("state")?;
    let name: String = row.try_get("name")?;
    let app_id: i64 = row.try_get("app_id")?;
    let current = AccountState::parse(&current)
        .ok_or_else(|| StoreError::Corrupt(format!("accounts.state: {current:?}")))?;
    let next = current
        .apply(event)
        .map_err(|e| StoreError::InUse(e.to_string()))?;
    sqlx::query("UPDATE accounts SET state = $1, problem_code = $2, problem_remediation = $3, problem_detail = $4, problem_at = $5, updated_at = $6 WHERE id = $7")
        .bind(next.as_str())
        .bind(problem.map(|p| p.code.clone()))
        .bind(problem.map(|p| p.remediation.clone()))
        .bind(problem.and_then(|p| p.detail.clone()))
        .bind(problem.map(|p| p.at.0))
        .bind(now.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    if next != current || problem.is_some() {
        let kind = if next == AccountState::ReauthRequired {
            EventKind::AccountReauthRequired
        } else {
            EventKind::AccountStateChanged
        };
        let msg = match problem {
            Some(p) => format!(
                "account {name} is {next} (was {current}): {} [{}]",
                p.remediation, p.code
            ),
            None => format!("account {name} is {next} (was {current})"),
        };
        let data = problem.map(|p| {
            serde_json::json!({
                "state": next.as_str(),
                "previous_state": current.as_str(),
                "problem": { "code": p.code, "remediation": p.remediation, "detail": p.detail },
            })
        });
        record_with(tx, now, kind, Some(AppId(app_id)), Some(id), &msg, data).await?;
    }
    Ok(next)
}
