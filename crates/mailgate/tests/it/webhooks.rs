//! Receiving mail and webhooks through the real server: a message Postfix delivers into
//! the rig's mailbox reaches a local receiver as a signed webhook (IMAP IDLE and POP3
//! polling), retries keep the delivery id across a restart, the delivery log and
//! redelivery, the inbox API, and the refusals.

use crate::fixtures::Fixture;
/// Other modules (`webhooks_ui`) take it from here.
pub(crate) use crate::fixtures::create_token as api_token;
use crate::mailtest::on_rig_with;
use crate::support::db_contains;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use mailgate_testkit::raw::RawClient;
use mailgate_testkit::rig::MailRig;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub(crate) at: Instant,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) answered: u16,
}

impl Hit {
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Inner {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Status codes to answer, in order; 200 once used up.
    script: Arc<Mutex<VecDeque<u16>>>,
    arrived: Arc<tokio::sync::Notify>,
    /// How long to take before answering (a slow receiver).
    delay: Arc<Mutex<Duration>>,
}

/// A webhook receiver on a loopback port (a real HTTP server).
pub(crate) struct Receiver {
    pub(crate) url: String,
    inner: Inner,
}

async fn receive(
    State(inner): State<Inner>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let answered = inner.script.lock().unwrap().pop_front().unwrap_or(200);
    inner.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        headers,
        body: body.to_vec(),
        answered,
    });
    inner.arrived.notify_waiters();
    let delay = *inner.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    pub(crate) async fn start(script: &[u16]) -> Receiver {
        let inner = Inner::default();
        inner.script.lock().unwrap().extend(script.iter().copied());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `within`.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.inner.arrived.notified();
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{n} webhook request(s) expected within {within:?}, got {}",
                hits.len()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Checks `X-Mailgate-Signature` independently of mailgate's code: HMAC-SHA256 over
/// `"<t>.<body>"` with the subscription's secret, and a fresh timestamp.
pub(crate) fn verify_signature(hit: &Hit, secret: &str) {
    let sig = hit.header("x-mailgate-signature");
    let (t, v1) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {sig:?}"));
    let t: i64 = t.parse().unwrap();
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    assert!((now - t).abs() < 300, "timestamp {t} is fresh");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&hit.body);
    let expected = ring::hmac::sign(&key, &signed);
    assert_eq!(v1, hex::encode(expected.as_ref()), "the signature verifies");
    // And a tampered body does not.
    let mut tampered = signed.clone();
    tampered.push(b' ');
    assert!(ring::hmac::verify(&key, &tampered, &hex::decode(v1).unwrap()).is_err());
}

pub(crate) async fn api(
    f: &Fixture,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(m, format!("{}{path}", f.server.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until the account's events include `kind` at least `n` times.
async fn wait_for_event(f: &Fixture, token: &str, kind: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, v) = api(f, token, "GET", "/api/v1/accounts/1/events", None).await;
        let count = v
            .as_array()
            .map(|a| a.iter().filter(|e| e["kind"] == kind).count())
            .unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no {kind} event (×{n}): {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hands a message to the rig's Postfix (plain SMTP, no auth), which delivers it into the
/// mailbox over LMTP: mail arriving as it would from anyone on the internet.
pub(crate) async fn deliver(rig: &MailRig, to: &str, subject: &str, body: &str) {
    let mut smtp = RawClient::connect(rig.host(), rig.smtp_port())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    for (line, code) in [
        ("EHLO sender.test".to_owned(), 250),
        ("MAIL FROM:<ann@sender.test>".to_owned(), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_owned(), 354),
    ] {
        let reply = smtp.smtp_command(&line).await.unwrap();
        assert_eq!(reply.code, code, "{line}: {reply:?}");
    }
    let message = format!(
        "From: Ann Sender <ann@sender.test>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@sender.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n.\r\n",
        subject.replace(' ', "-")
    );
    smtp.send_raw(message.as_bytes()).await.unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 250);
    let _ = smtp.smtp_command("QUIT").await;
}

pub(crate) async fn subscribe(
    f: &Fixture,
    token: &str,
    url: &str,
    events: &[&str],
    account: Option<i64>,
) -> (i64, String) {
    let mut body = json!({ "url": url, "events": events, "description": "test receiver" });
    if let Some(a) = account {
        body["account_id"] = a.into();
    }
    let (status, v) = api(f, token, "POST", "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    (v["id"].as_i64().unwrap(), secret)
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix} {}",
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() % 1_000_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_idle_webhook_is_signed_retried_across_a_restart_and_redelivered() {
    let (mut f, rig) = on_rig_with(&[
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_WEBHOOK_RETRY_SECS", "1"),
    ])
    .await;
    f.env.ok(
        &["account", "update", "support", "--on-received", "mark_seen"],
        None,
    );
    f.authorize().await;
    let token = api_token(
        &f,
        "app",
        &["webhooks:write", "messages:read", "accounts:read"],
        &[],
    );
    let rx = Receiver::start(&[500, 500, 500]).await;
    let (hook, secret) = subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    wait_for_event(&f, &token, "inbound_watching", 1).await;
    let (_, events) = api(&f, &token, "GET", "/api/v1/accounts/1/events", None).await;
    assert!(events.to_string().contains("IMAP IDLE"), "{events}");

    let subject = unique("Order");
    let started = Instant::now();
    deliver(&rig, &f.mailbox, &subject, "Please ship order 42.").await;
    let first = rx.wait_for(1, Duration::from_secs(5)).await.remove(0);
    let latency = first.at - started;
    assert!(latency < Duration::from_secs(5), "IDLE latency {latency:?}");
    eprintln!("IMAP IDLE: webhook {latency:?} after Postfix accepted the message");
    verify_signature(&first, &secret);
    let body = first.json();
    assert_eq!(body["type"], "message.received");
    assert_eq!(first.header("x-mailgate-event"), "message.received");
    assert_eq!(body["account"]["id"], 1);
    assert_eq!(body["account"]["mailbox"], f.mailbox.as_str());
    assert_eq!(body["data"]["message"]["subject"], subject.as_str());
    assert_eq!(
        body["data"]["message"]["from"][0]["address"],
        "ann@sender.test"
    );
    assert!(
        body["data"]["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Please ship order 42."),
        "{body}"
    );
    let delivery_id = first.header("x-mailgate-delivery");
    assert!(delivery_id.starts_with("dlv_"), "{delivery_id}");

    // Restart mailgate while the delivery waits for its second attempt.
    let pid = f.server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(f.server.child.wait().unwrap().success());
    let first_log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    f.server = crate::support::Server::start(&f.env);

    let hits = tokio::time::timeout(
        Duration::from_secs(55),
        rx.wait_for(4, Duration::from_secs(60)),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "retries after the restart: {:?}\nbefore:\n{first_log}\nafter:\n{}",
            rx.hits().len(),
            std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap()
        )
    });
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    for h in &hits {
        assert_eq!(
            h.header("x-mailgate-delivery"),
            delivery_id,
            "one delivery id on every attempt"
        );
        assert_eq!(h.body, first.body, "the same body on every attempt");
        verify_signature(h, &secret);
    }
    // The delivery log, with the receiver's status codes (recorded once the answer is in).
    let deadline = Instant::now() + Duration::from_secs(15);
    let log = loop {
        let path = format!("/api/v1/webhooks/{hook}/deliveries");
        let (status, log) = api(&f, &token, "GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{log}");
        if log["deliveries"][0]["status"] != "delivering" {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(
        deliveries.len(),
        1,
        "processed once, across the restart: {log}"
    );
    let d = &deliveries[0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 4);
    let codes: Vec<i64> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 500, 500, 200]);

    // Manual redelivery: same delivery id, freshly signed.
    let (status, v) = api(
        &f,
        &token,
        "POST",
        &format!("/api/v1/webhooks/{hook}/deliveries/{}/redeliver", d["id"]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let again = rx.wait_for(5, Duration::from_secs(15)).await.remove(4);
    assert_eq!(again.header("x-mailgate-delivery"), delivery_id);
    verify_signature(&again, &secret);

    // The on-received action marked it seen; the inbox API shows it, parsed and raw.
    let deadline = Instant::now() + Duration::from_secs(20);
    let uid = loop {
        let (status, list) = api(
            &f,
            &token,
            "GET",
            "/api/v1/accounts/1/messages?limit=20",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let m = list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["subject"] == subject.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{subject} not listed: {list}"));
        if m["flags"].as_array().unwrap().iter().any(|f| f == "\\Seen") {
            break m["uid"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never marked seen: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(uid, body["data"]["uid"].as_str().unwrap());
    let (status, m) = api(
        &f,
        &token,
        "GET",
        &format!("/api/v1/accounts/1/messages/{uid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["subject"], subject.as_str());
    assert!(m["text"].as_str().unwrap().contains("order 42"));
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/accounts/1/messages/{uid}?raw=true",
            f.server.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert!(
        raw.text()
            .await
            .unwrap()
            .contains(&format!("Subject: {subject}"))
    );
    let (status, missing) = api(
        &f,
        &token,
        "GET",
        "/api/v1/accounts/1/messages/999999",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(rx.hits().len(), 5, "nothing else was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_polling_tracks_uidls_and_deletes_when_asked() {
    let poll = 2;
    let (f, rig) = on_rig_with(&[
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_POLL_INTERVAL_SECS", "2"),
    ])
    .await;
    let pop3s = rig.pop3s_port().to_string();
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
            &pop3s,
            "--inbound-tls",
            "implicit",
            "--on-received",
            "webhook",
        ],
        None,
    );
    f.authorize().await;
    let token = api_token(
        &f,
        "app",
        &["webhooks:write", "messages:read", "accounts:read"],
        &[],
    );
    // A message that is already there is old mail: never sent.
    let old = unique("Before watching");
    deliver(&rig, &f.mailbox, &old, "old").await;
    // Postfix's 250 comes before LMTP delivery: wait until it is in the mailbox, or it could
    // land after the watcher's first look and count as new.
    assert_eq!(
        crate::support::arrivals(&f, &rig, "INBOX", &old, Duration::from_secs(30)).await,
        1,
        "the old message arrived"
    );
    let rx = Receiver::start(&[]).await;
    let (_, secret) = subscribe(&f, &token, &rx.url, &["message.received"], None).await;
    wait_for_event(&f, &token, "inbound_watching", 1).await;

    let mut subjects = Vec::new();
    for (i, text) in ["first", "second"].iter().enumerate() {
        let subject = unique(&format!("POP3 {text}"));
        let started = Instant::now();
        deliver(&rig, &f.mailbox, &subject, text).await;
        let hit = rx
            .wait_for(i + 1, Duration::from_secs(poll + 5))
            .await
            .remove(i);
        let latency = hit.at - started;
        assert!(
            latency <= Duration::from_secs(poll + 2),
            "found within the poll interval ({poll} s) plus processing: {latency:?}"
        );
        eprintln!("POP3 polling every {poll} s: webhook {latency:?} after delivery");
        verify_signature(&hit, &secret);
        let body = hit.json();
        assert_eq!(body["data"]["protocol"], "pop3");
        assert_eq!(body["data"]["message"]["subject"], subject.as_str());
        subjects.push(subject);
    }
    // The first message stayed in the mailbox through the polls that found the second:
    // UIDL tracking kept it from being sent again (and the old one was never sent).
    let hits = rx.hits();
    assert_eq!(
        hits.len(),
        2,
        "{:?}",
        hits.iter().map(Hit::json).collect::<Vec<_>>()
    );
    let (_, list) = api(&f, &token, "GET", "/api/v1/accounts/1/messages", None).await;
    for s in subjects.iter().chain([&old]) {
        assert!(
            list.to_string().contains(s.as_str()),
            "{s} still in the mailbox: {list}"
        );
    }

    // With "delete", the next message is processed and then removed from the server.
    f.env.ok(
        &["account", "update", "support", "--on-received", "delete"],
        None,
    );
    wait_for_watching(&f, &token, "on received: delete").await;
    let gone = unique("POP3 delete me");
    deliver(&rig, &f.mailbox, &gone, "bye").await;
    let hit = rx
        .wait_for(3, Duration::from_secs(poll + 5))
        .await
        .remove(2);
    assert_eq!(hit.json()["data"]["message"]["subject"], gone.as_str());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = api(&f, &token, "GET", "/api/v1/accounts/1/messages", None).await;
        let listed = list.to_string();
        if !listed.contains(&gone) {
            assert!(
                listed.contains(&subjects[0]),
                "only the processed message is deleted"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{gone} was not deleted: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rx.hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_and_reauth_events_reach_global_subscriptions() {
    let (f, _rig) = on_rig_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write", "messages:send"], &[]);
    let rx = Receiver::start(&[]).await;
    let (_, secret) = subscribe(
        &f,
        &token,
        &rx.url,
        &["message.sent", "account.reauth_required"],
        None,
    )
    .await;
    let (status, queued) = api(
        &f,
        &token,
        "POST",
        "/api/v1/accounts/1/messages",
        Some(json!({"to": [f.mailbox], "subject": "webhook on send", "text": "hi"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let sent = rx.wait_for(1, Duration::from_secs(30)).await.remove(0);
    verify_signature(&sent, &secret);
    let body = sent.json();
    assert_eq!(body["type"], "message.sent");
    assert_eq!(body["data"]["message"]["id"], queued["id"]);
    assert_eq!(body["data"]["message"]["status"], "sent");
    assert!(
        body["data"]["message"]["server_reply"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{body}"
    );

    // The grant is revoked at the provider: the next refresh (here by the CLI, another
    // process) moves the account to reauth_required, and the webhook says why.
    f.expire_stored_token().await;
    f.idp
        .inject_fault(mailgate_testkit::idp::FaultSpec::token(
            &f.client_id,
            mailgate_testkit::idp::Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    assert!(!f.token().status.success());
    let reauth = rx.wait_for(2, Duration::from_secs(30)).await.remove(1);
    let body = reauth.json();
    assert_eq!(body["type"], "account.reauth_required");
    assert_eq!(body["account"]["state"], "reauth_required");
    assert_eq!(body["data"]["problem"]["code"], "grant_revoked");
    assert!(
        body["data"]["problem"]["remediation"]
            .as_str()
            .unwrap()
            .len()
            > 20
    );

    // The same facts as Prometheus gauges, without a token and without names.
    let resp = reqwest::get(format!("{}/metrics", f.server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    for line in [
        "# TYPE mailgate_accounts gauge",
        "mailgate_accounts{state=\"reauth_required\"} 1",
        "mailgate_outbox{status=\"sent\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // The message.sent delivery is done; the reauth one may still be being recorded.
    assert!(
        text.lines().any(|l| {
            l.strip_prefix("mailgate_webhook_deliveries{status=\"delivered\"} ")
                .is_some_and(|n| n == "1" || n == "2")
        }),
        "{text}"
    );
    assert!(
        !text.contains(&f.mailbox) && !text.contains("support"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_subscriptions_refuse_bad_input_and_keep_their_secret() {
    let f = Fixture::start().await;
    let admin = api_token(&f, "admin", &["webhooks:write"], &[]);
    let limited = api_token(&f, "limited", &["webhooks:write"], &["support"]);
    // Each token's first use stamps its last_used_at (then at most once a minute).
    for t in [&admin, &limited] {
        assert_eq!(
            api(&f, t, "GET", "/api/v1/webhooks", None).await.0,
            StatusCode::OK
        );
    }
    let before = f.env.dump_db().await;
    let cases = [
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["message.received"]}),
            "url",
            "MAILGATE_WEBHOOK_ALLOW_PRIVATE",
        ),
        (
            json!({"url": "http://[::1]/x", "events": ["message.received"]}),
            "url",
            "private",
        ),
        (
            json!({"url": "http://localhost/x", "events": ["message.received"]}),
            "url",
            "private",
        ),
        (
            json!({"url": "ftp://hooks.example.com/x", "events": ["message.received"]}),
            "url",
            "http or https",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": ["message.bounced"]}),
            "events[0]",
            "message.received",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": []}),
            "events",
            "at least one",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": ["message.sent"], "account_id": 99}),
            "account_id",
            "no account",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": ["message.sent"], "description": "a\nb"}),
            "description",
            "line breaks",
        ),
    ];
    for (body, field, words) in cases {
        let (status, v) = api(&f, &admin, "POST", "/api/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(words), "{body}: {v}");
    }
    let (status, v) = api(&f, &admin, "POST", "/api/v1/webhooks", Some(json!({"url": "https://hooks.example.com/x", "events": ["message.sent"], "colour": "red"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("colour"), "{v}");
    // A token limited to one account cannot subscribe to every account's events.
    let (status, v) = api(
        &f,
        &limited,
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": "https://hooks.example.com/x", "events": ["message.sent"]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(f.env.dump_db().await, before, "nothing was stored");

    let (id, secret) = subscribe(
        &f,
        &limited,
        "https://hooks.example.com/x",
        &["message.received"],
        Some(1),
    )
    .await;
    assert!(
        !db_contains(&f.env.db_path(), &secret),
        "the secret is sealed at rest"
    );
    let (status, v) = api(&f, &limited, "GET", &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        v.get("secret").is_none() && !v.to_string().contains(&secret),
        "{v}"
    );
    let (_, list) = api(&f, &admin, "GET", "/api/v1/webhooks", None).await;
    assert!(!list.to_string().contains(&secret), "{list}");
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    let (status, _) = api(
        &f,
        &admin,
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = api(&f, &admin, "GET", &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(!log.contains(&secret), "the secret is not logged");
}

/// Waits until the account has more than `n` events of `kind`; returns their messages.
async fn wait_for_more(f: &Fixture, token: &str, kind: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, v) = api(f, token, "GET", "/api/v1/accounts/1/events", None).await;
        let found: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect();
        if found.len() > n {
            return found;
        }
        assert!(Instant::now() < deadline, "no new {kind} event: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an `inbound_watching` event says `words` (e.g. the new on-received action).
pub(crate) async fn wait_for_watching(f: &Fixture, token: &str, words: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, v) = api(f, token, "GET", "/api/v1/accounts/1/events", None).await;
        let found = v.as_array().unwrap().iter().any(|e| {
            e["kind"] == "inbound_watching" && e["message"].as_str().unwrap().contains(words)
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no watcher with {words:?}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls raw IMAP until `check` holds for (INBOX subjects, Archive subjects).
async fn wait_for_folders(
    f: &Fixture,
    rig: &MailRig,
    what: &str,
    check: impl Fn(&[String], &[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inbox = crate::support::folder_subjects(f, rig, "INBOX").await;
        let archive = crate::support::folder_subjects(f, rig, "Archive").await;
        if check(&inbox, &archive) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: INBOX {inbox:?}, Archive {archive:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_actions_move_and_delete_and_a_missing_folder_is_reported() {
    let (f, rig) = on_rig_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    // A folder that does not exist: the webhook still goes out, the message stays in the
    // inbox, and the administrator sees the server's words.
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--on-received",
            "move:No Such Folder",
        ],
        None,
    );
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write", "accounts:read"], &[]);
    let mut imap = crate::support::raw_imap(&f, &rig, "INBOX").await;
    imap.imap_command("c1", "CREATE Archive").await.unwrap();
    let rx = Receiver::start(&[]).await;
    subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    wait_for_event(&f, &token, "inbound_watching", 1).await;
    let stays = unique("Cannot move");
    deliver(&rig, &f.mailbox, &stays, "stays").await;
    let hit = rx.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(hit.json()["data"]["message"]["subject"], stays.as_str());
    let failed = wait_for_more(&f, &token, "inbound_failed", 0).await;
    assert!(
        failed[0].contains("No Such Folder") && failed[0].contains("server said"),
        "{failed:?}"
    );

    // Move to a folder that exists.
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--on-received",
            "move:Archive",
        ],
        None,
    );
    wait_for_watching(&f, &token, "on received: move:Archive").await;
    let moved = unique("Move me");
    deliver(&rig, &f.mailbox, &moved, "to the archive").await;
    rx.wait_for(2, Duration::from_secs(10)).await;
    wait_for_folders(&f, &rig, "moved to Archive", |inbox, archive| {
        archive.contains(&moved) && !inbox.contains(&moved) && inbox.contains(&stays)
    })
    .await;

    // Delete.
    f.env.ok(
        &["account", "update", "support", "--on-received", "delete"],
        None,
    );
    wait_for_watching(&f, &token, "on received: delete").await;
    let deleted = unique("Delete me");
    deliver(&rig, &f.mailbox, &deleted, "gone").await;
    let hits = rx.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(
        hits[2].json()["data"]["message"]["subject"],
        deleted.as_str()
    );
    wait_for_folders(&f, &rig, "deleted", |inbox, archive| {
        !inbox.contains(&deleted) && !archive.contains(&deleted) && inbox.contains(&stays)
    })
    .await;
    assert_eq!(rx.hits().len(), 3, "each message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_without_idle_is_polled() {
    let poll = 2;
    let (f, rig) = Fixture::start_on_own_rig(
        &[
            ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("MAILGATE_POLL_INTERVAL_SECS", "2"),
        ],
        mailgate_testkit::rig::RigOptions {
            no_idle: true,
            ..Default::default()
        },
    )
    .await;
    crate::mailtest::point_at_rig(&f, &rig);
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write", "accounts:read"], &[]);
    let rx = Receiver::start(&[]).await;
    let (_, secret) = subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    wait_for_watching(&f, &token, "IMAP polling").await;
    for i in 0..2 {
        let subject = unique("Polled");
        let started = Instant::now();
        deliver(&rig, &f.mailbox, &subject, "no push here").await;
        let hit = rx
            .wait_for(i + 1, Duration::from_secs(poll + 5))
            .await
            .remove(i);
        let latency = hit.at - started;
        assert!(
            latency <= Duration::from_secs(poll + 2),
            "found within the poll interval ({poll} s) plus processing: {latency:?}"
        );
        verify_signature(&hit, &secret);
        assert_eq!(hit.json()["data"]["protocol"], "imap");
        assert_eq!(hit.json()["data"]["message"]["subject"], subject.as_str());
    }
    assert_eq!(rx.hits().len(), 2, "each message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_up_the_others() {
    let f = Fixture::start_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write"], &[]);
    let slow = Receiver::start(&[]).await;
    *slow.inner.delay.lock().unwrap() = Duration::from_secs(14);
    let fast = Receiver::start(&[]).await;
    // The slow subscription is older, so its delivery is claimed first.
    subscribe(&f, &token, &slow.url, &["account.reauth_required"], None).await;
    subscribe(&f, &token, &fast.url, &["account.reauth_required"], None).await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(mailgate_testkit::idp::FaultSpec::token(
            &f.client_id,
            mailgate_testkit::idp::Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(!f.token().status.success());
    let hit = fast.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(hit.json()["type"], "account.reauth_required");
    let slow_hit = slow.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert!(
        hit.at - started < Duration::from_secs(10),
        "the fast receiver was not kept waiting behind the slow one"
    );
    assert_eq!(
        slow_hit.header("x-mailgate-event"),
        "account.reauth_required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_imap_session_is_reopened_and_mail_meanwhile_is_not_missed() {
    let (f, rig) = on_rig_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write", "accounts:read"], &[]);
    let rx = Receiver::start(&[]).await;
    subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    wait_for_watching(&f, &token, "IMAP IDLE").await;
    // The server ends the session (as Exchange does at token expiry: `* BYE`).
    let kicked = rig.kick(&f.mailbox).unwrap();
    assert!(kicked.contains(&f.mailbox), "{kicked}");
    let failed = wait_for_more(&f, &token, "inbound_failed", 0).await;
    assert!(
        failed[0].contains("connection_lost") || failed[0].contains("BYE"),
        "{failed:?}"
    );
    // Mail that arrives while the watcher reconnects is caught up from the last UID.
    let subject = unique("While away");
    deliver(&rig, &f.mailbox, &subject, "hello again").await;
    let hit = rx.wait_for(1, Duration::from_secs(20)).await.remove(0);
    assert_eq!(hit.json()["data"]["message"]["subject"], subject.as_str());
    wait_for_more(&f, &token, "inbound_watching", 1).await;
    assert_eq!(rx.hits().len(), 1);
}

/// Moves the fixture's account to reauth_required through the emulator (a revoked grant
/// at the next refresh, done by the CLI).
async fn revoke_grant(f: &Fixture) {
    f.expire_stored_token().await;
    f.idp
        .inject_fault(mailgate_testkit::idp::FaultSpec::token(
            &f.client_id,
            mailgate_testkit::idp::Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    assert!(!f.token().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_gets_nothing_and_a_rotated_secret_signs_from_then_on() {
    let f = Fixture::start_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    f.authorize().await;
    let token = api_token(&f, "app", &["webhooks:write"], &[]);
    let rx = Receiver::start(&[]).await;
    let (id, old_secret) = subscribe(&f, &token, &rx.url, &["account.reauth_required"], None).await;
    let path = format!("/api/v1/webhooks/{id}");

    let (status, v) = api(&f, &token, "PATCH", &path, Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["enabled"], false);
    revoke_grant(&f).await;
    let log_path = format!("{path}/deliveries");
    let (_, log) = api(&f, &token, "GET", &log_path, None).await;
    assert_eq!(
        log["deliveries"],
        json!([]),
        "a paused subscription queues nothing"
    );

    // Bad changes name their field and change nothing.
    let before = f.env.dump_db().await;
    for (body, field) in [
        (json!({"url": "ftp://x.example/"}), "url"),
        (json!({"events": []}), "events"),
        (json!({"events": ["message.lost"]}), "events[0]"),
        (json!({"description": "two\nlines"}), "description"),
    ] {
        let (status, v) = api(&f, &token, "PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let (status, _) = api(&f, &token, "PATCH", &path, Some(json!({"enabled": "yes"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(f.env.dump_db().await, before, "nothing changed");

    let (status, v) = api(
        &f,
        &token,
        "PATCH",
        &path,
        Some(json!({"enabled": true, "description": "resumed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["enabled"].clone(), v["description"].clone()),
        (json!(true), json!("resumed"))
    );
    let (status, v) = api(&f, &token, "POST", &format!("{path}/rotate-secret"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new_secret = v["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    let (_, shown) = api(&f, &token, "GET", &path, None).await;
    assert!(!shown.to_string().contains(&new_secret), "shown once only");

    f.authorize().await;
    revoke_grant(&f).await;
    let hit = rx.wait_for(1, Duration::from_secs(15)).await.remove(0);
    assert_eq!(hit.json()["type"], "account.reauth_required");
    verify_signature(&hit, &new_secret);
    let sig = hit.header("x-mailgate-signature");
    let t = sig.split(',').next().unwrap().trim_start_matches("t=");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, old_secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&hit.body);
    assert_ne!(
        sig.split("v1=").nth(1).unwrap(),
        hex::encode(ring::hmac::sign(&key, &signed).as_ref()),
        "the old secret no longer signs"
    );
    assert_eq!(rx.hits().len(), 1);
}
