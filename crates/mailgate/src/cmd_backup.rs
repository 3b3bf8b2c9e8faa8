//! `mailgate backup FILE` and `mailgate restore FILE`.
//!
//! A backup is a plain SQLite database written by `VACUUM INTO` (one consistent snapshot,
//! taken while `serve` keeps writing). Sealed secrets stay sealed in it and the key file is
//! never part of it, so restoring needs the key file kept apart; `restore` checks that the
//! key file holds every key id the backup's sealed values use before it changes anything.

use crate::config::Config;
use crate::{CmdResult, Failure};
use mailgate_store::Store;
use mailgate_store::backup::{BackupInfo, inspect_backup, known_schema_version};
use mailgate_store::crypto::{self, KeySource, Keyring};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Progress lines go to stderr only when a person watches it; scripts see nothing extra.
/// Also used by `keys rotate`.
pub(crate) struct Progress {
    shown: bool,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            shown: std::io::stderr().is_terminal(),
        }
    }

    /// Rewrites the current line (`\r`), so a long run shows one moving line, not a log.
    pub(crate) fn line(&self, text: &str) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}\x1b[K");
            let _ = err.flush();
        }
    }

    pub(crate) fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

pub(crate) fn io_failure(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::Runtime(format!("{what} {}: {e}", path.display()))
}

/// A name next to `file` for writing before the rename that makes it visible, so a failed
/// or interrupted run never leaves a half-written FILE.
pub(crate) fn partial_path(file: &Path, suffix: &str) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mailgate-backup".into());
    file.with_file_name(format!(".{name}.{suffix}"))
}

pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Refuses to write over FILE unless --force.
pub(crate) fn refuse_existing(file: &Path, force: bool) -> CmdResult {
    if file.exists() && !force {
        return Err(Failure::BadInput(format!(
            "FILE: {} already exists; choose another name or pass --force to replace it",
            file.display()
        )));
    }
    Ok(())
}

pub(crate) fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub async fn backup(store: &Store, file: &Path, force: bool) -> CmdResult {
    if store.backend() == mailgate_store::Backend::Postgres {
        return Err(Failure::BadInput(
            "database_url: backup copies a SQLite database; this one is PostgreSQL: back it up with \
             PostgreSQL's own tools (pg_dump, or your provider's snapshots), or copy mailgate's data \
             to a file with `mailgate export FILE`"
                .into(),
        ));
    }
    refuse_existing(file, force)?;
    let partial = partial_path(file, &format!("partial-{}", std::process::id()));
    // A leftover of an earlier run with the same pid would make create_new fail.
    remove_if_present(&partial).map_err(|e| io_failure("cannot remove", &partial, e))?;
    // Created empty and 0600 first: SQLite writes into an empty file and keeps its mode,
    // where a file it created itself would follow the umask (often world-readable).
    create_private(&partial).map_err(|e| io_failure("cannot create", &partial, e))?;
    let progress = Progress::new();
    progress.line(&format!("Writing a snapshot to {} ...", file.display()));
    let written = store.backup_into(&partial).await;
    progress.finish();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::Runtime(format!("backup: {e}")));
    }
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            io_failure("cannot write", file, e)
        })?;
    let info = inspect_backup(file).await?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    out!(
        "Backup written to {} ({size} bytes, schema version {}, {} account(s)).",
        file.display(),
        info.schema_version,
        info.accounts
    );
    let keys_from = match store.key_source() {
        KeySource::Env => "MAILGATE_MASTER_KEY".to_owned(),
        KeySource::File(p) => format!("the key file {}", p.display()),
    };
    if info.key_ids.is_empty() {
        out!("It holds no sealed secrets.");
    } else {
        out!(
            "Its secrets are sealed under key id(s) {}; restoring it needs them.",
            info.key_ids.join(", ")
        );
    }
    out!(
        "The backup does not contain the keys: keep {keys_from} apart from it (not on the same disk or in the same archive), and keep old keys as long as backups need them."
    );
    Ok(())
}

/// The keys the restored instance will have: `MAILGATE_MASTER_KEY` or the key file, which
/// must already exist (a new one could not open anything the backup holds).
pub(crate) fn configured_keys(config: &Config) -> Result<(Keyring, String), Failure> {
    if let Some(k) = &config.master_key {
        let ring = Keyring::from_env_value(k.expose())
            .map_err(|e| Failure::BadInput(format!("MAILGATE_MASTER_KEY: {e}")))?;
        return Ok((ring, "MAILGATE_MASTER_KEY".into()));
    }
    let path = config.key_file();
    match crypto::read_key_file(&path) {
        Ok(Some(ring)) => Ok((ring, format!("the key file {}", path.display()))),
        Ok(None) => Err(Failure::BadInput(format!(
            "key file: {} does not exist; put the key file kept apart from the backup there (restore never creates one)",
            path.display()
        ))),
        Err(e) => Err(Failure::BadInput(e.to_string())),
    }
}

/// The key ids of `needed` that `ring` lacks (a backup's or an export's sealed values).
pub(crate) fn keys_missing<'a>(ring: &Keyring, needed: &'a [String]) -> Vec<&'a str> {
    let have = ring.key_ids();
    needed
        .iter()
        .map(String::as_str)
        .filter(|id| !have.contains(id))
        .collect()
}

/// Everything `restore` refuses, checked before anything is written.
fn check_restorable(info: &BackupInfo, ring: &Keyring, keys_from: &str) -> CmdResult {
    let known = known_schema_version();
    if info.schema_version > known {
        return Err(Failure::BadInput(format!(
            "FILE: the backup has schema version {}, newer than this mailgate knows ({known}); restore it with the mailgate version that wrote it or a newer one",
            info.schema_version
        )));
    }
    let missing = keys_missing(ring, &info.key_ids);
    let have = ring.key_ids();
    if !missing.is_empty() {
        return Err(Failure::BadInput(format!(
            "key file: {keys_from} lacks key id(s) {} that the backup's secrets are sealed with (it has {}); use the key file kept with this backup's keys. Nothing was changed.",
            missing.join(", "),
            if have.is_empty() {
                "none".to_owned()
            } else {
                have.join(", ")
            }
        )));
    }
    Ok(())
}

pub async fn restore(config: &Config, file: &Path, force: bool) -> CmdResult {
    if !file.is_file() {
        return Err(Failure::BadInput(format!(
            "FILE: {} does not exist or is not a file",
            file.display()
        )));
    }
    let info = inspect_backup(file).await?;
    let (ring, keys_from) = configured_keys(config)?;
    check_restorable(&info, &ring, &keys_from)?;
    let database = mailgate_store::sqlite_path(&config.database_url).ok_or_else(|| {
        Failure::BadInput("database_url: restore writes a SQLite database file; set database_url to sqlite://PATH (for PostgreSQL, restore with its own tools, or load a `mailgate export` file with `mailgate import`)".into())
    })?;
    let data_dir = &config.data_dir;
    if !data_dir.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(data_dir)
            .and_then(|()| {
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| io_failure("cannot create the data directory", data_dir, e))?;
    }
    // Held until the restore is done, so a `serve` cannot start on a half-restored database.
    let _serve_lock = match crate::instance::exclusive_serve(data_dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(Failure::BadInput(format!(
                "data directory: a `mailgate serve` of {} is running; stop it before restoring. Nothing was changed.",
                data_dir.display()
            )));
        }
        Err(e) => return Err(io_failure("cannot take the serve lock in", data_dir, e)),
    };
    let existing = std::fs::metadata(&database).map(|m| m.len()).unwrap_or(0);
    if existing > 0 && !force {
        return Err(Failure::BadInput(format!(
            "database: {} already exists; pass --force to replace it with the backup. Nothing was changed.",
            database.display()
        )));
    }
    let partial = partial_path(&database, "restoring");
    remove_if_present(&partial).map_err(|e| io_failure("cannot remove", &partial, e))?;
    let copied = copy_with_progress(file, &partial);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // The old database's WAL and shared-memory index belong to it: left beside the restored
    // file, SQLite would replay the old WAL into it.
    for suffix in ["-wal", "-shm"] {
        let mut side = database.clone().into_os_string();
        side.push(suffix);
        let side = PathBuf::from(side);
        remove_if_present(&side).map_err(|e| io_failure("cannot remove", &side, e))?;
    }
    std::fs::rename(&partial, &database)
        .map_err(|e| io_failure("cannot move the restored database to", &database, e))?;
    // Opening migrates a backup of an older schema to this build's.
    let source = match &config.master_key {
        Some(_) => KeySource::Env,
        None => KeySource::File(config.key_file()),
    };
    let store = Store::open_single_connection(&config.database_url, ring, source).await?;
    // The snapshot may hold outbox, webhook and watcher claims of the server it was taken
    // from; no process holds them in this copy (the serve lock is ours), so they are
    // released now instead of blocking that work until they expire.
    let released = store.release_claims_of("").await;
    store.close().await;
    let released = released?;
    out!(
        "Restored {} into {} (backup schema version {}, now {}; {} account(s)).",
        file.display(),
        database.display(),
        info.schema_version,
        known_schema_version(),
        info.accounts
    );
    if released.outbox > 0 {
        out!(
            "{} message(s) were being sent when the backup was taken; they will be sent again (see docs/operations.md).",
            released.outbox
        );
    }
    out!("Start `mailgate serve` to resume; {keys_from} opens its secrets.");
    Ok(())
}

/// Copies `from` to a new 0600 file `to`, showing how far it got on a terminal.
fn copy_with_progress(from: &Path, to: &Path) -> CmdResult {
    let mut source = std::fs::File::open(from).map_err(|e| io_failure("cannot read", from, e))?;
    let total = source.metadata().map(|m| m.len()).unwrap_or(0);
    let mut target = create_private(to).map_err(|e| io_failure("cannot create", to, e))?;
    let progress = Progress::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    loop {
        let n = source
            .read(&mut buffer)
            .map_err(|e| io_failure("cannot read", from, e))?;
        if n == 0 {
            break;
        }
        target
            .write_all(&buffer[..n])
            .map_err(|e| io_failure("cannot write", to, e))?;
        done += n as u64;
        progress.line(&format!(
            "Restoring: {} of {} MiB",
            done >> 20,
            total.max(1).div_ceil(1 << 20)
        ));
    }
    progress.finish();
    target
        .sync_all()
        .map_err(|e| io_failure("cannot write", to, e))
}
