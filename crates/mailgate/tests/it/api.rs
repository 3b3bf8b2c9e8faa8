//! `/api/v1` through the real server: bearer tokens, scopes, account restriction, problem
//! documents, and the token endpoint.

use crate::fixtures::{Fixture, create_token};
use crate::support::{db_contains, text};
use reqwest::StatusCode;

/// A route of the OpenAPI document with every `{param}` filled in with 1.
fn route_url(base: &str, path: &str) -> String {
    let mut url = path.to_owned();
    for p in mailgate_web::openapi::path_params(path) {
        url = url.replace(&format!("{{{p}}}"), "1");
    }
    format!("{base}{url}")
}

/// The database without what a refused request may legitimately write: the token's last
/// use (`api_tokens`) and an audit trail of the refusal.
async fn state_of_record(f: &Fixture) -> String {
    let dump = f.env.dump_db().await;
    dump.split("== ")
        .filter(|table| !table.starts_with("api_tokens\n") && !table.starts_with("audit"))
        .collect::<Vec<_>>()
        .join("== ")
}

fn http_method(m: &str) -> reqwest::Method {
    reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap()
}

async fn get(f: &Fixture, path: &str, token: Option<&str>) -> (StatusCode, String, Option<String>) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", f.server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (resp.status(), resp.text().await.unwrap(), ct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_problem_documents() {
    let f = Fixture::start().await;
    f.authorize().await;
    let reader = create_token(&f, "reader", &["accounts:read"], &[]);
    let tokens = create_token(&f, "tokens", &["tokens:read", "accounts:read"], &[]);
    assert!(
        !db_contains(&f.env.db_path(), &reader),
        "API tokens are stored hashed"
    );

    // No token, a bad token: 401 with a problem document and a challenge.
    for token in [None, Some("mgt_not-a-real-token")] {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/accounts", f.server.base))
            .header(
                "authorization",
                token.map(|t| format!("Bearer {t}")).unwrap_or_default(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().get("www-authenticate").is_some());
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["type"], "urn:mailgate:problem:unauthorized");
        assert_eq!(body["status"], 401);
    }

    let (status, body, _) = get(&f, "/api/v1/accounts", Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["mailbox"], f.mailbox.as_str());
    assert_eq!(list[0]["state"], "active");
    let (status, body, _) = get(&f, "/api/v1/apps", Some(&reader)).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("CANARY") && body.contains("set (…"),
        "secrets only as hints: {body}"
    );

    // The wrong scope: 403, not 401.
    let (status, body, ct) = get(&f, "/api/v1/accounts/1/token", Some(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    assert!(
        body.contains("urn:mailgate:problem:insufficient_scope") && body.contains("tokens:read"),
        "{body}"
    );

    // tokens:read: the same fresh token `mailgate token` prints.
    let (status, body, _) = get(&f, "/api/v1/accounts/1/token", Some(&tokens)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cli = f.env.ok(&["token", "support"], None);
    assert_eq!(v["access_token"].as_str().unwrap(), cli.trim());
    assert_eq!(v["token_type"], "Bearer");

    let (status, body, _) = get(&f, "/api/v1/accounts/99", Some(&reader)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("urn:mailgate:problem:not_found"));

    // Revoked: 401 from then on.
    f.env.ok(&["api-token", "revoke", "reader"], None);
    assert_eq!(
        get(&f, "/api/v1/accounts", Some(&reader)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(
        !log.contains(&tokens) && !log.contains(v["access_token"].as_str().unwrap()),
        "no credential in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_restricted_token_cannot_touch_another_account() {
    let f = Fixture::start().await;
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "billing",
            "--app",
            "Contoso",
            "--email",
            "billing@example.test",
        ],
        None,
    );
    let limited = create_token(
        &f,
        "limited",
        &["accounts:read", "tokens:read", "accounts:write"],
        &["support"],
    );
    let (status, body, _) = get(&f, "/api/v1/accounts", Some(&limited)).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only its own account is listed: {body}"
    );
    assert_eq!(list[0]["name"], "support");
    for path in [
        "/api/v1/accounts/2",
        "/api/v1/accounts/2/token",
        "/api/v1/accounts/2/events",
    ] {
        let (status, body, _) = get(&f, path, Some(&limited)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(
            body.contains("urn:mailgate:problem:account_not_allowed"),
            "{body}"
        );
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/2/authorize", f.server.base))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Its own account: authorization can be started through the API.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/authorize", f.server.base))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(
        v["url"].as_str().unwrap().contains("code_challenge="),
        "{v}"
    );
    // Not yet authorized: the token endpoint says so.
    let (status, body, _) = get(&f, "/api/v1/accounts/1/token", Some(&limited)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("urn:mailgate:problem:not_authorized"));
    // Bad input on the CLI: an unknown account or scope is refused, nothing created.
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "x",
            "--scope",
            "accounts:read",
            "--account",
            "nope",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "x",
            "--scope",
            "messages:delete",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        f.env
            .json(&["api-token", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The OpenAPI document validates, and describes exactly the routes the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_lists_every_route() {
    let f = Fixture::start().await;
    let resp = reqwest::get(format!("{}/api/v1/openapi.json", f.server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    let file = f.env.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; from openapi_spec_validator import validate; from openapi_spec_validator.readers import read_from_filename; validate(read_from_filename(sys.argv[1])[0]); print('valid')"])
        .arg(&file)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success() && text(&out.stdout).contains("valid"),
        "openapi-spec-validator (pip install openapi-spec-validator; scripts/test installs it): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let routes = mailgate_web::openapi::api_routes();
    let described: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        routes.len(),
        "the document describes exactly the listed routes"
    );
    let client = reqwest::Client::new();
    for route in &routes {
        let (method, path, scope) = (&route.method, &route.path, &route.scope);
        let op = &doc["paths"][path][method];
        assert_eq!(op["x-required-scope"], *scope, "{method} {path}");
        assert_eq!(
            op["security"],
            serde_json::json!([{ "bearer": [scope] }]),
            "{method} {path}: the bearer scheme with its scope"
        );
        let url = route_url(&f.server.base, path);
        let status = client
            .request(http_method(method), &url)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} is served and needs a token"
        );
    }
}

/// Every route refuses a token that has every scope but its own (403), and takes one that
/// has its own (not 401/403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_own_scope() {
    let f = Fixture::start().await;
    const ALL: &[&str] = &[
        "accounts:read",
        "accounts:write",
        "messages:send",
        "messages:read",
        "tokens:read",
        "webhooks:write",
    ];
    let client = reqwest::Client::new();
    let documented = mailgate_web::openapi::api_routes();
    let mut listed: Vec<(&str, &str)> = WITH_SCOPE.iter().map(|(m, p, _)| (*m, *p)).collect();
    let mut routes: Vec<(&str, &str)> = documented
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    listed.sort();
    routes.sort();
    assert_eq!(
        listed, routes,
        "WITH_SCOPE lists every documented route once, with its status with the scope"
    );
    // In WITH_SCOPE's order: account 1 is deleted last.
    for (i, (method, path, expected)) in WITH_SCOPE.iter().enumerate() {
        let scope = &documented
            .iter()
            .find(|r| r.method == *method && r.path == *path)
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
            .scope;
        // The outbox routes also accept messages:read for reading; leave it out of both.
        let others: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|s| {
                *s != scope.as_str()
                    && !(path.starts_with("/api/v1/messages") && *s == "messages:read")
            })
            .collect();
        let without = create_token(&f, &format!("without-{i}"), &others, &[]);
        let with = create_token(&f, &format!("with-{i}"), &[scope.as_str()], &[]);
        let url = route_url(&f.server.base, path);
        let body = serde_json::json!({"to": ["someone@example.test"], "subject": "s", "text": "t"});
        let req = |token: &str| {
            let r = client.request(http_method(method), &url);
            let r = if *method == "post" || *method == "patch" {
                r.json(&body)
            } else {
                r
            };
            r.bearer_auth(token.to_owned())
        };
        let before = state_of_record(&f).await;
        let resp = req(&without).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "{method} {path} without {scope}"
        );
        assert_eq!(
            state_of_record(&f).await,
            before,
            "{method} {path} without {scope} changed the database"
        );
        let resp = req(&with).send().await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            *expected,
            "{method} {path} with {scope}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

/// What each route answers with its scope, in the order the test follows (account 1 is
/// deleted last). Every id is 1: the fixture's app and (unauthorized) account
/// exist, no webhook does, and the body is a send request, which other POST/PATCH routes
/// refuse as invalid. A handler reached says so (not 401/403).
const WITH_SCOPE: &[(&str, &str, u16)] = &[
    ("get", "/api/v1/apps", 200),
    ("get", "/api/v1/accounts", 200),
    ("get", "/api/v1/accounts/{id}", 200),
    ("get", "/api/v1/accounts/{id}/events", 200),
    ("get", "/api/v1/events", 200),
    // Not authorized yet.
    ("get", "/api/v1/accounts/{id}/token", 409),
    ("post", "/api/v1/accounts/{id}/authorize", 201),
    ("post", "/api/v1/accounts/{id}/messages", 202),
    ("get", "/api/v1/messages/{id}", 200),
    ("get", "/api/v1/messages", 200),
    // Message 1 is queued, not failed.
    ("post", "/api/v1/messages/{id}/retry", 409),
    // No token for the mailbox.
    ("get", "/api/v1/accounts/{id}/messages", 502),
    ("get", "/api/v1/accounts/{id}/messages/{uid}", 502),
    ("get", "/api/v1/webhooks", 200),
    ("post", "/api/v1/webhooks", 422),
    ("get", "/api/v1/webhooks/{id}", 404),
    ("patch", "/api/v1/webhooks/{id}", 404),
    ("post", "/api/v1/webhooks/{id}/rotate-secret", 404),
    ("delete", "/api/v1/webhooks/{id}", 404),
    ("get", "/api/v1/webhooks/{id}/deliveries", 404),
    (
        "post",
        "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
        404,
    ),
    ("post", "/api/v1/apps", 422),
    ("get", "/api/v1/apps/{id}", 200),
    ("patch", "/api/v1/apps/{id}", 422),
    ("post", "/api/v1/accounts", 422),
    ("patch", "/api/v1/accounts/{id}", 422),
    ("post", "/api/v1/accounts/{id}/tests", 422),
    ("get", "/api/v1/tests/{run}", 404),
    // The app still has its account.
    ("delete", "/api/v1/apps/{id}", 409),
    ("delete", "/api/v1/accounts/{id}", 204),
];
