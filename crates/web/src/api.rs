//! `/api/v1`: the doors applications use. Bearer API tokens (stored hashed) with scopes and
//! an optional account restriction; errors as RFC 9457 `application/problem+json` with a
//! stable `type`. 401 means "who are you?" (no or unknown token), 403 "not allowed".

use crate::AppState;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use mailgate_core::AccountId;
use mailgate_core::user::{ApiToken, TokenScope};
use mailgate_usecase::AccountView;
use serde_json::Value;

/// RFC 9457 problem details: the body of every refused API request.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProblemDocument {
    /// `urn:mailgate:problem:<code>`, stable for programs to match.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// What happened and what to do, for a person.
    pub detail: String,
    /// The request field at fault, e.g. `attachments[2].content_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An RFC 9457 problem response. `code` becomes the stable `type` URN.
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    field: Option<&str>,
) -> Response {
    let body = ProblemDocument {
        problem_type: format!("urn:mailgate:problem:{code}"),
        title: status.canonical_reason().unwrap_or("error").to_owned(),
        status: status.as_u16(),
        detail: detail.into(),
        field: field.map(str::to_owned),
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).unwrap_or_default(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = "Bearer realm=\"mailgate\"".parse()
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// A refused API request: its RFC 9457 problem document, ready to send. Handlers return
/// `Result<Response, ApiError>` and refuse with `?`; store and randomness failures convert
/// into their problems. Boxed, so a `Result` carrying one stays small.
pub struct ApiError(Box<Response>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for ApiError {
    fn from(problem: Response) -> Self {
        ApiError(Box::new(problem))
    }
}

impl From<mailgate_store::StoreError> for ApiError {
    fn from(e: mailgate_store::StoreError) -> Self {
        store_problem(e).into()
    }
}

impl From<mailgate_core::random::RandomFailed> for ApiError {
    fn from(e: mailgate_core::random::RandomFailed) -> Self {
        random_problem(e).into()
    }
}

impl From<mailgate_core::app::FieldError> for ApiError {
    /// A field the caller gave is at fault: 422 naming it.
    fn from(e: mailgate_core::app::FieldError) -> Self {
        invalid(e.field, e.message)
    }
}

impl From<mailgate_mail::MailError> for ApiError {
    /// The mail server refused or failed: 502 with the remedy's code and sentence.
    fn from(e: mailgate_mail::MailError) -> Self {
        let mut detail = e.to_string();
        if let Some(says) = &e.server_says {
            detail.push_str(&format!(" (server: {says})"));
        }
        problem(
            StatusCode::BAD_GATEWAY,
            e.remedy.code(),
            format!("{detail}. {}", e.remedy.sentence()),
            None,
        )
        .into()
    }
}

impl From<mailgate_grants::EngineError> for ApiError {
    /// A token could not be had: not authorized (409), asked too often (429 with
    /// `Retry-After`), the provider unreachable for now (503) or refusing (502).
    fn from(e: mailgate_grants::EngineError) -> Self {
        use mailgate_grants::EngineError;
        match e {
            EngineError::Store(e) => e.into(),
            e @ EngineError::NotUsable { .. } => {
                problem(StatusCode::CONFLICT, "not_authorized", e.to_string(), None).into()
            }
            e @ EngineError::ForcedRefreshLimited {
                retry_after_secs, ..
            } => {
                let mut r = problem(StatusCode::TOO_MANY_REQUESTS, e.code(), e.to_string(), None);
                if let Ok(v) = retry_after_secs.to_string().parse() {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r.into()
            }
            e if matches!(&e, EngineError::OAuth(f) if f.is_transient()) => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                e.to_string(),
                None,
            )
            .into(),
            e => problem(StatusCode::BAD_GATEWAY, e.code(), e.to_string(), None).into(),
        }
    }
}

impl From<mailgate_core::send::SendRefused> for ApiError {
    /// A send rule refused: 422 naming the field, 413 for attachments over the total size.
    fn from(e: mailgate_core::send::SendRefused) -> Self {
        match e {
            mailgate_core::send::SendRefused::Invalid { field, message } => {
                invalid(&field, message)
            }
            mailgate_core::send::SendRefused::TooLarge { field, message } => problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                message,
                Some(field),
            )
            .into(),
        }
    }
}

/// The operating system's random generator failed: nothing was done (503, retry later).
pub(crate) fn random_problem(e: mailgate_core::random::RandomFailed) -> Response {
    tracing::error!(error = %e, "API: no randomness");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the server's random number generator failed; retry later",
        None,
    )
}

pub(crate) fn store_problem(e: mailgate_store::StoreError) -> Response {
    match e {
        mailgate_store::StoreError::NotFound { what, key } => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} {key}"),
            None,
        ),
        other => {
            tracing::error!(error = %other, "API: store error");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry later",
                None,
            )
        }
    }
}

/// The application calling, by its API token. Handlers never take it directly: they take
/// `ApiAuth<S>`, which also checks the scope, so no handler can forget one.
pub struct ApiCaller {
    pub token: ApiToken,
}

impl ApiCaller {
    /// 401 unless the request carries a known, unrevoked API token.
    pub(crate) async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::from(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an API token as Authorization: Bearer <token> (create one with `mailgate api-token create`)",
                None,
            )));
        };
        match state
            .store
            .api_token_by_hash(
                &mailgate_oauth::random::sha256_hex(token),
                state.clock.now(),
            )
            .await?
        {
            Some(token) => Ok(ApiCaller { token }),
            None => Err(ApiError::from(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API token is unknown or was revoked",
                None,
            ))),
        }
    }
}

/// The scope a route demands, as a type, so that the handler's signature states it and the
/// extractor checks it before the handler runs.
pub trait RequiredScope: Send + Sync + 'static {
    /// A token holding any one of these may pass.
    const ANY_OF: &'static [TokenScope];
}

/// The scopes as types for `ApiAuth<S>`.
pub mod scope {
    use super::RequiredScope;
    use mailgate_core::user::TokenScope;

    macro_rules! scopes {
        ($($(#[$doc:meta])* $name:ident => [$($scope:ident),+];)*) => {$(
            $(#[$doc])*
            pub struct $name;
            impl RequiredScope for $name {
                const ANY_OF: &'static [TokenScope] = &[$(TokenScope::$scope),+];
            }
        )*};
    }

    scopes! {
        AccountsRead => [AccountsRead];
        AccountsWrite => [AccountsWrite];
        MessagesSend => [MessagesSend];
        MessagesRead => [MessagesRead];
        TokensRead => [TokensRead];
        WebhooksWrite => [WebhooksWrite];
        /// Reading the outbox: `messages:send` (the sender's own queue) or `messages:read`.
        OutboxRead => [MessagesSend, MessagesRead];
    }
}

/// An authenticated API caller whose token holds the scope `S`: 401 without a valid token,
/// 403 `insufficient_scope` without the scope. Derefs to the `ApiCaller`.
pub struct ApiAuth<S: RequiredScope> {
    caller: ApiCaller,
    scope: std::marker::PhantomData<S>,
}

impl<S: RequiredScope> std::ops::Deref for ApiAuth<S> {
    type Target = ApiCaller;
    fn deref(&self) -> &ApiCaller {
        &self.caller
    }
}

impl<S: RequiredScope> FromRequestParts<AppState> for ApiAuth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = ApiCaller::authenticate(parts, state).await?;
        // The audit trail: this request's changes are this token's.
        mailgate_store::audit::identify(format!("api-token:{}", caller.token.name));
        if S::ANY_OF.iter().any(|s| caller.token.scopes.contains(s)) {
            return Ok(ApiAuth {
                caller,
                scope: std::marker::PhantomData,
            });
        }
        let names: Vec<&str> = S::ANY_OF.iter().map(|s| s.as_str()).collect();
        Err(ApiError::from(problem(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API token lacks the scope {}", names.join(" or ")),
            None,
        )))
    }
}

impl ApiCaller {
    pub(crate) fn may_touch(&self, account: AccountId) -> bool {
        self.token.account_ids.is_empty() || self.token.account_ids.contains(&account)
    }

    pub(crate) fn require_account(&self, account: AccountId) -> Result<(), ApiError> {
        if self.may_touch(account) {
            Ok(())
        } else {
            Err(ApiError::from(problem(
                StatusCode::FORBIDDEN,
                "account_not_allowed",
                format!("this API token is limited to other accounts than {account}"),
                None,
            )))
        }
    }
}

/// An account as the API shows it: the one view the CLI's `--json` shows too.
pub(crate) async fn account_view(
    state: &AppState,
    account: &mailgate_core::MailAccount,
) -> Result<AccountView, ApiError> {
    let app = state.store.app(account.spec.app_id).await?;
    Ok(AccountView::new(account, app.spec.name.as_str()))
}

#[utoipa::path(get, path = "/api/v1/accounts",
    summary = "List mail accounts the token may touch",
    security(("bearer" = ["accounts:read"])),
    responses((status = 200, description = "OK", body = Vec<AccountView>)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
) -> Result<Response, ApiError> {
    let accounts = state.store.list_accounts().await?;
    let apps = state.store.list_apps().await?;
    let app_name = |id| {
        apps.iter()
            .find(|app| app.id == id)
            .map(|app| app.spec.name.as_str())
            .unwrap_or_default()
    };
    let visible: Vec<AccountView> = accounts
        .iter()
        .filter(|a| caller.may_touch(a.id))
        .map(|a| AccountView::new(a, app_name(a.spec.app_id)))
        .collect();
    Ok(Json(visible).into_response())
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", summary = "One mail account",
    security(("bearer" = ["accounts:read"])),
    responses((status = 200, description = "OK", body = AccountView)))]
pub async fn get_account(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    caller.require_account(AccountId(id))?;
    let account = state.store.account(AccountId(id)).await?;
    Ok(Json(account_view(&state, &account).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/events",
    summary = "Recent events of an account",
    security(("bearer" = ["accounts:read"])),
    responses((status = 200, description = "OK, newest first", body = Vec<mailgate_core::event::Event>)))]
pub async fn account_events(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    caller.require_account(AccountId(id))?;
    // With who made each change (the audit trail), as `GET /api/v1/events` shows them.
    let filter = mailgate_store::EventFilter {
        account: Some(AccountId(id)),
        limit: 200,
        ..Default::default()
    };
    let events = state.store.audit_events(&filter).await?;
    Ok(Json(events).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    force_refresh: Option<String>,
}

/// The answer of `GET /api/v1/accounts/{id}/token`: a bearer credential, so it has no
/// `Debug` and is never logged.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccessTokenAnswer {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    /// RFC 3339; absent when the provider did not say.
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
}

/// A fresh access token, refreshed single-flight if needed, for trusted callers.
/// `?force_refresh=true`: a new one even if the stored token has not expired (a mail server
/// refused it), at most once a minute per account (429 with `Retry-After` otherwise).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/token",
    summary = "A fresh access token (refreshed if needed)",
    security(("bearer" = ["tokens:read"])),
    params(("force_refresh" = Option<bool>, Query, description = "Refresh even though the stored token has not expired (a mail server refused it); at most once a minute per account")),
    responses(
        (status = 200, description = "OK (Cache-Control: no-store)", body = AccessTokenAnswer),
        (status = 409, description = "The account cannot give out tokens (not authorized, or reauth_required)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "force_refresh was used for this account less than a minute ago (see Retry-After)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The provider failed transiently (the grant is kept)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn account_token(
    State(state): State<AppState>,
    caller: ApiAuth<scope::TokensRead>,
    Path(id): Path<i64>,
    query: Result<axum::extract::Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_account(AccountId(id))?;
    let force = match query_or_problem(query, "force_refresh")?.force_refresh {
        None => false,
        Some(v) => match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(invalid("force_refresh", "force_refresh is true or false")),
        },
    };
    let result = if force {
        state.engine.force_refresh(AccountId(id), None).await
    } else {
        state.engine.access_token(AccountId(id)).await
    };
    match result {
        Ok(t) => {
            let mut r = Json(AccessTokenAnswer {
                access_token: t.access_token.expose().to_owned(),
                token_type: "Bearer",
                expires_at: t.expires_at.map(|e| e.rfc3339()),
                scopes: t.scopes.iter().map(str::to_owned).collect(),
            })
            .into_response();
            // A bearer credential: never cached by anything in between.
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

/// The answer of `POST /api/v1/accounts/{id}/authorize`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuthorizationStarted {
    /// Where to send the person who signs in.
    pub url: String,
    /// RFC 3339: the sign-in must be finished by then.
    pub expires_at: String,
    /// The mailbox (or alias) the person must sign in as.
    pub sign_in_as: String,
}

/// Starts a browser authorization; the caller sends a person to `url`.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/authorize",
    summary = "Start a browser authorization; returns the sign-in URL",
    security(("bearer" = ["accounts:write"])),
    responses(
        (status = 201, description = "Started", body = AuthorizationStarted),
        (status = 409, description = "The account cannot be authorized now (see the problem's code)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn start_authorization(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    caller.require_account(AccountId(id))?;
    let initiator = format!("api-token:{}", caller.token.name);
    match state
        .engine
        .start_authorization(
            AccountId(id),
            &initiator,
            &crate::redirect_uri(&state.public_url),
        )
        .await
    {
        Ok(s) => Ok((
            StatusCode::CREATED,
            Json(AuthorizationStarted {
                url: s.url.as_str().to_owned(),
                expires_at: s.expires_at.rfc3339(),
                sign_in_as: s.sign_in_as,
            }),
        )
            .into_response()),
        Err(mailgate_grants::EngineError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::from(problem(
            StatusCode::CONFLICT,
            e.code(),
            e.to_string(),
            None,
        ))),
    }
}

pub use mailgate_core::send::MAX_ATTACHMENT_BYTES;
use mailgate_core::send::SendRequest;
#[cfg(test)]
use mailgate_core::send::{AttachmentRequest, check_attachments};

/// The largest send request body: the attachments in base64 (4/3 of their size), the text
/// and the html.
pub const SEND_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What one send may ask for (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct SendLimits {
    /// Bytes waiting in the outbox, per account (429 beyond) and in all (507 beyond).
    pub quota: mailgate_store::OutboxQuota,
    /// Recipients (To + Cc + Bcc) of one message.
    pub max_recipients: usize,
}

/// How long a caller refused for a full outbox should wait: about one SMTP round for the
/// worker to make room (per account), longer when the whole outbox is full.
const ACCOUNT_QUOTA_RETRY_AFTER_SECS: u64 = 30;
const TOTAL_QUOTA_RETRY_AFTER_SECS: u64 = 120;

/// A 422 problem naming the field at fault.
pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        detail,
        Some(field),
    )
    .into()
}

fn parse_send_request(body: &[u8]) -> Result<SendRequest, ApiError> {
    parse_json(body)
}

/// A JSON request body as `T`, or a 422 `invalid_body` problem naming the field at fault
/// (`attachments[2].content_base64`, an unknown key) as serde found it.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let refuse = |detail: String, field: Option<&str>| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body is not the expected JSON: {detail}"),
            field,
        )
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let req = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let detail = e.inner().to_string();
        let mut field = e.path().to_string();
        // A missing key is reported at its parent (an unknown one at itself); name the key.
        if let Some(name) = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| detail.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
        {
            field = match field.as_str() {
                "." => name.to_owned(),
                f if f == name || f.ends_with(&format!(".{name}")) => f.to_owned(),
                parent => format!("{parent}.{name}"),
            };
        }
        refuse(detail, (field != ".").then_some(field.as_str()))
    })?;
    de.end().map_err(|e| refuse(e.to_string(), None))?;
    Ok(req)
}

/// What a send request's `Content-Type` asks for.
enum SendBody {
    Json,
    Raw,
}

fn send_body_kind(headers: &axum::http::HeaderMap) -> Result<SendBody, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(SendBody::Json);
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "message/rfc822" => Ok(SendBody::Raw),
        "application/json" => Ok(SendBody::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(SendBody::Json),
        _ => Err(ApiError::from(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the message as application/json or as a ready message/rfc822, not {media:?}"
            ),
            Some("Content-Type"),
        ))),
    }
}

/// Queues a message in the durable outbox (202 with its id); the worker sends it. With an
/// `Idempotency-Key`, the same key returns the first result and never sends twice. Every
/// check runs before the outbox row is written: bad input writes nothing.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/messages",
    summary = "Queue a message in the durable outbox",
    security(("bearer" = ["messages:send"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key with the same request (method, path, Content-Type, body) returns the first message; with a different request it is refused with 422")),
    request_body(
        description = "A message built by mailgate (From is the account's mailbox; at least one recipient and one of text and html; errors name the field, e.g. `attachments[2].content_base64`), or a ready RFC 5322 message whose envelope comes from To, Cc and Bcc (Bcc is removed)",
        content(
            (mailgate_core::send::SendRequest = "application/json"),
            (String = "message/rfc822"),
        )
    ),
    responses(
        (status = 202, description = "Queued (Location: /api/v1/messages/{id})", body = mailgate_store::OutboxItem,
            headers(("Location" = String, description = "The message: /api/v1/messages/{id}"))),
        (status = 413, description = "The attachments or the whole request are too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Neither application/json nor message/rfc822", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (see `field`: too many recipients, a From that is not the account's, an Idempotency-Key reused with another request)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "The account's outbox quota is full (queued and sending bytes); retry after Retry-After", body = ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = i64, description = "Seconds to wait before sending again"))),
        (status = 503, description = "Not queued: the database cannot store it now; send again after Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 507, description = "Not queued: the whole outbox quota or the server's disk is full; send again after Retry-After", body = ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = i64, description = "Seconds to wait before sending again"))),
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    caller: ApiAuth<scope::MessagesSend>,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_account(AccountId(id))?;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::from(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request is larger than {SEND_BODY_LIMIT} bytes; attachments may come to {MAX_ATTACHMENT_BYTES} bytes"
                ),
                None,
            )));
        }
        Err(e) => {
            return Err(ApiError::from(problem(
                e.status(),
                "invalid_body",
                e.body_text(),
                None,
            )));
        }
    };
    // What an Idempotency-Key stands for: this request, as Stripe compares them.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let path = format!("/api/v1/accounts/{id}/messages");
    let request_hash =
        mailgate_store::request_hash(&[b"POST", path.as_bytes(), content_type, &body]);
    match send_body_kind(&headers)? {
        SendBody::Raw => return send_raw(&state, id, &headers, &body, &request_hash).await,
        SendBody::Json => {}
    }
    let req = parse_send_request(&body)?;
    // The request's bytes are in `req` now; let them go before the message is built.
    drop(body);
    let key = idempotency_key(&headers)?;
    let checked = req.parse(state.send_limits.max_recipients)?;
    let account = sending_account(&state, id).await?;
    let strings = |list: &[mailgate_core::EmailAddress]| -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    };
    let (to, cc, bcc) = (
        strings(&checked.to),
        strings(&checked.cc),
        strings(&checked.bcc),
    );
    let reply_to = checked.reply_to.as_ref().map(|a| a.to_string());
    // Bcc is in the envelope only: the message's headers never name it.
    let envelope: Vec<String> = to.iter().chain(&cc).chain(&bcc).cloned().collect();
    let message_id = match mailgate_mail::message::new_message_id(account.spec.mailbox.domain()) {
        Ok(id) => id,
        Err(e) => return Err(e.into()),
    };
    let parts: Vec<mailgate_mail::message::Attachment<'_>> = checked
        .attachments
        .iter()
        .map(|a| mailgate_mail::message::Attachment {
            filename: &a.filename,
            content_type: &a.content_type,
            content: &a.content,
            content_id: a.content_id.as_deref(),
        })
        .collect();
    let bytes = match mailgate_mail::message::build(
        &account.spec,
        &mailgate_mail::message::Outgoing {
            to: &to,
            cc: &cc,
            reply_to: reply_to.as_deref(),
            subject: &checked.subject,
            text: checked.text.as_deref(),
            html: checked.html.as_deref(),
            attachments: &parts,
            message_id: &message_id,
            date: state.clock.now(),
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            return Err(ApiError::from(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the message cannot be built: {e}"),
                None,
            )));
        }
    };
    drop(checked);
    Ok(enqueue(
        &state,
        mailgate_store::NewOutboxMessage {
            account: account.id,
            idempotency_key: key.as_deref(),
            request_hash: &request_hash,
            recipients: &envelope,
            message: bytes,
            message_id: &message_id,
        },
    )
    .await)
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", summary = "Status of a queued message",
    security(("bearer" = ["messages:send"])),
    responses((status = 200, description = "OK", body = mailgate_store::OutboxItem)))]
pub async fn message_status(
    State(state): State<AppState>,
    caller: ApiAuth<scope::OutboxRead>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    match state.store.outbox_item(id).await {
        Ok(item) => match caller.require_account(item.account_id) {
            Ok(()) => Ok(Json(item).into_response()),
            Err(r) => Err(r),
        },
        Err(e) => Err(e.into()),
    }
}

/// A query string read into `T`, or a 400 problem naming the parameters it may have.
pub(crate) fn query_or_problem<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    match query {
        Ok(axum::extract::Query(q)) => Ok(q),
        Err(e) => Err(ApiError::from(problem(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{e}; expected {expected}"),
            None,
        ))),
    }
}

/// The `limit` query parameter of a list: 1 to `max`, 50 when not given.
pub(crate) fn limit_param(value: Option<&str>, max: i64) -> Result<i64, ApiError> {
    match value.map(str::parse::<i64>) {
        None => Ok(50),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(invalid(
            "limit",
            format!("limit must be a number from 1 to {max}"),
        )),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    status: Option<String>,
    account_id: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// A page of the outbox, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OutboxPage {
    pub messages: Vec<mailgate_store::OutboxItem>,
    /// Pass as `before=` for the next page; absent on the last.
    pub next_before: Option<i64>,
}

/// `GET /api/v1/messages`: the outbox, newest first, of the accounts the token may touch;
/// `?status=failed` finds what needs attention.
#[utoipa::path(get, path = "/api/v1/messages",
    summary = "The outbox, newest first (?status=failed, ?account_id=, ?before=, ?limit=); messages:read also works",
    security(("bearer" = ["messages:send"])),
    params(
        ("status" = Option<mailgate_store::OutboxStatus>, Query),
        ("account_id" = Option<i64>, Query),
        ("before" = Option<i64>, Query, description = "Only messages with a smaller id (the previous page's next_before)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Default 50"),
    ),
    responses(
        (status = 200, description = "OK", body = OutboxPage),
        (status = 422, description = "A query parameter is invalid (see `field`)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn list_outbox(
    State(state): State<AppState>,
    caller: ApiAuth<scope::OutboxRead>,
    query: Result<axum::extract::Query<OutboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_problem(query, "status, account_id, before and limit")?;
    let status = match q.status.as_deref().map(mailgate_store::OutboxStatus::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return Err(invalid(
                "status",
                "status is one of queued, sending, sent, failed",
            ));
        }
    };
    let number = |field: &str, v: Option<&str>, max: i64| -> Result<Option<i64>, ApiError> {
        match v.map(str::parse::<i64>) {
            None => Ok(None),
            Some(Ok(n)) if (1..=max).contains(&n) => Ok(Some(n)),
            Some(_) => Err(invalid(
                field,
                format!("{field} must be a number from 1 to {max}"),
            )),
        }
    };
    let account = number("account_id", q.account_id.as_deref(), i64::MAX)?.map(AccountId);
    let before = number("before", q.before.as_deref(), i64::MAX)?;
    let limit = limit_param(q.limit.as_deref(), 500)?;
    let accounts: Vec<AccountId> = match account {
        Some(a) => {
            caller.require_account(a)?;
            vec![a]
        }
        None => caller.token.account_ids.clone(),
    };
    match state
        .store
        .list_outbox(&accounts, status, before, limit)
        .await
    {
        Ok(items) => {
            let next = (items.len() as i64 == limit)
                .then(|| items.last().map(|i| i.id))
                .flatten();
            Ok(Json(OutboxPage {
                messages: items,
                next_before: next,
            })
            .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/messages/{id}/retry`: a failed message queued again (after its cause was
/// fixed), attempts counted afresh. 409 for a message that is not failed.
#[utoipa::path(post, path = "/api/v1/messages/{id}/retry",
    summary = "Queue a failed message again, attempts counted afresh (409 unless failed)",
    security(("bearer" = ["messages:send"])),
    responses(
        (status = 202, description = "Queued again", body = mailgate_store::OutboxItem),
        (status = 409, description = "The message is not failed (queued, sending or sent)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn retry_message(
    State(state): State<AppState>,
    caller: ApiAuth<scope::MessagesSend>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let item = match state.store.outbox_item(id).await {
        Ok(i) => i,
        Err(e) => return Err(e.into()),
    };
    caller.require_account(item.account_id)?;
    match state.store.retry_outbox(id, state.clock.now()).await {
        Ok(item) => {
            state.outbox.notify_one();
            Ok((StatusCode::ACCEPTED, Json(item)).into_response())
        }
        Err(mailgate_store::StoreError::InUse(msg)) => Err(ApiError::from(problem(
            StatusCode::CONFLICT,
            "not_failed",
            msg,
            None,
        ))),
        Err(e) => Err(e.into()),
    }
}

fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 200 => Ok(Some(k.trim().to_owned())),
        Some(_) => Err(ApiError::from(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "Idempotency-Key must be 1 to 200 visible characters",
            Some("Idempotency-Key"),
        ))),
    }
}

/// The addresses of an address-list header value: `a@b, "Name, Jr." <c@d>` → [a@b, c@d].
fn header_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = value.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied();
        match c {
            Some(b'"') => quoted = !quoted,
            Some(b'<') if !quoted => depth += 1,
            Some(b'>') if !quoted => depth -= 1,
            Some(b',') | None if !quoted && depth <= 0 => {
                let part = value[start..i].trim();
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(a), Some(b)) if a < b => &part[a + 1..b],
                    _ => part,
                };
                if !addr.trim().is_empty() {
                    out.push(addr.trim().to_owned());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// One header field of a raw message: its name as parsed (trimmed, lower case: `Bcc :`
/// and `BCC:` are both `bcc`), its unfolded value, and its lines as written.
struct HeaderField<'a> {
    name: String,
    value: String,
    lines: Vec<&'a str>,
}

/// The header fields of `head`, continuation lines folded into their field.
fn header_fields(head: &str) -> Result<Vec<HeaderField<'_>>, ApiError> {
    let mut fields: Vec<HeaderField<'_>> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
                last.lines.push(line);
                continue;
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push(HeaderField {
                name: name.trim().to_ascii_lowercase(),
                value: value.trim().to_owned(),
                lines: vec![line],
            });
            continue;
        }
        return Err(ApiError::from(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!(
                "not a header line: {:?}",
                line.chars().take(60).collect::<String>()
            ),
            None,
        )));
    }
    Ok(fields)
}

/// A ready RFC 5322 message (`Content-Type: message/rfc822`): the envelope comes from To,
/// Cc and Bcc; Bcc is removed before sending (by its parsed name, folded lines and all); a
/// Message-ID is added when missing. `From` must be the account's address, its shared
/// mailbox or one of its aliases: the API token may send as this account, not as anyone.
async fn send_raw(
    state: &AppState,
    id: i64,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    request_hash: &str,
) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let text = String::from_utf8_lossy(body);
    let Some(split) = text
        .find("\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| text.find("\n\n").map(|i| (i, 2)))
    else {
        return Err(ApiError::from(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the message has no empty line between headers and body",
            None,
        )));
    };
    let (head, rest) = (&text[..split.0], &text[split.0..]);
    let fields = header_fields(head)?;
    let header_name = |name: &str| match name {
        "to" => "To",
        "cc" => "Cc",
        "bcc" => "Bcc",
        _ => "From",
    };
    let cap = state.send_limits.max_recipients;
    let mut envelope = Vec::new();
    for f in &fields {
        if matches!(f.name.as_str(), "to" | "cc" | "bcc") {
            for a in header_addresses(&f.value) {
                if envelope.len() == cap {
                    return Err(invalid(
                        header_name(&f.name),
                        format!(
                            "a message may have at most {cap} recipients (To, Cc and Bcc together)"
                        ),
                    ));
                }
                match mailgate_core::EmailAddress::parse(&a) {
                    Ok(e) => envelope.push(e.to_string()),
                    Err(e) => return Err(invalid(header_name(&f.name), e.to_string())),
                }
            }
        }
    }
    if envelope.is_empty() {
        return Err(ApiError::from(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the message has no To, Cc or Bcc recipient",
            Some("to"),
        )));
    }
    let account = sending_account(state, id).await?;
    check_raw_from(&account.spec, &fields)?;
    let mut message_id = fields
        .iter()
        .find(|f| f.name == "message-id")
        .map(|f| f.value.trim_matches(['<', '>', ' ']).to_owned())
        .unwrap_or_default();
    // Sized once: a large message is not copied again while the buffer grows.
    let mut out = String::with_capacity(text.len() + 128);
    if message_id.is_empty() {
        message_id = match mailgate_mail::message::new_message_id(account.spec.mailbox.domain()) {
            Ok(id) => id,
            Err(e) => return Err(e.into()),
        };
        out.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    }
    for f in fields
        .iter()
        .filter(|f| f.name != "bcc" && f.name != "resent-bcc")
    {
        for line in &f.lines {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(rest.trim_start_matches(['\r', '\n']));
    drop(fields);
    Ok(enqueue(
        state,
        mailgate_store::NewOutboxMessage {
            account: account.id,
            idempotency_key: key.as_deref(),
            request_hash,
            recipients: &envelope,
            message: out.into_bytes(),
            message_id: &message_id,
        },
    )
    .await)
}

/// A raw message's `From`: exactly one, naming one address that the account owns (its
/// mailbox, shared mailbox or an alias). Else 422 naming `From`.
fn check_raw_from(
    account: &mailgate_core::account::AccountSpec,
    fields: &[HeaderField<'_>],
) -> Result<(), ApiError> {
    let own: Vec<String> = std::iter::once(&account.mailbox)
        .chain(account.shared_mailbox.as_ref())
        .chain(&account.aliases)
        .map(|a| a.to_string().to_ascii_lowercase())
        .collect();
    let rule = format!(
        "a raw message is sent from the account's own address: From must be one of {}",
        own.join(", ")
    );
    let froms: Vec<&HeaderField<'_>> = fields.iter().filter(|f| f.name == "from").collect();
    let [from] = froms.as_slice() else {
        return Err(invalid(
            "From",
            format!("the message needs exactly one From header; {rule}"),
        ));
    };
    let addresses = header_addresses(&from.value);
    let ok = match addresses.as_slice() {
        [one] => mailgate_core::EmailAddress::parse(one)
            .is_ok_and(|a| own.contains(&a.to_string().to_ascii_lowercase())),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid("From", rule))
    }
}

/// The account to send from: it must exist and have outbound SMTP.
async fn sending_account(
    state: &AppState,
    id: i64,
) -> Result<mailgate_core::MailAccount, ApiError> {
    let account = state.store.account(AccountId(id)).await?;
    if account.spec.outbound.is_none() {
        return Err(ApiError::from(problem(
            StatusCode::CONFLICT,
            "no_outbound",
            "the account has no outbound SMTP",
            None,
        )));
    }
    Ok(account)
}

/// Writes the message to the outbox (202 with the item and its `Location`) and wakes the
/// worker; a full quota is 429 (the account's) or 507 (everyone's) with `Retry-After`, a
/// reused Idempotency-Key with another request 422; neither stores anything.
async fn enqueue(state: &AppState, new: mailgate_store::NewOutboxMessage<'_>) -> Response {
    use mailgate_store::Enqueued;
    let quota = state.send_limits.quota;
    let size = new.message.len() as i64;
    if size > quota.per_account_bytes.min(quota.total_bytes) {
        // Waiting would not help: the message alone is more than the outbox may hold.
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the message is {size} bytes, more than the outbox quota ({} bytes) allows",
                quota.per_account_bytes.min(quota.total_bytes)
            ),
            None,
        );
    }
    let item = match state.store.enqueue(new, quota, state.clock.now()).await {
        Ok(Enqueued::Created(item)) => {
            state.outbox.notify_one();
            item
        }
        Ok(Enqueued::Existing(item)) => item,
        Ok(Enqueued::KeyReused) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request (a different body); use a new key for a new message",
                Some("Idempotency-Key"),
            );
        }
        Ok(Enqueued::AccountQuotaFull { used, quota }) => {
            return full_outbox(
                StatusCode::TOO_MANY_REQUESTS,
                "outbox_quota",
                format!(
                    "the account's outbox is full ({used} of {quota} bytes waiting); retry when messages have been sent"
                ),
                ACCOUNT_QUOTA_RETRY_AFTER_SECS,
            );
        }
        Ok(Enqueued::TotalQuotaFull { used, quota }) => {
            return full_outbox(
                StatusCode::INSUFFICIENT_STORAGE,
                "outbox_full",
                format!(
                    "the outbox is full ({used} of {quota} bytes waiting, all accounts); retry later"
                ),
                TOTAL_QUOTA_RETRY_AFTER_SECS,
            );
        }
        Err(e) => return not_queued(e),
    };
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(&item).unwrap_or(Value::Null)),
    )
        .into_response();
    if let Ok(v) = format!("/api/v1/messages/{}", item.id).parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn full_outbox(status: StatusCode, code: &str, detail: String, retry_after: u64) -> Response {
    let mut resp = problem(status, code, detail, None);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from(retry_after),
    );
    resp
}

static NOT_QUEUED_LOG: std::sync::LazyLock<mailgate_core::log_limit::LogLimit> =
    std::sync::LazyLock::new(|| mailgate_core::log_limit::LogLimit::new(30));

/// The answer when the outbox could not store a message: nothing was queued, so the client
/// must send again later. 507 when the disk is full, 503 for other storage failures, both
/// with `Retry-After`; other errors as usual.
fn not_queued(e: mailgate_store::StoreError) -> Response {
    let (status, code, detail) = match e.storage_failure() {
        Some(mailgate_store::StorageFailure::Full) => (
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the message was not queued: the server's disk is full; send it again later",
        ),
        Some(mailgate_store::StorageFailure::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the message was not queued: the database cannot store it right now; send it again later",
        ),
        None => return store_problem(e),
    };
    // Every send fails alike while the disk is full: one line per half minute.
    if let Some(left_out) = NOT_QUEUED_LOG.allow(
        "not_queued",
        mailgate_core::Clock::now(&mailgate_core::SystemClock),
    ) {
        tracing::warn!(error = %e, left_out, "API: a message could not be queued");
    }
    let mut resp = problem(status, code, detail, None);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("30"),
    );
    resp
}

/// The answer of `GET /api/v1/events`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<mailgate_core::event::Event>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    actor: Option<String>,
    since: Option<String>,
    account_id: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/events`: the event log with who made each change (the audit trail), newest
/// first, filtered by `actor` (exactly, or `cli` / `api-token` for every one of that kind),
/// `since` (a date or RFC 3339 time), `account_id` and `limit`. A token limited to some
/// accounts reads only their events, so it names one of them.
#[utoipa::path(get, path = "/api/v1/events",
    summary = "The event log with who made each change (actor, source), newest first; ?actor=, ?since=, ?account_id=, ?limit=",
    security(("bearer" = ["accounts:read"])),
    params(
        ("actor" = Option<String>, Query, description = "A user name, api-token:NAME or cli:USER exactly, or cli / api-token for every actor of that kind"),
        ("since" = Option<String>, Query, description = "YYYY-MM-DD (UTC) or an RFC 3339 time"),
        ("account_id" = Option<i64>, Query, description = "Required for a token limited to some accounts"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 50"),
    ),
    responses(
        (status = 200, description = "OK", body = EventList),
        (status = 422, description = "A query parameter is invalid (see `field`)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_problem(query, "actor, since, account_id and limit")?;
    let since = q
        .since
        .as_deref()
        .map(mailgate_core::event::parse_since)
        .transpose()
        .map_err(|e| invalid("since", e))?;
    let account = match q.account_id.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(AccountId(n)),
        Some(_) => return Err(invalid("account_id", "account_id must be an account's id")),
    };
    let limit = limit_param(q.limit.as_deref(), 1000)?;
    match account {
        Some(a) => caller.require_account(a)?,
        None if !caller.token.account_ids.is_empty() => {
            return Err(ApiError::from(problem(
                StatusCode::FORBIDDEN,
                "account_not_allowed",
                "this API token is limited to some accounts; give account_id for one of them",
                Some("account_id"),
            )));
        }
        None => {}
    }
    let filter = mailgate_store::EventFilter {
        actor: q.actor.filter(|a| !a.trim().is_empty()),
        since,
        account,
        limit,
    };
    let events = state.store.audit_events(&filter).await?;
    Ok(Json(EventList { events }).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_lists() {
        assert_eq!(
            super::header_addresses("a@example.test"),
            vec!["a@example.test"]
        );
        assert_eq!(
            super::header_addresses(
                "\"Doe, Jane\" <jane@example.test>, bob@example.test ,<c@example.test>"
            ),
            vec!["jane@example.test", "bob@example.test", "c@example.test"]
        );
        assert!(super::header_addresses("  ").is_empty());
    }

    /// (status, `field`) of a problem response.
    async fn status_and_field(r: impl axum::response::IntoResponse) -> (u16, String) {
        let r = r.into_response();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, v["field"].as_str().unwrap_or_default().to_owned())
    }

    fn parse_field(body: serde_json::Value) -> axum::response::Response {
        match super::parse_send_request(body.to_string().as_bytes()) {
            Ok(_) => panic!("accepted: {body}"),
            Err(r) => axum::response::IntoResponse::into_response(r),
        }
    }

    #[tokio::test]
    async fn json_errors_name_the_field_at_fault() {
        let attachment = |extra: serde_json::Value| {
            let mut a = serde_json::json!({"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="});
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            serde_json::json!({"to": ["a@example.test"], "subject": "s", "text": "t", "attachments": [a.clone(), a.clone(), a]})
        };
        for (body, field) in [
            (
                serde_json::json!({"to": ["a@example.test"], "text": "t"}),
                "subject",
            ),
            (
                serde_json::json!({"to": ["a@example.test"], "subject": "s", "htm": "t"}),
                "htm",
            ),
            (
                serde_json::json!({"to": "a@example.test", "subject": "s"}),
                "to",
            ),
            (
                attachment(serde_json::json!({"content_base64": 7})),
                "attachments[0].content_base64",
            ),
            (
                serde_json::json!({"subject": "s", "attachments": [{"filename": "a", "content_type": "text/plain"}]}),
                "attachments[0].content_base64",
            ),
        ] {
            assert_eq!(
                status_and_field(parse_field(body)).await,
                (422, field.to_owned())
            );
        }
        assert!(super::parse_send_request(b"{\"subject\": \"s\"} trailing").is_err());
    }

    #[tokio::test]
    async fn attachments_are_checked_field_by_field() {
        let ok = || super::AttachmentRequest {
            filename: "report.pdf".into(),
            content_type: "Application/PDF".into(),
            content_base64: "JVBE\r\nRi0x".into(),
            content_id: None,
        };
        let checked = super::check_attachments(&[ok()]).unwrap_or_else(|_| panic!("refused"));
        // Letters of any script are names, not controls.
        let arabic = super::AttachmentRequest {
            filename: "تقرير.pdf".into(),
            ..ok()
        };
        assert!(super::check_attachments(&[arabic]).is_ok());
        assert_eq!(checked[0].content, b"%PDF-1");
        assert_eq!(checked[0].content_type, "application/pdf");
        let cases: Vec<(super::AttachmentRequest, &str)> = vec![
            (
                super::AttachmentRequest {
                    content_base64: "not base64!".into(),
                    ..ok()
                },
                "attachments[1].content_base64",
            ),
            (
                super::AttachmentRequest {
                    filename: " ".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "a\r\nBcc: x@example.test".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "../etc/passwd".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            // invoice, U+202E, fdp.exe is shown as invoiceexe.pdf.
            (
                super::AttachmentRequest {
                    filename: "invoice\u{202E}fdp.exe".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "report\u{2067}.pdf".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "a\u{200F}b.pdf".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "tab\there.pdf".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    filename: "bell\u{7}.pdf".into(),
                    ..ok()
                },
                "attachments[1].filename",
            ),
            (
                super::AttachmentRequest {
                    content_type: "text/plain\r\nX-Injected: 1".into(),
                    ..ok()
                },
                "attachments[1].content_type",
            ),
            (
                super::AttachmentRequest {
                    content_type: "text/plain; charset=utf-8".into(),
                    ..ok()
                },
                "attachments[1].content_type",
            ),
            (
                super::AttachmentRequest {
                    content_type: "multipart/mixed".into(),
                    ..ok()
                },
                "attachments[1].content_type",
            ),
            (
                super::AttachmentRequest {
                    content_id: Some("a b".into()),
                    ..ok()
                },
                "attachments[1].content_id",
            ),
            (
                super::AttachmentRequest {
                    content_id: Some("x>\r\n<y".into()),
                    ..ok()
                },
                "attachments[1].content_id",
            ),
        ];
        for (bad, field) in cases {
            let r = super::check_attachments(&[ok(), bad])
                .map(|_| ())
                .unwrap_err();
            assert_eq!(
                status_and_field(super::ApiError::from(r)).await,
                (422, field.to_owned())
            );
        }
        // The same Content-ID twice; <> around it are optional.
        let cid = |c: &str| super::AttachmentRequest {
            content_id: Some(c.into()),
            ..ok()
        };
        let r = super::check_attachments(&[cid("<logo@x>"), cid("logo@x")])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            status_and_field(super::ApiError::from(r)).await,
            (422, "attachments[1].content_id".to_owned())
        );
        // Over the total size: 413, naming the attachments.
        let half = super::AttachmentRequest {
            content_base64: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                vec![0u8; super::MAX_ATTACHMENT_BYTES / 2 + 1],
            ),
            ..ok()
        };
        let second = super::AttachmentRequest {
            content_base64: half.content_base64.clone(),
            ..ok()
        };
        let r = super::check_attachments(&[half, second])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            status_and_field(super::ApiError::from(r)).await,
            (413, "attachments".to_owned())
        );
    }
}
