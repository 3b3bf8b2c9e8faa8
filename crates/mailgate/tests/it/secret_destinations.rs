//! Where secrets and tokens are sent, and who may change it (issue 12, "a token with
//! `accounts:write` can steal the client secret and every refresh token"; "Roles").
//!
//! Moving an app's endpoints (a new authority, token URL, tenant…) through the API, the
//! admin form or `mailgate app update` is refused unless the client secret comes with it,
//! and then drops the app's grants, so neither the old secret nor a refresh token ever
//! reaches the new endpoint: a capture listener stands in for the attacker's server and
//! must receive nothing. Operators change no app and no account (form GET and POST).

use crate::fixtures::{CLIENT_SECRET, Fixture};
use crate::support::{Browser, text};
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NEW_SECRET: &str = "CANARY~the.new.client-secret.77c1";
const ADMIN_PASSWORD: &str = "admin passphrase 4711";
const OPERATOR_PASSWORD: &str = "operator passphrase 4712";

/// A loopback HTTP server that records every byte sent to it and answers each request
/// with an OAuth error, like a capture server that wants the secret and refresh tokens.
struct Capture {
    url: String,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    async fn start() -> Capture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    // Bounded: whatever arrives within a second of connecting is recorded.
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let body = r#"{"error":"invalid_grant"}"#;
                    let reply = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Capture { url, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// The rows of the listed tables from [`crate::support::TestEnv::dump_db`]: the app, its
/// accounts and grants, and the events, for "nothing changed" (sessions change on every
/// page and are left out).
async fn rows(f: &Fixture) -> String {
    let dump = f.env.dump_db().await;
    dump.split("== ")
        .filter(|section| {
            ["apps\n", "accounts\n", "grants\n", "events\n"]
                .iter()
                .any(|t| section.starts_with(t))
        })
        .map(|section| format!("== {section}"))
        .collect()
}

/// An authorized account on the emulator, and the capture server.
async fn authorized() -> (Fixture, Capture) {
    let f = Fixture::start().await;
    f.authorize().await;
    assert_eq!(f.state("support")["state"], "active");
    let dump = rows(&f).await;
    assert!(
        dump.contains("== grants\nSome(1)|"),
        "a grant is stored: {dump}"
    );
    (f, Capture::start().await)
}

/// After an accepted move: the grant is gone, the account wants authorizing again (with the
/// reason, as an event), and a token request sends nothing anywhere — above all not the
/// old secret or a refresh token to the capture server.
async fn assert_grant_dropped_and_nothing_sent(f: &Fixture, capture: &Capture) {
    let acc = f.state("support");
    assert_eq!(acc["state"], "unauthorized", "{acc}");
    assert_eq!(
        acc["last_problem"]["code"], "grant_dropped_endpoints_changed",
        "{acc}"
    );
    let dump = rows(f).await;
    assert!(
        !dump.contains("== grants\nSome(1)|"),
        "no grant row: {dump}"
    );
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains("grant_dropped_endpoints_changed") && events.contains("unauthorized"),
        "{events}"
    );
    f.expire_stored_token().await;
    let out = f.token();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
    let seen = capture.received();
    assert!(
        !seen.contains(CLIENT_SECRET) && !seen.contains("refresh_token"),
        "the old secret or a refresh token reached the new endpoint: {seen}"
    );
    assert!(
        seen.is_empty(),
        "nothing is sent to the new endpoint: {seen}"
    );
}

fn api_token(f: &Fixture) -> String {
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "writer",
            "--scope",
            "accounts:read",
            "--scope",
            "accounts:write",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

async fn patch_app(f: &Fixture, token: &str, body: serde_json::Value) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .patch(format!("{}/api/v1/apps/1", f.server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_apps_endpoints_through_the_api_needs_the_secret_and_drops_the_grants() {
    let (f, capture) = authorized().await;
    let token = api_token(&f);
    // A token limited to the account may change it, but not where its token goes (below).
    // Created before the snapshot: creating a token is itself a recorded change.
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "limited",
            "--scope",
            "accounts:write",
            "--account",
            "support",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let limited = text(&out.stdout).trim().to_owned();
    let before = rows(&f).await;
    let shown = f.env.json(&["app", "show", "Contoso", "--json"]);
    for body in [
        serde_json::json!({ "authority": capture.url }),
        serde_json::json!({ "token_url": format!("{}/token", capture.url) }),
        serde_json::json!({ "userinfo_url": format!("{}/userinfo", capture.url) }),
        serde_json::json!({ "tenant": "fabrikam.onmicrosoft.com" }),
    ] {
        let (status, problem) = patch_app(&f, &token, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        let problem: serde_json::Value = serde_json::from_str(&problem).unwrap();
        assert_eq!(problem["field"], "client_secret", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("give the client secret again"),
            "{problem}"
        );
    }
    let port: u16 = capture.url.rsplit(':').next().unwrap().parse().unwrap();
    for body in [
        serde_json::json!({ "inbound_host": "127.0.0.1", "inbound_port": port }),
        serde_json::json!({ "smtp_host": "127.0.0.1", "smtp_port": port }),
    ] {
        let resp = reqwest::Client::new()
            .patch(format!("{}/api/v1/accounts/1", f.server.base))
            .bearer_auth(&limited)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{body}");
        let problem = resp.text().await.unwrap();
        assert!(problem.contains("account_restricted"), "{problem}");
    }
    assert_eq!(rows(&f).await, before, "nothing changed");
    assert_eq!(f.env.json(&["app", "show", "Contoso", "--json"]), shown);
    assert_eq!(f.state("support")["state"], "active");

    // With the secret: accepted, and the grants go.
    let (status, app) = patch_app(
        &f,
        &token,
        serde_json::json!({ "authority": capture.url, "client_secret": NEW_SECRET }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{app}");
    assert!(!app.contains("CANARY"), "{app}");
    let app: serde_json::Value = serde_json::from_str(&app).unwrap();
    assert!(
        app["endpoints"]["token"]
            .as_str()
            .unwrap()
            .starts_with(&capture.url),
        "{app}"
    );
    assert_grant_dropped_and_nothing_sent(&f, &capture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_apps_endpoints_with_app_update_needs_the_secret_and_drops_the_grants() {
    let (f, capture) = authorized().await;
    // An authorization started before the move, finished after it.
    let started = f.authorize_url("support");
    let before = rows(&f).await;
    let shown = f.env.json(&["app", "show", "Contoso", "--json"]);
    let token_url = format!("{}/token", capture.url);
    for args in [
        vec!["app", "update", "Contoso", "--token-url", &token_url],
        vec!["app", "update", "Contoso", "--authority", &capture.url],
        vec![
            "app",
            "update",
            "Contoso",
            "--tenant",
            "fabrikam.onmicrosoft.com",
        ],
    ] {
        let out = f.env.run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?} is bad input");
        let err = text(&out.stderr);
        assert!(
            err.contains("--client-secret-stdin") && err.contains("give the client secret again"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(rows(&f).await, before, "nothing changed");
    assert_eq!(f.env.json(&["app", "show", "Contoso", "--json"]), shown);

    let out = f.env.run(
        &[
            "app",
            "update",
            "Contoso",
            "--token-url",
            &token_url,
            "--client-secret-stdin",
        ],
        Some(NEW_SECRET),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        f.env.json(&["app", "show", "Contoso", "--json"])["endpoints"]["token"],
        token_url
    );
    // Its code (and PKCE verifier) is not exchanged at the new token endpoint.
    let (status, page) = f.sign_in_and_callback(&started, &f.mailbox).await;
    assert_eq!(status, 400, "{page}");
    assert_grant_dropped_and_nothing_sent(&f, &capture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_account_to_another_app_drops_its_grant() {
    let (f, capture) = authorized().await;
    // Another app whose token endpoint is the capture server: the account's refresh token
    // must not follow it there.
    f.env.ok(
        &[
            "app",
            "add",
            "--kind",
            "microsoft",
            "--name",
            "Elsewhere",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--client-id",
            &f.client_id,
            "--authority",
            &capture.url,
        ],
        None,
    );
    f.env.ok(
        &["account", "update", "support", "--app", "Elsewhere"],
        None,
    );
    assert_grant_dropped_and_nothing_sent(&f, &capture).await;
}

/// Signs in a new user of `role` through the login form; the session cookie.
async fn user(f: &Fixture, name: &str, role: &str, password: &str) -> String {
    f.env.ok(
        &["user", "add", name, "--role", role, "--password-stdin"],
        Some(password),
    );
    browser(f).sign_in(name, password).await
}

fn browser(f: &Fixture) -> Browser<'_> {
    Browser {
        http: &f.http,
        base: &f.server.base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_apps_endpoints_in_the_admin_form_needs_the_secret_and_drops_the_grants() {
    let (f, capture) = authorized().await;
    let admin = user(&f, "admin", "admin", ADMIN_PASSWORD).await;
    let ui = browser(&f);
    let csrf = ui.csrf(&admin).await;
    let (status, _) = ui.get("/admin/apps/1", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let form = |authority: &str, secret: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("kind".into(), "microsoft".into()),
            ("name".into(), "Contoso".into()),
            (
                "tenant".into(),
                mailgate_testkit::idp::DEFAULT_TENANT_ID.into(),
            ),
            ("client_id".into(), f.client_id.clone()),
            ("client_secret".into(), secret.into()),
            ("flow".into(), "authorization_code".into()),
            ("authority".into(), authority.into()),
        ]
    };
    let before = rows(&f).await;
    let shown = f.env.json(&["app", "show", "Contoso", "--json"]);
    let resp = f
        .http
        .post(format!("{}/admin/apps/1", f.server.base))
        .header("cookie", &admin)
        .form(&form(&capture.url, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("data-field=\"client_secret\"")
            && page.contains("give the client secret again"),
        "the error is beside the secret field: {page}"
    );
    assert_eq!(rows(&f).await, before, "nothing changed");
    assert_eq!(f.env.json(&["app", "show", "Contoso", "--json"]), shown);

    let resp = f
        .http
        .post(format!("{}/admin/apps/1", f.server.base))
        .header("cookie", &admin)
        .form(&form(&capture.url, NEW_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "{}",
        resp.text().await.unwrap()
    );
    assert_grant_dropped_and_nothing_sent(&f, &capture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_change_no_app_and_no_account_in_the_admin_ui() {
    let (f, capture) = authorized().await;
    let admin = user(&f, "admin", "admin", ADMIN_PASSWORD).await;
    let operator = user(&f, "olga", "operator", OPERATOR_PASSWORD).await;
    let ui = browser(&f);
    let csrf = ui.csrf(&operator).await;
    let before = rows(&f).await;
    for path in [
        "/admin/apps/new",
        "/admin/apps/1",
        "/admin/accounts/new",
        "/admin/accounts/1/edit",
    ] {
        let (status, html) = ui.get(path, &operator).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {path}");
        assert!(html.contains("Administrators only"), "{path}: {html}");
        let (status, _) = ui.get(path, &admin).await;
        assert_eq!(status, StatusCode::OK, "an administrator opens {path}");
    }
    let capture_host = capture.url.trim_start_matches("http://");
    let (host, port) = capture_host.split_once(':').unwrap();
    let posts: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/admin/apps/new",
            vec![
                ("kind", "generic"),
                ("name", "Mine"),
                ("client_id", "mine"),
                ("token_url", &capture.url),
                ("authorize_url", &capture.url),
                ("scopes", "openid"),
            ],
        ),
        (
            "/admin/apps/1",
            vec![
                ("name", "Contoso"),
                ("client_id", &f.client_id),
                ("authority", &capture.url),
                ("client_secret", NEW_SECRET),
            ],
        ),
        (
            "/admin/accounts/new",
            vec![
                ("name", "mine"),
                ("app", "1"),
                ("email", "olga@example.test"),
                ("enabled", "on"),
            ],
        ),
        (
            "/admin/accounts/1/edit",
            vec![
                ("name", "support"),
                ("app", "1"),
                ("email", &f.mailbox),
                ("enabled", "on"),
                ("inbound", "imap"),
                ("inbound_host", host),
                ("inbound_port", port),
                ("outbound", "smtp"),
                ("smtp_host", host),
                ("smtp_port", port),
            ],
        ),
        ("/admin/apps/1/remove", vec![]),
    ];
    for (path, mut fields) in posts {
        fields.push(("csrf", &csrf));
        let resp = ui.post(path, &operator, &fields).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "POST {path}");
    }
    assert_eq!(rows(&f).await, before, "nothing changed");
    assert_eq!(f.state("support")["state"], "active");
    // Operators still see the lists, without the links to change them, and still
    // authorize and test.
    let (status, html) = ui.get("/admin/apps", &operator).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("/admin/apps/new") && !html.contains("href=\"/admin/apps/1\""));
    let (status, html) = ui.get("/admin/accounts/1", &operator).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains("/edit") && html.contains("id=\"authorize\""),
        "{html}"
    );
    assert!(capture.received().is_empty());
}
