//! mailgate's persistence.
//!
//! One [`Store`] over sqlx's `Any` driver: SQLite is the embedded default and PostgreSQL
//! follows by adding its migration list (see `migrations/`), because every query here keeps
//! to the SQL both accept (`$n` placeholders, `RETURNING`, INTEGER unix-second timestamps,
//! JSON in TEXT). Callers never see SQL or rows; they get domain types.
//!
//! Secrets are sealed by [`crypto::Keyring`] before they reach SQL and opened after; no
//! plaintext secret is ever bound into a statement. Every write that changes state records
//! its event in the same transaction.
//!
//! One module per entity (`apps`, `accounts`, `grants`, `events`, `keys`, `authz`, `users`,
//! `outbox`, `webhooks`, `inbound`, `proxy`), each an `impl Store` block; this file keeps
//! what they share: opening the pool, write health, and the lookup helpers
//! (`fetch_or_not_found`, `ensure_name_free`).

mod accounts;
mod apps;
pub mod audit;
mod authz;
mod backend;
pub mod backup;
mod callback_lookup;
mod changes;
pub mod crypto;
mod events;
pub mod export;
mod grants;
pub mod inbound;
mod keys;
mod migrate;
mod outbox;
pub mod passwords;
mod proxy;
mod rows;
pub mod test_results;
mod users;
pub mod webhooks;

pub(crate) use accounts::apply_in_tx;
pub use audit::{Actor, EventFilter};
pub use authz::{PendingAuthorization, RefreshInDoubt};
pub use backend::Backend;
use backend::DatabaseUrl;
pub use changes::CommitMarker;
use crypto::{CryptoError, KeySource, Keyring};
pub(crate) use events::{record, record_for_account, record_with};
pub(crate) use grants::drop_grant_in_tx;
pub use grants::{GRANT_DROPPED, VersionedGrant};
pub use keys::Rotation;
pub(crate) use keys::SEALED_COLUMNS;
use mailgate_core::Timestamp;
pub use migrate::SCHEMA_VERSION;
pub use outbox::{
    Enqueued, NewOutboxMessage, OutboxEvent, OutboxItem, OutboxOutcome, OutboxQuota, OutboxStatus,
    ReleasedClaims, claim_sql, request_hash,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};
pub use users::{LoginAttempt, LoginThrottle, SessionInfo, SetupLink};
pub use webhooks::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, DeliverySummary};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no {what} named or numbered {key:?}")]
    NotFound { what: &'static str, key: String },
    #[error("{} {what} named {name:?} already exists; choose another name", article(.what))]
    Duplicate { what: &'static str, name: String },
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the database holds a value mailgate cannot read ({0}); was it edited by hand?")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "the database URL {0:?} is not supported: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    #[error(
        "the database's schema is version {found}, newer than this mailgate knows ({known}): a newer mailgate has used it; run that version (or newer), never an older one, against this database"
    )]
    SchemaNewer { found: i64, known: i64 },
}

impl From<mailgate_core::random::RandomFailed> for StoreError {
    fn from(e: mailgate_core::random::RandomFailed) -> Self {
        StoreError::Crypto(CryptoError::from(e))
    }
}

/// Why a write could not be stored: the API answers 507 for [`StorageFailure::Full`] and
/// 503 for [`StorageFailure::Unavailable`], both with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// No space left (SQLITE_FULL, PostgreSQL's `disk_full`).
    Full,
    /// An I/O error, a file that cannot be opened, a lost connection or an exhausted pool.
    Unavailable,
}

impl StoreError {
    /// Whether this error means the database cannot store anything right now (as opposed
    /// to a refused value or a missing row), and which kind of failure it is.
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        let StoreError::Database(e) = self else {
            return None;
        };
        match e {
            sqlx::Error::Database(db) => {
                let code = db.code()?;
                // SQLite reports extended result codes; the primary code is the low byte.
                if let Ok(n) = code.parse::<i32>() {
                    return match n & 0xff {
                        13 => Some(StorageFailure::Full), // SQLITE_FULL
                        // SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_CORRUPT's
                        // cousin SQLITE_NOTADB is not here: it is not a transient failure.
                        10 | 14 | 8 => Some(StorageFailure::Unavailable),
                        _ => None,
                    };
                }
                // PostgreSQL SQLSTATE: 53100 disk_full, 53xxx insufficient resources, 08xxx
                // connection exceptions, 57P0x the server shutting down.
                if code == "53100" {
                    Some(StorageFailure::Full)
                } else if code.starts_with("53")
                    || code.starts_with("08")
                    || code.starts_with("57P")
                {
                    Some(StorageFailure::Unavailable)
                } else {
                    None
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed
            | sqlx::Error::InvalidSavePointStatement => Some(StorageFailure::Unavailable),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The migrations this store applied when it was opened, for `mailgate migrate`.
    migrated: Vec<(i64, &'static str)>,
    keys: RwLock<LoadedKeys>,
    source: KeySource,
    writes: WriteHealth,
    /// Tells whether anything was committed since a cached value was read (`changes.rs`).
    changes: changes::CommitSignal,
    /// Live API tokens by hash, each with the commit marker it was read at
    /// (`api_token_by_hash`): a revocation by any process is a commit, so it is seen at once.
    api_tokens: Mutex<std::collections::HashMap<String, users::CachedApiToken>>,
    /// Held while an API-token lookup reads the database.
    api_token_fill: tokio::sync::Mutex<()>,
}

/// Whether the last tracked write failed for lack of space or an I/O error. Set by the
/// writes the background jobs and the send API depend on (see [`Store::track_write`]),
/// cleared by the next one that succeeds or by [`Store::probe_write`]. While it is set the
/// outbox worker does not claim, no token is refreshed, and `/healthz` says `degraded`.
struct WriteHealth {
    failing: AtomicBool,
    /// The error of the failed write, for `/healthz` (SQLite's words: no secret in them).
    last_error: Mutex<Option<String>>,
    /// When [`Store::check_writable`] last probed (unix seconds).
    last_probe: AtomicI64,
    /// When a tracked write last failed for lack of space or an I/O error (unix seconds).
    last_failure_at: AtomicI64,
    log: mailgate_core::log_limit::LogLimit,
}

impl Default for WriteHealth {
    fn default() -> Self {
        WriteHealth {
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            last_probe: AtomicI64::new(0),
            last_failure_at: AtomicI64::new(0),
            log: mailgate_core::log_limit::LogLimit::new(30),
        }
    }
}

struct LoadedKeys {
    ring: Keyring,
    /// Modification time of the key file when it was read; a change (a `keys rotate` run
    /// by another process) makes the next seal reload it.
    file_mtime: Option<SystemTime>,
}

fn mtime(source: &KeySource) -> Option<SystemTime> {
    match source {
        KeySource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        KeySource::Env => None,
    }
}

/// Who a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// `serve`: migrated, with a commit signal for its caches.
    LongLived,
    /// A short command: migrated, no commit signal.
    Command,
    /// `doctor`: the schema left as found.
    Unmigrated,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date, for a
    /// long-lived process (`serve`), with the commit signal its caches rely on.
    ///
    /// On SQLite that is one connection for every statement. SQLite runs one writer at a
    /// time whatever the pool holds, and each sqlx connection has a thread of its own that
    /// every statement is handed to: over eight connections, consecutive statements wake
    /// eight threads in turn, each asleep since its last one, while one connection's
    /// thread finds the next statement already queued. Sending through the API reached
    /// 57–64 % of direct SMTP throughput with eight connections and 69–72 % with one (issue
    /// 15, docs/benchmarks.md); a separate one-connection pool for writes alone did not
    /// help (54–60 %), so it was the hand-offs, not lock waits. No store method needs a
    /// second connection while it holds one (see [`Store::open_single_connection`]).
    /// PostgreSQL, a server of its own, gets eight.
    pub async fn open(url: &str, ring: Keyring, source: KeySource) -> Result<Store> {
        Self::open_as(url, ring, source, Opened::LongLived).await
    }

    /// One connection to an existing database, its schema left as it is: for `mailgate
    /// doctor`, which reports a schema behind (or ahead of) this binary instead of
    /// migrating it under a running `serve`.
    pub async fn open_unmigrated(url: &str, ring: Keyring, source: KeySource) -> Result<Store> {
        Self::open_as(url, ring, source, Opened::Unmigrated).await
    }

    /// [`Store::open`] over one connection, for a short command (`token`, `events`, …):
    /// each SQLite connection costs its open, WAL and PRAGMA setup, more than such a
    /// command's own queries. Safe because no method of the store needs a second
    /// connection while it holds one: a transaction runs all its statements on its own
    /// connection (`&mut *tx`), never through the pool (the store's tests run on one
    /// connection to keep it so).
    ///
    /// Such a store has no commit signal (`changes.rs`): it keeps nothing in memory for
    /// long, so its caches always read the database.
    pub async fn open_single_connection(
        url: &str,
        ring: Keyring,
        source: KeySource,
    ) -> Result<Store> {
        Self::open_as(url, ring, source, Opened::Command).await
    }

    async fn open_as(url: &str, ring: Keyring, source: KeySource, opened: Opened) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = DatabaseUrl::parse(url)?;
        // Only a long-lived process on PostgreSQL runs statements side by side ([`Store::open`]).
        let connections = match (opened, url.backend) {
            (Opened::LongLived, Backend::Postgres) => 8,
            _ => 1,
        };
        if let Some(file) = url.sqlite_file() {
            make_database_files_private(file)?;
        }
        let backend = url.backend;
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => sqlite_pragmas(conn).await,
                        Backend::Postgres => Ok(()),
                    }
                })
            })
            .before_acquire(|conn, _meta| Box::pin(async move { Ok(fit_for_reuse(conn)) }))
            .connect(&url.url)
            .await?;
        let migrated = if opened != Opened::Unmigrated {
            migrate::run(&pool, backend).await?
        } else {
            Vec::new()
        };
        let file_mtime = mtime(&source);
        Ok(Store {
            pool,
            backend,
            migrated,
            keys: RwLock::new(LoadedKeys { ring, file_mtime }),
            source,
            writes: WriteHealth::default(),
            // A short command keeps nothing in memory: no connection for the signal. On
            // PostgreSQL there is no signal yet, so its caches always read the database.
            changes: match url.sqlite_file() {
                Some(_) if opened == Opened::LongLived => changes::CommitSignal::sqlite(&url.url),
                _ => changes::CommitSignal::Off,
            },
            api_tokens: Mutex::new(std::collections::HashMap::new()),
            api_token_fill: tokio::sync::Mutex::new(()),
        })
    }

    /// Notes the outcome of a write: a storage failure marks the store as failing writes,
    /// a success clears it; each change is logged, at most once per 30 s (on a nearly full
    /// disk small writes can succeed between failing large ones). Returns `result`.
    pub(crate) fn track_write<T>(&self, result: Result<T>) -> Result<T> {
        let now = mailgate_core::Clock::now(&mailgate_core::SystemClock);
        match &result {
            Ok(_) => {
                if self.writes.failing.swap(false, Ordering::AcqRel)
                    && let Some(left_out) = self.writes.log.allow("recovered", now)
                {
                    tracing::info!(left_out, "the database accepts writes again");
                }
            }
            Err(e) if e.storage_failure().is_some() => {
                if let Ok(mut last) = self.writes.last_error.lock() {
                    *last = Some(e.to_string());
                }
                self.writes.last_failure_at.store(now.0, Ordering::Release);
                if !self.writes.failing.swap(true, Ordering::AcqRel)
                    && let Some(left_out) = self.writes.log.allow("failing", now)
                {
                    tracing::error!(error = %e, left_out, "the database cannot store writes; sending and token refresh pause until it can");
                }
            }
            Err(_) => {}
        }
        result
    }

    /// `Some(error)` while writes fail for lack of space or an I/O error (see
    /// [`WriteHealth`]); `None` when the last tracked write succeeded.
    pub fn write_failure(&self) -> Option<String> {
        if !self.writes.failing.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.writes
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "the database cannot store writes".to_owned()),
        )
    }

    /// For `/healthz`: `Err` with the reason while the database cannot be relied on to
    /// store writes. Probes with a real write when writes were failing, or when the last
    /// probe is older than `max_age_secs` (a full disk shows only when something writes,
    /// and an idle server writes nothing). A write that failed less than `max_age_secs`
    /// ago also counts: on a nearly full disk small writes succeed in space a failed large
    /// one left in SQLite's WAL while larger ones still fail, and the answer should not
    /// flap with them.
    pub async fn check_writable(
        &self,
        now: Timestamp,
        max_age_secs: i64,
    ) -> std::result::Result<(), String> {
        let last = self.writes.last_probe.load(Ordering::Acquire);
        if self.write_failure().is_some() || last.saturating_add(max_age_secs) <= now.0 {
            self.writes.last_probe.store(now.0, Ordering::Release);
            self.probe_write(now).await.map_err(|e| e.to_string())?;
        }
        let failed_at = self.writes.last_failure_at.load(Ordering::Acquire);
        if failed_at > 0 && now.0 < failed_at.saturating_add(max_age_secs) {
            let error = self
                .writes
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "a write failed".to_owned());
            return Err(format!(
                "{error} ({} s ago)",
                now.0.saturating_sub(failed_at)
            ));
        }
        Ok(())
    }

    /// A small real write (one row of `leases`, committed), to learn whether the database
    /// accepts writes again after [`Store::write_failure`]. Its outcome is tracked.
    pub async fn probe_write(&self, now: Timestamp) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ('store:write-probe', '', $1)
             ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(StoreError::from);
        self.track_write(result)
    }

    /// A transaction that writes. On SQLite it starts with `BEGIN IMMEDIATE`, taking the
    /// write lock at once (waiting up to the busy timeout for another writer): a deferred
    /// transaction that reads before it writes fails with `SQLITE_BUSY_SNAPSHOT` ("database
    /// is locked", not retried by the busy timeout) when another connection — the server's
    /// other jobs, or a CLI process — wrote in between. Every transaction of the store
    /// writes, so all of them start here.
    pub(crate) async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        backend::begin_write(&self.pool, self.backend).await
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The (version, name) of each migration applied when this store was opened: empty
    /// when the schema was already current.
    pub fn migrations_applied_at_open(&self) -> &[(i64, &'static str)] {
        &self.migrated
    }

    /// Runs a write with `RETURNING` outside a transaction and returns its first row.
    ///
    /// Not `fetch_optional`: sqlx stops stepping the statement after the first row, and an
    /// autocommit statement that is reset before it finished commits during the reset,
    /// whose error sqlx discards (`ExecuteIter::drop` ignores `sqlite3_reset`). On a full
    /// disk the row came back, the commit failed, and the caller believed a write that was
    /// never stored (the API answered 202 for lost messages, all with the same id).
    /// `fetch_all` steps to the end, where the commit's error is reported.
    ///
    /// On PostgreSQL the statement runs inside [`Store::begin_write`]'s lock: these are the
    /// claims (`UPDATE … WHERE id = (SELECT … LIMIT 1)`) and the quota-checked insert, whose
    /// subquery reads a snapshot that a concurrent instance could change before the row is
    /// written — two instances would claim the same message. Under the lock they run one at
    /// a time, as on SQLite.
    pub(crate) async fn write_returning<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Option<AnyRow>> {
        let result = match self.backend {
            Backend::Sqlite => query.fetch_all(&self.pool).await,
            Backend::Postgres => {
                async {
                    let mut tx = self.begin_write().await?;
                    let rows = query.fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(rows)
                }
                .await
            }
        };
        let result = result
            .map(|rows| rows.into_iter().next())
            .map_err(StoreError::from);
        self.track_write(result)
    }

    /// Runs a guarded `UPDATE` (its `WHERE` names the row and the lease holder or version
    /// that must still match): true if it changed the one row.
    pub(crate) async fn write_guarded<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<bool> {
        let done = query.execute(&self.pool).await.map_err(StoreError::from);
        Ok(self.track_write(done)?.rows_affected() == 1)
    }

    /// Runs a claim: an `UPDATE … RETURNING` whose `$1` is the lease holder, `$2` the
    /// lease's end and `$3` now (a webhook delivery's claim; the outbox's has the same three).
    pub(crate) async fn claim_row(
        &self,
        sql: &str,
        holder: &str,
        lease_secs: i64,
        now: Timestamp,
    ) -> Result<Option<AnyRow>> {
        self.write_returning(
            sqlx::query(sql)
                .bind(holder.to_owned())
                .bind(now.0 + lease_secs)
                .bind(now.0),
        )
        .await
    }

    /// Counts for `/metrics`: (metric, label value, count) of accounts by state, outbox
    /// messages by status and webhook deliveries by status. Counts only: no names.
    pub async fn metric_counts(&self) -> Result<Vec<(&'static str, String, i64)>> {
        let mut out = Vec::new();
        for (metric, sql) in [
            (
                "accounts",
                "SELECT state AS k, COUNT(*) AS n FROM accounts GROUP BY state",
            ),
            (
                "outbox",
                "SELECT status AS k, COUNT(*) AS n FROM outbox GROUP BY status",
            ),
            (
                "webhook_deliveries",
                "SELECT status AS k, COUNT(*) AS n FROM webhook_deliveries GROUP BY status",
            ),
        ] {
            for row in sqlx::query(sql).fetch_all(&self.pool).await? {
                out.push((metric, row.try_get("k")?, row.try_get("n")?));
            }
        }
        Ok(out)
    }

    /// A trivial query, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The newest applied schema migration.
    pub async fn schema_version(&self) -> Result<i64> {
        migrate::current_version(&self.pool).await
    }

    /// The state of the newest commit to the database, by any process (`changes.rs`):
    /// read it before reading what a cache keeps, and keep the value only while
    /// [`Store::unchanged_since`] holds.
    pub async fn commit_marker(&self) -> Option<CommitMarker> {
        self.changes.marker().await
    }

    /// Nothing has been committed since `seen` was taken (false when unknown).
    pub async fn unchanged_since(&self, seen: Option<CommitMarker>) -> bool {
        self.changes.unchanged_since(seen).await
    }

    /// The id of the newest event in the log (0 when empty). Every write that changes an
    /// account, an app or a webhook records an event in its transaction, so a reader that
    /// sees the same id has missed no such change (the inbound supervisor relies on it).
    pub async fn newest_event_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Decides, before an idle connection is handed out, whether it may be used.
///
/// When COMMIT fails with SQLITE_FULL or an I/O error, SQLite may already have rolled the
/// transaction back by itself. sqlx (0.8) lowers its transaction depth only when COMMIT or
/// ROLLBACK succeeds, so the ROLLBACK it queues when the `Transaction` is dropped fails
/// ("no transaction is active") and the connection returns to the pool with depth 1: every
/// later `BEGIN IMMEDIATE` on it fails with "attempted to call begin_with at non-zero
/// transaction depth", and a ROLLBACK that failed for another reason would leave a real
/// open transaction for the next caller. The pool pings a connection when it comes back
/// and again before handing it out (`test_before_acquire`, on by default), which runs the
/// queued ROLLBACK first (a connection's commands run in order); a connection still counted
/// as in a transaction is then refused, and the pool closes it, which ends any transaction
/// SQLite still had open, and takes another.
fn fit_for_reuse(conn: &sqlx::AnyConnection) -> bool {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        tracing::warn!(
            "closing a database connection left inside a failed transaction (its rollback failed)"
        );
        return false;
    }
    true
}

/// Every connection's settings, in one string: one round trip to the connection's thread
/// (SQLite runs each statement of it). WAL lets readers run beside the single writer;
/// busy_timeout makes writers from other processes wait instead of failing at once;
/// foreign keys are off by default in SQLite.
pub const CONNECTION_PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;";

async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute(CONNECTION_PRAGMAS).await?;
    Ok(())
}

/// Creates the SQLite database file 0600 before SQLite does (SQLite would use the umask,
/// typically 0644) and tightens an existing one and its `-wal`/`-shm` files: they hold the
/// sealed secrets and the account list. SQLite gives the `-wal` and `-shm` files it creates
/// the database file's mode, so they follow.
fn make_database_files_private(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = path.to_string_lossy();
    let path = path.as_ref();
    let io_error = |file: &str, e: std::io::Error| {
        StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("{file}: {e}"),
        )))
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    for file in [
        path.to_owned(),
        format!("{path}-wal"),
        format!("{path}-shm"),
    ] {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io_error(&file, e))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&file, e)),
        }
    }
    Ok(())
}

/// A database URL may hold a password: show scheme and host only.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
            format!("{scheme}://{}", host.split('/').next().unwrap_or(""))
        }
        None => "<unrecognised URL>".to_owned(),
    }
}

/// The SQLite file a URL points at, if it is one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let u = url.trim();
    let path = u
        .strip_prefix("sqlite://")
        .or_else(|| u.strip_prefix("sqlite:"))
        .unwrap_or(u);
    (!path.contains("://")).then(|| PathBuf::from(path.split('?').next().unwrap_or(path)))
}

/// Refuses a name another row of `table` already has (a clear error before the UNIQUE
/// constraint would give a cryptic one).
async fn ensure_name_free(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &'static str,
    what: &'static str,
    name: &str,
    except_id: Option<i64>,
) -> Result<()> {
    let sql = format!("SELECT id FROM {table} WHERE name = $1 AND id <> $2");
    if exists(tx, &sql, (name, except_id.unwrap_or(-1))).await? {
        return Err(StoreError::Duplicate {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

async fn exists<'a, A>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sql: &'a str,
    args: A,
) -> Result<bool>
where
    A: rows::BindAll<'a>,
{
    Ok(args
        .bind_all(sqlx::query(sql))
        .fetch_optional(&mut **tx)
        .await?
        .is_some())
}

/// The one row `query` selects (or deletes and returns), or [`StoreError::NotFound`] naming
/// `what` and `key`: every lookup of one entity by id or name goes through here.
pub(crate) async fn fetch_or_not_found<'q, 'c, E>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    executor: E,
    what: &'static str,
    key: impl std::fmt::Display,
) -> Result<AnyRow>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    query
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what,
            key: key.to_string(),
        })
}

/// "an app", "an API token", but "a user".
fn article(what: &str) -> &'static str {
    match what.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'A' | 'E' | 'I' | 'O') => "an",
        _ => "a",
    }
}

pub(crate) fn unique(e: sqlx::Error, what: &'static str, name: &str) -> StoreError {
    if e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
    {
        StoreError::Duplicate {
            what,
            name: name.to_owned(),
        }
    } else {
        StoreError::Database(e)
    }
}
