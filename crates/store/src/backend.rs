//! Which database the store runs on, and the few places where SQLite and PostgreSQL need
//! different words for the same guarantee. Every query of the store is written once, in the
//! SQL both accept (see the crate's top comment); what differs is here:
//!
//! - **The URL**: `sqlite://PATH` (or a bare path) and `postgres://…`/`postgresql://…`.
//! - **The write lock**: on SQLite a writing transaction starts with `BEGIN IMMEDIATE`, so
//!   writers run one at a time across every process and each sees all earlier commits before
//!   it reads. On PostgreSQL the same guarantee comes from a transaction-scoped advisory lock
//!   ([`WRITE_LOCK`]) that every writing transaction takes as its first statement, across
//!   all instances on the database: under READ COMMITTED each later statement of the
//!   transaction reads a snapshot taken after the lock was granted, so it sees every commit
//!   of the writers before it — the same serial order SQLite gives. Work claims (outbox,
//!   webhook deliveries, leases) are single statements or run inside such a transaction, so
//!   no two instances claim the same row.
//! - **Migrations**: each backend has its own list with the same versions (a test checks),
//!   and on PostgreSQL the whole run holds a session advisory lock ([`MIGRATION_LOCK`]), so
//!   instances starting at once against an empty database do not race on `CREATE TABLE`.

use crate::{Result, StoreError, redact_url};

/// The database behind a [`crate::Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Key of the transaction-scoped advisory lock every writing transaction takes on
/// PostgreSQL ("mailgate" in ASCII). Other applications on the same database would have to
/// pick the same number to collide with it.
pub(crate) const WRITE_LOCK: i64 = 0x6d61_696c_6761_7465;
/// Key of the session advisory lock held while migrating ("mailmigr").
pub(crate) const MIGRATION_LOCK: i64 = 0x6d61_696c_6d69_6772;

/// A database URL checked and put in the form sqlx opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    pub backend: Backend,
    pub url: String,
}

impl DatabaseUrl {
    /// Accepts `sqlite://PATH`, `sqlite:PATH` or a bare path (the file is created if
    /// missing), and `postgres://…` / `postgresql://…` (passed on as written: user,
    /// password, host, port, database and options such as `sslmode` are libpq's).
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let u = url.trim();
        if let Some(rest) = u
            .strip_prefix("postgres://")
            .or_else(|| u.strip_prefix("postgresql://"))
        {
            if rest.is_empty() {
                return Err(StoreError::UnsupportedUrl(redact_url(u)));
            }
            return Ok(DatabaseUrl {
                backend: Backend::Postgres,
                url: u.to_owned(),
            });
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
        Ok(DatabaseUrl {
            backend: Backend::Sqlite,
            url: out,
        })
    }

    /// The SQLite database file, if this is SQLite with a file of its own (not `:memory:`
    /// or a URI form).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let path = self.url.strip_prefix("sqlite://").unwrap_or(&self.url);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if path.is_empty() || path.starts_with(':') || path.starts_with("file:") {
            return None;
        }
        Some(std::path::Path::new(path))
    }
}

/// Starts a writing transaction with the backend's write lock (see the module comment).
pub(crate) async fn begin_write(
    pool: &sqlx::AnyPool,
    backend: Backend,
) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            // Selected from, not selected: the function returns `void`, a type sqlx's Any
            // driver cannot carry in a row.
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        let sqlite = DatabaseUrl::parse("/var/lib/mailgate/mailgate.db").unwrap();
        assert_eq!(sqlite.backend, Backend::Sqlite);
        assert_eq!(
            sqlite.url,
            "sqlite:///var/lib/mailgate/mailgate.db?mode=rwc"
        );
        assert_eq!(
            sqlite.sqlite_file(),
            Some(std::path::Path::new("/var/lib/mailgate/mailgate.db"))
        );
        for pg in [
            "postgres://mailgate:pw@db.internal:5432/mailgate",
            "postgresql://mailgate@127.0.0.1/mailgate?sslmode=require",
        ] {
            let parsed = DatabaseUrl::parse(pg).unwrap();
            assert_eq!(parsed.backend, Backend::Postgres);
            assert_eq!(parsed.url, pg);
            assert_eq!(parsed.sqlite_file(), None);
        }
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_its_password() {
        let err = DatabaseUrl::parse("mysql://root:hunter2@db/mail").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mysql://db"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(DatabaseUrl::parse("postgres://").is_err());
    }
}
