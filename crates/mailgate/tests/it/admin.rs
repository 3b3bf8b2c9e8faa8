//! The admin UI over HTTP: first-run setup, sessions, CSRF, lock-out, roles, and no secret
//! in any page.

use crate::fixtures::AdminUi;
use crate::support::CANARY_SECRET;
use reqwest::StatusCode;

const ADMIN_PASSWORD: &str = "a long enough admin passphrase";

/// The shared admin-UI fixture; this module's tests run the setup link themselves.
struct Ui(AdminUi);

impl std::ops::Deref for Ui {
    type Target = AdminUi;
    fn deref(&self) -> &AdminUi {
        &self.0
    }
}

/// The value of cookie `name` in a response's Set-Cookie headers, with its attributes.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

impl Ui {
    async fn start() -> Ui {
        Self::start_with(&[]).await
    }

    async fn start_with(vars: &[(&str, &str)]) -> Ui {
        Ui(AdminUi::start_with(vars))
    }

    /// Runs the setup link; returns the session cookie (`mg_session=…`).
    async fn setup_admin(&self) -> String {
        self.setup_admin_with(ADMIN_PASSWORD).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_creates_the_first_admin_once() {
    let ui = Ui::start().await;
    let (status, _) = ui.get("/admin", "").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "signed out: redirected to the login page"
    );
    let link = ui.server.setup_link();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/setup?token=", ui.server.base)),
        "{link}"
    );
    let form = ui.http.get(&link).send().await.unwrap();
    assert_eq!(form.status(), 200);
    // Bad input comes back with the values kept and the field named; nothing is created.
    let resp = ui
        .http
        .post(ui.url("/setup"))
        .form(&[
            ("token", token.as_str()),
            ("username", "admin"),
            ("password", "short"),
            ("confirm", "short"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Password: the password must be at least 12 characters")
            && html.contains("value=\"admin\""),
        "{html}"
    );
    let resp = ui
        .http
        .post(ui.url("/setup"))
        .form(&[
            ("token", token.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("confirm", "different passphrase!"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Password again: the two passwords differ")
    );

    let resp = ui
        .http
        .post(ui.url("/setup"))
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
    let cookie = set_cookie(&resp, "mg_session").unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http public URL: no Secure flag ({cookie})"
    );
    let (status, html) = ui.get("/admin", &cookie_value(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Dashboard") && html.contains("admin (admin)"),
        "{html}"
    );
    // The link is one-time.
    assert_eq!(
        ui.http.get(&link).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let again = ui
        .http
        .post(ui.url("/setup"))
        .form(&[
            ("token", token.as_str()),
            ("username", "second"),
            ("password", ADMIN_PASSWORD),
            ("confirm", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(
        !std::fs::read_to_string(ui.env.dir.path().join("serve.log"))
            .unwrap()
            .contains(&token),
        "the setup token is not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_an_https_public_url() {
    let ui = Ui::start_with(&[("MAILGATE_PUBLIC_URL", "https://mail.example.test")]).await;
    let link = ui.server.setup_link();
    assert!(
        link.starts_with("https://mail.example.test/setup?token="),
        "{link}"
    );
    let token = link.split("token=").nth(1).unwrap();
    let resp = ui
        .http
        .post(ui.url("/setup"))
        .form(&[
            ("token", token),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("confirm", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&resp, "mg_session").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_csrf_token_are_refused() {
    let ui = Ui::start().await;
    let session = ui.setup_admin().await;
    ui.env.add_microsoft_app("Contoso");
    for form in [vec![], vec![("csrf", "forged-token")]] {
        let resp = ui
            .http
            .post(ui.url("/admin/apps/1/remove"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.text().await.unwrap().contains("CSRF"));
        let resp = ui
            .http
            .post(ui.url("/logout"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(
        ui.env
            .json(&["app", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was removed"
    );
    assert_eq!(ui.get("/admin", &session).await.0, 200, "still signed in");
    // A login form without its token is refused too.
    let resp = ui
        .http
        .post(ui.url("/login"))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // With the token: logout works and the session is gone.
    let csrf = ui.csrf(&session).await;
    let resp = ui
        .http
        .post(ui.url("/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ui.get("/admin", &session).await.0,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_lock_the_account() {
    let ui = Ui::start().await;
    ui.setup_admin().await;
    let ok = ui.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    for attempt in 1..=5 {
        let resp = ui.login("admin", "wrong password, attempt").await;
        let expected = if attempt < 5 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(resp.status(), expected, "attempt {attempt}");
    }
    // Locked: even the right password is refused now.
    let resp = ui.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_change_apps() {
    let ui = Ui::start().await;
    let admin = ui.setup_admin().await;
    ui.env.add_microsoft_app("Contoso");
    ui.env.ok(
        &[
            "user",
            "add",
            "olga",
            "--role",
            "operator",
            "--password-stdin",
        ],
        Some("operator passphrase 123"),
    );
    let resp = ui.login("olga", "operator passphrase 123").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let operator = cookie_value(&set_cookie(&resp, "mg_session").unwrap());
    let (status, html) = ui.get("/admin/apps", &operator).await;
    assert_eq!(status, 200);
    assert!(!html.contains("/remove"), "no remove button for operators");
    let csrf = ui.csrf(&operator).await;
    let resp = ui
        .http
        .post(ui.url("/admin/apps/1/remove"))
        .header("cookie", &operator)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        ui.env
            .json(&["app", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The administrator can.
    let csrf = ui.csrf(&admin).await;
    let resp = ui
        .http
        .post(ui.url("/admin/apps/1/remove"))
        .header("cookie", &admin)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ui.env
            .json(&["app", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_page() {
    let ui = Ui::start().await;
    let session = ui.setup_admin().await;
    ui.env.add_microsoft_app("Contoso");
    ui.env.ok(
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
    for path in [
        "/admin",
        "/admin/apps",
        "/admin/accounts",
        "/admin/events",
        "/login",
    ] {
        let (status, html) = ui.get(path, &session).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains("CANARY") && !html.contains(CANARY_SECRET),
            "a secret in {path}"
        );
    }
    let (_, apps) = ui.get("/admin/apps", &session).await;
    assert!(
        apps.contains("set (…3e1d)") && apps.contains("/oauth/callback"),
        "hint and redirect URI shown: {apps}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_form_input_comes_back_beside_its_field_and_saves_nothing() {
    let ui = Ui::start().await;
    let session = ui.setup_admin().await;
    let csrf = ui.csrf(&session).await;
    let before = ui.env.dump_db().await;
    let resp = ui
        .http
        .post(ui.url("/admin/apps/new"))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "microsoft"),
            ("name", "Contoso"),
            ("tenant", "not a tenant"),
            ("client_id", "not-a-guid"),
            ("client_secret", "CANARY-form-secret-1234"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("data-field=\"tenant\""),
        "error beside the tenant field: {html}"
    );
    assert!(
        html.contains("value=\"Contoso\"") && html.contains("value=\"not-a-guid\""),
        "values kept"
    );
    assert!(!html.contains("CANARY"), "the secret is not echoed back");
    assert_eq!(ui.env.dump_db().await, before, "nothing saved");
    // Valid fields but a rule between them: a Microsoft client id is a GUID.
    let resp = ui
        .http
        .post(ui.url("/admin/apps/new"))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "microsoft"),
            ("name", "Contoso"),
            ("tenant", "common"),
            ("client_id", "not-a-guid"),
        ])
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("data-field=\"client_id\"") && html.contains("Application (client) ID"),
        "{html}"
    );
    assert_eq!(ui.env.dump_db().await, before);
    // The account form: a port out of range.
    ui.env.add_microsoft_app("Contoso");
    let before = ui.env.dump_db().await;
    let resp = ui
        .http
        .post(ui.url("/admin/accounts/new"))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "support"),
            ("app", "1"),
            ("email", "support@contoso.com"),
            ("inbound", "imap"),
            ("inbound_port", "70000"),
            ("outbound", "smtp"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("data-field=\"inbound_port\"") && html.contains("1 to 65535"),
        "{html}"
    );
    assert!(html.contains("value=\"support@contoso.com\""));
    assert_eq!(ui.env.dump_db().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_warns_about_a_public_url_that_cannot_work() {
    let ui = Ui::start_with(&[("MAILGATE_PUBLIC_URL", "http://mail.example.test:8080")]).await;
    let session = ui.setup_admin().await;
    let (_, html) = ui.get("/admin", &session).await;
    assert!(
        html.contains("id=\"public-url-warning\""),
        "http on a non-local host: {html}"
    );
    assert!(
        html.contains("id=\"public-url-mismatch\"")
            && html.contains("You reached mailgate at 127.0.0.1:"),
        "{html}"
    );
    let ok = Ui::start().await;
    let session = ok.setup_admin().await;
    let (_, html) = ok.get("/admin", &session).await;
    assert!(
        !html.contains("public-url-warning") && !html.contains("public-url-mismatch"),
        "a local http URL reached as itself is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_accounts_whose_last_test_failed() {
    let ui = Ui::start().await;
    let session = ui.setup_admin().await;
    ui.env.add_microsoft_app("Contoso");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    ui.env.ok(
        &[
            "account",
            "add",
            "--name",
            "support",
            "--app",
            "Contoso",
            "--email",
            "support@contoso.com",
            "--inbound-host",
            "127.0.0.1",
            "--inbound-port",
            &closed,
            "--outbound",
            "none",
        ],
        None,
    );
    let (_, html) = ui.get("/admin", &session).await;
    assert!(!html.contains("last test failed"));
    let out = ui
        .env
        .run(&["test", "support", "--step-timeout", "2"], None);
    assert_eq!(out.status.code(), Some(1));
    let (_, html) = ui.get("/admin", &session).await;
    assert!(
        html.contains("last test failed") && html.contains("connection_refused"),
        "{html}"
    );
}
