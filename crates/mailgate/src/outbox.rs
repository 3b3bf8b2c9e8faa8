//! The outbox worker in `serve`: claims due messages (a lease in the row), sends each over
//! the account's SMTP, and records sent / retry with backoff / failed. A crash mid-send
//! leaves the lease to expire and the message is claimed again; SMTP servers de-duplicate
//! nothing, so the window for a double send is from the end of the message's data to the
//! write of `sent` that follows DATA's 250 (QUIT comes after that write). Delivery is
//! therefore at-least-once across a crash in that window.

use crate::retry::{backoff, jitter_roll};
use mailgate_core::event::EventKind;
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
        loop {
            loop {
                let now = SystemClock.now();
                match self.store.claim_outbox(&self.holder, LEASE_SECS, now).await {
                    Ok(Some(item)) => self.deliver(item).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot claim work");
                        break;
                    }
                }
            }
            let now = SystemClock.now();
            let wait = match self.store.next_outbox_due().await {
                Ok(Some(t)) => Duration::from_secs(now.secs_until(t).clamp(0, 30) as u64),
                _ => Duration::from_secs(30),
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn deliver(&self, item: OutboxItem) {
        let now = SystemClock.now();
        let account = match self.store.account(item.account_id).await {
            Ok(a) => a,
            Err(e) => {
                self.finish(&item, OutboxStatus::Failed, Some(&e.to_string()), None, now)
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
                self.finish(&item, OutboxStatus::Sent, None, Some(&reply), now)
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
                if let Err(err) = self
                    .store
                    .finish_outbox(
                        item.id,
                        &self.holder,
                        OutboxStatus::Queued,
                        Some(&e.to_string()),
                        e.server_says.as_deref(),
                        now.plus_secs(delay),
                        now,
                    )
                    .await
                {
                    tracing::warn!(error = %err, "outbox: cannot record the retry");
                }
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
    ) {
        if let Err(e) = self
            .store
            .finish_outbox(item.id, &self.holder, status, error, reply, now, now)
            .await
        {
            tracing::warn!(error = %e, "outbox: cannot record the outcome");
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
