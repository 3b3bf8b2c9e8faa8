//! Inbound watchers in `serve`: one per enabled inbound account that has something to do
//! with new mail (an on-received action, or a `message.received` subscription).
//!
//! - IMAP: IDLE where offered (re-issued every `idle_secs`, under Exchange's 30-minute
//!   cut-off), otherwise polling; resumes from the last processed UID under the mailbox's
//!   UIDVALIDITY.
//! - POP3: polling with UIDL tracking.
//!
//! A watcher first takes the lease `watch:<account>` in the database and holds it while
//! it runs, so two instances never watch the same mailbox; a crashed instance's lease
//! expires and another takes over. One task renews all the leases of the instance in one
//! write per heartbeat (`Store::renew_watch_leases`) and ends the session of a watcher
//! whose lease another instance took.
//!
//! Several instances share the mailboxes: each renews an `instance:<holder>` lease, and
//! holds at most its share, ⌈watched mailboxes ÷ live instances⌉. A watcher takes a
//! lease only while the instance is under its share; when an instance joins, the others
//! are over theirs and hand the extra mailboxes back (release the lease at once), and the
//! newcomer's waiting watchers take them. When an instance dies, its leases (and its
//! `instance:` lease) run out after `watch_lease_secs`; the survivors recompute their
//! share at their next heartbeat (every third of it), and their waiting watchers, woken
//! when the share grows, take the mailboxes over (one whose lease had not yet run out
//! is looked at again every half lease): within 2 × `watch_lease_secs` (2 minutes by
//! default). Each session is re-opened with a fresh token before
//! the old token expires (Exchange ends the session at that moment).
//!
//! Processing one message is one transaction (position + webhook deliveries), then the
//! mailbox action (mark seen, move, delete). A crash between the two leaves the message
//! processed but untouched in the inbox: nothing is lost or sent twice.

use mailgate_core::account::{InboundProtocol, MailAccount, OnReceived};
use mailgate_core::event::EventKind;
use mailgate_core::metrics::{WatcherGauge, WatcherState};
use mailgate_core::webhook::WebhookEvent;
use mailgate_core::{AccountId, Clock, SystemClock, Timestamp};
use mailgate_grants::Engine;
use mailgate_mail::imap::ImapClient;
use mailgate_mail::{MailError, TlsSettings, inbox, parse};
use mailgate_store::Store;
use mailgate_store::inbound::{ImapPosition, Progress};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a watcher is told when its instance holds more than its share: hand the mailbox
/// to another instance (not a failure).
const HAND_OVER: &str = "handing the mailbox to another instance";
/// How often the supervisor checks whether accounts or subscriptions may have changed in
/// another process (the CLI); changes made by this process wake it at once. A check reads
/// the commit signal (one `PRAGMA data_version`) and, only after a commit, the newest
/// event id.
const SUPERVISE_EVERY: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Re-open a session this long before its token expires.
const TOKEN_MARGIN_SECS: i64 = 120;
/// Bodies in a webhook are cut at this size each (the raw message is in the API).
pub const BODY_LIMIT: usize = 256 * 1024;

#[derive(Clone)]
pub struct Watchers {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub tls: TlsSettings,
    pub holder: String,
    pub poll_secs: u64,
    pub idle_secs: u64,
    /// Woken when an account or subscription changes, to re-check at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// Woken when new deliveries are queued.
    pub deliveries: Arc<tokio::sync::Notify>,
    /// The leases the running watchers hold, renewed together.
    pub leases: Arc<HeldLeases>,
    /// How long a lease lasts without renewal (`watch_lease_secs`).
    pub lease_secs: i64,
    /// How many mailboxes this instance may watch, and how many it does.
    pub share: Arc<Share>,
}

/// This instance's share of the mailboxes (see the module comment).
pub struct Share {
    most: std::sync::atomic::AtomicUsize,
    held: std::sync::atomic::AtomicUsize,
    /// How many mailboxes want a watcher, across all instances (the supervisor's count).
    watched: std::sync::atomic::AtomicUsize,
    /// Woken when the share grows, so that waiting watchers look at once.
    grown: tokio::sync::Notify,
}

impl Default for Share {
    fn default() -> Self {
        Share {
            most: std::sync::atomic::AtomicUsize::new(usize::MAX),
            held: std::sync::atomic::AtomicUsize::new(0),
            watched: std::sync::atomic::AtomicUsize::new(0),
            grown: tokio::sync::Notify::new(),
        }
    }
}

impl Share {
    /// A place under the share, if there is one; given back when the slot drops.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let most = self.most.load(Ordering::Acquire);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    fn is_full(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.held.load(Ordering::Acquire) >= self.most.load(Ordering::Acquire)
    }

    fn over_by(&self) -> usize {
        use std::sync::atomic::Ordering;
        self.held
            .load(Ordering::Acquire)
            .saturating_sub(self.most.load(Ordering::Acquire))
    }
}

/// One watched mailbox counted against the share.
struct Slot(Arc<Share>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Each held `watch:` lease with the channel that tells its watcher the lease is lost.
#[derive(Default)]
pub struct HeldLeases(std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>);

/// What the supervisor last saw of the database, to list accounts only after a change.
#[derive(Default)]
struct SeenChanges {
    marker: Option<mailgate_store::CommitMarker>,
    newest_event: Option<i64>,
}

impl SeenChanges {
    /// Whether an event was recorded since the last call (true the first time, and when
    /// the database cannot say).
    async fn new_events(&mut self, store: &Store) -> bool {
        if store.unchanged_since(self.marker).await {
            return false;
        }
        // Read before the query, so a commit after it is seen next time.
        let marker = store.commit_marker().await;
        match store.newest_event_id().await {
            Ok(id) => {
                let changed = self.newest_event != Some(id);
                self.marker = marker;
                self.newest_event = Some(id);
                changed
            }
            Err(_) => true,
        }
    }
}

/// Removes a watcher's lease from [`HeldLeases`] when its session ends.
struct Registered<'a> {
    leases: &'a HeldLeases,
    name: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.leases.0.lock() {
            map.remove(&self.name);
        }
    }
}

struct Running {
    /// The settings the watcher runs with; any change restarts it. (Not `updated_at`: two
    /// changes within one second would look like one.)
    spec: mailgate_core::account::AccountSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchers {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let renewer = tokio::spawn(self.clone().renew_leases(stop.clone()));
        let mut running: HashMap<AccountId, Running> = HashMap::new();
        let mut seen = SeenChanges::default();
        let mut woken = true;
        loop {
            // List the accounts only when something may have changed: this process said so,
            // a watcher ended, or another process recorded an event (every change of an
            // account or a subscription records one in its transaction).
            let due = woken
                || running.values().any(|r| r.task.is_finished())
                || seen.new_events(&self.store).await;
            let listed = if due {
                self.wanted().await.map(Some)
            } else {
                Ok(None)
            };
            match listed {
                Ok(None) => {}
                Ok(Some(wanted)) => {
                    // The share first, so that new watchers start within it.
                    self.share
                        .watched
                        .store(wanted.len(), std::sync::atomic::Ordering::Release);
                    self.rebalance().await;
                    // Stop what is no longer wanted or has changed (or has ended).
                    running.retain(|id, r| {
                        let keep = !r.task.is_finished()
                            && wanted.iter().any(|a| a.id == *id && a.spec == r.spec);
                        if !keep {
                            let _ = r.stop.send(true);
                        }
                        keep
                    });
                    for account in wanted {
                        if running.contains_key(&account.id) {
                            continue;
                        }
                        let (tx, rx) = watch::channel(false);
                        let id = account.id;
                        let spec = account.spec.clone();
                        let task = tokio::spawn(self.clone().watch_account(account, rx));
                        running.insert(
                            id,
                            Running {
                                spec,
                                stop: tx,
                                task,
                            },
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watchers: cannot list accounts");
                    seen = SeenChanges::default();
                }
            }
            woken = tokio::select! {
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(SUPERVISE_EVERY) => false,
                _ = stop.changed() => break,
            };
        }
        for (_, r) in running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        let _ = renewer.await;
    }

    /// Sets this instance's share from the live instances, and hands mailboxes over while
    /// it holds more than that.
    async fn rebalance(&self) {
        let watched = self
            .share
            .watched
            .load(std::sync::atomic::Ordering::Acquire);
        let now = SystemClock.now();
        let _ = self
            .store
            .try_lease(&self.instance_lease(), &self.holder, self.lease_secs, now)
            .await;
        let live = match self.store.live_instances(now).await {
            Ok(n) => n.max(1) as usize,
            // Unknown: keep the share as it is.
            Err(_) => return,
        };
        let most = watched.div_ceil(live).max(1);
        let before = self
            .share
            .most
            .swap(most, std::sync::atomic::Ordering::AcqRel);
        if most > before {
            self.share.grown.notify_waiters();
        }
        let over = self.share.over_by();
        if over == 0 {
            return;
        }
        let Ok(mut map) = self.leases.0.lock() else {
            return;
        };
        let handed: Vec<String> = map.keys().take(over).cloned().collect();
        for name in handed {
            if let Some(tell) = map.remove(&name) {
                tracing::info!(lease = %name, live, "watchers: over this instance's share, handing a mailbox over");
                let _ = tell.send(HAND_OVER.to_owned());
            }
        }
    }

    fn instance_lease(&self) -> String {
        format!("instance:{}", self.holder)
    }

    fn heartbeat_every(&self) -> Duration {
        Duration::from_secs((self.lease_secs / 3).max(1) as u64)
    }

    /// Every heartbeat, renews the leases of all running watchers in one write, and tells
    /// each watcher whose lease is gone (or every one, when the write fails).
    async fn renew_leases(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat_every()) => {}
                _ = stop.changed() => {
                    let _ = self.store.release_lease(&self.instance_lease(), &self.holder).await;
                    break;
                }
            }
            // Also renews this instance's `instance:` lease.
            self.rebalance().await;
            let held_any = self.leases.0.lock().is_ok_and(|m| !m.is_empty());
            if !held_any {
                continue;
            }
            let renewed = self
                .store
                .renew_watch_leases(&self.holder, self.lease_secs, SystemClock.now())
                .await;
            let Ok(mut map) = self.leases.0.lock() else {
                continue;
            };
            let lost: Vec<(String, String)> = match &renewed {
                Ok(names) => map
                    .keys()
                    .filter(|k| !names.contains(k))
                    .map(|k| {
                        (
                            k.clone(),
                            "another instance took over the mailbox".to_owned(),
                        )
                    })
                    .collect(),
                Err(e) => map
                    .keys()
                    .map(|k| (k.clone(), format!("cannot renew the watcher's lease: {e}")))
                    .collect(),
            };
            for (name, why) in lost {
                if let Some(tell) = map.remove(&name) {
                    let _ = tell.send(why);
                }
            }
        }
    }

    /// Accounts that need a watcher now.
    async fn wanted(&self) -> mailgate_store::Result<Vec<MailAccount>> {
        let hooks = self.store.webhooks().await?;
        let wants_received = |id: AccountId| {
            hooks.iter().any(|h| {
                h.enabled
                    && h.events.contains(&WebhookEvent::MessageReceived)
                    && h.account_id.is_none_or(|a| a == id)
            })
        };
        Ok(self
            .store
            .list_accounts()
            .await?
            .into_iter()
            .filter(|a| {
                a.spec.enabled
                    && a.spec.inbound.is_some()
                    && a.state.can_use_grant()
                    && (a.spec.on_received != OnReceived::None || wants_received(a.id))
            })
            .collect())
    }

    /// Holds the account's lease and keeps a session going until told to stop.
    async fn watch_account(self, account: MailAccount, mut stop: watch::Receiver<bool>) {
        let lease = format!("watch:{}", account.id);
        let mut failures = 0u32;
        let mut last_error: Option<String> = None;
        // Whether the last session worked; the next working one after a failure (or the
        // first) records `account.inbound_watching`.
        let mut healthy = false;
        let mut gauge = WatcherGauge::default();
        loop {
            if *stop.borrow() {
                break;
            }
            let look_again = Duration::from_secs((self.lease_secs as u64 / 2).max(1));
            // This instance at its share: another one watches this mailbox, or will.
            if self.share.is_full() {
                tokio::select! {
                    _ = tokio::time::sleep(look_again) => continue,
                    _ = self.share.grown.notified() => continue,
                    _ = stop.changed() => break,
                }
            }
            let got = self
                .store
                .try_lease(&lease, &self.holder, self.lease_secs, SystemClock.now())
                .await
                .unwrap_or(false);
            if !got {
                // Another instance watches this mailbox; look again when its lease may
                // have run out.
                gauge.set(WatcherState::Standby);
                tokio::select! {
                    _ = tokio::time::sleep(look_again) => continue,
                    _ = stop.changed() => break,
                }
            }
            // Counted once the lease is ours (a place is not held while merely trying, or
            // the watchers of other instances' mailboxes would crowd out the orphans);
            // another watcher of this instance may have filled the share meanwhile.
            let Some(slot) = self.share.take() else {
                let _ = self.store.release_lease(&lease, &self.holder).await;
                continue;
            };
            gauge.set(WatcherState::Connected);
            let result = tokio::select! {
                r = self.session(&account, !healthy) => r,
                lost = self.heartbeat(&lease) => Err(lost),
                _ = stop.changed() => break,
            };
            if matches!(&result, Err(why) if why == HAND_OVER) {
                // Not a failure: give the lease up now, so that an instance under its
                // share takes the mailbox without waiting for the lease to run out.
                let _ = self.store.release_lease(&lease, &self.holder).await;
                drop(slot);
                tokio::select! {
                    _ = tokio::time::sleep(look_again) => continue,
                    _ = stop.changed() => break,
                }
            }
            let error = match result {
                Ok(()) => {
                    failures = 0;
                    healthy = true;
                    last_error = None;
                    continue;
                }
                Err(e) => e,
            };
            failures += 1;
            healthy = false;
            tracing::warn!(account = %account.spec.name, error = %error, failures, "inbound watcher: session ended");
            if last_error.as_deref() != Some(error.as_str()) {
                let _ = self
                    .store
                    .record_event(
                        SystemClock.now(),
                        EventKind::InboundFailed,
                        Some(account.spec.app_id),
                        Some(account.id),
                        &format!("reading mail of {} failed: {error}", account.spec.name),
                    )
                    .await;
                last_error = Some(error);
            }
            // 2, 4, 8 … seconds, at most 5 minutes, before trying again.
            gauge.set(WatcherState::Retrying);
            let delay = Duration::from_secs((1u64 << failures.min(8)).min(300));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        let _ = self.store.release_lease(&lease, &self.holder).await;
    }

    /// Waits until the lease is lost (the renewer in [`Watchers::renew_leases`] says so);
    /// returns why.
    async fn heartbeat(&self, lease: &str) -> String {
        let (tell, lost) = tokio::sync::oneshot::channel();
        let _registered = match self.leases.0.lock() {
            Ok(mut map) => {
                map.insert(lease.to_owned(), tell);
                Registered {
                    leases: &self.leases,
                    name: lease.to_owned(),
                }
            }
            Err(_) => return "the watcher's lease list is unusable".into(),
        };
        lost.await
            .unwrap_or_else(|_| "the lease renewal stopped".into())
    }

    /// One session: connect, catch up, wait for mail until the token is about to expire.
    /// `Ok` means "reconnect now" (fresh token), `Err` a failure worth reporting.
    async fn session(&self, account: &MailAccount, announce: bool) -> Result<(), String> {
        let protocol = account
            .spec
            .inbound
            .as_ref()
            .map(|i| i.protocol)
            .ok_or("the account has no inbound server")?;
        match protocol {
            InboundProtocol::Imap => self.imap_session(account, announce).await,
            InboundProtocol::Pop3 => self.pop3_round(account, announce).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn announce(&self, account: &MailAccount, how: &str) {
        let _ = self
            .store
            .record_event(
                SystemClock.now(),
                EventKind::InboundWatching,
                Some(account.spec.app_id),
                Some(account.id),
                &format!(
                    "watching the inbox of {} ({how}; on received: {})",
                    account.spec.name, account.spec.on_received
                ),
            )
            .await;
    }

    async fn imap_session(&self, account: &MailAccount, announce: bool) -> Result<(), MailError> {
        let (mut c, expires) =
            inbox::open_imap(&self.engine, &self.tls, account, IO_TIMEOUT).await?;
        // Exchange: "User is authenticated but not connected" for a delegate without FullAccess.
        let selected = c
            .select_info("INBOX", false)
            .await
            .map_err(|e| inbox::shared_mailbox_refusal(account, e))?;
        let validity = selected.uid_validity.unwrap_or(0);
        let mut pos = match self
            .store
            .imap_position(account.id)
            .await
            .map_err(store_err)?
        {
            Some(p) if p.uid_validity == validity => p,
            _ => {
                // First look at this mailbox (or it was rebuilt): start from now.
                let last_uid = match selected.uid_next {
                    Some(next) => next.saturating_sub(1),
                    None => c.uid_search("ALL").await?.last().copied().unwrap_or(0),
                };
                let p = ImapPosition {
                    uid_validity: validity,
                    last_uid,
                };
                self.store
                    .set_imap_position(account.id, p, SystemClock.now())
                    .await
                    .map_err(store_err)?;
                p
            }
        };
        let idle = c.has("IDLE");
        if announce {
            self.announce(account, if idle { "IMAP IDLE" } else { "IMAP polling" })
                .await;
        }
        let deadline = session_deadline(expires, SystemClock.now());
        loop {
            self.imap_catch_up(account, &mut c, &mut pos).await?;
            let left = SystemClock.now().secs_until(deadline);
            if left <= 0 {
                c.logout().await;
                return Ok(());
            }
            if idle {
                let wait = Duration::from_secs((left as u64).min(self.idle_secs));
                c.idle(wait).await?;
            } else {
                let wait = Duration::from_secs((left as u64).min(self.poll_secs));
                tokio::time::sleep(wait).await;
                c.noop().await?;
            }
        }
    }

    async fn imap_catch_up(
        &self,
        account: &MailAccount,
        c: &mut ImapClient,
        pos: &mut ImapPosition,
    ) -> Result<(), MailError> {
        // `UID n:*` always matches the newest message, even when its UID is below n.
        let uids: Vec<u32> = c
            .uid_search(&format!("UID {}:*", pos.last_uid.saturating_add(1)))
            .await?
            .into_iter()
            .filter(|&u| u > pos.last_uid)
            .collect();
        for uid in uids {
            let Some(raw) = c.fetch(uid).await? else {
                continue; // expunged meanwhile
            };
            let next = ImapPosition {
                uid_validity: pos.uid_validity,
                last_uid: uid,
            };
            let data = received_data(&uid.to_string(), "imap", &raw);
            let queued = self
                .store
                .record_received(account.id, Progress::Imap(next), data, SystemClock.now())
                .await
                .map_err(store_err)?;
            *pos = next;
            if queued > 0 {
                self.deliveries.notify_one();
            }
            tracing::info!(account = %account.spec.name, uid, webhooks = queued, "message received");
            match &account.spec.on_received {
                OnReceived::MarkSeen => c.add_flags(uid, "\\Seen").await?,
                OnReceived::MoveTo(folder) => c.move_to(uid, folder).await?,
                OnReceived::Delete => {
                    c.add_flags(uid, "\\Deleted").await?;
                    c.command(&if c.has("UIDPLUS") {
                        format!("UID EXPUNGE {uid}")
                    } else {
                        "EXPUNGE".to_owned()
                    })
                    .await?;
                }
                OnReceived::None | OnReceived::Webhook => {}
            }
        }
        Ok(())
    }

    /// One POP3 round (connect, process what is new, quit), then wait one poll interval.
    async fn pop3_round(&self, account: &MailAccount, announce: bool) -> Result<(), MailError> {
        let mut c = inbox::open_pop3(&self.engine, &self.tls, account, IO_TIMEOUT).await?;
        let listing = c.uidl().await?;
        let uidls: Vec<String> = listing.iter().map(|(_, u)| u.clone()).collect();
        let now = SystemClock.now();
        if self
            .store
            .imap_position(account.id)
            .await
            .map_err(store_err)?
            .is_none()
        {
            // First look: what is there now is old mail.
            self.store
                .mark_pop3_seen(account.id, &uidls, now)
                .await
                .map_err(store_err)?;
            self.store
                .set_imap_position(
                    account.id,
                    ImapPosition {
                        uid_validity: 0,
                        last_uid: 0,
                    },
                    now,
                )
                .await
                .map_err(store_err)?;
        }
        if announce {
            self.announce(account, "POP3 polling").await;
        }
        let seen = self.store.pop3_seen(account.id).await.map_err(store_err)?;
        for (n, uidl) in listing.iter().filter(|(_, u)| !seen.contains(u)) {
            let raw = inbox::join_lines(c.retr(*n).await?);
            let data = received_data(uidl, "pop3", &raw);
            let queued = self
                .store
                .record_received(account.id, Progress::Pop3(uidl), data, SystemClock.now())
                .await
                .map_err(store_err)?;
            if queued > 0 {
                self.deliveries.notify_one();
            }
            tracing::info!(account = %account.spec.name, uidl = %uidl, webhooks = queued, "message received");
            if account.spec.on_received == OnReceived::Delete {
                c.dele(*n).await?;
            }
        }
        c.quit().await;
        self.store
            .prune_pop3_seen(account.id, &uidls)
            .await
            .map_err(store_err)?;
        tokio::time::sleep(Duration::from_secs(self.poll_secs)).await;
        Ok(())
    }
}

/// When a session opened now must end: before its token expires, and at least every
/// 50 minutes so that a long-lived token still gets a fresh connection now and then.
fn session_deadline(token_expires: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let cap = now.plus_secs(50 * 60);
    match token_expires {
        Some(t) => {
            let before = t.plus_secs(-TOKEN_MARGIN_SECS);
            // A token that is already within the margin still gets one short round.
            let before = if before.0 <= now.0 {
                now.plus_secs(30)
            } else {
                before
            };
            if before.0 < cap.0 { before } else { cap }
        }
        None => cap,
    }
}

/// The `data` of a `message.received` webhook.
fn received_data(uid: &str, protocol: &str, raw: &[u8]) -> serde_json::Value {
    json!({
        "uid": uid,
        "protocol": protocol,
        "mailbox": "INBOX",
        "message": parse::parse(raw, BODY_LIMIT),
    })
}

fn store_err(e: mailgate_store::StoreError) -> MailError {
    MailError::new(
        mailgate_mail::remedy::MailRemedy::ServerError,
        format!("database: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_before_the_token_expires() {
        let now = Timestamp(1_000_000);
        assert_eq!(
            session_deadline(Some(now.plus_secs(1800)), now),
            now.plus_secs(1800 - TOKEN_MARGIN_SECS)
        );
        assert_eq!(session_deadline(None, now), now.plus_secs(50 * 60));
        assert_eq!(
            session_deadline(Some(now.plus_secs(10 * 3600)), now),
            now.plus_secs(50 * 60)
        );
        assert_eq!(
            session_deadline(Some(now.plus_secs(60)), now),
            now.plus_secs(30)
        );
    }
}
