//! The admin UI's API-token page over HTTP: a token created in the form is shown once and
//! works within its scopes and accounts; it appears nowhere afterwards (pages, database,
//! log); revoking stops it; operators, forged forms and bad input change nothing.

use crate::fixtures::AdminUi;
use crate::support::{db_contains, input_value, text};
use reqwest::StatusCode;

const ADMIN_PASSWORD: &str = "a long enough admin passphrase";
const OPERATOR_PASSWORD: &str = "operator passphrase 123";

/// The shared admin-UI fixture, with this module's helpers.
struct Ui(AdminUi);

impl std::ops::Deref for Ui {
    type Target = AdminUi;
    fn deref(&self) -> &AdminUi {
        &self.0
    }
}

/// The first row of the token list.
fn first_row(html: &str) -> &str {
    html.split("<tr id=\"token-")
        .nth(1)
        .unwrap_or_else(|| panic!("no token row: {html}"))
        .split("</tr>")
        .next()
        .unwrap()
}

impl Ui {
    /// A server with an administrator, the app Contoso and the account `support`.
    async fn start() -> Ui {
        let ui = Ui(AdminUi::with_admin(ADMIN_PASSWORD).await);
        ui.env.add_microsoft_app("Contoso");
        ui.add_account("support", "support@contoso.com");
        ui
    }

    fn add_account(&self, name: &str, email: &str) {
        self.env.ok(
            &[
                "account", "add", "--name", name, "--app", "Contoso", "--email", email,
            ],
            None,
        );
    }

    fn account_id(&self, name: &str) -> String {
        let list = self.env.json(&["account", "list", "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no account {name}: {list}"))["id"]
            .to_string()
    }

    /// Submits the create form as the administrator (with the CSRF token) and returns the
    /// token from the result page, after checking that page says it is shown once.
    async fn create_in_form(&self, fields: &[(&str, &str)]) -> String {
        let csrf = self.csrf(&self.admin).await;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = self.post("/admin/api-tokens", &self.admin, &form).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers().get("location").is_none(),
            "the token page is the answer itself, not a redirect that could carry the token"
        );
        assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("you will not see it again") && html.contains("id=\"copy-token\""),
            "{html}"
        );
        let token = input_value(&html, "id", "api-token");
        assert!(token.starts_with("mgt_") && token.len() > 40, "{token}");
        token
    }

    async fn api(&self, path: &str, token: &str) -> (StatusCode, String) {
        let resp = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// Signs in a new operator; returns the session cookie.
    async fn operator(&self) -> String {
        self.env.ok(
            &[
                "user",
                "add",
                "olga",
                "--role",
                "operator",
                "--password-stdin",
            ],
            Some(OPERATOR_PASSWORD),
        );
        self.browser().sign_in("olga", OPERATOR_PASSWORD).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_in_the_form_is_shown_once_and_works_within_its_scope() {
    let ui = Ui::start().await;
    let (status, dashboard) = ui.get("/admin", &ui.admin).await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("href=\"/admin/api-tokens\""),
        "nav link: {dashboard}"
    );
    let (status, html) = ui.get("/admin/api-tokens", &ui.admin).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("No API tokens yet") && html.contains("id=\"create-token\""));

    let token = ui
        .create_in_form(&[("name", "erp"), ("scope", "accounts:read")])
        .await;

    // It opens what its scope allows, and nothing else.
    let (status, body) = ui.api("/api/v1/accounts", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "support", "{body}");
    let support = ui.account_id("support");
    let (status, body) = ui
        .api(&format!("/api/v1/accounts/{support}/token"), &token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("urn:mailgate:problem:insufficient_scope") && body.contains("tokens:read"),
        "{body}"
    );

    // Listed afterwards by name, scope, reach and use, but the token itself is gone for
    // good: not on any page, not in the database (only its hash), not in the log.
    let hash = mailgate_oauth::random::sha256_hex(&token);
    let (status, html) = ui.get("/admin/api-tokens", &ui.admin).await;
    assert_eq!(status, 200);
    let row = first_row(&html);
    assert!(
        row.contains(">erp<")
            && row.contains("accounts:read")
            && row.contains("all accounts")
            && row.contains("active")
            && !row.contains("never"),
        "name, scope, reach, state and a last use: {row}"
    );
    for path in ["/admin/api-tokens", "/admin", "/admin/events"] {
        let (_, html) = ui.get(path, &ui.admin).await;
        assert!(
            !html.contains(&token) && !html.contains(&token[4..]) && !html.contains(&hash),
            "the token or its hash in {path}"
        );
    }
    assert!(!db_contains(&ui.env.db_path(), &token[4..]));
    assert!(db_contains(&ui.env.db_path(), &hash), "stored as its hash");
    assert!(!ui.log().contains(&token[4..]), "the token in the log");
    assert!(
        ui.log().contains("API token created"),
        "the creation is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_one_account_cannot_read_another() {
    let ui = Ui::start().await;
    ui.add_account("billing", "billing@contoso.com");
    let (support, billing) = (ui.account_id("support"), ui.account_id("billing"));
    let token = ui
        .create_in_form(&[
            ("name", "helpdesk"),
            ("scope", "accounts:read"),
            ("account", &support),
        ])
        .await;

    let (status, body) = ui.api("/api/v1/accounts", &token).await;
    assert_eq!(status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(list[0]["name"], "support");
    let (status, _) = ui.api(&format!("/api/v1/accounts/{support}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = ui.api(&format!("/api/v1/accounts/{billing}"), &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("urn:mailgate:problem:account_not_allowed"));

    // The list names the account it is limited to.
    let (_, html) = ui.get("/admin/api-tokens", &ui.admin).await;
    let row = first_row(&html);
    assert!(
        row.contains("<td>support</td>") && !row.contains("all accounts"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_and_stays_listed_as_revoked() {
    let ui = Ui::start().await;
    let token = ui
        .create_in_form(&[("name", "erp"), ("scope", "accounts:read")])
        .await;
    assert_eq!(ui.api("/api/v1/accounts", &token).await.0, StatusCode::OK);
    let (_, html) = ui.get("/admin/api-tokens", &ui.admin).await;
    let revoke = html
        .split("action=\"")
        .map(|s| s.split('"').next().unwrap())
        .find(|a| a.ends_with("/revoke"))
        .unwrap_or_else(|| panic!("no revoke button: {html}"))
        .to_owned();

    let csrf = ui.csrf(&ui.admin).await;
    let resp = ui
        .post(&revoke, &ui.admin, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/admin/api-tokens");

    let (status, body) = ui.api("/api/v1/accounts", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (_, html) = ui.get("/admin/api-tokens", &ui.admin).await;
    let row = first_row(&html);
    assert!(
        row.contains(">erp<") && row.contains("revoked") && !row.contains("/revoke"),
        "listed as revoked, without a button: {row}"
    );
    // Twice: there is nothing left to revoke.
    let resp = ui
        .post(&revoke, &ui.admin, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The CLI sees the same record.
    let list = ui.env.json(&["api-token", "list", "--json"]);
    assert!(list[0]["revoked_at"].is_number(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_see_create_or_revoke_tokens() {
    let ui = Ui::start().await;
    let token = ui
        .create_in_form(&[("name", "erp"), ("scope", "accounts:read")])
        .await;
    let operator = ui.operator().await;
    let (status, dashboard) = ui.get("/admin", &operator).await;
    assert_eq!(status, 200);
    assert!(
        !dashboard.contains("/admin/api-tokens"),
        "no link for operators"
    );
    let (status, html) = ui.get("/admin/api-tokens", &operator).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!html.contains("erp"), "{html}");

    let before = ui.env.dump_db().await;
    let csrf = ui.csrf(&operator).await;
    let resp = ui
        .post(
            "/admin/api-tokens",
            &operator,
            &[
                ("csrf", csrf.as_str()),
                ("name", "sneaky"),
                ("scope", "tokens:read"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.text().await.unwrap().contains("mgt_"));
    let resp = ui
        .post(
            "/admin/api-tokens/1/revoke",
            &operator,
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(ui.env.dump_db().await, before, "nothing changed");
    assert_eq!(ui.api("/api/v1/accounts", &token).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_forms_without_the_csrf_token_are_refused() {
    let ui = Ui::start().await;
    let token = ui
        .create_in_form(&[("name", "erp"), ("scope", "accounts:read")])
        .await;
    let before = ui.env.dump_db().await;
    for csrf in [None, Some("forged")] {
        let mut form = vec![("name", "other"), ("scope", "tokens:read")];
        form.extend(csrf.map(|c| ("csrf", c)));
        let resp = ui.post("/admin/api-tokens", &ui.admin, &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("CSRF check failed") && !html.contains("mgt_"),
            "{html}"
        );
        let form: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
        let resp = ui
            .post("/admin/api-tokens/1/revoke", &ui.admin, &form)
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    assert_eq!(ui.env.dump_db().await, before, "nothing changed");
    assert_eq!(ui.api("/api/v1/accounts", &token).await.0, StatusCode::OK);
}

/// A form submission that must come back with `says` beside `field`, keeping `kept`.
struct BadInput<'a> {
    form: &'a [(&'a str, &'a str)],
    field: &'a str,
    says: &'a str,
    kept: &'a [&'a str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_input_comes_back_beside_its_field_and_stores_nothing() {
    let ui = Ui::start().await;
    ui.env.ok(
        &[
            "api-token",
            "create",
            "--name",
            "erp",
            "--scope",
            "accounts:read",
        ],
        None,
    );
    let support = ui.account_id("support");
    let csrf = ui.csrf(&ui.admin).await;
    let before = ui.env.dump_db().await;
    let selected = format!("value=\"{support}\" selected");
    let cases = [
        BadInput {
            form: &[("name", "reporting")],
            field: "scope",
            says: "choose at least one scope",
            kept: &["value=\"reporting\""],
        },
        BadInput {
            form: &[("name", "  "), ("scope", "tokens:read")],
            field: "name",
            says: "expected 1 to 64 characters",
            kept: &["value=\"tokens:read\" checked"],
        },
        BadInput {
            form: &[("name", "erp"), ("scope", "messages:send")],
            field: "name",
            says: "an API token named \"erp\" already exists",
            kept: &["value=\"messages:send\" checked"],
        },
        BadInput {
            form: &[
                ("name", "reporting"),
                ("scope", "accounts:read"),
                ("account", &support),
                ("account", "99"),
            ],
            field: "account",
            says: "no account named or numbered \"99\"",
            kept: &["value=\"reporting\"", &selected],
        },
    ];
    for BadInput {
        form: fields,
        field,
        says,
        kept,
    } in cases
    {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = ui.post("/admin/api-tokens", &ui.admin, &form).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{fields:?}"
        );
        let html = resp.text().await.unwrap();
        let beside = html
            .split(&format!("data-field=\"{field}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no error beside {field} for {fields:?}: {html}"));
        assert!(
            beside
                .split("</span>")
                .next()
                .unwrap()
                .contains(&says.replace('"', "&#34;")),
            "{field} says {says:?}: {html}"
        );
        for k in kept {
            assert!(html.contains(k), "{k:?} kept for {fields:?}: {html}");
        }
        assert!(
            html.contains("Nothing was saved") && !html.contains("mgt_"),
            "{html}"
        );
        assert_eq!(
            ui.env.dump_db().await,
            before,
            "nothing stored for {fields:?}"
        );
    }
    // The CLI parses by the same rules and says the same thing.
    let out = ui
        .env
        .run(&["api-token", "create", "--name", "reporting"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--scope: choose at least one scope"),
        "{}",
        text(&out.stderr)
    );
    let out = ui.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "reporting",
            "--scope",
            "accounts:read",
            "--account",
            "99",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--account: no account named or numbered \"99\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ui.env.dump_db().await, before);
}
