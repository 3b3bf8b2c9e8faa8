//! Backups: a consistent copy of the live database (`VACUUM INTO`, which reads one
//! snapshot while writers go on), and a look inside a backup file before it is restored.
//!
//! Sealed values are copied as they are stored, so a backup holds ciphertext only; the
//! keys stay in the key file (or `MAILGATE_MASTER_KEY`), which the backup never contains.

use crate::crypto::Keyring;
use crate::{Result, SEALED_COLUMNS, Store, StoreError, migrate};
use sqlx::any::AnyConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use std::path::Path;
use std::str::FromStr;

/// What a backup file holds, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The newest schema migration applied in it.
    pub schema_version: i64,
    /// The key ids its sealed values were encrypted under, sorted.
    pub key_ids: Vec<String>,
    pub accounts: i64,
}

impl Store {
    /// Writes a consistent copy of the database to `path`, which must not exist or be
    /// empty (SQLite refuses anything else). `VACUUM INTO` reads inside one read
    /// transaction, so the copy is the database as of one commit, taken without stopping
    /// `serve`'s writers (WAL mode lets them go on).
    pub async fn backup_into(&self, path: &Path) -> Result<()> {
        let target = path.to_str().ok_or_else(|| {
            StoreError::InUse(format!(
                "the backup path {} is not valid UTF-8; choose another",
                path.display()
            ))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Reads a backup file read-only: refuses a file that is not a mailgate database, and
/// reports its schema version and the key ids every sealed column uses.
pub async fn inspect_backup(path: &Path) -> Result<BackupInfo> {
    sqlx::any::install_default_drivers();
    let not_mailgate = || {
        StoreError::InUse(format!(
            "{} is not a mailgate backup (no schema_migrations table)",
            path.display()
        ))
    };
    let url = format!("sqlite://{}?mode=ro", path.display());
    let options = AnyConnectOptions::from_str(&url)?;
    let mut conn = match options.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Err(StoreError::InUse(format!(
                "cannot open {} as a database: {e}",
                path.display()
            )));
        }
    };
    // A file that is not SQLite fails here ("file is not a database").
    let has_migrations =
        sqlx::query("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| {
                StoreError::InUse(format!(
                    "{} is not a mailgate backup: {e}",
                    path.display()
                ))
            })?
            .try_get::<i64, _>("n")?;
    if has_migrations == 0 {
        return Err(not_mailgate());
    }
    let info = read_info(&mut conn).await;
    let _ = conn.close().await;
    info
}

async fn read_info(conn: &mut sqlx::AnyConnection) -> Result<BackupInfo> {
    let schema_version =
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await?
            .try_get::<i64, _>("v")?;
    let mut key_ids: Vec<String> = Vec::new();
    for (table, _, col) in SEALED_COLUMNS {
        // An older schema may lack a table or column added since; it holds no value there.
        let present =
            sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info($1) WHERE name = $2")
                .bind(table.to_string())
                .bind(col.to_string())
                .fetch_one(&mut *conn)
                .await?
                .try_get::<i64, _>("n")?;
        if present == 0 {
            continue;
        }
        let rows = sqlx::query(&format!(
            "SELECT {col} AS v FROM {table} WHERE {col} IS NOT NULL"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let v: String = row.try_get("v")?;
            if let Some(id) = Keyring::key_id_of(&v)
                && !key_ids.iter().any(|x| x == id)
            {
                key_ids.push(id.to_owned());
            }
        }
    }
    key_ids.sort();
    let accounts = match sqlx::query("SELECT COUNT(*) AS n FROM accounts")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(row) => row.try_get::<i64, _>("n")?,
        Err(_) => 0,
    };
    Ok(BackupInfo {
        schema_version,
        key_ids,
        accounts,
    })
}

/// The schema version this build knows (a backup from a newer mailgate is refused).
pub fn known_schema_version() -> i64 {
    migrate::SCHEMA_VERSION
}
