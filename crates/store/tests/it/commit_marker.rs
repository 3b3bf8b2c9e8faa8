//! The commit marker that lets the hot paths keep values in memory: it changes with every
//! commit of any connection (here a second `Store`, as the CLI would be), and only then.

use crate::{NOW, open};
use mailgate_core::user::TokenScope;

#[tokio::test]
async fn the_commit_marker_changes_with_a_commit_by_another_store_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = open(dir.path()).await;
    let (cli, _) = open(dir.path()).await;
    server
        .create_api_token("erp", "hash-1", &[TokenScope::AccountsRead], &[], NOW)
        .await
        .unwrap();
    let seen = server.commit_marker();
    assert!(seen.is_some(), "a WAL database has a wal-index to read");
    // Reads change nothing.
    server.list_api_tokens().await.unwrap();
    cli.list_api_tokens().await.unwrap();
    assert!(server.unchanged_since(seen));
    // A commit by the other store does.
    assert!(cli.revoke_api_token("erp", NOW).await.unwrap());
    assert!(!server.unchanged_since(seen));
    assert!(!server.unchanged_since(None), "unknown is never unchanged");
}

#[tokio::test]
async fn a_cached_api_token_revoked_by_another_store_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = open(dir.path()).await;
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
