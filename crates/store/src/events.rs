//! The event log: every state change is recorded in the transaction that makes it, with
//! the webhook deliveries it triggers.

use crate::{Result, Store, rows, webhooks};
use mailgate_core::event::{Event, EventKind};
use mailgate_core::{AccountId, AppId, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

impl Store {
    pub async fn events(&self, account: Option<AccountId>, limit: i64) -> Result<Vec<Event>> {
        let rows = match account {
            Some(a) => sqlx::query("SELECT id, at, kind, app_id, account_id, message FROM events WHERE account_id = $1 ORDER BY id DESC LIMIT $2").bind(a.0).bind(limit).fetch_all(&self.pool).await?,
            None => sqlx::query("SELECT id, at, kind, app_id, account_id, message FROM events ORDER BY id DESC LIMIT $1").bind(limit).fetch_all(&self.pool).await?,
        };
        rows.iter().map(rows::event).collect()
    }

    /// The newest events of these kinds, newest first.
    pub async fn events_of_kinds(&self, kinds: &[EventKind], limit: i64) -> Result<Vec<Event>> {
        let mut all = Vec::new();
        for kind in kinds {
            let rows = sqlx::query("SELECT id, at, kind, app_id, account_id, message FROM events WHERE kind = $1 ORDER BY id DESC LIMIT $2")
                .bind(kind.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                all.push(rows::event(r)?);
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.id));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }

    pub async fn record_event(
        &self,
        now: Timestamp,
        kind: EventKind,
        app: Option<AppId>,
        account: Option<AccountId>,
        message: &str,
    ) -> Result<()> {
        self.record_event_with(now, kind, app, account, message, None)
            .await
    }

    /// [`record_event`](Self::record_event) with structured data for the webhooks the
    /// event triggers (e.g. the outbox id and the server's reply of `message.sent`).
    pub async fn record_event_with(
        &self,
        now: Timestamp,
        kind: EventKind,
        app: Option<AppId>,
        account: Option<AccountId>,
        message: &str,
        data: Option<serde_json::Value>,
    ) -> Result<()> {
        let result = async {
            let mut tx = self.begin_write().await?;
            record_with(&mut tx, now, kind, app, account, message, data).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.track_write(result)
    }
}

pub(crate) async fn record(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now: Timestamp,
    kind: EventKind,
    app: Option<AppId>,
    account: Option<AccountId>,
    message: &str,
) -> Result<()> {
    record_with(tx, now, kind, app, account, message, None).await
}

/// Records `kind` about account `id`, whose row `account` holds its `name` and `app_id`,
/// inside the caller's transaction; `describe` makes the event's sentence from the name.
pub(crate) async fn record_for_account(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now: Timestamp,
    kind: EventKind,
    id: AccountId,
    account: &AnyRow,
    describe: impl FnOnce(&str) -> String,
) -> Result<()> {
    let name: String = account.try_get("name")?;
    let app_id: i64 = account.try_get("app_id")?;
    record(
        tx,
        now,
        kind,
        Some(AppId(app_id)),
        Some(id),
        &describe(&name),
    )
    .await
}

/// Records an event and, in the same transaction, the webhook deliveries it triggers.
/// `data` goes into the webhook body beside the event's sentence (`description`).
pub(crate) async fn record_with(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now: Timestamp,
    kind: EventKind,
    app: Option<AppId>,
    account: Option<AccountId>,
    message: &str,
    data: Option<serde_json::Value>,
) -> Result<()> {
    if let Some(hook) = mailgate_core::webhook::WebhookEvent::for_event(kind) {
        let mut data = match data {
            Some(serde_json::Value::Object(m)) => serde_json::Value::Object(m),
            _ => serde_json::json!({}),
        };
        data["description"] = serde_json::Value::String(message.to_owned());
        webhooks::fan_out(tx, hook, app, account, data, now).await?;
    }
    // Who asked for this change, when a CLI command or an HTTP request is running it.
    let actor = crate::audit::current();
    sqlx::query(
        "INSERT INTO events (at, kind, app_id, account_id, message, actor, source) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now.0)
    .bind(kind.as_str())
    .bind(app.map(|a| a.0))
    .bind(account.map(|a| a.0))
    .bind(message.to_owned())
    .bind(actor.as_ref().map(|a| a.name.clone()))
    .bind(actor.and_then(|a| a.source))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
