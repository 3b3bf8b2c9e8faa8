//! The interactive part: authorize requests, the sign-in and consent pages, and the device
//! login page. Plain HTML forms, no JavaScript and no cookies: the pending request travels in
//! a hidden `request_id` field, so a test can drive the pages with any HTTP client.
//!
//! Form contract (relied on by `sign_in` and by browser tests):
//! - sign-in: `POST /authorize/signin` with `request_id`, `email` (`id="email"`),
//!   `password` (`id="password"`), button `id="signin"`;
//! - consent: `POST /authorize/consent` with `request_id`, `decision=accept|cancel`
//!   (buttons `id="accept"`, `id="cancel"`);
//! - device code entry: `POST /devicelogin` with `user_code` (`id="user_code"`).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use mailgate_core::html::escape;
use url::Url;

use super::crypto::{random_guid, random_token};
use super::errors::{
    Flavor, aadsts_text, ms_description, ms_error_for_code, run_fault, tenant_not_found_text,
};
use super::scopes;
use super::spec::{Endpoint, Fault};
use super::state::{
    AppState, AuthCode, DeviceStatus, Inner, PendingKind, PendingRequest, Shared, Tenant,
};
use super::token::GOOGLE_TENANT;

pub(crate) const SIGNIN_PATH: &str = "/authorize/signin";
pub(crate) const CONSENT_PATH: &str = "/authorize/consent";
pub(crate) const DEVICE_LOGIN_PATH: &str = "/devicelogin";

type Params = HashMap<String, String>;

pub(crate) async fn ms_authorize(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    authorize(&app, Flavor::Microsoft, &tenant, &params).await
}

pub(crate) async fn google_authorize(
    State(app): State<AppState>,
    Query(params): Query<Params>,
) -> Response {
    authorize(&app, Flavor::Google, GOOGLE_TENANT, &params).await
}

/// An error that is reported to the client by redirecting back to it (RFC 6749 §4.1.2.1),
/// only ever after the redirect URI was found registered.
struct RedirectError {
    error: String,
    /// Microsoft: an AADSTS code and its text; Google: a plain description.
    aadsts: Option<u32>,
    description: Option<String>,
}

impl RedirectError {
    fn new(error: &str, aadsts: Option<u32>, description: &str) -> Self {
        Self {
            error: error.to_owned(),
            aadsts,
            description: Some(description.to_owned()),
        }
    }
}

async fn authorize(app: &Shared, flavor: Flavor, tenant: &str, params: &Params) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str);
    let client_id = param("client_id").unwrap_or_default();
    let redirect_uri = {
        let mut inner = app.lock();
        inner.prune();
        inner.count(client_id, "authorize");
        match check_client_and_redirect(
            app,
            &inner,
            flavor,
            tenant,
            client_id,
            param("redirect_uri"),
        ) {
            Ok(uri) => uri,
            Err(page) => return *page,
        }
    };
    let state = param("state");
    let fault = app
        .lock()
        .take_fault(Endpoint::Authorize, Some(client_id), None);
    // Error faults are reported the way authorize reports errors: by redirect.
    match fault {
        Some(Fault::Aadsts { code }) => {
            let e = RedirectError::new(
                ms_error_for_code(code),
                Some(code),
                &aadsts_text(code, client_id),
            );
            return redirect_error(app, &redirect_uri, state, &e);
        }
        Some(Fault::OauthError { error, description }) => {
            let e = RedirectError {
                error,
                aadsts: None,
                description,
            };
            return redirect_error(app, &redirect_uri, state, &e);
        }
        other => {
            if let Some(response) = run_fault(app, other, client_id).await {
                return response;
            }
        }
    }
    match validate_authorize(flavor, params) {
        Err(e) => redirect_error(app, &redirect_uri, state, &e),
        Ok(code_challenge) => {
            let scopes = scopes::split(param("scope").unwrap_or_default());
            let prompt = param("prompt").unwrap_or_default();
            let pending = PendingRequest {
                kind: PendingKind::Authorize {
                    redirect_uri,
                    state: state.map(str::to_owned),
                    code_challenge,
                    nonce: param("nonce").map(str::to_owned),
                    prompt_consent: prompt.split_whitespace().any(|p| p == "consent"),
                    offline: param("access_type") == Some("offline"),
                },
                flavor,
                client_id: client_id.to_owned(),
                tenant: tenant.to_owned(),
                scopes,
                login_hint: param("login_hint").map(str::to_owned),
                select_account: prompt.split_whitespace().any(|p| p == "select_account"),
                signed_in: None,
                created_at: app.lock().now(),
            };
            start_sign_in(app, pending)
        }
    }
}

/// Tenant, client and exact redirect URI: failures here are shown as a page (boxed: a
/// `Response` is large), never redirected (RFC 9700: never send a user to an unregistered URI).
fn check_client_and_redirect(
    app: &Shared,
    inner: &Inner,
    flavor: Flavor,
    tenant: &str,
    client_id: &str,
    redirect_uri: Option<&str>,
) -> Result<String, Box<Response>> {
    if flavor == Flavor::Microsoft && inner.resolve_tenant(tenant, &app.default_tenant).is_none() {
        let page = ms_error_page(app, inner, 90002, &tenant_not_found_text(tenant));
        return Err(Box::new(page));
    }
    let Some(client) = inner.clients.get(client_id) else {
        return Err(Box::new(match flavor {
            Flavor::Microsoft => ms_error_page(
                app,
                inner,
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            ),
            Flavor::Google => google_error_page(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The OAuth client was not found.",
            ),
        }));
    };
    let Some(redirect_uri) = redirect_uri else {
        return Err(Box::new(match flavor {
            Flavor::Microsoft => ms_error_page(
                app,
                inner,
                900144,
                "The request body must contain the following parameter: 'redirect_uri'.",
            ),
            Flavor::Google => google_error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: redirect_uri",
            ),
        }));
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) || Url::parse(redirect_uri).is_err()
    {
        return Err(Box::new(match flavor {
            Flavor::Microsoft => ms_error_page(
                app,
                inner,
                50011,
                &format!(
                    "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."
                ),
            ),
            Flavor::Google => google_error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri_mismatch",
                &format!(
                    "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy. If you're the app developer, register the redirect URI in the Google Cloud Console. Request details: redirect_uri={redirect_uri}"
                ),
            ),
        }));
    }
    Ok(redirect_uri.to_owned())
}

/// The remaining authorize checks; returns the PKCE challenge.
fn validate_authorize(flavor: Flavor, params: &Params) -> Result<String, RedirectError> {
    let param = |name: &str| params.get(name).map(String::as_str);
    let ms = flavor == Flavor::Microsoft;
    let code = |c: u32| ms.then_some(c);
    if param("response_type") != Some("code") {
        return Err(RedirectError::new(
            "unsupported_response_type",
            code(70005),
            "The application requested an unsupported response type; only 'code' is supported.",
        ));
    }
    if param("scope").is_none_or(|s| s.trim().is_empty()) {
        return Err(RedirectError::new(
            "invalid_request",
            code(900144),
            "The request body must contain the following parameter: 'scope'.",
        ));
    }
    let Some(challenge) = param("code_challenge") else {
        return Err(RedirectError::new(
            "invalid_request",
            code(9002325),
            "Proof Key for Code Exchange is required for cross-origin authorization code redemption.",
        ));
    };
    // RFC 7636: a missing method means `plain`, which RFC 9700 says not to use.
    if param("code_challenge_method") != Some("S256") {
        return Err(RedirectError::new(
            "invalid_request",
            code(9002325),
            "Proof Key for Code Exchange must use code_challenge_method=S256; 'plain' is not accepted.",
        ));
    }
    let well_formed = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(RedirectError::new(
            "invalid_request",
            code(501491),
            "Invalid size of Code_Challenge parameter: an S256 challenge is 43 base64url characters.",
        ));
    }
    // The emulator keeps no sign-in session, so a silent request can never succeed.
    if param("prompt").is_some_and(|p| p.split_whitespace().any(|p| p == "none")) {
        return Err(RedirectError::new(
            "login_required",
            code(50058),
            "A silent sign-in request was sent but no user is signed in.",
        ));
    }
    Ok(challenge.to_owned())
}

fn redirect_error(
    app: &Shared,
    redirect_uri: &str,
    state: Option<&str>,
    e: &RedirectError,
) -> Response {
    let mut pairs: Vec<(&str, String)> = vec![("error", e.error.clone())];
    if let Some(code) = e.aadsts {
        let now = app.lock().now();
        let text = e.description.clone().unwrap_or_default();
        pairs.push((
            "error_description",
            ms_description(code, &text, &random_guid(), &random_guid(), now),
        ));
        pairs.push(("error_uri", format!("{}/error?code={code}", app.base_url)));
    } else if let Some(description) = &e.description {
        pairs.push(("error_description", description.clone()));
    }
    if let Some(state) = state {
        pairs.push(("state", state.to_owned()));
    }
    redirect_to(redirect_uri, &pairs)
}

/// 302 to `base` with `pairs` appended to its query (the state is echoed verbatim).
fn redirect_to(base: &str, pairs: &[(&str, String)]) -> Response {
    let Ok(mut url) = Url::parse(base) else {
        return (StatusCode::BAD_REQUEST, "unusable redirect URI").into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn start_sign_in(app: &Shared, pending: PendingRequest) -> Response {
    let request_id = random_token(24);
    let mut inner = app.lock();
    let page = sign_in_page(
        &inner,
        &request_id,
        &pending,
        pending.login_hint.as_deref(),
        None,
    );
    inner.pending.insert(request_id, pending);
    page
}

/// `GET /authorize/signin?request_id=…&login_hint=…`: the account picker's links.
pub(crate) async fn sign_in_get(
    State(app): State<AppState>,
    Query(params): Query<Params>,
) -> Response {
    let inner = app.lock();
    let request_id = params
        .get("request_id")
        .map(String::as_str)
        .unwrap_or_default();
    let Some(pending) = inner.pending.get(request_id) else {
        return unknown_request_page();
    };
    let hint = params.get("login_hint").or(pending.login_hint.as_ref());
    sign_in_page(&inner, request_id, pending, hint.map(String::as_str), None)
}

pub(crate) async fn sign_in_post(
    State(app): State<AppState>,
    Form(form): Form<Params>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let (request_id, email, password) = (
        field("request_id"),
        field("email").trim(),
        field("password"),
    );
    let mut inner = app.lock();
    let Some(pending) = inner.pending.get(request_id).cloned() else {
        return unknown_request_page();
    };
    let ms = pending.flavor == Flavor::Microsoft;
    let refuse = |inner: &Inner, message: String| {
        sign_in_page(inner, request_id, &pending, Some(email), Some(&message))
    };
    let Some(user) = inner.user(email).cloned() else {
        let message = if ms {
            format!(
                "We couldn't find an account with that username. (AADSTS50034: The user account {email} does not exist in the directory.)"
            )
        } else {
            "Couldn't find your Google Account.".to_owned()
        };
        return refuse(&inner, message);
    };
    if user.password != password {
        let message = if ms {
            format!(
                "Your account or password is incorrect. (AADSTS50126: {})",
                aadsts_text(50126, "")
            )
        } else {
            "Wrong password. Try again or click Forgot password to reset it.".to_owned()
        };
        return refuse(&inner, message);
    }
    if ms
        && let Some(Tenant::Id(tid)) = inner.resolve_tenant(&pending.tenant, &app.default_tenant)
        && tid != user.tid
    {
        let message = format!(
            "AADSTS50020: User account '{}' from another tenant does not exist in tenant '{tid}' and cannot access the application '{}' in that tenant. Sign in with an account of this tenant, or use the 'common' endpoint.",
            user.email, pending.client_id
        );
        return refuse(&inner, message);
    }
    let key = user.email.to_lowercase();
    if let Some(p) = inner.pending.get_mut(request_id) {
        p.signed_in = Some(key);
    }
    consent_page(request_id, &pending, &user.email)
}

pub(crate) async fn consent_post(
    State(app): State<AppState>,
    Form(form): Form<Params>,
) -> Response {
    let request_id = form
        .get("request_id")
        .map(String::as_str)
        .unwrap_or_default();
    let accept = form.get("decision").map(String::as_str) == Some("accept");
    let mut inner = app.lock();
    // One decision per request: a replayed form finds nothing.
    let Some(pending) = inner.pending.remove(request_id) else {
        return unknown_request_page();
    };
    let Some(user) = pending.signed_in.clone() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in first",
            "<p>Sign in before answering the consent request.</p>",
        );
    };
    let now = inner.now();
    match &pending.kind {
        PendingKind::Authorize {
            redirect_uri,
            state,
            code_challenge,
            nonce,
            prompt_consent,
            offline,
        } => {
            if !accept {
                let e = match pending.flavor {
                    Flavor::Microsoft => {
                        RedirectError::new("access_denied", Some(65004), &aadsts_text(65004, ""))
                    }
                    Flavor::Google => RedirectError {
                        error: "access_denied".into(),
                        aadsts: None,
                        description: None,
                    },
                };
                drop(inner);
                return redirect_error(&app, redirect_uri, state.as_deref(), &e);
            }
            let first_consent = inner
                .consents
                .insert((pending.client_id.clone(), user.clone()));
            let issue_refresh_token = match pending.flavor {
                Flavor::Microsoft => pending.scopes.iter().any(|s| s == "offline_access"),
                // Google: only offline access, and only on the first consent or a forced one.
                Flavor::Google => *offline && (first_consent || *prompt_consent),
            };
            let code = match pending.flavor {
                Flavor::Microsoft => format!("1.A{}", random_token(96)),
                Flavor::Google => format!("4/0A{}", random_token(60)),
            };
            inner.codes.insert(
                code.clone(),
                AuthCode {
                    flavor: pending.flavor,
                    client_id: pending.client_id.clone(),
                    redirect_uri: redirect_uri.clone(),
                    code_challenge: code_challenge.clone(),
                    user,
                    scopes: pending.scopes.clone(),
                    nonce: nonce.clone(),
                    issue_refresh_token,
                    created_at: now,
                    redeemed: false,
                },
            );
            let mut pairs = vec![("code", code)];
            if let Some(state) = state {
                pairs.push(("state", state.clone()));
            }
            redirect_to(redirect_uri, &pairs)
        }
        PendingKind::Device { device_code } => {
            let Some(request) = inner
                .device_requests
                .get_mut(device_code)
                .filter(|r| r.status == DeviceStatus::Pending && now < r.expires_at)
            else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Code expired",
                    "<p>The code expired. Get a new code from the device and try again.</p>",
                );
            };
            if accept {
                request.status = DeviceStatus::Approved { user };
                page(
                    StatusCode::OK,
                    "You're signed in",
                    &format!(
                        "<p>You have signed in to the {} application on your device. You may now close this window.</p>",
                        escape(&pending.client_id)
                    ),
                )
            } else {
                request.status = DeviceStatus::Declined;
                page(
                    StatusCode::OK,
                    "Sign-in declined",
                    "<p>You declined to sign in to the application on your device. You may now close this window.</p>",
                )
            }
        }
    }
}

pub(crate) async fn device_login_get() -> Response {
    device_code_entry_page(None)
}

pub(crate) async fn device_login_post(
    State(app): State<AppState>,
    Form(form): Form<Params>,
) -> Response {
    let typed: String = form
        .get("user_code")
        .map(String::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let found = {
        let inner = app.lock();
        let now = inner.now();
        inner
            .device_requests
            .iter()
            .find(|(_, r)| r.user_code.replace('-', "") == typed)
            .map(|(code, r)| (code.clone(), r.clone(), now))
    };
    let Some((device_code, request, now)) = found else {
        return device_code_entry_page(Some(
            "That code didn't work. Check the code and try again.",
        ));
    };
    if now >= request.expires_at || request.status != DeviceStatus::Pending {
        return device_code_entry_page(Some(
            "The code you entered has expired. Get a new code from the device you're trying to sign in to and try again.",
        ));
    }
    let pending = PendingRequest {
        kind: PendingKind::Device { device_code },
        flavor: request.flavor,
        client_id: request.client_id,
        tenant: request.tenant,
        scopes: request.scopes,
        login_hint: None,
        select_account: false,
        signed_in: None,
        created_at: now,
    };
    start_sign_in(&app, pending)
}

/// The error shown above a form (the providers' `role="alert"` paragraph), if any.
fn error_paragraph(error: Option<&str>) -> String {
    error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="error">{}</p>"#,
                escape(e)
            )
        })
        .unwrap_or_default()
}

fn device_code_entry_page(error: Option<&str>) -> Response {
    let error = error_paragraph(error);
    page(
        StatusCode::OK,
        "Enter code",
        &format!(
            r#"<p>Enter the code displayed on your app or device.</p>{error}
<form method="post" action="{DEVICE_LOGIN_PATH}">
<label for="user_code">Code</label>
<input type="text" name="user_code" id="user_code" autocomplete="off" autofocus>
<button type="submit" id="next">Next</button>
</form>"#
        ),
    )
}

fn sign_in_page(
    inner: &Inner,
    request_id: &str,
    pending: &PendingRequest,
    email: Option<&str>,
    error: Option<&str>,
) -> Response {
    let brand = match pending.flavor {
        Flavor::Microsoft => "Microsoft",
        Flavor::Google => "Google",
    };
    let error = error_paragraph(error);
    let accounts = if pending.select_account {
        let mut users: Vec<_> = inner.users.values().collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        let items: String = users
            .iter()
            .map(|u| {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("request_id", request_id)
                    .append_pair("login_hint", &u.email)
                    .finish();
                let link = format!("{SIGNIN_PATH}?{query}");
                format!(
                    r#"<li><a class="account" href="{}">{} &lt;{}&gt;</a></li>"#,
                    escape(&link),
                    escape(&u.name),
                    escape(&u.email)
                )
            })
            .collect();
        format!(
            r#"<h2>Pick an account</h2><ul id="accounts">{items}</ul><h2>Or sign in with another account</h2>"#
        )
    } else {
        String::new()
    };
    page(
        StatusCode::OK,
        &format!("Sign in to your {brand} account"),
        &format!(
            r#"<p>to continue to <b>{client}</b></p>{accounts}{error}
<form method="post" action="{SIGNIN_PATH}">
<input type="hidden" name="request_id" value="{request_id}">
<label for="email">Email</label>
<input type="email" name="email" id="email" value="{email}" autocomplete="username">
<label for="password">Password</label>
<input type="password" name="password" id="password" autocomplete="current-password">
<button type="submit" id="signin">Sign in</button>
</form>"#,
            client = escape(&pending.client_id),
            request_id = escape(request_id),
            email = escape(email.unwrap_or_default()),
        ),
    )
}

fn consent_page(request_id: &str, pending: &PendingRequest, email: &str) -> Response {
    let items: String = pending
        .scopes
        .iter()
        .map(|s| {
            format!(
                "<li><code>{}</code> — {}</li>",
                escape(s),
                escape(scope_description(s))
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Permissions requested",
        &format!(
            r#"<p>Signed in as <b id="signed-in-as">{email}</b></p>
<p><b>{client}</b> would like to:</p>
<ul id="scopes">{items}</ul>
<form method="post" action="{CONSENT_PATH}">
<input type="hidden" name="request_id" value="{request_id}">
<button type="submit" name="decision" value="accept" id="accept">Accept</button>
<button type="submit" name="decision" value="cancel" id="cancel">Cancel</button>
</form>"#,
            email = escape(email),
            client = escape(&pending.client_id),
            request_id = escape(request_id),
        ),
    )
}

fn scope_description(scope: &str) -> &'static str {
    let short = scope.rsplit('/').next().unwrap_or(scope);
    match short {
        "IMAP.AccessAsUser.All" => "Read and write access to your mailbox via IMAP",
        "POP.AccessAsUser.All" => "Read and write access to your mailbox via POP",
        "SMTP.Send" => "Send email from your mailbox via SMTP",
        "offline_access" => "Maintain access to data you have given it access to",
        "openid" => "Sign you in",
        "email" => "View your email address",
        "profile" => "View your basic profile",
        "" if scope == scopes::GOOGLE_MAIL_SCOPE => {
            "Read, compose, send, and permanently delete all your email from Gmail"
        }
        _ => "Access your data",
    }
}

fn unknown_request_page() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in request not found",
        "<p>This sign-in request has expired or was already answered. Start again from the application.</p>",
    )
}

fn ms_error_page(app: &Shared, inner: &Inner, code: u32, text: &str) -> Response {
    let description = ms_description(code, text, &random_guid(), &random_guid(), inner.now());
    page(
        StatusCode::BAD_REQUEST,
        "Sorry, but we're having trouble signing you in.",
        &format!(
            r#"<p class="error" id="error">{}</p><p><a href="{}/error?code={code}">More information</a></p>"#,
            escape(&description).replace("\r\n", "<br>"),
            escape(&app.base_url)
        ),
    )
}

fn google_error_page(status: StatusCode, error: &str, detail: &str) -> Response {
    page(
        status,
        "Access blocked: Authorization Error",
        &format!(
            r#"<p class="error" id="error">Error {}: {}</p><p>{}</p>"#,
            status.as_u16(),
            escape(error),
            escape(detail)
        ),
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}label,input,button{{display:block;margin:.4em 0}}
input{{width:100%;padding:.4em}}.error{{color:#a00}}</style></head>
<body><h1>{title}</h1>
{body}
</body></html>"#,
        title = escape(title)
    );
    (status, Html(html)).into_response()
}
