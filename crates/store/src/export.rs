//! Moving all of mailgate's data between databases (SQLite ↔ PostgreSQL): `mailgate export`
//! reads every row of every table, `mailgate import` writes them into an empty database of
//! the same schema version.
//!
//! Rows travel as they are stored: sealed columns stay sealed (`mg1:<key id>:…`, bound to
//! their table, column and row id, which the import keeps), so the export holds no secret
//! in the clear and is useless without the key file, which is never inside it. What is
//! left out: `schema_migrations` (the target has its own) and `leases` (claims of running
//! processes, meaningless elsewhere).
//!
//! The import runs in one transaction under the write lock: all rows or none. On PostgreSQL
//! the identity sequences are moved past the imported ids afterwards, so new rows do not
//! collide with them.

use crate::{Backend, Result, Store, StoreError};
use futures_util::TryStreamExt;
use sqlx::any::{AnyRow, AnyTypeInfoKind};
use sqlx::{Column, Row};

/// Every table an export carries, parents before children (the order an import inserts
/// in, so foreign keys hold). A table missing here is caught by a test.
pub const TABLES: &[&str] = &[
    "settings",
    "users",
    "sessions",
    "login_failures",
    "api_tokens",
    "apps",
    "accounts",
    "grants",
    "oauth_states",
    "proxy_passwords",
    "events",
    "outbox",
    "webhooks",
    "webhook_deliveries",
    "webhook_attempts",
    "inbound_state",
    "inbound_seen",
    "test_results",
    "test_runs",
];

/// Tables that are deliberately not exported (see the module comment).
pub const NOT_EXPORTED: &[&str] = &["schema_migrations", "leases"];

/// Tables whose `id` is an identity column (PostgreSQL) / AUTOINCREMENT (SQLite).
const WITH_IDENTITY: &[&str] = &[
    "users",
    "api_tokens",
    "apps",
    "accounts",
    "oauth_states",
    "events",
    "outbox",
    "webhooks",
    "webhook_deliveries",
    "webhook_attempts",
];

/// One exported row: its table, and its columns in the table's order.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub table: &'static str,
    pub columns: Vec<(String, Value)>,
}

/// A column's value, as the portable schema stores them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Store {
    /// The tables of the database, as the database lists them (for the test that keeps
    /// [`TABLES`] complete).
    pub async fn table_names(&self) -> Result<Vec<String>> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("name")?))
            .collect()
    }

    /// Streams every row of every table in [`TABLES`] to `each`, table by table, each
    /// table read in one pass (rows are not all held in memory). Each table is read in its
    /// own statement: a copy taken while `serve` writes may mix moments; stop `serve` (or
    /// take it from a backup) for an exact copy.
    pub async fn export_rows(
        &self,
        mut each: impl FnMut(ExportRow) -> std::io::Result<()>,
    ) -> Result<()> {
        for table in TABLES {
            let sql = format!("SELECT * FROM {table}");
            let mut rows = sqlx::query(&sql).fetch(&self.pool);
            while let Some(row) = rows.try_next().await? {
                let columns = row_values(&row)?;
                each(ExportRow { table, columns }).map_err(|e| {
                    StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("writing the export: {e}"),
                    )))
                })?;
            }
        }
        Ok(())
    }

    /// Writes `rows` into this database in one transaction: all or nothing. With
    /// `replace`, every exported table is emptied first; without it, a database holding
    /// data is refused. Returns how many rows were written.
    pub async fn import_rows(
        &self,
        rows: impl IntoIterator<Item = Result<ExportRow>>,
        replace: bool,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        if replace {
            for table in TABLES.iter().rev() {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
        } else {
            for table in TABLES {
                let sql = format!("SELECT 1 AS one FROM {table} LIMIT 1");
                if sqlx::query(&sql).fetch_optional(&mut *tx).await?.is_some() {
                    return Err(StoreError::InUse(format!(
                        "the database already holds data (table {table}); import into an empty database, or pass --force to replace everything in it"
                    )));
                }
            }
        }
        let mut written = 0u64;
        for row in rows {
            let row = row?;
            let names: Vec<&str> = row.columns.iter().map(|(n, _)| n.as_str()).collect();
            if names.is_empty()
                || names
                    .iter()
                    .any(|n| !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(StoreError::Corrupt(format!(
                    "a row of {} has no columns or a column name that is not a name",
                    row.table
                )));
            }
            // NULL is written as such, not bound: a bound NULL has a type (text, say) that
            // PostgreSQL refuses for a column of another.
            let mut placeholders = Vec::with_capacity(names.len());
            let mut n = 0;
            for (_, value) in &row.columns {
                if *value == Value::Null {
                    placeholders.push("NULL".to_owned());
                } else {
                    n += 1;
                    placeholders.push(format!("${n}"));
                }
            }
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                row.table,
                names.join(", "),
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (_, value) in row.columns {
                query = match value {
                    Value::Null => query,
                    Value::Integer(n) => query.bind(n),
                    Value::Real(x) => query.bind(x),
                    Value::Text(t) => query.bind(t),
                    Value::Bytes(b) => query.bind(b),
                };
            }
            query.execute(&mut *tx).await?;
            written += 1;
        }
        if self.backend() == Backend::Postgres {
            for table in WITH_IDENTITY {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) AS next FROM {table}"
                );
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(written)
    }
}

/// The row's columns with their values, read by the type the database reports.
fn row_values(row: &AnyRow) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        let kind = column.type_info().kind();
        let value = match kind {
            AnyTypeInfoKind::Null => Value::Null,
            AnyTypeInfoKind::Bool => row
                .try_get::<Option<bool>, _>(i)?
                .map_or(Value::Null, |b| Value::Integer(i64::from(b))),
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => row
                .try_get::<Option<i64>, _>(i)?
                .map_or(Value::Null, Value::Integer),
            AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => row
                .try_get::<Option<f64>, _>(i)?
                .map_or(Value::Null, Value::Real),
            AnyTypeInfoKind::Text => row
                .try_get::<Option<String>, _>(i)?
                .map_or(Value::Null, Value::Text),
            AnyTypeInfoKind::Blob => row
                .try_get::<Option<Vec<u8>>, _>(i)?
                .map_or(Value::Null, Value::Bytes),
        };
        out.push((column.name().to_owned(), value));
    }
    Ok(out)
}
