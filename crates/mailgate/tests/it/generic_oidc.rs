//! A generic app against a standards-based OpenID Connect provider (issue 12): the issuer
//! alone fills in the endpoints from the provider's discovery document (CLI, API and admin
//! form alike), a document that names another issuer is refused, an app that could not
//! tell who signed in is refused at creation, and the authorize URL carries only standard
//! parameters unless the app adds some. The emulator's Google-shaped endpoints stand in
//! for the provider: its discovery document lives at `<base>/.well-known/…`.

use crate::fixtures::{CLIENT_SECRET, Fixture};
use crate::support::{Browser, text};
use mailgate_testkit::idp::{Fault, FaultSpec};
use reqwest::StatusCode;

const ADMIN_PASSWORD: &str = "admin passphrase 9931";

/// `app add --kind generic` with `extra` arguments; the secret on stdin.
fn add_generic(f: &Fixture, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "app",
        "add",
        "--kind",
        "generic",
        "--name",
        name,
        "--client-id",
        &f.client_id,
        "--client-secret-stdin",
        "--scopes",
        "openid email https://mail.google.com/",
    ];
    args.extend_from_slice(extra);
    f.env.run(&args, Some(CLIENT_SECRET))
}

fn assert_discovered(app: &serde_json::Value, base: &str) {
    let e = &app["endpoints"];
    assert_eq!(e["issuer"], base, "{app}");
    assert_eq!(e["token"], format!("{base}/token"), "{app}");
    assert_eq!(e["authorize"], format!("{base}/o/oauth2/v2/auth"), "{app}");
    assert_eq!(e["jwks"], format!("{base}/oauth2/v3/certs"), "{app}");
    assert_eq!(e["userinfo"], format!("{base}/v1/userinfo"), "{app}");
    assert_eq!(e["device"], format!("{base}/device/code"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_app_needs_only_its_issuer_and_authorizes_with_standard_parameters() {
    let f = Fixture::start().await;
    let base = f.idp.base_url().trim_end_matches('/').to_owned();
    // Google-shaped endpoints give a refresh token only for access_type=offline: the
    // administrator adds it; mailgate adds nothing of its own.
    let out = add_generic(
        &f,
        "Standard",
        &["--issuer", &base, "--param", "access_type=offline"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_discovered(&f.env.json(&["app", "show", "Standard", "--json"]), &base);

    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "oidc",
            "--app",
            "Standard",
            "--email",
            &f.mailbox,
            "--inbound-host",
            "127.0.0.1",
            "--smtp-host",
            "127.0.0.1",
        ],
        None,
    );
    let url = f.authorize_url("oidc");
    let query: Vec<(String, String)> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        url.starts_with(&format!("{base}/o/oauth2/v2/auth?")),
        "{url}"
    );
    assert!(
        !query.iter().any(|(k, _)| k == "prompt"),
        "no prompt=select_account for a generic app: {query:?}"
    );
    assert!(query.contains(&("access_type".into(), "offline".into())));
    let (status, page) = f.sign_in_and_callback(&url, &f.mailbox).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(f.state("oidc")["state"], "active");
    let token = f.env.run(&["token", "oidc"], None);
    assert!(token.status.success(), "{}", text(&token.stderr));

    // The provider refuses the refresh token (npm `oidc-provider`'s words): worded for a
    // generic provider, not as Google's "publish the app to Production".
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(
            &f.client_id,
            Fault::OauthError {
                error: "invalid_grant".into(),
                description: Some("grant request is invalid".into()),
            },
        ))
        .await
        .unwrap();
    let refused = f.env.run(&["token", "oidc"], None);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let acc = f.state("oidc");
    assert_eq!(acc["state"], "reauth_required", "{acc}");
    assert_eq!(
        acc["last_problem"]["code"], "provider_invalid_grant",
        "{acc}"
    );
    assert!(
        !acc.to_string().contains("Google") && !acc.to_string().contains("Production"),
        "{acc}"
    );
    assert!(
        text(&refused.stderr).contains("grant request is invalid"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_app_is_refused_when_discovery_disagrees_or_nothing_can_check_the_user() {
    let f = Fixture::start().await;
    let base = f.idp.base_url().trim_end_matches('/').to_owned();
    let before = f.env.json(&["app", "list", "--json"]);
    // The document names `base`, not `base/`: exactly the stated issuer is accepted.
    let out = add_generic(&f, "Slash", &["--issuer", &format!("{base}/")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("--issuer") && err.contains(&format!("{base:?}")),
        "{err}"
    );
    // Nothing answers there.
    let out = add_generic(&f, "Nowhere", &["--issuer", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--issuer"),
        "{}",
        text(&out.stderr)
    );
    // Endpoints by hand, but neither signing keys nor userinfo: refused now, not at the
    // callback after the user signed in.
    let token_url = format!("{base}/token");
    let authorize_url = format!("{base}/o/oauth2/v2/auth");
    let out = add_generic(
        &f,
        "Blind",
        &["--token-url", &token_url, "--authorize-url", &authorize_url],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("--jwks-url") && err.contains("userinfo"),
        "{err}"
    );
    assert_eq!(
        f.env.json(&["app", "list", "--json"]),
        before,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_admin_form_read_the_discovery_document_too() {
    let f = Fixture::start().await;
    let base = f.idp.base_url().trim_end_matches('/').to_owned();
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            "admin",
            "--scope",
            "accounts:write",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let post = |body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/apps", f.server.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let body = |name: &str, issuer: &str| {
        serde_json::json!({
            "kind": "generic", "name": name, "client_id": f.client_id,
            "client_secret": CLIENT_SECRET, "issuer": issuer, "scopes": "openid email",
        })
    };
    let refused = post(body("Wrong", &format!("{base}/"))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["field"], "issuer", "{problem}");
    let created = post(body("ByApi", &base)).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_discovered(&created.json().await.unwrap(), &base);

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
    let form = |name: &'static str, issuer: String| {
        vec![
            ("csrf", csrf.clone()),
            ("kind", "generic".to_owned()),
            ("name", name.to_owned()),
            ("client_id", f.client_id.clone()),
            ("client_secret", CLIENT_SECRET.to_owned()),
            ("flow", "authorization_code".to_owned()),
            ("issuer", issuer),
            ("scopes", "openid email".to_owned()),
        ]
    };
    let resp = f
        .http
        .post(format!("{}/admin/apps/new", f.server.base))
        .header("cookie", &admin)
        .form(&form("WrongForm", format!("{base}/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = resp.text().await.unwrap();
    assert!(page.contains("data-field=\"issuer\""), "{page}");
    let resp = f
        .http
        .post(format!("{}/admin/apps/new", f.server.base))
        .header("cookie", &admin)
        .form(&form("ByForm", base.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_discovered(&f.env.json(&["app", "show", "ByForm", "--json"]), &base);
    let names: Vec<String> = f
        .env
        .json(&["app", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["ByApi", "ByForm", "Contoso"],
        "nothing of the refusals"
    );
}
