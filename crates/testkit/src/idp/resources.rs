//! Non-interactive endpoints besides the token endpoint: discovery documents, signing keys,
//! userinfo, revocation, and RFC 7662 introspection for the mail servers.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::errors::{Failure, Flavor, aadsts_text, google_error_response, run_fault};
use super::spec::Endpoint;
use super::state::{AccessToken, AppState, Inner, Shared, Tenant};
use super::token::parse_form;

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`. For the multi-tenant names the
/// issuer holds the literal `{tenantid}` placeholder, as Microsoft's own document does.
pub(crate) async fn ms_openid_configuration(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
) -> Response {
    let (resolved, now) = {
        let inner = app.lock();
        (
            inner.resolve_tenant(&tenant, &app.default_tenant),
            inner.now(),
        )
    };
    let Some(resolved) = resolved else {
        return Failure::TenantNotFound(tenant).render(Flavor::Microsoft, now, &app.base_url);
    };
    let base = &app.base_url;
    let issuer_tenant = match resolved {
        Tenant::Multi => "{tenantid}".to_owned(),
        Tenant::Id(tid) => tid,
    };
    Json(json!({
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "userinfo_endpoint": format!("{base}/v1/userinfo"),
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        // Not in Microsoft's document: the mail servers' introspection endpoint.
        "introspection_endpoint": format!("{base}/introspect"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
            "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email", "oid"],
        "request_uri_parameter_supported": false,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_response()
}

/// `GET /.well-known/openid-configuration` (Google: the issuer is the base URL).
pub(crate) async fn google_openid_configuration(State(app): State<AppState>) -> Response {
    let base = &app.base_url;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
        "device_authorization_endpoint": format!("{base}/device/code"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/v1/userinfo"),
        "revocation_endpoint": format!("{base}/revoke"),
        "jwks_uri": format!("{base}/oauth2/v3/certs"),
        // Not in Google's document: the mail servers' introspection endpoint.
        "introspection_endpoint": format!("{base}/introspect"),
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token", "none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "picture", "sub"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
    }))
    .into_response()
}

fn jwks(app: &Shared) -> Response {
    Json(json!({ "keys": [app.signing_key.jwk()] })).into_response()
}

pub(crate) async fn ms_keys(State(app): State<AppState>, Path(tenant): Path<String>) -> Response {
    let (known, now) = {
        let inner = app.lock();
        (
            inner.resolve_tenant(&tenant, &app.default_tenant).is_some(),
            inner.now(),
        )
    };
    if !known {
        return Failure::TenantNotFound(tenant).render(Flavor::Microsoft, now, &app.base_url);
    }
    jwks(&app)
}

pub(crate) async fn google_certs(State(app): State<AppState>) -> Response {
    jwks(&app)
}

/// The client a presented token belongs to (for counters and fault scoping).
fn token_client(inner: &Inner, token: &str) -> String {
    inner
        .access_tokens
        .get(token)
        .map(|t| t.client_id.clone())
        .or_else(|| inner.refresh_tokens.get(token).map(|t| t.client_id.clone()))
        .unwrap_or_default()
}

/// Counts the call and takes a fault for the client the token belongs to.
async fn enter(app: &Shared, endpoint: Endpoint, key: &str, token: &str) -> Option<Response> {
    let (client_id, fault) = {
        let mut inner = app.lock();
        let client_id = token_client(&inner, token);
        inner.count(&client_id, key);
        let fault = inner.take_fault(endpoint, Some(&client_id), None);
        (client_id, fault)
    };
    run_fault(app, fault, &client_id).await
}

/// `POST /introspect` (RFC 7662), as Dovecot's `introspection_mode = post` sends it.
///
/// Active only for a live token that opens mail: a Microsoft token for the Outlook audience
/// with an IMAP/POP/SMTP scope, a Microsoft app-only token for Outlook, or a Google token
/// with `https://mail.google.com/`. Graph tokens are inactive, as Exchange refuses them.
/// `email`/`username` are lower-cased (Dovecot lower-cases logins before comparing); for
/// app-only tokens they are the client's first `app_only_mailboxes` entry, or absent.
pub(crate) async fn introspect(State(app): State<AppState>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let token = form.get("token").cloned().unwrap_or_default();
    if let Some(response) = enter(&app, Endpoint::Introspect, "introspect", &token).await {
        return response;
    }
    let inner = app.lock();
    let Some(record) = inner.live_access_token(&token).filter(|t| t.mail) else {
        return Json(json!({ "active": false })).into_response();
    };
    let mut body = Map::new();
    body.insert("active".into(), true.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("client_id".into(), record.client_id.clone().into());
    body.insert("scope".into(), record.scope.clone().into());
    body.insert("aud".into(), record.audience.clone().into());
    body.insert("iat".into(), record.issued_at.unix_timestamp().into());
    body.insert("exp".into(), record.expires_at.unix_timestamp().into());
    if let Some(mailbox) = mailbox_of(&inner, record) {
        // The rig's second passdb compares this with the login name, so a delegate opens a
        // shared mailbox only with FullAccess. Without one it repeats the token's own
        // mailbox: a missing attribute would be a temporary failure in Dovecot, not a refusal.
        let full_access = record
            .user
            .as_ref()
            .and_then(|u| inner.users.get(u))
            .and_then(|u| u.full_access.first().cloned())
            .unwrap_or_else(|| mailbox.clone());
        body.insert("full_access_mailbox".into(), full_access.into());
        body.insert("email".into(), mailbox.clone().into());
        body.insert("username".into(), mailbox.into());
    }
    if let Some(user) = record.user.as_ref().and_then(|u| inner.users.get(u)) {
        body.insert("sub".into(), user.sub.clone().into());
    }
    Json(Value::Object(body)).into_response()
}

fn mailbox_of(inner: &Inner, record: &AccessToken) -> Option<String> {
    match &record.user {
        Some(user) => Some(user.clone()),
        None => inner
            .clients
            .get(&record.client_id)
            .and_then(|c| c.app_only_mailboxes.first())
            .map(|m| m.to_lowercase()),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// `GET /v1/userinfo` with `Authorization: Bearer` (OpenID Connect userinfo).
pub(crate) async fn userinfo(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let token = bearer(&headers).unwrap_or_default().to_owned();
    if let Some(response) = enter(&app, Endpoint::Userinfo, "userinfo", &token).await {
        return response;
    }
    let inner = app.lock();
    let user = inner
        .live_access_token(&token)
        .and_then(|t| t.user.as_ref())
        .and_then(|u| inner.users.get(u));
    let Some(user) = user else {
        let mut response = google_error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            Some("Invalid Credentials"),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        return response;
    };
    let (given, family) = user.name.split_once(' ').unwrap_or((&user.name, ""));
    Json(json!({
        "sub": user.sub,
        "name": user.name,
        "given_name": given,
        "family_name": family,
        "email": user.email,
        "email_verified": true,
    }))
    .into_response()
}

/// `POST /revoke` (Google): revoking either token of a grant ends the whole grant.
pub(crate) async fn revoke(
    State(app): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let token = form
        .get("token")
        .or_else(|| query.get("token"))
        .cloned()
        .unwrap_or_default();
    if let Some(response) = enter(&app, Endpoint::Revoke, "revoke", &token).await {
        return response;
    }
    let mut inner = app.lock();
    let grant_id = if let Some(access) = inner.access_tokens.get_mut(&token) {
        access.revoked = true;
        access.grant_id
    } else if let Some(refresh) = inner.refresh_tokens.get(&token) {
        Some(refresh.grant_id)
    } else {
        return google_error_response(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            Some("Token expired or revoked"),
        );
    };
    if let Some(grant) = grant_id.and_then(|id| inner.grants.get_mut(&id)) {
        grant.revoked = true;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// `GET /error?code=N`: where Microsoft error bodies' `error_uri` points.
pub(crate) async fn error_info(
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let code: u32 = query.get("code").and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        StatusCode::OK,
        format!("AADSTS{code}: {}\n", aadsts_text(code, "<app>")),
    )
        .into_response()
}
