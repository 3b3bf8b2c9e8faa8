//! A small migration runner: sqlx's `migrate!` macro would compile a second copy of SQLite
//! into the proc-macro, which doubles build time on small machines.
//!
//! Each migration runs in its own transaction that first inserts its version row, so two
//! processes starting at once serialise on that insert and the loser skips the migration.

use crate::Result;
use sqlx::{AnyPool, Row};

/// The schema version this build expects after migrating: the last entry's.
pub const SCHEMA_VERSION: i64 = SQLITE[SQLITE.len() - 1].0;

/// (version, name, SQL) for SQLite, in order. Never edit a released entry; add a new one.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "authorization",
        include_str!("../migrations/sqlite/0002_authorization.sql"),
    ),
    (
        3,
        "users",
        include_str!("../migrations/sqlite/0003_users.sql"),
    ),
    (
        4,
        "api_tokens",
        include_str!("../migrations/sqlite/0004_api_tokens.sql"),
    ),
    (
        5,
        "outbox",
        include_str!("../migrations/sqlite/0005_outbox.sql"),
    ),
    (
        6,
        "api_token_revocation",
        include_str!("../migrations/sqlite/0006_api_token_revocation.sql"),
    ),
    (
        7,
        "webhooks_inbound",
        include_str!("../migrations/sqlite/0007_webhooks_inbound.sql"),
    ),
    (
        8,
        "user_last_login",
        include_str!("../migrations/sqlite/0008_user_last_login.sql"),
    ),
    (
        9,
        "refresh_in_doubt",
        include_str!("../migrations/sqlite/0009_refresh_in_doubt.sql"),
    ),
    (
        10,
        "outbox_quota_and_request_hash",
        include_str!("../migrations/sqlite/0010_outbox_quota_and_request_hash.sql"),
    ),
    (
        11,
        "account_delegate",
        include_str!("../migrations/sqlite/0011_account_delegate.sql"),
    ),
    (
        12,
        "proxy_passwords",
        include_str!("../migrations/sqlite/0012_proxy_passwords.sql"),
    ),
    (
        13,
        "audit",
        include_str!("../migrations/sqlite/0013_audit.sql"),
    ),
];

pub(crate) async fn run(pool: &AnyPool) -> Result<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    // One query for what is applied, not one per migration: every command opens the store,
    // and each query is a round trip to the database thread.
    let applied = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>("version"))
        .collect::<std::result::Result<std::collections::HashSet<i64>, _>>()?;
    for (version, name, sql) in SQLITE {
        if applied.contains(version) {
            continue;
        }
        let mut tx = pool.begin().await?;
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
    }
    Ok(())
}

/// The newest applied version, for `/healthz`.
pub(crate) async fn current_version(pool: &AnyPool) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("v")?)
}
