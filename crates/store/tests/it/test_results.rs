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

crate::on_both_databases!(the_last_test_of_an_account_replaces_the_one_before_and_goes_with_it,);
