//! Webhook subscriptions, their deliveries and the delivery log.
//!
//! A delivery row is written in the same transaction as whatever caused it (an event of
//! the log, a received message), so a crash can delay a webhook but never lose it. The
//! deliverer claims rows with a lease in the row, like the outbox.

use crate::{Result, Store, StoreError, record};
use mailgate_core::event::EventKind;
use mailgate_core::webhook::{Webhook, WebhookEvent};
use mailgate_core::{AccountId, AppId, HttpUrl, Secret, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

/// How long a delivery keeps being retried after it was created (or redelivered).
pub const RETRY_WINDOW_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivering,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => DeliveryStatus::Pending,
            "delivering" => DeliveryStatus::Delivering,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "webhook_deliveries.status: {other:?}"
                )));
            }
        })
    }
}

/// One delivery, as the log shows it (the payload only when claimed for sending).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The row id, for `…/deliveries/{id}/redeliver`.
    pub id: i64,
    /// Sent as `X-Mailgate-Delivery`; the same on every attempt.
    pub delivery_id: String,
    pub webhook_id: i64,
    pub event: String,
    pub event_id: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub retry_until: Timestamp,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    #[serde(skip)]
    pub payload: String,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: Timestamp,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// A subscription's recent deliveries at a glance, for the admin list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliverySummary {
    pub delivered: i64,
    /// Waiting for an attempt or being sent right now.
    pub pending: i64,
    pub failed: i64,
    /// The receiver's answer to the subscription's latest attempt (`None`: no answer, see
    /// `last_error`, or no attempt yet).
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<Timestamp>,
}

/// How an attempt ended, as the deliverer reports it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `None`: delivered (2xx). `Some(t)`: retry at `t` (if within the window; else failed).
    pub retry_at: Option<Timestamp>,
}

const WEBHOOK_COLUMNS: &str = "id, account_id, url, events, description, enabled, created_at";
const DELIVERY_COLUMNS: &str = "id, delivery_id, webhook_id, event, event_id, payload, status, attempts, next_attempt_at, retry_until, last_status, last_error, created_at, delivered_at";

fn webhook(r: &AnyRow) -> Result<Webhook> {
    let url: String = r.try_get("url")?;
    let events: String = r.try_get("events")?;
    let events: Vec<String> = serde_json::from_str(&events)
        .map_err(|e| StoreError::Corrupt(format!("webhooks.events: {e}")))?;
    Ok(Webhook {
        id: r.try_get("id")?,
        account_id: r.try_get::<Option<i64>, _>("account_id")?.map(AccountId),
        url: HttpUrl::parse(&url).map_err(|e| StoreError::Corrupt(format!("webhooks.url: {e}")))?,
        events: events
            .iter()
            .map(|e| WebhookEvent::parse(e))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::Corrupt(format!("webhooks.events: {e}")))?,
        description: r.try_get("description")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

fn delivery(r: &AnyRow) -> Result<Delivery> {
    let status: String = r.try_get("status")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        delivery_id: r.try_get("delivery_id")?,
        webhook_id: r.try_get("webhook_id")?,
        event: r.try_get("event")?,
        event_id: r.try_get("event_id")?,
        status: DeliveryStatus::parse(&status)?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: Timestamp(r.try_get("next_attempt_at")?),
        retry_until: Timestamp(r.try_get("retry_until")?),
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        created_at: Timestamp(r.try_get("created_at")?),
        delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(Timestamp),
        payload: r.try_get("payload")?,
    })
}

/// A random id with a prefix (`evt_…`, `dlv_…`): unguessable, unique. Without randomness
/// the event is not queued (the error propagates) rather than given a guessable id.
fn random_id(prefix: &str) -> Result<String> {
    Ok(mailgate_core::random::prefixed_id(prefix, 12)?)
}

/// Who an event is about, for the payload.
async fn subject(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    app: Option<AppId>,
    account: Option<AccountId>,
) -> Result<(Option<Value>, Option<Value>)> {
    let account_json = match account {
        Some(id) => row_summary(tx, "accounts", &["name", "mailbox", "state"], id.0).await?,
        None => None,
    };
    let app_json = match app {
        Some(id) => row_summary(tx, "apps", &["name"], id.0).await?,
        None => None,
    };
    Ok((app_json, account_json))
}

/// `{"id": …, "<column>": "…", …}` of row `id` of `table` with the text columns named, or
/// `None` if the row is gone. `table` and the columns are names from this file, never input.
async fn row_summary(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    text_columns: &[&str],
    id: i64,
) -> Result<Option<Value>> {
    let sql = format!(
        "SELECT id, {} FROM {table} WHERE id = $1",
        text_columns.join(", ")
    );
    let Some(r) = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await? else {
        return Ok(None);
    };
    let mut summary = serde_json::Map::new();
    summary.insert("id".into(), json!(r.try_get::<i64, _>("id")?));
    for column in text_columns {
        summary.insert((*column).into(), json!(r.try_get::<String, _>(*column)?));
    }
    Ok(Some(Value::Object(summary)))
}

/// Writes one delivery per enabled subscription that wants `event` for this account (or
/// every account), inside the caller's transaction. Returns how many.
pub(crate) async fn fan_out(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event: WebhookEvent,
    app: Option<AppId>,
    account: Option<AccountId>,
    data: Value,
    now: Timestamp,
) -> Result<usize> {
    let subs = sqlx::query(
        "SELECT id, events FROM webhooks WHERE enabled = 1 AND (account_id IS NULL OR account_id = $1)",
    )
    .bind(account.map(|a| a.0))
    .fetch_all(&mut **tx)
    .await?;
    let wanted: Vec<i64> = subs
        .iter()
        .filter_map(|r| {
            let events: String = r.try_get("events").ok()?;
            let events: Vec<String> = serde_json::from_str(&events).ok()?;
            events
                .iter()
                .any(|e| e == event.as_str())
                .then(|| r.try_get("id").ok())
                .flatten()
        })
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let event_id = random_id("evt")?;
    let (app_json, account_json) = subject(tx, app, account).await?;
    let mut body = json!({
        "id": event_id,
        "type": event.as_str(),
        "created_at": now.rfc3339(),
        "data": data,
    });
    if let Some(a) = account_json {
        body["account"] = a;
    }
    if let Some(a) = app_json {
        body["app"] = a;
    }
    let payload = body.to_string();
    for webhook_id in &wanted {
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, event_id, payload, status, attempts, next_attempt_at, retry_until, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6)",
        )
        .bind(random_id("dlv")?)
        .bind(*webhook_id)
        .bind(event.as_str())
        .bind(event_id.clone())
        .bind(payload.clone())
        .bind(now.0)
        .bind(now.0 + RETRY_WINDOW_SECS)
        .execute(&mut **tx)
        .await?;
    }
    Ok(wanted.len())
}

impl Store {
    /// Adds a subscription with its signing secret (sealed like every secret).
    pub async fn create_webhook(
        &self,
        account: Option<AccountId>,
        url: &HttpUrl,
        events: &[WebhookEvent],
        description: &str,
        secret: &Secret,
        now: Timestamp,
    ) -> Result<Webhook> {
        let mut tx = self.begin_write().await?;
        if let Some(a) = account {
            let exists = sqlx::query("SELECT id FROM accounts WHERE id = $1")
                .bind(a.0)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "account",
                    key: a.to_string(),
                });
            }
        }
        let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
        let row = sqlx::query(
            "INSERT INTO webhooks (account_id, url, events, secret, description, enabled, created_at)
             VALUES ($1, $2, $3, NULL, $4, 1, $5) RETURNING id",
        )
        .bind(account.map(|a| a.0))
        .bind(url.as_str().to_owned())
        .bind(serde_json::to_string(&names).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(description.to_owned())
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.seal_into(&mut tx, "webhooks", "secret", id, secret)
            .await?;
        record(
            &mut tx,
            now,
            EventKind::WebhookCreated,
            None,
            account,
            &format!("webhook {id} to {} for {}", url, names.join(", ")),
        )
        .await?;
        tx.commit().await?;
        self.webhook(id).await
    }

    pub async fn webhook(&self, id: i64) -> Result<Webhook> {
        let r = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
            ))
            .bind(id),
            &self.pool,
            "webhook",
            id,
        )
        .await?;
        webhook(&r)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(webhook)
        .collect()
    }

    /// The signing secret, for the deliverer only.
    pub async fn webhook_secret(&self, id: i64) -> Result<Secret> {
        let r = crate::fetch_or_not_found(
            sqlx::query("SELECT secret FROM webhooks WHERE id = $1").bind(id),
            &self.pool,
            "webhook",
            id,
        )
        .await?;
        let stored: Option<String> = r.try_get("secret")?;
        let stored =
            stored.ok_or_else(|| StoreError::Corrupt("webhooks.secret is empty".into()))?;
        self.open_sealed("webhooks", "secret", id, &stored)
    }

    /// Changes a subscription's target, events, description and whether it is enabled. A
    /// disabled subscription queues nothing new and its pending deliveries wait.
    pub async fn update_webhook(
        &self,
        id: i64,
        url: &HttpUrl,
        events: &[WebhookEvent],
        description: &str,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Webhook> {
        let mut tx = self.begin_write().await?;
        let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
        let row = crate::fetch_or_not_found(sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, description = $3, enabled = $4 WHERE id = $5 RETURNING account_id",
        )
        .bind(url.as_str().to_owned())
        .bind(serde_json::to_string(&names).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(description.to_owned())
        .bind(i64::from(enabled))
        .bind(id), &mut *tx, "webhook", id).await?;
        let account = row.try_get::<Option<i64>, _>("account_id")?.map(AccountId);
        let state = if enabled { "enabled" } else { "disabled" };
        record(
            &mut tx,
            now,
            EventKind::WebhookUpdated,
            None,
            account,
            &format!("webhook {id} to {url} for {} ({state})", names.join(", ")),
        )
        .await?;
        tx.commit().await?;
        self.webhook(id).await
    }

    /// Replaces a subscription's signing secret (after a leak, or on a schedule).
    pub async fn rotate_webhook_secret(
        &self,
        id: i64,
        secret: &Secret,
        now: Timestamp,
    ) -> Result<()> {
        let hook = self.webhook(id).await?;
        let mut tx = self.begin_write().await?;
        self.seal_into(&mut tx, "webhooks", "secret", id, secret)
            .await?;
        record(
            &mut tx,
            now,
            EventKind::WebhookUpdated,
            None,
            hook.account_id,
            &format!("webhook {id}: new signing secret"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a subscription and its deliveries.
    pub async fn delete_webhook(&self, id: i64, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let gone = crate::fetch_or_not_found(
            sqlx::query("DELETE FROM webhooks WHERE id = $1 RETURNING account_id, url").bind(id),
            &mut *tx,
            "webhook",
            id,
        )
        .await?;
        let account = gone.try_get::<Option<i64>, _>("account_id")?.map(AccountId);
        let url: String = gone.try_get("url")?;
        record(
            &mut tx,
            now,
            EventKind::WebhookRemoved,
            None,
            account,
            &format!("webhook {id} to {url} removed"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the oldest due delivery (pending and due, or delivering with an expired
    /// lease) in one statement, with its subscription's URL.
    pub async fn claim_delivery(
        &self,
        holder: &str,
        lease_secs: i64,
        now: Timestamp,
    ) -> Result<Option<(Delivery, HttpUrl)>> {
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'delivering', lease_holder = $1, lease_until = $2, attempts = attempts + 1
             WHERE id = (SELECT id FROM webhook_deliveries WHERE ((status = 'pending' AND next_attempt_at <= $3) OR (status = 'delivering' AND lease_until < $3))
                         AND webhook_id IN (SELECT id FROM webhooks WHERE enabled = 1) ORDER BY next_attempt_at, id LIMIT 1)
             RETURNING {DELIVERY_COLUMNS}"
        );
        let row = self.claim_row(&sql, holder, lease_secs, now).await?;
        let Some(row) = row else { return Ok(None) };
        let d = delivery(&row)?;
        let hook = self.webhook(d.webhook_id).await?;
        Ok(Some((d, hook.url)))
    }

    /// Logs an attempt and records its outcome, only if `holder` still holds the lease.
    /// A retry past the delivery's window fails it for good.
    pub async fn finish_delivery(
        &self,
        id: i64,
        holder: &str,
        outcome: &AttemptOutcome,
        now: Timestamp,
    ) -> Result<DeliveryStatus> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT retry_until FROM webhook_deliveries WHERE id = $1 AND lease_holder = $2",
        )
        .bind(id)
        .bind(holder.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // The lease expired and someone else took the delivery over.
            return Ok(DeliveryStatus::Delivering);
        };
        let retry_until = Timestamp(row.try_get("retry_until")?);
        let (status, next) = match outcome.retry_at {
            None => (DeliveryStatus::Delivered, now),
            Some(t) if t.0 <= retry_until.0 => (DeliveryStatus::Pending, t),
            Some(_) => (DeliveryStatus::Failed, now),
        };
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery, at, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(now.0)
        .bind(outcome.status_code.map(i64::from))
        .bind(outcome.error.clone())
        .bind(outcome.duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, last_status = $3, last_error = $4, delivered_at = $5, lease_holder = NULL, lease_until = NULL WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(next.0)
        .bind(outcome.status_code.map(i64::from))
        .bind(outcome.error.clone())
        .bind((status == DeliveryStatus::Delivered).then_some(now.0))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(status)
    }

    /// When the next delivery is due (or a lease runs out), if any.
    pub async fn next_delivery_due(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT MIN(CASE WHEN status = 'pending' THEN next_attempt_at ELSE lease_until END) AS t FROM webhook_deliveries WHERE status IN ('pending', 'delivering')")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?.map(Timestamp))
    }

    /// The newest deliveries of a subscription, newest first, with their attempts.
    pub async fn deliveries(
        &self,
        webhook_id: i64,
        limit: i64,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = delivery(r)?;
            let attempts = self.attempts(d.id).await?;
            out.push((d, attempts));
        }
        Ok(out)
    }

    /// Per subscription: deliveries created since `since` (and every one still pending,
    /// however old) by status, and its latest attempt. Subscriptions without any are absent.
    pub async fn delivery_summaries(
        &self,
        since: Timestamp,
    ) -> Result<std::collections::HashMap<i64, DeliverySummary>> {
        let mut out: std::collections::HashMap<i64, DeliverySummary> = Default::default();
        let counts = sqlx::query(
            "SELECT webhook_id,
                    SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END) AS delivered,
                    SUM(CASE WHEN status IN ('pending', 'delivering') THEN 1 ELSE 0 END) AS pending,
                    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed
             FROM webhook_deliveries
             WHERE created_at >= $1 OR status IN ('pending', 'delivering')
             GROUP BY webhook_id",
        )
        .bind(since.0)
        .fetch_all(&self.pool)
        .await?;
        for r in &counts {
            let s = out.entry(r.try_get("webhook_id")?).or_default();
            s.delivered = r.try_get("delivered")?;
            s.pending = r.try_get("pending")?;
            s.failed = r.try_get("failed")?;
        }
        let latest = sqlx::query(
            "SELECT d.webhook_id, a.at, a.status_code, a.error
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery
             WHERE a.id IN (SELECT MAX(a2.id) FROM webhook_attempts a2
                            JOIN webhook_deliveries d2 ON d2.id = a2.delivery
                            GROUP BY d2.webhook_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &latest {
            let s = out.entry(r.try_get("webhook_id")?).or_default();
            s.last_status = r.try_get("status_code")?;
            s.last_error = r.try_get("error")?;
            s.last_attempt_at = Some(Timestamp(r.try_get("at")?));
        }
        Ok(out)
    }

    /// One delivery with its attempts and payload.
    pub async fn delivery(&self, id: i64) -> Result<(Delivery, Vec<Attempt>)> {
        let r = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
            ))
            .bind(id),
            &self.pool,
            "delivery",
            id,
        )
        .await?;
        let d = delivery(&r)?;
        let attempts = self.attempts(d.id).await?;
        Ok((d, attempts))
    }

    async fn attempts(&self, delivery: i64) -> Result<Vec<Attempt>> {
        sqlx::query(
            "SELECT at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery = $1 ORDER BY id",
        )
        .bind(delivery)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Attempt {
                at: Timestamp(r.try_get("at")?),
                status_code: r.try_get("status_code")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
            })
        })
        .collect()
    }

    /// Sends a delivery again (same delivery id, same payload) with a fresh retry window.
    /// A delivery being sent right now is left alone.
    pub async fn redeliver(&self, id: i64, now: Timestamp) -> Result<Delivery> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, retry_until = $2 WHERE id = $3 AND status <> 'delivering'",
        )
        .bind(now.0)
        .bind(now.0 + RETRY_WINDOW_SECS)
        .bind(id)
        .execute(&self.pool)
        .await?;
        let (d, _) = self.delivery(id).await?;
        if done.rows_affected() == 0 && d.status == DeliveryStatus::Delivering {
            return Err(StoreError::InUse(format!(
                "delivery {id} is being sent right now; try again when this attempt has ended"
            )));
        }
        Ok(d)
    }
}
