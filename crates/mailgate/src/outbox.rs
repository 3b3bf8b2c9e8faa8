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
//!
//! Sessions: a sender per account keeps its authenticated SMTP session for the account's
//! next due messages (RSET between them), each claimed while the one before it is sent
//! (and that one's outcome written meanwhile), so database and mail server work overlap. A new
//! session replaces it when its token nears expiry, after 100 messages, or when RSET finds
//! it closed; any other error drops it and the message takes the retry rules as before.
//! Senders of several accounts run at once: at most `outbox_concurrency` in all and
//! `outbox_per_account_concurrency` per account (default 1: an account's messages go out
//! in queue order).

use crate::retry::{backoff, jitter_roll};
use mailgate_core::account::MailAccount;
use mailgate_core::event::EventKind;
use mailgate_core::log_limit::LogLimit;
use mailgate_core::{Clock, SystemClock, Timestamp};
use mailgate_grants::Engine;
use mailgate_mail::send::AfterReset;
use mailgate_store::{OutboxEvent, OutboxItem, OutboxOutcome, OutboxStatus, Store, StoreError};
use std::collections::HashMap;
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
    /// SMTP sessions (senders) at once, all accounts together.
    pub concurrency: usize,
    /// SMTP sessions at once for one account; with 1, its messages go in queue order.
    pub per_account_concurrency: usize,
}

/// How long a sender whose account has nothing more due keeps its session open for a
/// message about to be queued (an application sending a batch one request at a time).
const SESSION_LINGER: Duration = Duration::from_millis(500);
/// Messages a sender sends before it gives its slot back to the dispatcher, which then
/// claims the oldest due message of any account: a busy account does not keep a slot
/// while other accounts wait at the global cap.
const SENDER_TURN: usize = 100;

impl Worker {
    /// The dispatcher: claims a due message of an account below its session cap, while
    /// fewer than `concurrency` senders run, and starts a sender for it. Each sender keeps
    /// its account's session for the account's next due messages (see [`Worker::sender`]).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let worker = Arc::new(self);
        let concurrency = worker.concurrency.max(1);
        let per_account = worker.per_account_concurrency.max(1);
        let mut senders: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let mut sender_account: HashMap<tokio::task::Id, i64> = HashMap::new();
        let mut sessions_of: HashMap<i64, usize> = HashMap::new();
        // Tells lingering senders that something was queued.
        let (queued_tx, queued_rx) = tokio::sync::watch::channel(0u64);
        let mut store_wait = STORE_RETRY_FIRST;
        loop {
            // Claim nothing while writes fail: the claim, and the `sent` after it, might not
            // be stored, and an unrecorded send is sent again. A small real write tells when
            // space is back.
            let writable = worker.store.write_failure().is_none()
                || worker.store.probe_write(SystemClock.now()).await.is_ok();
            if writable && !*stop.borrow() {
                while senders.len() < concurrency {
                    let full: Vec<i64> = sessions_of
                        .iter()
                        .filter(|(_, n)| **n >= per_account)
                        .map(|(account, _)| *account)
                        .collect();
                    let now = SystemClock.now();
                    match worker
                        .store
                        .claim_outbox_for(&worker.holder, LEASE_SECS, now, None, &full)
                        .await
                    {
                        Ok(Some(item)) => {
                            let account = item.account_id.0;
                            let task = senders.spawn(worker.clone().sender(
                                item,
                                stop.clone(),
                                queued_rx.clone(),
                            ));
                            sender_account.insert(task.id(), account);
                            *sessions_of.entry(account).or_default() += 1;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            store_warn("claim", &e, "outbox: cannot claim work");
                            break;
                        }
                    }
                }
            }
            let now = SystemClock.now();
            let wait = if worker.store.write_failure().is_some() {
                let wait = store_wait;
                store_wait = (store_wait * 2).min(STORE_RETRY_MAX);
                wait
            } else {
                store_wait = STORE_RETRY_FIRST;
                match worker.store.next_outbox_due().await {
                    Ok(Some(t)) => Duration::from_secs(now.secs_until(t).clamp(0, 30) as u64),
                    _ => Duration::from_secs(30),
                }
            };
            tokio::select! {
                _ = worker.wake.notified() => {
                    queued_tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                Some(done) = senders.join_next_with_id() => {
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    if let Some(account) = sender_account.remove(&id)
                        && let Some(n) = sessions_of.get_mut(&account)
                    {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            sessions_of.remove(&account);
                        }
                    }
                }
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                _ = stop.changed() => break,
            }
        }
        // Stopping: each sender finishes the message in hand (and records it), then quits.
        while senders.join_next().await.is_some() {}
    }

    /// Sends `first` and then the account's next due messages over one SMTP session, until
    /// none is due (after [`SESSION_LINGER`]), [`SENDER_TURN`] messages are sent, the store
    /// stops accepting writes, or `serve` stops. Each message is claimed on its own, so the
    /// claim lease, heartbeat and retry rules are those of one message.
    ///
    /// While a message is on the wire, the previous one's outcome is written and the next
    /// one claimed: the database's round trips overlap the mail server's replies instead of
    /// adding to them (they are most of a message's time on a near server). The outcome of a
    /// message is written at the latest while the next one is sent, and at once when there
    /// is no next one; while the store fails writes nothing more is sent until the pending
    /// outcome is written.
    async fn sender(
        self: Arc<Self>,
        first: OutboxItem,
        stop: tokio::sync::watch::Receiver<bool>,
        mut queued: tokio::sync::watch::Receiver<u64>,
    ) {
        let account_id = first.account_id.0;
        let mut session = None;
        let mut next = Some((first, tokio::time::Instant::now(), None));
        let mut unrecorded: Option<Unrecorded> = None;
        let mut sent = 0;
        while let Some((item, claimed_at, account)) = next.take() {
            if *stop.borrow() {
                // Claimed ahead but not begun: back to the queue, for whoever runs next.
                self.release(&item).await;
                break;
            }
            if self.store.write_failure().is_some()
                && let Some(pending) = unrecorded.take()
            {
                // Hold here until the earlier outcome is written: nothing more goes out
                // while the store cannot record what went out.
                self.write_outcome(pending, &stop).await;
            }
            if !self.still_ours(&item, claimed_at).await {
                continue;
            }
            sent += 1;
            let last = sent >= SENDER_TURN;
            // Read when the message was claimed ahead, or now: the settings it is sent with.
            let account = match account {
                Some(account) => account,
                None => self.store.account(item.account_id).await,
            };
            let paperwork = async {
                if let Some(pending) = unrecorded.take() {
                    self.write_outcome(pending, &stop).await;
                }
                if last || *stop.borrow() {
                    return None;
                }
                let item = self
                    .claim_due_of(account_id, SystemClock.now())
                    .await
                    .ok()
                    .flatten()?;
                // Its account too, so that read is not between this message's reply and
                // the next one's first command.
                let account = self.store.account(item.account_id).await;
                Some((item, account))
            };
            let ((kept, outcome), claimed) =
                tokio::join!(self.transmit(item, account, session), paperwork);
            session = kept;
            match claimed {
                Some((item, account)) => {
                    unrecorded = outcome;
                    next = Some((item, tokio::time::Instant::now(), Some(account)));
                }
                None => {
                    if let Some(pending) = outcome {
                        self.write_outcome(pending, &stop).await;
                    }
                    if *stop.borrow() || last {
                        break;
                    }
                    next = self
                        .claim_next_of(account_id, &mut queued)
                        .await
                        .map(|item| (item, tokio::time::Instant::now(), None));
                }
            }
        }
        if let Some(pending) = unrecorded.take() {
            self.write_outcome(pending, &stop).await;
        }
        if let Some(session) = session {
            tokio::time::timeout(SMTP_TIMEOUT, session.quit())
                .await
                .ok();
        }
    }

    /// The account's oldest message due at `now`, without waiting. `Err` while the store
    /// fails writes or the claim failed (logged): the sender should stop claiming.
    async fn claim_due_of(
        &self,
        account_id: i64,
        now: Timestamp,
    ) -> Result<Option<OutboxItem>, ()> {
        if self.store.write_failure().is_some() {
            return Err(());
        }
        self.store
            .claim_outbox_for(&self.holder, LEASE_SECS, now, Some(account_id), &[])
            .await
            .map_err(|e| store_warn("claim", &e, "outbox: cannot claim work"))
    }

    /// Whether a message claimed ahead is still this sender's: one that waited for a third
    /// of the lease (a long message before it) has its claim renewed first, and is left
    /// alone if another instance took it over meanwhile.
    async fn still_ours(&self, item: &OutboxItem, claimed_at: tokio::time::Instant) -> bool {
        if claimed_at.elapsed() < Duration::from_secs(LEASE_SECS as u64 / 3) {
            return true;
        }
        let until = SystemClock.now().plus_secs(LEASE_SECS);
        match self
            .store
            .renew_outbox_lease(item.id, &self.holder, until)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    message = item.id,
                    "outbox: the claim was lost before sending; leaving the message to the new holder"
                );
                false
            }
            Err(e) => {
                store_warn(
                    "claim",
                    &e,
                    "outbox: cannot renew a claim; leaving the message to its lease",
                );
                false
            }
        }
    }

    /// Gives back the claim on a message not begun.
    async fn release(&self, item: &OutboxItem) {
        if let Err(e) = self.store.release_outbox_claim(item.id, &self.holder).await {
            // The lease expires on its own, or the next start of this instance releases it.
            tracing::warn!(message = item.id, error = %e, "outbox: cannot give back a claim");
        }
    }

    /// The account's next due message, waiting up to [`SESSION_LINGER`] for one to be
    /// queued; none while the store fails writes.
    async fn claim_next_of(
        &self,
        account_id: i64,
        queued: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Option<OutboxItem> {
        let linger_until = tokio::time::Instant::now() + SESSION_LINGER;
        // Bounded: each round either claims, or waits for a queued message or the end.
        loop {
            queued.borrow_and_update();
            let now = SystemClock.now();
            match self.claim_due_of(account_id, now).await {
                Ok(Some(item)) => return Some(item),
                Ok(None) => {
                    // Another account's message is due: give the slot back at once rather
                    // than linger, so a waiting session never delays other accounts.
                    let due_elsewhere = self
                        .store
                        .next_outbox_due()
                        .await
                        .is_ok_and(|t| t.is_some_and(|t| t.0 <= now.0));
                    if due_elsewhere {
                        return None;
                    }
                }
                Err(()) => return None,
            }
            tokio::select! {
                changed = queued.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(linger_until) => return None,
            }
        }
    }

    /// Sends one claimed message with its account's settings as read when it was claimed
    /// (a failed read fails it), over `session` when it may be reused (RSET first), else
    /// over a new one. Returns the session for the next message when this one was sent
    /// (after any error the session is dropped, closed, and the message goes back to the
    /// retry rules as it would with a session of its own), and the outcome to write; none
    /// when the claim was lost to another holder.
    async fn transmit(
        &self,
        item: OutboxItem,
        account: Result<MailAccount, StoreError>,
        session: Option<mailgate_mail::send::Session>,
    ) -> (Option<mailgate_mail::send::Session>, Option<Unrecorded>) {
        let now = SystemClock.now();
        let account = match account {
            Ok(a) => a,
            Err(e) => {
                let outcome =
                    Unrecorded::final_without_event(item, OutboxStatus::Failed, e.to_string(), now);
                return (None, Some(outcome));
            }
        };
        let send = async {
            let session = match session {
                Some(s) if s.reusable_for(&account, now) => Some(s),
                Some(old) => {
                    // Token near expiry, enough messages, or the account's server changed.
                    tokio::spawn(async move {
                        tokio::time::timeout(SMTP_TIMEOUT, old.quit()).await.ok();
                    });
                    None
                }
                None => None,
            };
            if let Some(mut s) = session {
                match s.send(&item.recipients, &item.message).await {
                    Ok(reply) => return Ok((reply, s)),
                    // The server closed the session between messages; nothing of this one
                    // was taken, so a new session sends it now.
                    Err(AfterReset::Reset(_)) => {}
                    Err(AfterReset::Message(e)) => return Err(e),
                }
            }
            let mut session =
                mailgate_mail::send::Session::open(&self.engine, &self.tls, &account, SMTP_TIMEOUT)
                    .await?;
            let reply = session
                .send(&item.recipients, &item.message)
                .await
                .map_err(AfterReset::into_error)?;
            Ok::<_, mailgate_mail::MailError>((reply, session))
        };
        // Heartbeat: a long conversation (a large message on a slow link) keeps its claim,
        // so no other instance takes the message over while it is being sent.
        let result = tokio::select! {
            r = send => r,
            lost = self.heartbeat(item.id) => {
                tracing::warn!(message = item.id, "outbox: {lost}; leaving the message to the new holder");
                return (None, None);
            }
        };
        let now = SystemClock.now();
        match result {
            Ok((reply, session)) => {
                tracing::info!(message = item.id, account = %account.spec.name, "message sent");
                let said = format!("message {} sent: {reply}", item.id);
                let outcome = Unrecorded {
                    status: OutboxStatus::Sent,
                    error: None,
                    reply: Some(reply),
                    next_attempt_at: now,
                    now,
                    event: Some((EventKind::MessageSent, said)),
                    item,
                };
                // The session goes on (or QUITs when the sender ends): the server took the
                // message at DATA's 250, and what happens to the session after changes nothing.
                (Some(session), Some(outcome))
            }
            Err(e) if mailgate_mail::send::is_permanent(&e) || item.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(message = item.id, error = %e, "message failed for good");
                let said = format!("message {} failed: {e}", item.id);
                let outcome = Unrecorded {
                    status: OutboxStatus::Failed,
                    error: Some(e.to_string()),
                    reply: e.server_says.clone(),
                    next_attempt_at: now,
                    now,
                    event: Some((EventKind::MessageFailed, said)),
                    item,
                };
                (None, Some(outcome))
            }
            Err(e) => {
                let delay = backoff(self.retry_base_secs, item.attempts, jitter_roll());
                tracing::warn!(message = item.id, attempt = item.attempts, delay, error = %e, "sending failed; will retry");
                let outcome = Unrecorded {
                    status: OutboxStatus::Queued,
                    error: Some(e.to_string()),
                    reply: e.server_says.clone(),
                    next_attempt_at: now.plus_secs(delay),
                    now,
                    event: None,
                    item,
                };
                (None, Some(outcome))
            }
        }
    }

    /// Writes a send's outcome (see [`Worker::record`]).
    async fn write_outcome(&self, u: Unrecorded, stop: &tokio::sync::watch::Receiver<bool>) {
        let outcome = OutboxOutcome {
            status: u.status,
            error: u.error.as_deref(),
            reply: u.reply.as_deref(),
            next_attempt_at: u.next_attempt_at,
        };
        let event = u
            .event
            .as_ref()
            .map(|(kind, said)| outcome_event(&u.item, *kind, outcome, said));
        self.record(&u.item, outcome, u.now, event, stop).await;
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

    /// Records a send's outcome, with its event (`message.sent` / `message.failed`, which
    /// also queues their webhooks) in the same transaction. While the database cannot
    /// store it, tries again with a growing delay and holds this worker meanwhile, so
    /// nothing else is claimed: the message keeps its claim (no one sends it again) and its
    /// outcome is written as soon as space returns. Gives up only when the server stops;
    /// the claim then expires and the message is sent again after a restart.
    async fn record(
        &self,
        item: &OutboxItem,
        outcome: OutboxOutcome<'_>,
        now: Timestamp,
        event: Option<OutboxEvent<'_>>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        crate::metrics::send_recorded(outcome.status);
        let mut wait = STORE_RETRY_FIRST;
        let mut stop = stop.clone();
        loop {
            let result = self
                .store
                .finish_outbox_with_event(item.id, &self.holder, outcome, now, event.as_ref())
                .await;
            match result {
                Ok(_) => {
                    if event.is_some() {
                        self.deliveries.notify_one();
                    }
                    return;
                }
                Err(e) if e.storage_failure().is_some() => {
                    store_warn(
                        "record",
                        &e,
                        "outbox: cannot record a message's outcome; holding it until the database accepts writes",
                    );
                    if *stop.borrow() {
                        tracing::error!(
                            message = item.id,
                            status = outcome.status.as_str(),
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
}

/// A send's outcome not yet written: what [`Worker::record`] needs, owned, so that it can
/// be written while the next message is sent.
struct Unrecorded {
    item: OutboxItem,
    status: OutboxStatus,
    error: Option<String>,
    reply: Option<String>,
    next_attempt_at: Timestamp,
    now: Timestamp,
    /// `message.sent` / `message.failed` and its sentence.
    event: Option<(EventKind, String)>,
}

impl Unrecorded {
    /// Failed before any of it was sent (the account is gone): no event, as before.
    fn final_without_event(
        item: OutboxItem,
        status: OutboxStatus,
        error: String,
        now: Timestamp,
    ) -> Unrecorded {
        Unrecorded {
            item,
            status,
            error: Some(error),
            reply: None,
            next_attempt_at: now,
            now,
            event: None,
        }
    }
}

/// The event of a final outcome: the message's data is the row as
/// [`Worker::record`] writes it (built here rather than read back: one query less per
/// message sent).
fn outcome_event<'a>(
    item: &OutboxItem,
    kind: EventKind,
    outcome: OutboxOutcome<'_>,
    message: &'a str,
) -> OutboxEvent<'a> {
    let data = serde_json::json!({
        "message": {
            "id": item.id,
            "status": outcome.status,
            "message_id": item.message_id,
            "recipients": item.recipients,
            "attempts": item.attempts,
            "server_reply": outcome.reply.or(item.server_reply.as_deref()),
            "error": outcome.error,
        }
    });
    OutboxEvent {
        kind,
        account: item.account_id,
        message,
        data,
    }
}

/// A store failure, logged at most once per [`STORE_LOG`] interval per `kind` with the count
/// of repeats left out.
fn store_warn(kind: &str, e: &mailgate_store::StoreError, what: &str) {
    if let Some(left_out) = STORE_LOG.allow(kind, SystemClock.now()) {
        tracing::warn!(error = %e, left_out, "{what}");
    }
}
