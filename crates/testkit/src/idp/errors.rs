//! Error bodies in each provider's real shape.
//!
//! Handlers return a semantic [`Failure`]; [`Failure::render`] turns it into Microsoft's body
//! (`error`, `error_description` starting `AADSTSnnnn:` and ending with trace/correlation ids,
//! `error_codes`, `timestamp`, …) or Google's (`error`, `error_description`), so each situation
//! is described once for both providers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::crypto::random_guid;
use super::spec::Fault;
use super::state::Shared;

/// Which provider's conventions a request follows; decided by the route it came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Microsoft,
    Google,
}

/// What went wrong, independent of how a provider words it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    UnknownClient {
        client_id: String,
        tenant: String,
    },
    MissingSecret,
    WrongSecret {
        client_id: String,
    },
    SecretFromPublicClient,
    MissingParameter(&'static str),
    UnsupportedGrantType(String),
    TenantNotFound(String),
    /// App-only tokens need a concrete tenant, not `common`/`organizations`/`consumers`.
    TenantRequired,
    CodeUnknown,
    CodeRedeemed,
    CodeExpired,
    CodeOtherClient,
    RedirectMismatch {
        sent: String,
        expected: String,
    },
    PkceMissing,
    PkceMismatch,
    RefreshUnknown,
    RefreshOtherClient,
    RefreshRotated,
    RefreshExpired {
        issued: OffsetDateTime,
    },
    GrantRevoked {
        issued: OffsetDateTime,
        valid_from: Option<OffsetDateTime>,
    },
    ScopeNotGranted(String),
    MultipleResources,
    ClientCredentialsScope(String),
    DevicePending,
    DeviceSlowDown {
        interval: u64,
    },
    DeviceExpired,
    DeviceDeclined,
    DeviceCodeUnknown,
    /// Google allows only a few scopes in the device flow; Gmail's is not one of them.
    DeviceScopeNotAllowed(String),
    AssertionInvalid(String),
    AssertionSubjectUnknown(String),
}

/// A Microsoft error: the AADSTS code, the OAuth `error`, and the description after `AADSTSnnnn: `.
struct MsError {
    code: u32,
    error: &'static str,
    text: String,
}

/// A Google error.
struct GoogleError {
    status: StatusCode,
    error: &'static str,
    description: Option<String>,
}

impl Failure {
    pub(crate) fn render(&self, flavor: Flavor, now: OffsetDateTime, base_url: &str) -> Response {
        match flavor {
            Flavor::Microsoft => {
                let e = self.microsoft();
                ms_error_response(e.code, e.error, &e.text, now, base_url)
            }
            Flavor::Google => {
                let e = self.google();
                google_error_response(e.status, e.error, e.description.as_deref())
            }
        }
    }

    fn microsoft(&self) -> MsError {
        let ms = |code: u32, error: &'static str, text: String| MsError { code, error, text };
        match self {
            Self::UnknownClient { client_id, tenant } => {
                ms(700016, "unauthorized_client", unknown_app_text(client_id, tenant))
            }
            Self::MissingSecret => ms(
                7000218,
                "invalid_client",
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
            ),
            Self::WrongSecret { client_id } => ms(7000215, "invalid_client", aadsts_text(7000215, client_id)),
            Self::SecretFromPublicClient => ms(
                700025,
                "invalid_client",
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.".into(),
            ),
            Self::MissingParameter(name) => ms(
                900144,
                "invalid_request",
                format!("The request body must contain the following parameter: '{name}'."),
            ),
            Self::UnsupportedGrantType(grant) => ms(
                70003,
                "unsupported_grant_type",
                format!("The app requested an unsupported grant type '{grant}'."),
            ),
            Self::TenantNotFound(tenant) => ms(90002, "invalid_request", tenant_not_found_text(tenant)),
            Self::TenantRequired => ms(
                50059,
                "invalid_request",
                "No tenant-identifying information found in either the request or implied by any provided credentials.".into(),
            ),
            Self::CodeUnknown => ms(70000, "invalid_grant", "The provided value for the 'code' parameter is not valid.".into()),
            Self::CodeRedeemed => ms(54005, "invalid_grant", aadsts_text(54005, "")),
            Self::CodeExpired => ms(70008, "invalid_grant", aadsts_text(70008, "")),
            Self::CodeOtherClient => ms(
                70000,
                "invalid_grant",
                "The provided value for the 'code' parameter is not valid. The code was issued to a different client.".into(),
            ),
            Self::RedirectMismatch { sent, expected } => ms(
                50011,
                "invalid_grant",
                format!(
                    "The redirect URI '{sent}' specified in the request does not match the redirect URI '{expected}' used in the authorization request."
                ),
            ),
            Self::PkceMissing | Self::PkceMismatch => ms(
                501481,
                "invalid_grant",
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.".into(),
            ),
            Self::RefreshUnknown | Self::RefreshOtherClient => ms(
                9002313,
                "invalid_grant",
                "Invalid request. Request is malformed or invalid.".into(),
            ),
            Self::RefreshRotated => ms(
                70000,
                "invalid_grant",
                "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid. The refresh token was already redeemed and replaced by a newer one.".into(),
            ),
            Self::RefreshExpired { issued } => ms(
                700082,
                "invalid_grant",
                format!(
                    "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for 90.00:00:00.",
                    iso(*issued)
                ),
            ),
            Self::GrantRevoked { issued, valid_from } => ms(
                50173,
                "invalid_grant",
                format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                    iso(*issued),
                    valid_from.map(iso).unwrap_or_else(|| iso(*issued))
                ),
            ),
            Self::ScopeNotGranted(scope) => ms(
                65001,
                "invalid_grant",
                format!(
                    "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource. Scope not consented: '{scope}'."
                ),
            ),
            Self::MultipleResources => ms(
                28000,
                "invalid_scope",
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope value provided is not valid.".into(),
            ),
            Self::ClientCredentialsScope(scope) => ms(
                1002012,
                "invalid_scope",
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ),
            Self::DevicePending => ms(70016, "authorization_pending", aadsts_text(70016, "")),
            Self::DeviceSlowDown { interval } => ms(
                70016,
                "slow_down",
                format!(
                    "OAuth 2.0 device flow error. Authorization is pending. The client is polling too frequently; wait at least {interval} seconds between requests."
                ),
            ),
            Self::DeviceExpired => ms(70019, "expired_token", aadsts_text(70019, "")),
            // Microsoft uses `authorization_declined` where RFC 8628 says `access_denied`.
            Self::DeviceDeclined => ms(65004, "authorization_declined", aadsts_text(65004, "")),
            Self::DeviceCodeUnknown => ms(
                9002313,
                "invalid_grant",
                "Invalid request. Request is malformed or invalid. The device_code is not valid.".into(),
            ),
            Self::DeviceScopeNotAllowed(scope) => ms(
                70011,
                "invalid_scope",
                format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
            ),
            Self::AssertionInvalid(why) => ms(
                50027,
                "invalid_grant",
                format!("JWT token is invalid or malformed. {why}"),
            ),
            Self::AssertionSubjectUnknown(sub) => ms(
                50034,
                "invalid_grant",
                format!("The user account {sub} does not exist in the directory."),
            ),
        }
    }

    fn google(&self) -> GoogleError {
        let g = |status: StatusCode, error: &'static str, description: Option<&str>| GoogleError {
            status,
            error,
            description: description.map(str::to_owned),
        };
        let bad = StatusCode::BAD_REQUEST;
        let unauthorized = StatusCode::UNAUTHORIZED;
        match self {
            Self::UnknownClient { .. } => g(
                unauthorized,
                "invalid_client",
                Some("The OAuth client was not found."),
            ),
            Self::MissingSecret => g(bad, "invalid_request", Some("client_secret is missing.")),
            Self::WrongSecret { .. } | Self::SecretFromPublicClient => {
                g(unauthorized, "invalid_client", Some("Unauthorized"))
            }
            Self::MissingParameter(name) => GoogleError {
                status: bad,
                error: "invalid_request",
                description: Some(format!("Missing required parameter: {name}")),
            },
            Self::UnsupportedGrantType(grant) => GoogleError {
                status: bad,
                error: "unsupported_grant_type",
                description: Some(format!("Invalid grant_type: {grant}")),
            },
            Self::TenantNotFound(_) | Self::TenantRequired => {
                g(bad, "invalid_request", Some("Bad Request"))
            }
            Self::CodeUnknown | Self::CodeRedeemed | Self::CodeExpired | Self::CodeOtherClient => {
                g(bad, "invalid_grant", Some("Bad Request"))
            }
            Self::RedirectMismatch { .. } => g(bad, "redirect_uri_mismatch", Some("Bad Request")),
            Self::PkceMissing => g(bad, "invalid_grant", Some("Missing code verifier.")),
            Self::PkceMismatch => g(bad, "invalid_grant", Some("Invalid code verifier.")),
            Self::RefreshUnknown => g(bad, "invalid_grant", Some("Bad Request")),
            Self::RefreshOtherClient => {
                g(unauthorized, "unauthorized_client", Some("Unauthorized"))
            }
            Self::RefreshRotated | Self::RefreshExpired { .. } | Self::GrantRevoked { .. } => g(
                bad,
                "invalid_grant",
                Some("Token has been expired or revoked."),
            ),
            Self::ScopeNotGranted(_)
            | Self::MultipleResources
            | Self::ClientCredentialsScope(_) => g(
                bad,
                "invalid_scope",
                Some("Some requested scopes were invalid."),
            ),
            Self::DevicePending => g(
                StatusCode::PRECONDITION_REQUIRED,
                "authorization_pending",
                Some("Precondition Required"),
            ),
            Self::DeviceSlowDown { .. } => g(StatusCode::FORBIDDEN, "slow_down", Some("Forbidden")),
            Self::DeviceExpired => g(bad, "expired_token", Some("Bad Request")),
            Self::DeviceDeclined => g(StatusCode::FORBIDDEN, "access_denied", Some("Forbidden")),
            Self::DeviceCodeUnknown => g(bad, "invalid_grant", Some("Bad Request")),
            Self::DeviceScopeNotAllowed(scope) => GoogleError {
                status: bad,
                error: "invalid_scope",
                description: Some(format!("Invalid device flow scope: {scope}")),
            },
            Self::AssertionInvalid(why) => GoogleError {
                status: bad,
                error: "invalid_grant",
                description: Some(why.clone()),
            },
            Self::AssertionSubjectUnknown(_) => {
                g(bad, "invalid_grant", Some("Invalid email or User ID"))
            }
        }
    }
}

/// The OAuth `error` Microsoft sends with an AADSTS code (used for injected faults).
pub(crate) fn ms_error_for_code(code: u32) -> &'static str {
    match code {
        7000215 | 7000222 | 7000218 | 700025 | 700027 | 7000112 => "invalid_client",
        700016 => "unauthorized_client",
        50076 | 50079 | 50058 | 50158 | 50072 | 50074 => "interaction_required",
        90002 | 90023 | 900144 | 50059 | 50011 | 9002325 | 90014 => "invalid_request",
        70011 | 28000 | 1002012 => "invalid_scope",
        500011 => "invalid_resource",
        70003 => "unsupported_grant_type",
        70016 => "authorization_pending",
        70019 | 70020 => "expired_token",
        65004 => "access_denied",
        50196 | 90033 => "temporarily_unavailable",
        // 65001, 50173, 50133, 50089, 700082, 70008, 70000, 54005, 9002313, 53003, 50020, …
        _ => "invalid_grant",
    }
}

/// Microsoft's wording for an AADSTS code, without the `AADSTSnnnn: ` prefix. `app` is the
/// client id where the real text names the application.
pub(crate) fn aadsts_text(code: u32, app: &str) -> String {
    match code {
        7000222 => format!(
            "The provided client secret keys for app '{app}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
        ),
        7000215 => format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app}'."
        ),
        7000218 => "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        700016 => unknown_app_text(app, "common"),
        50173 => "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.".into(),
        50133 => "Session is invalid due to expiration or recent password change.".into(),
        50089 => "Authentication failed due to flow token expired.".into(),
        700082 => "The refresh token has expired due to inactivity. The token was issued on 2000-01-01T00:00:00.0000000Z and was inactive for 90.00:00:00.".into(),
        70008 => "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.".into(),
        70000 => "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid.".into(),
        9002313 => "Invalid request. Request is malformed or invalid.".into(),
        54005 => "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.".into(),
        65001 => format!(
            "The user or administrator has not consented to use the application with ID '{app}'. Send an interactive authorization request for this user and resource."
        ),
        65004 => "User declined to consent to access the app.".into(),
        50076 => "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'https://outlook.office.com'.".into(),
        50079 => "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access 'https://outlook.office.com'.".into(),
        50020 => format!(
            "User account from identity provider 'live.com' does not exist in tenant 'Contoso' and cannot access the application '{app}' in that tenant."
        ),
        53003 => "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.".into(),
        50126 => "Error validating credentials due to invalid username or password.".into(),
        50011 => format!(
            "The redirect URI specified in the request does not match the redirect URIs configured for the application '{app}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."
        ),
        90002 => tenant_not_found_text("common"),
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.".into(),
        70019 => "Verification code expired.".into(),
        50058 => "A silent sign-in request was sent but no user is signed in.".into(),
        // A shared mailbox's account is disabled for sign-in (Exchange creates it so).
        50057 => "The user account is disabled.".into(),
        50196 => "The server terminated an operation because it encountered a client request loop. Please contact your app vendor.".into(),
        _ => format!("Error {code} injected by the identity-provider emulator."),
    }
}

fn unknown_app_text(client_id: &str, tenant: &str) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
    )
}

pub(crate) fn tenant_not_found_text(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
    )
}

/// Microsoft's timestamp style in error bodies: `2024-05-01 12:34:56Z`.
pub(crate) fn ms_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

fn iso(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z"
    ))
    .unwrap_or_default()
}

/// The full `error_description` Microsoft sends: code, text, then trace/correlation/timestamp
/// on lines of their own (CRLF, as the real service does).
pub(crate) fn ms_description(
    code: u32,
    text: &str,
    trace_id: &str,
    correlation_id: &str,
    now: OffsetDateTime,
) -> String {
    format!(
        "AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {}",
        ms_timestamp(now)
    )
}

/// A Microsoft error body. `invalid_client` answers 401 as the real service does, the rest 400.
pub(crate) fn ms_error_response(
    code: u32,
    error: &str,
    text: &str,
    now: OffsetDateTime,
    base_url: &str,
) -> Response {
    let trace_id = random_guid();
    let correlation_id = random_guid();
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = json!({
        "error": error,
        "error_description": ms_description(code, text, &trace_id, &correlation_id, now),
        "error_codes": [code],
        "timestamp": ms_timestamp(now),
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("{base_url}/error?code={code}"),
    });
    json_response(status, &body)
}

pub(crate) fn google_error_response(
    status: StatusCode,
    error: &str,
    description: Option<&str>,
) -> Response {
    let mut body = json!({ "error": error });
    if let Some(description) = description {
        body["error_description"] = Value::from(description);
    }
    json_response(status, &body)
}

/// JSON with the no-store headers token endpoints send (RFC 6749 §5.1).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        axum::Json(body.clone()),
    )
        .into_response()
}

/// The response for a fault other than `delay` (which the caller waits out and then ignores).
pub(crate) fn fault_response(
    fault: &Fault,
    client_id: &str,
    now: OffsetDateTime,
    base_url: &str,
) -> Option<Response> {
    match fault {
        Fault::Delay { .. } | Fault::Hang { .. } => None,
        Fault::Aadsts { code } => Some(ms_error_response(
            *code,
            ms_error_for_code(*code),
            &aadsts_text(*code, client_id),
            now,
            base_url,
        )),
        Fault::OauthError { error, description } => {
            let status = if error == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            Some(google_error_response(status, error, description.as_deref()))
        }
        Fault::HttpStatus { status } => Some(http_status_response(*status)),
        Fault::MalformedJson => Some(
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                MALFORMED_JSON_BODY,
            )
                .into_response(),
        ),
    }
}

/// The body of a `malformed_json` fault: a token response cut off mid-string.
pub const MALFORMED_JSON_BODY: &str = r#"{"token_type":"Bearer","access_token":"eyJ0eXAiOiJKV1Qi"#;

fn http_status_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    let error = if transient {
        "temporarily_unavailable"
    } else {
        "server_error"
    };
    let body = json!({
        "error": error,
        "error_description": format!("The identity provider answered HTTP {} (fault injected by the emulator).", status.as_u16()),
    });
    let mut response = (status, axum::Json(body)).into_response();
    if matches!(status.as_u16(), 429 | 503) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Applies a fault taken for this request: waits out a `delay` (then `None`: answer normally),
/// otherwise returns the response that replaces the real one.
pub(crate) async fn run_fault(
    app: &Shared,
    fault: Option<Fault>,
    client_id: &str,
) -> Option<Response> {
    let fault = fault?;
    if let Fault::Delay { seconds } | Fault::Hang { seconds } = fault {
        let wait = std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default();
        tokio::time::sleep(wait).await;
        return None;
    }
    let now = app.lock().now();
    fault_response(&fault, client_id, now, &app.base_url)
}
