//! A token the mail server refuses although mailgate believes it valid (issue 12): the
//! provider revoked the grant (or forgot the token) while mailgate's cached copy still looks
//! unexpired. mailgate forces one refresh, rate-limited per account, and then knows: a
//! refused refresh means `reauth_required` now; a new token is tried once more.

use crate::fixtures::Fixture;
use crate::mailtest::on_rig_with;
use crate::support::text;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

pub(crate) fn api_token(f: &Fixture) -> String {
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "refused-token",
            "--scope",
            "tokens:read",
            "--scope",
            "messages:send",
            "--scope",
            "messages:read",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

pub(crate) async fn get(f: &Fixture, token: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", f.server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn send(f: &Fixture, token: &str, subject: &str) -> i64 {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(token)
        .json(
            &serde_json::json!({"to": [f.mailbox], "subject": subject, "text": "a refused token"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// Polls the outbox until the message leaves `queued`/`sending`.
async fn settled(f: &Fixture, token: &str, id: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v: Value = get(f, token, &format!("/api/v1/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "sent" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "message {id} still {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The grant revoked at the provider while mailgate's cached token is unexpired: the first
/// send finds out, and the account is `reauth_required` with the provider's reason at once
/// (not at the next scheduled refresh, up to an hour later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_with_a_revoked_grant_makes_the_account_reauth_required_at_once() {
    let (f, _rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let api = api_token(&f);
    f.idp.revoke_user(&f.mailbox).await.unwrap();
    assert_eq!(
        f.state("support")["state"],
        "active",
        "mailgate cannot know yet"
    );
    let id = send(&f, &api, "after the revocation").await;
    let v = settled(&f, &api, id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "failed", "{v}");
    let error = v["last_error"].as_str().unwrap();
    assert!(error.contains("grant_revoked"), "{error}");
    let account = f.state("support");
    assert_eq!(account["state"], "reauth_required", "{account}");
    assert_eq!(account["last_problem"]["code"], "grant_revoked");
    assert_eq!(
        f.counter("token:refresh_token").await,
        1,
        "one forced refresh"
    );
}

/// The provider forgot the access token but the grant is fine: the send refreshes once and
/// goes out with the new token; so does a read of the inbox, which opens its IMAP session
/// the way the watchers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_with_a_valid_grant_is_refreshed_once_and_the_send_succeeds() {
    let (f, _rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let api = api_token(&f);
    f.idp.expire_tokens(&f.mailbox).await.unwrap();
    let id = send(&f, &api, "with a refreshed token").await;
    let v = settled(&f, &api, id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(v["attempts"], 1, "sent on the first attempt: {v}");
    assert_eq!(f.counter("token:refresh_token").await, 1);
    assert_eq!(f.state("support")["state"], "active");

    // Again for IMAP, after the rate limit's minute is simulated as over (the lease row
    // expires): the inbox list works with one more refresh.
    f.sql("UPDATE leases SET expires_at = 0 WHERE name LIKE 'forced-refresh:%'")
        .await;
    f.idp.expire_tokens(&f.mailbox).await.unwrap();
    let resp = get(&f, &api, "/api/v1/accounts/1/messages").await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(f.counter("token:refresh_token").await, 2);
}

/// `?force_refresh=true` returns a new token although the stored one is valid, and only
/// once a minute per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_returns_a_new_token_and_is_rate_limited() {
    let f = Fixture::start().await;
    f.authorize().await;
    let api = api_token(&f);
    let token_of = |v: &Value| v["access_token"].as_str().unwrap().to_owned();
    let resp = get(&f, &api, "/api/v1/accounts/1/token").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cached = token_of(&resp.json().await.unwrap());
    assert_eq!(f.counter("token:refresh_token").await, 0);

    let resp = get(&f, &api, "/api/v1/accounts/1/token?force_refresh=true").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let forced = token_of(&resp.json().await.unwrap());
    assert_ne!(forced, cached, "a new token");
    assert_eq!(f.counter("token:refresh_token").await, 1);
    let resp = get(&f, &api, "/api/v1/accounts/1/token").await;
    assert_eq!(token_of(&resp.json().await.unwrap()), forced, "and stored");

    let resp = get(&f, &api, "/api/v1/accounts/1/token?force_refresh=true").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "60");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:mailgate:problem:force_refresh_limited",
        "{problem}"
    );
    assert_eq!(f.counter("token:refresh_token").await, 1, "nothing sent");

    let resp = get(&f, &api, "/api/v1/accounts/1/token?force_refresh=maybe").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["field"], "force_refresh", "{problem}");
}

/// A watcher that opens its IMAP session with a token of a grant the provider revoked
/// finds out at once: the account is `reauth_required`, not `active` with a failing
/// watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_with_a_revoked_grant_makes_the_account_reauth_required() {
    let (f, _rig) = on_rig_with(&[]).await;
    f.authorize().await;
    f.idp.revoke_user(&f.mailbox).await.unwrap();
    // An on-received action makes `serve` start a watcher for the account.
    f.env.ok(
        &["account", "update", "support", "--on-received", "mark_seen"],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    let account = loop {
        let account = f.state("support");
        if account["state"] != "active" {
            break account;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never found out: {account}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(account["state"], "reauth_required", "{account}");
    assert_eq!(account["last_problem"]["code"], "grant_revoked");
    assert_eq!(f.counter("token:refresh_token").await, 1);
}
