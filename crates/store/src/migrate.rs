//! A small migration runner: sqlx's `migrate!` macro would compile a second copy of SQLite
//! into the proc-macro, which doubles build time on small machines.
//!
//! Each migration runs in its own transaction that first inserts its version row, so two
//! processes starting at once serialise on that insert and the loser skips the migration.

use crate::Result;
use crate::backend::{Backend, MIGRATION_LOCK};
use sqlx::{AnyPool, Row};

/// The schema version this build expects after migrating: the last entry's.
pub const SCHEMA_VERSION: i64 = SQLITE[SQLITE.len() - 1].0;

/// Defines the two lists, `SQLITE` and `POSTGRES`, of (version, name, SQL) in order, from one
/// list of (version, name, file): each migration has a file of that name under
/// `migrations/sqlite/` and its twin under `migrations/postgres/`, so the two cannot drift
/// apart in version or name. Never edit a released entry; add a new one.
macro_rules! migrations {
    ($($version:literal $name:literal $file:literal,)*) => {
        const SQLITE: &[(i64, &str, &str)] = &[$((
            $version,
            $name,
            include_str!(concat!("../migrations/sqlite/", $file)),
        )),*];
        const POSTGRES: &[(i64, &str, &str)] = &[$((
            $version,
            $name,
            include_str!(concat!("../migrations/postgres/", $file)),
        )),*];
    };
}

migrations! {
    1 "initial" "0001_initial.sql",
    2 "authorization" "0002_authorization.sql",
    3 "users" "0003_users.sql",
    4 "api_tokens" "0004_api_tokens.sql",
    5 "outbox" "0005_outbox.sql",
    6 "api_token_revocation" "0006_api_token_revocation.sql",
    7 "webhooks_inbound" "0007_webhooks_inbound.sql",
    8 "user_last_login" "0008_user_last_login.sql",
    9 "refresh_in_doubt" "0009_refresh_in_doubt.sql",
    10 "outbox_quota_and_request_hash" "0010_outbox_quota_and_request_hash.sql",
    11 "account_delegate" "0011_account_delegate.sql",
    12 "proxy_passwords" "0012_proxy_passwords.sql",
    13 "audit" "0013_audit.sql",
    14 "test_results" "0014_test_results.sql",
    15 "test_runs" "0015_test_runs.sql",
    16 "outbox_pending" "0016_outbox_pending.sql",
}

/// The table of applied versions, in each backend's integer type.
const SQLITE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)";
const POSTGRES_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Applies what is missing; returns the (version, name) of each migration this call applied.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<Vec<(i64, &'static str)>> {
    // All on one connection: the store may have only one (`open_single_connection`).
    let mut conn = pool.acquire().await?;
    match backend {
        Backend::Sqlite => apply(&mut conn, SQLITE, SQLITE_LEDGER).await,
        Backend::Postgres => {
            // The connection holds a session lock for the whole run: a second instance
            // starting at once waits here, then finds everything applied. (SQLite needs no
            // such lock: each migration's version row is inserted under its write lock.)
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
            let result = apply(&mut conn, POSTGRES, POSTGRES_LEDGER).await;
            let unlocked = sqlx::query("SELECT 1 AS unlocked FROM pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await;
            let applied = result?;
            unlocked?;
            Ok(applied)
        }
    }
}

async fn apply(
    conn: &mut sqlx::AnyConnection,
    migrations: &[(i64, &'static str, &'static str)],
    ledger: &'static str,
) -> Result<Vec<(i64, &'static str)>> {
    // One query for what is applied, not one per migration: every command opens the store,
    // and each query is a round trip to the database thread. The ledger is created only
    // when that query fails (a new database), not tried on every open.
    const APPLIED: &str = "SELECT version FROM schema_migrations";
    let rows = match sqlx::query(APPLIED).fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(_) => {
            sqlx::raw_sql(ledger).execute(&mut *conn).await?;
            sqlx::query(APPLIED).fetch_all(&mut *conn).await?
        }
    };
    let applied = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("version"))
        .collect::<std::result::Result<std::collections::HashSet<i64>, _>>()?;
    // A newer mailgate migrated this database: its tables may mean things this build does
    // not know (a column it would leave unset, a state it would misread), so it stops here.
    let known = migrations.last().map_or(0, |m| m.0);
    if let Some(&found) = applied.iter().filter(|v| **v > known).max() {
        return Err(crate::StoreError::SchemaNewer { found, known });
    }
    let mut done = Vec::new();
    for (version, name, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let claimed = sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0) ON CONFLICT (version) DO NOTHING RETURNING version")
            .bind(*version)
            .bind(*name)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_none() {
            continue; // another process applied it meanwhile
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        tracing::info!(version, name, "applied database migration");
        tx.commit().await?;
        done.push((*version, *name));
    }
    Ok(done)
}

/// The newest applied version, for `/healthz`.
pub(crate) async fn current_version(pool: &AnyPool) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("v")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration added for one database and forgotten for the other would leave the two
    /// schemas apart; the versions and names must match one for one.
    #[test]
    fn both_databases_have_the_same_migrations() {
        let names = |list: &[(i64, &str, &str)]| {
            list.iter()
                .map(|(v, n, _)| (*v, n.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(SQLITE), names(POSTGRES));
        for (version, name, sql) in POSTGRES {
            let code: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            assert!(
                !code.contains("AUTOINCREMENT") && !code.contains("BLOB"),
                "PostgreSQL migration {version} ({name}) uses SQLite-only SQL"
            );
        }
    }
}
