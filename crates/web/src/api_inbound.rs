//! `/api/v1` for received mail and webhooks: list and fetch an inbox, manage webhook
//! subscriptions, read their delivery log and redeliver.

use crate::AppState;
use crate::api::ApiError;
use crate::api::{
    ApiAuth, ApiCaller, invalid, limit_param, parse_json, problem, query_or_problem, scope,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailgate_core::webhook::{NewWebhook, Webhook, WebhookFieldError};
use mailgate_core::{AccountId, Secret};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

const MAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies in `GET …/messages/{uid}` are cut at this size each; `?raw=true` has it all.
const BODY_LIMIT: usize = 1024 * 1024;

/// The account, checked for scope, restriction and an inbound server.
async fn reading_account(
    state: &AppState,
    caller: &ApiCaller,
    id: i64,
) -> Result<mailgate_core::MailAccount, ApiError> {
    caller.require_account(AccountId(id))?;
    let account = state.store.account(AccountId(id)).await?;
    if account.spec.inbound.is_none() {
        return Err(ApiError::from(problem(
            StatusCode::CONFLICT,
            "no_inbound",
            format!(
                "account {} has no inbound server (IMAP or POP3) to read mail from",
                account.spec.name
            ),
            None,
        )));
    }
    Ok(account)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// `GET /api/v1/accounts/{id}/messages`: the newest messages of the inbox, newest first.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/messages",
    summary = "The newest messages of the inbox (envelope, flags, size), newest first",
    security(("bearer" = ["messages:read"])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Default 50"),
        ("before" = Option<String>, Query, description = "Only messages older than this uid (the previous page's next_before)"),
    ),
    responses(
        (status = 200, description = "OK", body = crate::openapi::by_hand::MessageList),
        (status = 502, description = "The mail server failed (the problem names the step and remediation)", body = crate::api::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: ApiAuth<scope::MessagesRead>,
    Path(id): Path<i64>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_problem(query, "limit=1..200 and before=<uid>")?;
    // At most 200: a whole page of envelopes is fetched from the mail server at once.
    let limit = usize::try_from(limit_param(q.limit.as_deref(), 200)?).unwrap_or(50);
    let account = reading_account(&state, &caller, id).await?;
    match mailgate_mail::inbox::list(
        &state.engine,
        &state.tls,
        &account,
        limit,
        q.before.as_deref(),
        MAIL_TIMEOUT,
    )
    .await
    {
        Ok(list) => {
            let next = (list.len() == limit)
                .then(|| list.last().map(|m| m.uid.clone()))
                .flatten();
            Ok(Json(json!({ "messages": list, "next_before": next })).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchQuery {
    raw: Option<String>,
}

/// `GET /api/v1/accounts/{id}/messages/{uid}`: one message parsed, or raw
/// (`?raw=true` or `Accept: message/rfc822`). Reading does not mark it seen.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/messages/{uid}",
    summary = "One received message: headers, text, HTML, attachment metadata; raw with ?raw=true",
    security(("bearer" = ["messages:read"])),
    params(
        ("uid" = String, Path, description = "IMAP UID or POP3 UIDL"),
        ("raw" = Option<bool>, Query, description = "The message as message/rfc822 (also with Accept: message/rfc822)"),
    ),
    responses(
        (status = 200, description = "OK", content((crate::openapi::by_hand::ReceivedMessage = "application/json"), (String = "message/rfc822"))),
        (status = 502, description = "The mail server failed", body = crate::api::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn get_message(
    State(state): State<AppState>,
    caller: ApiAuth<scope::MessagesRead>,
    Path((id, uid)): Path<(i64, String)>,
    headers: axum::http::HeaderMap,
    query: Result<Query<FetchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_problem(query, "raw=true or raw=false")?;
    let raw = match q.raw.as_deref() {
        None | Some("false") => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.to_ascii_lowercase().contains("message/rfc822")),
        Some("true") => true,
        Some(_) => return Err(invalid("raw", "raw must be true or false")),
    };
    let account = reading_account(&state, &caller, id).await?;
    match mailgate_mail::inbox::fetch(&state.engine, &state.tls, &account, &uid, MAIL_TIMEOUT).await
    {
        Ok(Some(bytes)) if raw => {
            Ok(([(header::CONTENT_TYPE, "message/rfc822")], bytes).into_response())
        }
        Ok(Some(bytes)) => {
            let parsed = mailgate_mail::parse::parse(&bytes, BODY_LIMIT);
            let mut body = serde_json::to_value(&parsed).unwrap_or(Value::Null);
            body["uid"] = Value::String(uid);
            Ok(Json(body).into_response())
        }
        Ok(None) => Err(ApiError::from(problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no message {uid:?} in the inbox of {}", account.spec.name),
            None,
        ))),
        Err(e) => Err(e.into()),
    }
}

// ----- webhooks ------------------------------------------------------------------------

/// Stores a parsed subscription with a new signing secret and wakes the inbound watchers
/// (a `message.received` subscription may need a watcher started). The secret comes back
/// for the one response that shows it; the store keeps it sealed.
pub(crate) async fn create_subscription(
    state: &AppState,
    new: &NewWebhook,
) -> Result<(Webhook, Secret), mailgate_store::StoreError> {
    let created =
        mailgate_usecase::access::create_webhook(&state.store, new, state.clock.now()).await?;
    state.watchers.notify_one();
    Ok(created)
}

/// Replaces subscription `id`'s signing secret; the new one comes back for the one
/// response that shows it.
pub(crate) async fn rotate_subscription_secret(
    state: &AppState,
    id: i64,
) -> Result<Secret, mailgate_store::StoreError> {
    mailgate_usecase::access::rotate_webhook_secret(&state.store, id, state.clock.now()).await
}

/// Saves a subscription's target, events, description and whether it is enabled, and
/// wakes the watchers (a `message.received` subscription may start or stop one) and the
/// deliverer (resumed deliveries may be due).
pub(crate) async fn save_subscription(
    state: &AppState,
    id: i64,
    hook: &NewWebhook,
    enabled: bool,
) -> Result<Webhook, mailgate_store::StoreError> {
    let saved = state
        .store
        .update_webhook(
            id,
            &hook.url,
            &hook.events,
            &hook.description,
            enabled,
            state.clock.now(),
        )
        .await?;
    state.watchers.notify_one();
    state.deliveries.notify_one();
    Ok(saved)
}

/// The problem for a subscription that does not parse: the first field at fault.
fn subscription_problem(errors: &[WebhookFieldError]) -> ApiError {
    match errors.first() {
        Some(e) => invalid(&e.path(), e.message.clone()),
        None => invalid("url", "the subscription does not parse"),
    }
}

/// The JSON body of `POST /api/v1/webhooks`, before [`NewWebhook::parse`].
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// http(s); loopback and private addresses only when the operator allows them.
    url: String,
    /// At least one of `message.received`, `message.sent`, `message.failed`,
    /// `account.reauth_required`, `app.secret_expiring`.
    events: Vec<String>,
    /// One account; omitted: every account (unrestricted tokens only).
    account_id: Option<i64>,
    /// At most 500 characters.
    #[serde(default)]
    description: String,
}

/// A subscription with its signing secret: the answer to creating it or rotating the
/// secret, the only answers that show the secret.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key for `X-Mailgate-Signature`.
    pub secret: String,
}

/// The answer of `GET /api/v1/webhooks`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// One delivery of the log with its attempts.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryWithAttempts {
    #[serde(flatten)]
    pub delivery: mailgate_store::Delivery,
    pub attempt_log: Vec<mailgate_store::Attempt>,
}

/// The answer of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryLog {
    pub deliveries: Vec<DeliveryWithAttempts>,
}

fn may_see(caller: &ApiCaller, hook: &Webhook) -> bool {
    match hook.account_id {
        Some(a) => caller.may_touch(a),
        // Global subscriptions belong to unrestricted tokens only.
        None => caller.token.account_ids.is_empty(),
    }
}

/// `POST /api/v1/webhooks`: 201 with the subscription and its signing secret, shown once.
#[utoipa::path(post, path = "/api/v1/webhooks",
    summary = "Subscribe a URL to events; the signing secret is in this answer only",
    security(("bearer" = ["webhooks:write"])),
    request_body(content = NewWebhookBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (Location: the subscription)", body = WebhookWithSecret),
        crate::openapi::refusals::InvalidField,
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: NewWebhookBody = parse_json(&body)?;
    let new = match NewWebhook::parse(
        &req.url,
        &req.events,
        req.account_id.map(AccountId),
        &req.description,
        state.webhook_allow_private,
    ) {
        Ok(n) => n,
        Err(errors) => return Err(subscription_problem(&errors)),
    };
    match new.account_id {
        Some(a) => {
            caller.require_account(a)?;
        }
        None if !caller.token.account_ids.is_empty() => {
            return Err(ApiError::from(problem(
                StatusCode::FORBIDDEN,
                "account_not_allowed",
                "this API token is limited to some accounts; give account_id for one of them (a subscription for every account needs an unrestricted token)",
                Some("account_id"),
            )));
        }
        None => {}
    }
    match create_subscription(&state, &new).await {
        Ok((hook, secret)) => {
            let id = hook.id;
            // The only time the secret leaves mailgate.
            let body = WebhookWithSecret {
                webhook: hook,
                secret: secret.expose().to_owned(),
            };
            let mut resp = (StatusCode::CREATED, Json(body)).into_response();
            if let Ok(v) = format!("/api/v1/webhooks/{id}").parse() {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Err(mailgate_store::StoreError::NotFound { what, key }) => {
            Err(invalid("account_id", format!("no {what} {key}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The JSON body of `PATCH /api/v1/webhooks/{id}`: what is given changes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChanges {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// `PATCH /api/v1/webhooks/{id}`: change the target, events or description, or pause
/// (`"enabled": false`) and resume a subscription. Checked by the same rules as creating.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}",
    summary = "Change a subscription's url, events or description, or pause it (enabled: false)",
    security(("bearer" = ["webhooks:write"])),
    request_body(content = WebhookChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = Webhook),
        crate::openapi::refusals::InvalidField,
    ))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let hook = visible_hook(&state, &caller, id).await?;
    let req: WebhookChanges = parse_json(&body)?;
    let url = req.url.unwrap_or_else(|| hook.url.to_string());
    let events = req
        .events
        .unwrap_or_else(|| hook.events.iter().map(|e| e.as_str().to_owned()).collect());
    let description = req.description.unwrap_or_else(|| hook.description.clone());
    let parsed = match NewWebhook::parse(
        &url,
        &events,
        hook.account_id,
        &description,
        state.webhook_allow_private,
    ) {
        Ok(n) => n,
        Err(errors) => return Err(subscription_problem(&errors)),
    };
    match save_subscription(&state, id, &parsed, req.enabled.unwrap_or(hook.enabled)).await {
        Ok(h) => Ok(Json(h).into_response()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/webhooks/{id}/rotate-secret`: a new signing secret, in this answer only;
/// the old one stops signing at once.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret",
    summary = "A new signing secret, in this answer only",
    security(("bearer" = ["webhooks:write"])),
    responses(
        (status = 200, description = "The subscription with its new secret", body = WebhookWithSecret),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let hook = visible_hook(&state, &caller, id).await?;
    match rotate_subscription_secret(&state, id).await {
        Ok(secret) => Ok(Json(WebhookWithSecret {
            webhook: hook,
            secret: secret.expose().to_owned(),
        })
        .into_response()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/webhooks`: the subscriptions this token may see.
#[utoipa::path(get, path = "/api/v1/webhooks",
    summary = "Webhook subscriptions the token may see",
    security(("bearer" = ["webhooks:write"])),
    responses(
        (status = 200, description = "OK", body = WebhookList),
    ))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
) -> Result<Response, ApiError> {
    match state.store.webhooks().await {
        Ok(hooks) => {
            let webhooks: Vec<Webhook> =
                hooks.into_iter().filter(|h| may_see(&caller, h)).collect();
            Ok(Json(WebhookList { webhooks }).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn visible_hook(state: &AppState, caller: &ApiCaller, id: i64) -> Result<Webhook, ApiError> {
    let hook = state.store.webhook(id).await?;
    if !may_see(caller, &hook) {
        return Err(ApiError::from(problem(
            StatusCode::FORBIDDEN,
            "account_not_allowed",
            format!("webhook {id} belongs to an account this API token may not touch"),
            None,
        )));
    }
    Ok(hook)
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}",
    summary = "One webhook subscription",
    security(("bearer" = ["webhooks:write"])),
    responses(
        (status = 200, description = "OK", body = Webhook),
    ))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let hook = visible_hook(&state, &caller, id).await?;
    Ok(Json(hook).into_response())
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}",
    summary = "Remove a webhook subscription and its delivery log",
    security(("bearer" = ["webhooks:write"])),
    responses(
        (status = 204, description = "Removed"),
    ))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    visible_hook(&state, &caller, id).await?;
    match state.store.delete_webhook(id, state.clock.now()).await {
        Ok(()) => {
            state.watchers.notify_one();
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    limit: Option<String>,
}

/// `GET /api/v1/webhooks/{id}/deliveries`: the delivery log, newest first, each with its
/// attempts and the receiver's status codes.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries",
    summary = "The delivery log: each delivery with every attempt's status code",
    security(("bearer" = ["webhooks:write"])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Default 50")),
    responses(
        (status = 200, description = "OK, newest first", body = DeliveryLog),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path(id): Path<i64>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_problem(query, "limit=1..500")?;
    let limit = limit_param(q.limit.as_deref(), 500)?;
    visible_hook(&state, &caller, id).await?;
    match state.store.deliveries(id, limit).await {
        Ok(list) => {
            let deliveries = list
                .into_iter()
                .map(|(delivery, attempt_log)| DeliveryWithAttempts {
                    delivery,
                    attempt_log,
                })
                .collect();
            Ok(Json(DeliveryLog { deliveries }).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/webhooks/{id}/deliveries/{delivery}/redeliver`: the same delivery (same
/// delivery id and body) again, with a fresh 24-hour retry window.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
    summary = "Send a delivery again (same delivery id and body)",
    security(("bearer" = ["webhooks:write"])),
    responses(
        (status = 202, description = "Queued again", body = mailgate_store::Delivery),
        (status = 409, description = "The delivery is being sent right now", body = crate::api::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: ApiAuth<scope::WebhooksWrite>,
    Path((id, delivery)): Path<(i64, i64)>,
) -> Result<Response, ApiError> {
    visible_hook(&state, &caller, id).await?;
    match state.store.delivery(delivery).await {
        Ok((d, _)) if d.webhook_id == id => {}
        Ok(_) => {
            return Err(ApiError::from(problem(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("webhook {id} has no delivery {delivery}"),
                None,
            )));
        }
        Err(e) => return Err(e.into()),
    }
    match state.store.redeliver(delivery, state.clock.now()).await {
        Ok(d) => {
            state.deliveries.notify_one();
            Ok((StatusCode::ACCEPTED, Json(d)).into_response())
        }
        Err(mailgate_store::StoreError::InUse(msg)) => Err(ApiError::from(problem(
            StatusCode::CONFLICT,
            "in_progress",
            msg,
            None,
        ))),
        Err(e) => Err(e.into()),
    }
}
