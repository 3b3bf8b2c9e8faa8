//! The outbox keeps every sent message, so a claim must read only pending rows: its cost
//! follows the queue, not the outbox's history (issue 15). Checked on SQLite's query plan
//! with a history of sent rows, with and without the statistics `ANALYZE` gathers.

use crate::{NOW, account, ms_app, open};
use sqlx::{Connection, Row};

async fn plan(conn: &mut sqlx::AnyConnection, sql: &str) -> Vec<String> {
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect()
}

#[tokio::test]
async fn a_claim_reads_only_pending_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let a = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    // 5,000 sent messages of the account, then one queued.
    sqlx::query(&format!(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000)
         INSERT INTO outbox (account_id, recipients, message, message_id, status, attempts, next_attempt_at, created_at, size)
         SELECT {id}, '[]', X'00', 'm', 'sent', 1, 0, 0, 1 FROM n",
        id = a.id.0
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        }
        let one = plan(&mut conn, &mailgate_store::claim_sql(Some(a.id.0), &[])).await;
        assert!(
            one.iter().any(|s| s.contains("outbox_pending_account")),
            "analyzed {analyzed}: {one:?}"
        );
        for sql in [
            mailgate_store::claim_sql(None, &[]),
            mailgate_store::claim_sql(None, &[a.id.0]),
        ] {
            let any = plan(&mut conn, &sql).await;
            // A bare `SCAN outbox` reads every row ever sent; a scan of an index of
            // pending rows, or a search, does not.
            assert!(
                !any.iter().any(|s| s == "SCAN outbox"),
                "analyzed {analyzed}: {any:?}"
            );
        }
    }
}
