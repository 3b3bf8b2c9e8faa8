//! The token endpoints (`/{tenant}/oauth2/v2.0/token`, `/token`) and the device
//! authorization endpoints (`/{tenant}/oauth2/v2.0/devicecode`, Google's `/device/code`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::crypto::{UnverifiedJwt, pkce_s256, random_token, random_user_code};
use super::errors::{Failure, Flavor, json_response, run_fault};
use super::issue::{self, Delegated};
use super::scopes;
use super::spec::{ClientSpec, Endpoint, Fault};
use super::state::{
    AUTH_CODE_LIFETIME, AppState, DeviceRequest, DeviceStatus, Grant, Inner, Shared, Tenant,
    UserRecord, secs,
};

pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Assertions may be at most one hour long (Google's rule).
const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated on an assertion's `iat`.
const ASSERTION_SKEW_SECS: i64 = 300;

pub(crate) type Form = HashMap<String, String>;

/// The form parameter `name`, or the provider's "missing parameter" error.
fn required<'f>(form: &'f Form, name: &'static str) -> Result<&'f String, Failure> {
    form.get(name).ok_or(Failure::MissingParameter(name))
}

/// A token request of a delegated grant (authorization code, refresh, device code) whose
/// client has authenticated.
#[derive(Clone, Copy)]
struct ClientRequest<'a> {
    app: &'a Shared,
    flavor: Flavor,
    client: &'a ClientSpec,
    form: &'a Form,
    /// When the request arrived (the emulator's clock).
    now: time::OffsetDateTime,
}

/// The handler of one delegated grant type.
type DelegatedGrant = fn(ClientRequest<'_>, &mut Inner) -> Result<Value, Failure>;

impl ClientRequest<'_> {
    /// Records a new grant of `scopes` for `grant_user` and issues its first tokens (a
    /// refresh keeps its grant instead).
    fn issue_new_grant(
        &self,
        inner: &mut Inner,
        user: &UserRecord,
        grant_user: String,
        scopes: &[String],
        nonce: Option<&str>,
        issue_refresh_token: bool,
    ) -> Result<Value, Failure> {
        let grant_id = inner.new_grant(Grant {
            flavor: self.flavor,
            user: grant_user,
            scopes: scopes.to_vec(),
            created_at: self.now,
            revoked: false,
        });
        issue::delegated(
            self.app,
            inner,
            &Delegated {
                flavor: self.flavor,
                client_id: &self.client.client_id,
                user,
                grant_id: Some(grant_id),
                scopes,
                nonce,
                issue_refresh_token,
            },
        )
    }
}

pub(crate) fn parse_form(body: &[u8]) -> Form {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: each part form-encoded).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// The client a request speaks for, as counters and faults see it.
fn claimed_client_id(inner: &Inner, form: &Form, basic: Option<&(String, String)>) -> String {
    if form.get("grant_type").map(String::as_str) == Some(JWT_BEARER_GRANT) {
        // A service account is identified by the `iss` of its assertion.
        let iss = form
            .get("assertion")
            .and_then(|a| UnverifiedJwt::parse(a).ok())
            .and_then(|j| {
                j.claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if let Some(sa) = iss.and_then(|iss| inner.service_accounts.get(&iss)) {
            return sa.client_id.clone();
        }
    }
    basic
        .map(|(id, _)| id.clone())
        .or_else(|| form.get("client_id").cloned())
        .unwrap_or_default()
}

pub(crate) async fn ms_token(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_endpoint(&app, Flavor::Microsoft, Some(&tenant), &headers, &body).await
}

pub(crate) async fn google_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_endpoint(&app, Flavor::Google, None, &headers, &body).await
}

async fn token_endpoint(
    app: &AppState,
    flavor: Flavor,
    tenant: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let form = parse_form(body);
    let basic = basic_auth(headers);
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let (client_id, fault, in_flight) = {
        let mut inner = app.lock();
        let client_id = claimed_client_id(&inner, &form, basic.as_ref());
        inner.count(&client_id, &format!("token:{grant_type}"));
        let fault = inner.take_fault(Endpoint::Token, Some(&client_id), Some(&grant_type));
        let in_flight = refresh_in_flight(app, &mut inner, &client_id, &form);
        (client_id, fault, in_flight)
    };
    if let Some(Fault::Hang { seconds }) = fault {
        // Held and then processed in a task of its own: a client that gives up and closes
        // the connection cancels this handler, but not the rotation the provider performs.
        let app = app.clone();
        let tenant = tenant.map(str::to_owned);
        let held = tokio::spawn(async move {
            let wait = std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default();
            tokio::time::sleep(wait).await;
            let response = answer(&app, flavor, tenant.as_deref(), &form, basic, &client_id);
            drop(in_flight);
            response
        });
        return match held.await {
            Ok(response) => response,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    if let Some(response) = run_fault(app, fault, &client_id).await {
        return response;
    }
    let response = answer(app, flavor, tenant, &form, basic, &client_id);
    drop(in_flight);
    response
}

/// Processes a token request and renders the answer or the refusal.
fn answer(
    app: &Shared,
    flavor: Flavor,
    tenant: Option<&str>,
    form: &Form,
    basic: Option<(String, String)>,
    client_id: &str,
) -> Response {
    let mut inner = app.lock();
    let now = inner.now();
    match grant(app, &mut inner, flavor, tenant, form, basic) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(failure) => {
            let grant_type = form.get("grant_type").map(String::as_str);
            tracing::debug!(?failure, client_id, grant_type, "token request refused");
            failure.render(flavor, now, &app.base_url)
        }
    }
}

/// Marks a refresh request in flight for its grant until dropped (answered, or its client
/// went away first).
struct RefreshInFlight {
    app: AppState,
    client_id: String,
    grant_id: u64,
}

impl Drop for RefreshInFlight {
    fn drop(&mut self) {
        self.app
            .lock()
            .refresh_finished(&self.client_id, self.grant_id);
    }
}

fn refresh_in_flight(
    app: &AppState,
    inner: &mut Inner,
    client_id: &str,
    form: &Form,
) -> Option<RefreshInFlight> {
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return None;
    }
    let grant_id = inner
        .refresh_tokens
        .get(form.get("refresh_token")?)?
        .grant_id;
    inner.refresh_started(client_id, grant_id);
    Some(RefreshInFlight {
        app: app.clone(),
        client_id: client_id.to_owned(),
        grant_id,
    })
}

fn grant(
    app: &Shared,
    inner: &mut Inner,
    flavor: Flavor,
    tenant: Option<&str>,
    form: &Form,
    basic: Option<(String, String)>,
) -> Result<Value, Failure> {
    let tenant = match tenant {
        Some(segment) => Some(
            inner
                .resolve_tenant(segment, &app.default_tenant)
                .ok_or_else(|| Failure::TenantNotFound(segment.to_owned()))?,
        ),
        None => None,
    };
    let grant_type = required(form, "grant_type")?;
    let delegated: Option<DelegatedGrant> = match grant_type.as_str() {
        "authorization_code" => Some(authorization_code),
        "refresh_token" => Some(refresh),
        DEVICE_CODE_GRANT => Some(device_code),
        _ => None,
    };
    if let Some(delegated) = delegated {
        let client = authenticate(inner, form, basic, tenant.as_ref())?;
        let request = ClientRequest {
            app,
            flavor,
            client: &client,
            form,
            now: inner.now(),
        };
        return delegated(request, inner);
    }
    match (grant_type.as_str(), flavor) {
        ("client_credentials", Flavor::Microsoft) => {
            let client = authenticate(inner, form, basic, tenant.as_ref())?;
            if client.client_secret.is_none() {
                // Only confidential clients may get app-only tokens.
                return Err(Failure::MissingSecret);
            }
            let Some(Tenant::Id(tid)) = tenant else {
                return Err(Failure::TenantRequired);
            };
            let scope = required(form, "scope")?;
            let audience = scopes::ms_app_only_audience(scope)?;
            Ok(issue::ms_app_only(
                app,
                inner,
                &client.client_id,
                &tid,
                audience,
            ))
        }
        (JWT_BEARER_GRANT, Flavor::Google) => jwt_bearer(app, inner, form),
        (other, _) => Err(Failure::UnsupportedGrantType(other.to_owned())),
    }
}

/// The directory Microsoft names in "application not found in the directory …".
fn directory_name(tenant: Option<&Tenant>) -> String {
    match tenant {
        Some(Tenant::Id(tid)) => tid.clone(),
        _ => "common".to_owned(),
    }
}

/// Checks the client's credentials (form `client_secret` or HTTP Basic).
fn authenticate(
    inner: &Inner,
    form: &Form,
    basic: Option<(String, String)>,
    tenant: Option<&Tenant>,
) -> Result<ClientSpec, Failure> {
    let (client_id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => (
            required(form, "client_id")?.clone(),
            form.get("client_secret").cloned(),
        ),
    };
    let secret = secret.filter(|s| !s.is_empty());
    let Some(client) = inner.clients.get(&client_id) else {
        let tenant = directory_name(tenant);
        return Err(Failure::UnknownClient { client_id, tenant });
    };
    match (&client.client_secret, secret) {
        (Some(expected), Some(given)) if *expected == given => Ok(client.clone()),
        (Some(_), Some(_)) => Err(Failure::WrongSecret { client_id }),
        (Some(_), None) => Err(Failure::MissingSecret),
        (None, Some(_)) => Err(Failure::SecretFromPublicClient),
        (None, None) => Ok(client.clone()),
    }
}

fn authorization_code(req: ClientRequest<'_>, inner: &mut Inner) -> Result<Value, Failure> {
    let code = required(req.form, "code")?;
    let record = inner
        .codes
        .get(code)
        .filter(|c| c.flavor == req.flavor)
        .cloned()
        .ok_or(Failure::CodeUnknown)?;
    if record.client_id != req.client.client_id {
        return Err(Failure::CodeOtherClient);
    }
    if record.redeemed {
        return Err(Failure::CodeRedeemed);
    }
    if req.now - record.created_at >= AUTH_CODE_LIFETIME {
        return Err(Failure::CodeExpired);
    }
    let user = inner
        .user(&record.user)
        .cloned()
        .ok_or(Failure::CodeUnknown)?;
    if user.revoked_since(record.created_at) {
        return Err(Failure::GrantRevoked {
            issued: record.created_at,
            valid_from: user.tokens_valid_from,
        });
    }
    let redirect_uri = required(req.form, "redirect_uri")?;
    if *redirect_uri != record.redirect_uri {
        return Err(Failure::RedirectMismatch {
            sent: redirect_uri.clone(),
            expected: record.redirect_uri,
        });
    }
    let verifier = req.form.get("code_verifier").ok_or(Failure::PkceMissing)?;
    if pkce_s256(verifier) != record.code_challenge {
        return Err(Failure::PkceMismatch);
    }
    // Validate scopes before burning the code, so a refused exchange can be retried.
    if req.flavor == Flavor::Microsoft {
        scopes::ms_delegated(&record.scopes)?;
    }
    if let Some(c) = inner.codes.get_mut(code) {
        c.redeemed = true;
    }
    req.issue_new_grant(
        inner,
        &user,
        record.user.clone(),
        &record.scopes,
        record.nonce.as_deref(),
        record.issue_refresh_token,
    )
}

fn refresh(req: ClientRequest<'_>, inner: &mut Inner) -> Result<Value, Failure> {
    let presented = required(req.form, "refresh_token")?;
    let token = inner
        .refresh_tokens
        .get(presented)
        .cloned()
        .ok_or(Failure::RefreshUnknown)?;
    if token.client_id != req.client.client_id {
        return Err(Failure::RefreshOtherClient);
    }
    let grant = inner
        .grants
        .get(&token.grant_id)
        .filter(|g| g.flavor == req.flavor)
        .cloned()
        .ok_or(Failure::RefreshUnknown)?;
    if inner.live_grant(token.grant_id).is_none() {
        return Err(Failure::GrantRevoked {
            issued: grant.created_at,
            valid_from: inner.user(&grant.user).and_then(|u| u.tokens_valid_from),
        });
    }
    if req.now >= token.expires_at {
        return Err(Failure::RefreshExpired {
            issued: token.issued_at,
        });
    }
    let lifetimes = inner.lifetimes(&req.client.client_id);
    if let Some(rotated_at) = token.rotated_at
        && req.now >= rotated_at + secs(lifetimes.refresh_reuse_grace_secs)
    {
        if lifetimes.revoke_grant_on_refresh_reuse
            && let Some(g) = inner.grants.get_mut(&token.grant_id)
        {
            // Like npm oidc-provider: replaying a rotated token is treated as theft.
            g.revoked = true;
        }
        return Err(Failure::RefreshRotated);
    }
    let requested = match req.form.get("scope") {
        Some(scope) => {
            let requested = scopes::split(scope);
            if let Some(missing) = requested
                .iter()
                .find(|s| !scopes::covered_by(s, &grant.scopes))
            {
                return Err(Failure::ScopeNotGranted(missing.clone()));
            }
            requested
        }
        None => grant.scopes.clone(),
    };
    let user = inner
        .user(&grant.user)
        .cloned()
        .ok_or(Failure::RefreshUnknown)?;
    let body = issue::delegated(
        req.app,
        inner,
        &Delegated {
            flavor: req.flavor,
            client_id: &req.client.client_id,
            user: &user,
            grant_id: Some(token.grant_id),
            scopes: &requested,
            nonce: None,
            issue_refresh_token: lifetimes.rotate_refresh_tokens,
        },
    )?;
    if lifetimes.rotate_refresh_tokens
        && let Some(old) = inner.refresh_tokens.get_mut(presented)
    {
        // Within the grace a replayed token rotates again; its grace still counts from the first rotation.
        old.rotated_at.get_or_insert(req.now);
    }
    Ok(body)
}

fn device_code(req: ClientRequest<'_>, inner: &mut Inner) -> Result<Value, Failure> {
    let device_code = required(req.form, "device_code")?;
    let request = inner
        .device_requests
        .get_mut(device_code)
        .filter(|r| r.client_id == req.client.client_id && r.flavor == req.flavor)
        .ok_or(Failure::DeviceCodeUnknown)?;
    if req.now >= request.expires_at {
        return Err(Failure::DeviceExpired);
    }
    let user = match &request.status {
        DeviceStatus::Declined => return Err(Failure::DeviceDeclined),
        DeviceStatus::Redeemed => return Err(Failure::CodeRedeemed),
        DeviceStatus::Pending => {
            let too_fast = request
                .last_poll
                .is_some_and(|last| req.now - last < secs(request.interval_secs));
            request.last_poll = Some(req.now);
            return Err(if too_fast {
                Failure::DeviceSlowDown {
                    interval: request.interval_secs,
                }
            } else {
                Failure::DevicePending
            });
        }
        DeviceStatus::Approved { user } => user.clone(),
    };
    request.status = DeviceStatus::Redeemed;
    let scopes = request.scopes.clone();
    let user = inner
        .user(&user)
        .cloned()
        .ok_or(Failure::DeviceCodeUnknown)?;
    // Google's device flow always returns a refresh token.
    let issue_refresh_token =
        req.flavor == Flavor::Google || scopes.iter().any(|s| s == "offline_access");
    req.issue_new_grant(
        inner,
        &user,
        user.email.to_lowercase(),
        &scopes,
        None,
        issue_refresh_token,
    )
}

fn jwt_bearer(app: &Shared, inner: &mut Inner, form: &Form) -> Result<Value, Failure> {
    let now = inner.now().unix_timestamp();
    let assertion = required(form, "assertion")?;
    let jwt = UnverifiedJwt::parse(assertion)
        .map_err(|e| Failure::AssertionInvalid(format!("Invalid JWT: {e}")))?;
    let claim_str = |name: &str| jwt.claims.get(name).and_then(Value::as_str);
    let iss = claim_str("iss").unwrap_or_default();
    let account = inner.service_accounts.get(iss).cloned().ok_or_else(|| {
        Failure::AssertionInvalid(format!("Invalid issuer: no service account '{iss}'."))
    })?;
    let kid_matches = jwt
        .header
        .get("kid")
        .and_then(Value::as_str)
        .is_none_or(|kid| kid == account.key_id);
    if !kid_matches || jwt.verify_rs256(&account.public_key).is_err() {
        return Err(Failure::AssertionInvalid("Invalid JWT Signature.".into()));
    }
    let token_url = format!("{}/token", app.base_url);
    if claim_str("aud") != Some(token_url.as_str()) {
        return Err(Failure::AssertionInvalid(format!(
            "Invalid JWT: Failed audience check. The right audience is {token_url}"
        )));
    }
    let iat = jwt.claims.get("iat").and_then(Value::as_i64);
    let exp = jwt.claims.get("exp").and_then(Value::as_i64);
    let timely = matches!((iat, exp), (Some(iat), Some(exp))
        if exp > now && iat <= now + ASSERTION_SKEW_SECS && exp - iat <= MAX_ASSERTION_LIFETIME_SECS && exp > iat);
    if !timely {
        return Err(Failure::AssertionInvalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into(),
        ));
    }
    let scope = scopes::split(claim_str("scope").unwrap_or_default());
    if scope.is_empty() {
        return Err(Failure::ScopeNotGranted(String::new()));
    }
    let sub = claim_str("sub").unwrap_or(&account.client_email).to_owned();
    let user = if sub == account.client_email {
        sub
    } else {
        inner
            .user(&sub)
            .map(|u| u.email.clone())
            .ok_or(Failure::AssertionSubjectUnknown(sub))?
    };
    Ok(issue::google_service_account(
        inner,
        &account.client_id,
        &user,
        &scope,
    ))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode` (RFC 8628 §3.1).
pub(crate) async fn ms_devicecode(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    devicecode_endpoint(&app, Flavor::Microsoft, &tenant, &body).await
}

/// `POST /device/code` (Google's device authorization endpoint).
pub(crate) async fn google_devicecode(State(app): State<AppState>, body: Bytes) -> Response {
    devicecode_endpoint(&app, Flavor::Google, GOOGLE_TENANT, &body).await
}

/// Google has no tenants; its pending requests carry this placeholder.
pub(crate) const GOOGLE_TENANT: &str = "google";

/// Scopes Google allows in the device flow (its "allowed scopes" list, mail-relevant part):
/// Gmail's scope is not among them, so a device flow for Gmail fails with `invalid_scope`.
const GOOGLE_DEVICE_SCOPES: [&str; 5] = [
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
];

async fn devicecode_endpoint(app: &Shared, flavor: Flavor, tenant: &str, body: &[u8]) -> Response {
    let form = parse_form(body);
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let fault = {
        let mut inner = app.lock();
        inner.count(&client_id, "devicecode");
        inner.take_fault(Endpoint::Devicecode, Some(&client_id), None)
    };
    if let Some(response) = run_fault(app, fault, &client_id).await {
        return response;
    }
    let mut inner = app.lock();
    let now = inner.now();
    match start_device_flow(app, &mut inner, flavor, tenant, &form) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(failure) => failure.render(flavor, now, &app.base_url),
    }
}

fn start_device_flow(
    app: &Shared,
    inner: &mut Inner,
    flavor: Flavor,
    tenant: &str,
    form: &Form,
) -> Result<Value, Failure> {
    let resolved = match flavor {
        Flavor::Microsoft => inner
            .resolve_tenant(tenant, &app.default_tenant)
            .ok_or_else(|| Failure::TenantNotFound(tenant.to_owned()))?,
        Flavor::Google => Tenant::Multi,
    };
    let client_id = required(form, "client_id")?;
    if !inner.clients.contains_key(client_id) {
        return Err(Failure::UnknownClient {
            client_id: client_id.clone(),
            tenant: directory_name(Some(&resolved)),
        });
    }
    let scope = scopes::split(required(form, "scope")?);
    match flavor {
        Flavor::Microsoft => {
            scopes::ms_delegated(&scope)?;
        }
        Flavor::Google => {
            if let Some(refused) = scope
                .iter()
                .find(|s| !GOOGLE_DEVICE_SCOPES.contains(&s.as_str()))
            {
                return Err(Failure::DeviceScopeNotAllowed(refused.clone()));
            }
        }
    }
    let now = inner.now();
    let lifetimes = inner.lifetimes(client_id);
    let device_code = random_token(48);
    let user_code = match flavor {
        Flavor::Microsoft => random_user_code(),
        // Google shows codes like `GQVQ-JKEC`.
        Flavor::Google => {
            let code = random_user_code();
            format!("{}-{}", &code[..4], &code[4..8])
        }
    };
    let verification_uri = format!("{}/devicelogin", app.base_url);
    inner.device_requests.insert(
        device_code.clone(),
        DeviceRequest {
            flavor,
            client_id: client_id.clone(),
            tenant: tenant.to_owned(),
            user_code: user_code.clone(),
            scopes: scope,
            expires_at: now + secs(lifetimes.device_code_lifetime_secs),
            interval_secs: lifetimes.device_code_interval_secs,
            last_poll: None,
            status: DeviceStatus::Pending,
        },
    );
    Ok(match flavor {
        Flavor::Microsoft => json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": lifetimes.device_code_lifetime_secs,
            "interval": lifetimes.device_code_interval_secs,
            "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
        }),
        // Google names the field `verification_url`, not RFC 8628's `verification_uri`.
        Flavor::Google => json!({
            "device_code": device_code,
            "user_code": user_code,
            "expires_in": lifetimes.device_code_lifetime_secs,
            "interval": lifetimes.device_code_interval_secs,
            "verification_url": verification_uri,
        }),
    })
}
