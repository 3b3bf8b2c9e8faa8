//! The outbox worker in `serve`: claims due messages (a lease in the row), sends each over
//! the account's SMTP, and records sent / retry with backoff / failed. A crash mid-send
//! leaves the lease to expire and the message is claimed again; SMTP servers de-duplicate
//! nothing, so the window for a double send is from the end of the message's data to the
//! write of `sent` that follows DATA's 250 (QUIT comes after that write). Delivery is
//! therefore at-least-once across a crash in that window.
//!
//! While the database cannot store writes (a full disk) the worker claims nothing, and an
//! outcome it could not record holds the worker until it is recorded: a message whose
//! `sent` was not written keeps its claim and is never sent again in a loop.

use crate::retry::{backoff, jitter_roll};
use mailgate_core::event::EventKind;
use mailgate_core::log_limit::LogLimit;
use mailgate_core::{Clock, SystemClock, Timestamp};
use mailgate_grants::Engine;
use mailgate_store::{OutboxItem, OutboxStatus, Store};
use std::sync::Arc;
use std::time::Duration;

/// After this many attempts a message is failed for good.
pub const MAX_ATTEMPTS: i64 = 10;
/// How long a claim lasts: longer than one SMTP conversation with its timeouts.
const LEASE_SECS: i64 = 120;
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// While the database cannot store writes: the first wait before trying again, doubled up
/// to the cap. The cap keeps sending within seconds of space returning, while a failing
/// store sees a handful of attempts, not thousands.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Store failures repeat on every attempt: one line per kind per half minute.
static STORE_LOG: std::sync::LazyLock<LogLimit> = std::sync::LazyLock::new(|| LogLimit::new(30));

pub struct Worker {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub tls: mailgate_mail::TlsSettings,
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the webhook deliverer after `message.sent` / `message.failed`.
    pub deliveries: Arc<tokio::sync::Notify>,
    /// First retry delay; doubles with each attempt, up to an hour.
    pub retry_base_secs: i64,
    pub holder: String,
}

impl Worker {
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut store_wait = STORE_RETRY_FIRST;
        loop {
            // Claim nothing while writes fail: the claim, and the `sent` after it, might not
            // be stored, and an unrecorded send is sent again. A small real write tells when
            // space is back.
            let writable = self.store.write_failure().is_none()
                || self.store.probe_write(SystemClock.now()).await.is_ok();
            if writable {
                loop {
                    let now = SystemClock.now();
                    match self.store.claim_outbox(&self.holder, LEASE_SECS, now).await {
                        Ok(Some(item)) => self.deliver(item, &stop).await,
                        Ok(None) => break,
                        Err(e) => {
                            store_warn("claim", &e, "outbox: cannot claim work");
                            break;
                        }
                    }
                    if *stop.borrow() {
                        return;
                    }
                }
            }
            let now = SystemClock.now();
            let wait = if self.store.write_failure().is_some() {
                let wait = store_wait;
                store_wait = (store_wait * 2).min(STORE_RETRY_MAX);
                wait
            } else {
                store_wait = STORE_RETRY_FIRST;
                match self.store.next_outbox_due().await {
                    Ok(Some(t)) => Duration::from_secs(now.secs_until(t).clamp(0, 30) as u64),
                    _ => Duration::from_secs(30),
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn deliver(&self, item: OutboxItem, stop: &tokio::sync::watch::Receiver<bool>) {
        let now = SystemClock.now();
        let account = match self.store.account(item.account_id).await {
            Ok(a) => a,
            Err(e) => {
                self.finish(
                    &item,
                    OutboxStatus::Failed,
                    Some(&e.to_string()),
                    None,
                    now,
                    stop,
                )
                .await;
                return;
            }
        };
        let send = mailgate_mail::send::send(
            &self.engine,
            &self.tls,
            &account,
            &item.recipients,
            &item.message,
            SMTP_TIMEOUT,
        );
        // Heartbeat: a long conversation (a large message on a slow link) keeps its claim,
        // so no other instance takes the message over while it is being sent.
        let result = tokio::select! {
            r = send => r,
            lost = self.heartbeat(item.id) => {
                tracing::warn!(message = item.id, "outbox: {lost}; leaving the message to the new holder");
                return;
            }
        };
        let now = SystemClock.now();
        match result {
            Ok(sent) => {
                let reply = sent.reply.clone();
                tracing::info!(message = item.id, account = %account.spec.name, "message sent");
                self.finish(&item, OutboxStatus::Sent, None, Some(&reply), now, stop)
                    .await;
                self.event(
                    &item,
                    EventKind::MessageSent,
                    format!("message {} sent: {reply}", item.id),
                    now,
                )
                .await;
                // Only now QUIT: the server took the message at DATA's 250, and its answer
                // to QUIT (or a connection cut before it) changes nothing.
                tokio::time::timeout(SMTP_TIMEOUT, sent.quit()).await.ok();
            }
            Err(e) if mailgate_mail::send::is_permanent(&e) || item.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(message = item.id, error = %e, "message failed for good");
                self.finish(
                    &item,
                    OutboxStatus::Failed,
                    Some(&e.to_string()),
                    e.server_says.as_deref(),
                    now,
                    stop,
                )
                .await;
                self.event(
                    &item,
                    EventKind::MessageFailed,
                    format!("message {} failed: {e}", item.id),
                    now,
                )
                .await;
            }
            Err(e) => {
                let delay = backoff(self.retry_base_secs, item.attempts, jitter_roll());
                tracing::warn!(message = item.id, attempt = item.attempts, delay, error = %e, "sending failed; will retry");
                self.record(
                    &item,
                    OutboxStatus::Queued,
                    Some(&e.to_string()),
                    e.server_says.as_deref(),
                    now.plus_secs(delay),
                    now,
                    stop,
                )
                .await;
            }
        }
    }

    /// Renews the claim on `id` every third of the lease until it cannot; returns why.
    async fn heartbeat(&self, id: i64) -> String {
        loop {
            tokio::time::sleep(Duration::from_secs(LEASE_SECS as u64 / 3)).await;
            match self
                .store
                .renew_outbox_lease(id, &self.holder, SystemClock.now().plus_secs(LEASE_SECS))
                .await
            {
                Ok(true) => {}
                Ok(false) => return "the claim was lost".into(),
                Err(e) => return format!("cannot renew the claim: {e}"),
            }
        }
    }

    async fn finish(
        &self,
        item: &OutboxItem,
        status: OutboxStatus,
        error: Option<&str>,
        reply: Option<&str>,
        now: Timestamp,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        self.record(item, status, error, reply, now, now, stop)
            .await;
    }

    /// Records a send's outcome. While the database cannot store it, tries again with a
    /// growing delay and holds this worker meanwhile, so nothing else is claimed: the
    /// message keeps its claim (no one sends it again) and its outcome is written as soon
    /// as space returns. Gives up only when the server stops; the claim then expires and
    /// the message is sent again after a restart.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        item: &OutboxItem,
        status: OutboxStatus,
        error: Option<&str>,
        reply: Option<&str>,
        next_attempt_at: Timestamp,
        now: Timestamp,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        let mut wait = STORE_RETRY_FIRST;
        let mut stop = stop.clone();
        loop {
            let result = self
                .store
                .finish_outbox(
                    item.id,
                    &self.holder,
                    status,
                    error,
                    reply,
                    next_attempt_at,
                    now,
                )
                .await;
            match result {
                Ok(_) => return,
                Err(e) if e.storage_failure().is_some() => {
                    store_warn(
                        "record",
                        &e,
                        "outbox: cannot record a message's outcome; holding it until the database accepts writes",
                    );
                    if *stop.borrow() {
                        tracing::error!(
                            message = item.id,
                            status = status.as_str(),
                            "outbox: stopping with an outcome not recorded; the message will be sent again"
                        );
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                Err(e) => {
                    tracing::warn!(message = item.id, error = %e, "outbox: cannot record the outcome");
                    return;
                }
            }
        }
    }

    /// Records `message.sent` / `message.failed`, which also queues their webhooks.
    async fn event(&self, item: &OutboxItem, kind: EventKind, message: String, now: Timestamp) {
        let data = match self.store.outbox_item(item.id).await {
            Ok(latest) => serde_json::json!({
                "message": {
                    "id": latest.id,
                    "status": latest.status,
                    "message_id": latest.message_id,
                    "recipients": latest.recipients,
                    "attempts": latest.attempts,
                    "server_reply": latest.server_reply,
                    "error": latest.last_error,
                }
            }),
            Err(_) => serde_json::json!({ "message": { "id": item.id } }),
        };
        let _ = self
            .store
            .record_event_with(now, kind, None, Some(item.account_id), &message, Some(data))
            .await;
        self.deliveries.notify_one();
    }
}

/// A store failure, logged at most once per [`STORE_LOG`] interval per `kind` with the count
/// of repeats left out.
fn store_warn(kind: &str, e: &mailgate_store::StoreError, what: &str) {
    if let Some(left_out) = STORE_LOG.allow(kind, SystemClock.now()) {
        tracing::warn!(error = %e, left_out, "{what}");
    }
}
