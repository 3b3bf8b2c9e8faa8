//! `mailgate export FILE` and `mailgate import FILE`: all of mailgate's data from one
//! database to another, SQLite or PostgreSQL in either direction (`store/src/export.rs`).
//!
//! The file is JSON lines, 0600: a header (format, schema version), one line per row
//! (`{"t": table, "c": [[column, value], …]}`; text and integers as JSON, bytes as
//! `{"base64": …}`, reals as `{"real": …}`), and a trailer with the row count and the key
//! ids the sealed values need, which also tells a complete file from a cut one. Sealed
//! values stay sealed; the key file is never inside.

use crate::cmd_backup::{
    Progress, configured_keys, create_private, io_failure, partial_path, refuse_existing,
    remove_if_present,
};
use crate::config::Config;
use crate::{CmdResult, Failure};
use base64::Engine as _;
use mailgate_store::Store;
use mailgate_store::export::{ExportRow, TABLES, Value};
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

const FORMAT: &str = "mailgate-export";
const FORMAT_VERSION: i64 = 1;

fn encode(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(n) => json!(n),
        Value::Real(x) => json!({ "real": x }),
        Value::Text(t) => json!(t),
        Value::Bytes(b) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn decode(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Null => Value::Null,
        Json::Number(n) => Value::Integer(n.as_i64()?),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) => match (o.get("real"), o.get("base64")) {
            (Some(x), None) => Value::Real(x.as_f64()?),
            (None, Some(Json::String(b))) => {
                Value::Bytes(base64::engine::general_purpose::STANDARD.decode(b).ok()?)
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// The key id of a sealed value (`mg1:<key id>:<base64>`), if the text is one.
fn sealed_key_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("mg1:")?;
    rest.split_once(':').map(|(id, _)| id)
}

pub async fn export(store: &Store, file: &Path, force: bool) -> CmdResult {
    refuse_existing(file, force)?;
    let partial = partial_path(file, &format!("partial-{}", std::process::id()));
    // A leftover of an earlier run with the same pid would make create_new fail.
    remove_if_present(&partial).map_err(|e| io_failure("cannot remove", &partial, e))?;
    let out = create_private(&partial).map_err(|e| io_failure("cannot create", &partial, e))?;
    let mut out = std::io::BufWriter::new(out);
    let schema_version = store.schema_version().await?;
    let progress = Progress::new();
    let mut rows = 0u64;
    let mut key_ids = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let written = async {
        writeln!(
            out,
            "{}",
            json!({ "format": FORMAT, "version": FORMAT_VERSION, "schema_version": schema_version })
        )?;
        let result = store
            .export_rows(|row| {
                for (_, value) in &row.columns {
                    if let Value::Text(t) = value
                        && let Some(id) = sealed_key_id(t)
                    {
                        key_ids.insert(id.to_owned());
                    }
                }
                let columns: Vec<Json> = row
                    .columns
                    .iter()
                    .map(|(name, value)| json!([name, encode(value)]))
                    .collect();
                writeln!(out, "{}", json!({ "t": row.table, "c": columns }))?;
                rows += 1;
                tables.insert(row.table);
                if rows.is_multiple_of(500) {
                    progress.line(&format!("export: {rows} rows ({})", row.table));
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            return Err(std::io::Error::other(e.to_string()));
        }
        writeln!(
            out,
            "{}",
            json!({ "end": true, "rows": rows, "key_ids": key_ids })
        )?;
        out.flush()?;
        out.get_ref().sync_all()
    }
    .await;
    progress.finish();
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, file)) {
        let _ = std::fs::remove_file(&partial);
        return Err(io_failure("cannot write", file, e));
    }
    out!(
        "Exported {rows} rows of {} tables to {} (schema version {schema_version}).",
        tables.len(),
        file.display()
    );
    if !key_ids.is_empty() {
        out!(
            "Its secrets stay sealed under key id(s) {}: the database you import it into needs the same key file (or MAILGATE_MASTER_KEY). The key is not in the export; keep it apart.",
            key_ids.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// What the first pass over an export found: its schema version, row count, key ids.
struct Summary {
    schema_version: i64,
    rows: u64,
    key_ids: Vec<String>,
}

fn bad_file(file: &Path, line: usize, what: &str) -> Failure {
    Failure::BadInput(format!(
        "FILE: {} line {line}: {what}; is it a `mailgate export` file, complete and unedited?",
        file.display()
    ))
}

/// Reads the whole file once: the header, that every line is a row of a known table, and
/// the trailer (a file cut short has none).
fn summarize(file: &Path) -> Result<Summary, Failure> {
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::BadInput(format!("FILE: cannot open {}: {e}", file.display())))?;
    let mut lines = BufReader::new(f).lines().enumerate();
    let header: Json = match lines.next() {
        Some((_, Ok(l))) => serde_json::from_str(&l).map_err(|_| bad_file(file, 1, "no header"))?,
        _ => return Err(bad_file(file, 1, "empty")),
    };
    if header["format"] != FORMAT || header["version"] != FORMAT_VERSION {
        return Err(bad_file(file, 1, "not a mailgate export (format 1)"));
    }
    let schema_version = header["schema_version"]
        .as_i64()
        .ok_or_else(|| bad_file(file, 1, "no schema version"))?;
    let mut rows = 0u64;
    for (i, line) in lines {
        let line = line.map_err(|e| io_failure("cannot read", file, e))?;
        let v: Json = serde_json::from_str(&line).map_err(|_| bad_file(file, i + 1, "not JSON"))?;
        if v["end"] == true {
            if v["rows"].as_u64() != Some(rows) {
                return Err(bad_file(file, i + 1, "the row count does not match"));
            }
            let key_ids = v["key_ids"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Summary {
                schema_version,
                rows,
                key_ids,
            });
        }
        parse_row(&v).ok_or_else(|| bad_file(file, i + 1, "not a row of a known table"))?;
        rows += 1;
    }
    Err(bad_file(
        file,
        rows as usize + 2,
        "it ends before its last line (cut short?)",
    ))
}

fn parse_row(v: &Json) -> Option<ExportRow> {
    let name = v["t"].as_str()?;
    let table = TABLES.iter().find(|t| **t == name)?;
    let columns = v["c"]
        .as_array()?
        .iter()
        .map(|c| {
            let pair = c.as_array()?;
            Some((pair.first()?.as_str()?.to_owned(), decode(pair.get(1)?)?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ExportRow { table, columns })
}

pub async fn import(config: &Config, file: &Path, force: bool) -> CmdResult {
    let summary = summarize(file)?;
    let known = mailgate_store::SCHEMA_VERSION;
    if summary.schema_version != known {
        return Err(Failure::BadInput(format!(
            "FILE: the export has schema version {}, this mailgate {known}; export and import with the same mailgate version (upgrade the source first, then export again)",
            summary.schema_version
        )));
    }
    // The keys first, without creating a key file: one made now could open nothing.
    let (ring, keys_from) = configured_keys(config)?;
    let missing = crate::cmd_backup::keys_missing(&ring, &summary.key_ids);
    if !missing.is_empty() {
        return Err(Failure::BadInput(format!(
            "key file: {keys_from} lacks key id(s) {} that the export's secrets are sealed with; use the source's key file. Nothing was changed.",
            missing.join(", ")
        )));
    }
    let store = crate::open_command_store(config).await?;
    let f = std::fs::File::open(file).map_err(|e| io_failure("cannot open", file, e))?;
    let progress = Progress::new();
    let mut done = 0u64;
    let rows = BufReader::new(f)
        .lines()
        .skip(1)
        .take(summary.rows as usize)
        .map(|line| {
            done += 1;
            if done.is_multiple_of(500) {
                progress.line(&format!("import: {done} of {} rows", summary.rows));
            }
            let line = line.map_err(|e| {
                mailgate_store::StoreError::Corrupt(format!("reading the export: {e}"))
            })?;
            serde_json::from_str::<Json>(&line)
                .ok()
                .as_ref()
                .and_then(parse_row)
                .ok_or_else(|| {
                    mailgate_store::StoreError::Corrupt(
                        "the export changed while it was read".into(),
                    )
                })
        });
    let result = store.import_rows(rows, force).await;
    progress.finish();
    store.close().await;
    let written = match result {
        Ok(n) => n,
        Err(mailgate_store::StoreError::InUse(why)) => {
            return Err(Failure::BadInput(format!(
                "database_url: {why}. Nothing was changed."
            )));
        }
        Err(e) => return Err(e.into()),
    };
    out!(
        "Imported {written} rows into {}.",
        mailgate_store::redact_url(&config.database_url)
    );
    Ok(())
}
