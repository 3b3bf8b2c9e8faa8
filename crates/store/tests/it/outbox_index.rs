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

/// A message claimed ahead and not begun (a sender stopping) goes back to the queue at
/// once, its attempt not counted; only its holder can give it back.
async fn a_claim_not_begun_is_given_back_by_its_holder_only() {
    use mailgate_store::{Enqueued, OutboxQuota, OutboxStatus};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let a = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let quota = OutboxQuota {
        per_account_bytes: 1_000,
        total_bytes: 1_000,
    };
    let queued = match store
        .enqueue(crate::new_message(a.id, None, "h", b"x"), quota, NOW)
        .await
        .unwrap()
    {
        Enqueued::Created(i) => i,
        other => panic!("{other:?}"),
    };
    let claimed = store.claim_outbox("w/1", 120, NOW).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.attempts), (queued.id, 1));
    assert!(
        !store
            .release_outbox_claim(claimed.id, "other/1")
            .await
            .unwrap()
    );
    assert!(store.claim_outbox("w/2", 120, NOW).await.unwrap().is_none());
    assert!(store.release_outbox_claim(claimed.id, "w/1").await.unwrap());
    let back = store.outbox_item(claimed.id).await.unwrap();
    assert_eq!((back.status, back.attempts), (OutboxStatus::Queued, 0));
    // Claimable again at once, by anyone; a second release by the old holder does nothing.
    let again = store.claim_outbox("w/2", 120, NOW).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (queued.id, 1));
    assert!(!store.release_outbox_claim(claimed.id, "w/1").await.unwrap());
}

crate::on_both_databases!(a_claim_not_begun_is_given_back_by_its_holder_only);
