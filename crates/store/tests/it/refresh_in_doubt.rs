//! The in-doubt record of a refresh whose answer may be lost (issue 13, part 3).

use super::{NOW, account, grant, ms_app, open};
use mailgate_core::{AccountId, Secret};
use mailgate_store::{RefreshInDoubt, Store};

async fn doubt(store: &Store, id: AccountId) -> RefreshInDoubt {
    store.refresh_in_doubt(id).await.unwrap().unwrap()
}

async fn a_refresh_stays_in_doubt_until_answered_or_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    store
        .complete_authorization(&grant(acc.id), NOW, NOW)
        .await
        .unwrap();
    assert_eq!(doubt(&store, acc.id).await, RefreshInDoubt::default());

    let later = NOW.plus_secs(140);
    assert!(
        store
            .mark_refresh_sent(acc.id, 1, NOW, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_refresh_sent(acc.id, 7, NOW, later)
            .await
            .unwrap(),
        "guarded by the grant version"
    );
    assert_eq!(
        doubt(&store, acc.id).await,
        RefreshInDoubt {
            last_sent_at: Some(NOW),
            unanswered: 1,
            not_before: Some(later),
        }
    );
    // A timeout leaves it; the next request (after the backoff) counts the lost one.
    assert!(
        store
            .mark_refresh_sent(acc.id, 1, later, later.plus_secs(300))
            .await
            .unwrap()
    );
    assert_eq!(doubt(&store, acc.id).await.unanswered, 2);
    // An answer settles that request only: the earlier lost one may have rotated the token.
    store.refresh_answered(acc.id, 1).await.unwrap();
    let d = doubt(&store, acc.id).await;
    assert_eq!((d.unanswered, d.not_before), (1, None));

    // A stored refresh clears everything in its own statement.
    assert!(
        store
            .store_refreshed(acc.id, 1, &Secret::new("at-2"), None, NOW, None, None)
            .await
            .unwrap()
    );
    let d = doubt(&store, acc.id).await;
    assert_eq!(
        (d.unanswered, d.not_before, d.last_sent_at),
        (0, None, None)
    );

    // So does a new authorization (a new grant row).
    assert!(
        store
            .mark_refresh_sent(acc.id, 2, NOW, later)
            .await
            .unwrap()
    );
    store
        .complete_authorization(&grant(acc.id), NOW, NOW)
        .await
        .unwrap();
    assert_eq!(doubt(&store, acc.id).await, RefreshInDoubt::default());
}

crate::on_both_databases!(a_refresh_stays_in_doubt_until_answered_or_stored,);
