//! The token hot path: answers without SQL while nothing has changed.
//!
//! `Engine::access_token` keeps, per account, the last token it handed out (decrypted) with
//! the store's commit marker read *before* the database was asked (`mailgate_store`'s
//! `changes.rs`). The cached token is handed out again only while
//! - no connection of any process has committed anything since (equal marker): a refresh
//!   by the CLI or another server, a grant dropped because an app's endpoints moved, a
//!   re-authorization, an account disabled or moved to `reauth_required`, a forced refresh
//!   — all of them are commits, so none can leave a stale token here, not even for a
//!   moment; and
//! - it stays valid for its refresh margin, by this engine's clock, exactly as the
//!   uncached path would decide.
//!
//! Otherwise the uncached path runs (three reads, perhaps a refresh) and its answer is
//! kept with the marker read before it; one task per account at a time, so a burst of
//! requests after a commit reads the database once, not once per request. Unrelated commits (events, leases, the outbox)
//! cost one uncached answer each.
//!
//! Refresh waiters: tasks of this process that queued on the account's mutex while another
//! task refreshed take that leader's token (published under the mutex) instead of reading
//! the grant again, one after another. Likewise a task that queued behind a fill which
//! *began after it asked* takes that fill's answer without checking the commit signal
//! again: the fill read the database after the task arrived, which is all a check of its
//! own would prove, and a burst does not queue 1,000 checks one after another.

use crate::Engine;
use crate::tokens::FreshToken;
use mailgate_core::{AccountId, Timestamp};
use mailgate_store::CommitMarker;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fills begun so far, by every engine of the process (only compared for order): the number
/// a fill takes when it begins, kept with its answer, tells a task that read the counter
/// earlier whether that fill began after it asked.
static FILLS_BEGUN: AtomicU64 = AtomicU64::new(0);

/// The last token handed out for one account, as read at `seen`.
pub(crate) struct CachedToken {
    seen: Option<CommitMarker>,
    /// The fill's number ([`FILLS_BEGUN`]).
    fill: u64,
    token: FreshToken,
}

/// The newest token a refresh leader of this process obtained for one account; `seq`
/// counts the refreshes, so a waiter takes only one that finished after it began waiting.
pub(crate) struct LeaderToken {
    seq: u64,
    token: FreshToken,
}

/// Whether `token` may still be handed out at `now` with `min_validity` seconds left, and
/// is not the one a mail server refused.
fn still_fresh(
    token: &FreshToken,
    now: Timestamp,
    min_validity: i64,
    refused: Option<&str>,
) -> bool {
    if refused.is_some_and(|r| r == token.access_token.expose()) {
        return false;
    }
    token
        .expires_at
        .is_none_or(|exp| now.secs_until(exp) > min_validity)
}

impl Engine {
    /// A token valid for at least the refresh margin (max(5 min, 10 % of its lifetime)),
    /// refreshing first if needed. Concurrent callers share one refresh. Served from
    /// memory while the database has not changed (module comment).
    pub async fn access_token(&self, id: AccountId) -> crate::Result<FreshToken> {
        if let Some(token) = self.cached_token(id).await {
            return Ok(token);
        }
        // One task of this process reads the database for the account at a time; those
        // that queued behind it (a burst after a commit) find its answer in the cache.
        let asked = FILLS_BEGUN.load(Ordering::SeqCst);
        let fill = {
            let mut map = self.fills.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id).or_default().clone()
        };
        let _filling = fill.lock().await;
        if let Some(token) = self.token_filled_since(id, asked) {
            return Ok(token);
        }
        if let Some(token) = self.cached_token(id).await {
            return Ok(token);
        }
        let fill_number = FILLS_BEGUN.fetch_add(1, Ordering::SeqCst) + 1;
        let seen = self.store.commit_marker().await;
        let token = self.access_token_uncached(id).await?;
        let entry = CachedToken {
            seen,
            fill: fill_number,
            token: FreshToken {
                refreshed: false,
                ..token.clone()
            },
        };
        if let Ok(mut cache) = self.cached.lock() {
            cache.insert(id, entry);
        }
        Ok(token)
    }

    /// The cached token, if a fill that began after `asked` (a [`FILLS_BEGUN`] value)
    /// stored it and it is still fresh.
    fn token_filled_since(&self, id: AccountId, asked: u64) -> Option<FreshToken> {
        let cache = self.cached.lock().ok()?;
        let entry = cache.get(&id).filter(|e| e.fill > asked)?;
        still_fresh(
            &entry.token,
            self.clock.now(),
            entry.token.margin_secs,
            None,
        )
        .then(|| entry.token.clone())
    }

    async fn cached_token(&self, id: AccountId) -> Option<FreshToken> {
        let (seen, token) = {
            let cache = self.cached.lock().ok()?;
            let entry = cache.get(&id)?;
            if !still_fresh(
                &entry.token,
                self.clock.now(),
                entry.token.margin_secs,
                None,
            ) {
                return None;
            }
            (entry.seen, entry.token.clone())
        };
        self.store.unchanged_since(seen).await.then_some(token)
    }

    /// How many refreshes of this account leaders of this process have published.
    pub(crate) fn leader_seq(&self, id: AccountId) -> u64 {
        self.leader_tokens
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|l| l.seq))
            .unwrap_or(0)
    }

    /// Called by the refresh leader, still holding the account's mutex.
    pub(crate) fn publish_leader_token(&self, id: AccountId, token: &FreshToken) {
        if let Ok(mut map) = self.leader_tokens.lock() {
            let seq = map.get(&id).map_or(0, |l| l.seq) + 1;
            map.insert(
                id,
                LeaderToken {
                    seq,
                    token: FreshToken {
                        refreshed: false,
                        ..token.clone()
                    },
                },
            );
        }
    }

    /// The token a leader published after `waited_from` (a [`Engine::leader_seq`] value),
    /// if it is still fresh enough for this waiter.
    pub(crate) fn leader_token_since(
        &self,
        id: AccountId,
        waited_from: u64,
        min_validity: i64,
        refused: Option<&str>,
    ) -> Option<FreshToken> {
        let map = self.leader_tokens.lock().ok()?;
        let leader = map.get(&id).filter(|l| l.seq > waited_from)?;
        still_fresh(&leader.token, self.clock.now(), min_validity, refused)
            .then(|| leader.token.clone())
    }
}
