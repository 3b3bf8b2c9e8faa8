//! The commit signal (`store/src/changes.rs`): `PRAGMA data_version` on a connection of its
//! own, which must see every commit of other connections and processes, and must never
//! touch SQLite's files itself.

use crate::{NOW, open};
use mailgate_core::user::TokenScope;
use mailgate_store::Store;
use mailgate_store::crypto::{KeySource, load_or_create_key_file};
use std::path::Path;

/// The store as `serve` opens it (a pool, and the commit signal); `open` is the CLI's.
async fn open_serving(dir: &Path) -> Store {
    let key = dir.join("master.key");
    let ring = load_or_create_key_file(&key).unwrap();
    // The same database `open` gives for this directory, on the test's backend.
    let url = match crate::POSTGRES.try_with(std::sync::Arc::clone) {
        Ok(pg) => pg.cluster.url(&pg.database_for(dir)),
        Err(_) => format!("sqlite://{}", dir.join("mailgate.db").display()),
    };
    Store::open(&url, ring, KeySource::File(key)).await.unwrap()
}

/// A short command's one-connection store has no signal (it keeps nothing in memory for
/// long): nothing is ever taken as unchanged, so no cache of it can go stale.
#[tokio::test]
async fn nothing_is_taken_as_unchanged_while_the_marker_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = open(dir.path()).await;
    server
        .create_api_token("erp", "hash-1", &[TokenScope::AccountsRead], &[], NOW)
        .await
        .unwrap();
    let seen = server.commit_marker().await;
    assert!(seen.is_none());
    server.list_api_tokens().await.unwrap();
    assert!(!server.unchanged_since(seen).await);
    assert!(
        !server.unchanged_since(None).await,
        "unknown is never unchanged"
    );
}

/// The marker stays equal while nothing is committed (which is what lets the caches answer
/// from memory), and moves on a commit by the store's own pool, by another store (a CLI
/// command), and by another process writing with its own SQLite (Python's).
#[tokio::test]
async fn every_commit_by_this_pool_another_store_or_another_process_moves_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let server = open_serving(dir.path()).await;
    let (cli, _) = open(dir.path()).await;
    let db = dir.path().join("mailgate.db");

    let seen = server.commit_marker().await;
    assert!(seen.is_some(), "a serving store has a signal");
    server.list_api_tokens().await.unwrap();
    assert!(server.unchanged_since(seen).await, "reads commit nothing");
    assert!(server.unchanged_since(seen).await);

    server
        .create_api_token("erp", "hash-1", &[TokenScope::AccountsRead], &[], NOW)
        .await
        .unwrap();
    assert!(
        !server.unchanged_since(seen).await,
        "a commit of its own pool"
    );

    let seen = server.commit_marker().await;
    assert!(server.unchanged_since(seen).await);
    assert!(cli.revoke_api_token("erp", NOW).await.unwrap());
    assert!(
        !server.unchanged_since(seen).await,
        "a commit of another store"
    );

    let seen = server.commit_marker().await;
    assert!(server.unchanged_since(seen).await);
    let write = "import sqlite3, sys\n\
db = sqlite3.connect(sys.argv[1])\n\
db.execute(\"UPDATE api_tokens SET name = 'erp-renamed'\")\n\
db.commit()\n\
db.close()\n";
    let out = std::process::Command::new("python3")
        .args(["-c", write])
        .arg(&db)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !server.unchanged_since(seen).await,
        "a commit of another process"
    );
    assert!(
        !server.unchanged_since(None).await,
        "unknown is never unchanged"
    );
}

/// SQLite's connections share an fcntl lock on the wal-index (the "DMS" byte at offset 128
/// of the `-shm` file) that tells another process the index is in use. Opening and closing
/// that file in this process drops every fcntl lock the process holds on it (POSIX), after
/// which the next process to open the database truncated the index under `serve`'s
/// mapping, and `serve` died of SIGBUS. Checking the caches must leave the lock in place:
/// another process cannot take it exclusively.
#[tokio::test]
async fn checking_the_caches_keeps_sqlites_lock_on_the_wal_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = open_serving(dir.path()).await;
    server
        .create_api_token("erp", "hash-1", &[TokenScope::AccountsRead], &[], NOW)
        .await
        .unwrap();
    for _ in 0..3 {
        let seen = server.commit_marker().await;
        assert!(seen.is_some(), "the signal is on");
        let _ = server.unchanged_since(seen).await;
        let _ = server.api_token_by_hash("hash-1", NOW).await.unwrap();
    }
    let shm = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-shm"))
        .expect("a WAL database has a -shm file while it is open");
    let probe = "import fcntl, os, sys\n\
fd = os.open(sys.argv[1], os.O_RDWR)\n\
try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128, 0)\n    print('free')\n\
except OSError:\n    print('held')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", probe])
        .arg(&shm)
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "held",
        "another process could take SQLite's wal-index lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn a_cached_api_token_revoked_by_another_store_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = open_serving(dir.path()).await;
    let (cli, _) = open(dir.path()).await;
    server
        .create_api_token("erp", "hash-1", &[TokenScope::AccountsRead], &[], NOW)
        .await
        .unwrap();
    // The first lookup writes last_used_at; the next ones are served from memory.
    for _ in 0..3 {
        assert!(
            server
                .api_token_by_hash("hash-1", NOW)
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(cli.revoke_api_token("erp", NOW).await.unwrap());
    assert!(
        server
            .api_token_by_hash("hash-1", NOW)
            .await
            .unwrap()
            .is_none(),
        "the revocation is seen by the very next lookup"
    );
}

/// The store's connection settings go in one statement string; each of them must apply.
#[tokio::test]
async fn every_pragma_of_the_one_setup_string_applies() {
    use sqlx::{Connection, Executor, Row};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    conn.execute(mailgate_store::CONNECTION_PRAGMAS)
        .await
        .unwrap();
    for (pragma, expected) in [
        ("journal_mode", "wal"),
        ("busy_timeout", "10000"),
        ("foreign_keys", "1"),
        ("synchronous", "1"),
    ] {
        let row = sqlx::query(&format!("PRAGMA {pragma}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let value: String = row
            .try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(value, expected, "{pragma}");
    }
}

crate::on_both_databases!(a_cached_api_token_revoked_by_another_store_is_refused_at_once,);
