//! Who this server is across restarts. A data directory holds one instance id (generated at
//! its first `serve`); every lease `serve` takes is held as `<instance id>/<run>`. A server
//! that starts, and finds no other `serve` of the same data directory running (a lock file
//! it holds while it runs), knows that every claim held under its instance id belongs to a
//! dead earlier run, and releases them at once instead of waiting for them to expire.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

const ID_FILE: &str = "instance-id";
const LOCK_FILE: &str = "serve.lock";

/// The data directory's instance id, created on first use (0600; a second process racing
/// to create it reads the winner's).
pub fn instance_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(ID_FILE);
    // Drawn before the file is created, so a failing random generator leaves no empty file.
    let fresh_id = mailgate_oauth::random::token(12).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut f) => {
            f.write_all(fresh_id.as_bytes())?;
            f.sync_all()?;
            Ok(fresh_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // The creator may not have written it yet: a few short looks, bounded.
            for _ in 0..50 {
                let mut id = String::new();
                File::open(&path)?.read_to_string(&mut id)?;
                let id = id.trim().to_owned();
                if !id.is_empty() {
                    return Ok(id);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::io::Error::other(format!(
                "{} is empty; remove it and start again",
                path.display()
            )))
        }
        Err(e) => Err(e),
    }
}

/// Holds the data directory's serve lock while the returned file lives; `None` when
/// another `serve` of this data directory holds it (then its claims are live, not stale).
pub fn exclusive_serve(data_dir: &Path) -> std::io::Result<Option<File>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(data_dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_kept_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let id = super::instance_id(dir.path()).unwrap();
        assert!(id.len() >= 12);
        assert_eq!(super::instance_id(dir.path()).unwrap(), id);
        let held = super::exclusive_serve(dir.path()).unwrap();
        assert!(held.is_some());
        assert!(super::exclusive_serve(dir.path()).unwrap().is_none());
        drop(held);
        assert!(super::exclusive_serve(dir.path()).unwrap().is_some());
    }
}
