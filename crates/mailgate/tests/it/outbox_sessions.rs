//! Issue 15, item 1: the outbox keeps an authenticated SMTP session per account for
//! consecutive messages (RSET between them), reconnects when the server drops it — each
//! message still sent exactly once — and sends several accounts' messages in parallel.

use crate::fixtures::Fixture;
use crate::mailtest::on_rig_with;
use crate::outbox_hardening::{
    maildir_messages, send_json, sender_token, smtp_at, wait_for_status,
};
use crate::support::{AfterData, SmtpProxy};
use mailgate_testkit::idp::UserSpec;
use mailgate_testkit::rig::MailRig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Far larger than any SMTP command (the AUTH line with its token is about 2 KB).
const THRESHOLD: u64 = 20_000;

/// A message of about 40 KB with `subject`.
fn medium_message(to: &str, subject: &str) -> Value {
    use base64::Engine;
    let bytes: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 251) as u8).collect();
    json!({"to": [to], "subject": subject, "text": "batch", "attachments": [{
        "filename": "data.bin", "content_type": "application/octet-stream",
        "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes)
    }]})
}

/// Queues `count` messages for `account`; their ids and subjects.
async fn queue(
    f: &Fixture,
    token: &str,
    account: i64,
    to: &str,
    tag: &str,
    count: usize,
    body: fn(&str, &str) -> Value,
) -> Vec<(i64, String)> {
    let mut queued = Vec::new();
    for n in 0..count {
        let subject = format!("{tag} {} #{n}", std::process::id());
        let (status, _, v) = send_json(f, token, account, body(to, &subject), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        queued.push((v["id"].as_i64().unwrap(), subject));
    }
    queued
}

/// How many copies of the message with `subject` reached `address`.
fn copies(rig: &MailRig, address: &str, subject: &str) -> usize {
    maildir_messages(rig, address)
        .iter()
        .filter(|m| {
            m.contains(&format!("Subject: {subject}\n"))
                || m.contains(&format!("Subject: {subject}\r\n"))
        })
        .count()
}

/// Waits until every queued message is `sent` and delivered; then checks each arrived
/// exactly once (nothing more arrives within a further second).
async fn all_sent_exactly_once(
    f: &Fixture,
    rig: &MailRig,
    token: &str,
    to: &str,
    queued: &[(i64, String)],
) -> Vec<Value> {
    let mut states = Vec::new();
    for (id, _) in queued {
        states.push(wait_for_status(f, token, *id, "sent", Duration::from_secs(60)).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while queued.iter().any(|(_, s)| copies(rig, to, s) == 0) {
        assert!(Instant::now() < deadline, "not every message was delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A duplicate would come from the same Postfix queue within moments.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (id, subject) in queued {
        assert_eq!(
            copies(rig, to, subject),
            1,
            "message {id} ({subject}) arrived once"
        );
    }
    states
}

/// Many messages of one account use one SMTP session (before: one session per message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_messages_of_one_account_share_one_smtp_session() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = sender_token(&f);
    let proxy = SmtpProxy::start(rig.submission_port(), THRESHOLD, AfterData::PassThrough).await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let to = f.mailbox.clone();
    // The whole batch is queued before the first message goes out.
    proxy.hold();
    let queued = queue(
        &f,
        &token,
        1,
        &to,
        "one session",
        20,
        |to, subject| json!({"to": [to], "subject": subject, "text": "small"}),
    )
    .await;
    proxy.release();
    all_sent_exactly_once(&f, &rig, &token, &to, &queued).await;
    let sessions = proxy.connections();
    eprintln!("20 messages used {sessions} SMTP session(s)");
    assert!(
        sessions == 1,
        "20 messages used {sessions} SMTP sessions; one session should carry the batch"
    );
}

/// The server closes the session between two messages (after the third): RSET finds it
/// closed, a new session sends the rest, and every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closed_between_messages_is_replaced_and_each_message_is_sent_once() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = sender_token(&f);
    let proxy = SmtpProxy::start(
        rig.submission_port(),
        THRESHOLD,
        AfterData::CloseAfterMessages(3),
    )
    .await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let to = f.mailbox.clone();
    // The whole batch is queued before the first message goes out.
    proxy.hold();
    let queued = queue(&f, &token, 1, &to, "closed between", 7, medium_message).await;
    proxy.release();
    let states = all_sent_exactly_once(&f, &rig, &token, &to, &queued).await;
    assert_eq!(proxy.connections(), 2, "one new session after the close");
    for s in &states {
        assert_eq!(s["attempts"], 1, "no message needed a retry: {s}");
    }
}

/// The server drops the session in the middle of the batch, during a message's data: that
/// message goes back to the retry rules (the server never took it), the others are not
/// disturbed, and every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_mid_message_retries_that_message_and_sends_each_exactly_once() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = sender_token(&f);
    let proxy = SmtpProxy::start(
        rig.submission_port(),
        THRESHOLD,
        AfterData::CutMidMessage(2),
    )
    .await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let to = f.mailbox.clone();
    // The whole batch is queued before the first message goes out.
    proxy.hold();
    let queued = queue(&f, &token, 1, &to, "dropped mid", 6, medium_message).await;
    proxy.release();
    let states = all_sent_exactly_once(&f, &rig, &token, &to, &queued).await;
    let retried: Vec<&Value> = states.iter().filter(|s| s["attempts"] != 1).collect();
    assert_eq!(
        retried.len(),
        1,
        "only the cut message was retried: {states:?}"
    );
    assert_eq!(retried[0]["id"], queued[2].0, "the third message was cut");
    assert_eq!(retried[0]["attempts"], 2);
    assert!(proxy.connections() >= 2);
}

/// Two accounts send in parallel: while one account's message is stuck mid-send (its
/// server stalls), the other account's message is sent at once. With one sender for all
/// accounts it waited for the stuck one's 30 s SMTP timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_send_in_parallel() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let other = format!("billing-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&other, crate::fixtures::PASSWORD))
        .await
        .unwrap();
    f.env.ok(
        &[
            "account", "add", "--name", "billing", "--app", "Contoso", "--email", &other,
        ],
        None,
    );
    let submission = rig.submission_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "billing",
            "--smtp-host",
            "localhost",
            "--smtp-port",
            &submission,
            "--smtp-tls",
            "starttls",
        ],
        None,
    );
    f.authorize_as("billing", &other).await;
    let token = sender_token(&f);
    let stalled = SmtpProxy::start(rig.submission_port(), THRESHOLD, AfterData::StallMidData).await;
    smtp_at(&f, "support", "127.0.0.1", &stalled.port.to_string());
    let stuck = queue(&f, &token, 1, &f.mailbox, "stuck", 1, medium_message).await;
    wait_for_status(&f, &token, stuck[0].0, "sending", Duration::from_secs(20)).await;
    let started = Instant::now();
    let other_id = queue(
        &f,
        &token,
        2,
        &f.mailbox,
        "parallel",
        1,
        |to, subject| json!({"to": [to], "subject": subject, "text": "small"}),
    )
    .await;
    wait_for_status(&f, &token, other_id[0].0, "sent", Duration::from_secs(10)).await;
    eprintln!(
        "the second account's message was sent {:?} after it was queued",
        started.elapsed()
    );
    let (_, v) = crate::webhooks::api(
        &f,
        &token,
        "GET",
        &format!("/api/v1/messages/{}", stuck[0].0),
        None,
    )
    .await;
    assert_eq!(v["status"], "sending", "the first is still stuck: {v}");
}

/// `outbox_per_account_concurrency = 2`: one account's batch goes over exactly two sessions
/// at once (the default, 1, uses one: see the test above), each message still once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_account_cap_sets_how_many_sessions_one_account_uses() {
    let (f, rig) = on_rig_with(&[
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
        ("MAILGATE_OUTBOX_PER_ACCOUNT_CONCURRENCY", "2"),
    ])
    .await;
    f.authorize().await;
    let token = sender_token(&f);
    let proxy = SmtpProxy::start(rig.submission_port(), THRESHOLD, AfterData::PassThrough).await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let to = f.mailbox.clone();
    proxy.hold();
    let queued = queue(
        &f,
        &token,
        1,
        &to,
        "two sessions",
        12,
        |to, subject| json!({"to": [to], "subject": subject, "text": "small"}),
    )
    .await;
    proxy.release();
    all_sent_exactly_once(&f, &rig, &token, &to, &queued).await;
    assert_eq!(proxy.connections(), 2, "two sessions for one account");
}
