//! The durable outbox: messages accepted by the API wait here until an SMTP server has
//! taken them. Work is claimed with a lease in the row, so a crashed sender's message is
//! picked up again when the lease runs out, and two instances never send the same message.

use crate::{Result, Store, StoreError};
use mailgate_core::{AccountId, Timestamp};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Queued,
    Sending,
    Sent,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => OutboxStatus::Queued,
            "sending" => OutboxStatus::Sending,
            "sent" => OutboxStatus::Sent,
            "failed" => OutboxStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("outbox.status: {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub account_id: AccountId,
    pub idempotency_key: Option<String>,
    pub recipients: Vec<String>,
    #[serde(skip)]
    pub message: Vec<u8>,
    pub message_id: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub server_reply: Option<String>,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, account_id, idempotency_key, recipients, message, message_id, status, attempts, next_attempt_at, last_error, server_reply, created_at, sent_at";

/// Every column but the message itself, for lists.
const LIST_COLUMNS: &str = "id, account_id, idempotency_key, recipients, message_id, status, attempts, next_attempt_at, last_error, server_reply, created_at, sent_at";

fn item(r: &AnyRow) -> Result<OutboxItem> {
    let mut it = item_without_message(r)?;
    it.message = r.try_get("message")?;
    Ok(it)
}

fn item_without_message(r: &AnyRow) -> Result<OutboxItem> {
    let recipients: String = r.try_get("recipients")?;
    let status: String = r.try_get("status")?;
    Ok(OutboxItem {
        id: r.try_get("id")?,
        account_id: AccountId(r.try_get("account_id")?),
        idempotency_key: r.try_get("idempotency_key")?,
        recipients: serde_json::from_str(&recipients)
            .map_err(|e| StoreError::Corrupt(format!("outbox.recipients: {e}")))?,
        message: Vec::new(),
        message_id: r.try_get("message_id")?,
        status: OutboxStatus::parse(&status)?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: Timestamp(r.try_get("next_attempt_at")?),
        last_error: r.try_get("last_error")?,
        server_reply: r.try_get("server_reply")?,
        created_at: Timestamp(r.try_get("created_at")?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(Timestamp),
    })
}

impl Store {
    /// Queues a message. With an idempotency key already used for this account, returns
    /// the existing item instead (and `false`): the same key never sends twice.
    pub async fn enqueue(
        &self,
        account: AccountId,
        idempotency_key: Option<&str>,
        recipients: &[String],
        message: &[u8],
        message_id: &str,
        now: Timestamp,
    ) -> Result<(OutboxItem, bool)> {
        let recipients =
            serde_json::to_string(recipients).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = format!(
            "INSERT INTO outbox (account_id, idempotency_key, recipients, message, message_id, status, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6)
             ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING {COLUMNS}"
        );
        let row = self
            .write_returning(
                sqlx::query(&sql)
                    .bind(account.0)
                    .bind(idempotency_key.map(str::to_owned))
                    .bind(recipients)
                    .bind(message.to_vec())
                    .bind(message_id.to_owned())
                    .bind(now.0),
            )
            .await?;
        match row {
            Some(r) => Ok((item(&r)?, true)),
            None => {
                let r = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM outbox WHERE account_id = $1 AND idempotency_key = $2"
                ))
                .bind(account.0)
                .bind(idempotency_key.map(str::to_owned))
                .fetch_one(&self.pool)
                .await?;
                Ok((item(&r)?, false))
            }
        }
    }

    pub async fn outbox_item(&self, id: i64) -> Result<OutboxItem> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "message",
                key: id.to_string(),
            })?;
        item(&r)
    }

    /// Claims the oldest due message (queued and due, or sending with an expired lease),
    /// in one statement, so concurrent senders never get the same one.
    pub async fn claim_outbox(
        &self,
        holder: &str,
        lease_secs: i64,
        now: Timestamp,
    ) -> Result<Option<OutboxItem>> {
        let sql = format!(
            "UPDATE outbox SET status = 'sending', lease_holder = $1, lease_until = $2, attempts = attempts + 1
             WHERE id = (SELECT id FROM outbox WHERE (status = 'queued' AND next_attempt_at <= $3) OR (status = 'sending' AND lease_until < $3) ORDER BY id LIMIT 1)
             RETURNING {COLUMNS}"
        );
        let row = self
            .write_returning(
                sqlx::query(&sql)
                    .bind(holder.to_owned())
                    .bind(now.0 + lease_secs)
                    .bind(now.0),
            )
            .await?;
        row.as_ref().map(item).transpose()
    }

    /// Extends `holder`'s claim on a message being sent (the heartbeat); false if the claim
    /// is no longer theirs.
    pub async fn renew_outbox_lease(
        &self,
        id: i64,
        holder: &str,
        until: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = $1 WHERE id = $2 AND lease_holder = $3 AND status = 'sending'",
        )
        .bind(until.0)
        .bind(id)
        .bind(holder.to_owned())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from);
        Ok(self.track_write(done)?.rows_affected() == 1)
    }

    /// Records the outcome of a send, only if `holder` still holds the lease.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_outbox(
        &self,
        id: i64,
        holder: &str,
        status: OutboxStatus,
        error: Option<&str>,
        reply: Option<&str>,
        next_attempt_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET status = $1, last_error = $2, server_reply = COALESCE($3, server_reply), next_attempt_at = $4, sent_at = $5, lease_holder = NULL, lease_until = NULL WHERE id = $6 AND lease_holder = $7",
        )
        .bind(status.as_str())
        .bind(error.map(str::to_owned))
        .bind(reply.map(str::to_owned))
        .bind(next_attempt_at.0)
        .bind((status == OutboxStatus::Sent).then_some(now.0))
        .bind(id)
        .bind(holder.to_owned())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from);
        Ok(self.track_write(done)?.rows_affected() == 1)
    }

    /// Queues a failed message again, now, with its attempts counted from zero (after the
    /// cause was fixed, e.g. the account was authorized again). Only `failed` messages can
    /// be retried: a queued or sending one is on its way, a sent one would be sent twice.
    pub async fn retry_outbox(&self, id: i64, now: Timestamp) -> Result<OutboxItem> {
        let sql = format!(
            "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $1, last_error = NULL, lease_holder = NULL, lease_until = NULL
             WHERE id = $2 AND status = 'failed' RETURNING {COLUMNS}"
        );
        let row = self
            .write_returning(sqlx::query(&sql).bind(now.0).bind(id))
            .await?;
        match row {
            Some(r) => item(&r),
            None => {
                let current = self.outbox_item(id).await?;
                Err(StoreError::InUse(format!(
                    "message {id} is {}; only failed messages can be retried",
                    current.status.as_str()
                )))
            }
        }
    }

    /// Messages newest first (without their bytes), optionally of some accounts only and
    /// in one status; with `before`, only those with a smaller id (the next page).
    pub async fn list_outbox(
        &self,
        accounts: &[AccountId],
        status: Option<OutboxStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>> {
        // Account ids are numbers from the token, never user text: one placeholder each.
        let in_accounts = if accounts.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..accounts.len()).map(|i| format!("${}", i + 4)).collect();
            format!(" AND account_id IN ({})", marks.join(", "))
        };
        let sql = format!(
            "SELECT {LIST_COLUMNS} FROM outbox WHERE ($1 IS NULL OR status = $1) AND id < $2{in_accounts} ORDER BY id DESC LIMIT $3"
        );
        let mut q = sqlx::query(&sql)
            .bind(status.map(|s| s.as_str()))
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit);
        for a in accounts {
            q = q.bind(a.0);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(item_without_message)
            .collect()
    }

    /// When the next queued message is due, if any.
    pub async fn next_outbox_due(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT MIN(CASE WHEN status = 'queued' THEN next_attempt_at ELSE lease_until END) AS t FROM outbox WHERE status IN ('queued', 'sending')")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?.map(Timestamp))
    }
}
