//! A sealed value is bound to its table, column and row (the AEAD's associated data): one
//! copied into another row or column by someone with write access to the database file is
//! refused when read, not opened as that row's secret.

use crate::{Db, NOW, account, grant, ms_app, open};
use mailgate_store::StoreError;
use mailgate_store::crypto::CryptoError;

/// Edits the database behind the store's back, as an attacker with write access would.
async fn tamper(db: &Db, statement: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    let done = sqlx::query(statement).execute(&mut conn).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{statement}");
    conn.close().await.unwrap();
}

fn assert_tampered<T: std::fmt::Debug>(read: Result<T, StoreError>, context: &str) {
    match read {
        Err(StoreError::Crypto(CryptoError::Tampered { context: c })) => assert_eq!(c, context),
        other => panic!("expected the value in {context} to be refused, got {other:?}"),
    }
}

async fn a_sealed_value_moved_to_another_row_or_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let first = store.create_app(&ms_app("First"), NOW).await.unwrap();
    let second = store.create_app(&ms_app("Second"), NOW).await.unwrap();

    // Another row: the first app's client secret pasted over the second's.
    tamper(
        &db,
        &format!(
            "UPDATE apps SET client_secret = (SELECT client_secret FROM apps WHERE id = {}) WHERE id = {}",
            first.id.0, second.id.0
        ),
    )
    .await;
    assert_tampered(
        store.app(second.id).await,
        &format!("apps.client_secret:{}", second.id.0),
    );
    // The original is untouched and still opens.
    let kept = store.app(first.id).await.unwrap();
    assert_eq!(
        kept.spec.client_secret.unwrap().expose(),
        ms_app("First").client_secret.unwrap().expose()
    );

    // Another column of the same row: the client secret as the service-account key.
    tamper(
        &db,
        &format!(
            "UPDATE apps SET service_account_key = client_secret WHERE id = {}",
            first.id.0
        ),
    )
    .await;
    assert_tampered(
        store.app(first.id).await,
        &format!("apps.service_account_key:{}", first.id.0),
    );

    // Tokens: the refresh token stored as the access token.
    let acc = store
        .create_account(&account("support", &second), NOW)
        .await
        .unwrap();
    store.put_grant(&grant(acc.id), Some(NOW)).await.unwrap();
    assert!(store.grant(acc.id).await.unwrap().is_some());
    tamper(
        &db,
        &format!(
            "UPDATE grants SET access_token = refresh_token WHERE account_id = {}",
            acc.id.0
        ),
    )
    .await;
    assert_tampered(
        store.grant(acc.id).await,
        &format!("grants.access_token:{}", acc.id.0),
    );
}

crate::on_both_databases!(a_sealed_value_moved_to_another_row_or_column_is_refused,);
