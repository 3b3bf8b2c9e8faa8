//! A hung identity provider and rotating refresh tokens (issue 13, part 3).
//!
//! The emulator's `hang` fault holds a refresh for longer than mailgate's OAuth timeout and
//! then processes it anyway (rotating the token) and answers a connection mailgate already
//! dropped. Each `mailgate token` below is a process of its own, so the in-doubt state that
//! stops a second request must live in the database, not in memory.

use crate::fixtures::Fixture;
use crate::support::text;
use mailgate_testkit::idp::{Endpoint, Fault, FaultSpec, LifetimeSpec};
use std::time::{Duration, Instant};

/// mailgate's token requests give up after this long…
const OAUTH_TIMEOUT_SECS: &str = "2";
/// …while the provider holds the refresh this long before processing it…
const HANG_SECS: f64 = 5.0;
/// …and mailgate waits the timeout plus this before sending the same token again: longer
/// than the hang, so the provider has finished the first request when the second arrives.
const IN_DOUBT_BACKOFF_SECS: &str = "6";

async fn hung_provider(grace_secs: u64) -> Fixture {
    let f = Fixture::start_with(&[
        ("MAILGATE_OAUTH_TIMEOUT_SECS", OAUTH_TIMEOUT_SECS),
        (
            "MAILGATE_REFRESH_IN_DOUBT_BACKOFF_SECS",
            IN_DOUBT_BACKOFF_SECS,
        ),
    ])
    .await;
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            refresh_reuse_grace_secs: Some(grace_secs),
            // Like npm oidc-provider: a rotated token presented again revokes the grant.
            revoke_grant_on_refresh_reuse: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    f.authorize().await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec {
            client_id: Some(f.client_id.clone()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 1,
            fault: Fault::Hang { seconds: HANG_SECS },
        })
        .await
        .unwrap();
    f
}

/// The first refresh times out, a second process sends nothing while it is in doubt, and
/// the provider finishes the held request (rotating the token) behind mailgate's back.
/// Returns the output of the first `token` after the in-doubt backoff.
async fn ride_out_the_hang(f: &Fixture) -> std::process::Output {
    let started = Instant::now();
    let out = f.token();
    let took = started.elapsed();
    assert!(!out.status.success(), "the provider is hung");
    let err = text(&out.stderr);
    assert!(
        err.contains("[timeout]") && err.contains("may still have been processed"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs_f64(HANG_SECS),
        "gave up after the timeout, without retrying into the hung provider: {took:?}"
    );
    assert_eq!(f.counter("token:refresh_token").await, 1);

    // Another process at once: refused without a request, the grant kept.
    let out = f.token();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refresh_in_doubt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        f.counter("token:refresh_token").await,
        1,
        "no second request while the first is in doubt"
    );
    assert_eq!(f.state("support")["state"], "active");

    // The provider processes the held request (and rotates the token) on its own time.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.counter("refresh_in_flight").await > 0 {
        assert!(Instant::now() < deadline, "the held refresh never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ask again until mailgate's backoff is over; each refusal before that sends nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = f.token();
        if !text(&out.stderr).contains("refresh_in_doubt") {
            return out;
        }
        assert_eq!(f.counter("token:refresh_token").await, 1);
        assert!(
            Instant::now() < deadline,
            "still in doubt after a minute: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Strict replay and a lost answer: the grant is gone whatever mailgate does. What it can
/// do is never overlap two requests for the grant, and name what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_lost_to_a_hung_provider_is_named_and_requests_never_overlap() {
    let f = hung_provider(0).await;
    let out = ride_out_the_hang(&f).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("rotation_lost_in_outage"), "{err}");
    let account = f.state("support");
    assert_eq!(account["state"], "reauth_required", "{account}");
    assert_eq!(
        account["last_problem"]["code"], "rotation_lost_in_outage",
        "{account}"
    );
    assert!(
        account["last_problem"]["remediation"]
            .as_str()
            .unwrap()
            .contains("rotated the refresh token during an outage"),
        "{account}"
    );
    assert_eq!(f.counter("token:refresh_token").await, 2);
    assert_eq!(
        f.counter("refresh_in_flight_max").await,
        1,
        "at most one refresh request per grant in flight"
    );
}

/// A provider with a reuse grace (Microsoft-like): waiting out the hang keeps the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_out_a_hung_provider_with_a_reuse_grace_keeps_the_grant() {
    let f = hung_provider(120).await;
    let out = ride_out_the_hang(&f).await;
    assert!(
        out.status.success(),
        "the stored token is still accepted within the grace: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).trim().len() > 100);
    assert_eq!(f.state("support")["state"], "active");
    assert_eq!(f.counter("token:refresh_token").await, 2);
    assert_eq!(f.counter("refresh_in_flight_max").await, 1);
    // The doubt is settled: the next refresh goes out at once.
    f.expire_stored_token().await;
    let out = f.token();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.counter("token:refresh_token").await, 3);
}

/// Messages sent while a refresh is in doubt wait for the grant instead of failing, and go
/// out once when the provider is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_a_refresh_is_in_doubt_wait_and_go_out_once() {
    let (f, rig) = crate::mailtest::on_rig_with(&[
        ("MAILGATE_OAUTH_TIMEOUT_SECS", OAUTH_TIMEOUT_SECS),
        (
            "MAILGATE_REFRESH_IN_DOUBT_BACKOFF_SECS",
            IN_DOUBT_BACKOFF_SECS,
        ),
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
    ])
    .await;
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            refresh_reuse_grace_secs: Some(120),
            revoke_grant_on_refresh_reuse: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    f.authorize().await;
    let api = crate::refused_token::api_token(&f);
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec {
            client_id: Some(f.client_id.clone()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 1,
            fault: Fault::Hang { seconds: HANG_SECS },
        })
        .await
        .unwrap();
    let subject = format!("queued during the outage {}", &f.client_id[..8]);
    let id = crate::refused_token::send(&f, &api, &subject).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_in_doubt = false;
    let last = loop {
        let v: serde_json::Value =
            crate::refused_token::get(&f, &api, &format!("/api/v1/messages/{id}"))
                .await
                .json()
                .await
                .unwrap();
        assert_ne!(v["status"], "failed", "the message must wait: {v}");
        if v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refresh_in_doubt"))
        {
            saw_in_doubt = true;
        }
        if v["status"] == "sent" {
            break v;
        }
        assert!(Instant::now() < deadline, "never sent: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(saw_in_doubt, "it waited for the refresh in doubt: {last}");
    assert_eq!(f.state("support")["state"], "active");
    assert_eq!(f.counter("token:refresh_token").await, 2);
    assert_eq!(f.counter("refresh_in_flight_max").await, 1);
    let arrived =
        crate::support::arrivals(&f, &rig, "INBOX", &subject, Duration::from_secs(30)).await;
    assert_eq!(arrived, 1);
}
