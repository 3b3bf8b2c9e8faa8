//! "Has anything been committed to the database since?" — for now always "perhaps".
//!
//! This module first answered it by reading the header of SQLite's shared wal-index (the
//! `-shm` file), which every commit rewrites. That is unsafe, and is switched off: reading
//! the file means opening and closing it, and on POSIX closing *any* descriptor of a file
//! drops *every* fcntl lock the process holds on that file — including the shared lock by
//! which SQLite's own connections in this process say "the wal-index is in use". The next
//! process to open the database (any CLI command) then found no such lock, truncated the
//! `-shm` file while `serve` had it mapped, and `serve` died of SIGBUS in the middle of a
//! commit (seen as a webhook attempt never recorded; `sqlite.org/howtocorrupt.html` §2.2
//! describes the hazard). Regression test: `token_cache::serve_survives_cli_commands_while_it_answers_tokens`.
//!
//! Until a safe signal is in place (e.g. `PRAGMA data_version` on a connection kept for it),
//! [`read_marker`] reports nothing, so every cache treats its value as possibly stale and
//! reads the database again: correct, without the speed-up.

use std::path::{Path, PathBuf};

/// The state of the database's newest commit, compared for equality only. Never produced
/// while the marker is switched off (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMarker(());

/// Where the wal-index of the database at `db_path` lives.
pub(crate) fn shm_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// The marker now: always `None` ("unknown"), which a cache treats as "changed". The file is
/// deliberately not opened (see the module comment).
pub(crate) fn read_marker(_shm: &Path) -> Option<CommitMarker> {
    None
}

/// The value is still current if the database has not changed since `seen` was read.
pub(crate) fn unchanged_since(shm: Option<&Path>, seen: Option<CommitMarker>) -> bool {
    match (shm, seen) {
        (Some(shm), Some(seen)) => read_marker(shm) == Some(seen),
        _ => false,
    }
}
