//! The `hang` fault: a provider that holds a refresh past the client's timeout and then
//! processes it anyway, and the per-grant in-flight counters that show overlapping refreshes.

use super::*;

/// Sends a refresh that gives up after `timeout`; returns whether it got an answer.
async fn refresh_giving_up(env: &Env, refresh_token: &str, timeout: Duration) -> bool {
    env.http
        .post(format!("{}{MS_TOKEN}", env.base))
        .timeout(timeout)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .is_ok()
}

async fn counter(env: &Env, key: &str) -> u64 {
    env.admin
        .counters(Some(CLIENT))
        .await
        .unwrap()
        .get(key)
        .copied()
        .unwrap_or(0)
}

async fn until_nothing_in_flight(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(env, "refresh_in_flight").await > 0 {
        assert!(Instant::now() < deadline, "a held refresh never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hung_refresh_is_processed_after_the_client_gave_up() {
    let env = start().await;
    env.admin
        .set_lifetimes(LifetimeSpec {
            client_id: Some(CLIENT.into()),
            revoke_grant_on_refresh_reuse: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let tokens = ms_tokens(&env).await;
    let old = str_of(&tokens, "refresh_token");
    let access = str_of(&tokens, "access_token");
    fault_once(&env, Fault::Hang { seconds: 1.0 }).await;
    assert!(
        !refresh_giving_up(&env, old, Duration::from_millis(200)).await,
        "held past the client's timeout"
    );
    assert_eq!(counter(&env, "refresh_in_flight").await, 1);
    until_nothing_in_flight(&env).await;
    // The held request rotated the token although nobody read the answer: the old one is
    // now a replay, which revokes the grant.
    let (status, body) = ms_refresh(&env, old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(introspect(&env, access).await, json!({"active": false}));
    assert_eq!(counter(&env, "refresh_in_flight_max").await, 1);
}

#[tokio::test]
async fn overlapping_refreshes_of_one_grant_are_counted() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    let old = str_of(&tokens, "refresh_token").to_owned();
    env.admin
        .inject_fault(FaultSpec {
            count: 2,
            ..FaultSpec::token(CLIENT, Fault::Hang { seconds: 1.0 })
        })
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        refresh_giving_up(&env, &old, Duration::from_millis(300)),
        refresh_giving_up(&env, &old, Duration::from_millis(300)),
    );
    assert!(!a && !b);
    until_nothing_in_flight(&env).await;
    assert_eq!(counter(&env, "refresh_in_flight_max").await, 2);
}
