//! "Has anything been committed to the database since?" — the signal behind the hot
//! paths' caches (the account's access token in `grants/src/cache.rs`, API tokens in
//! `Store::api_token_by_hash`, the inbound supervisor's event check).
//!
//! On SQLite the answer is `PRAGMA data_version` on a connection kept for that purpose
//! alone. SQLite changes that value whenever *another* connection — of this process (the
//! pool's) or of any other (a CLI command, a second server) — has committed, and never for
//! the connection's own commits; this one is `query_only`, so it has none. Reading it is a
//! short read transaction that looks at the wal-index header through SQLite's own mapping,
//! under SQLite's own locks.
//!
//! The first signal read that header by opening the `-shm` file by hand. On POSIX closing
//! *any* descriptor of a file drops *every* fcntl lock the process holds on it — including
//! the shared lock by which SQLite's connections say "the wal-index is in use" — so the
//! next CLI command truncated the index under `serve`'s mapping and `serve` died of SIGBUS
//! mid-commit (`sqlite.org/howtocorrupt.html` §2.2). Nothing here opens a file of the
//! database (ARCHITECTURE.md, "Invariants"); test
//! `commit_marker::checking_the_caches_keeps_sqlites_lock_on_the_wal_index`.
//!
//! Other backends supply their own [`CommitSignal`] variant (PostgreSQL, issue 18: for
//! example a counter bumped by `LISTEN` on a `NOTIFY` each writing transaction sends); a
//! backend without one uses [`CommitSignal::Off`], which makes every cache read again.
//!
//! "The very next request sees it": a cache checks the signal on every use, and a check
//! counts only if it *began* after the caller asked. Callers that arrive while a check is
//! running wait for it and start the next one together, so under load one `PRAGMA` answers
//! a batch of requests instead of one each.

use sqlx::{Connection, Row};
use std::sync::atomic::{AtomicU64, Ordering};

/// The state of the database's newest commit, compared for equality only, and only with
/// markers of the same [`Store`](crate::Store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMarker(i64);

/// Where a store learns that something was committed.
pub(crate) enum CommitSignal {
    /// No signal: a value is always "perhaps changed", so caches read the database each
    /// time. For short commands (they keep nothing in memory, and a connection of its own
    /// would cost more than their queries) and databases without a file.
    Off,
    /// SQLite: `PRAGMA data_version` on a connection of its own (module comment).
    SqliteDataVersion(DataVersion),
}

impl CommitSignal {
    /// The SQLite signal for the database at `url` ([`crate::normalise_url`]'s form). The
    /// connection opens on first use.
    pub(crate) fn sqlite(url: &str) -> CommitSignal {
        CommitSignal::SqliteDataVersion(DataVersion {
            url: url.to_owned(),
            slot: tokio::sync::Mutex::new(Slot::default()),
            checks_started: AtomicU64::new(0),
        })
    }

    /// The marker now, read by a check that began after this call; `None` when unknown
    /// (no signal, or the database could not be asked), which no cache takes as unchanged.
    pub(crate) async fn marker(&self) -> Option<CommitMarker> {
        match self {
            CommitSignal::Off => None,
            CommitSignal::SqliteDataVersion(signal) => signal.marker().await,
        }
    }

    /// Nothing has been committed since `seen` was read (false when either is unknown).
    pub(crate) async fn unchanged_since(&self, seen: Option<CommitMarker>) -> bool {
        match seen {
            Some(seen) => self.marker().await == Some(seen),
            None => false,
        }
    }
}

pub(crate) struct DataVersion {
    url: String,
    slot: tokio::sync::Mutex<Slot>,
    /// Checks begun so far (incremented under `slot`'s lock): a caller that read `n` here
    /// may take the answer of check `n + 1` or later, which began after it asked.
    checks_started: AtomicU64,
}

#[derive(Default)]
struct Slot {
    conn: Option<sqlx::AnyConnection>,
    /// The newest check's number and answer.
    last: Option<(u64, CommitMarker)>,
}

impl DataVersion {
    async fn marker(&self) -> Option<CommitMarker> {
        let asked_after = self.checks_started.load(Ordering::SeqCst);
        let mut slot = self.slot.lock().await;
        if let Some((check, marker)) = slot.last
            && check > asked_after
        {
            return Some(marker);
        }
        let check = self.checks_started.fetch_add(1, Ordering::SeqCst) + 1;
        let marker = match self.read(&mut slot).await {
            Ok(version) => Some(CommitMarker(version)),
            Err(e) => {
                // Unknown is safe (every cache reads the database); reconnect next time.
                tracing::debug!(error = %e, "cannot read the database's data_version");
                slot.conn = None;
                None
            }
        };
        slot.last = marker.map(|m| (check, m));
        marker
    }

    async fn read(&self, slot: &mut Slot) -> Result<i64, sqlx::Error> {
        let conn = match &mut slot.conn {
            Some(conn) => conn,
            None => slot.conn.insert(self.connect().await?),
        };
        let row = sqlx::query("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await?;
        row.try_get(0)
    }

    async fn connect(&self) -> Result<sqlx::AnyConnection, sqlx::Error> {
        use sqlx::Executor;
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        // query_only: a commit of this connection would not change its own data_version,
        // so it must never make one.
        conn.execute("PRAGMA busy_timeout=10000; PRAGMA query_only=ON;")
            .await?;
        Ok(conn)
    }
}
