//! The use-case layer's promises, through the real binary: the CLI's `--json` and the API
//! answer with the same view of an app and of an account (`mailgate-usecase::views`), field
//! for field.

use crate::oauth::Fixture;
use crate::support::text;
use serde_json::Value;

fn create_token(f: &Fixture, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["api-token", "create", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = f.env.run(&args, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

async fn api_get(f: &Fixture, token: &str, path: &str) -> Value {
    let resp = f
        .http
        .get(format!("{}{path}", f.server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// The app `Fabrikam` and the account `sales`, with every optional field filled.
pub(crate) fn add_app_and_account_with_every_field(f: &Fixture) {
    // An app with a secret, its expiry and an extra parameter, and an account with
    // non-default settings, so that every field of the views holds something.
    f.env.add_microsoft_app("Fabrikam");
    f.env.ok(
        &[
            "app",
            "update",
            "Fabrikam",
            "--param",
            "domain_hint=fabrikam.com",
        ],
        None,
    );
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "sales",
            "--app",
            "Fabrikam",
            "--email",
            "sales@example.test",
            "--from-name",
            "Sales Team",
            "--alias",
            "vertrieb@example.test",
            "--on-received",
            "move:Processed",
            "--smtp-port",
            "465",
        ],
        None,
    );
}

#[tokio::test]
async fn usecases_cli_json_and_api_show_the_same_app_and_account() {
    let f = Fixture::start().await;
    add_app_and_account_with_every_field(&f);
    let token = create_token(&f, "reader", &["accounts:read"]);

    let cli_app = f.env.json(&["app", "show", "Fabrikam", "--json"]);
    let id = cli_app["id"].as_i64().unwrap();
    assert_eq!(cli_app["extra_params"]["domain_hint"], "fabrikam.com");
    assert!(cli_app["secret_expires_in_days"].is_i64(), "{cli_app}");
    let api_app = api_get(&f, &token, &format!("/api/v1/apps/{id}")).await;
    assert_eq!(
        cli_app, api_app,
        "app show --json and GET /api/v1/apps/{id}"
    );
    assert_eq!(
        f.env.json(&["app", "list", "--json"]),
        api_get(&f, &token, "/api/v1/apps").await,
        "app list --json and GET /api/v1/apps"
    );

    let cli_account = f.env.json(&["account", "show", "sales", "--json"]);
    let id = cli_account["id"].as_i64().unwrap();
    assert_eq!(cli_account["on_received"], "move:Processed");
    assert_eq!(cli_account["aliases"][0], "vertrieb@example.test");
    let api_account = api_get(&f, &token, &format!("/api/v1/accounts/{id}")).await;
    assert_eq!(
        cli_account, api_account,
        "account show --json and GET /api/v1/accounts/{id}"
    );
    assert_eq!(
        f.env.json(&["account", "list", "--json"]),
        api_get(&f, &token, "/api/v1/accounts").await,
        "account list --json and GET /api/v1/accounts"
    );
}
