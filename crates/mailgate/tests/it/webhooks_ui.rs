//! The admin UI's webhooks page over HTTP: a subscription created in the form shows its
//! signing secret once and nowhere afterwards (pages, database, log); bad input comes back
//! beside its field in the API's words and stores nothing; operators may look but not
//! change; forged forms are refused; the delivery log shows every attempt with the
//! receiver's status code, and Redeliver sends the same delivery again.

use crate::fixtures::Fixture;
use crate::support::db_contains;
use crate::support::{Browser, input_value};
use crate::webhooks::{Receiver, api, api_token, verify_signature};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "a long enough admin passphrase";
const OPERATOR_PASSWORD: &str = "operator passphrase 123";
const HOOK_URL: &str = "https://hooks.example.com/mailgate";

struct Ui {
    f: Fixture,
    /// The administrator's session cookie (`mg_session=…`).
    admin: String,
}

/// The row of the subscription or delivery with this id attribute.
fn row<'a>(html: &'a str, id: &str) -> &'a str {
    html.split(&format!("<tr id=\"{id}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no row {id}: {html}"))
        .split("</tr>")
        .next()
        .unwrap()
}

/// What the admin pages make of text (askama's HTML escaping).
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The form's action that ends with `suffix`.
fn action(html: &str, suffix: &str) -> String {
    html.split("action=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .find(|a| a.ends_with(suffix))
        .unwrap_or_else(|| panic!("no form posting to …{suffix}: {html}"))
        .to_owned()
}

impl Ui {
    fn browser(&self) -> Browser<'_> {
        Browser {
            http: &self.f.http,
            base: &self.f.server.base,
        }
    }

    async fn get(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        self.browser().get(path, cookie).await
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.browser().post(path, cookie, form).await
    }

    async fn csrf(&self, cookie: &str) -> String {
        self.browser().csrf(cookie).await
    }

    /// A server (with `vars`), the emulator, the app Contoso, the account `support` (id 1)
    /// and a signed-in administrator.
    async fn start(vars: &[(&str, &str)]) -> Ui {
        let f = Fixture::start_with(vars).await;
        let mut ui = Ui {
            f,
            admin: String::new(),
        };
        ui.admin = ui.sign_in("ada", "admin", ADMIN_PASSWORD).await;
        ui
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.f.server.base)
    }

    /// Adds a user with the CLI and signs in through the login form; returns the cookie.
    async fn sign_in(&self, user: &str, role: &str, password: &str) -> String {
        self.f.env.ok(
            &["user", "add", user, "--role", role, "--password-stdin"],
            Some(password),
        );
        self.browser().sign_in(user, password).await
    }

    /// Submits the create form as the administrator and returns the secret from the
    /// result page, after checking that page says it is shown once and how to verify.
    async fn create_in_form(&self, fields: &[(&str, &str)]) -> String {
        let csrf = self.csrf(&self.admin).await;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = self.post("/admin/webhooks", &self.admin, &form).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers().get("location").is_none(),
            "the secret page is the answer itself, not a redirect that could carry the secret"
        );
        assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("you will not see it again") && html.contains("id=\"copy-secret\""),
            "{html}"
        );
        let how = html.split("id=\"verify-how\"").nth(1).unwrap();
        assert!(
            how.contains("X-Mailgate-Signature")
                && how.contains("HMAC-SHA256")
                && how.contains("&lt;t&gt;.&lt;body&gt;"),
            "{html}"
        );
        let secret = input_value(&html, "id", "webhook-secret");
        assert!(
            secret.starts_with("whsec_") && secret.len() > 30,
            "{secret}"
        );
        secret
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.f.env.dir.path().join("serve.log")).unwrap()
    }

    /// Reloads the subscription page until the delivery row satisfies `done`.
    async fn wait_for_row(
        &self,
        path: &str,
        id: &str,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, html) = self.get(path, &self.admin).await;
            assert_eq!(status, 200, "{html}");
            if html.contains(&format!("<tr id=\"{id}\">")) && done(row(&html, id)) {
                return row(&html, id).to_owned();
            }
            assert!(Instant::now() < deadline, "{what}: {html}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_in_the_form_shows_its_secret_once() {
    let ui = Ui::start(&[]).await;
    let (status, dashboard) = ui.get("/admin", &ui.admin).await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("href=\"/admin/webhooks\""),
        "nav link: {dashboard}"
    );
    let (status, html) = ui.get("/admin/webhooks", &ui.admin).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("No webhook subscriptions yet") && html.contains("id=\"create-webhook\"")
    );
    for event in [
        "message.received",
        "message.sent",
        "message.failed",
        "account.reauth_required",
        "app.secret_expiring",
    ] {
        assert!(
            html.contains(&format!("name=\"events\" value=\"{event}\"")),
            "a checkbox for {event}: {html}"
        );
    }
    assert!(html.contains("<option value=\"1\">support"), "{html}");

    let secret = ui
        .create_in_form(&[
            ("url", HOOK_URL),
            ("events", "message.received"),
            ("events", "message.failed"),
            ("account_id", "1"),
            ("description", "ERP inbox"),
        ])
        .await;

    // Listed by URL, account, events, description and its (empty) delivery summary.
    let (status, html) = ui.get("/admin/webhooks", &ui.admin).await;
    assert_eq!(status, 200);
    let listed = row(&html, "webhook-1");
    assert!(
        listed.contains(HOOK_URL)
            && listed.contains("<td>support</td>")
            && listed.contains("<code>message.received</code> <code>message.failed</code>")
            && listed.contains("ERP inbox")
            && listed.contains("none yet"),
        "{listed}"
    );
    // The API sees the same subscription, also without its secret.
    let token = api_token(&ui.f, "app", &["webhooks:write"], &[]);
    let (status, v) = api(&ui.f, &token, "GET", "/api/v1/webhooks/1", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["url"], HOOK_URL);
    assert_eq!(v["account_id"], 1);
    assert_eq!(v["events"], json!(["message.received", "message.failed"]));
    assert!(!v.to_string().contains(&secret), "{v}");

    // The secret is gone for good: on no page, sealed in the database, not in the log.
    for path in [
        "/admin/webhooks",
        "/admin/webhooks/1",
        "/admin",
        "/admin/events",
    ] {
        let (status, html) = ui.get(path, &ui.admin).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains(&secret) && !html.contains(&secret[6..]),
            "the secret in {path}"
        );
    }
    let (_, page) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert!(
        page.contains(HOOK_URL)
            && page.contains("ERP inbox")
            && page.contains("shown once, when the subscription was created")
            && page.contains("id=\"no-deliveries\""),
        "{page}"
    );
    assert!(!db_contains(&ui.f.env.db_path(), &secret[6..]));
    assert!(!ui.log().contains(&secret[6..]), "the secret in the log");
    assert!(ui.log().contains("webhook subscription created"));
}

/// A form submission that must come back with `says` beside `field`, keeping `kept`, and
/// the API's answer to the same subscription (`api_field`, the same words).
struct BadInput<'a> {
    form: &'a [(&'a str, &'a str)],
    field: &'a str,
    says: &'a str,
    kept: &'a [&'a str],
    api: serde_json::Value,
    api_field: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_input_comes_back_beside_its_field_and_stores_nothing() {
    let ui = Ui::start(&[]).await;
    let token = api_token(&ui.f, "app", &["webhooks:write"], &[]);
    // A token's first use stamps its last_used_at (then at most once a minute).
    assert_eq!(
        api(&ui.f, &token, "GET", "/api/v1/webhooks", None).await.0,
        StatusCode::OK
    );
    let csrf = ui.csrf(&ui.admin).await;
    let before = ui.f.env.dump_db().await;
    let cases = [
        BadInput {
            form: &[("url", HOOK_URL), ("description", "no events")],
            field: "events",
            says: "name at least one of: message.received, message.sent",
            kept: &[
                "value=\"https://hooks.example.com/mailgate\"",
                "value=\"no events\"",
            ],
            api: json!({"url": HOOK_URL, "events": [], "description": "no events"}),
            api_field: "events",
        },
        BadInput {
            form: &[
                ("url", "ftp://hooks.example.com/x"),
                ("events", "message.sent"),
            ],
            field: "url",
            says: "the scheme must be http or https",
            kept: &[
                "value=\"message.sent\" checked",
                "value=\"ftp://hooks.example.com/x\"",
            ],
            api: json!({"url": "ftp://hooks.example.com/x", "events": ["message.sent"]}),
            api_field: "url",
        },
        BadInput {
            form: &[
                ("url", "http://127.0.0.1:9/x"),
                ("events", "message.failed"),
            ],
            field: "url",
            says: "127.0.0.1 is a loopback or private address; webhooks may reach such targets only when the operator sets MAILGATE_WEBHOOK_ALLOW_PRIVATE=true",
            kept: &["value=\"message.failed\" checked"],
            api: json!({"url": "http://127.0.0.1:9/x", "events": ["message.failed"]}),
            api_field: "url",
        },
        BadInput {
            form: &[
                ("url", "http://localhost:8080/x"),
                ("events", "message.failed"),
            ],
            field: "url",
            says: "localhost is a loopback or private address",
            kept: &[],
            api: json!({"url": "http://localhost:8080/x", "events": ["message.failed"]}),
            api_field: "url",
        },
        BadInput {
            form: &[
                ("url", HOOK_URL),
                ("events", "message.received"),
                ("account_id", "99"),
                ("description", "kept"),
            ],
            field: "account_id",
            says: "no account 99",
            kept: &["value=\"message.received\" checked", "value=\"kept\""],
            api: json!({"url": HOOK_URL, "events": ["message.received"], "account_id": 99}),
            api_field: "account_id",
        },
        BadInput {
            form: &[("url", HOOK_URL), ("events", "message.bounced")],
            field: "events",
            says: "\"message.bounced\" is not a valid webhook event",
            kept: &[],
            api: json!({"url": HOOK_URL, "events": ["message.bounced"]}),
            api_field: "events[0]",
        },
        BadInput {
            form: &[
                ("url", HOOK_URL),
                ("events", "message.sent"),
                ("description", "two\nlines"),
            ],
            field: "description",
            says: "at most 500 characters, no line breaks",
            kept: &["value=\"message.sent\" checked"],
            api: json!({"url": HOOK_URL, "events": ["message.sent"], "description": "two\nlines"}),
            api_field: "description",
        },
    ];
    for case in cases {
        let fields = case.form;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = ui.post("/admin/webhooks", &ui.admin, &form).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{fields:?}"
        );
        let html = resp.text().await.unwrap();
        let beside = html
            .split(&format!("data-field=\"{}\">", case.field))
            .nth(1)
            .unwrap_or_else(|| panic!("no error beside {} for {fields:?}: {html}", case.field))
            .split("</span>")
            .next()
            .unwrap();
        assert!(
            beside.contains(&escaped(case.says)),
            "{} says {:?}: {html}",
            case.field,
            case.says
        );
        for k in case.kept {
            assert!(html.contains(k), "{k:?} kept for {fields:?}: {html}");
        }
        assert!(
            html.contains("Nothing was saved") && !html.contains("whsec_"),
            "{html}"
        );
        // The API refuses the same subscription naming the same field in the same words.
        let (status, v) = api(&ui.f, &token, "POST", "/api/v1/webhooks", Some(case.api)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["field"], case.api_field, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(case.says), "{v}");
        assert!(
            beside.contains(&escaped(detail)),
            "form {beside:?}, API {detail:?}"
        );
        assert_eq!(
            ui.f.env.dump_db().await,
            before,
            "nothing stored for {fields:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_look_but_not_create_delete_or_redeliver() {
    let ui = Ui::start(&[]).await;
    ui.create_in_form(&[("url", HOOK_URL), ("events", "message.sent")])
        .await;
    let operator = ui.sign_in("olga", "operator", OPERATOR_PASSWORD).await;
    let (status, dashboard) = ui.get("/admin", &operator).await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("href=\"/admin/webhooks\""),
        "{dashboard}"
    );
    let (status, html) = ui.get("/admin/webhooks", &operator).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        row(&html, "webhook-1").contains("all accounts"),
        "operators see the list: {html}"
    );
    assert!(
        !html.contains("id=\"create-webhook\"") && html.contains("Only administrators"),
        "no form for operators: {html}"
    );
    let (status, html) = ui.get("/admin/webhooks/1", &operator).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(HOOK_URL) && !html.contains("/delete\""),
        "{html}"
    );

    let before = ui.f.env.dump_db().await;
    let csrf = ui.csrf(&operator).await;
    let resp = ui
        .post(
            "/admin/webhooks",
            &operator,
            &[
                ("csrf", csrf.as_str()),
                ("url", "https://elsewhere.example.com/x"),
                ("events", "message.received"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.text().await.unwrap().contains("whsec_"));
    for path in [
        "/admin/webhooks/1/delete",
        "/admin/webhooks/1/deliveries/1/redeliver",
    ] {
        let resp = ui.post(path, &operator, &[("csrf", csrf.as_str())]).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(resp.text().await.unwrap().contains("Administrators only"));
    }
    assert_eq!(ui.f.env.dump_db().await, before, "nothing changed");
    let (status, _) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert_eq!(status, 200, "the subscription is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_forms_without_the_csrf_token_are_refused() {
    let ui = Ui::start(&[]).await;
    ui.create_in_form(&[("url", HOOK_URL), ("events", "message.sent")])
        .await;
    let before = ui.f.env.dump_db().await;
    for csrf in [None, Some("forged")] {
        let mut form = vec![
            ("url", "https://other.example.com/x"),
            ("events", "message.sent"),
        ];
        form.extend(csrf.map(|c| ("csrf", c)));
        let resp = ui.post("/admin/webhooks", &ui.admin, &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("CSRF check failed") && !html.contains("whsec_"),
            "{html}"
        );
        let form: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
        for path in [
            "/admin/webhooks/1/delete",
            "/admin/webhooks/1/deliveries/1/redeliver",
        ] {
            let resp = ui.post(path, &ui.admin, &form).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} csrf {csrf:?}");
            assert!(resp.text().await.unwrap().contains("CSRF check failed"));
        }
    }
    // Without a session, every page and form sends the browser to the login.
    for path in ["/admin/webhooks", "/admin/webhooks/1"] {
        let resp = ui.f.http.get(ui.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers().get("location").unwrap(), "/login");
    }
    let resp =
        ui.f.http
            .post(ui.url("/admin/webhooks/1/delete"))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(ui.f.env.dump_db().await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_shows_each_attempt_and_redeliver_sends_the_same_delivery_again() {
    let ui = Ui::start(&[
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_WEBHOOK_RETRY_SECS", "1"),
    ])
    .await;
    let f = &ui.f;
    f.authorize().await;
    // The receiver answers the first attempt 500, then 200.
    let rx = Receiver::start(&[500]).await;
    let secret = ui
        .create_in_form(&[
            ("url", &rx.url),
            ("events", "account.reauth_required"),
            ("account_id", ""),
            ("description", "pager"),
        ])
        .await;

    // The grant is revoked at the provider: the next refresh (by the CLI) moves the account
    // to reauth_required, which queues a delivery for every-account subscriptions.
    f.expire_stored_token().await;
    f.idp
        .inject_fault(mailgate_testkit::idp::FaultSpec::token(
            &f.client_id,
            mailgate_testkit::idp::Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    assert!(!f.token().status.success());
    let hits = rx.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 200]
    );
    let delivery_id = hits[0].header("x-mailgate-delivery");
    assert!(delivery_id.starts_with("dlv_"), "{delivery_id}");
    assert_eq!(hits[1].header("x-mailgate-delivery"), delivery_id);
    for h in &hits {
        // The secret the form showed is the one that signs.
        verify_signature(h, &secret);
        assert_eq!(h.json()["type"], "account.reauth_required");
    }

    // The subscription page shows the delivery once the answer is recorded: both attempts
    // with the receiver's status codes, in order.
    let page = "/admin/webhooks/1";
    let delivered = ui
        .wait_for_row(
            page,
            "delivery-1",
            "the delivery is recorded as delivered",
            |r| r.contains(">delivered<"),
        )
        .await;
    assert!(
        delivered.contains(&delivery_id)
            && delivered.contains("<code>account.reauth_required</code>")
            && delivered.contains("<td class=\"attempt-count\">2</td>")
            && delivered
                .contains("<td class=\"last-status\"><span class=\"status-code\">200</span></td>"),
        "{delivered}"
    );
    let codes: Vec<&str> = delivered
        .split("<li class=\"attempt\">")
        .skip(1)
        .map(|a| {
            a.split("<span class=\"status-code\">")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(codes, ["500", "200"], "{delivered}");
    assert!(
        delivered.contains("(HTTP 500)"),
        "the error of the first attempt: {delivered}"
    );
    // The list sums it up.
    let (_, list) = ui.get("/admin/webhooks", &ui.admin).await;
    let listed = row(&list, "webhook-1");
    assert!(
        listed.contains("all accounts")
            && listed.contains("1 delivered")
            && listed.contains("0 pending")
            && listed.contains("0 failed")
            && listed
                .contains("<td class=\"last-status\"><span class=\"status-code\">200</span></td>"),
        "{listed}"
    );

    // Redeliver: a new request with the same delivery id and body, freshly signed.
    let (_, html) = ui.get(page, &ui.admin).await;
    let redeliver = action(&html, "/deliveries/1/redeliver");
    let csrf = ui.csrf(&ui.admin).await;
    let resp = ui
        .post(&redeliver, &ui.admin, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers().get("location").unwrap(),
        "/admin/webhooks/1#delivery-1"
    );
    let again = rx.wait_for(3, Duration::from_secs(15)).await.remove(2);
    assert_eq!(again.header("x-mailgate-delivery"), delivery_id);
    assert_eq!(again.body, hits[0].body, "the same body");
    verify_signature(&again, &secret);
    ui.wait_for_row(page, "delivery-1", "the third attempt is logged", |r| {
        r.matches("<li class=\"attempt\">").count() == 3 && r.contains(">delivered<")
    })
    .await;
    let (_, page_html) = ui.get(page, &ui.admin).await;
    assert!(!page_html.contains(&secret[6..]), "{page_html}");

    // Delete: gone from the list and its page, and nothing more is sent.
    let delete = action(&page_html, "/admin/webhooks/1/delete");
    let resp = ui
        .post(&delete, &ui.admin, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/admin/webhooks");
    let (_, list) = ui.get("/admin/webhooks", &ui.admin).await;
    assert!(list.contains("id=\"no-webhooks\""), "{list}");
    assert_eq!(ui.get(page, &ui.admin).await.0, StatusCode::NOT_FOUND);
    let resp = ui
        .post(&redeliver, &ui.admin, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (_, events) = ui.get("/admin/events", &ui.admin).await;
    assert!(
        events.contains(&format!("webhook 1 to {} removed", escaped(&rx.url))),
        "{events}"
    );
    assert_eq!(rx.hits().len(), 3, "nothing else was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_a_new_secret_from_the_subscription_page() {
    let ui = Ui::start(&[]).await;
    let first = ui
        .create_in_form(&[("url", HOOK_URL), ("events", "message.sent")])
        .await;
    let (_, html) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert!(html.contains("id=\"toggle-webhook\">Pause<"), "{html}");
    let csrf = ui.csrf(&ui.admin).await;
    let resp = ui
        .post(
            "/admin/webhooks/1/enabled",
            &ui.admin,
            &[("csrf", csrf.as_str()), ("enabled", "false")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, html) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert!(
        html.contains("<th>enabled</th><td>no</td>")
            && html.contains("id=\"toggle-webhook\">Resume<"),
        "{html}"
    );
    // Nonsense in the form changes nothing.
    let before = ui.f.env.dump_db().await;
    let resp = ui
        .post(
            "/admin/webhooks/1/enabled",
            &ui.admin,
            &[("csrf", csrf.as_str()), ("enabled", "perhaps")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ui.f.env.dump_db().await, before);
    ui.post(
        "/admin/webhooks/1/enabled",
        &ui.admin,
        &[("csrf", csrf.as_str()), ("enabled", "true")],
    )
    .await;
    let (_, html) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert!(html.contains("<th>enabled</th><td>yes</td>"), "{html}");

    // A new secret is shown once, on the page answering the button.
    let resp = ui
        .post(
            "/admin/webhooks/1/rotate-secret",
            &ui.admin,
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains("<h1>New signing secret</h1>"), "{html}");
    let second = input_value(&html, "id", "webhook-secret");
    assert!(second.starts_with("whsec_") && second != first, "{second}");
    let (_, page) = ui.get("/admin/webhooks/1", &ui.admin).await;
    assert!(!page.contains(&second) && !page.contains(&first));
    assert!(!db_contains(&ui.f.env.db_path(), &second), "sealed at rest");

    // Operators and forged forms change nothing.
    let operator = ui.sign_in("olga", "operator", OPERATOR_PASSWORD).await;
    let op_csrf = ui.csrf(&operator).await;
    let before = ui.f.env.dump_db().await;
    for (path, extra) in [
        ("/admin/webhooks/1/enabled", Some(("enabled", "false"))),
        ("/admin/webhooks/1/rotate-secret", None),
    ] {
        let mut form = vec![("csrf", op_csrf.as_str())];
        form.extend(extra);
        let resp = ui.post(path, &operator, &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        let mut forged = vec![("csrf", "forged")];
        forged.extend(extra);
        let resp = ui.post(path, &ui.admin, &forged).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(ui.f.env.dump_db().await, before, "nothing changed");
}
