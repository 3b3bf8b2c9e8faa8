//! `/api/v1` for administration: apps and accounts created, read, changed and removed, and
//! "Test configuration" started and polled.
//!
//! Bodies are JSON objects with the field names of the CLI and the admin forms, each parsed
//! into its core type and then through the same rules (`core::input`), so nothing is stored
//! unless the whole request is valid. Refusals: 415 for a body that is not
//! `application/json`, 400 for one that is not a JSON object, 422 naming the `field` at fault
//! (an unknown field too), 404 for an unknown id, 409 for a taken name or an app still in use.
//! Secrets (`client_secret`, `service_account_key`) are write-only: answered as their hint.
//!
//! Apps are shared by all accounts. A token limited to some accounts reads only the apps
//! those accounts use, never creates, changes or removes an app, creates no account, and
//! changes or removes only its own accounts, without moving them to another app or mail
//! host (that would send their tokens elsewhere).

use crate::AppState;
use crate::api::ApiError;
use crate::api::{
    ApiAuth, ApiCaller, RequiredScope, account_view, invalid, problem, scope, store_problem,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailgate_core::account::{InboundProtocol, OnReceived};
use mailgate_core::app::{AppKind, OAuthFlow, parse_extra_param};
use mailgate_core::input::{
    self, AccountChanges, AccountSettingsInput, AppChanges, EndpointInput, InboundChoice,
    NewAccount, NewApp,
};
use mailgate_core::{
    AccountId, AppId, ClientId, EmailAddress, Host, HttpUrl, Name, OAuthApp, Port, Scopes, Secret,
    TenantId, TlsMode,
};
use mailgate_store::StoreError;
use mailgate_usecase::{AppView, ChangeError, changes};
use serde_json::{Map, Value, json};
use std::fmt::Display;

type Answer = Result<Response, ApiError>;

const ENDPOINT_FIELDS: &[&str] = &[
    "authority",
    "authorize_url",
    "token_url",
    "device_url",
    "jwks_url",
    "userinfo_url",
    "revoke_url",
    "issuer",
    "scopes",
    "extra_params",
];
const NEW_APP_FIELDS: &[&str] = &[
    "kind",
    "name",
    "tenant",
    "client_id",
    "client_secret",
    "secret_expires",
    "flow",
    "service_account_key",
];
const APP_CHANGE_FIELDS: &[&str] = &[
    "kind",
    "name",
    "tenant",
    "client_id",
    "client_secret",
    "clear_secret",
    "secret_expires",
    "flow",
    "service_account_key",
    "reset_endpoints",
];
const ACCOUNT_FIELDS: &[&str] = &[
    "name",
    "app",
    "email",
    "enabled",
    "description",
    "shared_mailbox",
    "aliases",
    "inbound",
    "inbound_host",
    "inbound_port",
    "inbound_tls",
    "outbound",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "from_name",
    "reply_to",
    "signature",
    "on_received",
    "delegate",
    "send_on_behalf",
    "clear_delegate",
];
const TEST_FIELDS: &[&str] = &["to", "step_timeout", "find_within"];

/// A store error of a write: a taken name or a conflict is 409, the rest as for reads.
fn write_problem(e: StoreError, conflict_code: &str) -> Response {
    match e {
        e @ StoreError::Duplicate { .. } => problem(
            StatusCode::CONFLICT,
            "duplicate_name",
            e.to_string(),
            Some("name"),
        ),
        StoreError::InUse(why) => problem(StatusCode::CONFLICT, conflict_code, why, None),
        other => store_problem(other),
    }
}

/// A change refused or failed: a field at fault is 422, the store's refusals as for
/// writes, a move of the account's servers by a limited token 403.
fn change_problem(e: ChangeError, conflict_code: &str) -> ApiError {
    match e {
        ChangeError::Field(e) => e.into(),
        ChangeError::Store(e) => write_problem(e, conflict_code).into(),
        ChangeError::MovesDestinations(moved) => refuse_restricted(&format!(
            "change where the account's token is sent ({})",
            moved.join(", ")
        )),
    }
}

fn with_location(status: StatusCode, location: &str, body: impl serde::Serialize) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Apps are shared: only a token for all accounts may create, change or remove them, or
/// create accounts.
fn require_unrestricted(caller: &ApiCaller, what: &str) -> Result<(), ApiError> {
    if caller.token.account_ids.is_empty() {
        Ok(())
    } else {
        Err(refuse_restricted(what))
    }
}

fn refuse_restricted(what: &str) -> ApiError {
    problem(
        StatusCode::FORBIDDEN,
        "account_restricted",
        format!(
            "this API token is limited to some accounts, so it cannot {what}; use a token for all accounts"
        ),
        None,
    )
    .into()
}

/// The apps a token may read: `None` for all (an unrestricted token), otherwise those its
/// accounts use.
async fn visible_apps(
    state: &AppState,
    caller: &ApiCaller,
) -> Result<Option<Vec<AppId>>, ApiError> {
    if caller.token.account_ids.is_empty() {
        return Ok(None);
    }
    let accounts = state.store.list_accounts().await?;
    Ok(Some(
        accounts
            .iter()
            .filter(|a| caller.may_touch(a.id))
            .map(|a| a.spec.app_id)
            .collect(),
    ))
}

fn require_app_visible(visible: &Option<Vec<AppId>>, id: AppId) -> Result<(), ApiError> {
    match visible {
        Some(ids) if !ids.contains(&id) => Err(ApiError::from(problem(
            StatusCode::FORBIDDEN,
            "app_not_allowed",
            format!("this API token is limited to accounts that do not use app {id}"),
            None,
        ))),
        _ => Ok(()),
    }
}

/// An app as the API shows it: the one view the CLI's `--json` shows too.
fn app_json(state: &AppState, app: &OAuthApp) -> AppView {
    AppView::new(app, &state.public_url, state.clock.now().date())
}

// ----- request bodies ---------------------------------------------------------------------

/// A request's JSON object, read field by field into core types; the first field at fault
/// becomes the answer.
pub struct Body(Map<String, Value>);

/// The fields a [`Body`] may hold, for [`AccountRequest`]; with `MAY_BE_EMPTY`, no body at
/// all reads as `{}`.
pub trait BodyFields {
    const ALLOWED: &'static [&'static [&'static str]];
    const MAY_BE_EMPTY: bool;
}

/// The body of `PATCH /api/v1/accounts/{id}`.
pub struct AccountFields;
impl BodyFields for AccountFields {
    const ALLOWED: &'static [&'static [&'static str]] = &[ACCOUNT_FIELDS];
    const MAY_BE_EMPTY: bool = false;
}

/// The body of `POST /api/v1/accounts/{id}/tests`, which may be left out.
pub struct TestFields;
impl BodyFields for TestFields {
    const ALLOWED: &'static [&'static [&'static str]] = &[TEST_FIELDS];
    const MAY_BE_EMPTY: bool = true;
}

/// A request about one account (`/api/v1/accounts/{id}/…`) with a JSON body of fields `F`:
/// the token's scope `S` and its reach to the account are checked before the body is read,
/// so a token limited to other accounts learns nothing from how its body would be refused.
pub struct AccountRequest<S: RequiredScope, F> {
    caller: ApiAuth<S>,
    id: AccountId,
    body: Body,
    fields: std::marker::PhantomData<F>,
}

impl<S, F> FromRequest<AppState> for AccountRequest<S, F>
where
    S: RequiredScope + Send + Sync,
    F: BodyFields + Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let caller = ApiAuth::<S>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(id) = Path::<i64>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        caller
            .require_account(AccountId(id))
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = Body::read(&headers, &bytes, F::ALLOWED, F::MAY_BE_EMPTY)
            .map_err(IntoResponse::into_response)?;
        Ok(AccountRequest {
            caller,
            id: AccountId(id),
            body,
            fields: std::marker::PhantomData,
        })
    }
}

impl Body {
    /// 415 unless the body is `application/json` (or `application/*+json`), 400 unless it is
    /// a JSON object, 422 for a field not in `allowed`. With `may_be_empty`, no body is `{}`.
    fn read(
        headers: &HeaderMap,
        bytes: &Bytes,
        allowed: &[&[&str]],
        may_be_empty: bool,
    ) -> Result<Body, ApiError> {
        if may_be_empty && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json"
            && !(mime.starts_with("application/") && mime.ends_with("+json"))
        {
            return Err(ApiError::from(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
                None,
            )));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not JSON: {e}"),
                None,
            )
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::from(problem(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
                None,
            )));
        };
        let known = |k: &str| allowed.iter().any(|list| list.contains(&k));
        if let Some(k) = map.keys().find(|k| !known(k)) {
            let shown: String = k.chars().take(60).collect();
            let expected: Vec<&str> = allowed.iter().flat_map(|l| l.iter().copied()).collect();
            return Err(ApiError::from(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_field",
                format!("unknown field {shown:?}; expected: {}", expected.join(", ")),
                Some(&shown),
            )));
        }
        Ok(Body(map))
    }

    fn has(&self, k: &str) -> bool {
        !matches!(self.0.get(k), None | Some(Value::Null))
    }

    /// A string field; absent or null is `None`.
    fn text(&self, k: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(k, format!("{k} must be a string"))),
        }
    }

    fn parsed<T, E: Display>(
        &self,
        k: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.text(k)?
            .map(|s| parse(s).map_err(|e| invalid(k, e.to_string())))
            .transpose()
    }

    fn required<T, E: Display>(
        &self,
        k: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, ApiError> {
        self.parsed(k, parse)?
            .ok_or_else(|| invalid(k, format!("{k} is required")))
    }

    fn flag(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(k, format!("{k} must be true or false"))),
        }
    }

    /// A whole number in `range`, given as a number (or a string of digits, as forms send).
    fn number(
        &self,
        k: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ApiError> {
        let n = match self.0.get(k) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                k,
                format!(
                    "{k} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn port(&self, k: &str) -> Result<Option<Port>, ApiError> {
        self.number(k, 1..=65535)?
            .map(|n| {
                u16::try_from(n)
                    .map_err(|e| e.to_string())
                    .and_then(|n| Port::new(n).map_err(|e| e.to_string()))
                    .map_err(|e| invalid(k, e))
            })
            .transpose()
    }

    /// A list of strings, each parsed; absent or null is `None`.
    fn list<T, E: Display>(
        &self,
        k: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<Vec<T>>, ApiError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => parse(s).map_err(|e| invalid(k, e.to_string())),
                    _ => Err(invalid(k, format!("{k} must be a list of strings"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid(k, format!("{k} must be a list of strings"))),
        }
    }

    /// Scopes as one string (space- or comma-separated, like the CLI) or a list.
    fn scopes(&self) -> Result<Option<Scopes>, ApiError> {
        let joined = match self.0.get("scopes") {
            Some(Value::Array(_)) => self
                .list("scopes", |s| Ok::<_, String>(s.to_owned()))?
                .map(|l| l.join(" ")),
            _ => self.text("scopes")?.map(str::to_owned),
        };
        joined
            .map(|s| Scopes::parse(&s).map_err(|e| invalid("scopes", e.to_string())))
            .transpose()
    }

    /// Extra authorize parameters as an object of strings, `{"domain_hint": "contoso.com"}`.
    fn extra_params(&self) -> Result<Vec<(String, String)>, ApiError> {
        const K: &str = "extra_params";
        match self.0.get(K) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, v)| match v {
                    Value::String(v) => parse_extra_param(&format!("{name}={v}"))
                        .map_err(|e| invalid(K, e.to_string())),
                    _ => Err(invalid(K, format!("{K} values must be strings"))),
                })
                .collect(),
            Some(_) => Err(invalid(K, format!("{K} must be an object of name: value"))),
        }
    }

    /// The service-account key: the JSON key itself, or its text.
    fn service_account_key(&self) -> Result<Option<Secret>, ApiError> {
        const K: &str = "service_account_key";
        let text = match self.0.get(K) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(invalid(
                    K,
                    format!("{K} must be the JSON key (an object) or its text"),
                ));
            }
        };
        input::service_account_key(&text)
            .map(Some)
            .map_err(|e| invalid(K, e.to_string()))
    }

    fn endpoint_input(&self) -> Result<EndpointInput, ApiError> {
        Ok(EndpointInput {
            authority: self.parsed("authority", HttpUrl::parse)?,
            authorize_url: self.parsed("authorize_url", HttpUrl::parse)?,
            token_url: self.parsed("token_url", HttpUrl::parse)?,
            device_url: self.parsed("device_url", HttpUrl::parse)?,
            jwks_url: self.parsed("jwks_url", HttpUrl::parse)?,
            userinfo_url: self.parsed("userinfo_url", HttpUrl::parse)?,
            revoke_url: self.parsed("revoke_url", HttpUrl::parse)?,
            issuer: self.text("issuer")?.map(str::to_owned),
            scopes: self.scopes()?,
            params: self.extra_params()?,
        })
    }

    fn settings_input(&self) -> Result<AccountSettingsInput, ApiError> {
        Ok(AccountSettingsInput {
            description: self.text("description")?.map(str::to_owned),
            shared_mailbox: self.parsed("shared_mailbox", EmailAddress::parse)?,
            aliases: self
                .list("aliases", EmailAddress::parse)?
                .unwrap_or_default(),
            inbound: self.parsed("inbound", |s| {
                if s.trim().eq_ignore_ascii_case("none") {
                    Ok(InboundChoice::None)
                } else {
                    InboundProtocol::parse(s).map(InboundChoice::Proto)
                }
            })?,
            inbound_host: self.parsed("inbound_host", Host::parse)?,
            inbound_port: self.port("inbound_port")?,
            inbound_tls: self.parsed("inbound_tls", TlsMode::parse)?,
            outbound: self.parsed("outbound", |s| {
                match s.trim().to_ascii_lowercase().as_str() {
                    "smtp" => Ok(true),
                    "none" => Ok(false),
                    _ => Err(format!(
                        "{s:?} is not an outbound protocol; expected smtp or none"
                    )),
                }
            })?,
            smtp_host: self.parsed("smtp_host", Host::parse)?,
            smtp_port: self.port("smtp_port")?,
            smtp_tls: self.parsed("smtp_tls", TlsMode::parse)?,
            from_name: self.text("from_name")?.map(str::to_owned),
            reply_to: self.parsed("reply_to", EmailAddress::parse)?,
            signature: self.text("signature")?.map(str::to_owned),
            on_received: self.parsed("on_received", OnReceived::parse)?,
            delegate: self.parsed("delegate", EmailAddress::parse)?,
            send_on_behalf: self.flag("send_on_behalf")?,
            clear_delegate: self.flag("clear_delegate")?.unwrap_or(false),
        })
    }
}

fn parse_date(s: &str) -> Result<time::Date, String> {
    const F: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), F)
        .map_err(|_| format!("{s:?} is not a date; expected YYYY-MM-DD like 2027-03-31"))
}

// ----- apps -------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/apps",
    summary = "List OAuth apps (secrets only as hints)",
    security(("bearer" = ["accounts:read"])),
    responses(
        (status = 200, description = "OK", body = Vec<AppView>),
    ))]
pub async fn list_apps(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
) -> Answer {
    let visible = visible_apps(&state, &caller).await?;
    let apps = state.store.list_apps().await?;
    let list: Vec<AppView> = apps
        .iter()
        .filter(|a| visible.as_ref().is_none_or(|ids| ids.contains(&a.id)))
        .map(|a| app_json(&state, a))
        .collect();
    Ok(Json(list).into_response())
}

#[utoipa::path(get, path = "/api/v1/apps/{id}",
    summary = "One OAuth app (secrets only as hints)",
    security(("bearer" = ["accounts:read"])),
    responses(
        (status = 200, description = "OK", body = AppView),
    ))]
pub async fn get_app(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
    Path(id): Path<i64>,
) -> Answer {
    require_app_visible(&visible_apps(&state, &caller).await?, AppId(id))?;
    let app = state.store.app(AppId(id)).await?;
    Ok(Json(app_json(&state, &app)).into_response())
}

#[utoipa::path(post, path = "/api/v1/apps",
    summary = "Create an OAuth app (secrets write-only; unrestricted tokens only)",
    security(("bearer" = ["accounts:write"])),
    request_body(content = crate::openapi::by_hand::AppInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (Location: the app)", body = AppView),
        crate::openapi::refusals::RefusedChange,
    ))]
pub async fn create_app(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    require_unrestricted(&caller, "create apps")?;
    let b = Body::read(&headers, &bytes, &[NEW_APP_FIELDS, ENDPOINT_FIELDS], false)?;
    let new = NewApp {
        kind: b.required("kind", AppKind::parse)?,
        endpoints: b.endpoint_input()?,
        name: b.required("name", Name::parse)?,
        tenant: b.parsed("tenant", TenantId::parse)?,
        client_id: b.required("client_id", ClientId::parse)?,
        client_secret: b.parsed("client_secret", input::client_secret)?,
        secret_expires: b.parsed("secret_expires", parse_date)?,
        flow: b
            .parsed("flow", OAuthFlow::parse)?
            .unwrap_or(OAuthFlow::AuthorizationCode),
        service_account_key: b.service_account_key()?,
    };
    let app = changes::create_app(&state.engine, new, state.clock.now())
        .await
        .map_err(|e| change_problem(e, "conflict"))?;
    Ok(with_location(
        StatusCode::CREATED,
        &format!("/api/v1/apps/{}", app.id),
        app_json(&state, &app),
    ))
}

#[utoipa::path(patch, path = "/api/v1/apps/{id}",
    summary = "Change an OAuth app; fields not given keep their value",
    security(("bearer" = ["accounts:write"])),
    request_body(content = crate::openapi::by_hand::AppChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = AppView),
        crate::openapi::refusals::RefusedChange,
    ))]
pub async fn update_app(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    require_unrestricted(&caller, "change apps")?;
    let b = Body::read(
        &headers,
        &bytes,
        &[APP_CHANGE_FIELDS, ENDPOINT_FIELDS],
        false,
    )?;
    let current = state.store.app(AppId(id)).await?;
    if let Some(kind) = b.parsed("kind", AppKind::parse)?
        && kind != current.spec.kind
    {
        return Err(invalid(
            "kind",
            "an app's kind cannot be changed; create a new app of that kind",
        ));
    }
    let clear_secret = b.flag("clear_secret")?.unwrap_or(false);
    if clear_secret && b.has("client_secret") {
        return Err(invalid(
            "clear_secret",
            "give either a new client_secret or clear_secret, not both",
        ));
    }
    let changes = AppChanges {
        name: b.parsed("name", Name::parse)?,
        tenant: b.parsed("tenant", TenantId::parse)?,
        client_id: b.parsed("client_id", ClientId::parse)?,
        client_secret: b.parsed("client_secret", input::client_secret)?,
        clear_secret,
        secret_expires: b.parsed("secret_expires", parse_date)?,
        flow: b.parsed("flow", OAuthFlow::parse)?,
        service_account_key: b.service_account_key()?,
        reset_endpoints: b.flag("reset_endpoints")?.unwrap_or(false),
        endpoints: b.endpoint_input()?,
    };
    let app = changes::update_app(&state.engine, current, changes, state.clock.now())
        .await
        .map_err(|e| change_problem(e, "conflict"))?;
    Ok(Json(app_json(&state, &app)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/apps/{id}",
    summary = "Remove an OAuth app no account uses",
    security(("bearer" = ["accounts:write"])),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Accounts still use the app", body = crate::api::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn delete_app(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    Path(id): Path<i64>,
) -> Answer {
    require_unrestricted(&caller, "remove apps")?;
    changes::remove_app(&state.store, AppId(id), state.clock.now())
        .await
        .map_err(|e| change_problem(e, "app_in_use"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- accounts ---------------------------------------------------------------------------

/// The app an account is to use: `app` is its id (a number) or its name.
async fn app_field(state: &AppState, b: &Body) -> Result<Option<OAuthApp>, ApiError> {
    let key = match b.0.get("app") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("app", "app must be the app's id or name")),
    };
    match state.store.find_app(&key).await {
        Ok(app) => Ok(Some(app)),
        Err(e @ StoreError::NotFound { .. }) => Err(invalid("app", e.to_string())),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/v1/accounts",
    summary = "Create a mail account (unrestricted tokens only)",
    security(("bearer" = ["accounts:write"])),
    request_body(content = crate::openapi::by_hand::AccountInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (Location: the account)", body = mailgate_usecase::AccountView),
        crate::openapi::refusals::RefusedChange,
    ))]
pub async fn create_account(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    require_unrestricted(&caller, "create accounts")?;
    let b = Body::read(&headers, &bytes, &[ACCOUNT_FIELDS], false)?;
    let name = b.required("name", Name::parse)?;
    let email = b.required("email", EmailAddress::parse)?;
    let enabled = b.flag("enabled")?.unwrap_or(true);
    let settings = b.settings_input()?;
    let app = app_field(&state, &b)
        .await?
        .ok_or_else(|| invalid("app", "app is required: the id or name of the OAuth app"))?;
    let new = NewAccount {
        name,
        email,
        enabled,
        settings,
    };
    let account = changes::create_account(&state.store, new, &app, state.clock.now())
        .await
        .map_err(|e| change_problem(e, "conflict"))?;
    Ok(with_location(
        StatusCode::CREATED,
        &format!("/api/v1/accounts/{}", account.id),
        account_view(&state, &account).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/accounts/{id}",
    summary = "Change a mail account; fields not given keep their value",
    security(("bearer" = ["accounts:write"])),
    request_body(content = crate::openapi::by_hand::AccountChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = mailgate_usecase::AccountView),
        crate::openapi::refusals::RefusedChange,
    ))]
pub async fn update_account(
    State(state): State<AppState>,
    request: AccountRequest<scope::AccountsWrite, AccountFields>,
) -> Answer {
    let AccountRequest {
        caller,
        id,
        body: b,
        ..
    } = request;
    let current = state.store.account(id).await?;
    let changes = AccountChanges {
        name: b.parsed("name", Name::parse)?,
        email: b.parsed("email", EmailAddress::parse)?,
        enabled: b.flag("enabled")?,
        settings: b.settings_input()?,
    };
    let app = match app_field(&state, &b).await? {
        Some(app) => {
            // A limited token may move its account only to an app it can already read.
            require_app_visible(&visible_apps(&state, &caller).await?, app.id)?;
            app
        }
        None => state.store.app(current.spec.app_id).await?,
    };
    // Where the account's tokens go is the administrator's decision, like the apps.
    let may_move = caller.token.account_ids.is_empty();
    let account = changes::update_account(
        &state.store,
        &current,
        changes,
        &app,
        may_move,
        state.clock.now(),
    )
    .await
    .map_err(|e| change_problem(e, "conflict"))?;
    Ok(Json(account_view(&state, &account).await?).into_response())
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}",
    summary = "Remove a mail account and its grant",
    security(("bearer" = ["accounts:write"])),
    responses(
        (status = 204, description = "Removed"),
    ))]
pub async fn delete_account(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsWrite>,
    Path(id): Path<i64>,
) -> Answer {
    caller.require_account(AccountId(id))?;
    changes::remove_account(&state.store, AccountId(id), state.clock.now())
        .await
        .map_err(|e| change_problem(e, "conflict"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- test configuration -----------------------------------------------------------------

/// Starts "Test configuration" in the background: 202 with the run and its `Location`, to be
/// polled until `status` is no longer `running`.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/tests",
    summary = "Start Test configuration in the background; poll the run at its Location",
    security(("bearer" = ["accounts:write"])),
    request_body(content = Option<crate::openapi::by_hand::TestRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "Started (Location: the run)", body = crate::openapi::by_hand::TestRun),
        crate::openapi::refusals::RefusedBody,
    ))]
pub async fn start_test(
    State(state): State<AppState>,
    request: AccountRequest<scope::AccountsWrite, TestFields>,
) -> Answer {
    let AccountRequest { id, body: b, .. } = request;
    let mut opts = mailgate_mail::check::CheckOptions {
        to: b.parsed("to", EmailAddress::parse)?.map(|a| a.to_string()),
        ..Default::default()
    };
    // The same limits as `mailgate test --step-timeout / --find-within`.
    if let Some(secs) = b.number("step_timeout", 1..=300)? {
        opts.step_timeout = std::time::Duration::from_secs(secs);
    }
    if let Some(secs) = b.number("find_within", 1..=600)? {
        opts.find_within = std::time::Duration::from_secs(secs);
    }
    let account = state.store.account(id).await?;
    let run = crate::test_runs::start(&state, account, opts)
        .await
        .map_err(crate::api::random_problem)?;
    let body = crate::test_runs::get(&state, &run)
        .await
        .map(|r| r.to_json(&run))
        .unwrap_or_else(|| json!({ "id": run, "status": "running" }));
    Ok(with_location(
        StatusCode::ACCEPTED,
        &format!("/api/v1/tests/{run}"),
        body,
    ))
}

/// A run's steps so far and its status (`running`, `passed`, `failed`).
#[utoipa::path(get, path = "/api/v1/tests/{run}",
    summary = "A Test configuration run: the steps so far and its status",
    security(("bearer" = ["accounts:read"])),
    params(("run" = String, Path)),
    responses(
        (status = 200, description = "OK", body = crate::openapi::by_hand::TestRun),
    ))]
pub async fn test_status(
    State(state): State<AppState>,
    caller: ApiAuth<scope::AccountsRead>,
    Path(run): Path<String>,
) -> Answer {
    let Some(r) = crate::test_runs::get(&state, &run).await else {
        return Err(ApiError::from(problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such test run (runs are kept for a day); start the test again",
            None,
        )));
    };
    caller.require_account(AccountId(r.account_id))?;
    Ok(Json(r.to_json(&run)).into_response())
}
