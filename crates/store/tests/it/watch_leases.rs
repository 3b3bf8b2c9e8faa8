//! The inbound watchers' leases renewed together: one statement per instance per heartbeat.

use crate::{NOW, open};

async fn one_write_renews_every_watch_lease_of_the_holder_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    for name in ["watch:1", "watch:2", "refresh:1"] {
        assert!(
            store
                .try_lease(name, "inst-a/run-1", 60, NOW)
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .try_lease("watch:3", "inst-b/run-1", 60, NOW)
            .await
            .unwrap()
    );
    // Another instance takes watch:2 over after it expired.
    let later = NOW.plus_secs(61);
    assert!(
        store
            .try_lease("watch:2", "inst-b/run-1", 60, later)
            .await
            .unwrap()
    );

    let mut renewed = store
        .renew_watch_leases("inst-a/run-1", 60, later)
        .await
        .unwrap();
    renewed.sort();
    assert_eq!(
        renewed,
        vec!["watch:1".to_owned()],
        "only its own watch leases"
    );
    // Renewed until later + 60: nobody else takes it before then.
    assert!(
        !store
            .try_lease("watch:1", "inst-b/run-1", 60, later.plus_secs(59))
            .await
            .unwrap()
    );
    // The refresh lease was not touched: it expired at NOW + 60.
    assert!(
        store
            .try_lease("refresh:1", "inst-b/run-1", 60, later)
            .await
            .unwrap()
    );
}

crate::on_both_databases!(one_write_renews_every_watch_lease_of_the_holder_and_names_them,);
