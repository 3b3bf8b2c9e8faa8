//! The last "Test configuration" of each account (migration 0014): replaced by each run,
//! gone with the account.

use crate::{NOW, account, ms_app, open};
use mailgate_store::test_results::TestResult;

async fn the_last_test_of_an_account_replaces_the_one_before_and_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    assert!(store.test_results().await.unwrap().is_empty());
    let failed = TestResult {
        account_id: acc.id,
        finished_at: NOW,
        passed: false,
        failed_step: Some("imap: connect to port 993".into()),
        code: Some("connection_refused".into()),
        detail: Some("connection refused".into()),
    };
    store.record_test_result(&failed).await.unwrap();
    assert_eq!(store.test_results().await.unwrap()[&acc.id], failed);
    let passed = TestResult {
        account_id: acc.id,
        finished_at: NOW.plus_secs(60),
        passed: true,
        failed_step: None,
        code: None,
        detail: None,
    };
    store.record_test_result(&passed).await.unwrap();
    let kept = store.test_results().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[&acc.id], passed);
    store.remove_account(acc.id, NOW).await.unwrap();
    assert!(store.test_results().await.unwrap().is_empty());
}

/// A run's progress is readable by any store on the database (another instance), the
/// newest state wins, and it goes with its account.
async fn a_test_run_in_progress_is_readable_from_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = open(dir.path()).await;
    let (b, _) = open(dir.path()).await;
    let app = a.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = a
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    assert_eq!(b.test_run("run1").await.unwrap(), None);
    a.put_test_run("run1", acc.id, r#"{"steps":[1]}"#, NOW)
        .await
        .unwrap();
    a.put_test_run("run1", acc.id, r#"{"steps":[1,2]}"#, NOW.plus_secs(1))
        .await
        .unwrap();
    assert_eq!(
        b.test_run("run1").await.unwrap().as_deref(),
        Some(r#"{"steps":[1,2]}"#)
    );
    // A day later, the next run's write drops it.
    a.put_test_run("run2", acc.id, "{}", NOW.plus_secs(24 * 3600 + 2))
        .await
        .unwrap();
    assert_eq!(b.test_run("run1").await.unwrap(), None);
    a.remove_account(acc.id, NOW).await.unwrap();
    assert_eq!(b.test_run("run2").await.unwrap(), None);
}

crate::on_both_databases!(
    the_last_test_of_an_account_replaces_the_one_before_and_goes_with_it,
    a_test_run_in_progress_is_readable_from_another_store,
);
