//! A full disk (issue 13): the data directory on a tmpfs of the test's own, filled up while
//! concurrent sends arrive. No 202 for a message that was not stored, nothing sent twice, no
//! refresh storm, the grant kept; when space returns every accepted message arrives once.

use crate::fixtures::{Fixture, create_token};
use crate::mailtest::point_at_rig;
use mailgate_testkit::idp::{Endpoint, Fault, FaultSpec, LifetimeSpec};
use mailgate_testkit::tmpfs::Tmpfs;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// The data directory's filesystem: room for the database, the key file and the WAL.
const FS_BYTES: u64 = 8 * 1024 * 1024;
/// What the filler leaves free before the sends: a few messages fit, most do not.
const LEFT_FREE: u64 = 100 * 1024;
const SENDS: usize = 24;
const BODY_BYTES: usize = 8 * 1024;
/// Access tokens live this long, so a refresh falls due (after half of it) during the fault.
const TOKEN_SECS: u64 = 30;

fn api_token(f: &Fixture) -> String {
    create_token(f, "disk-full", &["messages:send"], &[])
}

/// One send: (status, Retry-After, body).
async fn send(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    to: &str,
    subject: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let body = serde_json::json!({
        "to": [to],
        "subject": subject,
        "text": format!("{subject}\n{}", "z".repeat(BODY_BYTES)),
    });
    let resp = client
        .post(format!("{base}/api/v1/accounts/1/messages"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, resp.json().await.unwrap_or_default())
}

/// A refusal says the message was not queued and when to try again.
fn assert_refused_with_retry(
    status: StatusCode,
    retry_after: &Option<String>,
    v: &serde_json::Value,
) {
    assert!(
        status == StatusCode::INSUFFICIENT_STORAGE || status == StatusCode::SERVICE_UNAVAILABLE,
        "a send on a full disk is stored (202) or refused with 507/503, not {status}: {v}"
    );
    assert!(retry_after.is_some(), "{status} without Retry-After: {v}");
    assert!(v["detail"].as_str().unwrap().contains("not queued"), "{v}");
}

/// Access tokens living `secs`, and the strictest provider: a rotated refresh token
/// presented again revokes the whole grant (npm oidc-provider's behaviour).
async fn strict_short_tokens(f: &Fixture, secs: u64) {
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            access_token_secs: Some(secs),
            refresh_reuse_grace_secs: Some(0),
            revoke_grant_on_refresh_reuse: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn healthz(base: &str) -> (StatusCode, serde_json::Value) {
    let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_loses_nothing_sends_nothing_twice_and_keeps_the_grant() {
    // Declared first, dropped last: the server is gone before the unmount.
    let fs = Tmpfs::mount(FS_BYTES).expect("a tmpfs for the data directory");
    let data = fs.path().join("data");
    let (f, rig) = Fixture::start_on_rig_with(&[
        ("MAILGATE_DATA_DIR", data.to_str().unwrap()),
        ("MAILGATE_REFRESH_INTERVAL_SECS", "1"),
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
    ])
    .await;
    point_at_rig(&f, &rig);
    strict_short_tokens(&f, TOKEN_SECS).await;
    f.authorize().await;
    let authorized = Instant::now();
    let token = api_token(&f);
    let base = f.server.base.clone();
    let client = reqwest::Client::new();
    let refreshes_before = f.counter("token:refresh_token").await;
    let (status, _) = healthz(&base).await;
    assert_eq!(status, StatusCode::OK);

    // Phase 1: about 100 KB free, then concurrent sends of 8 KB messages (encoded, more).
    let filler = fs.fill_leaving("filler", LEFT_FREE).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..SENDS {
        let (client, base, token, to) = (
            client.clone(),
            base.clone(),
            token.clone(),
            f.mailbox.clone(),
        );
        tasks.spawn(async move {
            let subject = format!("disk-full {n}");
            let (status, retry_after, v) = send(&client, &base, &token, &to, &subject).await;
            (subject, status, retry_after, v)
        });
    }
    let mut accepted: Vec<(i64, String, String)> = Vec::new(); // (id, subject, message id)
    let mut refused: Vec<String> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (subject, status, retry_after, v) = done.unwrap();
        if status == StatusCode::ACCEPTED {
            accepted.push((
                v["id"].as_i64().unwrap(),
                subject,
                v["message_id"].as_str().unwrap().to_owned(),
            ));
        } else {
            assert_refused_with_retry(status, &retry_after, &v);
            refused.push(subject);
        }
    }
    let ids: std::collections::HashSet<i64> = accepted.iter().map(|a| a.0).collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "every 202 names its own stored message: {accepted:?}"
    );
    assert!(
        !refused.is_empty(),
        "{SENDS} messages of {BODY_BYTES} bytes cannot all fit in {LEFT_FREE} bytes"
    );

    // Phase 2: no space at all, for longer than the access token's refresh margin, so that
    // the outbox worker and the refresh scheduler (every second) meet a failing store.
    let top_up = fs.fill_leaving("top-up", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = healthz(&base).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(v["store"], "degraded", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never reported the full disk: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, retry_after, v) = send(&client, &base, &token, &f.mailbox, "disk-full late").await;
    assert_refused_with_retry(status, &retry_after, &v);
    refused.push("disk-full late".into());
    let fault_until = authorized + Duration::from_secs(TOKEN_SECS * 3 / 4);
    while Instant::now() < fault_until {
        // The fault itself is time: the token must fall due while the disk is full.
        let (status, _) = healthz(&base).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refreshes_during_fault = f.counter("token:refresh_token").await - refreshes_before;

    // Space returns.
    std::fs::remove_file(&top_up).unwrap();
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending: Vec<i64> = ids.iter().copied().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let resp = client
                .get(format!("{base}/api/v1/messages/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "message {id} answered 202 but is not stored"
            );
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_ne!(v["status"], "failed", "{v}");
            if v["status"] != "sent" {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline,
            "accepted messages never sent: {pending:?}"
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Healthy again once writes have succeeded for the health check's window (10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = healthz(&base).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stayed degraded: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // In the mailbox over raw IMAP: each accepted message once, no refused one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let headers = loop {
        let mut imap = crate::support::raw_imap(&f, &rig, "INBOX").await;
        let lines = imap
            .imap_command(
                "d3",
                "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])",
            )
            .await
            .unwrap_or_default();
        let arrived = lines
            .iter()
            .filter(|l| l.starts_with("Subject: disk-full "))
            .count();
        if arrived >= accepted.len() || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (id, subject, message_id) in &accepted {
        let wanted = format!("Subject: {subject}");
        assert_eq!(
            headers.iter().filter(|l| l.trim() == wanted).count(),
            1,
            "message {id} ({subject}) arrived exactly once"
        );
        assert_eq!(
            headers
                .iter()
                .filter(|l| l.to_ascii_lowercase().starts_with("message-id:")
                    && l.contains(&format!("<{message_id}>")))
                .count(),
            1,
            "Message-ID {message_id} exactly once"
        );
    }
    assert_eq!(
        headers
            .iter()
            .filter(|l| l.starts_with("Subject: disk-full "))
            .count(),
        accepted.len(),
        "no refused message arrived, and nothing twice"
    );

    // The grant survived, with a handful of refreshes at most.
    assert_eq!(f.state("support")["state"], "active");
    let refreshes = f.counter("token:refresh_token").await - refreshes_before;
    assert!(
        refreshes <= 3,
        "{refreshes} refresh requests ({refreshes_during_fault} during the fault)"
    );
    // No log storm: the repeated failures are rate-limited.
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("non-zero transaction depth"), "{log}");
    let lines = log.lines().count();
    assert!(lines < 200, "{lines} log lines");
    eprintln!(
        "disk full: {} accepted, {} refused, {refreshes} refresh requests ({refreshes_during_fault} during the fault), {lines} log lines",
        accepted.len(),
        refused.len()
    );
}

/// The one window a full disk opens in refresh: the provider rotated the refresh token and
/// answered, and the database cannot store the answer. The emulator holds the refresh
/// response for 3 s while the test fills the disk, so the lease is written before and the
/// result cannot be written after. The grant must survive a provider that revokes it when an
/// already rotated refresh token comes back: the rotated token is kept in memory, used, and
/// stored when space returns, and the old one is never presented again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_a_refresh_that_cannot_be_stored_is_kept_and_the_grant_survives() {
    const SHORT_TOKEN_SECS: u64 = 6;
    let fs = Tmpfs::mount(FS_BYTES).expect("a tmpfs for the data directory");
    let data = fs.path().join("data");
    let (f, _rig) = Fixture::start_on_rig_with(&[
        ("MAILGATE_DATA_DIR", data.to_str().unwrap()),
        ("MAILGATE_REFRESH_INTERVAL_SECS", "1"),
    ])
    .await;
    strict_short_tokens(&f, SHORT_TOKEN_SECS).await;
    f.idp
        .inject_fault(FaultSpec {
            client_id: Some(f.client_id.clone()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 1,
            fault: Fault::Delay { seconds: 3.0 },
        })
        .await
        .unwrap();
    f.authorize().await;

    // The scheduler refreshes once the token is inside its margin (half of 6 s); fill the
    // disk while the provider holds that first refresh.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.counter("token:refresh_token").await == 0 {
        assert!(Instant::now() < deadline, "no refresh was attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = fs.fill_leaving("filler", 0).unwrap();
    // Watch the fault for longer than the refreshed token lives, so its successor falls due
    // while nothing can be stored: no further refresh may reach the provider meanwhile.
    let watch_until = Instant::now() + Duration::from_secs(3 + SHORT_TOKEN_SECS + 2);
    while Instant::now() < watch_until {
        assert_eq!(
            f.counter("token:refresh_token").await,
            1,
            "a refresh while its predecessor's result is not stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Space returns: the kept token is stored, and the next refreshes rotate from it.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.counter("token:refresh_token").await < 3 {
        let state = f.state("support");
        assert_eq!(state["state"], "active", "{state}");
        assert!(
            Instant::now() < deadline,
            "refreshing did not resume: {state}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let state = f.state("support");
    assert_eq!(state["state"], "active", "{state}");
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("a refreshed token could not be stored; keeping it in memory"),
        "the fault did not hit the refresh's write: {log}"
    );
    assert!(
        log.contains("a refreshed token kept in memory is stored now"),
        "{log}"
    );
}

/// A message sent while the disk filled up: the worker claimed it with space to spare, its
/// token refresh (held 3 s by the emulator) came back to a full disk, the message went out,
/// and its `sent` could not be written. It must not be sent again: the worker holds the
/// outcome and records it when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_a_message_whose_sent_cannot_be_recorded_is_not_sent_again() {
    const SHORT_TOKEN_SECS: u64 = 8;
    let fs = Tmpfs::mount(FS_BYTES).expect("a tmpfs for the data directory");
    let data = fs.path().join("data");
    let (f, rig) = Fixture::start_on_rig_with(&[
        ("MAILGATE_DATA_DIR", data.to_str().unwrap()),
        // Only sending refreshes here, not the scheduler.
        ("MAILGATE_REFRESH_INTERVAL_SECS", "3600"),
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
    ])
    .await;
    point_at_rig(&f, &rig);
    strict_short_tokens(&f, SHORT_TOKEN_SECS).await;
    f.authorize().await;
    let authorized = Instant::now();
    let token = api_token(&f);
    let base = f.server.base.clone();
    let client = reqwest::Client::new();
    // The mailbox is watched over one IMAP session opened now: a new one would need a fresh
    // token from `mailgate token`, a second process refreshing behind the server's back.
    let mut imap = crate::support::raw_imap(&f, &rig, "INBOX").await;
    let mut tag = 10;
    let mut count_arrived = async move || {
        tag += 2;
        imap.imap_command(&format!("d{tag}"), "NOOP").await.unwrap();
        let lines = imap
            .imap_command(
                &format!("d{}", tag + 1),
                "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
            )
            .await
            .unwrap_or_default();
        lines
            .iter()
            .filter(|l| l.trim() == "Subject: disk-full once")
            .count()
    };
    f.idp
        .inject_fault(FaultSpec {
            client_id: Some(f.client_id.clone()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 1,
            fault: Fault::Delay { seconds: 3.0 },
        })
        .await
        .unwrap();
    // The token falls due half-way through its life; only time gets it there.
    let due = authorized + Duration::from_secs(SHORT_TOKEN_SECS / 2 + 1);
    tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;

    let (status, _, v) = send(&client, &base, &token, &f.mailbox, "disk-full once").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.counter("token:refresh_token").await == 0 {
        assert!(
            Instant::now() < deadline,
            "sending did not refresh the token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = fs.fill_leaving("filler", 0).unwrap();

    // The message arrives (the refresh's answer was kept in memory and used) ...
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_arrived().await == 0 {
        assert!(Instant::now() < deadline, "the message was not sent");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ... and while its `sent` cannot be written, it stays claimed and is not sent again:
    // watched for longer than the worker's retry delays add up to.
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/messages/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(v["status"], "queued", "{v}");
        assert_eq!(
            count_arrived().await,
            1,
            "sent again while the disk was full"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/messages/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "sent" {
            assert_eq!(v["attempts"], 1, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outcome was never recorded: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count_arrived().await, 1);
    assert_eq!(f.state("support")["state"], "active");
    // The test made the fault it meant to: the refresh's answer and the `sent` both met
    // the full disk.
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(log.contains("keeping it in memory"), "{log}");
    assert!(log.contains("cannot record a message's outcome"), "{log}");
}
