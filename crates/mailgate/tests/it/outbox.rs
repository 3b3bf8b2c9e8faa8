//! Sending through the API: the durable outbox, idempotency keys, retries while SMTP is
//! down, and delivery into the rig's real mailbox (checked over raw IMAP).

use crate::mailtest::on_rig_with;
use crate::oauth::Fixture;
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::MailRig;
use reqwest::StatusCode;
use std::time::Duration;

fn api_token(f: &Fixture) -> String {
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "sender",
            "--scope",
            "messages:send",
        ],
        None,
    );
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn send(
    f: &Fixture,
    token: &str,
    key: Option<&str>,
    subject: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(token)
        .json(&serde_json::json!({"to": [f.mailbox], "subject": subject, "text": "sent through the mailgate API"}));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Subjects of the messages in the INBOX, over raw IMAP.
async fn inbox_subjects(f: &Fixture, rig: &MailRig) -> Vec<String> {
    let token = f.env.ok(&["token", "support"], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(&f.mailbox, &token);
    let auth = imap
        .imap_command("o1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "o1", "OK"));
    imap.imap_command("o2", "SELECT INBOX").await.unwrap();
    let lines = imap
        .imap_command("o3", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await
        .unwrap_or_default();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
        .collect()
}

async fn wait_for_status(
    f: &Fixture,
    token: &str,
    id: i64,
    wanted: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/messages/{id}", f.server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == wanted {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message {id} never became {wanted}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_with_idempotency_keys_arrive_once_each() {
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    // 20 requests: 10 distinct messages, each sent twice at once with the same key.
    let mut handles = Vec::new();
    for i in 0..20 {
        let n = i % 10;
        let (base, token) = (f.server.base.clone(), token.clone());
        let mailbox = f.mailbox.clone();
        handles.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/api/v1/accounts/1/messages"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("key-{n}"))
                .json(&serde_json::json!({"to": [mailbox], "subject": format!("outbox test {n}"), "text": "hello"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let v: serde_json::Value = resp.json().await.unwrap();
            (n, v["id"].as_i64().unwrap())
        }));
    }
    let mut ids = std::collections::HashMap::new();
    for h in handles {
        let (n, id) = h.await.unwrap();
        let first = *ids.entry(n).or_insert(id);
        assert_eq!(first, id, "the same key returns the first result");
    }
    assert_eq!(ids.len(), 10);
    for id in ids.values() {
        let v = wait_for_status(&f, &token, *id, "sent", Duration::from_secs(60)).await;
        assert!(
            v["server_reply"].as_str().unwrap().starts_with("250"),
            "{v}"
        );
    }
    let subjects = inbox_subjects(&f, &rig).await;
    for n in 0..10 {
        assert_eq!(
            subjects
                .iter()
                .filter(|s| **s == format!("outbox test {n}"))
                .count(),
            1,
            "message {n} arrived exactly once: {subjects:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_while_smtp_is_down_and_go_when_it_returns() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = api_token(&f);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &closed,
        ],
        None,
    );
    let (status, v) = send(&f, &token, None, "delayed message").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert_eq!(v["status"], "queued");
    // It is attempted and kept queued with the reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/messages/{id}", f.server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["attempts"].as_i64().unwrap() >= 1 && v["status"] == "queued" {
            assert!(
                v["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("connection_refused"),
                "{v}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never attempted: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SMTP back: the next retry delivers it.
    let submission = rig.submission_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--smtp-host",
            "localhost",
            "--smtp-port",
            &submission,
        ],
        None,
    );
    wait_for_status(&f, &token, id, "sent", Duration::from_secs(60)).await;
    assert!(
        inbox_subjects(&f, &rig)
            .await
            .iter()
            .any(|s| s == "delayed message")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_send_requests_are_refused_with_the_field() {
    let (f, _rig) = on_rig_with(&[]).await;
    let token = api_token(&f);
    for (body, field) in [
        (
            serde_json::json!({"to": ["not-an-address"], "subject": "x", "text": "y"}),
            "to",
        ),
        (
            serde_json::json!({"to": [], "subject": "x", "text": "y"}),
            "to",
        ),
        (
            serde_json::json!({"to": ["a@example.test"], "subject": "two\nlines", "text": "y"}),
            "subject",
        ),
    ] {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["field"], field, "{v}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A token without messages:send.
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "reader",
            "--scope",
            "accounts:read",
        ],
        None,
    );
    let reader = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, _) = send(&f, &reader, None, "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// `kill -9` with 100 messages in the outbox (SMTP down, so nothing is in flight, plus one
/// message left "sending" by a dead process): after a restart all 100 arrive, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_from_the_outbox() {
    let (mut f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = api_token(&f);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &closed,
        ],
        None,
    );
    let mut ids = Vec::new();
    for n in 0..100 {
        let (status, v) = send(
            &f,
            &token,
            Some(&format!("crash-{n}")),
            &format!("crash test {n}"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    f.server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    f.server.child.wait().unwrap();
    // Let time pass: the retries while SMTP was down pushed the next attempts out (backoff),
    // and a message the killed process was attempting keeps its lease (120 s) until it
    // expires. And, as if the dead process had claimed one more and died mid-send:
    f.sql("UPDATE outbox SET next_attempt_at = 0").await;
    f.sql("UPDATE outbox SET lease_until = 1000 WHERE status = 'sending'")
        .await;
    f.sql(&format!("UPDATE outbox SET status = 'sending', lease_holder = 'dead-process', lease_until = 1000 WHERE id = {}", ids[0])).await;
    let submission = rig.submission_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--smtp-host",
            "localhost",
            "--smtp-port",
            &submission,
        ],
        None,
    );
    f.server = crate::support::Server::start(&f.env);
    for id in &ids {
        wait_for_status(&f, &token, *id, "sent", Duration::from_secs(120)).await;
    }
    let subjects = inbox_subjects(&f, &rig).await;
    for n in 0..100 {
        assert_eq!(
            subjects
                .iter()
                .filter(|s| **s == format!("crash test {n}"))
                .count(),
            1,
            "message {n} exactly once"
        );
    }
}

/// A ready message (`message/rfc822`): envelope from To/Cc/Bcc, Bcc removed, Message-ID kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_rfc822_message_is_sent_as_is_without_its_bcc() {
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    let hidden = format!("hidden-{}", f.mailbox);
    let raw = format!(
        "From: Support <{m}>\r\nTo: \"Support, Desk\" <{m}>\r\nBcc: {hidden}\r\nSubject: raw message\r\nMessage-ID: <raw-1@example.test>\r\n\r\nHello from a raw message.\r\n",
        m = f.mailbox
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["message_id"], "raw-1@example.test");
    assert_eq!(
        v["recipients"],
        serde_json::json!([f.mailbox, hidden]),
        "the envelope includes the Bcc"
    );
    wait_for_status(
        &f,
        &token,
        v["id"].as_i64().unwrap(),
        "sent",
        Duration::from_secs(60),
    )
    .await;
    let token_mail = f.env.ok(&["token", "support"], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(&f.mailbox, &token_mail);
    imap.imap_command("r1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    imap.imap_command("r2", "SELECT INBOX").await.unwrap();
    let header = imap
        .imap_command("r3", "FETCH 1 (BODY.PEEK[HEADER])")
        .await
        .unwrap()
        .join("\n");
    assert!(
        header.contains("raw-1@example.test") && header.contains("Subject: raw message"),
        "{header}"
    );
    assert!(
        !header.to_ascii_lowercase().contains("bcc:"),
        "the Bcc header is not sent: {header}"
    );
    // Bad raw input: no recipient.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .header("content-type", "message/rfc822")
        .body("Subject: nobody\r\n\r\nbody\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
