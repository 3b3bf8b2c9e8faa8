//! Sending, hardened (issue 12 and 13): outbox quotas, Idempotency-Key bound to its
//! request, recipients cap and attachment names, raw Bcc and From, `sent` recorded on
//! DATA's 250 before QUIT, restart recovery of an instance's own claims, and a temporary
//! AUTH failure (the mail server cannot check the token) that keeps messages queued.

use crate::fixtures::Fixture;
use crate::mailtest::on_rig_with;
use crate::support::{AfterData, SmtpProxy};
use crate::webhooks::{api, api_token};
use mailgate_testkit::idp::{Endpoint, Fault, FaultSpec};
use mailgate_testkit::rig::MailRig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) fn sender_token(f: &Fixture) -> String {
    api_token(f, "sender", &["messages:send"], &[])
}

/// POST a send; (status, headers, body as JSON).
async fn post_send(
    f: &Fixture,
    token: &str,
    account: i64,
    content_type: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/accounts/{account}/messages",
            f.server.base
        ))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

pub(crate) async fn send_json(
    f: &Fixture,
    token: &str,
    account: i64,
    body: Value,
    key: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    post_send(
        f,
        token,
        account,
        "application/json",
        body.to_string().into_bytes(),
        key,
    )
    .await
}

/// How many outbox rows there are (any status).
async fn outbox_count(f: &Fixture, token: &str) -> usize {
    let (status, v) = api(f, token, "GET", "/api/v1/messages?limit=500", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().len()
}

pub(crate) async fn wait_for_status(
    f: &Fixture,
    token: &str,
    id: i64,
    wanted: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, v) = api(f, token, "GET", &format!("/api/v1/messages/{id}"), None).await;
        if v["status"] == wanted {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} did not become {wanted} within {within:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

pub(crate) fn smtp_at(f: &Fixture, account: &str, host: &str, port: &str) {
    f.env.ok(
        &[
            "account",
            "update",
            account,
            "--smtp-host",
            host,
            "--smtp-port",
            port,
        ],
        None,
    );
}

/// The message files delivered to `address` in the rig's Maildir.
pub(crate) fn maildir_messages(rig: &MailRig, address: &str) -> Vec<String> {
    let (local, domain) = address.split_once('@').unwrap();
    let maildir = rig
        .dir()
        .join("mail")
        .join(domain)
        .join(local)
        .join("Maildir");
    ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
        .flatten()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

/// Waits until `address` holds at least one message containing `marker`; returns them all.
async fn delivered(rig: &MailRig, address: &str, marker: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<String> = maildir_messages(rig, address)
            .into_iter()
            .filter(|m| m.contains(marker))
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{marker} never reached {address}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of outbox message `id`, as stored for sending.
async fn outbox_message(f: &Fixture, id: i64) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=ro", f.env.db_path().display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let row = sqlx::query("SELECT message FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    String::from_utf8(row.get::<Vec<u8>, _>("message")).unwrap()
}

/// The same key with the same request answers the first message; with another body it is
/// refused (422 naming Idempotency-Key) and nothing is stored. Every 202 has a Location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_another_body_is_refused() {
    let f = Fixture::start().await;
    let token = sender_token(&f);
    let body = |text: &str| json!({"to": ["a@example.test"], "subject": "key", "text": text});
    let (status, headers, first) = send_json(&f, &token, 1, body("one"), Some("order-17")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["id"].as_i64().unwrap();
    assert_eq!(
        headers["location"],
        format!("/api/v1/messages/{id}").as_str()
    );
    let (status, headers, again) = send_json(&f, &token, 1, body("one"), Some("order-17")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (again["id"].as_i64(), &again["message_id"]),
        (Some(id), &first["message_id"])
    );
    assert_eq!(
        headers["location"],
        format!("/api/v1/messages/{id}").as_str()
    );
    let (status, _, refused) = send_json(&f, &token, 1, body("two"), Some("order-17")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["field"], "Idempotency-Key");
    assert_eq!(
        refused["type"],
        "urn:mailgate:problem:idempotency_key_reused"
    );
    // The same body as another media type is another request too.
    let raw = "From: x@example.test\r\nTo: a@example.test\r\n\r\none\r\n";
    let (status, _, _) = post_send(
        &f,
        &token,
        1,
        "message/rfc822",
        raw.into(),
        Some("order-17"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        outbox_count(&f, &token).await,
        1,
        "nothing stored by the refusals"
    );
}

/// More recipients than MAILGATE_MAX_RECIPIENTS, or an attachment name with a bidirectional
/// control: 422 naming the field, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_recipients_and_bidi_file_names_are_refused_naming_the_field() {
    let f = Fixture::start_with(&[("MAILGATE_MAX_RECIPIENTS", "3")]).await;
    let token = sender_token(&f);
    let (status, _, v) = send_json(
        &f,
        &token,
        1,
        json!({"to": ["a@example.test", "b@example.test"], "cc": ["c@example.test"], "bcc": ["d@example.test"], "subject": "s", "text": "t"}),
        None,
    )
    .await;
    assert_eq!(
        (status, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bcc")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("at most 3 recipients"),
        "{v}"
    );
    let raw = "From: x@example.test\r\nTo: a@example.test, b@example.test\r\nCc: c@example.test,\r\n d@example.test\r\nSubject: s\r\n\r\nt\r\n";
    let (status, _, v) = post_send(&f, &token, 1, "message/rfc822", raw.into(), None).await;
    assert_eq!(
        (status, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Cc")),
        "{v}"
    );
    for name in ["invoice\u{202E}fdp.exe", "a\u{2066}b.pdf", "x\u{7}.txt"] {
        let (status, _, v) = send_json(
            &f,
            &token,
            1,
            json!({"to": ["a@example.test"], "subject": "s", "text": "t", "attachments": [
                {"filename": name, "content_type": "application/pdf", "content_base64": "JVBERi0x"}
            ]}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}: {v}");
        assert_eq!(v["field"], "attachments[0].filename", "{v}");
    }
    let (status, _, v) = send_json(
        &f,
        &token,
        1,
        json!({"to": ["a@example.test", "b@example.test", "c@example.test"], "subject": "s", "text": "t"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "three is allowed: {v}");
    assert_eq!(outbox_count(&f, &token).await, 1);
}

/// Small quotas: an account's messages waiting (queued while its SMTP is unreachable) fill
/// its quota, and the next send is 429 with Retry-After; another account fills the rest of
/// the total, and its next send is 507. Neither stores anything. Once the messages are
/// delivered, sends are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_answers_429_or_507_with_retry_after_and_stores_nothing() {
    let (f, rig) = on_rig_with(&[
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
        ("MAILGATE_OUTBOX_ACCOUNT_QUOTA_BYTES", "6000"),
        ("MAILGATE_OUTBOX_TOTAL_QUOTA_BYTES", "9000"),
    ])
    .await;
    f.authorize().await;
    let token = sender_token(&f);
    let closed = closed_port();
    smtp_at(&f, "support", "127.0.0.1", &closed);
    let second = format!("billing-{}", f.mailbox);
    f.env.ok(
        &[
            "account", "add", "--name", "billing", "--app", "Contoso", "--email", &second,
        ],
        None,
    );
    smtp_at(&f, "billing", "127.0.0.1", &closed);
    let billing = f.state("billing")["id"].as_i64().unwrap();
    // About 2 KB each once built.
    let message = |n: usize| json!({"to": [f.mailbox], "subject": format!("quota {n}"), "text": "q".repeat(1500)});
    let mut accepted = Vec::new();
    let refused = loop {
        let (status, headers, v) = send_json(&f, &token, 1, message(accepted.len()), None).await;
        if status != StatusCode::ACCEPTED {
            break (status, headers, v);
        }
        accepted.push(v["id"].as_i64().unwrap());
        assert!(accepted.len() < 10, "the account quota never filled");
    };
    let (status, headers, v) = refused;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["type"], "urn:mailgate:problem:outbox_quota");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0, "{retry}");
    assert_eq!(
        outbox_count(&f, &token).await,
        accepted.len(),
        "nothing stored"
    );
    assert!(accepted.len() >= 2, "{} accepted", accepted.len());
    // A message larger than the quota itself could never be taken: 413, not "wait".
    let (status, headers, v) = send_json(
        &f,
        &token,
        1,
        json!({"to": [f.mailbox], "subject": "too big", "text": "b".repeat(7000)}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(!headers.contains_key("retry-after"));

    // The other account fills what the total leaves.
    let mut billing_accepted = 0;
    let (status, headers, v) = loop {
        let (status, headers, v) =
            send_json(&f, &token, billing, message(100 + billing_accepted), None).await;
        if status != StatusCode::ACCEPTED {
            break (status, headers, v);
        }
        billing_accepted += 1;
        assert!(billing_accepted < 10, "the total quota never filled");
    };
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert_eq!(v["type"], "urn:mailgate:problem:outbox_full");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let waiting = accepted.len() + billing_accepted;
    assert_eq!(outbox_count(&f, &token).await, waiting, "nothing stored");

    // SMTP back: the support messages go out, and the account may send again.
    smtp_at(
        &f,
        "support",
        "localhost",
        &rig.submission_port().to_string(),
    );
    f.sql("UPDATE outbox SET next_attempt_at = 0 WHERE account_id = 1")
        .await;
    for id in &accepted {
        wait_for_status(&f, &token, *id, "sent", Duration::from_secs(60)).await;
    }
    let (status, _, v) = send_json(&f, &token, 1, message(50), None).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "after delivery the quota has room: {v}"
    );
}

/// A raw message's Bcc is removed by its parsed name — `Bcc :` with a space, `BCC:`
/// folded over two lines — yet delivered; a From that is not the account's is 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_bcc_is_stripped_by_its_parsed_name_and_from_must_be_the_accounts() {
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = sender_token(&f);
    let (hidden, folded) = (
        format!("hidden-{}", f.mailbox),
        format!("folded-{}", f.mailbox),
    );
    let raw = format!(
        "From: Support <{m}>\r\nTo: {m}\r\nBcc : {hidden}\r\nBCC:\r\n  {folded}\r\nSubject: raw bcc check\r\nMessage-ID: <raw-bcc-1@example.test>\r\n\r\nHello.\r\n",
        m = f.mailbox
    );
    let (status, headers, v) = post_send(&f, &token, 1, "message/rfc822", raw.into(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert!(headers.contains_key("location"));
    assert_eq!(
        v["recipients"],
        json!([f.mailbox, hidden, folded]),
        "the envelope has both Bcc"
    );
    // What mailgate hands to SMTP, byte for byte (the rig's Postfix would also drop a Bcc
    // header it recognises, so the mailbox alone cannot show what mailgate sent).
    let stored = outbox_message(&f, v["id"].as_i64().unwrap()).await;
    let stored_head = stored.split("\r\n\r\n").next().unwrap();
    assert!(
        !stored_head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
        "no Bcc header is sent: {stored_head}"
    );
    assert!(
        !stored_head.contains("hidden-") && !stored_head.contains("folded-"),
        "{stored_head}"
    );
    wait_for_status(
        &f,
        &token,
        v["id"].as_i64().unwrap(),
        "sent",
        Duration::from_secs(60),
    )
    .await;
    for address in [&f.mailbox, &hidden, &folded] {
        let copies = delivered(
            &rig,
            address,
            "raw-bcc-1@example.test",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(copies.len(), 1, "{address}: once");
        let head = copies[0]
            .split("\n\n")
            .next()
            .unwrap()
            .replace("\r\n", "\n");
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
            "{address}: no Bcc header: {head}"
        );
        assert!(
            !head.contains("hidden-") && !head.contains("folded-"),
            "{head}"
        );
    }
    // Sending as someone else: refused, naming From.
    for from in ["ceo@example.test", "Support <other@elsewhere.test>", ""] {
        let raw = format!(
            "{}To: {m}\r\nSubject: spoof\r\n\r\nHi.\r\n",
            if from.is_empty() {
                String::new()
            } else {
                format!("From: {from}\r\n")
            },
            m = f.mailbox
        );
        let (status, _, v) = post_send(&f, &token, 1, "message/rfc822", raw.into(), None).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("From")),
            "{from}: {v}"
        );
    }
    assert_eq!(outbox_count(&f, &token).await, 1);
}

/// A message of about 300 KB: far larger than every SMTP command together.
fn large_message(f: &Fixture, subject: &str) -> Value {
    use base64::Engine;
    let bytes: Vec<u8> = (0..220_000u32).map(|i| (i * 7 % 251) as u8).collect();
    json!({"to": [f.mailbox], "subject": subject, "text": "large", "attachments": [{
        "filename": "data.bin", "content_type": "application/octet-stream",
        "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes)
    }]})
}

const LARGE_THRESHOLD: u64 = 200_000;

/// The crash window of issue 12. The server takes the message (DATA's 250) and then never
/// answers QUIT: `sent` is recorded at once (it used to wait for QUIT's reply, up to the
/// 30 s SMTP timeout). A `kill -9` while QUIT hangs and a restart send nothing again: the
/// message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_is_recorded_on_datas_250_before_quit_and_a_crash_then_sends_nothing_twice() {
    let (mut f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = sender_token(&f);
    let proxy = SmtpProxy::start(
        rig.submission_port(),
        LARGE_THRESHOLD,
        AfterData::HoldAfterReply,
    )
    .await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let subject = format!("quit window {}", std::process::id());
    let (status, _, v) = send_json(&f, &token, 1, large_message(&f, &subject), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let started = Instant::now();
    let sent = wait_for_status(&f, &token, id, "sent", Duration::from_secs(10)).await;
    eprintln!(
        "sent recorded {:?} after the send was queued, QUIT unanswered",
        started.elapsed()
    );
    assert!(
        sent["server_reply"].as_str().unwrap().starts_with("250"),
        "{sent}"
    );
    // Crash while QUIT hangs, restart on the direct route, and send one more as a marker.
    f.server.child.kill().unwrap();
    f.server.child.wait().unwrap();
    smtp_at(
        &f,
        "support",
        "localhost",
        &rig.submission_port().to_string(),
    );
    f.server = crate::support::Server::start(&f.env);
    let (_, _, marker) = send_json(
        &f,
        &token,
        1,
        json!({"to": [f.mailbox], "subject": format!("{subject} marker"), "text": "after"}),
        None,
    )
    .await;
    wait_for_status(
        &f,
        &token,
        marker["id"].as_i64().unwrap(),
        "sent",
        Duration::from_secs(30),
    )
    .await;
    delivered(
        &rig,
        &f.mailbox,
        &format!("{subject} marker"),
        Duration::from_secs(30),
    )
    .await;
    let copies = maildir_messages(&rig, &f.mailbox)
        .into_iter()
        .filter(|m| {
            m.contains(&format!("Subject: {subject}\n"))
                || m.contains(&format!("Subject: {subject}\r\n"))
        })
        .count();
    assert_eq!(copies, 1, "the message arrived exactly once");
}

/// Restart recovery: a server killed mid-send (its data stalled before the end) holds the
/// message's claim for 120 s; the restarted server of the same data directory releases it
/// at start, and the message is sent within seconds — once. The same for a watcher's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_releases_its_own_claims_at_once() {
    let (mut f, rig) = on_rig_with(&[
        ("MAILGATE_OUTBOX_RETRY_SECS", "1"),
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_POLL_INTERVAL_SECS", "1"),
    ])
    .await;
    f.authorize().await;
    let token = api_token(&f, "app", &["messages:send", "webhooks:write"], &[]);
    // A subscription makes serve watch the mailbox (lease watch:1).
    let hook = crate::webhooks::Receiver::start(&[]).await;
    let (status, v) = api(
        &f,
        &token,
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": hook.url, "events": ["message.received"], "account_id": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let holder_of_watch = || async {
        let dump = f.env.dump_db().await;
        dump.split("== leases\n")
            .nth(1)
            .and_then(|rest| {
                rest.lines()
                    .find(|l| l.starts_with("Some(\"watch:1\")") || l.contains("watch:1"))
            })
            .map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_watch = loop {
        if let Some(l) = holder_of_watch().await {
            break l;
        }
        assert!(Instant::now() < deadline, "no watcher lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let proxy = SmtpProxy::start(
        rig.submission_port(),
        LARGE_THRESHOLD / 2,
        AfterData::StallMidData,
    )
    .await;
    smtp_at(&f, "support", "127.0.0.1", &proxy.port.to_string());
    let subject = format!("restart recovery {}", std::process::id());
    let (status, _, v) = send_json(&f, &token, 1, large_message(&f, &subject), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().unwrap();
    wait_for_status(&f, &token, id, "sending", Duration::from_secs(20)).await;
    f.server.child.kill().unwrap();
    f.server.child.wait().unwrap();
    smtp_at(
        &f,
        "support",
        "localhost",
        &rig.submission_port().to_string(),
    );
    let restarted = Instant::now();
    f.server = crate::support::Server::start(&f.env);
    wait_for_status(&f, &token, id, "sent", Duration::from_secs(10)).await;
    let send_resumed = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let watch_resumed = loop {
        if let Some(l) = holder_of_watch().await
            && l != first_watch
        {
            break restarted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not resume within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "after the restart: sending resumed in {send_resumed:?}, watching in {watch_resumed:?} (leases: 120 s and 60 s)"
    );
    let copies = delivered(&rig, &f.mailbox, &subject, Duration::from_secs(30)).await;
    assert_eq!(
        copies.len(),
        1,
        "sent once: the stalled attempt never completed"
    );
}

/// Issue 13, part 2: the mail server's token check fails temporarily (the emulator answers
/// Dovecot's introspection with 503, as an unreachable identity provider would): AUTH gets
/// 454 4.7.0, the message stays queued with a temporary error (not `failed` with "wrong
/// audience or scopes"), and it is delivered once the check works again. The fault is
/// scoped to this test's client, so the shared emulator and rig serve other tests as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_token_check_failure_keeps_messages_queued_until_it_recovers() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = sender_token(&f);
    const FAILURES: u32 = 3;
    f.idp
        .inject_fault(FaultSpec {
            client_id: Some(f.client_id.clone()),
            endpoint: Endpoint::Introspect,
            grant_type: None,
            count: FAILURES,
            fault: Fault::HttpStatus { status: 503 },
        })
        .await
        .unwrap();
    let subject = format!("token check outage {}", std::process::id());
    let (status, _, v) = send_json(
        &f,
        &token,
        1,
        json!({"to": [f.mailbox], "subject": subject, "text": "waits for the token check"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_i64().unwrap();
    // While the check fails: queued again with the temporary words, never failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let during = loop {
        let (_, v) = api(&f, &token, "GET", &format!("/api/v1/messages/{id}"), None).await;
        assert_ne!(
            v["status"], "failed",
            "a temporary failure is not final: {v}"
        );
        if v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("auth_temporary"))
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no temporary AUTH failure recorded: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = during["server_reply"].as_str().unwrap_or_default();
    assert!(said.starts_with("454"), "Dovecot's words: {during}");
    let error = during["last_error"].as_str().unwrap();
    assert!(!error.contains("audience"), "{error}");
    // It recovers by itself once the faults are used up.
    let sent = wait_for_status(&f, &token, id, "sent", Duration::from_secs(60)).await;
    assert!(sent["attempts"].as_i64().unwrap() >= 2, "{sent}");
    let copies = delivered(&rig, &f.mailbox, &subject, Duration::from_secs(30)).await;
    assert_eq!(copies.len(), 1);
    assert_eq!(
        f.state("support")["state"],
        "active",
        "the grant was never blamed"
    );
}

/// The first failed step of `mailgate test --json`: (name, remediation code, server's words).
fn first_failed_step(f: &Fixture) -> (String, String, String) {
    let out = f.env.run(
        &[
            "test",
            "support",
            "--json",
            "--step-timeout",
            "5",
            "--find-within",
            "5",
        ],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {report:#}"))
        .clone();
    (
        step["name"].as_str().unwrap().to_owned(),
        step["remediation"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        step.to_string(),
    )
}

/// Dovecot's temporary answers to AUTHENTICATE (IMAP `NO [UNAVAILABLE]`) and AUTH (POP3
/// `-ERR [SYS/TEMP]`) while its token check fails are `auth_temporary` in "Test
/// configuration", not the "wrong audience or scopes" of a refused token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_temporary_auth_failures_are_named_as_temporary() {
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let introspect_fails = FaultSpec {
        client_id: Some(f.client_id.clone()),
        endpoint: Endpoint::Introspect,
        grant_type: None,
        count: 1,
        fault: Fault::HttpStatus { status: 503 },
    };
    f.idp.inject_fault(introspect_fails.clone()).await.unwrap();
    let (step, code, said) = first_failed_step(&f);
    assert_eq!(
        (step.as_str(), code.as_str()),
        ("imap: authenticate", "auth_temporary"),
        "{said}"
    );
    assert!(said.contains("UNAVAILABLE"), "{said}");
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound",
            "pop3",
            "--inbound-host",
            "localhost",
            "--inbound-port",
            &rig.pop3s_port().to_string(),
            "--inbound-tls",
            "implicit",
        ],
        None,
    );
    f.idp.inject_fault(introspect_fails).await.unwrap();
    let (step, code, said) = first_failed_step(&f);
    assert_eq!(
        (step.as_str(), code.as_str()),
        ("pop3: authenticate", "auth_temporary"),
        "{said}"
    );
    assert!(said.contains("SYS/TEMP"), "{said}");
}
