//! The audit trail (issue 19): every change made through the CLI, the admin UI and the API
//! records who made it — `cli:<os user>`, the signed-in user, `api-token:<name>` — and, over
//! HTTP, the client address; no event holds a secret; `mailgate events --actor/--since/--json`
//! filters them.

use crate::support::{Browser, CANARY_SECRET, Server, TestEnv, input_value, session_cookie};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "a long enough admin passphrase";
const USER_PASSWORD: &str = "olga's passphrase 123";
/// A second client secret, given through the API.
const API_CANARY_SECRET: &str = "Z9y~API.canary-secret.0a1b2c";

/// A server with its first administrator `admin`, signed in: (env, server, http, cookie).
async fn start() -> (TestEnv, Server, reqwest::Client, String) {
    let env = TestEnv::new();
    // The OS user the CLI's changes are recorded as.
    env.set_var("USER", "auditor");
    env.set_var("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true");
    let server = Server::start(&env);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = server.setup_link();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let resp = http
        .post(format!("{}/setup", server.base))
        .form(&[
            ("token", token.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("confirm", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let admin = session_cookie(&resp, "mg_session");
    (env, server, http, admin)
}

async fn api(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", server.base),
        )
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The newest event of `kind` (as `--json` spells it) whose message contains `about`.
fn event<'a>(events: &'a [Value], kind: &str, about: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind && e["message"].as_str().unwrap().contains(about))
        .unwrap_or_else(|| panic!("no {kind} event about {about:?} in {events:#?}"))
}

fn assert_by(e: &Value, actor: &str, source: Option<&str>) {
    assert_eq!(e["actor"], actor, "{e}");
    match source {
        Some(s) => assert_eq!(e["source"], s, "{e}"),
        None => assert!(
            e.get("source").is_none(),
            "a CLI change has no address: {e}"
        ),
    }
}

#[tokio::test]
async fn audit_each_change_through_cli_ui_and_api_records_its_actor_and_no_secret() {
    let (env, server, http, admin) = start().await;
    let browser = Browser {
        http: &http,
        base: &server.base,
    };

    // --- the CLI, as the OS user `auditor` ---
    env.add_microsoft_app("Contoso");
    env.ok(
        &[
            "account",
            "add",
            "--name",
            "support",
            "--app",
            "Contoso",
            "--email",
            "support@contoso.com",
        ],
        None,
    );
    env.ok(
        &["app", "update", "Contoso", "--client-secret-stdin"],
        Some(&format!("{CANARY_SECRET}-2\n")),
    );
    let erp_token = env
        .ok(
            &[
                "api-token",
                "create",
                "--name",
                "erp",
                "--scope",
                "accounts:read",
                "--scope",
                "accounts:write",
                "--scope",
                "webhooks:write",
            ],
            None,
        )
        .trim()
        .to_owned();
    env.ok(&["keys", "rotate"], None);

    // --- the admin UI, as `admin` ---
    let csrf = browser.csrf(&admin).await;
    let resp = browser
        .post(
            "/admin/users",
            &admin,
            &[
                ("csrf", csrf.as_str()),
                ("username", "olga"),
                ("role", "operator"),
                ("password", USER_PASSWORD),
                ("password_repeat", USER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "user added in the form"
    );
    let resp = browser
        .post(
            "/admin/api-tokens",
            &admin,
            &[
                ("csrf", csrf.as_str()),
                ("name", "reports"),
                ("scope", "accounts:read"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ui_token = input_value(&resp.text().await.unwrap(), "id", "api-token");

    // Proxy passwords: one from the CLI, a new one from the admin page.
    let cli_proxy_password = env
        .ok(&["account", "proxy-password", "support"], None)
        .trim()
        .to_owned();
    let support_id = env.json(&["account", "show", "support", "--json"])["id"].to_string();
    let resp = browser
        .post(
            &format!("/admin/accounts/{support_id}/proxy-password"),
            &admin,
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ui_proxy_password = input_value(&resp.text().await.unwrap(), "id", "proxy-password-value");

    // --- the API, as the token `erp` ---
    let (status, v) = api(
        &http,
        &server,
        &erp_token,
        "POST",
        "/api/v1/apps",
        Some(json!({
            "kind": "microsoft", "name": "Fabrikam", "tenant": "fabrikam.onmicrosoft.com",
            "client_id": "11111111-2222-4333-8444-555555555555",
            "client_secret": API_CANARY_SECRET,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let accounts = env.json(&["account", "list", "--json"]);
    let support_id = accounts[0]["id"].as_i64().unwrap();
    let (status, v) = api(
        &http,
        &server,
        &erp_token,
        "PATCH",
        &format!("/api/v1/accounts/{support_id}"),
        Some(json!({ "from_name": "Contoso Support" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = api(
        &http,
        &server,
        &erp_token,
        "POST",
        "/api/v1/webhooks",
        Some(json!({ "url": "http://127.0.0.1:9/hook", "events": ["account.reauth_required"] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let webhook_secret = v["secret"].as_str().unwrap().to_owned();

    // Revoked from the CLI last, so the API calls above still worked.
    env.ok(&["api-token", "revoke", "erp"], None);

    let all = env.json(&["events", "--json", "--limit", "1000"]);
    let events = all.as_array().unwrap();
    let cli = Some("cli:auditor");
    for (kind, about, actor, source) in [
        ("app_created", "Contoso", cli, None),
        ("account_created", "support", cli, None),
        ("app_updated", "Contoso", cli, None),
        ("api_token_created", "erp", cli, None),
        ("keys_rotated", "", cli, None),
        ("user_created", "olga", Some("admin"), Some("127.0.0.1")),
        (
            "api_token_created",
            "reports",
            Some("admin"),
            Some("127.0.0.1"),
        ),
        (
            "app_created",
            "Fabrikam",
            Some("api-token:erp"),
            Some("127.0.0.1"),
        ),
        (
            "account_updated",
            "support",
            Some("api-token:erp"),
            Some("127.0.0.1"),
        ),
        (
            "webhook_created",
            "",
            Some("api-token:erp"),
            Some("127.0.0.1"),
        ),
        ("api_token_revoked", "erp", cli, None),
    ] {
        assert_by(event(events, kind, about), actor.unwrap(), source);
    }
    // The newest proxy password is the admin's, the one before the CLI's.
    let proxy: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "proxy_password_set")
        .collect();
    assert_eq!(proxy.len(), 2, "{proxy:#?}");
    assert_by(proxy[0], "admin", Some("127.0.0.1"));
    assert_by(proxy[1], "cli:auditor", None);

    // No secret in any event: client secrets, the tokens, the webhook's signing secret,
    // passwords.
    let dump = all.to_string();
    for secret in [
        CANARY_SECRET,
        API_CANARY_SECRET,
        erp_token.as_str(),
        ui_token.as_str(),
        webhook_secret.as_str(),
        USER_PASSWORD,
        ADMIN_PASSWORD,
        cli_proxy_password.as_str(),
        ui_proxy_password.as_str(),
    ] {
        assert!(!dump.contains(secret), "a secret in the events: {dump}");
    }

    // Filters: one actor, a kind of actor, a time.
    let by_erp = env.json(&["events", "--json", "--actor", "api-token:erp"]);
    let by_erp = by_erp.as_array().unwrap();
    assert_eq!(by_erp.len(), 3, "{by_erp:#?}");
    assert!(by_erp.iter().all(|e| e["actor"] == "api-token:erp"));
    let by_cli = env.json(&["events", "--json", "--actor", "cli", "--limit", "1000"]);
    let by_cli = by_cli.as_array().unwrap();
    assert!(by_cli.len() >= 6, "{by_cli:#?}");
    assert!(
        by_cli.iter().all(|e| e["actor"] == "cli:auditor"),
        "{by_cli:#?}"
    );
    let future = env.json(&["events", "--json", "--since", "2999-01-01"]);
    assert_eq!(future, json!([]));
    let out = env.run(&["events", "--since", "yesterday"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::support::text(&out.stderr).contains("--since"),
        "{}",
        crate::support::text(&out.stderr)
    );
    // The API filters the same way.
    let (status, v) = api(
        &http,
        &server,
        &ui_token,
        "GET",
        "/api/v1/events?actor=api-token:erp&since=2000-01-01",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        &v["events"],
        &Value::Array(by_erp.clone()),
        "the CLI's list"
    );
    let (status, v) = api(
        &http,
        &server,
        &ui_token,
        "GET",
        "/api/v1/events?since=2999-01-01",
        None,
    )
    .await;
    assert_eq!((status, &v["events"]), (StatusCode::OK, &json!([])));
    let (status, v) = api(
        &http,
        &server,
        &ui_token,
        "GET",
        "/api/v1/events?since=soon",
        None,
    )
    .await;
    assert_eq!(
        (status, &v["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("since"))
    );

    // An account's own events say who, too.
    let (status, v) = api(
        &http,
        &server,
        &ui_token,
        "GET",
        &format!("/api/v1/accounts/{support_id}/events"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let updated = event(v.as_array().unwrap(), "account_updated", "support");
    assert_by(updated, "api-token:erp", Some("127.0.0.1"));

    // So does the admin UI's events page, with a small filter form.
    let (status, html) = browser
        .get(
            "/admin/events?actor=api-token%3Aerp&since=2000-01-01",
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("name=\"actor\" value=\"api-token:erp\""),
        "{html}"
    );
    assert_eq!(
        html.matches("<td>api-token:erp from 127.0.0.1</td>")
            .count(),
        3,
        "{html}"
    );
    assert!(!html.contains("cli:auditor"), "only that actor's: {html}");
    let (status, html) = browser.get("/admin/events?since=soon", &admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("Since: ") && html.contains("YYYY-MM-DD"),
        "{html}"
    );

    // The text listing says who, too.
    let text = env.ok(&["events", "--actor", "admin"], None);
    assert!(text.contains("(by admin from 127.0.0.1)"), "{text}");
}

/// An authorization is its initiator's change: the CLI's, or the API token's that started
/// it, though the callback comes from the signed-in person's browser.
#[tokio::test]
async fn audit_an_authorization_records_who_started_it() {
    let f = crate::oauth::Fixture::start().await;
    // Started by the CLI.
    f.authorize().await;
    let events = f.env.json(&["events", "--json", "--limit", "1000"]);
    let by_cli = event(events.as_array().unwrap(), "account_authorized", "");
    assert_eq!(by_cli["actor"], "cli", "{by_cli}");

    // Started by an API token, again.
    let out = f.env.ok(
        &[
            "api-token",
            "create",
            "--name",
            "portal",
            "--scope",
            "accounts:write",
        ],
        None,
    );
    let token = out.trim();
    let id = f.state("support")["id"].as_i64().unwrap();
    let (status, v) = api(
        &f.http,
        &f.server,
        token,
        "POST",
        &format!("/api/v1/accounts/{id}/authorize"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, page) = f
        .sign_in_and_callback(v["url"].as_str().unwrap(), &f.mailbox)
        .await;
    assert_eq!(status, 200, "{page}");
    let events = f
        .env
        .json(&["events", "--json", "--actor", "api-token:portal"]);
    let by_token = event(events.as_array().unwrap(), "account_authorized", "");
    assert_eq!(by_token["source"], "127.0.0.1", "{by_token}");
}
