//! `/api/v1` writes through the real server: apps and accounts created, read, changed and
//! removed; bad input refused with a problem naming the field and nothing stored; the
//! account restriction of tokens; "Test configuration" started and polled on the mail rig.

use crate::fixtures::{Fixture, create_token};
use crate::support::{CANARY_SECRET, TestEnv, db_contains};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const GUID: &str = "11111111-2222-4333-8444-555555555555";

/// One answer: status, Location, Content-Type and the body (JSON when there is one).
struct Answer {
    status: StatusCode,
    location: Option<String>,
    content_type: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// Asserts a problem document with this status, `type` code and (if given) `field`.
    fn assert_problem(&self, status: StatusCode, code: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let v = self.json();
        assert_eq!(v["type"], format!("urn:mailgate:problem:{code}"), "{v}");
        assert_eq!(v["status"], status.as_u16(), "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        if let Some(field) = field {
            assert_eq!(v["field"], field, "{v}");
        }
    }
}

/// A client for one token that remembers every answer, to look for the canary in all.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
    seen: std::sync::Mutex<String>,
}

impl Api {
    fn new(f: &Fixture, token: String) -> Api {
        Api {
            base: f.server.base.clone(),
            token,
            http: reqwest::Client::new(),
            seen: Default::default(),
        }
    }

    /// A request with a raw body and content type (`None`: no header).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, content_type) = (header("location"), header("content-type"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.push_str(&text);
        seen.push_str(location.as_deref().unwrap_or_default());
        Answer {
            status,
            location,
            content_type,
            text,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        match body {
            Some(b) => {
                self.raw(method, path, Some("application/json"), &b.to_string())
                    .await
            }
            None => self.raw(method, path, None, "").await,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    fn assert_never_saw_the_canary(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(
            !seen.contains(CANARY_SECRET) && !seen.contains("CANARY"),
            "a secret appeared in a response"
        );
    }
}

/// Every row of every table except the tokens' `last_used_at`, which each request updates.
async fn dump(env: &TestEnv) -> String {
    let all = env.dump_db().await;
    let mut out = String::new();
    let mut in_tokens = false;
    for line in all.lines() {
        if let Some(table) = line.strip_prefix("== ") {
            in_tokens = table == "api_tokens";
        }
        if !in_tokens {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Polls a test run until it is no longer `running` (failing after `within`); its last JSON.
async fn finished_run(api: &Api, location: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = api.get(location).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let v = a.json();
        if v["status"] != "running" {
            return v;
        }
        assert_eq!(v["ok"], Value::Null, "{v}");
        assert!(v["steps"].is_array(), "{v}");
        assert!(
            Instant::now() < deadline,
            "the test run did not finish within {within:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn new_app_body(name: &str) -> Value {
    json!({
        "kind": "microsoft",
        "name": name,
        "tenant": "fabrikam.onmicrosoft.com",
        "client_id": GUID,
        "client_secret": CANARY_SECRET,
        "secret_expires": "2027-06-30",
        "extra_params": { "domain_hint": "fabrikam.com" },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_crud_round_trip_for_an_app_and_an_account() {
    let f = Fixture::start().await;
    let api = Api::new(
        &f,
        create_token(&f, "admin", &["accounts:read", "accounts:write"], &[]),
    );

    // App: create → read → change → (later) remove.
    let created = api
        .send(Method::POST, "/api/v1/apps", Some(new_app_body("Fabrikam")))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let app = created.json();
    let app_id = app["id"].as_i64().unwrap();
    assert_eq!(
        created.location.as_deref(),
        Some(format!("/api/v1/apps/{app_id}").as_str())
    );
    assert_eq!(app["name"], "Fabrikam");
    assert_eq!(app["kind"], "microsoft");
    assert_eq!(app["tenant"], "fabrikam.onmicrosoft.com");
    assert_eq!(app["client_secret"], "set (…3e1d)", "only the hint: {app}");
    assert_eq!(app["service_account_key"], Value::Null);
    assert_eq!(app["secret_expires"], "2027-06-30");
    assert_eq!(app["extra_params"]["domain_hint"], "fabrikam.com");
    assert!(
        app["endpoints"]["token"]
            .as_str()
            .unwrap()
            .contains("fabrikam.onmicrosoft.com"),
        "the preset was applied: {app}"
    );
    assert!(
        !db_contains(&f.env.db_path(), CANARY_SECRET),
        "the client secret is stored encrypted"
    );
    let read = api.get(&format!("/api/v1/apps/{app_id}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json(), app);
    // The CLI sees the same app.
    let cli = f.env.json(&["app", "show", "Fabrikam", "--json"]);
    assert_eq!(cli["client_id"], GUID);
    assert_eq!(cli["client_secret"], "set (…3e1d)");

    let changed = api
        .send(
            Method::PATCH,
            &format!("/api/v1/apps/{app_id}"),
            Some(json!({ "name": "Fabrikam EU", "secret_expires": "2027-12-31", "scopes": ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"] })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let changed = changed.json();
    assert_eq!(changed["name"], "Fabrikam EU");
    assert_eq!(changed["secret_expires"], "2027-12-31");
    assert_eq!(
        changed["client_secret"], "set (…3e1d)",
        "a secret not given is kept"
    );
    assert_eq!(changed["scopes"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.get("/api/v1/apps")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "Contoso and Fabrikam EU"
    );

    // Account: create (on the app by name) → read → change → remove.
    let created = api
        .send(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({
                "name": "sales",
                "app": "Fabrikam EU",
                "email": "sales@example.test",
                "inbound": "pop3",
                "from_name": "Sales Team",
                "aliases": ["vertrieb@example.test"],
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let account = created.json();
    let account_id = account["id"].as_i64().unwrap();
    assert_eq!(
        created.location.as_deref(),
        Some(format!("/api/v1/accounts/{account_id}").as_str())
    );
    assert_eq!(account["app_id"], app_id);
    assert_eq!(account["state"], "unauthorized");
    let read = api.get(&format!("/api/v1/accounts/{account_id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    let read = read.json();
    assert_eq!(read["mailbox"], "sales@example.test");
    assert_eq!(read["inbound"]["protocol"], "pop3");
    assert_eq!(read["inbound"]["port"], 995, "POP3 preset: {read}");
    assert_eq!(read["from_name"], "Sales Team");

    let changed = api
        .send(
            Method::PATCH,
            &format!("/api/v1/accounts/{account_id}"),
            Some(json!({ "inbound_port": 1995, "enabled": false, "signature": "--\nSales" })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let changed = changed.json();
    assert_eq!(changed["inbound"]["port"], 1995);
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["state"], "disabled");
    assert_eq!(
        changed["from_name"], "Sales Team",
        "fields not given are kept"
    );
    let cli = f.env.json(&["account", "show", "sales", "--json"]);
    assert_eq!(cli["inbound"]["port"], 1995);
    assert_eq!(cli["app"]["name"], "Fabrikam EU");

    // An app still in use is not removed.
    let before = dump(&f.env).await;
    api.send(Method::DELETE, &format!("/api/v1/apps/{app_id}"), None)
        .await
        .assert_problem(StatusCode::CONFLICT, "app_in_use", None);
    assert_eq!(dump(&f.env).await, before, "nothing changed");

    let removed = api
        .send(
            Method::DELETE,
            &format!("/api/v1/accounts/{account_id}"),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    api.get(&format!("/api/v1/accounts/{account_id}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    let removed = api
        .send(Method::DELETE, &format!("/api/v1/apps/{app_id}"), None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    api.get(&format!("/api/v1/apps/{app_id}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.send(Method::DELETE, &format!("/api/v1/apps/{app_id}"), None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    let events = f.env.ok(&["events", "--limit", "50"], None);
    for wanted in [
        "app Fabrikam (microsoft) created",
        "app Fabrikam EU updated",
        "account sales (sales@example.test) created",
        "account sales removed",
        "app Fabrikam EU removed",
    ] {
        assert!(events.contains(wanted), "{wanted}: {events}");
    }

    api.assert_never_saw_the_canary();
    assert!(!db_contains(&f.env.db_path(), CANARY_SECRET));
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("CANARY"), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_crud_bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let f = Fixture::start().await;
    let api = Api::new(
        &f,
        create_token(&f, "admin", &["accounts:read", "accounts:write"], &[]),
    );
    let before = dump(&f.env).await;
    let with = |extra: Value| {
        let mut b = new_app_body("Fabrikam");
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let app_body = new_app_body("Fabrikam").to_string();

    // The body's form: 415 for another content type, 400 for what is not a JSON object.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        api.raw(Method::POST, "/api/v1/apps", ct, &app_body)
            .await
            .assert_problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            );
    }
    api.raw(
        Method::PATCH,
        "/api/v1/accounts/1",
        Some("text/plain"),
        "{}",
    )
    .await
    .assert_problem(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let cut_short = format!("{{\"client_secret\": \"{CANARY_SECRET}\", \"kind\": ");
    for body in [cut_short.as_str(), "[1, 2]", "\"microsoft\"", ""] {
        api.raw(Method::POST, "/api/v1/apps", Some("application/json"), body)
            .await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_json", None);
    }

    // Apps: each field at fault is named; secrets are never echoed.
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(json!({ "colour": "blue" })), "unknown_field", "colour"),
        (
            with(json!({ "client_id": null })),
            "invalid_field",
            "client_id",
        ),
        (
            with(json!({ "client_id": "not-a-guid" })),
            "invalid_field",
            "client_id",
        ),
        (with(json!({ "kind": "yahoo" })), "invalid_field", "kind"),
        (with(json!({ "tenant": null })), "invalid_field", "tenant"),
        (with(json!({ "name": "" })), "invalid_field", "name"),
        (
            with(json!({ "client_secret": GUID })),
            "invalid_field",
            "client_secret",
        ),
        (
            with(json!({ "client_secret": 42 })),
            "invalid_field",
            "client_secret",
        ),
        (
            with(json!({ "secret_expires": "next year" })),
            "invalid_field",
            "secret_expires",
        ),
        (with(json!({ "flow": "implicit" })), "invalid_field", "flow"),
        (
            with(json!({ "token_url": "ftp://x" })),
            "invalid_field",
            "token_url",
        ),
        (
            with(json!({ "extra_params": ["domain_hint=x"] })),
            "invalid_field",
            "extra_params",
        ),
        (
            with(json!({ "service_account_key": { "type": "user" } })),
            "invalid_field",
            "service_account_key",
        ),
    ];
    for (body, code, field) in &cases {
        let a = api
            .send(Method::POST, "/api/v1/apps", Some(body.clone()))
            .await;
        a.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, code, Some(field));
        assert!(
            !a.text.contains(GUID) || *field != "client_secret",
            "{}",
            a.text
        );
    }
    api.send(
        Method::POST,
        "/api/v1/apps",
        Some(with(json!({ "name": "Contoso" }))),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "duplicate_name", Some("name"));
    api.send(
        Method::PATCH,
        "/api/v1/apps/1",
        Some(json!({ "kind": "google" })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("kind"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/apps/1",
        Some(json!({ "client_secret": CANARY_SECRET, "clear_secret": true })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("clear_secret"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/apps/1",
        Some(json!({ "tenant": "not a tenant!" })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("tenant"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/apps/99",
        Some(json!({ "name": "x" })),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.get("/api/v1/apps/99")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.send(Method::DELETE, "/api/v1/apps/99", None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.send(Method::DELETE, "/api/v1/apps/1", None)
        .await
        .assert_problem(StatusCode::CONFLICT, "app_in_use", None);

    // Accounts.
    let account = |extra: Value| {
        let mut b = json!({ "name": "sales", "app": 1, "email": "sales@example.test" });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (account(json!({ "app": "Nope" })), "invalid_field", "app"),
        (account(json!({ "app": 99 })), "invalid_field", "app"),
        (account(json!({ "app": null })), "invalid_field", "app"),
        (
            account(json!({ "email": "not an address" })),
            "invalid_field",
            "email",
        ),
        (
            account(json!({ "inbound_port": 70000 })),
            "invalid_field",
            "inbound_port",
        ),
        (
            account(json!({ "inbound": "nntp" })),
            "invalid_field",
            "inbound",
        ),
        (
            account(json!({ "inbound": "none", "inbound_host": "imap.example.test" })),
            "invalid_field",
            "inbound_host",
        ),
        (
            account(json!({ "inbound": "pop3", "on_received": "mark_seen" })),
            "invalid_field",
            "on_received",
        ),
        (
            account(json!({ "enabled": "yes" })),
            "invalid_field",
            "enabled",
        ),
        (
            account(json!({ "aliases": "a@example.test" })),
            "invalid_field",
            "aliases",
        ),
        (
            account(json!({ "password": "hunter2" })),
            "unknown_field",
            "password",
        ),
    ];
    for (body, code, field) in &cases {
        api.send(Method::POST, "/api/v1/accounts", Some(body.clone()))
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, code, Some(field));
    }
    api.send(
        Method::POST,
        "/api/v1/accounts",
        Some(account(json!({ "name": "support" }))),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "duplicate_name", Some("name"));
    api.send(
        Method::PATCH,
        "/api/v1/accounts/1",
        Some(json!({ "smtp_tls": "ssl3" })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("smtp_tls"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/accounts/1",
        Some(json!({ "app": "Nope" })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("app"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/accounts/1",
        Some(json!({ "mailbox": "x@example.test" })),
    )
    .await
    .assert_problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_field",
        Some("mailbox"),
    );
    api.send(
        Method::PATCH,
        "/api/v1/accounts/99",
        Some(json!({ "name": "x" })),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.send(Method::DELETE, "/api/v1/accounts/99", None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);

    // Test runs.
    for (body, field) in [
        (json!({ "to": "nobody" }), "to"),
        (json!({ "step_timeout": 0 }), "step_timeout"),
        (json!({ "find_within": 601 }), "find_within"),
        (json!({ "cc": "x@example.test" }), "cc"),
    ] {
        let a = api
            .send(Method::POST, "/api/v1/accounts/1/tests", Some(body))
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
        assert_eq!(a.json()["field"], field);
    }
    api.raw(
        Method::POST,
        "/api/v1/accounts/1/tests",
        Some("text/plain"),
        "to=x",
    )
    .await
    .assert_problem(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    api.send(Method::POST, "/api/v1/accounts/99/tests", None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found", None);
    api.get("/api/v1/tests/no-such-run").await.assert_problem(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    assert_eq!(dump(&f.env).await, before, "bad input changed nothing");
    api.assert_never_saw_the_canary();
    assert!(!db_contains(&f.env.db_path(), CANARY_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_crud_a_restricted_token_writes_no_app_and_only_its_own_accounts() {
    let f = Fixture::start().await;
    f.add_app("Other", "authorization_code");
    f.add_app("Spare", "authorization_code");
    // billing is disabled, so that a test run on it ends at once without touching anything.
    for (name, app, extra) in [
        ("billing", "Contoso", Some("--disabled")),
        ("elsewhere", "Other", None),
    ] {
        let email = format!("{name}@example.test");
        let mut args = vec![
            "account", "add", "--name", name, "--app", app, "--email", &email,
        ];
        args.extend(extra);
        f.env.ok(&args, None);
    }
    let ids = |kind: &str| -> Vec<(String, i64)> {
        f.env
            .json(&[kind, "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_owned(),
                    v["id"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let id_of =
        |list: &[(String, i64)], name: &str| list.iter().find(|(n, _)| n == name).unwrap().1;
    let (apps, accounts) = (ids("app"), ids("account"));
    let (contoso, other, spare) = (
        id_of(&apps, "Contoso"),
        id_of(&apps, "Other"),
        id_of(&apps, "Spare"),
    );
    let (support, billing) = (id_of(&accounts, "support"), id_of(&accounts, "billing"));
    let limited = Api::new(
        &f,
        create_token(
            &f,
            "limited",
            &["accounts:read", "accounts:write"],
            &["support"],
        ),
    );
    let admin = Api::new(
        &f,
        create_token(&f, "admin", &["accounts:read", "accounts:write"], &[]),
    );
    // A run on another account, to check that its result is not readable either.
    let started = admin
        .send(
            Method::POST,
            &format!("/api/v1/accounts/{billing}/tests"),
            Some(json!({ "step_timeout": 1, "find_within": 1 })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    let billing_run = started.location.clone().unwrap();
    let finished = finished_run(&admin, &billing_run, Duration::from_secs(30)).await;
    assert_eq!(
        finished["status"], "failed",
        "a disabled account: {finished}"
    );
    let before = dump(&f.env).await;

    // Reading apps: only the one its account uses.
    let list = limited.get("/api/v1/apps").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<Value> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Contoso")]);
    assert_eq!(
        limited.get(&format!("/api/v1/apps/{contoso}")).await.status,
        StatusCode::OK
    );
    for id in [other, spare] {
        limited
            .get(&format!("/api/v1/apps/{id}"))
            .await
            .assert_problem(StatusCode::FORBIDDEN, "app_not_allowed", None);
    }

    // Never an app write, not even on its own account's app; no new accounts.
    limited
        .send(Method::POST, "/api/v1/apps", Some(new_app_body("Fabrikam")))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_restricted", None);
    limited
        .send(
            Method::PATCH,
            &format!("/api/v1/apps/{contoso}"),
            Some(json!({ "name": "Mine" })),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_restricted", None);
    limited
        .send(Method::DELETE, &format!("/api/v1/apps/{spare}"), None)
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_restricted", None);
    limited
        .send(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({ "name": "sales", "app": contoso, "email": "sales@example.test" })),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_restricted", None);

    // Other accounts: not changed, removed, tested, nor their runs read.
    limited
        .send(
            Method::PATCH,
            &format!("/api/v1/accounts/{billing}"),
            Some(json!({ "from_name": "Mine" })),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_not_allowed", None);
    limited
        .send(Method::DELETE, &format!("/api/v1/accounts/{billing}"), None)
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_not_allowed", None);
    limited
        .send(
            Method::POST,
            &format!("/api/v1/accounts/{billing}/tests"),
            None,
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_not_allowed", None);
    limited.get(&billing_run).await.assert_problem(
        StatusCode::FORBIDDEN,
        "account_not_allowed",
        None,
    );
    // Its own account cannot move to an app it cannot read.
    limited
        .send(
            Method::PATCH,
            &format!("/api/v1/accounts/{support}"),
            Some(json!({ "app": "Other" })),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "app_not_allowed", None);
    assert_eq!(dump(&f.env).await, before, "nothing changed");

    // Its own account: changed, tested and the run read.
    let changed = limited
        .send(
            Method::PATCH,
            &format!("/api/v1/accounts/{support}"),
            Some(json!({ "from_name": "Help Desk" })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.json()["from_name"], "Help Desk");
    let started = limited
        .send(
            Method::POST,
            &format!("/api/v1/accounts/{support}/tests"),
            Some(json!({ "step_timeout": 1, "find_within": 1 })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    assert_eq!(
        limited
            .get(started.location.as_deref().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    limited.assert_never_saw_the_canary();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_crud_test_configuration_runs_on_the_rig_until_every_step_passed() {
    let (f, rig) = Fixture::start_on_rig().await;
    let api = Api::new(
        &f,
        create_token(&f, "admin", &["accounts:read", "accounts:write"], &[]),
    );
    // Point the account at the rig through the API.
    let changed = api
        .send(
            Method::PATCH,
            "/api/v1/accounts/1",
            Some(json!({
                "inbound_host": "localhost",
                "inbound_port": rig.imaps_port(),
                "inbound_tls": "implicit",
                "smtp_host": "localhost",
                "smtp_port": rig.submission_port(),
                "smtp_tls": "starttls",
                "from_name": "Support Desk",
            })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    f.authorize().await;

    let started = api
        .send(
            Method::POST,
            "/api/v1/accounts/1/tests",
            Some(json!({ "step_timeout": 5, "find_within": 20 })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    let location = started.location.clone().unwrap();
    let first = started.json();
    let run = first["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/tests/{run}"));
    assert_eq!(first["account_id"], 1);
    assert_eq!(first["account"], "support");

    let report = finished_run(&api, &location, Duration::from_secs(90)).await;
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["duration_ms"].is_u64(), "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    assert!(
        steps.iter().all(|s| s["status"] == "ok"),
        "every step passed: {report:#}"
    );
    for wanted in [
        "imap: authenticate",
        "imap: select INBOX",
        "smtp: authenticate",
        "smtp: send test message",
        "imap: find the test message",
    ] {
        assert!(
            steps
                .iter()
                .any(|s| s["name"].as_str().unwrap().starts_with(wanted)),
            "missing step {wanted}: {report:#}"
        );
    }
    let message_id = report["message_id"].as_str().unwrap();
    assert!(
        crate::mailtest::raw_imap_has(&f, &rig, message_id).await,
        "the test message is really in the mailbox"
    );
    api.assert_never_saw_the_canary();
}
