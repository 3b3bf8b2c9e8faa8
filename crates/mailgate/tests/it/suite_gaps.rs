//! Behaviour that breaking on purpose once left every test green (issue 17, item 7): the
//! callback's alias rule, and a raw message's Idempotency-Key. (The store's binding of a
//! sealed value to its row and column is `mailgate-store`'s `sealed_binding` test.)

use crate::fixtures::{Fixture, PASSWORD};
use crate::support::text;
use mailgate_testkit::idp::UserSpec;
use reqwest::StatusCode;

/// An account's aliases may authorize it (the mailbox is one person's, reached under
/// several addresses); anyone else is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_accepts_an_alias_and_refuses_anyone_else() {
    let f = Fixture::start().await;
    let alias = format!("sales-{}@example.test", &f.client_id[..8]);
    let stranger = format!("stranger-{}@example.test", &f.client_id[..8]);
    for who in [&alias, &stranger] {
        f.idp.add_user(UserSpec::new(who, PASSWORD)).await.unwrap();
    }
    f.env
        .ok(&["account", "update", "support", "--alias", &alias], None);

    let url = f.authorize_url("support");
    let (status, page) = f.sign_in_and_callback(&url, &stranger).await;
    assert_eq!(status, 403, "not an alias: {page}");
    assert!(
        page.contains(&format!("You signed in as <strong>{stranger}</strong>")),
        "{page}"
    );
    assert_eq!(f.state("support")["state"], "unauthorized");
    assert!(!f.token().status.success(), "no grant was stored");

    let url = f.authorize_url("support");
    let (status, page) = f.sign_in_and_callback(&url, &alias).await;
    assert_eq!(status, 200, "the alias: {page}");
    assert_eq!(f.state("support")["state"], "active");
    let out = f.token();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains(&format!("authorized as {alias}")),
        "{events}"
    );
}

/// A ready `message/rfc822` sent twice with one Idempotency-Key is queued once and answered
/// with the first result both times; the key with another message is refused, as for JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_message_honours_its_idempotency_key() {
    let f = Fixture::start().await;
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "raw",
            "--scope",
            "messages:send",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let client = reqwest::Client::new();
    let send = |body: String| {
        client
            .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
            .bearer_auth(&token)
            .header("content-type", "message/rfc822")
            .header("idempotency-key", "raw-once-1")
            .body(body)
            .send()
    };
    // No Message-ID: mailgate adds one, so a second copy would differ in it.
    let raw = |subject: &str| {
        format!(
            "From: {}\r\nTo: someone@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n",
            f.mailbox
        )
    };
    let queued = |list: &serde_json::Value| list["messages"].as_array().unwrap().len();
    let list = || async {
        client
            .get(format!("{}/api/v1/messages", f.server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };

    let first = send(raw("raw once")).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send(raw("raw once")).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "{first} / {again}");
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(queued(&list().await), 1, "queued once");

    let other = send(raw("another message")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = other.json().await.unwrap();
    assert_eq!(problem["field"], "Idempotency-Key", "{problem}");
    assert_eq!(queued(&list().await), 1, "nothing more queued");
}
