//! Sending through the API: the durable outbox, idempotency keys, retries while SMTP is
//! down, and delivery into the rig's real mailbox (checked over raw IMAP).

use crate::fixtures::Fixture;
use crate::mailtest::on_rig_with;
use mailgate_testkit::raw::RawClient;
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

async fn inbox(f: &Fixture, rig: &MailRig) -> RawClient {
    crate::support::raw_imap(f, rig, "INBOX").await
}

async fn inbox_subjects(f: &Fixture, rig: &MailRig) -> Vec<String> {
    crate::support::folder_subjects(f, rig, "INBOX").await
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

/// 200 requests at once (32 in flight): 150 distinct messages, 100 of them with an
/// idempotency key, and 50 repeats of 25 of those keys with the same body. Every repeat
/// returns the first result; every distinct message arrives exactly once (raw IMAP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sends_with_repeated_keys_arrive_once_each() {
    const DISTINCT: usize = 150;
    const KEYED: usize = 100;
    const REPEATED_KEYS: usize = 25;
    const IN_FLIGHT: usize = 32;
    let started = std::time::Instant::now();
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    // Request n sends message `n % DISTINCT`; messages below KEYED carry the key `key-<n>`;
    // the repeats (requests 150..200) are keyed messages 0..25, twice each.
    let mut requests: Vec<usize> = (0..DISTINCT).collect();
    requests.extend((0..2 * REPEATED_KEYS).map(|i| (i % REPEATED_KEYS) * 4));
    // Interleave originals and repeats so that repeats race their first request.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| (i * 7919) % requests.len());
    let client = reqwest::Client::new();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in order {
        let n = requests[i];
        let (client, limit, token) = (client.clone(), limit.clone(), token.clone());
        let url = format!("{}/api/v1/accounts/1/messages", f.server.base);
        let body = serde_json::json!({
            "to": [f.mailbox],
            "subject": format!("bulk {n} of {DISTINCT}"),
            "text": format!("message {n}"),
        });
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let mut req = client.post(url).bearer_auth(&token).json(&body);
            if n < KEYED {
                req = req.header("Idempotency-Key", format!("key-{n}"));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let v: serde_json::Value = resp.json().await.unwrap();
            (
                n,
                v["id"].as_i64().unwrap(),
                v["message_id"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut first: std::collections::HashMap<usize, (i64, String)> = Default::default();
    let mut answers = 0;
    while let Some(done) = tasks.join_next().await {
        let (n, id, message_id) = done.unwrap();
        answers += 1;
        let seen = first.entry(n).or_insert((id, message_id.clone()));
        assert_eq!(
            *seen,
            (id, message_id),
            "message {n}: a repeated key returns the first result"
        );
    }
    assert_eq!(answers, DISTINCT + 2 * REPEATED_KEYS);
    assert_eq!(first.len(), DISTINCT);
    let ids: std::collections::HashSet<i64> = first.values().map(|(id, _)| *id).collect();
    assert_eq!(
        ids.len(),
        DISTINCT,
        "each distinct message is one outbox item"
    );
    let queued = started.elapsed();

    // All sent, polled with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<i64> = ids.iter().copied().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let v: serde_json::Value = client
                .get(format!("{}/api/v1/messages/{id}", f.server.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_ne!(v["status"], "failed", "{v}");
            if v["status"] != "sent" {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            std::time::Instant::now() < deadline,
            "{} messages never became sent: {pending:?}",
            pending.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let sent = started.elapsed();

    // In the mailbox, over raw IMAP: each once, by subject and by Message-ID. Delivery
    // (Postfix → LMTP) follows the SMTP reply, so wait until all are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let headers = loop {
        let mut imap = inbox(&f, &rig).await;
        let lines = imap
            .imap_command(
                "o3",
                "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])",
            )
            .await
            .unwrap_or_default();
        let count = lines
            .iter()
            .filter(|l| l.starts_with("Subject: bulk "))
            .count();
        if count >= DISTINCT || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (n, (_, message_id)) in &first {
        let subject = format!("Subject: bulk {n} of {DISTINCT}");
        assert_eq!(
            headers.iter().filter(|l| l.trim() == subject).count(),
            1,
            "message {n} arrived exactly once"
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
            .filter(|l| l.starts_with("Subject: bulk "))
            .count(),
        DISTINCT,
        "nothing else and nothing twice"
    );
    eprintln!(
        "200 sends: queued in {queued:?}, all sent after {sent:?}, checked over IMAP after {:?}",
        started.elapsed()
    );
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
    // Postfix and LMTP deliver a moment after submission's 250.
    assert_eq!(
        crate::support::arrivals(
            &f,
            &rig,
            "INBOX",
            "delayed message",
            Duration::from_secs(30)
        )
        .await,
        1
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

/// A permanent refusal (the rig's Postfix does not know `unknown-…` addresses and answers
/// RCPT TO with 550 5.1.1): failed after one attempt, with the server's words verbatim, the
/// remediation, and a `message.failed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_fails_at_once_with_the_servers_words() {
    let (f, _rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    f.authorize().await;
    let token = api_token(&f);
    let nobody = format!("unknown-{}", f.mailbox);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": [nobody], "subject": "to nobody", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let v = wait_for_status(&f, &token, id, "failed", Duration::from_secs(30)).await;
    assert_eq!(v["attempts"], 1, "a permanent refusal is not retried: {v}");
    let reply = v["server_reply"].as_str().unwrap();
    assert!(
        reply.starts_with("550 5.1.1 ")
            && reply.contains(&nobody)
            && reply.contains("User unknown in virtual mailbox table"),
        "the server's words: {v}"
    );
    let error = v["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("RCPT TO {nobody} was refused [send_rejected]"))
            && error.contains("The server refused the message.")
            && error.ends_with(&format!("(server said: {reply})")),
        "what happened, the remediation and the same words: {v}"
    );
    // It stays failed: no retry is scheduled for it. A message of an account not yet
    // authorized fails for want of a token, transiently, and is retried one and then two
    // seconds later. By its third attempt, a retry of the first message (due one second
    // after its failure, and claimed first: it has the lower id) would have run.
    let waiting = format!("waiting-{}", f.mailbox);
    f.env.ok(
        &[
            "account", "add", "--name", "waiting", "--app", "Contoso", "--email", &waiting,
        ],
        None,
    );
    let waiting_id = f.state("waiting")["id"].as_i64().unwrap();
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/accounts/{waiting_id}/messages",
            f.server.base
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": [f.mailbox], "subject": "waits", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let retried = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = wait_for_status(&f, &token, retried, "queued", Duration::from_secs(1)).await;
        if v["attempts"].as_i64().unwrap() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never retried twice: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = wait_for_status(&f, &token, id, "failed", Duration::from_secs(1)).await;
    assert_eq!(again["attempts"], 1, "{again}");
    let events = f
        .env
        .ok(&["events", "--account", "support", "--limit", "20"], None);
    assert!(
        events.contains("message.failed") && events.contains(&format!("message {id} failed")),
        "{events}"
    );

    // The outbox lists it among the failed ones, and it can be queued again (here it is
    // refused again, at its first attempt once more).
    let client = reqwest::Client::new();
    let list: serde_json::Value = client
        .get(format!("{}/api/v1/messages?status=failed", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed = list["messages"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{list}");
    assert_eq!(failed[0]["id"], id);
    assert!(failed[0].get("message").is_none(), "no bytes in a list");
    let sent: serde_json::Value = client
        .get(format!("{}/api/v1/messages?status=sent", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 0, "{sent}");
    let bad = client
        .get(format!("{}/api/v1/messages?status=lost", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad.json::<serde_json::Value>().await.unwrap()["field"],
        "status"
    );
    let retry = client
        .post(format!("{}/api/v1/messages/{id}/retry", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    let queued: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(
        (queued["status"].as_str(), queued["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    let v = wait_for_status(&f, &token, id, "failed", Duration::from_secs(30)).await;
    assert_eq!(v["attempts"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failed_messages_can_be_retried() {
    let (f, _rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    let (status, v) = send(&f, &token, None, "sent once").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = v["id"].as_i64().unwrap();
    wait_for_status(&f, &token, id, "sent", Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let retry = client
        .post(format!("{}/api/v1/messages/{id}/retry", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let p: serde_json::Value = retry.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("is sent"), "{p}");
    let missing = client
        .post(format!("{}/api/v1/messages/999999/retry", f.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let v = wait_for_status(&f, &token, id, "sent", Duration::from_secs(1)).await;
    assert_eq!(v["attempts"], 1, "a sent message is never sent again: {v}");
}

/// A MIME part as received: unfolded headers (names lowercased) and the body with its
/// transfer encoding undone; multiparts hold their parts.
struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    parts: Vec<Part>,
}

impl Part {
    fn parse(raw: &str) -> Part {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().unwrap();
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let mut part = Part {
            headers,
            body: Vec::new(),
            parts: Vec::new(),
        };
        let content_type = part
            .header("content-type")
            .unwrap_or("text/plain")
            .to_owned();
        if content_type.to_ascii_lowercase().starts_with("multipart/") {
            let boundary = content_type
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .unwrap()
                .trim_matches('"')
                .to_owned();
            let (open, close) = (format!("--{boundary}"), format!("--{boundary}--"));
            let mut current: Option<Vec<&str>> = None;
            for line in body.split("\r\n") {
                if line == open || line == close {
                    if let Some(lines) = current.take() {
                        part.parts.push(Part::parse(&lines.join("\r\n")));
                    }
                    if line == open {
                        current = Some(Vec::new());
                    }
                } else if let Some(lines) = current.as_mut() {
                    lines.push(line);
                }
            }
        } else {
            part.body = match part.header("content-transfer-encoding") {
                Some(e) if e.eq_ignore_ascii_case("base64") => {
                    let compact: String = body.split_whitespace().collect();
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, compact)
                        .unwrap()
                }
                Some(e) if e.eq_ignore_ascii_case("quoted-printable") => quoted_printable(body),
                _ => body.as_bytes().to_vec(),
            };
        }
        part
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type without parameters, lowercased.
    fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

fn quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = body.replace("=\r\n", "").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The whole message with `subject_token` in its subject, over raw IMAP, waiting for its
/// delivery.
async fn fetch_message(f: &Fixture, rig: &MailRig, subject_token: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let number = loop {
        let mut imap = inbox(f, rig).await;
        let found = imap
            .imap_command("s1", &format!("SEARCH SUBJECT \"{subject_token}\""))
            .await
            .unwrap();
        let numbers: Vec<String> = found
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert!(numbers.len() <= 1, "delivered once: {numbers:?}");
        if let Some(n) = numbers.first() {
            break n.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{subject_token} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut imap = inbox(f, rig).await;
    let lines = imap
        .imap_command("s2", &format!("FETCH {number} (BODY.PEEK[])"))
        .await
        .unwrap();
    // `* n FETCH (BODY[] {size}`, the literal's lines, `)`, the tagged OK.
    let end = lines.iter().rposition(|l| l == ")").unwrap();
    lines[1..end].join("\r\n")
}

/// The message files delivered to `address` in the rig (its Maildir), for mailboxes the
/// test holds no token for.
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

/// JSON with text, html, attachments (one inline by Content-ID), cc, bcc and a reply-to:
/// the MIME structure, the decoded bytes and the headers arrive as sent; the account's from
/// name and signature are applied; Bcc is delivered but named nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_attachments_cc_and_bcc_arrive_intact() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    let signature = f.env.dir.path().join("signature.txt");
    std::fs::write(&signature, "Support Desk & Co\n<support@example.test>").unwrap();
    let desk = format!("desk-{}", f.mailbox);
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--signature-file",
            signature.to_str().unwrap(),
            "--reply-to",
            &desk,
        ],
        None,
    );
    let (cc, hidden, sales) = (
        format!("cc-{}", f.mailbox),
        format!("hidden-{}", f.mailbox),
        format!("sales-{}", f.mailbox),
    );
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let png: Vec<u8> = [0x89, b'P', b'N', b'G', 13, 10, 26, 10]
        .into_iter()
        .chain(0..200u8)
        .collect();
    let notes = "first line\r\nsecond line: ünïcode ✓\r\n";
    let html =
        "<html><body><p>Hello <b>there</b> <img src=\"cid:logo@mailgate.test\"></p></body></html>";
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "to": [f.mailbox], "cc": [cc], "bcc": [hidden], "reply_to": sales,
            "subject": "mime-check-1",
            "text": "Plain body",
            "html": html,
            "attachments": [
                {"filename": "data.bin", "content_type": "application/octet-stream", "content_base64": b64(&binary)},
                {"filename": "logo.png", "content_type": "image/png", "content_base64": b64(&png), "content_id": "<logo@mailgate.test>"},
                {"filename": "notes.txt", "content_type": "text/plain", "content_base64": b64(notes.as_bytes())},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v["recipients"],
        serde_json::json!([f.mailbox, cc, hidden]),
        "the envelope has the Bcc"
    );
    let sent = wait_for_status(
        &f,
        &token,
        v["id"].as_i64().unwrap(),
        "sent",
        Duration::from_secs(60),
    )
    .await;
    assert!(sent["server_reply"].as_str().unwrap().starts_with("250"));

    let raw = fetch_message(&f, &rig, "mime-check-1").await;
    let message = Part::parse(&raw);
    // Identity and addressing.
    assert_eq!(
        message.header("from"),
        Some(format!("\"Support Desk\" <{}>", f.mailbox).as_str())
    );
    assert_eq!(
        message.header("to"),
        Some(format!("<{}>", f.mailbox).as_str())
    );
    assert_eq!(message.header("cc"), Some(format!("<{cc}>").as_str()));
    assert_eq!(
        message.header("reply-to"),
        Some(format!("<{sales}>").as_str()),
        "the request's reply-to replaces the account's"
    );
    assert_eq!(
        message.header("message-id"),
        Some(format!("<{}>", v["message_id"].as_str().unwrap()).as_str())
    );
    assert!(message.header("bcc").is_none(), "no Bcc header: {raw}");
    for (name, value) in &message.headers {
        if matches!(name.as_str(), "from" | "to" | "cc" | "reply-to" | "sender") {
            assert!(!value.contains(&hidden), "{name}: {value}");
        }
    }
    // Structure: mixed[related[alternative[text, html], png], bin, txt].
    assert_eq!(message.media_type(), "multipart/mixed", "{raw}");
    let kinds: Vec<String> = message.parts.iter().map(Part::media_type).collect();
    assert_eq!(
        kinds,
        [
            "multipart/related",
            "application/octet-stream",
            "text/plain"
        ]
    );
    let related = &message.parts[0];
    let kinds: Vec<String> = related.parts.iter().map(Part::media_type).collect();
    assert_eq!(kinds, ["multipart/alternative", "image/png"]);
    let alternative = &related.parts[0];
    let kinds: Vec<String> = alternative.parts.iter().map(Part::media_type).collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    // The bodies, with the signature.
    let text = &alternative.parts[0];
    assert!(
        text.header("content-type").unwrap().contains("utf-8"),
        "{:?}",
        text.headers
    );
    assert_eq!(
        text.text(),
        "Plain body\r\n-- \r\nSupport Desk & Co\r\n<support@example.test>"
    );
    let html_part = alternative.parts[1].text();
    assert!(
        html_part.starts_with(
            "<html><body><p>Hello <b>there</b> <img src=\"cid:logo@mailgate.test\"></p>"
        ),
        "{html_part}"
    );
    assert!(
        html_part.ends_with("<div class=\"mailgate-signature\">-- <br>\r\nSupport Desk &amp; Co<br>\r\n&lt;support@example.test&gt;</div>\r\n</body></html>"),
        "the signature escaped, in a div before </body>: {html_part}"
    );
    // The attachments, byte for byte.
    let logo = &related.parts[1];
    assert_eq!(logo.body, png);
    assert_eq!(logo.header("content-id"), Some("<logo@mailgate.test>"));
    assert!(
        logo.header("content-disposition")
            .unwrap()
            .starts_with("inline; filename=\"logo.png\"")
    );
    let (data, text_file) = (&message.parts[1], &message.parts[2]);
    assert_eq!(data.body, binary);
    assert_eq!(
        data.header("content-disposition"),
        Some("attachment; filename=\"data.bin\"")
    );
    assert_eq!(text_file.body, notes.as_bytes());
    assert_eq!(
        text_file.header("content-disposition"),
        Some("attachment; filename=\"notes.txt\"")
    );

    // Bcc and Cc were delivered too (their Maildirs: the test holds no token for them).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for address in [&hidden, &cc] {
        let copy = loop {
            let found: Vec<String> = maildir_messages(&rig, address)
                .into_iter()
                .filter(|m| m.contains("mime-check-1"))
                .collect();
            assert!(found.len() <= 1, "{address}: once");
            if let Some(m) = found.into_iter().next() {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{address} got nothing"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let head = copy.split("\r\n\r\n").next().unwrap().replace("\r\n", "\n");
        assert!(
            !head
                .split('\n')
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{head}"
        );
    }
}

/// An html-only message is text/html alone; with neither text nor html the request is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_only_message_is_one_html_part() {
    let (f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = api_token(&f);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": [f.mailbox], "subject": "html-only-1", "html": "<p>Only <i>html</i></p>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: serde_json::Value = resp.json().await.unwrap();
    wait_for_status(
        &f,
        &token,
        v["id"].as_i64().unwrap(),
        "sent",
        Duration::from_secs(60),
    )
    .await;
    let message = Part::parse(&fetch_message(&f, &rig, "html-only-1").await);
    assert_eq!(message.media_type(), "text/html");
    assert!(message.parts.is_empty());
    assert_eq!(message.text(), "<p>Only <i>html</i></p>");
    assert_eq!(
        message.header("from"),
        Some(format!("\"Support Desk\" <{}>", f.mailbox).as_str())
    );
}

/// Every bad JSON send is refused with a problem naming the field, and writes nothing: the
/// first good request afterwards — with an Idempotency-Key every bad one used — is message 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_sends_name_the_field_and_write_nothing() {
    use base64::Engine;
    let (f, _rig) = on_rig_with(&[]).await;
    let token = api_token(&f);
    let to = f.mailbox.clone();
    let good_attachment = serde_json::json!({"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="});
    let with_attachment = |bad: serde_json::Value| {
        let mut third = good_attachment.clone();
        for (k, v) in bad.as_object().unwrap() {
            third[k] = v.clone();
        }
        serde_json::json!({"to": [to], "subject": "s", "text": "t", "attachments": [good_attachment, good_attachment, third]})
    };
    let too_big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 10 * 1024 * 1024 + 1]);
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (serde_json::json!({"to": [to], "subject": "s"}), 422, "text"),
        (
            serde_json::json!({"to": [to], "subject": "s", "text": null, "html": null}),
            422,
            "text",
        ),
        (
            serde_json::json!({"to": [to], "cc": ["nope"], "subject": "s", "text": "t"}),
            422,
            "cc",
        ),
        (
            serde_json::json!({"bcc": ["a@b@c"], "subject": "s", "text": "t"}),
            422,
            "bcc",
        ),
        (
            serde_json::json!({"to": [to], "subject": "s", "text": "t", "reply_to": "not an address"}),
            422,
            "reply_to",
        ),
        (
            serde_json::json!({"to": [to], "subject": "s", "text": "t", "html": 5}),
            422,
            "html",
        ),
        (
            serde_json::json!({"to": [to], "subject": "s", "txt": "t"}),
            422,
            "txt",
        ),
        (
            with_attachment(serde_json::json!({"content_base64": "%%% not base64"})),
            422,
            "attachments[2].content_base64",
        ),
        (
            with_attachment(serde_json::json!({"filename": ""})),
            422,
            "attachments[2].filename",
        ),
        (
            with_attachment(serde_json::json!({"filename": "a.txt\r\nBcc: x@example.test"})),
            422,
            "attachments[2].filename",
        ),
        (
            with_attachment(serde_json::json!({"content_type": "text/plain\r\nX-Injected: yes"})),
            422,
            "attachments[2].content_type",
        ),
        (
            with_attachment(serde_json::json!({"content_type": "pdf"})),
            422,
            "attachments[2].content_type",
        ),
        (
            with_attachment(serde_json::json!({"content_id": "a>\r\nX: <b"})),
            422,
            "attachments[2].content_id",
        ),
        (
            with_attachment(serde_json::json!({"content_base64": too_big})),
            413,
            "attachments",
        ),
        (
            serde_json::json!({"to": [to], "subject": "s", "text": "t", "attachments": [{"filename": "a", "content_type": "text/plain"}]}),
            422,
            "attachments[0].content_base64",
        ),
    ];
    let client = reqwest::Client::new();
    for (body, status, field) in cases {
        let resp = client
            .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", "always-the-same")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{field}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{field}"
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["field"], field, "{v}");
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:mailgate:problem:"),
            "{v}"
        );
    }
    // Neither JSON nor a message: 415 naming the header.
    let resp = client
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("to: someone")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["field"], "Content-Type", "{v}");
    // A body over the request limit: 413 as a problem document, too. One byte over, so the
    // server has read the whole body when it answers (more unread bytes and its close would
    // reset the connection under the client's feet).
    let resp = client
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 16 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // Nothing was written: the key is still free and the outbox still empty.
    let resp = client
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", "always-the-same")
        .json(&serde_json::json!({"to": [to], "subject": "finally", "text": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["id"], 1, "no outbox row before this one: {v}");
    assert_eq!(v["status"], "queued");
}
