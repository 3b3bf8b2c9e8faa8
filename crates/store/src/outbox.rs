//! The durable outbox: messages accepted by the API wait here until an SMTP server has
//! taken them. Work is claimed with a lease in the row, so a crashed sender's message is
//! picked up again when the lease runs out, and two instances never send the same message.

use crate::{Result, Store, StoreError};
use mailgate_core::{AccountId, Timestamp};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// How many bytes of messages may wait in the outbox (queued or being sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxQuota {
    pub per_account_bytes: i64,
    pub total_bytes: i64,
}

/// A message to queue. `message` is taken by value: a large message is bound into SQL
/// without another copy.
pub struct NewOutboxMessage<'a> {
    pub account: AccountId,
    pub idempotency_key: Option<&'a str>,
    /// [`request_hash`] of the request that asked for it.
    pub request_hash: &'a str,
    pub recipients: &'a [String],
    pub message: Vec<u8>,
    pub message_id: &'a str,
}

/// What [`Store::enqueue`] did.
#[derive(Debug)]
pub enum Enqueued {
    /// A new outbox row.
    Created(OutboxItem),
    /// The idempotency key was used before by the same request: its first message.
    /// (Items come back without their bytes: `message` is empty.)
    Existing(OutboxItem),
    /// The idempotency key was used before by another request; nothing stored.
    KeyReused,
    /// Storing it would take the account past its quota; nothing stored.
    AccountQuotaFull { used: i64, quota: i64 },
    /// Storing it would take the whole outbox past its quota; nothing stored.
    TotalQuotaFull { used: i64, quota: i64 },
}

/// A SHA-256 (hex) over the parts of a request, each length-prefixed so that moving bytes
/// from one part to the next changes the hash.
pub fn request_hash(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    hex::encode(ctx.finish().as_ref())
}

/// What [`Store::release_claims_of`] let go of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReleasedClaims {
    pub outbox: u64,
    pub deliveries: u64,
    pub watch_leases: u64,
}

/// Bytes waiting (queued or being sent), of one account or of all. (The cast: PostgreSQL's
/// SUM of a BIGINT is a NUMERIC, which sqlx's Any driver cannot read.)
/// What a send came to, for [`Store::finish_outbox_with_event`].
#[derive(Debug, Clone, Copy)]
pub struct OutboxOutcome<'a> {
    pub status: OutboxStatus,
    pub error: Option<&'a str>,
    pub reply: Option<&'a str>,
    /// When a message put back in the queue is due again.
    pub next_attempt_at: Timestamp,
}

/// The event recorded with a send's outcome (`message.sent` / `message.failed`).
#[derive(Debug)]
pub struct OutboxEvent<'a> {
    pub kind: mailgate_core::event::EventKind,
    pub account: AccountId,
    pub message: &'a str,
    pub data: serde_json::Value,
}

/// The claim statement: the oldest due message, optionally of one `account` and never of
/// `skip_accounts`. `status IN ('queued', 'sending')` repeats the condition of the partial
/// indexes `outbox_pending` / `outbox_pending_account` (migration 0016) so the database
/// reads only pending rows: sent messages are kept, and without it every claim read the
/// outbox's whole history (a test checks the plan).
#[doc(hidden)]
pub fn claim_sql(account: Option<i64>, skip_accounts: &[i64]) -> String {
    // Account ids are integers: written into the statement, nothing else is.
    let mut filter = String::new();
    if let Some(a) = account {
        filter.push_str(&format!(" AND account_id = {a}"));
    }
    if !skip_accounts.is_empty() {
        let ids: Vec<String> = skip_accounts.iter().map(i64::to_string).collect();
        filter.push_str(&format!(" AND account_id NOT IN ({})", ids.join(",")));
    }
    format!(
        "UPDATE outbox SET status = 'sending', lease_holder = $1, lease_until = $2, attempts = attempts + 1
         WHERE id = (SELECT id FROM outbox WHERE status IN ('queued', 'sending') AND ((status = 'queued' AND next_attempt_at <= $3) OR (status = 'sending' AND lease_until < $3)){filter} ORDER BY id LIMIT 1)
         RETURNING {COLUMNS}"
    )
}

const USED_SQL: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS used FROM outbox WHERE status IN ('queued', 'sending')";

impl Store {
    /// Queues a message, in one statement that also checks both quotas, so concurrent sends
    /// cannot together pass a quota each passed alone. With an idempotency key already used
    /// for this account, returns the existing item (same request) or `KeyReused` (another
    /// request): the same key never sends twice.
    pub async fn enqueue(
        &self,
        new: NewOutboxMessage<'_>,
        quota: OutboxQuota,
        now: Timestamp,
    ) -> Result<Enqueued> {
        if let Some(found) = self
            .idempotent_replay(new.account, new.idempotency_key, new.request_hash)
            .await?
        {
            return Ok(found);
        }
        let recipients = serde_json::to_string(new.recipients)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let size = new.message.len() as i64;
        let sql = format!(
            "INSERT INTO outbox (account_id, idempotency_key, recipients, message, message_id, status, attempts, next_attempt_at, created_at, size, request_hash)
             SELECT $1, $2, $3, $4, $5, 'queued', 0, $6, $6, $7, $8
             WHERE ({USED_SQL} AND account_id = $1) + $7 <= $9 AND ({USED_SQL}) + $7 <= $10
             ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING {LIST_COLUMNS}"
        );
        // write_returning, not fetch_optional: the statement must run to its end so that a
        // commit the disk cannot hold is reported, not returned as a stored row.
        let row = self
            .write_returning(
                sqlx::query(&sql)
                    .bind(new.account.0)
                    .bind(new.idempotency_key.map(str::to_owned))
                    .bind(recipients)
                    .bind(new.message)
                    .bind(new.message_id.to_owned())
                    .bind(now.0)
                    .bind(size)
                    .bind(new.request_hash.to_owned())
                    .bind(quota.per_account_bytes)
                    .bind(quota.total_bytes),
            )
            .await?;
        // The item comes back without its bytes: the caller has them, and reading a large
        // message back would copy it a few more times (SQLite, the row, the Vec) for nothing.
        if let Some(r) = row {
            return Ok(Enqueued::Created(item_without_message(&r)?));
        }
        // Nothing inserted: the key was taken meanwhile, or a quota is full.
        if let Some(found) = self
            .idempotent_replay(new.account, new.idempotency_key, new.request_hash)
            .await?
        {
            return Ok(found);
        }
        let account_used: i64 = sqlx::query(&format!("{USED_SQL} AND account_id = $1"))
            .bind(new.account.0)
            .fetch_one(&self.pool)
            .await?
            .try_get("used")?;
        if account_used + size > quota.per_account_bytes {
            return Ok(Enqueued::AccountQuotaFull {
                used: account_used,
                quota: quota.per_account_bytes,
            });
        }
        let used: i64 = sqlx::query(USED_SQL)
            .fetch_one(&self.pool)
            .await?
            .try_get("used")?;
        Ok(Enqueued::TotalQuotaFull {
            used,
            quota: quota.total_bytes,
        })
    }

    /// The message an idempotency key already stands for, if any.
    async fn idempotent_replay(
        &self,
        account: AccountId,
        key: Option<&str>,
        request_hash: &str,
    ) -> Result<Option<Enqueued>> {
        let Some(key) = key else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {LIST_COLUMNS}, request_hash FROM outbox WHERE account_id = $1 AND idempotency_key = $2"
        ))
        .bind(account.0)
        .bind(key.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let stored: Option<String> = r.try_get("request_hash")?;
        // Rows queued before the hash was kept carry none: they match any request, as before.
        Ok(Some(match stored {
            Some(h) if h != request_hash => Enqueued::KeyReused,
            _ => Enqueued::Existing(item_without_message(&r)?),
        }))
    }

    pub async fn outbox_item(&self, id: i64) -> Result<OutboxItem> {
        let r = crate::fetch_or_not_found(
            sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE id = $1")).bind(id),
            &self.pool,
            "message",
            id,
        )
        .await?;
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
        self.claim_outbox_for(holder, lease_secs, now, None, &[])
            .await
    }

    /// Like [`Store::claim_outbox`], narrowed for parallel senders: with `account`, only that
    /// account's oldest due message (a sender reusing the account's SMTP session); and never
    /// one of `skip_accounts` (accounts already at their session cap). Oldest first per
    /// account, so one account's messages keep their order while it has one session.
    pub async fn claim_outbox_for(
        &self,
        holder: &str,
        lease_secs: i64,
        now: Timestamp,
        account: Option<i64>,
        skip_accounts: &[i64],
    ) -> Result<Option<OutboxItem>> {
        let sql = claim_sql(account, skip_accounts);
        let row = self.claim_row(&sql, holder, lease_secs, now).await?;
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
        self.write_guarded(
            sqlx::query(
                "UPDATE outbox SET lease_until = $1 WHERE id = $2 AND lease_holder = $3 AND status = 'sending'",
            )
            .bind(until.0)
            .bind(id)
            .bind(holder.to_owned()),
        )
        .await
    }

    /// Gives back `holder`'s claim on a message it claimed but did not start to send
    /// (`serve` stopping): queued again at once, the claim's attempt not counted. False if
    /// the claim was no longer theirs.
    pub async fn release_outbox_claim(&self, id: i64, holder: &str) -> Result<bool> {
        self.write_guarded(
            sqlx::query(
                "UPDATE outbox SET status = 'queued', lease_holder = NULL, lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND lease_holder = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(holder.to_owned()),
        )
        .await
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
        let outcome = OutboxOutcome {
            status,
            error,
            reply,
            next_attempt_at,
        };
        self.finish_outbox_with_event(id, holder, outcome, now, None)
            .await
    }

    /// Records the outcome of a send and, in the same transaction, its event (with the
    /// webhook deliveries the event triggers), only if `holder` still holds the lease: a
    /// crash cannot leave a `sent` message without its `message.sent`, and a sender that
    /// lost its claim records neither. One commit per message instead of two.
    pub async fn finish_outbox_with_event(
        &self,
        id: i64,
        holder: &str,
        outcome: OutboxOutcome<'_>,
        now: Timestamp,
        event: Option<&OutboxEvent<'_>>,
    ) -> Result<bool> {
        let result = async {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(
                "UPDATE outbox SET status = $1, last_error = $2, server_reply = COALESCE($3, server_reply), next_attempt_at = $4, sent_at = $5, lease_holder = NULL, lease_until = NULL WHERE id = $6 AND lease_holder = $7",
            )
            .bind(outcome.status.as_str())
            .bind(outcome.error.map(str::to_owned))
            .bind(outcome.reply.map(str::to_owned))
            .bind(outcome.next_attempt_at.0)
            .bind((outcome.status == OutboxStatus::Sent).then_some(now.0))
            .bind(id)
            .bind(holder.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if done && let Some(e) = event {
                crate::events::record_with(
                    &mut tx,
                    now,
                    e.kind,
                    None,
                    Some(e.account),
                    e.message,
                    Some(e.data.clone()),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(done)
        }
        .await;
        self.track_write(result)
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

    /// Lets go at once of what an earlier run of this instance held when it died: outbox
    /// claims, webhook delivery claims and `watch:<account>` leases whose holder starts with
    /// `holder_prefix` are made expired, so the running workers take them over now rather
    /// than after their lease time (up to two minutes). Only the caller can know that no
    /// live process holds that prefix.
    pub async fn release_claims_of(&self, holder_prefix: &str) -> Result<ReleasedClaims> {
        // substr, not LIKE: a prefix is compared as it is, without wildcards. `$1`: the prefix.
        const RELEASES: [&str; 3] = [
            "UPDATE outbox SET lease_until = 0 WHERE status = 'sending' AND substr(lease_holder, 1, length($1)) = $1",
            "UPDATE webhook_deliveries SET lease_until = 0 WHERE status = 'delivering' AND substr(lease_holder, 1, length($1)) = $1",
            "UPDATE leases SET expires_at = 0 WHERE substr(name, 1, 6) = 'watch:' AND substr(holder, 1, length($1)) = $1",
        ];
        let mut released = [0; 3];
        for (sql, count) in RELEASES.iter().zip(&mut released) {
            *count = sqlx::query(sql)
                .bind(holder_prefix.to_owned())
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        let [outbox, deliveries, watch_leases] = released;
        Ok(ReleasedClaims {
            outbox,
            deliveries,
            watch_leases,
        })
    }

    /// When the next queued message is due, if any.
    pub async fn next_outbox_due(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT MIN(CASE WHEN status = 'queued' THEN next_attempt_at ELSE lease_until END) AS t FROM outbox WHERE status IN ('queued', 'sending')")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?.map(Timestamp))
    }

    /// When the oldest message still waiting (queued or being sent) was accepted, for the
    /// `/metrics` gauge an alert watches ("outbox older than 15 minutes").
    pub async fn oldest_waiting_outbox(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT MIN(created_at) AS t FROM outbox WHERE status IN ('queued', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?.map(Timestamp))
    }
}
