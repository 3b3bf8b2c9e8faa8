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
//! One descriptor per path is kept open (closing one would drop SQLite's locks, see
//! [`read_marker`]) and replaced when SQLite has deleted and recreated the `-shm` file, so
//! it never goes on reading a deleted copy.

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
    use std::os::unix::fs::{FileExt, MetadataExt};
    let mut header = [0u8; HEADER_LEN];
    // Closing any descriptor of a file drops every POSIX lock this process holds on it,
    // SQLite's own among them (sqlite.org/howtocorrupt.html, 2.2): without its shared lock
    // on the wal-index, another process (a `mailgate backup`) may think itself the last
    // user and truncate the file this process has mapped, which kills it with SIGBUS. So
    // one descriptor per path stays open, replaced only when the path names another file
    // (SQLite deleted and recreated it); dropping the old one touches no live lock.
    static OPEN: std::sync::Mutex<Vec<(PathBuf, std::fs::File)>> =
        std::sync::Mutex::new(Vec::new());
    let now = std::fs::metadata(shm).ok()?;
    let mut open = OPEN.lock().ok()?;
    let current = open.iter().position(|(p, f)| {
        p == shm
            && f.metadata()
                .is_ok_and(|m| m.ino() == now.ino() && m.dev() == now.dev())
    });
    let index = match current {
        Some(i) => i,
        None => {
            let file = std::fs::File::open(shm).ok()?;
            open.retain(|(p, _)| p != shm);
            open.push((shm.to_path_buf(), file));
            open.len() - 1
        }
    };
    open[index].1.read_exact_at(&mut header, 0).ok()?;
    drop(open);
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
