//! The identity-provider emulator, tested over HTTP as mailgate and Dovecot use it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mailgate_testkit::idp::{
    ClientSpec, DeviceConsent, Endpoint, Fault, FaultSpec, Idp, IdpAdmin, IdpConfig, LifetimeSpec,
    MALFORMED_JSON_BODY, ServiceAccountSpec, UserSpec, answer_device_code, pkce_s256, sign_in,
};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const CLIENT: &str = "mail-app";
const SECRET: &str = "s3cret-value";
const ALICE: &str = "alice@example.test";
const PASSWORD: &str = "correct horse";
const OUTLOOK: &str = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access openid email profile";
const GMAIL: &str = "https://mail.google.com/ openid email";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier-of-enough-length";

struct Env {
    _idp: Idp,
    admin: IdpAdmin,
    base: String,
    /// Never follows redirects, so tests see each 302 themselves.
    http: reqwest::Client,
}

/// An emulator with one confidential client and one user.
async fn start() -> Env {
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let admin = idp.admin();
    admin
        .add_client(ClientSpec::confidential(CLIENT, SECRET, REDIRECT))
        .await
        .unwrap();
    admin
        .add_user(UserSpec::new(ALICE, PASSWORD))
        .await
        .unwrap();
    Env {
        base: idp.base_url(),
        admin,
        _idp: idp,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap(),
    }
}

fn ms_authorize_url(env: &Env, client: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    authorize_url(
        &format!("{}/common/oauth2/v2.0/authorize", env.base),
        client,
        scope,
        extra,
    )
}

fn google_authorize_url(env: &Env, client: &str, extra: &[(&str, &str)]) -> String {
    authorize_url(
        &format!("{}/o/oauth2/v2/auth", env.base),
        client,
        GMAIL,
        extra,
    )
}

fn authorize_url(endpoint: &str, client: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let challenge = pkce_s256(VERIFIER);
    let mut url = Url::parse(endpoint).unwrap();
    let mut params: Vec<(&str, &str)> = vec![
        ("client_id", client),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-1"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        params.push((k, v));
    }
    url.query_pairs_mut()
        .extend_pairs(params.iter().filter(|(_, v)| !v.is_empty()));
    url.to_string()
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Signs in as Alice and returns the authorization code.
async fn code_for(env: &Env, authorize_url: &str) -> String {
    let redirect = sign_in(&env.http, authorize_url, ALICE, PASSWORD)
        .await
        .unwrap();
    assert!(redirect.as_str().starts_with(REDIRECT), "{redirect}");
    query(&redirect).remove("code").expect("code in redirect")
}

async fn post_form(env: &Env, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = env
        .http
        .post(format!("{}{path}", env.base))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

const MS_TOKEN: &str = "/common/oauth2/v2.0/token";

async fn ms_redeem(env: &Env, code: &str, verifier: &str) -> (StatusCode, Value) {
    post_form(
        env,
        MS_TOKEN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn ms_refresh(env: &Env, refresh_token: &str) -> (StatusCode, Value) {
    post_form(
        env,
        MS_TOKEN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A Microsoft grant for Alice with Outlook mail scopes: the token response.
async fn ms_tokens(env: &Env) -> Value {
    let code = code_for(
        env,
        &ms_authorize_url(env, CLIENT, OUTLOOK, &[("nonce", "n-0S6")]),
    )
    .await;
    let (status, body) = ms_redeem(env, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn introspect(env: &Env, token: &str) -> Value {
    let (status, body) = post_form(env, "/introspect", &[("token", token)]).await;
    assert_eq!(status, StatusCode::OK);
    body
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v}"))
}

fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Asserts a Microsoft error body: `error`, AADSTS code, and the real body's other fields.
fn assert_aadsts(
    status: StatusCode,
    body: &Value,
    expected_status: StatusCode,
    error: &str,
    code: u32,
) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = str_of(body, "error_description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    assert!(description.contains("\r\nTimestamp: "), "{description}");
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[key].is_string(), "{key} missing in {body}");
    }
}

// ---------------------------------------------------------------- authorization code + PKCE

#[tokio::test]
async fn code_flow_issues_outlook_jwt_refresh_token_and_id_token() {
    let env = start().await;
    let body = ms_tokens(&env).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    assert!(str_of(&body, "refresh_token").len() > 40);
    assert!(!str_of(&body, "scope").contains("offline_access"));
    let access = jwt_claims(str_of(&body, "access_token"));
    assert_eq!(access["aud"], "https://outlook.office.com");
    assert_eq!(access["scp"], "IMAP.AccessAsUser.All SMTP.Send");
    assert_eq!(access["upn"], ALICE);
    assert!(access["oid"].is_string() && access["tid"].is_string() && access["exp"].is_i64());
}

#[tokio::test]
async fn wrong_pkce_verifier_is_refused_and_the_right_one_still_works() {
    let env = start().await;
    let code = code_for(&env, &ms_authorize_url(&env, CLIENT, OUTLOOK, &[])).await;
    let (status, body) = ms_redeem(
        &env,
        &code,
        "a-different-verifier-that-is-long-enough-1234567890",
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        501481,
    );
    let (status, body) = ms_redeem(&env, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn missing_code_verifier_is_refused() {
    let env = start().await;
    let code = code_for(&env, &google_authorize_url(&env, CLIENT, &[])).await;
    let (status, body) = post_form(
        &env,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Missing code verifier."})
    );
}

#[tokio::test]
async fn plain_or_missing_code_challenge_is_refused_at_authorize() {
    let env = start().await;
    for extra in [
        vec![("code_challenge_method", "plain")],
        vec![("code_challenge_method", "")],
        vec![("code_challenge", "")],
    ] {
        let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &extra);
        let response = env.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND, "{extra:?}");
        let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT));
        let q = query(&location);
        assert_eq!(q["error"], "invalid_request", "{extra:?}");
        assert!(
            q["error_description"].starts_with("AADSTS9002325: "),
            "{q:?}"
        );
        assert_eq!(q["state"], "st-1");
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn a_code_is_redeemed_once_then_aadsts54005() {
    let env = start().await;
    let code = code_for(&env, &ms_authorize_url(&env, CLIENT, OUTLOOK, &[])).await;
    assert_eq!(ms_redeem(&env, &code, VERIFIER).await.0, StatusCode::OK);
    let (status, body) = ms_redeem(&env, &code, VERIFIER).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        54005,
    );
    assert!(
        str_of(&body, "error_description")
            .contains("OAuth2 Authorization code was already redeemed")
    );
}

#[tokio::test]
async fn codes_expire_after_ten_minutes() {
    let env = start().await;
    let code = code_for(&env, &ms_authorize_url(&env, CLIENT, OUTLOOK, &[])).await;
    env.admin.advance_clock(601).await.unwrap();
    let (status, body) = ms_redeem(&env, &code, VERIFIER).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70008,
    );
}

#[tokio::test]
async fn redirect_uri_must_match_exactly_and_is_never_redirected_to() {
    let env = start().await;
    for (url, marker) in [
        (
            ms_authorize_url(
                &env,
                CLIENT,
                OUTLOOK,
                &[("redirect_uri", "http://127.0.0.1:9/oauth/callback/")],
            ),
            "AADSTS50011",
        ),
        (
            google_authorize_url(
                &env,
                CLIENT,
                &[("redirect_uri", "http://127.0.0.1:9/OAUTH/callback")],
            ),
            "redirect_uri_mismatch",
        ),
    ] {
        let response = env.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
        let page = response.text().await.unwrap();
        assert!(page.contains(marker), "{page}");
    }
    // At the token endpoint the redirect_uri must equal the authorize one, even if registered.
    env.admin
        .add_client(ClientSpec {
            redirect_uris: vec![REDIRECT.into(), "http://127.0.0.1:9/other".into()],
            ..ClientSpec::confidential(CLIENT, SECRET, REDIRECT)
        })
        .await
        .unwrap();
    let code = code_for(&env, &ms_authorize_url(&env, CLIENT, OUTLOOK, &[])).await;
    let (status, body) = post_form(
        &env,
        MS_TOKEN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        50011,
    );
}

#[tokio::test]
async fn unknown_client_and_unknown_tenant_show_error_pages() {
    let env = start().await;
    let page = env
        .http
        .get(ms_authorize_url(&env, "nobody", OUTLOOK, &[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("AADSTS700016"), "{page}");
    let url = authorize_url(
        &format!(
            "{}/0b9a1f3e-0000-4000-8000-000000000000/oauth2/v2.0/authorize",
            env.base
        ),
        CLIENT,
        OUTLOOK,
        &[],
    );
    let page = env
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("AADSTS90002"), "{page}");
    let (status, body) = post_form(
        &env,
        "/0b9a1f3e-0000-4000-8000-000000000000/oauth2/v2.0/token",
        &[("grant_type", "refresh_token"), ("client_id", CLIENT)],
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
    );
    // The default tenant and the users' domain are known tenants.
    let tid = env
        .admin
        .add_user(UserSpec::new("bob@example.test", "pw"))
        .await
        .unwrap()
        .tid;
    for tenant in [tid.as_str(), "example.test", "organizations", "consumers"] {
        let url = format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            env.base
        );
        assert_eq!(
            env.http.get(url).send().await.unwrap().status(),
            StatusCode::OK,
            "{tenant}"
        );
    }
}

#[tokio::test]
async fn state_is_echoed_verbatim() {
    let env = start().await;
    let state = "a b&c=d/é?+%20";
    let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &[("state", state)]);
    let redirect = sign_in(&env.http, &url, ALICE, PASSWORD).await.unwrap();
    assert_eq!(query(&redirect)["state"], state);
    assert_eq!(redirect.path(), "/oauth/callback");
}

#[tokio::test]
async fn sign_in_helper_works_with_a_redirect_following_client() {
    let env = start().await;
    let following = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &[]);
    // Port 9 (discard) has no listener: had the helper followed the redirect, this would fail.
    let redirect = sign_in(&following, &url, ALICE, PASSWORD).await.unwrap();
    assert!(query(&redirect).contains_key("code"));
}

#[tokio::test]
async fn login_hint_is_prefilled_and_select_account_lists_users() {
    let env = start().await;
    env.admin
        .add_user(UserSpec::new("bob@example.test", "pw"))
        .await
        .unwrap();
    let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &[("login_hint", ALICE)]);
    let page = env
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(r#"name="email" id="email" value="{ALICE}""#)),
        "{page}"
    );
    assert!(!page.contains("bob@example.test"));
    let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &[("prompt", "select_account")]);
    let page = env
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Pick an account"));
    assert!(
        page.contains(ALICE) && page.contains("bob@example.test"),
        "{page}"
    );
}

#[tokio::test]
async fn wrong_password_shows_aadsts50126_and_allows_another_try() {
    let env = start().await;
    let url = ms_authorize_url(&env, CLIENT, OUTLOOK, &[]);
    let err = sign_in(&env.http, &url, ALICE, "wrong").await.unwrap_err();
    assert!(format!("{err:#}").contains("AADSTS50126"), "{err:#}");
    // Drive the page by hand: the same request_id still accepts the right password.
    let page = env
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request_id = between(&page, r#"name="request_id" value=""#, "\"");
    let form = [
        ("request_id", request_id.as_str()),
        ("email", ALICE),
        ("password", "wrong"),
    ];
    let retry = post_form(&env, "/authorize/signin", &form).await.1;
    let retry = retry.as_str().unwrap();
    assert!(retry.contains("AADSTS50126") && retry.contains(&format!(r#"value="{ALICE}""#)));
    let form = [
        ("request_id", request_id.as_str()),
        ("email", ALICE),
        ("password", PASSWORD),
    ];
    let consent = post_form(&env, "/authorize/consent", &[]).await;
    assert_eq!(
        consent.0,
        StatusCode::BAD_REQUEST,
        "consent without a request is refused"
    );
    let consent = post_form(&env, "/authorize/signin", &form).await.1;
    assert!(consent.as_str().unwrap().contains("IMAP.AccessAsUser.All"));
}

fn between(s: &str, start: &str, end: &str) -> String {
    let from = s.find(start).unwrap() + start.len();
    let to = s[from..].find(end).unwrap();
    s[from..from + to].to_owned()
}

#[tokio::test]
async fn cancel_on_consent_redirects_with_access_denied() {
    let env = start().await;
    let page = env
        .http
        .get(ms_authorize_url(&env, CLIENT, OUTLOOK, &[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request_id = between(&page, r#"name="request_id" value=""#, "\"");
    post_form(
        &env,
        "/authorize/signin",
        &[
            ("request_id", &request_id),
            ("email", ALICE),
            ("password", PASSWORD),
        ],
    )
    .await;
    let response = env
        .http
        .post(format!("{}/authorize/consent", env.base))
        .form(&[("request_id", request_id.as_str()), ("decision", "cancel")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let q = query(&Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap());
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].starts_with("AADSTS65004"));
    assert_eq!(q["state"], "st-1");
}

#[tokio::test]
async fn prompt_none_answers_login_required() {
    let env = start().await;
    let response = env
        .http
        .get(google_authorize_url(&env, CLIENT, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let q = query(&Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap());
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("login_required", "st-1")
    );
}

// ---------------------------------------------------------------- client authentication

#[tokio::test]
async fn wrong_or_missing_client_secret_is_invalid_client() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    let refresh = str_of(&tokens, "refresh_token");
    let form = |secret: &'static str| {
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", secret),
            ("refresh_token", refresh),
        ]
    };
    let (status, body) = post_form(&env, MS_TOKEN, &form("secret-id-not-value")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
    );
    let (status, body) = post_form(&env, MS_TOKEN, &form("")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
    );
    let (status, body) = post_form(&env, "/token", &form("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "Unauthorized"})
    );
    // HTTP Basic works as well as the form.
    let response = env
        .http
        .post(format!("{}{MS_TOKEN}", env.base))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- refresh tokens

#[tokio::test]
async fn refresh_rotates_and_the_replaced_token_is_refused() {
    let env = start().await;
    let first = ms_tokens(&env).await;
    let mut current = str_of(&first, "refresh_token").to_owned();
    let mut seen = vec![current.clone()];
    for _ in 0..3 {
        let (status, body) = ms_refresh(&env, &current).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        current = str_of(&body, "refresh_token").to_owned();
        assert!(
            !seen.contains(&current),
            "every refresh returns a new refresh token"
        );
        seen.push(current.clone());
        assert!(body["id_token"].is_string());
    }
    let (status, body) = ms_refresh(&env, &seen[0]).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70000,
    );
    // The grant itself is fine: the newest token still works (no revoke-on-reuse by default).
    assert_eq!(ms_refresh(&env, &current).await.0, StatusCode::OK);
    let counters = env.admin.counters(Some(CLIENT)).await.unwrap();
    assert_eq!(counters.get("token:authorization_code"), Some(&1));
    assert_eq!(counters.get("token:refresh_token"), Some(&5));
    assert_eq!(counters.get("authorize"), Some(&1));
    assert_eq!(
        env.admin
            .counters(Some("other-client"))
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_replaced_refresh_token_is_accepted_within_the_grace() {
    let env = start().await;
    env.admin
        .set_lifetimes(LifetimeSpec {
            client_id: Some(CLIENT.into()),
            refresh_reuse_grace_secs: Some(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = ms_tokens(&env).await;
    let old = str_of(&first, "refresh_token");
    assert_eq!(ms_refresh(&env, old).await.0, StatusCode::OK);
    let (status, again) = ms_refresh(&env, old).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    env.admin.advance_clock(31).await.unwrap();
    let (status, body) = ms_refresh(&env, old).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70000,
    );
}

#[tokio::test]
async fn reusing_a_replaced_refresh_token_can_revoke_the_whole_grant() {
    let env = start().await;
    env.admin
        .set_lifetimes(LifetimeSpec {
            client_id: Some(CLIENT.into()),
            revoke_grant_on_refresh_reuse: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = ms_tokens(&env).await;
    let old = str_of(&first, "refresh_token");
    let (_, second) = ms_refresh(&env, old).await;
    let newest = str_of(&second, "refresh_token");
    let access = str_of(&second, "access_token");
    assert_eq!(introspect(&env, access).await["active"], true);
    assert_eq!(ms_refresh(&env, old).await.0, StatusCode::BAD_REQUEST);
    let (status, body) = ms_refresh(&env, newest).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        50173,
    );
    assert_eq!(introspect(&env, access).await, json!({"active": false}));
}

#[tokio::test]
async fn refresh_tokens_expire_and_lifetimes_apply() {
    let env = start().await;
    env.admin
        .set_lifetimes(LifetimeSpec {
            access_token_secs: Some(120),
            refresh_token_secs: Some(600),
            ..Default::default()
        })
        .await
        .unwrap();
    let tokens = ms_tokens(&env).await;
    assert_eq!(tokens["expires_in"], 120);
    env.admin.advance_clock(601).await.unwrap();
    let (status, body) = ms_refresh(&env, str_of(&tokens, "refresh_token")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        700082,
    );
}

#[tokio::test]
async fn microsoft_returns_a_refresh_token_only_with_offline_access() {
    let env = start().await;
    let scope = "https://outlook.office.com/IMAP.AccessAsUser.All openid";
    let code = code_for(&env, &ms_authorize_url(&env, CLIENT, scope, &[])).await;
    let (status, body) = ms_redeem(&env, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none(), "{body}");
}

// ---------------------------------------------------------------- Google specifics

async fn google_redeem(env: &Env, code: &str) -> Value {
    let (status, body) = post_form(
        env,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn google_refresh_token_only_on_first_consent_or_prompt_consent() {
    let env = start().await;
    let offline = [("access_type", "offline")];
    let first = google_redeem(
        &env,
        &code_for(&env, &google_authorize_url(&env, CLIENT, &offline)).await,
    )
    .await;
    assert!(first["refresh_token"].as_str().unwrap().starts_with("1//"));
    assert!(str_of(&first, "access_token").starts_with("ya29."));
    let second = google_redeem(
        &env,
        &code_for(&env, &google_authorize_url(&env, CLIENT, &offline)).await,
    )
    .await;
    assert!(
        second.get("refresh_token").is_none(),
        "no refresh token on a repeated consent: {second}"
    );
    let forced = [("access_type", "offline"), ("prompt", "consent")];
    let third = google_redeem(
        &env,
        &code_for(&env, &google_authorize_url(&env, CLIENT, &forced)).await,
    )
    .await;
    assert!(third["refresh_token"].is_string());
    // Without access_type=offline there is never a refresh token.
    let online = [("prompt", "consent")];
    let fourth = google_redeem(
        &env,
        &code_for(&env, &google_authorize_url(&env, CLIENT, &online)).await,
    )
    .await;
    assert!(fourth.get("refresh_token").is_none());
}

#[tokio::test]
async fn google_revoke_userinfo_and_refresh_without_rotation() {
    let env = start().await;
    env.admin
        .set_lifetimes(LifetimeSpec {
            rotate_refresh_tokens: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let forced = [("access_type", "offline"), ("prompt", "consent")];
    let tokens = google_redeem(
        &env,
        &code_for(&env, &google_authorize_url(&env, CLIENT, &forced)).await,
    )
    .await;
    let refresh = str_of(&tokens, "refresh_token");
    let access = str_of(&tokens, "access_token");
    let info: Value = env
        .http
        .get(format!("{}/v1/userinfo", env.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (info["email"].as_str(), info["email_verified"].as_bool()),
        (Some(ALICE), Some(true))
    );
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("refresh_token", refresh),
    ];
    let (status, refreshed) = post_form(&env, "/token", &form).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        refreshed.get("refresh_token").is_none(),
        "Google keeps the refresh token: {refreshed}"
    );
    assert_eq!(post_form(&env, "/token", &form).await.0, StatusCode::OK);
    assert_eq!(
        post_form(&env, "/revoke", &[("token", refresh)]).await.0,
        StatusCode::OK
    );
    let (status, body) = post_form(&env, "/token", &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    let response = env
        .http
        .get(format!("{}/v1/userinfo", env.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let counters = env.admin.counters(Some(CLIENT)).await.unwrap();
    assert_eq!((counters["userinfo"], counters["revoke"]), (2, 1));
}

// ---------------------------------------------------------------- device code

#[tokio::test]
async fn device_code_pending_slow_down_approved_then_token() {
    let env = start().await;
    env.admin
        .add_client(ClientSpec::public("cli", REDIRECT))
        .await
        .unwrap();
    env.admin
        .set_lifetimes(LifetimeSpec {
            client_id: Some("cli".into()),
            device_code_interval_secs: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, start) = post_form(
        &env,
        "/organizations/oauth2/v2.0/devicecode",
        &[("client_id", "cli"), ("scope", OUTLOOK)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    assert_eq!(start["interval"], 60);
    assert_eq!(start["expires_in"], 900);
    assert_eq!(
        str_of(&start, "verification_uri"),
        format!("{}/devicelogin", env.base)
    );
    let user_code = str_of(&start, "user_code");
    assert!(str_of(&start, "message").contains(user_code));
    let device_code = str_of(&start, "device_code");
    let poll = || device_poll(&env, "/organizations/oauth2/v2.0/token", device_code);
    let (status, body) = poll().await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "authorization_pending",
        70016,
    );
    let (status, body) = poll().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("slow_down"))
    );
    env.admin.advance_clock(60).await.unwrap();
    assert_eq!(poll().await.1["error"], "authorization_pending");

    let page = env
        .http
        .get(format!("{}/devicelogin", env.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"name="user_code""#));
    let verification_uri = str_of(&start, "verification_uri");
    let err = answer_device_code(
        &env.http,
        verification_uri,
        "WRONGCODE",
        ALICE,
        PASSWORD,
        DeviceConsent::Accept,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("didn't work"), "{err:#}");
    answer_device_code(
        &env.http,
        verification_uri,
        &user_code.to_lowercase(),
        ALICE,
        PASSWORD,
        DeviceConsent::Accept,
    )
    .await
    .unwrap();
    let (status, tokens) = poll().await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(jwt_claims(str_of(&tokens, "access_token"))["upn"], ALICE);
    assert_eq!(
        poll().await.1["error"],
        "invalid_grant",
        "a device code yields tokens once"
    );
    let counters = env.admin.counters(Some("cli")).await.unwrap();
    assert_eq!(counters["devicecode"], 1);
    assert_eq!(
        counters["token:urn:ietf:params:oauth:grant-type:device_code"],
        5
    );
}

async fn device_poll(env: &Env, path: &str, device_code: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", "cli"),
        ("device_code", device_code),
    ];
    post_form(env, path, &form).await
}

#[tokio::test]
async fn device_code_expires_and_can_be_declined() {
    let env = start().await;
    env.admin
        .add_client(ClientSpec::public("cli", REDIRECT))
        .await
        .unwrap();
    let begin = || {
        post_form(
            &env,
            "/common/oauth2/v2.0/devicecode",
            &[("client_id", "cli"), ("scope", OUTLOOK)],
        )
    };
    let declined = begin().await.1;
    let uri = str_of(&declined, "verification_uri");
    answer_device_code(
        &env.http,
        uri,
        str_of(&declined, "user_code"),
        ALICE,
        PASSWORD,
        DeviceConsent::Cancel,
    )
    .await
    .unwrap();
    let (status, body) = device_poll(&env, MS_TOKEN, str_of(&declined, "device_code")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "authorization_declined",
        65004,
    );

    let expiring = begin().await.1;
    env.admin.advance_clock(901).await.unwrap();
    let (status, body) = device_poll(&env, MS_TOKEN, str_of(&expiring, "device_code")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "expired_token",
        70019,
    );
    let err = answer_device_code(
        &env.http,
        uri,
        str_of(&expiring, "user_code"),
        ALICE,
        PASSWORD,
        DeviceConsent::Accept,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("expired"), "{err:#}");
}

#[tokio::test]
async fn google_device_flow_refuses_gmail_scope_and_works_for_identity_scopes() {
    let env = start().await;
    env.admin
        .add_client(ClientSpec::public("cli", REDIRECT))
        .await
        .unwrap();
    let (status, body) = post_form(
        &env,
        "/device/code",
        &[("client_id", "cli"), ("scope", GMAIL)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_scope", "error_description": "Invalid device flow scope: https://mail.google.com/"})
    );
    let (status, start) = post_form(
        &env,
        "/device/code",
        &[("client_id", "cli"), ("scope", "openid email")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let user_code = str_of(&start, "user_code");
    assert_eq!((user_code.len(), &user_code[4..5]), (9, "-"), "{user_code}");
    let (status, body) = device_poll(&env, "/token", str_of(&start, "device_code")).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(body["error"], "authorization_pending");
    answer_device_code(
        &env.http,
        str_of(&start, "verification_url"),
        user_code,
        ALICE,
        PASSWORD,
        DeviceConsent::Accept,
    )
    .await
    .unwrap();
    let (status, tokens) = device_poll(&env, "/token", str_of(&start, "device_code")).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(str_of(&tokens, "refresh_token").starts_with("1//"));
    assert!(tokens["id_token"].is_string());
}

// ---------------------------------------------------------------- app-only and service accounts

#[tokio::test]
async fn client_credentials_gives_an_app_only_outlook_token() {
    let env = start().await;
    env.admin
        .add_client(ClientSpec {
            app_only_mailboxes: vec!["Shared@Example.test".into()],
            ..ClientSpec::confidential("daemon", "d-secret", REDIRECT)
        })
        .await
        .unwrap();
    let form = |scope: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "daemon"),
            ("client_secret", "d-secret"),
            ("scope", scope),
        ]
    };
    let path = "/example.test/oauth2/v2.0/token";
    let (status, body) =
        post_form(&env, path, &form("https://outlook.office365.com/.default")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none());
    let claims = jwt_claims(str_of(&body, "access_token"));
    assert_eq!(claims["aud"], "https://outlook.office365.com");
    assert_eq!(claims["appid"], "daemon");
    assert!(
        claims["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("IMAP.AccessAsApp"))
    );
    let info = introspect(&env, str_of(&body, "access_token")).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["email"], "shared@example.test");

    let (status, body) = post_form(
        &env,
        path,
        &form("https://outlook.office365.com/IMAP.AccessAsApp"),
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        1002012,
    );
    let (status, body) = post_form(
        &env,
        MS_TOKEN,
        &form("https://outlook.office365.com/.default"),
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        50059,
    );
    env.admin
        .add_client(ClientSpec::public("cli", REDIRECT))
        .await
        .unwrap();
    let (status, body) = post_form(
        &env,
        path,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cli"),
            ("scope", "https://outlook.office365.com/.default"),
        ],
    )
    .await;
    assert_aadsts(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
    );
    let (status, body) = post_form(&env, path, &form("https://graph.microsoft.com/.default")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        introspect(&env, str_of(&body, "access_token")).await,
        json!({"active": false})
    );
}

fn sign_assertion(key_file: &Value, claims: &Value) -> String {
    let key = RsaPrivateKey::from_pkcs8_pem(str_of(key_file, "private_key")).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_file["private_key_id"]});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(key).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

async fn jwt_bearer(env: &Env, assertion: String) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ];
    post_form(env, "/token", &form).await
}

#[tokio::test]
async fn jwt_bearer_with_the_generated_service_account_key() {
    let env = start().await;
    let key_file = env
        .admin
        .add_service_account(ServiceAccountSpec::default())
        .await
        .unwrap();
    assert_eq!(key_file["type"], "service_account");
    assert_eq!(
        str_of(&key_file, "token_uri"),
        format!("{}/token", env.base)
    );
    assert!(str_of(&key_file, "private_key").starts_with("-----BEGIN PRIVATE KEY-----"));
    // The emulator's clock is the wall clock unless advanced; a minute of margin either way.
    let now = i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_secs()).unwrap();
    let claims = |sub: &str, aud: String, lifetime: i64| {
        json!({
            "iss": key_file["client_email"], "sub": sub, "aud": aud,
            "scope": "https://mail.google.com/", "iat": now, "exp": now + lifetime,
        })
    };
    let token_url = format!("{}/token", env.base);
    let grant = |assertion: String| jwt_bearer(&env, assertion);
    let (status, body) = grant(sign_assertion(
        &key_file,
        &claims(ALICE, token_url.clone(), 3600),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = str_of(&body, "access_token");
    assert!(access.starts_with("ya29."));
    let info = introspect(&env, access).await;
    assert_eq!(
        (info["active"].as_bool(), info["email"].as_str()),
        (Some(true), Some(ALICE))
    );

    let refused = [
        (
            claims(ALICE, "https://example.test/token".into(), 3600),
            "Failed audience check",
        ),
        (claims(ALICE, token_url.clone(), 7200), "short-lived"),
        (
            claims("nobody@example.test", token_url.clone(), 600),
            "Invalid email or User ID",
        ),
    ];
    for (claims, why) in refused {
        let (status, body) = grant(sign_assertion(&key_file, &claims)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant"))
        );
        assert!(str_of(&body, "error_description").contains(why), "{body}");
    }
    // Signed with another key: refused.
    let other = env
        .admin
        .add_service_account(ServiceAccountSpec::default())
        .await
        .unwrap();
    let mut forged = other.clone();
    forged["private_key_id"] = key_file["private_key_id"].clone();
    let (status, body) = grant(sign_assertion(&forged, &claims(ALICE, token_url, 600))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_description"], "Invalid JWT Signature.");
    let sa_client = str_of(&key_file, "client_id");
    let counters = env.admin.counters(Some(sa_client)).await.unwrap();
    assert_eq!(
        counters["token:urn:ietf:params:oauth:grant-type:jwt-bearer"],
        5
    );
}

// ---------------------------------------------------------------- introspection

#[tokio::test]
async fn introspection_is_active_only_for_live_mail_tokens() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    let access = str_of(&tokens, "access_token");
    let info = introspect(&env, access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["email"], ALICE);
    assert_eq!(info["username"], ALICE);
    assert_eq!(info["client_id"], CLIENT);
    assert!(str_of(&info, "scope").contains("IMAP.AccessAsUser.All"));
    assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());

    env.admin.expire_tokens(ALICE).await.unwrap();
    assert_eq!(introspect(&env, access).await, json!({"active": false}));
    // Expiry leaves the refresh token working.
    let (status, refreshed) = ms_refresh(&env, str_of(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = str_of(&refreshed, "access_token");
    assert_eq!(introspect(&env, fresh).await["active"], true);

    env.admin.revoke_user(&ALICE.to_uppercase()).await.unwrap();
    assert_eq!(introspect(&env, fresh).await, json!({"active": false}));
    let (status, body) = ms_refresh(&env, str_of(&refreshed, "refresh_token")).await;
    assert_aadsts(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        50173,
    );

    assert_eq!(
        introspect(&env, "not-a-token").await,
        json!({"active": false})
    );
    assert_eq!(env.admin.counters(None).await.unwrap()["introspect"], 5);
}

#[tokio::test]
async fn graph_tokens_and_natural_expiry_are_inactive() {
    let env = start().await;
    let code = code_for(
        &env,
        &ms_authorize_url(&env, CLIENT, "User.Read openid offline_access", &[]),
    )
    .await;
    let (status, body) = ms_redeem(&env, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let access = str_of(&body, "access_token");
    assert_eq!(jwt_claims(access)["aud"], "https://graph.microsoft.com");
    assert_eq!(introspect(&env, access).await, json!({"active": false}));

    let mail = ms_tokens(&env).await;
    let mail_access = str_of(&mail, "access_token");
    assert_eq!(introspect(&env, mail_access).await["active"], true);
    env.admin.advance_clock(3600).await.unwrap();
    assert_eq!(
        introspect(&env, mail_access).await,
        json!({"active": false})
    );
}

// ---------------------------------------------------------------- id_token and JWKS

fn verify_with_jwks(jwt: &str, jwks: &Value) -> Value {
    let mut parts = jwt.split('.');
    let (h, p, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    let n = BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(str_of(jwk, "n")).unwrap());
    let e = BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(str_of(jwk, "e")).unwrap());
    let key = RsaPublicKey::new(n, e).unwrap();
    let signature = Signature::try_from(URL_SAFE_NO_PAD.decode(s).unwrap().as_slice()).unwrap();
    VerifyingKey::<Sha256>::new(key)
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .expect("signature verifies against the JWKS");
    jwt_claims(jwt)
}

async fn get_json(env: &Env, url: &str) -> Value {
    env.http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn id_tokens_verify_against_the_published_keys() {
    let env = start().await;
    let alice = env
        .admin
        .add_user(UserSpec::new(ALICE, PASSWORD))
        .await
        .unwrap();
    let common = get_json(
        &env,
        &format!("{}/common/v2.0/.well-known/openid-configuration", env.base),
    )
    .await;
    assert_eq!(common["issuer"], format!("{}/{{tenantid}}/v2.0", env.base));
    let tenant = get_json(
        &env,
        &format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            env.base, alice.tid
        ),
    )
    .await;
    assert_eq!(tenant["issuer"], format!("{}/{}/v2.0", env.base, alice.tid));
    let jwks = get_json(&env, str_of(&common, "jwks_uri")).await;

    let tokens = ms_tokens(&env).await;
    let claims = verify_with_jwks(str_of(&tokens, "id_token"), &jwks);
    assert_eq!(claims["iss"], tenant["issuer"]);
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["nonce"], "n-0S6");
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(
        (
            claims["preferred_username"].as_str(),
            claims["email"].as_str()
        ),
        (Some(ALICE), Some(ALICE))
    );
    assert_eq!(
        (claims["oid"].as_str(), claims["tid"].as_str()),
        (Some(alice.oid.as_str()), Some(alice.tid.as_str()))
    );
    // Outlook access tokens are signed by the same key.
    verify_with_jwks(str_of(&tokens, "access_token"), &jwks);

    let google = get_json(
        &env,
        &format!("{}/.well-known/openid-configuration", env.base),
    )
    .await;
    assert_eq!(google["issuer"], env.base);
    let certs = get_json(&env, str_of(&google, "jwks_uri")).await;
    let code = code_for(
        &env,
        &google_authorize_url(&env, CLIENT, &[("nonce", "g-nonce")]),
    )
    .await;
    let tokens = google_redeem(&env, &code).await;
    let claims = verify_with_jwks(str_of(&tokens, "id_token"), &certs);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(env.base.as_str()), Some(CLIENT))
    );
    assert_eq!(
        (claims["sub"].as_str(), claims["email_verified"].as_bool()),
        (Some(alice.sub.as_str()), Some(true))
    );
    assert_eq!(claims["nonce"], "g-nonce");
}

// ---------------------------------------------------------------- faults

mod hang;

async fn fault_once(env: &Env, fault: Fault) {
    env.admin
        .inject_fault(FaultSpec::token(CLIENT, fault))
        .await
        .unwrap();
}

#[tokio::test]
async fn aadsts_faults_have_the_real_error_and_status() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    let refresh = str_of(&tokens, "refresh_token");
    let cases = [
        (
            7000222,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The provided client secret keys for app 'mail-app' are expired.",
        ),
        (
            7000215,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client secret provided.",
        ),
        (
            50173,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The provided grant has expired due to it being revoked",
        ),
        (
            700082,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The refresh token has expired due to inactivity.",
        ),
        (
            65001,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "has not consented to use the application",
        ),
        (
            50076,
            StatusCode::BAD_REQUEST,
            "interaction_required",
            "multi-factor authentication",
        ),
    ];
    for (code, status_expected, error, text) in cases {
        fault_once(&env, Fault::Aadsts { code }).await;
        let (status, body) = ms_refresh(&env, refresh).await;
        assert_aadsts(status, &body, status_expected, error, code);
        assert!(
            str_of(&body, "error_description").contains(text),
            "{code}: {body}"
        );
    }
    // Faults are consumed: the refresh token was never touched and works now.
    assert_eq!(ms_refresh(&env, refresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn google_shaped_http_status_and_malformed_faults() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    let refresh = str_of(&tokens, "refresh_token");

    fault_once(
        &env,
        Fault::OauthError {
            error: "invalid_grant".into(),
            description: Some("Token has been expired or revoked.".into()),
        },
    )
    .await;
    let (status, body) = ms_refresh(&env, refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );

    fault_once(
        &env,
        Fault::OauthError {
            error: "invalid_client".into(),
            description: None,
        },
    )
    .await;
    let (status, body) = ms_refresh(&env, refresh).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}))
    );

    for (code, error) in [
        (500, "server_error"),
        (503, "temporarily_unavailable"),
        (429, "temporarily_unavailable"),
    ] {
        fault_once(&env, Fault::HttpStatus { status: code }).await;
        let response = env
            .http
            .post(format!("{}{MS_TOKEN}", env.base))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("refresh_token", refresh),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            retry_after.as_deref(),
            if code == 500 { None } else { Some("1") },
            "{code}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error);
        assert_eq!(
            body["error_description"],
            format!("The identity provider answered HTTP {code} (fault injected by the emulator).")
        );
    }

    fault_once(&env, Fault::MalformedJson).await;
    let response = env
        .http
        .post(format!("{}{MS_TOKEN}", env.base))
        .form(&[("grant_type", "refresh_token"), ("client_id", CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    assert_eq!(text, MALFORMED_JSON_BODY);
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert_eq!(ms_refresh(&env, refresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn delay_fault_answers_normally_after_the_delay() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    fault_once(&env, Fault::Delay { seconds: 1.0 }).await;
    let started = Instant::now();
    let (status, body) = ms_refresh(&env, str_of(&tokens, "refresh_token")).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
}

async fn other_client_token(env: &Env, grant_type: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", grant_type),
        ("client_id", "other"),
        ("client_secret", "o"),
        ("refresh_token", "x"),
    ];
    post_form(env, MS_TOKEN, &form).await
}

#[tokio::test]
async fn faults_hit_only_their_client_grant_type_and_count() {
    let env = start().await;
    env.admin
        .add_client(ClientSpec::confidential("other", "o", REDIRECT))
        .await
        .unwrap();
    env.admin
        .inject_fault(FaultSpec {
            client_id: Some("other".into()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 2,
            fault: Fault::HttpStatus { status: 503 },
        })
        .await
        .unwrap();
    let tokens = ms_tokens(&env).await;
    let (status, body) = ms_refresh(&env, str_of(&tokens, "refresh_token")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another client's fault must not hit: {body}"
    );
    let other = |grant: &'static str| other_client_token(&env, grant);
    assert_eq!(
        other("authorization_code").await.0,
        StatusCode::BAD_REQUEST,
        "other grant types pass"
    );
    assert_eq!(
        other("refresh_token").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        other("refresh_token").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        other("refresh_token").await.0,
        StatusCode::BAD_REQUEST,
        "count is 2"
    );

    // Faults on other endpoints: introspection and authorize.
    env.admin
        .inject_fault(FaultSpec {
            client_id: Some(CLIENT.into()),
            endpoint: Endpoint::Introspect,
            grant_type: None,
            count: 1,
            fault: Fault::HttpStatus { status: 500 },
        })
        .await
        .unwrap();
    let access = str_of(&tokens, "access_token");
    assert_eq!(
        post_form(&env, "/introspect", &[("token", access)]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(introspect(&env, access).await["active"], true);
    env.admin
        .inject_fault(FaultSpec {
            client_id: Some(CLIENT.into()),
            endpoint: Endpoint::Authorize,
            grant_type: None,
            count: 1,
            fault: Fault::Aadsts { code: 65001 },
        })
        .await
        .unwrap();
    let response = env
        .http
        .get(ms_authorize_url(&env, CLIENT, OUTLOOK, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let q = query(&Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap());
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("invalid_grant", "st-1")
    );
    assert!(q["error_description"].starts_with("AADSTS65001: "));
}

// ---------------------------------------------------------------- admin API and binary

#[tokio::test]
async fn admin_api_takes_json_without_content_type_and_names_bad_fields() {
    let env = start().await;
    let url = format!("{}/admin/users", env.base);
    let response = env
        .http
        .post(&url)
        .body(r#"{"email":"carol@example.test","password":"pw","name":"Carol C"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["tid"], mailgate_testkit::idp::DEFAULT_TENANT_ID);
    assert!(user["oid"].as_str().unwrap().len() == 36 && user["sub"].as_str().unwrap().len() == 21);
    let response = env
        .http
        .post(&url)
        .body(r#"{"email":"x@example.test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        str_of(&body, "error").contains("missing field `password`"),
        "{body}"
    );
}

#[tokio::test]
async fn reset_forgets_everything() {
    let env = start().await;
    let tokens = ms_tokens(&env).await;
    env.admin.reset().await.unwrap();
    assert!(env.admin.counters(None).await.unwrap().is_empty());
    assert_eq!(
        introspect(&env, str_of(&tokens, "access_token")).await,
        json!({"active": false})
    );
    let page = env
        .http
        .get(ms_authorize_url(&env, CLIENT, OUTLOOK, &[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("AADSTS700016"), "the client is gone");
    let err = env.admin.revoke_user(ALICE).await.unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
}

/// The emulator has its own thread: a test that blocks its runtime (as one waiting for a
/// `mailgate` child process does) still gets answers.
#[tokio::test]
async fn a_blocked_test_runtime_does_not_starve_the_emulator() {
    use std::io::{Read, Write};
    let env = start().await;
    let addr = env.base.trim_start_matches("http://").to_owned();
    // Blocking I/O on the test's only runtime thread, on purpose.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!(r#""issuer":"{}""#, env.base)),
        "{answer}"
    );
}

#[test]
fn start_and_drop_work_outside_any_runtime() {
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let addr = idp.base_url().trim_start_matches("http://").to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(idp);
    // `drop` returns once the server has stopped: the port is closed now.
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening after drop"
    );
}

#[tokio::test]
async fn the_binary_prints_its_base_url_serves_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("mailgate-idp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("idp.json");
    let spec = json!({"clients": [{"client_id": "cfg-app", "redirect_uris": [REDIRECT]}], "users": [{"email": ALICE, "password": PASSWORD}]});
    std::fs::write(&config, spec.to_string()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailgate-idp"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = serde_json::from_str::<Value>(&line).unwrap()["base_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with('/'),
        "{base}"
    );
    let admin = IdpAdmin::new(&base);
    let user = admin
        .add_user(UserSpec::new(ALICE, "new password"))
        .await
        .unwrap();
    assert_eq!(
        user.email, ALICE,
        "the configured user exists and is updated"
    );
    let url = authorize_url(
        &format!("{base}/common/oauth2/v2.0/authorize"),
        "cfg-app",
        OUTLOOK,
        &[],
    );
    let redirect = sign_in(&reqwest::Client::new(), &url, ALICE, "new password")
        .await
        .unwrap();
    assert!(query(&redirect).contains_key("code"));

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
