//! "Has anything been committed to the database since?" without asking SQLite.
//!
//! In WAL mode every SQLite connection, in every process, finds the newest commit through
//! the header of the shared wal-index (the `-shm` file): each commit rewrites it (its frame
//! count, salts and checksums change), and SQLite itself compares that header to decide
//! whether a reader's cached pages are still good (the format is fixed since 3.7.0,
//! <https://sqlite.org/walformat.html>, "The WAL-Index Header"). Reading its first 48 bytes
//! costs one open and one read — no SQL, no hop to a database thread — so the caches of
//! the hot paths (the account token, API tokens) check it on every use: equal bytes mean
//! no connection of any process has committed since the cached value was read, so the
//! cached value is still what the database says. Any difference, a missing file or an
//! error means "perhaps": the caller reads the database again. A commit by anyone (the CLI,
//! another server, this process's own unrelated writes) only costs one such re-read.
//!
//! The path is opened anew each time: SQLite deletes the `-shm` file when the last
//! connection closes, and a descriptor kept open would go on reading the deleted copy.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes 0..48 of the wal-index: its first header copy.
const HEADER_LEN: usize = 48;

/// The state of the database's newest commit, compared for equality only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMarker([u8; HEADER_LEN]);

/// Where the wal-index of the database at `db_path` lives.
pub(crate) fn shm_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// The marker now; `None` when it cannot be read (no WAL, no file yet), which a cache
/// treats as "changed".
pub(crate) fn read_marker(shm: &Path) -> Option<CommitMarker> {
    let mut header = [0u8; HEADER_LEN];
    let mut file = std::fs::File::open(shm).ok()?;
    file.read_exact(&mut header).ok()?;
    // An all-zero header is a wal-index nobody has initialised yet: it says nothing.
    if header.iter().all(|b| *b == 0) {
        return None;
    }
    Some(CommitMarker(header))
}

/// The value is still current if the database has not changed since `seen` was read.
pub(crate) fn unchanged_since(shm: Option<&Path>, seen: Option<CommitMarker>) -> bool {
    match (shm, seen) {
        (Some(shm), Some(seen)) => read_marker(shm) == Some(seen),
        _ => false,
    }
}
