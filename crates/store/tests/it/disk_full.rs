//! A full disk (a tmpfs of the test's own, filled up): every write that could not be stored
//! says so, and no pooled connection is left inside a failed transaction.

use crate::{NOW, account, ms_app, open};
use mailgate_core::event::EventKind;
use mailgate_store::StorageFailure;
use mailgate_testkit::tmpfs::Tmpfs;

/// Larger than the space left, so the write cannot fit whatever SQLite's WAL holds.
const LARGE: usize = 256 * 1024;
const LEFT_FREE: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_writes_fail_loudly_and_leave_no_connection_in_a_transaction() {
    let fs = Tmpfs::mount(4 * 1024 * 1024).expect("a tmpfs for the data directory");
    let (store, _db) = open(fs.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acct = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    assert_eq!(store.write_failure(), None);
    let filler = fs.fill_leaving("filler", LEFT_FREE).unwrap();

    // Autocommit INSERT … RETURNING: the row comes back before the commit; the commit's
    // failure must still reach the caller (it used to be dropped, and the same id came back
    // for every "stored" message).
    let body = vec![b'x'; LARGE];
    for n in 0..6 {
        let result = store
            .enqueue(
                crate::new_message(acct.id, None, &format!("h{n}"), &body),
                crate::ROOMY,
                NOW,
            )
            .await;
        match result {
            Err(e) => assert_eq!(e.storage_failure(), Some(StorageFailure::Full), "{e}"),
            Ok(stored) => panic!("message {n} reported stored on a full disk: {stored:?}"),
        }
    }
    let failure = store.write_failure().expect("the store knows writes fail");
    assert!(failure.contains("full"), "{failure}");

    // Transactions whose COMMIT fails: more of them than the pool has connections, so every
    // connection has had one.
    let large_text = "y".repeat(LARGE);
    for _ in 0..12 {
        let e = store
            .record_event(NOW, EventKind::AppUpdated, Some(app.id), None, &large_text)
            .await
            .expect_err("an event larger than the free space cannot be stored");
        assert_eq!(e.storage_failure(), Some(StorageFailure::Full), "{e}");
    }

    // Space returns: every connection of the pool begins, writes and commits again (a
    // connection left at transaction depth 1 failed every `BEGIN IMMEDIATE` with "attempted
    // to call begin_with at non-zero transaction depth").
    std::fs::remove_file(&filler).unwrap();
    let mut writers = tokio::task::JoinSet::new();
    let store = std::sync::Arc::new(store);
    for n in 0..24 {
        let store = store.clone();
        let app = app.id;
        writers.spawn(async move {
            store
                .record_event(
                    NOW,
                    EventKind::AppUpdated,
                    Some(app),
                    None,
                    &format!("after {n}"),
                )
                .await
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap().expect("a write after space returned");
    }
    assert_eq!(
        store.write_failure(),
        None,
        "a successful write clears the failure"
    );
    let item = match store
        .enqueue(
            crate::new_message(acct.id, None, "ok", b"hi"),
            crate::ROOMY,
            NOW,
        )
        .await
        .unwrap()
    {
        mailgate_store::Enqueued::Created(item) => item,
        other => panic!("{other:?}"),
    };
    // Nothing of the failed writes was stored: the first message stored is this one.
    let all = store.list_outbox(&[], None, None, 100).await.unwrap();
    assert_eq!(all.iter().map(|i| i.id).collect::<Vec<_>>(), vec![item.id]);
    let events = store.events(None, 1000).await.unwrap();
    assert!(!events.iter().any(|e| e.message.len() >= LARGE));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.message.starts_with("after "))
            .count(),
        24
    );
    store.close().await;
}
