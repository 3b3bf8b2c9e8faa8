//! The token hot path keeps the API token and the account's access token in memory
//! (issue 15). These tests warm those caches first, then change the database from another
//! process or through another path, and check the very next request sees the change.

use crate::fixtures::Fixture;
use crate::support::{Browser, text};
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN_PASSWORD: &str = "token cache admin passphrase";

fn create_api_token(f: &Fixture, name: &str) -> String {
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            name,
            "--scope",
            "tokens:read",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

async fn token_request(f: &Fixture, api_token: &str) -> (StatusCode, Value) {
    let resp = f
        .http
        .get(format!("{}/api/v1/accounts/1/token", f.server.base))
        .bearer_auth(api_token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// Several answers in a row, so the later ones come from memory; all the same token.
async fn warm(f: &Fixture, api_token: &str) -> String {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (status, body) = token_request(f, api_token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.push(body["access_token"].as_str().unwrap().to_owned());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    seen.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_token_is_refused_on_the_very_next_request_by_cli_or_admin_page() {
    let f = Fixture::start().await;
    f.authorize().await;
    let by_cli = create_api_token(&f, "revoked-by-cli");
    let by_page = create_api_token(&f, "revoked-by-page");
    let kept = create_api_token(&f, "kept");
    warm(&f, &by_cli).await;
    warm(&f, &by_page).await;
    warm(&f, &kept).await;

    // Another process revokes it.
    f.env.ok(&["api-token", "revoke", "revoked-by-cli"], None);
    let (status, body) = token_request(&f, &by_cli).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The server itself revokes it, from the admin page.
    f.env.ok(
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(ADMIN_PASSWORD),
    );
    let ui = Browser {
        http: &f.http,
        base: &f.server.base,
    };
    let admin = ui.sign_in("admin", ADMIN_PASSWORD).await;
    let csrf = ui.csrf(&admin).await;
    let list = f.env.json(&["api-token", "list", "--json"]);
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "revoked-by-page")
        .unwrap()["id"]
        .to_string();
    warm(&f, &by_page).await;
    let resp = ui
        .post(
            &format!("/admin/api-tokens/{id}/revoke"),
            &admin,
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, body) = token_request(&f, &by_page).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The others still work.
    let (status, body) = token_request(&f, &kept).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_access_token_gives_way_to_a_refresh_or_a_state_change_by_another_process() {
    let f = Fixture::start().await;
    f.authorize().await;
    let api = create_api_token(&f, "reader");
    let first = warm(&f, &api).await;
    assert_eq!(f.counter("token:refresh_token").await, 0);

    // The CLI refreshes (the stored token has expired; the copy the server keeps in memory
    // would still look valid for an hour).
    let past = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() - 1;
    f.sql(&format!(
        "UPDATE grants SET access_expires_at = {past} WHERE account_id = 1"
    ))
    .await;
    let out = f.token();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refreshed = text(&out.stdout).trim().to_owned();
    assert_ne!(refreshed, first, "the CLI refreshed");
    assert_eq!(f.counter("token:refresh_token").await, 1);
    let (status, body) = token_request(&f, &api).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], refreshed.as_str(), "the CLI's token");
    assert_eq!(warm(&f, &api).await, refreshed);
    assert_eq!(f.counter("token:refresh_token").await, 1, "no refresh here");

    // Another process switches the account off: no token from then on.
    f.env
        .ok(&["account", "update", "support", "--disable"], None);
    let (status, body) = token_request(&f, &api).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{body}"
    );
}
