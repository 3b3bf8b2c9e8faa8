//! `/metrics` after a scripted scenario against the real server, the emulator and the mail
//! rig: authorize, sends (one refused for good), webhooks (one retried), token refreshes
//! (ok, transient, permanent), a watcher, HTTP requests. The scrape is parsed by an
//! independent parser (PyPI `prometheus_client`, which `scripts/test` installs), and the
//! values are read from what it parsed. `metrics_token` guards it.

use crate::mailtest::on_rig_with;
use crate::oauth::Fixture;
use crate::webhooks::{Receiver, api, api_token, subscribe};
use mailgate_testkit::idp::{Fault, FaultSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const METRICS_TOKEN: &str = "metrics-canary-7f3a9c2e5b1d";

/// One parsed sample: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

/// The samples of a scrape as Python's `prometheus_client` parser reads them (it raises on
/// anything that is not the Prometheus text format), with each family's type.
fn parse_with_prometheus_client(text: &str) -> (Vec<Sample>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(open(sys.argv[1]).read()))
print(json.dumps({
    "types": {f.name: f.type for f in families},
    "samples": [[s.name, s.labels, s.value] for f in families for s in f.samples],
}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape (scripts/test installs PyPI prometheus-client): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s[0].as_str().unwrap().to_owned(),
            labels: s[1].clone(),
            value: s[2].as_f64().unwrap(),
        })
        .collect();
    (samples, parsed["types"].clone())
}

/// The value of the sample `name` whose labels include `labels` (None: no such sample).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
        .map(|s| s.value)
}

async fn scrape(f: &Fixture, token: Option<&str>) -> reqwest::Response {
    let mut req = f.http.get(format!("{}/metrics", f.server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Scrapes (with the token) until `ready` holds for the parsed samples, at most 30 s.
async fn scrape_until(f: &Fixture, what: &str, ready: impl Fn(&[Sample]) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(f, Some(METRICS_TOKEN)).await.text().await.unwrap();
        let (samples, _) = parse_with_prometheus_client(&text);
        if ready(&samples) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(f: &Fixture, token: &str, to: &str, subject: &str) {
    let (status, v) = api(
        f,
        token,
        "POST",
        "/api/v1/accounts/1/messages",
        Some(json!({"to": [to], "subject": subject, "text": "hi"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_refreshes_sends_webhooks_watchers_and_requests() {
    let (f, _rig) = on_rig_with(&[
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_WEBHOOK_RETRY_SECS", "1"),
        ("MAILGATE_METRICS_TOKEN", METRICS_TOKEN),
    ])
    .await;
    f.authorize().await;
    let token = api_token(
        &f,
        "metrics-app",
        &["webhooks:write", "messages:send", "tokens:read"],
        &[],
    );
    // The first delivery attempt is answered 500 and retried; the rest 200.
    let rx = Receiver::start(&[500]).await;
    subscribe(
        &f,
        &token,
        &rx.url,
        &["message.sent", "message.failed"],
        None,
    )
    .await;
    // A message.received subscription starts a watcher on the account's inbox. Nothing is
    // sent to that inbox, so it delivers nothing.
    subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    let watching = scrape_until(&f, "a connected watcher", |s| {
        value(s, "mailgate_watcher_sessions", &[("state", "connected")]) == Some(1.0)
    })
    .await;
    assert!(
        watching.contains("# TYPE mailgate_watcher_sessions gauge"),
        "{watching}"
    );

    // One send delivered, one refused for good by the rig's Postfix (`unknown-…`).
    let domain = f.mailbox.split('@').nth(1).unwrap();
    send(&f, &token, &format!("reader@{domain}"), "metrics sent").await;
    send(
        &f,
        &token,
        &format!("unknown-reader@{domain}"),
        "metrics failed",
    )
    .await;
    rx.wait_for(3, Duration::from_secs(60)).await;

    // Refreshes in the server: a 503 then success (transient + ok), then a revoked grant.
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(
            &f.client_id,
            Fault::HttpStatus { status: 503 },
        ))
        .await
        .unwrap();
    let (status, v) = api(&f, &token, "GET", "/api/v1/accounts/1/token", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(
            &f.client_id,
            Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    let (status, v) = api(&f, &token, "GET", "/api/v1/accounts/1/token", None).await;
    assert_ne!(status, StatusCode::OK, "{v}");
    assert_eq!(f.state("support")["state"], "reauth_required");

    // A path no route matches, carrying what looks like a secret: never a label.
    let canary_path = format!("/no/such/{METRICS_TOKEN}-path-canary");
    let resp = f
        .http
        .get(format!("{}{canary_path}", f.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    let expires = time::OffsetDateTime::from_unix_timestamp(now + 10 * 86400)
        .unwrap()
        .date();
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--secret-expires",
            &expires.to_string(),
        ],
        None,
    );

    // Without the token, or with another one: refused, and nothing counted is shown.
    for wrong in [None, Some("metrics-canary-7f3a9c2e5b1X")] {
        let resp = scrape(&f, wrong).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key("www-authenticate"));
        let body = resp.text().await.unwrap();
        assert!(!body.contains("mailgate_"), "{body}");
    }

    let resp = scrape(&f, Some(METRICS_TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    // Webhook outcomes are recorded after the receiver answered: wait for the third.
    let text = scrape_until(&f, "three webhook attempts", |s| {
        value(s, "mailgate_webhook_delivery_duration_seconds_count", &[]) == Some(3.0)
    })
    .await;
    let (samples, types) = parse_with_prometheus_client(&text);
    let microsoft = ("provider", "microsoft");
    for (name, labels, expected) in [
        (
            "mailgate_token_refreshes_total",
            vec![microsoft, ("outcome", "ok"), ("code", "")],
            1.0,
        ),
        (
            "mailgate_token_refreshes_total",
            vec![microsoft, ("outcome", "transient"), ("code", "transient")],
            1.0,
        ),
        (
            "mailgate_token_refreshes_total",
            vec![
                microsoft,
                ("outcome", "permanent"),
                ("code", "grant_revoked"),
            ],
            1.0,
        ),
        (
            "mailgate_token_refresh_duration_seconds_count",
            vec![microsoft],
            3.0,
        ),
        ("mailgate_sends_total", vec![("outcome", "sent")], 1.0),
        ("mailgate_sends_total", vec![("outcome", "failed")], 1.0),
        ("mailgate_outbox", vec![("status", "sent")], 1.0),
        ("mailgate_outbox", vec![("status", "failed")], 1.0),
        ("mailgate_outbox_oldest_queued_seconds", vec![], 0.0),
        (
            "mailgate_webhook_delivery_attempts_total",
            vec![("outcome", "delivered")],
            2.0,
        ),
        (
            "mailgate_webhook_delivery_attempts_total",
            vec![("outcome", "retry")],
            1.0,
        ),
        ("mailgate_accounts", vec![("state", "reauth_required")], 1.0),
        (
            "mailgate_http_requests_total",
            vec![
                ("route", "/api/v1/accounts/{id}/messages"),
                ("method", "POST"),
                ("status", "202"),
            ],
            2.0,
        ),
        (
            "mailgate_http_requests_total",
            vec![
                ("route", "/api/v1/accounts/{id}/token"),
                ("method", "GET"),
                ("status", "200"),
            ],
            1.0,
        ),
        (
            "mailgate_http_requests_total",
            vec![("route", "unmatched"), ("method", "GET"), ("status", "404")],
            1.0,
        ),
    ] {
        assert_eq!(
            value(&samples, name, &labels),
            Some(expected),
            "{name} {labels:?} in:\n{text}"
        );
    }
    // The watcher ends with the account's grant.
    scrape_until(&f, "the watcher gone", |s| {
        value(s, "mailgate_watcher_sessions", &[("state", "connected")]) == Some(0.0)
    })
    .await;
    assert!(
        value(
            &samples,
            "mailgate_http_request_duration_seconds_count",
            &[
                ("route", "/api/v1/accounts/{id}/messages"),
                ("method", "POST")
            ]
        ) == Some(2.0),
        "{text}"
    );
    // The secret expires at the start of its date (UTC), 9 to 10 days from now.
    let left = value(
        &samples,
        "mailgate_app_secret_expiry_seconds",
        &[("app", "1")],
    )
    .unwrap_or_else(|| panic!("no secret expiry in:\n{text}"));
    assert!(
        (9.0 * 86400.0..=10.0 * 86400.0).contains(&left),
        "{left} in:\n{text}"
    );
    for (family, kind) in [
        ("mailgate_token_refreshes", "counter"),
        ("mailgate_token_refresh_duration_seconds", "histogram"),
        ("mailgate_sends", "counter"),
        ("mailgate_webhook_delivery_attempts", "counter"),
        ("mailgate_webhook_delivery_duration_seconds", "histogram"),
        ("mailgate_watcher_sessions", "gauge"),
        ("mailgate_http_requests", "counter"),
        ("mailgate_http_request_duration_seconds", "histogram"),
        ("mailgate_app_secret_expiry_seconds", "gauge"),
        ("mailgate_outbox_oldest_queued_seconds", "gauge"),
        ("mailgate_accounts", "gauge"),
        ("mailgate_password_hashes", "counter"),
    ] {
        assert_eq!(types[family], kind, "{family} in:\n{text}");
    }
    // Canaries: no token, secret, address or raw path in the output.
    for canary in [
        METRICS_TOKEN,
        token.as_str(),
        crate::oauth::CLIENT_SECRET,
        f.mailbox.as_str(),
        "reader@",
        "Contoso",
    ] {
        assert!(!text.contains(canary), "{canary} in:\n{text}");
    }

    // A message waiting since 1000 s ago (planted: its next attempt far ahead) is what the
    // outbox-age alert sees.
    f.sql(
        "UPDATE outbox SET status = 'queued', next_attempt_at = 4102444800, created_at = created_at - 1000 WHERE status = 'failed'",
    )
    .await;
    let text = scrape(&f, Some(METRICS_TOKEN)).await.text().await.unwrap();
    let (samples, _) = parse_with_prometheus_client(&text);
    let age = value(&samples, "mailgate_outbox_oldest_queued_seconds", &[]).unwrap();
    assert!((1000.0..1200.0).contains(&age), "{age} in:\n{text}");
}
