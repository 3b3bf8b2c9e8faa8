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

mod authz;
pub mod backup;
mod changes;
pub mod crypto;
pub mod inbound;
mod migrate;
mod outbox;
pub mod passwords;
mod proxy;
mod rows;
mod users;
pub mod webhooks;

pub use authz::{PendingAuthorization, RefreshInDoubt};
pub use changes::CommitMarker;
use crypto::{CryptoError, KeySource, Keyring, MasterKey};
use mailgate_core::account::{AccountSpec, MailAccount, Problem};
use mailgate_core::app::{AppSpec, OAuthApp};
use mailgate_core::event::{Event, EventKind};
use mailgate_core::{AccountId, AccountState, AppId, Grant, Secret, Timestamp};
pub use migrate::SCHEMA_VERSION;
pub use outbox::{
    Enqueued, NewOutboxMessage, OutboxItem, OutboxQuota, OutboxStatus, ReleasedClaims, request_hash,
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
        "the database URL {0:?} is not supported: use sqlite://PATH (PostgreSQL support is planned)"
    )]
    UnsupportedUrl(String),
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

/// What `keys rotate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    pub new_key_id: String,
    pub old_key_ids: Vec<String>,
    pub reencrypted: usize,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Columns that hold sealed secrets: (table, id column, column). Key rotation walks this
/// list, so a new secret column is added here or it is not rotated.
pub(crate) const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    ("apps", "id", "client_secret"),
    ("apps", "id", "service_account_key"),
    ("oauth_states", "id", "verifier"),
    ("grants", "account_id", "access_token"),
    ("grants", "account_id", "refresh_token"),
    ("webhooks", "id", "secret"),
];

fn seal_context(table: &str, column: &str, id: i64) -> String {
    format!("{table}.{column}:{id}")
}

pub struct Store {
    pool: AnyPool,
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

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(url: &str, ring: Keyring, source: KeySource) -> Result<Store> {
        Self::open_with_connections(url, ring, source, 8).await
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
        Self::open_with_connections(url, ring, source, 1).await
    }

    async fn open_with_connections(
        url: &str,
        ring: Keyring,
        source: KeySource,
        connections: u32,
    ) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = normalise_url(url)?;
        make_database_files_private(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)))
            .before_acquire(|conn, _meta| Box::pin(async move { Ok(fit_for_reuse(conn)) }))
            .connect(&url)
            .await?;
        migrate::run(&pool).await?;
        let file_mtime = mtime(&source);
        Ok(Store {
            pool,
            keys: RwLock::new(LoadedKeys { ring, file_mtime }),
            source,
            writes: WriteHealth::default(),
            // A short command keeps nothing in memory: no connection for the signal.
            changes: match database_file(&url) {
                Some(_) if connections > 1 => changes::CommitSignal::sqlite(&url),
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
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Runs a write with `RETURNING` outside a transaction and returns its first row.
    ///
    /// Not `fetch_optional`: sqlx stops stepping the statement after the first row, and an
    /// autocommit statement that is reset before it finished commits during the reset,
    /// whose error sqlx discards (`ExecuteIter::drop` ignores `sqlite3_reset`). On a full
    /// disk the row came back, the commit failed, and the caller believed a write that was
    /// never stored (the API answered 202 for lost messages, all with the same id).
    /// `fetch_all` steps to the end, where the commit's error is reported.
    pub(crate) async fn write_returning<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Option<AnyRow>> {
        let result = query
            .fetch_all(&self.pool)
            .await
            .map(|rows| rows.into_iter().next())
            .map_err(StoreError::from);
        self.track_write(result)
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

    fn reload_keys_if_changed(&self) -> Result<()> {
        let KeySource::File(path) = &self.source else {
            return Ok(());
        };
        let now = mtime(&self.source);
        let stale = self
            .keys
            .read()
            .map(|k| k.file_mtime != now)
            .unwrap_or(true);
        if stale {
            let ring = crypto::read_key_file(path)?.ok_or_else(|| CryptoError::KeyFile {
                path: path.clone(),
                message: "it was removed while mailgate was running; restore it from a backup"
                    .into(),
            })?;
            if let Ok(mut k) = self.keys.write() {
                *k = LoadedKeys {
                    ring,
                    file_mtime: now,
                };
            }
        }
        Ok(())
    }

    fn seal(&self, table: &str, column: &str, id: i64, secret: &Secret) -> Result<String> {
        self.reload_keys_if_changed()?;
        let keys = self
            .keys
            .read()
            .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
        Ok(keys
            .ring
            .encrypt(&seal_context(table, column, id), secret)?)
    }

    fn open_sealed(&self, table: &str, column: &str, id: i64, stored: &str) -> Result<Secret> {
        let ctx = seal_context(table, column, id);
        let first = {
            let keys = self
                .keys
                .read()
                .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
            keys.ring.decrypt(&ctx, stored)
        };
        match first {
            Err(CryptoError::UnknownKey { .. }) => {
                // Another process may have rotated the keys since we loaded them.
                self.reload_keys_if_changed()?;
                let keys = self
                    .keys
                    .read()
                    .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
                Ok(keys.ring.decrypt(&ctx, stored)?)
            }
            other => Ok(other?),
        }
    }

    // ----- apps -------------------------------------------------------------------------

    pub async fn create_app(&self, spec: &AppSpec, now: Timestamp) -> Result<OAuthApp> {
        let mut tx = self.begin_write().await?;
        ensure_name_free(&mut tx, "apps", "app", spec.name.as_str(), None).await?;
        let row = sqlx::query(
            "INSERT INTO apps (name, kind, tenant, client_id, client_secret, secret_expires, authorize_url, token_url, device_url, jwks_url, userinfo_url, revoke_url, issuer, scopes, extra_params, flow, created_at, updated_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) RETURNING id",
        );
        let row = rows::bind_app(row, spec)
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique(e, "app", spec.name.as_str()))?;
        let id: i64 = row.try_get("id")?;
        if let Some(secret) = &spec.client_secret {
            let sealed = self.seal("apps", "client_secret", id, secret)?;
            sqlx::query("UPDATE apps SET client_secret = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(key) = &spec.service_account_key {
            let sealed = self.seal("apps", "service_account_key", id, key)?;
            sqlx::query("UPDATE apps SET service_account_key = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        record(
            &mut tx,
            now,
            EventKind::AppCreated,
            Some(AppId(id)),
            None,
            &format!("app {} ({}) created", spec.name, spec.kind),
        )
        .await?;
        tx.commit().await?;
        self.app(AppId(id)).await
    }

    pub async fn app(&self, id: AppId) -> Result<OAuthApp> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM apps WHERE id = $1",
            rows::APP_COLUMNS
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "app",
            key: id.to_string(),
        })?;
        self.app_from_row(&row)
    }

    /// By name, or by numeric id.
    pub async fn find_app(&self, key: &str) -> Result<OAuthApp> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM apps WHERE name = $1 OR CAST(id AS TEXT) = $1",
            rows::APP_COLUMNS
        ))
        .bind(key.trim())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "app",
            key: key.to_owned(),
        })?;
        self.app_from_row(&row)
    }

    pub async fn list_apps(&self) -> Result<Vec<OAuthApp>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM apps ORDER BY name",
            rows::APP_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.app_from_row(r)).collect()
    }

    fn app_from_row(&self, row: &AnyRow) -> Result<OAuthApp> {
        let mut app = rows::app(row)?;
        let sealed: Option<String> = row.try_get("client_secret")?;
        app.spec.client_secret = sealed
            .map(|s| self.open_sealed("apps", "client_secret", app.id.0, &s))
            .transpose()?;
        let key: Option<String> = row.try_get("service_account_key")?;
        app.spec.service_account_key = key
            .map(|s| self.open_sealed("apps", "service_account_key", app.id.0, &s))
            .transpose()?;
        Ok(app)
    }

    /// Replaces the app's settings. `spec.client_secret == None` keeps the stored secret
    /// unless `clear_secret` is set (secrets are write-only: the caller never had it).
    pub async fn update_app(
        &self,
        id: AppId,
        spec: &AppSpec,
        clear_secret: bool,
        now: Timestamp,
    ) -> Result<OAuthApp> {
        let previous = self.app(id).await?.spec;
        let previous_expiry = previous.secret_expires;
        let moved = previous.endpoints.changed_destinations(&spec.endpoints);
        let mut tx = self.begin_write().await?;
        if previous_expiry != spec.secret_expires {
            // A new expiry date (a new secret): its warnings start over.
            sqlx::query("UPDATE apps SET secret_warned_days = NULL WHERE id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        ensure_name_free(&mut tx, "apps", "app", spec.name.as_str(), Some(id.0)).await?;
        let q = sqlx::query(
            "UPDATE apps SET name = $1, kind = $2, tenant = $3, client_id = $4, secret_expires = $5, authorize_url = $6, token_url = $7, device_url = $8, jwks_url = $9, userinfo_url = $10, revoke_url = $11, issuer = $12, scopes = $13, extra_params = $14, flow = $15, updated_at = $16 WHERE id = $17",
        );
        let done = rows::bind_app(q, spec)
            .bind(now.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, "app", spec.name.as_str()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "app",
                key: id.to_string(),
            });
        }
        match (&spec.client_secret, clear_secret) {
            (Some(secret), _) => {
                let sealed = self.seal("apps", "client_secret", id.0, secret)?;
                sqlx::query("UPDATE apps SET client_secret = $1 WHERE id = $2")
                    .bind(sealed)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            (None, true) => {
                sqlx::query("UPDATE apps SET client_secret = NULL WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            (None, false) => {}
        }
        if let Some(key) = &spec.service_account_key {
            let sealed = self.seal("apps", "service_account_key", id.0, key)?;
            sqlx::query("UPDATE apps SET service_account_key = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        record(
            &mut tx,
            now,
            EventKind::AppUpdated,
            Some(id),
            None,
            &format!("app {} updated", spec.name),
        )
        .await?;
        if !moved.is_empty() {
            let why = format!(
                "the app's {} changed, so the grants obtained through the old ones were dropped; authorize the account again",
                moved.join(", ")
            );
            let accounts: Vec<i64> = sqlx::query("SELECT id FROM accounts WHERE app_id = $1")
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?;
            for account in accounts {
                drop_grant_in_tx(&mut tx, AccountId(account), &why, now).await?;
            }
        }
        tx.commit().await?;
        self.app(id).await
    }

    /// Removes an app no account uses.
    pub async fn remove_app(&self, id: AppId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let users: Vec<String> =
            sqlx::query("SELECT name FROM accounts WHERE app_id = $1 ORDER BY name")
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("name"))
                .collect::<Result<_, _>>()?;
        if !users.is_empty() {
            return Err(StoreError::InUse(format!(
                "the app is used by account(s) {}; remove them or move them to another app first",
                users.join(", ")
            )));
        }
        let name: Option<String> = sqlx::query("DELETE FROM apps WHERE id = $1 RETURNING name")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("name"))
            .transpose()?;
        let name = name.ok_or_else(|| StoreError::NotFound {
            what: "app",
            key: id.to_string(),
        })?;
        record(
            &mut tx,
            now,
            EventKind::AppRemoved,
            Some(id),
            None,
            &format!("app {name} removed"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- accounts ---------------------------------------------------------------------

    pub async fn create_account(&self, spec: &AccountSpec, now: Timestamp) -> Result<MailAccount> {
        let mut tx = self.begin_write().await?;
        ensure_name_free(&mut tx, "accounts", "account", spec.name.as_str(), None).await?;
        if !exists(&mut tx, "SELECT id FROM apps WHERE id = $1", spec.app_id.0).await? {
            return Err(StoreError::NotFound {
                what: "app",
                key: spec.app_id.to_string(),
            });
        }
        let state = if spec.enabled {
            AccountState::Unauthorized
        } else {
            AccountState::Disabled
        };
        let q = sqlx::query(
            "INSERT INTO accounts (name, description, enabled, mailbox, shared_mailbox, aliases, app_id, inbound_protocol, inbound_host, inbound_port, inbound_tls, outbound_host, outbound_port, outbound_tls, from_name, reply_to, signature, on_received, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20) RETURNING id",
        );
        let row = rows::bind_account(q, spec)
            .bind(state.as_str())
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique(e, "account", spec.name.as_str()))?;
        let id = AccountId(row.try_get("id")?);
        rows::write_account_delegate(&mut tx, id, spec).await?;
        record(
            &mut tx,
            now,
            EventKind::AccountCreated,
            Some(spec.app_id),
            Some(id),
            &format!("account {} ({}) created", spec.name, spec.mailbox),
        )
        .await?;
        tx.commit().await?;
        self.account(id).await
    }

    pub async fn account(&self, id: AccountId) -> Result<MailAccount> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM accounts WHERE id = $1",
            rows::ACCOUNT_COLUMNS
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            key: id.to_string(),
        })?;
        rows::account(&row)
    }

    pub async fn find_account(&self, key: &str) -> Result<MailAccount> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM accounts WHERE name = $1 OR CAST(id AS TEXT) = $1",
            rows::ACCOUNT_COLUMNS
        ))
        .bind(key.trim())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            key: key.to_owned(),
        })?;
        rows::account(&row)
    }

    pub async fn list_accounts(&self) -> Result<Vec<MailAccount>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM accounts ORDER BY name",
            rows::ACCOUNT_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::account).collect()
    }

    /// Replaces the account's settings; enabling or disabling goes through the state machine.
    pub async fn update_account(
        &self,
        id: AccountId,
        spec: &AccountSpec,
        now: Timestamp,
    ) -> Result<MailAccount> {
        let current = self.account(id).await?;
        let mut tx = self.begin_write().await?;
        ensure_name_free(
            &mut tx,
            "accounts",
            "account",
            spec.name.as_str(),
            Some(id.0),
        )
        .await?;
        if !exists(&mut tx, "SELECT id FROM apps WHERE id = $1", spec.app_id.0).await? {
            return Err(StoreError::NotFound {
                what: "app",
                key: spec.app_id.to_string(),
            });
        }
        let has_grant = exists(
            &mut tx,
            "SELECT account_id FROM grants WHERE account_id = $1",
            id.0,
        )
        .await?;
        // A grant belongs to the app it came through: under another app its refresh token
        // would go to that app's token endpoint. Moving the account drops it.
        let app_changed = spec.app_id != current.spec.app_id;
        let mut current_state = current.state;
        if app_changed {
            current_state = drop_grant_in_tx(
                &mut tx,
                id,
                "the account moved to another app, so the grant obtained through the old one was dropped; authorize the account again",
                now,
            )
            .await?;
        }
        // A grant is the signed-in person's: a new delegate (or none) must sign in itself, or
        // mailgate would go on opening the mailbox as someone no longer named.
        let same_person = |a: &Option<mailgate_core::EmailAddress>,
                           b: &Option<mailgate_core::EmailAddress>| match (
            a, b,
        ) {
            (Some(a), Some(b)) => a.same_mailbox(b.as_str()),
            (None, None) => true,
            _ => false,
        };
        let delegate_changed = !same_person(&spec.delegate, &current.spec.delegate);
        if delegate_changed && !app_changed {
            current_state = drop_grant_in_tx(
                &mut tx,
                id,
                "the account's delegate (who signs in for it) changed, so the grant of the previous one was dropped; authorize the account again as the new delegate",
                now,
            )
            .await?;
        }
        let has_grant = has_grant && !app_changed && !delegate_changed;
        let state = match (current.spec.enabled, spec.enabled) {
            (true, false) => current_state.apply(mailgate_core::AccountEvent::Disabled),
            (false, true) => {
                current_state.apply(mailgate_core::AccountEvent::Enabled { has_grant })
            }
            _ => Ok(current_state),
        }
        .map_err(|e| StoreError::InUse(e.to_string()))?;
        let q = sqlx::query(
            "UPDATE accounts SET name = $1, description = $2, enabled = $3, mailbox = $4, shared_mailbox = $5, aliases = $6, app_id = $7, inbound_protocol = $8, inbound_host = $9, inbound_port = $10, inbound_tls = $11, outbound_host = $12, outbound_port = $13, outbound_tls = $14, from_name = $15, reply_to = $16, signature = $17, on_received = $18, state = $19, updated_at = $20 WHERE id = $21",
        );
        rows::bind_account(q, spec)
            .bind(state.as_str())
            .bind(now.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, "account", spec.name.as_str()))?;
        rows::write_account_delegate(&mut tx, id, spec).await?;
        record(
            &mut tx,
            now,
            EventKind::AccountUpdated,
            Some(spec.app_id),
            Some(id),
            &format!("account {} updated", spec.name),
        )
        .await?;
        if state != current_state {
            record(
                &mut tx,
                now,
                EventKind::AccountStateChanged,
                Some(spec.app_id),
                Some(id),
                &format!(
                    "account {} is now {} (was {})",
                    spec.name, state, current_state
                ),
            )
            .await?;
        }
        tx.commit().await?;
        self.account(id).await
    }

    /// Removes the account and its grant.
    pub async fn remove_account(&self, id: AccountId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM grants WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM proxy_passwords WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("DELETE FROM accounts WHERE id = $1 RETURNING name, app_id")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "account",
                key: id.to_string(),
            })?;
        let name: String = row.try_get("name")?;
        let app_id: i64 = row.try_get("app_id")?;
        record(
            &mut tx,
            now,
            EventKind::AccountRemoved,
            Some(AppId(app_id)),
            Some(id),
            &format!("account {name} removed"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a state-machine event to an account and records the result, its problem
    /// (or clears it) and an event, in one transaction. Returns the new state.
    pub async fn apply_account_event(
        &self,
        id: AccountId,
        event: mailgate_core::AccountEvent,
        problem: Option<&Problem>,
        now: Timestamp,
    ) -> Result<AccountState> {
        let mut tx = self.begin_write().await?;
        let state = apply_in_tx(&mut tx, id, event, problem, now).await?;
        tx.commit().await?;
        Ok(state)
    }

    // ----- grants -----------------------------------------------------------------------

    /// Stores (replaces) an account's grant; access and refresh token are written together.
    pub async fn put_grant(
        &self,
        grant: &Grant,
        access_issued_at: Option<Timestamp>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.replace_grant_in_tx(&mut tx, grant, access_issued_at)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the account's grant inside the caller's transaction, tokens sealed.
    pub(crate) async fn replace_grant_in_tx(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        grant: &Grant,
        access_issued_at: Option<Timestamp>,
    ) -> Result<()> {
        let id = grant.account_id.0;
        let access = grant
            .access_token
            .as_ref()
            .map(|s| self.seal("grants", "access_token", id, s))
            .transpose()?;
        let refresh = grant
            .refresh_token
            .as_ref()
            .map(|s| self.seal("grants", "refresh_token", id, s))
            .transpose()?;
        let identity = serde_json::to_string(&grant.identity)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("DELETE FROM grants WHERE account_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO grants (account_id, access_token, access_expires_at, access_issued_at, refresh_token, scopes, identity, authorized_at, authorized_by, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)",
        )
        .bind(id)
        .bind(access)
        .bind(grant.access_expires_at.map(|t| t.0))
        .bind(access_issued_at.map(|t| t.0))
        .bind(refresh)
        .bind(grant.scopes.to_string())
        .bind(identity)
        .bind(grant.authorized_at.0)
        .bind(grant.authorized_by.clone())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn grant(&self, id: AccountId) -> Result<Option<Grant>> {
        let Some(row) = sqlx::query("SELECT account_id, access_token, access_expires_at, refresh_token, scopes, identity, authorized_at, authorized_by FROM grants WHERE account_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let access: Option<String> = row.try_get("access_token")?;
        let refresh: Option<String> = row.try_get("refresh_token")?;
        let mut grant = rows::grant(&row)?;
        grant.access_token = access
            .map(|s| self.open_sealed("grants", "access_token", id.0, &s))
            .transpose()?;
        grant.refresh_token = refresh
            .map(|s| self.open_sealed("grants", "refresh_token", id.0, &s))
            .transpose()?;
        Ok(Some(grant))
    }

    // ----- events -----------------------------------------------------------------------

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

    // ----- keys -------------------------------------------------------------------------

    /// Re-encrypts every sealed value under `new_ring`'s primary key in one transaction.
    /// Returns how many values were re-encrypted. The caller has already made `new_ring`
    /// durable (key file written, its lock held) so a crash at any point leaves every value
    /// readable; the key file is read again just before the commit, and a file that no
    /// longer holds every key of `new_ring` rolls the re-encryption back.
    pub async fn reencrypt_all(&self, new_ring: Keyring, now: Timestamp) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let mut count = 0;
        for (table, id_col, col) in SEALED_COLUMNS {
            let rows = sqlx::query(&format!(
                "SELECT {id_col} AS id, {col} AS v FROM {table} WHERE {col} IS NOT NULL"
            ))
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let stored: String = row.try_get("v")?;
                let ctx = seal_context(table, col, id);
                let plain = new_ring.decrypt(&ctx, &stored)?;
                let resealed = new_ring.encrypt(&ctx, &plain)?;
                sqlx::query(&format!(
                    "UPDATE {table} SET {col} = $1 WHERE {id_col} = $2"
                ))
                .bind(resealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                count += 1;
            }
        }
        let primary = new_ring.primary_id().to_owned();
        record(
            &mut tx,
            now,
            EventKind::KeysRotated,
            None,
            None,
            &format!("{count} secret(s) re-encrypted under key {primary}"),
        )
        .await?;
        if let KeySource::File(path) = &self.source {
            let on_disk = crypto::read_key_file(path)?;
            let on_disk_ids = on_disk.as_ref().map(|r| r.key_ids()).unwrap_or_default();
            if on_disk.as_ref().map(|r| r.primary_id()) != Some(new_ring.primary_id())
                || new_ring
                    .key_ids()
                    .iter()
                    .any(|id| !on_disk_ids.contains(id))
            {
                // Dropping the transaction rolls it back: every value stays as it was.
                return Err(CryptoError::KeyFile {
                    path: path.clone(),
                    message: "it changed while the secrets were being re-encrypted (another mailgate wrote it); nothing was re-encrypted, run the command again".into(),
                }
                .into());
            }
        }
        tx.commit().await?;
        if let Ok(mut k) = self.keys.write() {
            *k = LoadedKeys {
                ring: new_ring,
                file_mtime: mtime(&self.source),
            };
        }
        Ok(count)
    }

    /// `keys rotate`: makes `new_key` the primary and re-encrypts every secret under it.
    ///
    /// With a key file, the file is rewritten first (atomically, new key first, old keys
    /// kept), then the database is re-encrypted in one transaction: a crash at any point
    /// leaves every value readable. Old keys stay in the file for decryption until
    /// [`Store::prune_keys`], so a server still running with the old key never writes a
    /// value nobody can read. With `MAILGATE_MASTER_KEY` the operator sets the new value.
    ///
    /// The key-file lock is held from reading the file to the commit, so a concurrent
    /// `keys rotate`, `keys prune` or first start waits instead of losing keys.
    pub async fn rotate_keys(&self, new_key: MasterKey, now: Timestamp) -> Result<Rotation> {
        let lock = match &self.source {
            KeySource::File(path) => Some(crypto::lock_key_file(path)?),
            KeySource::Env => None,
        };
        let current = match (&self.source, &lock) {
            (KeySource::File(path), Some(lock)) => crypto::load_or_create_locked(path, lock)?,
            _ => self
                .keys
                .read()
                .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?
                .ring
                .clone(),
        };
        let old_ids: Vec<String> = current.key_ids().iter().map(|s| s.to_string()).collect();
        let combined = current.with_primary(new_key);
        if let (KeySource::File(path), Some(lock)) = (&self.source, &lock) {
            crypto::write_key_file(path, &combined, lock)?;
        }
        let new_id = combined.primary_id().to_owned();
        let reencrypted = self.reencrypt_all(combined, now).await?;
        drop(lock);
        Ok(Rotation {
            new_key_id: new_id,
            old_key_ids: old_ids,
            reencrypted,
        })
    }

    /// Drops keys from the key file that no stored value uses any more. Holds the key-file
    /// lock throughout, so a rotation in another process cannot run between the look at
    /// which keys are in use and the write.
    pub async fn prune_keys(&self) -> Result<Vec<String>> {
        let KeySource::File(path) = &self.source else {
            return Ok(Vec::new());
        };
        let lock = crypto::lock_key_file(path)?;
        let ring = crypto::load_or_create_locked(path, &lock)?;
        let in_use = self.key_ids_in_use().await?;
        let kept = ring.retain(&in_use);
        let dropped: Vec<String> = ring
            .key_ids()
            .iter()
            .filter(|id| !kept.key_ids().contains(id))
            .map(|s| s.to_string())
            .collect();
        if !dropped.is_empty() {
            crypto::write_key_file(path, &kept, &lock)?;
        }
        Ok(dropped)
    }

    /// Key ids that sealed values still reference (to know which old keys may be dropped).
    pub async fn key_ids_in_use(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for (table, _, col) in SEALED_COLUMNS {
            let rows = sqlx::query(&format!(
                "SELECT {col} AS v FROM {table} WHERE {col} IS NOT NULL"
            ))
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let v: String = row.try_get("v")?;
                if let Some(id) = Keyring::key_id_of(&v)
                    && !ids.iter().any(|x| x == id)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    pub fn key_source(&self) -> &KeySource {
        &self.source
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

/// Accepts `sqlite://PATH`, `sqlite:PATH` or a bare path; creates the file if missing.
fn normalise_url(url: &str) -> Result<String> {
    let u = url.trim();
    if u.starts_with("postgres://") || u.starts_with("postgresql://") {
        return Err(StoreError::UnsupportedUrl(redact_url(u)));
    }
    let path = u
        .strip_prefix("sqlite://")
        .or_else(|| u.strip_prefix("sqlite:"))
        .unwrap_or(u);
    if path.contains("://") || path.is_empty() {
        return Err(StoreError::UnsupportedUrl(redact_url(u)));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut out = format!("sqlite://{path}?mode=rwc");
    if !query.is_empty() && !query.contains("mode=") {
        out.push('&');
        out.push_str(query);
    }
    Ok(out)
}

/// The database file of a [`normalise_url`] output, if it has one of its own.
fn database_file(url: &str) -> Option<&std::path::Path> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() || path.starts_with(':') || path.starts_with("file:") {
        return None;
    }
    Some(std::path::Path::new(path))
}

/// Creates the SQLite database file 0600 before SQLite does (SQLite would use the umask,
/// typically 0644) and tightens an existing one and its `-wal`/`-shm` files: they hold the
/// sealed secrets and the account list. SQLite gives the `-wal` and `-shm` files it creates
/// the database file's mode, so they follow. `url` is [`normalise_url`]'s output.
fn make_database_files_private(url: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    // In-memory databases (`:memory:`) and URI forms have no file of their own to protect.
    if path.is_empty() || path.starts_with(':') || path.starts_with("file:") {
        return Ok(());
    }
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

/// Deletes the account's grant and pending authorizations because where its tokens would go
/// changed (`why` says what),
/// and moves the account to `unauthorized` with that as its problem and an event. A disabled
/// account stays disabled (it comes back `unauthorized` when enabled). Returns the state.
pub(crate) async fn drop_grant_in_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: AccountId,
    why: &str,
    now: Timestamp,
) -> Result<AccountState> {
    let dropped = sqlx::query("DELETE FROM grants WHERE account_id = $1")
        .bind(id.0)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    // An authorization started under the old endpoints is not finished under the new ones
    // (its code and PKCE verifier would go to the new token endpoint).
    sqlx::query("DELETE FROM oauth_states WHERE account_id = $1")
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT state, name, app_id FROM accounts WHERE id = $1")
        .bind(id.0)
        .fetch_one(&mut **tx)
        .await?;
    let state: String = row.try_get("state")?;
    let state = AccountState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("accounts.state: {state:?}")))?;
    if matches!(
        state,
        AccountState::Active | AccountState::Refreshing | AccountState::ReauthRequired
    ) {
        let problem = Problem {
            code: GRANT_DROPPED.to_owned(),
            remediation: why.to_owned(),
            detail: None,
            at: now,
        };
        return apply_in_tx(
            tx,
            id,
            mailgate_core::AccountEvent::Deauthorized,
            Some(&problem),
            now,
        )
        .await;
    }
    if dropped > 0 {
        let name: String = row.try_get("name")?;
        let app_id: i64 = row.try_get("app_id")?;
        record(
            tx,
            now,
            EventKind::AccountStateChanged,
            Some(AppId(app_id)),
            Some(id),
            &format!("account {name} is {state}: {why} [{GRANT_DROPPED}]"),
        )
        .await?;
    }
    Ok(state)
}

/// The problem code of an account whose grant was dropped by [`drop_grant_in_tx`].
pub const GRANT_DROPPED: &str = "grant_dropped_endpoints_changed";

/// The state transition, its problem and its event, inside the caller's transaction.
pub(crate) async fn apply_in_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: AccountId,
    event: mailgate_core::AccountEvent,
    problem: Option<&Problem>,
    now: Timestamp,
) -> Result<AccountState> {
    let row = sqlx::query("SELECT state, name, app_id FROM accounts WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            key: id.to_string(),
        })?;
    let current: String = row.try_get("state")?;
    let name: String = row.try_get("name")?;
    let app_id: i64 = row.try_get("app_id")?;
    let current = AccountState::parse(&current)
        .ok_or_else(|| StoreError::Corrupt(format!("accounts.state: {current:?}")))?;
    let next = current
        .apply(event)
        .map_err(|e| StoreError::InUse(e.to_string()))?;
    sqlx::query("UPDATE accounts SET state = $1, problem_code = $2, problem_remediation = $3, problem_detail = $4, problem_at = $5, updated_at = $6 WHERE id = $7")
        .bind(next.as_str())
        .bind(problem.map(|p| p.code.clone()))
        .bind(problem.map(|p| p.remediation.clone()))
        .bind(problem.and_then(|p| p.detail.clone()))
        .bind(problem.map(|p| p.at.0))
        .bind(now.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    if next != current || problem.is_some() {
        let kind = if next == AccountState::ReauthRequired {
            EventKind::AccountReauthRequired
        } else {
            EventKind::AccountStateChanged
        };
        let msg = match problem {
            Some(p) => format!(
                "account {name} is {next} (was {current}): {} [{}]",
                p.remediation, p.code
            ),
            None => format!("account {name} is {next} (was {current})"),
        };
        let data = problem.map(|p| {
            serde_json::json!({
                "state": next.as_str(),
                "previous_state": current.as_str(),
                "problem": { "code": p.code, "remediation": p.remediation, "detail": p.detail },
            })
        });
        record_with(tx, now, kind, Some(AppId(app_id)), Some(id), &msg, data).await?;
    }
    Ok(next)
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
    sqlx::query(
        "INSERT INTO events (at, kind, app_id, account_id, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now.0)
    .bind(kind.as_str())
    .bind(app.map(|a| a.0))
    .bind(account.map(|a| a.0))
    .bind(message.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
