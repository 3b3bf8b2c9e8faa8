//! The sign-in lock-out: attempts reserved before the password check, locks that double.

use super::{NOW, open};
use mailgate_core::Timestamp;
use mailgate_store::{LoginAttempt, LoginThrottle};

const KEY: &str = "user:admin|from:192.0.2.7";

fn at(secs: i64) -> Timestamp {
    NOW.plus_secs(secs)
}

async fn parallel_reservations_admit_exactly_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let store = std::sync::Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .reserve_login_attempt(KEY, LoginThrottle::default(), NOW)
                .await
                .unwrap()
        });
    }
    let mut allowed = 0;
    while let Some(answer) = tasks.join_next().await {
        if matches!(answer.unwrap(), LoginAttempt::Allowed { .. }) {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 5,
        "60 at once: exactly max_failures password checks"
    );
}

async fn locks_double_and_a_quiet_window_forgives() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let policy = LoginThrottle::default(); // 5 failures, 15 min window, 15 min lock
    let reserve = |secs: i64| store.reserve_login_attempt(KEY, policy, at(secs));

    for n in 1..=4 {
        assert_eq!(
            reserve(n).await.unwrap(),
            LoginAttempt::Allowed {
                locks_if_wrong: None
            },
            "attempt {n}"
        );
    }
    assert_eq!(
        reserve(5).await.unwrap(),
        LoginAttempt::Allowed {
            locks_if_wrong: Some(at(5 + 900))
        },
        "the 5th attempt is the last before the lock"
    );
    assert_eq!(
        reserve(6).await.unwrap(),
        LoginAttempt::Locked { until: at(905) }
    );
    // Another source, or another name, is not locked.
    assert!(matches!(
        store
            .reserve_login_attempt("user:admin|from:192.0.2.8", policy, at(6))
            .await
            .unwrap(),
        LoginAttempt::Allowed { .. }
    ));

    // After the first lock: four more tries, then a lock twice as long.
    for n in 0..4 {
        assert_eq!(
            reserve(906 + n).await.unwrap(),
            LoginAttempt::Allowed {
                locks_if_wrong: None
            }
        );
    }
    assert_eq!(
        reserve(910).await.unwrap(),
        LoginAttempt::Allowed {
            locks_if_wrong: Some(at(910 + 1800))
        }
    );
    assert!(matches!(
        reserve(911).await.unwrap(),
        LoginAttempt::Locked { .. }
    ));

    // A success clears the key.
    store.clear_login_failures(KEY).await.unwrap();
    assert_eq!(
        reserve(912).await.unwrap(),
        LoginAttempt::Allowed {
            locks_if_wrong: None
        }
    );

    // A quiet window after the lock ends starts a new series with the first lock's length.
    let other = "user:olga|from:192.0.2.7";
    for n in 0..5 {
        store
            .reserve_login_attempt(other, policy, at(n))
            .await
            .unwrap();
    }
    let quiet = 900 + 900 + 10;
    for n in 0..4 {
        assert_eq!(
            store
                .reserve_login_attempt(other, policy, at(quiet + n))
                .await
                .unwrap(),
            LoginAttempt::Allowed {
                locks_if_wrong: None
            }
        );
    }
    assert_eq!(
        store
            .reserve_login_attempt(other, policy, at(quiet + 4))
            .await
            .unwrap(),
        LoginAttempt::Allowed {
            locks_if_wrong: Some(at(quiet + 4 + 900))
        }
    );
}

crate::on_both_databases!(
    parallel_reservations_admit_exactly_the_limit,
    locks_double_and_a_quiet_window_forgives,
);
